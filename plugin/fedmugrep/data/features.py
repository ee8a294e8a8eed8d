"""Turn transaction profiles and community attributes into model inputs.

:class:`FeatureEncoder` (transactions) and :class:`CommunityEncoder` (communities) are fitted on
one frame and then transform any frame with the same columns into a ``float32`` matrix:

* numeric columns: ``(x - mean) / std`` with the fit data's mean and population std (``std`` 0
  or undefined -> 1); missing values become the mean, i.e. 0 after scaling;
* categorical columns (``object``, ``string``, ``category``, ``bool``): one-hot over the
  categories seen at fit (cells compared as ``str``; a missing cell is the category ``"<NA>"``),
  at most ``max_categories`` of them (the most frequent, ties by name), plus an ``<unknown>``
  bucket for anything else;
* time (``FeatureEncoder`` only): ``t_years = (date - reference_date) / 365.25 days`` with the
  reference date stored at fit (the earliest fit date unless given); optionally the annual cycle
  ``season_sin``, ``season_cos`` = sin/cos(2π · day-of-year / 365.25).

Feature order: numeric columns, then one-hot blocks, then time features, each in column order.
The fitted state is a plain JSON-serialisable dict (:meth:`state_dict`) that travels with a
model; :meth:`from_state_dict` rebuilds an encoder that transforms bit-identically (floats
survive JSON exactly because Python writes the shortest round-tripping repr).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from fedmugrep.data.schema import community_attribute_columns, profile_columns
from fedmugrep.errors import ConfigError, DataValidationError

__all__ = ["CommunityEncoder", "FeatureEncoder", "MISSING", "UNKNOWN"]

MISSING = "<NA>"
"""Category name given to a missing categorical cell."""
UNKNOWN = "<unknown>"
"""Name of the bucket for categories not seen at fit."""
_DAYS_PER_YEAR = 365.25
_NS_PER_DAY = 86_400 * 10**9


def _source(df: pd.DataFrame) -> str:
    return str(df.attrs.get("source", "<frame>"))


def _is_categorical(s: pd.Series) -> bool:
    return bool(
        ptypes.is_bool_dtype(s)
        or ptypes.is_object_dtype(s)
        or ptypes.is_string_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


def _as_category_text(s: pd.Series) -> np.ndarray:
    return np.array([MISSING if pd.isna(v) else str(v) for v in s.astype(object)], dtype=object)


class _TabularEncoder:
    """Standardise numeric columns and one-hot categorical ones (shared by both encoders)."""

    kind: ClassVar[str] = "_TabularEncoder"
    format_version: ClassVar[int] = 1

    def __init__(self, *, columns: Sequence[str] | None = None, max_categories: int = 50) -> None:
        if columns is not None and (
            isinstance(columns, str) or not all(isinstance(c, str) for c in columns)
        ):
            raise ConfigError(
                f"columns must be a list of column names (got {columns!r}); pass e.g. ['area_m2']"
            )
        if (
            isinstance(max_categories, bool)
            or not isinstance(max_categories, int)
            or (max_categories < 1)
        ):
            raise ConfigError(
                f"max_categories must be an integer >= 1 (got {max_categories!r}); pass e.g. 50"
            )
        self.columns: list[str] | None = list(columns) if columns is not None else None
        self.max_categories = max_categories
        self.numeric: list[dict[str, Any]] = []
        self.categorical: list[dict[str, Any]] = []
        self._fitted = False

    # -- hooks for subclasses
    def _default_columns(self, df: pd.DataFrame) -> list[str]:
        raise NotImplementedError

    def _fit_extra(self, df: pd.DataFrame) -> None:
        """Fit subclass-specific features."""

    def _extra_names(self) -> list[str]:
        return []

    def _transform_extra(self, df: pd.DataFrame) -> list[np.ndarray]:
        return []

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore subclass-specific state."""

    # -- public API
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_state_dict`) has run."""
        return self._fitted

    def _need(self, df: pd.DataFrame, names: Sequence[str]) -> None:
        if not isinstance(df, pd.DataFrame):
            raise ConfigError(f"expected a pandas DataFrame (got {type(df).__name__})")
        for name in names:
            if name not in df.columns:
                raise DataValidationError(
                    file=_source(df),
                    column=name,
                    problem=f"column '{name}' is missing but {self.kind} was fitted with it",
                    fix=f"pass a frame with the same columns as at fit ({', '.join(names)})",
                )

    def fit(self, df: pd.DataFrame) -> _TabularEncoder:
        """Learn means/stds, categories (and the reference date) from ``df``.

        Args:
            df: the fit frame (e.g. a datasite's training transactions).

        Returns:
            ``self``.
        """
        columns = self.columns if self.columns is not None else self._default_columns(df)
        self._need(df, columns)
        numeric: list[dict[str, Any]] = []
        categorical: list[dict[str, Any]] = []
        for name in columns:
            s = df[name]
            if _is_categorical(s):
                text = pd.Series(_as_category_text(s))
                counts = text.value_counts()
                ranked = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
                keep = sorted(str(k) for k, _ in ranked[: self.max_categories])
                categorical.append({"name": name, "categories": keep})
            elif ptypes.is_numeric_dtype(s):
                x = s.to_numpy(dtype=np.float64, na_value=np.nan)
                x = x[np.isfinite(x)]
                mean = float(x.mean()) if len(x) else 0.0
                std = float(x.std()) if len(x) else 1.0
                if not np.isfinite(std) or std == 0.0:
                    std = 1.0
                numeric.append({"name": name, "mean": mean, "std": std})
            else:
                raise ConfigError(
                    f"column '{name}' has unsupported dtype {s.dtype}; encode it as a number or a "
                    "string category, or leave it out of `columns`"
                )
        self.numeric, self.categorical = numeric, categorical
        self._fit_extra(df)
        self._fitted = True
        return self

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, in order."""
        self._check_fitted()
        names = [c["name"] for c in self.numeric]
        for c in self.categorical:
            names += [f"{c['name']}={v}" for v in c["categories"]] + [f"{c['name']}={UNKNOWN}"]
        return names + self._extra_names()

    @property
    def n_features(self) -> int:
        """Width ``d`` of :meth:`transform`'s output."""
        return len(self.feature_names)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ConfigError(
                f"{self.kind} is not fitted; call fit(df) or from_state_dict(d) first"
            )

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Encode ``df``.

        Args:
            df: a frame with the fitted columns (and ``date`` when time features are on).

        Returns:
            The feature matrix.

        Shapes:
            output: ``[len(df), n_features]``, ``float32``.

        Raises:
            DataValidationError: a fitted column is missing or a numeric column holds text.
        """
        self._check_fitted()
        self._need(df, [c["name"] for c in self.numeric + self.categorical])
        n = len(df)
        blocks: list[np.ndarray] = []
        for c in self.numeric:
            s = df[c["name"]]
            if ptypes.is_bool_dtype(s) or not ptypes.is_numeric_dtype(s):
                x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                bad = np.flatnonzero(s.notna().to_numpy() & np.isnan(x))
                if len(bad):
                    i = int(bad[0])
                    raise DataValidationError(
                        file=_source(df),
                        row=i + 1,
                        column=c["name"],
                        problem=f"'{c['name']}' is numeric at fit but holds {s.iloc[i]!r}",
                        fix="write a plain number (or leave the cell empty)",
                    )
            else:
                x = s.to_numpy(dtype=np.float64, na_value=np.nan)
            z = (x - c["mean"]) / c["std"]
            z[~np.isfinite(z)] = 0.0
            blocks.append(z[:, None])
        for c in self.categorical:
            cats = c["categories"]
            index = {v: j for j, v in enumerate(cats)}
            codes = np.array(
                [index.get(v, len(cats)) for v in _as_category_text(df[c["name"]])],
                dtype=np.int64,
            )
            onehot = np.zeros((n, len(cats) + 1))
            onehot[np.arange(n), codes] = 1.0
            blocks.append(onehot)
        blocks += [b.reshape(n, -1) for b in self._transform_extra(df)]
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        """``fit(df).transform(df)``."""
        return self.fit(df).transform(df)

    def state_dict(self) -> dict[str, Any]:
        """The fitted state as a JSON-serialisable dict (exact round trip)."""
        self._check_fitted()
        return {
            "kind": self.kind,
            "format_version": self.format_version,
            "columns": None if self.columns is None else list(self.columns),
            "max_categories": self.max_categories,
            "numeric": [dict(c) for c in self.numeric],
            "categorical": [
                {"name": c["name"], "categories": list(c["categories"])} for c in self.categorical
            ],
            **self._extra_state(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> _TabularEncoder:
        """Rebuild a fitted encoder from :meth:`state_dict` output.

        Raises:
            ConfigError: the dict is for another encoder kind or format version.
        """
        if not isinstance(state, dict) or state.get("kind") != cls.kind:
            got = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(
                f"state is not a {cls.kind} state dict (kind={got!r}); pass the dict from "
                f"{cls.kind}.state_dict()"
            )
        if state.get("format_version") != cls.format_version:
            raise ConfigError(
                f"{cls.kind} state format_version must be {cls.format_version} "
                f"(got {state.get('format_version')!r}); re-fit the encoder with this version"
            )
        enc = cls.__new__(cls)
        _TabularEncoder.__init__(
            enc, columns=state["columns"], max_categories=int(state["max_categories"])
        )
        enc._init_extra_defaults()
        enc.numeric = [
            {"name": str(c["name"]), "mean": float(c["mean"]), "std": float(c["std"])}
            for c in state["numeric"]
        ]
        enc.categorical = [
            {"name": str(c["name"]), "categories": [str(v) for v in c["categories"]]}
            for c in state["categorical"]
        ]
        enc._load_extra_state(state)
        enc._fitted = True
        return enc

    def _init_extra_defaults(self) -> None:
        """Set subclass attributes before state is loaded."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _TabularEncoder)
        if not (self._fitted and other._fitted):
            return self is other
        return self.state_dict() == other.state_dict()

    __hash__ = None  # type: ignore[assignment]

    def _repr_fields(self) -> list[str]:
        return []

    def __repr__(self) -> str:
        if not self._fitted:
            cols = "auto" if self.columns is None else self.columns
            return f"{self.kind}(columns={cols}, max_categories={self.max_categories}, unfitted)"
        fields = [
            f"numeric={[c['name'] for c in self.numeric]}",
            f"categorical={ {c['name']: len(c['categories']) for c in self.categorical} }",
            *self._repr_fields(),
            f"n_features={self.n_features}",
        ]
        return f"{self.kind}({', '.join(fields)})"


class FeatureEncoder(_TabularEncoder):
    """Encode transaction profiles and sale time (see the module docstring for the rules).

    Args:
        columns: profile columns to encode; default: every profile column of the fit frame
            (:func:`fedmugrep.data.schema.profile_columns`).
        time_features: add ``t_years`` (needs a ``date`` column).
        seasonal: also add ``season_sin``, ``season_cos``.
        reference_date: origin of ``t_years``; default the earliest fit date.
        max_categories: one-hot width cap per categorical column (plus the unknown bucket).

    Example:
        >>> enc = FeatureEncoder().fit(train)           # doctest: +SKIP
        >>> x = enc.transform(test)                     # [n, enc.n_features] float32
        >>> enc2 = FeatureEncoder.from_state_dict(json.loads(json.dumps(enc.state_dict())))
    """

    kind: ClassVar[str] = "FeatureEncoder"

    def __init__(
        self,
        *,
        columns: Sequence[str] | None = None,
        time_features: bool = True,
        seasonal: bool = False,
        reference_date: str | pd.Timestamp | None = None,
        max_categories: int = 50,
    ) -> None:
        super().__init__(columns=columns, max_categories=max_categories)
        self.time_features = bool(time_features)
        self.seasonal = bool(seasonal)
        self._given_reference = (
            None if reference_date is None else self._parse_reference(reference_date)
        )
        self.reference_date: pd.Timestamp | None = self._given_reference

    @staticmethod
    def _parse_reference(value: str | pd.Timestamp) -> pd.Timestamp:
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"reference_date must be an ISO date (got {value!r}); pass e.g. '2021-01-01'"
            ) from exc
        if ts is pd.NaT or pd.isna(ts):
            raise ConfigError(f"reference_date must be a date (got {value!r})")
        return ts.tz_localize(None).normalize() if ts.tzinfo else ts.normalize()

    def _init_extra_defaults(self) -> None:
        self.time_features, self.seasonal = True, False
        self._given_reference = None
        self.reference_date = None

    def _default_columns(self, df: pd.DataFrame) -> list[str]:
        return profile_columns(df)

    def _dates(self, df: pd.DataFrame) -> pd.Series:
        self._need(df, ["date"])
        d = df["date"]
        if not ptypes.is_datetime64_any_dtype(d):
            raise DataValidationError(
                file=_source(df),
                column="date",
                problem=f"'date' must be a datetime column (got dtype {d.dtype})",
                fix="load the file with load_transactions, or pd.to_datetime(df['date'])",
            )
        if isinstance(d.dtype, pd.DatetimeTZDtype):
            d = d.dt.tz_localize(None)
        if d.isna().any():
            i = int(np.flatnonzero(d.isna().to_numpy())[0])
            raise DataValidationError(
                file=_source(df),
                row=i + 1,
                column="date",
                problem="date is missing",
                fix="fill in the sale date",
            )
        return d.astype("datetime64[ns]")

    def _fit_extra(self, df: pd.DataFrame) -> None:
        if not self.time_features:
            self.reference_date = None
            return
        d = self._dates(df)
        if self._given_reference is None:
            self.reference_date = pd.Timestamp(d.min()).normalize()
        else:
            self.reference_date = self._given_reference

    def _extra_names(self) -> list[str]:
        if not self.time_features:
            return []
        return ["t_years"] + (["season_sin", "season_cos"] if self.seasonal else [])

    def t_years(self, dates: pd.Series) -> np.ndarray:
        """``(date - reference_date) / 365.25 days`` as float64.

        Shapes:
            dates: ``[n]``; output ``[n]``.
        """
        self._check_fitted()
        if self.reference_date is None:
            raise ConfigError("time features are off; construct with time_features=True")
        ns = (
            (pd.Series(dates).astype("datetime64[ns]") - self.reference_date)
            .to_numpy(dtype="timedelta64[ns]")
            .astype(np.int64)
        )
        return ns / (_NS_PER_DAY * _DAYS_PER_YEAR)

    def _transform_extra(self, df: pd.DataFrame) -> list[np.ndarray]:
        if not self.time_features:
            return []
        d = self._dates(df)
        out = [self.t_years(d)]
        if self.seasonal:
            phase = 2 * np.pi * d.dt.dayofyear.to_numpy(dtype=np.float64) / _DAYS_PER_YEAR
            out += [np.sin(phase), np.cos(phase)]
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {
            "time_features": self.time_features,
            "seasonal": self.seasonal,
            "reference_date": None
            if self.reference_date is None
            else self.reference_date.strftime("%Y-%m-%d"),
            "reference_date_given": self._given_reference is not None,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.time_features = bool(state["time_features"])
        self.seasonal = bool(state["seasonal"])
        ref = state["reference_date"]
        self.reference_date = None if ref is None else pd.Timestamp(ref)
        self._given_reference = self.reference_date if state["reference_date_given"] else None

    def _repr_fields(self) -> list[str]:
        ref = None if self.reference_date is None else self.reference_date.strftime("%Y-%m-%d")
        return [
            f"time_features={self.time_features}",
            f"seasonal={self.seasonal}",
            f"reference_date={ref}",
        ]

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FeatureEncoder:
        """Rebuild a fitted :class:`FeatureEncoder` from :meth:`state_dict` output."""
        enc = super().from_state_dict(state)
        assert isinstance(enc, FeatureEncoder)
        return enc

    def fit(self, df: pd.DataFrame) -> FeatureEncoder:
        """Learn means/stds, categories and the reference date from ``df``; returns ``self``."""
        super().fit(df)
        return self


class CommunityEncoder(_TabularEncoder):
    """Encode community attribute columns (see the module docstring for the rules).

    Args:
        columns: attribute columns to encode; default every column of the fit frame except
            ``community, district, lat, lon``
            (:func:`fedmugrep.data.schema.community_attribute_columns`).
        max_categories: one-hot width cap per categorical column (plus the unknown bucket).
    """

    kind: ClassVar[str] = "CommunityEncoder"

    def __init__(self, *, columns: Sequence[str] | None = None, max_categories: int = 50) -> None:
        super().__init__(columns=columns, max_categories=max_categories)

    def _default_columns(self, df: pd.DataFrame) -> list[str]:
        return community_attribute_columns(df)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CommunityEncoder:
        """Rebuild a fitted :class:`CommunityEncoder` from :meth:`state_dict` output."""
        enc = super().from_state_dict(state)
        assert isinstance(enc, CommunityEncoder)
        return enc

    def fit(self, df: pd.DataFrame) -> CommunityEncoder:
        """Learn means/stds (and categories) from ``df``; returns ``self``."""
        super().fit(df)
        return self
