"""The exported valuation model: model 1, the released ``z`` and the public artefacts in one
file the data scientist values properties with, at no privacy cost."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.errors import ConfigError
from fedmugrep.federation.plan import PublicArtefacts
from fedmugrep.federation.valuation.inputs import (
    check_prices,
    check_profile,
    profile_columns,
    validate_properties,
    with_regions,
)
from fedmugrep.federation.valuation.predict import appraisal_table, check_z, predict, query_edges
from fedmugrep.models.mugrep import EventModel, ModelConfig
from fedmugrep.training.prepare import Encoders, GraphConfig

__all__ = [
    "VALUATION_SCHEMA",
    "ValuationModel",
]

#: Identifies the layout of :meth:`ValuationModel.save` files.
VALUATION_SCHEMA = "fedmugrep.valuation-model/1"


# ============================================================================ exported model
@dataclass
class ValuationModel:
    """The trained model as the data scientist holds it, for valuations on their own data.

    Exporting it and appraising with it cost **no privacy**: model 1's state and ``z`` are DP
    releases (or functions of them) and the public artefacts were fitted on mock data, so
    every valuation is post-processing of DP releases plus the caller's own properties and
    sales (Dwork & Roth 2014, Prop. 2.1). No ledger is involved.

    Attributes:
        public: encoders, model and graph configs, split dates.
        model_state: ``EventModel.state_dict()`` (parameters and the ``log_sigma_offset``
            buffer, the calibration of sigma).
        z: the released region representations.
        geography: optional public communities table (``community``, ``district``, ``lat``,
            ``lon``) used to derive a property's community and district when it has none.

    Shapes:
        z ``[C, z_dim]``.
    """

    public: PublicArtefacts
    model_state: dict[str, torch.Tensor]
    z: torch.Tensor
    geography: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        cfg = self.public.model_config
        self.z = check_z(self.z, self.public.encoders, cfg)
        with torch.random.fork_rng(devices=[]):
            model = EventModel(cfg)
        try:
            model.load_state_dict(self.model_state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(
                f"model_state does not fit the public ModelConfig ({str(exc)[:200]}); export "
                "the model_state of the same run"
            ) from None
        self._model = model.eval()
        if self.geography is not None:
            geo = pd.DataFrame(self.geography)
            missing = [c for c in ("community", "lat", "lon") if c not in geo.columns]
            if missing:
                raise ConfigError(
                    f"geography lacks columns {missing}; pass the public communities table "
                    "(community, district, lat, lon)"
                )
            keep = [c for c in ("community", "district", "lat", "lon") if c in geo.columns]
            geo = geo[keep].copy()
            geo["community"] = geo["community"].astype(str)
            if "district" in geo:
                geo["district"] = geo["district"].astype(str)
            self.geography = geo.reset_index(drop=True)

    @classmethod
    def from_result(cls, result: Any, *, geography: pd.DataFrame | None = None) -> ValuationModel:
        """The model of a finished run (:class:`~fedmugrep.federation.coordinator.FederationResult`).

        Raises:
            ConfigError: when the result carries no model (``model_state``, ``z``, ``public``).
        """
        if not getattr(result, "model_state", None) or result.z is None or result.public is None:
            raise ConfigError(
                "the result carries no trained model (model_state, z, public); use the result "
                "of a completed run"
            )
        return cls(
            result.public,
            {n: v.detach().clone() for n, v in result.model_state.items()},
            result.z.detach().clone(),
            geography=geography,
        )

    # -------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain data only (tensors, str, numbers, lists, dicts): what :meth:`save` writes."""
        p = self.public
        return {
            "schema": VALUATION_SCHEMA,
            "encoders": json.loads(json.dumps(p.encoders.state_dict())),
            "model_config": asdict(p.model_config),
            "graph_config": asdict(p.graph_config),
            "val_start": p.val_start.isoformat(),
            "test_start": p.test_start.isoformat(),
            "model_state": {n: v.detach().cpu().clone() for n, v in self.model_state.items()},
            "z": self.z.detach().cpu().clone(),
            "geography": None
            if self.geography is None
            else {c: self.geography[c].tolist() for c in self.geography.columns},
        }

    def save(self, path: str | Path) -> Path:
        """Write the model to one file (``torch.save`` of :meth:`to_dict`; plain data only, so
        :meth:`load` reads it with ``weights_only=True`` and never unpickles code)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ValuationModel:
        """Read a file written by :meth:`save`.

        Raises:
            ConfigError: when the file is missing, not a valuation model, or of another schema.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model file {path} not found; export one with ValuationModel.save")
        try:
            data = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - pickle/zip errors of many kinds
            raise ConfigError(
                f"{path} is not a fedmugrep valuation model ({type(exc).__name__}); export one "
                "with ValuationModel.save"
            ) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> ValuationModel:
        """Inverse of :meth:`to_dict`."""
        schema = data.get("schema") if isinstance(data, Mapping) else None
        if schema != VALUATION_SCHEMA:
            raise ConfigError(
                f"{source} has schema {schema!r}, expected {VALUATION_SCHEMA!r}; export the "
                "model again with this fedmugrep (ValuationModel.save)"
            )
        try:
            public = PublicArtefacts(
                Encoders.from_state_dict(dict(data["encoders"])),
                ModelConfig(**dict(data["model_config"])),
                GraphConfig(**dict(data["graph_config"])),
                pd.Timestamp(data["val_start"]),
                pd.Timestamp(data["test_start"]),
            )
            geo = data.get("geography")
            return cls(
                public,
                {str(n): v for n, v in dict(data["model_state"]).items()},
                data["z"],
                geography=None if geo is None else pd.DataFrame(dict(geo)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source} does not fit this fedmugrep ({type(exc).__name__}: {exc}); export the "
                "model again"
            ) from None

    # -------------------------------------------------------------------- valuation
    def prepare(
        self, properties: pd.DataFrame, *, id_column: str = "transaction_id", history: bool = False
    ) -> pd.DataFrame:
        """Validate a properties (or history) frame and derive its community and district."""
        enc = self.public.encoders
        df = validate_properties(
            properties,
            id_column=id_column,
            require_price=history,
            required=profile_columns(enc),
        )
        check_profile(df, enc)
        if history:
            check_prices(df, enc)
        return with_regions(df, enc, self.geography)

    def appraise(
        self,
        properties: pd.DataFrame,
        history: pd.DataFrame | None = None,
        *,
        id_column: str = "transaction_id",
    ) -> pd.DataFrame:
        """Price distributions for ``properties`` (no privacy cost: see the class docstring).

        Args:
            properties: the transactions schema minus ``price``: ``id_column``, ``date`` (the
                valuation date), ``lat``, ``lon``, the model's profile columns, optional
                ``community``/``district`` (derived from :attr:`geography` when absent).
            history: the caller's own earlier sales (same schema plus ``price`` > 0) used as
                event-graph neighbours: per property the ``K`` most recent earlier sales of its
                community (the training rule); ``None`` predicts without neighbours.
            id_column: identifier column of ``properties`` (and ``history``).

        Returns:
            One row per property, in input order: ``id_column``, ``pred_median`` (currency
            units), ``pred_lo80``/``pred_hi80`` (80% interval), ``sigma_log`` (std of the
            log-price), ``noise_scale_log`` (0: nothing is noised), ``n_neighbours``.

        Raises:
            DataValidationError: naming the row and column of a bad property or sale.
        """
        enc, gcfg = self.public.encoders, self.public.graph_config
        props = self.prepare(properties, id_column=id_column)
        hist, edges = None, None
        if history is not None:
            hist = self.prepare(history, id_column=id_column, history=True)
            edges = query_edges(hist, props, enc, gcfg, gcfg.rule)
        p = predict(self._model, enc, self.z, props, hist, edges)
        mu_log = p.mu.double().numpy() * enc.y_scale + enc.y_center
        sigma_log = np.exp(p.log_sigma.double().numpy()) * enc.y_scale
        out = appraisal_table(props[id_column], id_column, mu_log, sigma_log)
        deg = np.zeros(len(props), np.int64)
        if edges is not None and edges[0].numel():
            deg = np.bincount(edges[0][1].numpy(), minlength=len(props))
        out["n_neighbours"] = deg
        return out

    def __repr__(self) -> str:
        cfg = self.public.model_config
        return (
            f"ValuationModel(communities={self.z.shape[0]}, z_dim={cfg.z_dim}, "
            f"districts={cfg.n_districts}, k={self.public.graph_config.k}, "
            f"geography={'yes' if self.geography is not None else 'no'})"
        )
