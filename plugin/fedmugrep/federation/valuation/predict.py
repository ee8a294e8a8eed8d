"""The prediction core shared by the exported model and the remote appraisal: a property's
event-graph neighbours (earlier sales only) and model 1's price distribution for it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.errors import ConfigError
from fedmugrep.graphs.event import build_query_edges
from fedmugrep.models.mugrep import EventModel, ModelConfig, Prediction, TransactionGraph
from fedmugrep.training.metrics import Z80, bounded_exp
from fedmugrep.training.prepare import Encoders, GraphConfig, days_since_epoch

__all__ = [
    "OUTPUT_COLUMNS",
    "appraisal_table",
    "check_z",
    "max_influence",
    "predict",
    "query_edges",
]

#: Columns of an appraisal table after the id column.
OUTPUT_COLUMNS = ("pred_median", "pred_lo80", "pred_hi80", "sigma_log", "noise_scale_log")


# ============================================================================ neighbours
def max_influence(q_group: np.ndarray, q_t: np.ndarray, max_days: float) -> int:
    """Most queries one history row can be a neighbour of under the ``"recent"`` query rule
    (:func:`~fedmugrep.graphs.event.build_query_edges`):
    ``max`` over groups ``c`` and query times ``t_i`` of ``#{j in c : t_i <= t_j <= t_i +
    max_days}`` (a closed window, a superset of ``(t_r, t_r + max_days]`` for any ``t_r``).

    Depends only on the queries (public), never on the history.
    """
    g, t = np.asarray(q_group), np.asarray(q_t, np.float64)
    best = 0
    for c in np.unique(g):
        ts = np.sort(t[g == c])
        ends = np.searchsorted(ts, ts + max_days, side="right")
        best = max(best, int((ends - np.arange(ts.size)).max()))
    return best


def query_edges(
    history: pd.DataFrame, props: pd.DataFrame, enc: Encoders, gcfg: GraphConfig, rule: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Event-graph edges from ``history`` sales to the properties ``props`` (earlier sales only,
    the training graph's ``rule``), as ``(edge_index, edge_attr)`` (see
    :func:`~fedmugrep.graphs.event.build_query_edges`)."""
    groups: dict[str, Any] = {}
    if gcfg.event_within_community:
        groups = {
            "hist_group": enc.vocab.community_codes(history["community"]),
            "q_group": enc.vocab.community_codes(props["community"]),
        }
    args = (
        history["lat"].to_numpy(np.float64),
        history["lon"].to_numpy(np.float64),
        days_since_epoch(history["date"]),
        props["lat"].to_numpy(np.float64),
        props["lon"].to_numpy(np.float64),
        days_since_epoch(props["date"]),
    )
    window = {"k": gcfg.k, "max_km": gcfg.max_km, "max_days": gcfg.max_days}
    return build_query_edges(*args, **window, **groups, rule=rule)


# ============================================================================ prediction core
def predict(
    model: EventModel,
    enc: Encoders,
    z: torch.Tensor,
    props: pd.DataFrame,
    history: pd.DataFrame | None,
    edges: tuple[torch.Tensor, torch.Tensor] | None,
) -> Prediction:
    """The model's Gaussians for ``props`` (standardised log-price units), with ``history``
    rows as known-price sources of the query ``edges`` (history index -> property index)."""
    h = 0 if history is None else len(history)
    frames = [props] if history is None else [history, props]
    x = torch.as_tensor(np.concatenate([enc.encode_x(f) for f in frames], axis=0))
    y = np.zeros(h + len(props), np.float32)
    if history is not None:
        y[:h] = enc.encode_y(history["price"].to_numpy(np.float64))
    known = torch.zeros(h + len(props), dtype=torch.bool)
    known[:h] = True
    district = np.concatenate([enc.vocab.district_codes(f["district"]) for f in frames])
    community = np.concatenate([enc.vocab.community_codes(f["community"]) for f in frames])
    if edges is None or edges[0].numel() == 0:
        ei, ea = torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 2)
    else:
        ei = torch.stack([edges[0][0], edges[0][1] + h])
        ea = edges[1]
    g = TransactionGraph(
        x=x,
        y=torch.as_tensor(y),
        known=known,
        intra_mask=torch.zeros(h + len(props), dtype=torch.bool),
        district=torch.as_tensor(district, dtype=torch.long),
        community=torch.as_tensor(community, dtype=torch.long),
        event_index=ei,
        event_attr=ea,
        intra_index=torch.zeros(2, 0, dtype=torch.long),
    )
    model.eval()
    with torch.no_grad():
        p = model(g, z)
    parts = (p.mu, p.log_sigma, p.mu_event, p.log_sigma_event, p.mu_region, p.log_sigma_region)
    return Prediction(*(t[h:] for t in parts))


def appraisal_table(
    ids: pd.Series,
    id_column: str,
    mu_log: np.ndarray,
    sigma_log: np.ndarray,
    noise_scale_log: np.ndarray | float = 0.0,
) -> pd.DataFrame:
    """The appraisal table: the id column, then :data:`OUTPUT_COLUMNS` (prices from the
    log-price Gaussian: median and the 80 % interval)."""
    return pd.DataFrame(
        {
            id_column: ids.astype(str).to_numpy(),
            "pred_median": bounded_exp(mu_log),
            "pred_lo80": bounded_exp(mu_log - Z80 * sigma_log),
            "pred_hi80": bounded_exp(mu_log + Z80 * sigma_log),
            "sigma_log": sigma_log,
            "noise_scale_log": np.broadcast_to(
                np.asarray(noise_scale_log, np.float64), mu_log.shape
            ),
        }
    )


def check_z(z: torch.Tensor, enc: Encoders, cfg: ModelConfig) -> torch.Tensor:
    """``z`` as a finite float tensor of one row per community of the model's vocabulary.

    Raises:
        ConfigError: on another shape or a non-finite value.
    """
    shape = (len(enc.vocab.communities), cfg.z_dim)
    if not torch.is_tensor(z) or tuple(z.shape) != shape:
        got = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
        raise ConfigError(f"z must be a [{shape[0]}, {shape[1]}] tensor (got {got}); pass result.z")
    if not torch.isfinite(z).all():
        raise ConfigError("z holds NaN or infinite values; pass the released z")
    return z.detach().float()
