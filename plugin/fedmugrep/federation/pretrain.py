"""Public pretraining of both model halves on the datasites' mock assets (no privacy cost).

The mocks are public by construction (synthetic twins with the private assets' schema, never
derived record by record from private rows), so the data scientist may train on them freely
before any private release. Fine-tuning under DP then starts from weights that already know
the shape of the problem (how profile, recency and the community price level channel map to a
price distribution) and spends the privacy budget on what differs in the private data.

How much this helps depends on how much the mocks resemble the private data. In this project
the synthetic mock city comes from the same generator with another seed (other geography,
other price levels, same functional form), which is favourable; report runs with and without.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fedmugrep.federation.parties import PublicArtefacts
from fedmugrep.models.mugrep import MugRepModel
from fedmugrep.training.prepare import community_graph, transaction_graph


def pretrain_on_mocks(
    public: PublicArtefacts,
    mock_transactions: pd.DataFrame,
    mock_communities: pd.DataFrame,
    mock_mobility: pd.DataFrame | None,
    *,
    epochs: int,
    lr: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict[str, torch.Tensor]]:
    """Full-batch training of :class:`MugRepModel` on the mocks' rows before ``val_start``
    (``progress``: a bar over the epochs).

    Returns ``{"event": state_dict of model 1, "region": state_dict of model 2}``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1 (got {epochs})")
    tx = mock_transactions.sort_values(["date", "transaction_id"], kind="stable").reset_index(
        drop=True
    )
    train = (tx["date"] < public.val_start).to_numpy()
    g = transaction_graph(
        tx,
        public.encoders,
        public.graph_config,
        known=np.ones(len(tx), bool),
        intra_mask=train,
    )
    cg = community_graph(public.encoders, public.graph_config, mock_communities, mock_mobility)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left untouched
        torch.manual_seed(seed)
        model = MugRepModel(public.model_config)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        mask = torch.as_tensor(train)
        model.train()
        for _ in tqdm(
            range(epochs), desc="pretraining on the mocks", unit="epoch", disable=not progress
        ):
            opt.zero_grad()
            model(g, cg).nll(g.y, mask).backward()
            opt.step()
    model.eval()
    return {
        "event": {n: v.detach().clone() for n, v in model.event_model.state_dict().items()},
        "region": {n: v.detach().clone() for n, v in model.region_model.state_dict().items()},
    }
