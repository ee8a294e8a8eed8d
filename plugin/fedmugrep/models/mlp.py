"""A small multi-layer perceptron used as a building block."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> activation (-> dropout) stack.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers.
        out_dim: output width.
        dropout: dropout after each hidden activation.

    Shapes:
        input ``[*, in_dim]`` -> output ``[*, out_dim]``.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, *, dropout: float = 0.0):
        super().__init__()
        self.in_dim, self.hidden, self.out_dim, self.dropout = (
            in_dim,
            tuple(hidden),
            out_dim,
            dropout,
        )
        layers: list[nn.Module] = []
        width = in_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.net:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def __repr__(self) -> str:
        return (
            f"MLP({self.in_dim}, hidden={self.hidden}, out={self.out_dim}, dropout={self.dropout})"
        )
