"""Valuation (C7): price distributions for properties from the trained fed-MugRep model.

Two ways to value a property:

* :class:`ValuationModel` — the *exported* model: model 1's state (its sigma calibration
  included), the released region representations ``z`` and the public artefacts. The data
  scientist values properties on their own machine, optionally with their own earlier sales
  (``history``) as event-graph neighbours. **This costs no privacy**: every part of the model is
  a DP release or public (model 1 = noised aggregates of clipped gradients, ``z`` = model 2's
  output on noised intra-region sums, encoders fitted on mocks), and the caller's own
  properties and sales are not anyone else's private data; valuing with it is post-processing
  (Dwork & Roth 2014, Prop. 2.1).
* :meth:`TransactionParty.appraise <fedmugrep.federation.parties.TransactionParty.appraise>` —
  *remote* appraisal on a transaction datasite with its private sales as neighbours, built on
  :class:`PrivateAppraisal` here: the released medians are noised and charged to the
  datasite's ledger (the privacy argument is in :class:`PrivateAppraisal`).

Neighbours follow the training graph's rule (:class:`~fedmugrep.training.prepare.GraphConfig`):
with ``rule="recent"`` (the federation's) a property's neighbours are the ``K`` most recent
earlier sales of its community, with ``rule="greedy"`` the closest ones with free slots (both
from :func:`~fedmugrep.graphs.event.build_query_edges`). Either way a property never sees a
sale of its own date or later.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.api import types as ptypes

from fedmugrep.data import loading as _loading
from fedmugrep.data.regions import assign_regions
from fedmugrep.data.schema import LAT_RANGE, LON_RANGE
from fedmugrep.errors import ConfigError, PrivacyParameterError
from fedmugrep.federation.plan import PublicArtefacts
from fedmugrep.graphs.event import build_query_edges
from fedmugrep.models.mugrep import EventModel, ModelConfig, Prediction, TransactionGraph
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.laplace import LaplaceMechanism, RandomSource
from fedmugrep.training.metrics import Z80
from fedmugrep.training.prepare import Encoders, GraphConfig, days_since_epoch

__all__ = [
    "APPRAISAL_MECHANISM",
    "MAX_PRICE",
    "MAX_PROFILE_Z",
    "PRICE_FACTOR",
    "VALUATION_SCHEMA",
    "AppraisalBounds",
    "PrivateAppraisal",
    "ValuationModel",
    "load_properties",
    "max_influence",
    "validate_properties",
]

#: Identifies the layout of :meth:`ValuationModel.save` files.
VALUATION_SCHEMA = "fedmugrep.valuation-model/1"

#: Ledger mechanism name of a remote appraisal.
APPRAISAL_MECHANISM = "laplace:appraisal"

#: Columns of an appraisal table after the id column.
OUTPUT_COLUMNS = ("pred_median", "pred_lo80", "pred_hi80", "sigma_log", "noise_scale_log")

_SOURCE = "<properties>"

#: Highest sale price a history row may have (currency units): far above any property sale, in
#: any currency, but it stops overflowing values such as 1e308.
MAX_PRICE = 1e15

#: A history price more than this factor above or below the model's typical price (the
#: geometric mean of its training prices) is refused as absurd (wrong unit or currency).
PRICE_FACTOR = 1000.0

#: A numeric profile value more than this many training standard deviations away from the
#: training mean is refused as absurd (wrong unit, a typo, a sentinel such as 999999).
MAX_PROFILE_Z = 100.0

#: Profile columns holding a size, which must be > 0 (``area_m2``, ``living_area``, ``size``...).
_POSITIVE_PROFILE = re.compile(r"(^|_)(area|size|surface|sqm|sqft|m2)(_|$)", re.IGNORECASE)
#: Profile columns holding a count or an age, which must be >= 0 (``rooms``, ``building_age``...).
_NON_NEGATIVE_PROFILE = re.compile(r"(^|_)(rooms?|bedrooms?|bathrooms?|age)(_|$)", re.IGNORECASE)

_PRICE_FIX = "give the sale price in currency units (the currency the model was trained in)"


# ============================================================================ input validation
def load_properties(path: str | Path, *, id_column: str = "transaction_id") -> pd.DataFrame:
    """Load and validate a properties file (``.csv`` or ``.parquet``): the transactions schema
    without ``price`` (a ``price`` column, if any, is ignored).

    Raises:
        DataValidationError: naming the file, the 1-based data row and the column.
    """
    p, file = _loading._check_path(path)
    df = (
        _loading._read_csv(p, file)
        if p.suffix.lower() == ".csv"
        else _loading._read_parquet(p, file)
    )
    return validate_properties(df, file=file, id_column=id_column)


def load_history(path: str | Path, *, id_column: str = "transaction_id") -> pd.DataFrame:
    """Load and validate the caller's own earlier sales (the transactions schema, with ``price``)."""
    p, file = _loading._check_path(path)
    df = (
        _loading._read_csv(p, file)
        if p.suffix.lower() == ".csv"
        else _loading._read_parquet(p, file)
    )
    return validate_properties(df, file=file, id_column=id_column, require_price=True)


def validate_properties(
    frame: pd.DataFrame,
    *,
    file: str | None = None,
    id_column: str = "transaction_id",
    require_price: bool = False,
    required: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Check and type a properties (or, with ``require_price``, a sales history) frame.

    Columns: ``id_column`` (unique, non-empty), ``date`` (ISO 8601), ``lat`` in [-90, 90],
    ``lon`` in [-180, 180], optional ``district``/``community`` (non-empty when present),
    ``price`` > 0 and at most :data:`MAX_PRICE` when ``require_price``, every column of
    ``required`` (the model's profile columns), other columns typed like a transactions file's
    profile columns. Numeric profile values must be finite; a size column (``area_m2``,
    ``living_area``, ``size``...) must be > 0, a count or age column (``rooms``,
    ``building_age``...) >= 0. :meth:`ValuationModel.prepare` also refuses values absurd for
    the model (:data:`PRICE_FACTOR`, :data:`MAX_PROFILE_Z`).

    Args:
        frame: the raw or typed frame.
        file: name used in errors (default ``frame.attrs["source"]`` or ``<properties>``).
        id_column: the identifier column returned with each valuation.
        require_price: the frame is a sales history (prices required).
        required: further columns that must be present.

    Returns:
        A typed copy (ids ``str``, ``date`` ``datetime64[ns]``, coordinates ``float64``).

    Raises:
        DataValidationError: naming the file, the 1-based data row (header excluded) and the
            column of the first problem, with a fix.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(
            f"properties must be a pandas DataFrame (got {type(frame).__name__}); "
            "load a file with load_properties"
        )
    file = file or str(frame.attrs.get("source", _SOURCE))
    kind = "history" if require_price else "properties"
    if len(frame) == 0:
        raise _loading._fail(
            file, f"{kind} table has no data rows", "add at least one property under the header"
        )
    df = frame.reset_index(drop=True)
    need = [id_column, "date", "lat", "lon"] + (["price"] if require_price else [])
    for name in [*need, *required]:
        if name not in df.columns:
            extra = "" if name in need else " (the model was trained with it)"
            raise _loading._fail(
                file,
                f"required column '{name}' is missing{extra}",
                f"add a '{name}' column; a {kind} table needs {', '.join(need)}"
                + (f" and the profile columns {', '.join(required)}" if required else ""),
                column=name,
            )
    col = _loading._Collector(file, [str(c) for c in df.columns])
    out: dict[str, Any] = {}
    out[id_column] = _loading._check_ids(
        col, df, id_column, unique=True, what=f"a unique {id_column}"
    )
    out["date"] = _loading._check_date(col, df, "date")
    out["lat"] = _loading._check_number(
        col,
        df,
        "lat",
        required=True,
        low=LAT_RANGE[0],
        high=LAT_RANGE[1],
        range_fix=_loading._LAT_FIX,
    )
    out["lon"] = _loading._check_number(
        col,
        df,
        "lon",
        required=True,
        low=LON_RANGE[0],
        high=LON_RANGE[1],
        range_fix=_loading._LON_FIX,
    )
    if require_price:
        price = _loading._check_number(
            col, df, "price", required=True, low=0.0, low_open=True, range_fix=_PRICE_FIX
        )
        col.add_mask(
            np.isfinite(price) & (price > MAX_PRICE),
            "price",
            lambda i: (
                f"price must be <= {MAX_PRICE:g} (got {price[i]:g}), no sale costs that much",
                _PRICE_FIX,
            ),
        )
        out["price"] = price
    for name in ("district", "community"):
        if name in df.columns:
            out[name] = _loading._check_ids(
                col, df, name, unique=False, what=f"the {name}, or delete the '{name}' column"
            )
    reserved = {*out, "price"}
    for name in (str(c) for c in df.columns if str(c) not in reserved):
        _check_profile_number(col, df, name)
    col.raise_if_any()
    result = {}
    for c in df.columns:
        if c in out:
            result[c] = pd.Series(out[c])
        elif c == "price":
            continue  # a properties table's price (if any) is never used
        else:
            result[c] = _loading._infer_profile(df[c])
    typed = pd.DataFrame(result)
    typed.attrs["source"] = file
    return typed


def _check_profile_number(col: _loading._Collector, df: pd.DataFrame, name: str) -> None:
    """A profile column that holds numbers only: finite; a size > 0, a count or age >= 0.

    Text columns (categorical) are left alone; empty cells are allowed (imputed).
    """
    raw = df[name]
    if ptypes.is_bool_dtype(raw) or ptypes.is_datetime64_any_dtype(raw):
        return
    _, empty, bad = _loading._numbers(raw)
    if bad.any() or empty.all():
        return
    if _POSITIVE_PROFILE.search(name):
        fix = f"give {name} as a positive number in the unit the model was trained with"
        _loading._check_number(col, df, name, required=False, low=0.0, low_open=True, range_fix=fix)
    elif _NON_NEGATIVE_PROFILE.search(name):
        fix = f"give {name} as a number >= 0"
        _loading._check_number(col, df, name, required=False, low=0.0, range_fix=fix)
    else:
        _loading._check_number(col, df, name, required=False)


def _check_profile(df: pd.DataFrame, enc: Encoders) -> None:
    """Numeric profile columns must hold numbers (empty cells are imputed by the encoder),
    none more than :data:`MAX_PROFILE_Z` training standard deviations from the training mean."""
    file = str(df.attrs.get("source", _SOURCE))
    col = _loading._Collector(file, [str(c) for c in df.columns])
    for spec in enc.features.numeric:
        name = spec["name"]
        raw = df[name]
        values, _, bad = _loading._numbers(raw)
        col.add_mask(
            bad,
            name,
            lambda i, n=name, r=raw: (
                f"{n} is numeric in the model but holds {_loading._show(r.iloc[i])}",
                _loading._NUMBER_FIX,
            ),
        )
        mean, std = float(spec["mean"]), float(spec["std"]) or 1.0
        with np.errstate(invalid="ignore", over="ignore"):
            far = np.isfinite(values) & (np.abs(values - mean) > MAX_PROFILE_Z * std)
        col.add_mask(
            far,
            name,
            lambda i, n=name, v=values, m=mean, sd=std: (
                f"{n} {v[i]:g} is absurd for this model: more than {MAX_PROFILE_Z:g} standard "
                f"deviations from the mean of its training data ({m:.4g}, sd {sd:.4g})",
                f"check the unit of {n} and the value (a typo, or a placeholder such as "
                "999999?); leave the cell empty if it is unknown",
            ),
        )
    col.raise_if_any()


def _check_prices(df: pd.DataFrame, enc: Encoders) -> None:
    """History prices within :data:`PRICE_FACTOR` of the model's typical price."""
    file = str(df.attrs.get("source", _SOURCE))
    col = _loading._Collector(file, [str(c) for c in df.columns])
    price = df["price"].to_numpy(np.float64)
    typical = math.exp(enc.y_center)
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.abs(np.log(price) - enc.y_center) > math.log(PRICE_FACTOR)
    col.add_mask(
        far,
        "price",
        lambda i: (
            f"price {price[i]:g} is absurd for this model: more than {PRICE_FACTOR:g} times "
            f"above or below its typical price {typical:,.0f}",
            f"{_PRICE_FIX}; check the unit (thousands?) and the currency, or delete the row",
        ),
    )
    col.raise_if_any()


def _profile_columns(enc: Encoders) -> tuple[str, ...]:
    return tuple(c["name"] for c in enc.features.numeric + enc.features.categorical)


def _with_regions(df: pd.DataFrame, enc: Encoders, geography: pd.DataFrame | None) -> pd.DataFrame:
    """``df`` with ``community`` and ``district`` filled from the public geography (nearest
    community centre, its district) where missing, and both checked against the vocabulary."""
    file = str(df.attrs.get("source", _SOURCE))
    if not {"community", "district"} <= set(df.columns):
        if geography is None:
            missing = "community" if "community" not in df.columns else "district"
            raise _loading._fail(
                file,
                f"column '{missing}' is missing and no public geography was given to derive it",
                "add 'community' and 'district' columns (names from the model's vocabulary), "
                "or give the public communities table (community, district, lat, lon)",
                column=missing,
            )
        df = assign_regions(df, geography)
        df.attrs["source"] = file
    for name, codes in (
        ("community", enc.vocab.community_codes(df["community"])),
        ("district", enc.vocab.district_codes(df["district"])),
    ):
        bad = np.flatnonzero(codes < 0)
        if len(bad):
            i = int(bad[0])
            known = enc.vocab.communities if name == "community" else enc.vocab.districts
            raise _loading._fail(
                file,
                f"{name} {_loading._show(df[name].iloc[i])} is not in the model's vocabulary",
                f"use one of the model's {len(known)} {name} names (e.g. {known[0]!r}), or "
                f"delete the '{name}' column to derive it from the public geography",
                row=i + 1,
                column=name,
            )
    return df


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


def _query_edges(
    history: pd.DataFrame, props: pd.DataFrame, enc: Encoders, gcfg: GraphConfig, rule: str
) -> tuple[torch.Tensor, torch.Tensor]:
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
def _predict(
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


def _table(
    ids: pd.Series,
    id_column: str,
    mu_log: np.ndarray,
    sigma_log: np.ndarray,
    noise_scale_log: np.ndarray | float = 0.0,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            id_column: ids.astype(str).to_numpy(),
            "pred_median": np.exp(mu_log),
            "pred_lo80": np.exp(mu_log - Z80 * sigma_log),
            "pred_hi80": np.exp(mu_log + Z80 * sigma_log),
            "sigma_log": sigma_log,
            "noise_scale_log": np.broadcast_to(
                np.asarray(noise_scale_log, np.float64), mu_log.shape
            ),
        }
    )


def _check_z(z: torch.Tensor, enc: Encoders, cfg: ModelConfig) -> torch.Tensor:
    shape = (len(enc.vocab.communities), cfg.z_dim)
    if not torch.is_tensor(z) or tuple(z.shape) != shape:
        got = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
        raise ConfigError(f"z must be a [{shape[0]}, {shape[1]}] tensor (got {got}); pass result.z")
    if not torch.isfinite(z).all():
        raise ConfigError("z holds NaN or infinite values; pass the released z")
    return z.detach().float()


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
        self.z = _check_z(self.z, self.public.encoders, cfg)
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
            required=_profile_columns(enc),
        )
        _check_profile(df, enc)
        if history:
            _check_prices(df, enc)
        return _with_regions(df, enc, self.geography)

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
            edges = _query_edges(hist, props, enc, gcfg, gcfg.rule)
        p = _predict(self._model, enc, self.z, props, hist, edges)
        mu_log = p.mu.double().numpy() * enc.y_scale + enc.y_center
        sigma_log = np.exp(p.log_sigma.double().numpy()) * enc.y_scale
        out = _table(props[id_column], id_column, mu_log, sigma_log)
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


# ============================================================================ remote appraisal
@dataclass(frozen=True)
class AppraisalBounds:
    """Public clipping of a remote appraisal (standardised log-price units,
    ``y_std = (log price - center) / scale``).

    Attributes:
        correction_clip: ``c``; the part of a median due to the datasite's sales (the prediction
            with neighbours minus the prediction without, which is public) is clipped to
            ``[-c, c]`` before noise, and the noised value is clamped there again.
        lo, hi: every released median is clipped to ``[lo, hi]`` (post-processing).
    """

    correction_clip: float = 0.5
    lo: float = -4.0
    hi: float = 4.0

    def __post_init__(self) -> None:
        for name in ("lo", "hi", "correction_clip"):
            if not math.isfinite(float(getattr(self, name))):
                raise PrivacyParameterError(f"{name} must be finite (got {getattr(self, name)})")
        if not self.lo < self.hi:
            raise PrivacyParameterError(
                f"lo must be < hi (got lo={self.lo}, hi={self.hi}); e.g. lo=-4, hi=4"
            )
        if not self.correction_clip > 0:
            raise PrivacyParameterError(
                f"correction_clip must be > 0 (got {self.correction_clip}); pass e.g. 0.5"
            )

    @property
    def per_property(self) -> float:
        """Most one released correction can move between neighbouring datasets: ``2c``."""
        return 2.0 * self.correction_clip


class PrivateAppraisal:
    """One remote appraisal on a transaction datasite: validation, sensitivity and release.

    **Released vector.** For properties ``q = 1..Q`` (public: the data scientist sends them)
    let ``p_q`` be the model's fused mean *without* neighbours (a function of ``theta``, ``z``
    and the property only: public) and ``m_q`` the mean with the datasite's sales as event-graph
    neighbours (:func:`recent_query_edges`, the training rule). The released vector is the
    clipped event-view correction ``d_q = clip(m_q - p_q, -c, c)`` plus Laplace noise; the
    median is ``clip(p_q + d~_q, lo, hi)`` (post-processing; :class:`AppraisalBounds`).

    **Sensitivity (add/remove one sale r).** ``m_q`` depends on the private table only through
    ``q``'s neighbours (their residuals ``y_j - mu2_j`` use ``j``'s own row only, the edge
    features ``q``'s own edges). ``q``'s neighbour window is computed from the history and ``q``
    alone (never from other queries), so ``r`` changes ``d_q`` only for queries of ``r``'s
    community dated in ``(t_r, t_r + max_days]``: at most ``M`` = :func:`max_influence` of
    them, computed from the public queries. (``build_query_edges``' per-batch out-degree cap
    ``K`` would not do: its greedy rule cascades, see :mod:`fedmugrep.graphs.event`; and a
    window rule bounds a row's *uses*, not the queries whose windows it shifts.) Each such
    ``d_q`` lies in ``[-c, c]`` before and after, so it moves by at most ``2c``. L1 sensitivity::

        Δ = M · 2c

    **Noise.** The snapped Laplace mechanism (clamp bound ``c``) with scale ``b`` chosen so the
    *charged* ε is at most ``epsilon`` (:meth:`LaplaceMechanism.for_budget`, ``b ≈ Δ/ε``),
    charged as one ``LaplaceEvent`` of dimension ``Q`` before anything is returned.

    **Interval.** The spread is the model's sigma *without* neighbours (public; the sigma with
    neighbours depends on private rows and is not released), widened for the noise:
    ``sigma' = sqrt(sigma^2 + min(2 b^2 + g^2/12, 4 c^2))`` in log units (Laplace variance
    ``2b^2`` plus rounding to the snapping grid ``g``; the clamped correction is never more than
    ``2c`` off); the 80% interval is ``median · exp(±1.2816 sigma')``. Column
    ``noise_scale_log`` holds ``b`` in log units. At small ε or large ``M`` the correction is
    mostly noise and the median falls back towards the public prediction ``p_q``: that is the
    honest cost, shown in ``noise_scale_log`` and the interval.

    Args:
        public: the public artefacts (encoders, configs).
        properties: the properties (transactions schema minus price, ``community`` and
            ``district`` included: the datasite derives nothing from its private rows).
        epsilon: ε charged for this release (> 0).
        bounds: the public clipping.
        id_column: identifier column.
        source: random bits (default: secure).

    Raises:
        PrivacyParameterError: on ``epsilon <= 0`` or non-finite.
        DataValidationError: on a bad property (row and column named).
    """

    def __init__(
        self,
        public: PublicArtefacts,
        properties: pd.DataFrame,
        *,
        epsilon: float,
        bounds: AppraisalBounds | None = None,
        id_column: str = "transaction_id",
        source: RandomSource | None = None,
    ) -> None:
        try:
            eps = float(epsilon)
        except (TypeError, ValueError):
            eps = float("nan")
        if not (math.isfinite(eps) and eps > 0):
            raise PrivacyParameterError(
                f"epsilon must be > 0 and finite (got {epsilon!r}); pass a positive value"
            )
        self.public, self.epsilon, self.id_column = public, eps, id_column
        self.bounds = bounds or AppraisalBounds()
        enc, gcfg = public.encoders, public.graph_config
        props = validate_properties(properties, id_column=id_column, required=_profile_columns(enc))
        _check_profile(props, enc)
        self.properties = _with_regions(props, enc, None)
        groups = (
            enc.vocab.community_codes(self.properties["community"])
            if gcfg.event_within_community
            else np.zeros(len(self.properties), np.int64)
        )
        t = days_since_epoch(self.properties["date"])
        self.influence = max_influence(groups, t, gcfg.max_days)
        self.sensitivity = self.influence * self.bounds.per_property
        self.mechanism = LaplaceMechanism.for_budget(
            epsilon=eps,
            sensitivity=self.sensitivity,
            bound=self.bounds.correction_clip,
            dimension=len(self.properties),
            source=source,
        )

    @property
    def noise_scale(self) -> float:
        """Laplace scale ``b`` in standardised units."""
        return float(self.mechanism.scale)

    def event(self) -> LaplaceEvent:
        """The event this release charges."""
        return self.mechanism.event(dimension=len(self.properties))

    def digest(self, theta: Mapping[str, torch.Tensor], z: torch.Tensor) -> str:
        """SHA-256 of everything the release depends on besides the private table (the key of
        an idempotent release: the same request gets the same noised answer back)."""
        h = hashlib.sha256()
        buf = io.StringIO()
        self.properties.to_csv(buf, index=False, date_format="%Y-%m-%d")
        h.update(buf.getvalue().encode())
        for name in sorted(theta):
            h.update(name.encode() + b"\0" + theta[name].detach().cpu().float().numpy().tobytes())
        h.update(z.detach().cpu().float().numpy().tobytes())
        h.update(repr((self.epsilon, asdict(self.bounds), self.id_column)).encode())
        return h.hexdigest()[:32]

    def exact(
        self, model: EventModel, z: torch.Tensor, history: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p, d, sigma)``: the public means without neighbours, the clipped corrections
        (before noise) and the public log-sigma's exponent, all in standardised units.

        Shapes:
            each ``[Q]``.
        """
        enc, gcfg, c = self.public.encoders, self.public.graph_config, self.bounds.correction_clip
        z = _check_z(z, enc, self.public.model_config)
        props = self.properties
        edges = _query_edges(history, props, enc, gcfg, "recent")
        with_n = _predict(model, enc, z, props, history, edges)
        without = _predict(model, enc, z, props, None, None)
        p = without.mu.double().numpy()
        d = np.clip(with_n.mu.double().numpy() - p, -c, c)
        return p, d, np.exp(without.log_sigma.double().numpy())

    def release(
        self, model: EventModel, z: torch.Tensor, history: pd.DataFrame
    ) -> tuple[pd.DataFrame, list[LaplaceEvent], list[float]]:
        """Noise the clipped corrections; returns ``(table, events to charge, payload)``. The
        caller charges the events *before* handing out the table."""
        enc, b = self.public.encoders, self.bounds
        p, d, sigma = self.exact(model, z, history)
        noisy = self.mechanism.release(d)  # clamped to [-c, c] by the mechanism
        mu = np.clip(p + noisy, b.lo, b.hi)
        scale_log = self.noise_scale * enc.y_scale
        noise_var = min(
            2 * self.noise_scale**2 + self.mechanism.grid**2 / 12, 4 * b.correction_clip**2
        )
        sigma_log = np.sqrt(sigma**2 + noise_var) * enc.y_scale
        mu_log = mu * enc.y_scale + enc.y_center
        ids = self.properties[self.id_column]
        table = _table(ids, self.id_column, mu_log, sigma_log, scale_log)
        table.attrs["appraisal"] = self.summary()
        return table, [self.event()], [float(x) for x in noisy]

    def summary(self) -> dict[str, Any]:
        """Public facts of this release (for the data scientist and the reviewer)."""
        return {
            "mechanism": APPRAISAL_MECHANISM,
            "epsilon": self.epsilon,
            "charged_epsilon": self.event().epsilon,
            "properties": len(self.properties),
            "max_influence": self.influence,
            "sensitivity": self.sensitivity,
            "noise_scale": self.noise_scale,
            "noise_scale_log": self.noise_scale * self.public.encoders.y_scale,
            "bounds": asdict(self.bounds),
        }
