"""The parties' interface: what the coordinator calls, whatever runtime a party lives in.

:class:`~fedmugrep.federation.parties.TransactionParty` and
:class:`~fedmugrep.federation.parties.RegionParty` implement it in-process (the local runtime
and, inside each datasite, the PySyft runtime); the PySyft proxies
(:mod:`fedmugrep.pysyft.proxies`) implement it on the data scientist's side by calling the
datasites. A third runtime implements these two protocols and nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from fedmugrep.compression import ChannelLayout

__all__ = ["RegionSite", "TransactionSite"]


@runtime_checkable
class TransactionSite(Protocol):
    """A transaction datasite's releases (every value returned is noised and charged first
    under privacy).

    Attributes:
        layout: model 1's public channel layout (what an update's channels are).
        nm: the Gaussian noise multiplier of the round releases (0 without privacy).
    """

    layout: ChannelLayout
    nm: float

    def release_intra(
        self, theta: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Once per run: noised intra-region sums, community counts and the target count."""
        ...

    def step(
        self,
        round_index: int,
        theta: dict[str, torch.Tensor],
        z: torch.Tensor,
        previous_aggregate: dict[str, torch.Tensor] | None,
    ) -> Any:
        """One round's noised, channel-selected update (a ``StepReply``)."""
        ...

    def release_calibration(
        self, theta: dict[str, torch.Tensor], z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The noised per-district summary for calibrating the intervals."""
        ...

    def evaluate(
        self, theta: dict[str, torch.Tensor], z: torch.Tensor, split: str = "test"
    ) -> dict:
        """Noised metrics of ``split`` (exact ones stay with the owner)."""
        ...


@runtime_checkable
class RegionSite(Protocol):
    """The region datasite (or the coordinator's own model 2): ``z`` per community.

    Attributes:
        model: model 2's handle; ``state_dict()`` / ``load_state_dict()`` keep and restore the
            best round (a remote party restores its own snapshot).
    """

    model: Any

    def forward(self, round_index: int, pooled_intra: torch.Tensor) -> torch.Tensor:
        """``z`` of the current model 2 (noised and charged under privacy)."""
        ...

    def backward(self, round_index: int, z_grad: torch.Tensor) -> torch.Tensor:
        """Update model 2 with the pooled ``z`` gradient; return the next ``z``."""
        ...

    def restore(self, round_index: int) -> None:
        """Rewind model 2 to the end of ``round_index`` (a resumed run)."""
        ...
