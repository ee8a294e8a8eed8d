r"""The built-in synthetic city: transactions split across agencies, with known ground truth.

Everything is drawn from :class:`CityConfig` (all defaults below) with ``numpy``'s PCG64 seeded
by ``config.seed``; each part (geometry, coefficients, attributes, mobility, transactions,
residuals, agencies) uses its own child stream of ``SeedSequence(seed)``, so e.g. changing
``n_transactions`` keeps the same map, communities and coefficients. Same seed and config ->
same frames and byte-identical files.

Generative model (also written, with the drawn values, into ``metadata.json``):

1. **Map.** A ``width_km`` x ``height_km`` box (20 x 15 km) centred on (``center_lat``,
   ``center_lon``) = (48.85, 2.35), in the local equirectangular plane of
   :func:`fedmugrep.data.geo.project_km`. ``n_communities`` (60) community centres uniform in
   the box, named ``C001``...; ``n_districts`` (6) district centres chosen among the community
   centres by farthest-point sampling from a random first one, named ``D1``...; each community
   belongs to its nearest district centre (so no district is empty).
2. **Community attributes.** With ``r_c`` the distance (km) of the centre to the city centre:
   ``poi_count ~ Poisson(5 + 60 exp(-r_c/5))``;
   ``pct_young = clip(0.25 + 0.1 exp(-r_c/6) + N(0, 0.04²), 0.05, 0.6)``;
   ``income_index = exp(0.5 a_d + N(0, 0.15²))`` (``a_d`` the district level of step 4);
   ``green_share ~ Beta(2, 5)``; ``transit_access = clip(1 - r_c/14 + N(0, 0.08²), 0, 1)``;
   ``population ~ round(LogNormal(log population_median, population_log_sd²))``.
3. **Mobility.** ``flow_ij = pop_i pop_j / (d_ij + 1)² · exp(N(0, mobility_noise_log_sd²)) / 1e4``
   (``d_ij`` in km, ``i != j``), rounded to 3 decimals; keep the ``mobility_top_k`` (8) largest
   destinations per source. Columns ``src, dst, flow``.
4. **Coefficients.** District level ``a_d ~ N(0, district_level_sd²)``, district trend
   ``b_d ~ N(district_trend_mean, district_trend_sd²)`` (log-price per year); attribute weights
   ``w_k ~ N(attribute_coef_mean_k, attribute_coef_sd²)`` for the 5 attributes (``poi_count,
   pct_young, income_index, green_share, transit_access``) standardised over communities;
   ``f(lat, lon) = Σ_{q=1..4} A_q exp(-|x - c_q|² / (2 s_q²))`` with centres ``c_q`` uniform in
   the box, ``|A_q| ~ U(bump_amplitude)`` with a random sign, ``s_q ~ U(bump_width_km)``.
5. **Transactions** (``n_transactions`` = 12000, dates in ``[start_date, start_date +
   n_months)`` = [2021-01-01, 2024-01-01)): community ``c ~ population``; location = centre +
   ``N(0, location_sd_m²)`` per axis; day ``∝ 1 + seasonality · sin(2π (doy - 80) / 365.25)``;
   ``area_m2 = clip(LogNormal(log area_median_m2, area_log_sd²), area_min_m2, area_max_m2)``
   (1 decimal); ``rooms = max(1, round(area/25 + N(0, 0.6²)))``; ``property_type`` = studio
   with prob. 0.6 when ``area < 35`` (never otherwise), else house with prob.
   ``0.03 + 0.3·[area > 110]``, else apartment; ``floor = 0`` for houses, else
   ``min(15, round(Exp(3)))``; ``building_age = clip(round(U(80, 120)) w.p. 0.35 else
   round(Gamma(2, 15)), 0, 120)``; ``has_parking`` "yes" with prob. 0.25 (0.6 for houses).
   Sorted by (date, draw order) and named ``T000001``... in that order.
6. **Structural mean** ``m_i = log(base_price_per_m2 · reference_area_m2)
   + area_coef · log(area_i / reference_area_m2) + a_d + b_d t_i + w · z_c + f(c)
   + rooms_coef · rooms + floor_coef · min(floor, 10) + ground_floor_coef · [floor = 0]
   + age_coef · age + age_sq_coef · age² + house_coef · [house] + studio_coef · [studio]
   + parking_coef · [parking]`` with ``t_i = (date_i - start_date) / 365.25`` days.
7. **Dependence on recent nearby sales.** In (date, id) order, ``e_i = rho · mean_{j ∈ P(i)} e_j
   + eps_i``, ``eps_i ~ N(0, sigma²)``, where ``P(i)`` = the last ``max_recent`` (5)
   transactions, in (date, id) order, of the **same community** with ``date_j < date_i`` and
   ``date_i - date_j <= window_days`` (180); empty ``P(i)`` gives ``e_i = eps_i``.
   ``price_i = round(exp(m_i + e_i))`` euros.
8. **Agencies** ``agency1..agencyN``: weights ``agency_weights`` (default ∝ 0.6^k). Each
   district gets a *primary* agency by greedy packing of the districts' population shares
   towards the weights (largest district first, to the agency furthest below its weight; every
   agency gets one when there are enough districts). Each
   agency then also covers ``extra_districts_per_agency`` (1) more random districts (2 when it
   has no primary one), so some districts have 2-3 agencies. A transaction goes to exactly one
   agency covering its district, with probability ∝ weight x (``primary_boost`` if primary
   else 1). The per-agency files do not contain the agency.

Ground truth (``truth.csv``): ``structural_mean_log`` = ``m_i``, ``cond_mean_log`` =
``mu_i = m_i + rho · mean_{P(i)} e_j`` (the conditional mean of the log price given everything
observable before the sale, all agencies pooled), ``residual`` = ``e_i``, plus ``innovation`` =
``eps_i``, ``n_prior`` = ``|P(i)|`` and ``prior_ids`` (``;``-separated).

Bayes floor (:func:`bayes_floor`): ``log price_i = mu_i + eps_i`` (up to rounding to euros), so
on log price the best MAE is ``E|eps| = sigma sqrt(2/pi)``; in currency the MAE-optimal
predictor is the median ``exp(mu_i)`` and its MAE is ``exp(mu_i) e^{sigma²/2} (2 Φ(sigma) - 1)``.
The floor assumes an oracle that knows ``m`` and every agency's past sales; a single agency
or a learned model sits above it.

Code layout: :func:`make_city` composes one function per step. Each is a function of the config,
the results of earlier steps and, when it draws, its own stream from :func:`_spawn_streams`:
:func:`_place_communities` (1); :func:`_draw_coefficients` (4, run before 2 since
``income_index`` depends on ``a_d``); :func:`_draw_attributes` (2); :func:`_draw_mobility` (3);
:func:`_draw_sales` with :func:`_draw_profiles`, then :func:`_sort_by_date` (5);
:func:`_community_effect` and :func:`_structural_mean` (6); :func:`_draw_residuals` (7);
:func:`_cover_districts` and :func:`_assign_agencies` (8). :func:`_transactions_frame`,
:func:`_truth_frame` and :func:`_metadata` assemble the outputs.

Example:
    >>> from fedmugrep.data.synthetic import CityConfig, make_city
    >>> city = make_city(CityConfig(seed=1, n_transactions=500))
    >>> city.transactions.shape, city.communities.shape, city.mobility.shape
    ((500, 13), (60, 10), (480, 3))
    >>> city.agencies
    ['agency1', 'agency2', 'agency3']
    >>> make_city(CityConfig(seed=1, n_transactions=500)).truth.equals(city.truth)
    True

    A step can be run on its own; the map depends only on the config and its stream:

    >>> from fedmugrep.data.synthetic import _place_communities, _spawn_streams
    >>> geo = _place_communities(city.config, _spawn_streams(city.config.seed)["geometry"])
    >>> bool((geo.lat == city.communities["lat"].to_numpy()).all())
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from fedmugrep.data.geo import km_to_degrees, project_km
from fedmugrep.errors import ConfigError
from fedmugrep.tomlfile import read_toml

__all__ = [
    "ATTRIBUTES",
    "CityConfig",
    "SyntheticCity",
    "bayes_floor",
    "bayes_floor_factor",
    "make_city",
    "write_city",
]

ATTRIBUTES: tuple[str, ...] = (
    "poi_count",
    "pct_young",
    "income_index",
    "green_share",
    "transit_access",
)
"""The five numeric community attributes, in the order of ``attribute_coef_mean``."""

PROFILE_COLUMNS: tuple[str, ...] = (
    "area_m2",
    "rooms",
    "floor",
    "building_age",
    "property_type",
    "has_parking",
)
TRANSACTION_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "date",
    "lat",
    "lon",
    "price",
    "district",
    "community",
    *PROFILE_COLUMNS,
)
TRUTH_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "agency",
    "structural_mean_log",
    "cond_mean_log",
    "residual",
    "innovation",
    "n_prior",
    "prior_ids",
)
_STREAMS = (
    "geometry",
    "coefficients",
    "attributes",
    "mobility",
    "transactions",
    "residuals",
    "agencies",
)


PROFILE_COEFFICIENTS: tuple[str, ...] = (
    "rooms_coef",
    "floor_coef",
    "ground_floor_coef",
    "age_coef",
    "age_sq_coef",
    "house_coef",
    "studio_coef",
    "parking_coef",
)
"""CityConfig fields that are profile-effect coefficients (checked finite; written to metadata)."""


@dataclass(frozen=True)
class CityConfig:
    """Every parameter of the synthetic city (see the module docstring for the model).

    Construct with keywords; invalid values raise :class:`~fedmugrep.errors.ConfigError`.
    ``CityConfig.from_dict`` / ``from_toml`` load one (unknown keys are an error).
    """

    seed: int = 0
    n_transactions: int = 12_000
    n_agencies: int = 3
    n_districts: int = 6
    n_communities: int = 60
    # map
    center_lat: float = 48.85
    center_lon: float = 2.35
    width_km: float = 20.0
    height_km: float = 15.0
    location_sd_m: float = 300.0
    # time
    start_date: str = "2021-01-01"
    n_months: int = 36
    seasonality: float = 0.15
    # communities and mobility
    population_median: float = 6000.0
    population_log_sd: float = 0.5
    mobility_top_k: int = 8
    mobility_noise_log_sd: float = 0.3
    # profile
    area_median_m2: float = 62.0
    area_log_sd: float = 0.45
    area_min_m2: float = 18.0
    area_max_m2: float = 250.0
    # structural mean
    base_price_per_m2: float = 5000.0
    reference_area_m2: float = 70.0
    area_coef: float = 0.9
    district_level_sd: float = 0.2
    district_trend_mean: float = 0.03
    district_trend_sd: float = 0.02
    attribute_coef_mean: tuple[float, ...] = (0.03, 0.02, 0.08, 0.03, 0.05)
    attribute_coef_sd: float = 0.01
    n_bumps: int = 4
    bump_amplitude: tuple[float, float] = (0.05, 0.15)
    bump_width_km: tuple[float, float] = (1.5, 4.0)
    rooms_coef: float = 0.02
    floor_coef: float = 0.01
    ground_floor_coef: float = -0.05
    age_coef: float = -0.004
    age_sq_coef: float = 0.000025
    house_coef: float = 0.10
    studio_coef: float = 0.06
    parking_coef: float = 0.05
    # dependence on recent nearby sales
    rho: float = 0.8
    sigma: float = 0.12
    max_recent: int = 5
    window_days: int = 180
    # agencies
    agency_weights: tuple[float, ...] | None = None
    primary_boost: float = 3.0
    extra_districts_per_agency: int = 1

    def __post_init__(self) -> None:
        """Validate every field and store the tuple fields as tuples of floats."""
        _check_scalars(self)
        _check_relations(self)
        _normalise_sequences(self)

    @property
    def start(self) -> pd.Timestamp:
        """First possible sale date."""
        return pd.Timestamp(self.start_date)

    @property
    def end(self) -> pd.Timestamp:
        """First date after the period (exclusive end)."""
        return self.start + pd.DateOffset(months=self.n_months)

    def weights(self) -> np.ndarray:
        """Normalised agency weights (default ∝ 0.6^k)."""
        w = (
            np.array(self.agency_weights)
            if self.agency_weights is not None
            else 0.6 ** np.arange(self.n_agencies)
        )
        return w / w.sum()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for JSON/TOML."""
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CityConfig:
        """Build from a mapping; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown CityConfig field(s) {unknown}; valid fields: {', '.join(sorted(known))}"
            )
        conv = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
        return cls(**conv)

    @classmethod
    def from_toml(cls, path: str | Path) -> CityConfig:
        """Load from a TOML file (top level, or a ``[city]`` table).

        Raises:
            ConfigError: when the file cannot be read or holds unknown or invalid fields; a
                file that is not UTF-8 text or not valid TOML raises
                :class:`~fedmugrep.errors.ConfigFileError` (also a
                ``DataValidationError``) naming the file and the line.
        """
        data = read_toml(path, what="city config")
        city = data.get("city", data)
        if not isinstance(city, dict):
            raise ConfigError(
                f"{path}: 'city' must be a [city] table; write the fields under [city]"
            )
        try:
            return cls.from_dict(city)
        except ConfigError as exc:
            raise type(exc)(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------- config validation

_COUNT_FIELDS: tuple[str, ...] = (
    "n_transactions",
    "n_agencies",
    "n_districts",
    "n_communities",
    "n_months",
    "mobility_top_k",
    "max_recent",
    "window_days",
    "n_bumps",
)
_POSITIVE_FIELDS: tuple[str, ...] = (
    "width_km",
    "height_km",
    "location_sd_m",
    "population_median",
    "area_median_m2",
    "area_min_m2",
    "area_max_m2",
    "base_price_per_m2",
    "reference_area_m2",
    "sigma",
    "primary_boost",
)
_SPREAD_FIELDS: tuple[str, ...] = (
    "population_log_sd",
    "mobility_noise_log_sd",
    "area_log_sd",
    "district_level_sd",
    "district_trend_sd",
    "attribute_coef_sd",
)
_FINITE_FIELDS: tuple[str, ...] = (
    "center_lat",
    "center_lon",
    "seasonality",
    "area_coef",
    "district_trend_mean",
    *PROFILE_COEFFICIENTS,
    "rho",
)


def _require_int(cfg: CityConfig, name: str, minimum: int = 1) -> None:
    """Raise :class:`ConfigError` unless field ``name`` is an integer ``>= minimum`` (not bool)."""
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
        raise ConfigError(
            f"{name} must be an integer >= {minimum} (got {v!r}); pass e.g. "
            f"{name}={max(minimum, 1) * 2}"
        )


def _require_positive(cfg: CityConfig, name: str) -> None:
    """Raise :class:`ConfigError` unless field ``name`` is a finite number ``> 0``."""
    v = getattr(cfg, name)
    if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be > 0 (got {v!r}); pass a positive value")


def _require_finite(cfg: CityConfig, name: str) -> None:
    """Raise :class:`ConfigError` unless field ``name`` is a finite number (not bool)."""
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number (got {v!r})")


def _check_scalars(cfg: CityConfig) -> None:
    """Type and sign of every scalar field, one field at a time in a fixed order.

    Raises:
        ConfigError: naming the first field that is not valid on its own.
    """
    for name in ("seed", "extra_districts_per_agency"):
        _require_int(cfg, name, 0)
    for name in _COUNT_FIELDS:
        _require_int(cfg, name)
    for name in _POSITIVE_FIELDS:
        _require_positive(cfg, name)
    for name in _SPREAD_FIELDS:
        _require_finite(cfg, name)
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0 (got {getattr(cfg, name)!r})")
    for name in _FINITE_FIELDS:
        _require_finite(cfg, name)


def _check_relations(cfg: CityConfig) -> None:
    """Ranges and relations between fields: map centre, ``rho``, areas, sizes, start date.

    Raises:
        ConfigError: naming the first violated condition.
    """
    if not -80 <= cfg.center_lat <= 80 or not -180 <= cfg.center_lon <= 180:
        raise ConfigError(
            f"center_lat/center_lon must be in [-80, 80] x [-180, 180] (got "
            f"{cfg.center_lat}, {cfg.center_lon})"
        )
    if not 0 <= cfg.rho < 1:
        raise ConfigError(f"rho must be in [0, 1) (got {cfg.rho}); pass a value below 1")
    if not 0 <= cfg.seasonality < 1:
        raise ConfigError(f"seasonality must be in [0, 1) (got {cfg.seasonality})")
    if cfg.area_min_m2 >= cfg.area_max_m2:
        raise ConfigError(
            f"area_min_m2 must be < area_max_m2 (got {cfg.area_min_m2} >= {cfg.area_max_m2})"
        )
    if cfg.n_districts > cfg.n_communities:
        raise ConfigError(
            f"n_districts must be <= n_communities (got {cfg.n_districts} > "
            f"{cfg.n_communities}); pass fewer districts or more communities"
        )
    if cfg.n_agencies > cfg.n_transactions:
        raise ConfigError(
            f"n_agencies must be <= n_transactions (got {cfg.n_agencies} > {cfg.n_transactions})"
        )
    try:
        start = pd.Timestamp(cfg.start_date)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"start_date must be an ISO date (got {cfg.start_date!r}); pass e.g. '2021-01-01'"
        ) from exc
    if start != start.normalize():
        raise ConfigError(f"start_date must be a date without time (got {cfg.start_date!r})")


def _normalise_sequences(cfg: CityConfig) -> None:
    """Check the tuple fields and store them as tuples of floats on the (frozen) ``cfg``.

    Raises:
        ConfigError: ``attribute_coef_mean`` of the wrong length, a bad ``(low, high)`` range,
            or ``agency_weights`` that are not one positive number per agency.
    """
    object.__setattr__(cfg, "attribute_coef_mean", tuple(map(float, cfg.attribute_coef_mean)))
    if len(cfg.attribute_coef_mean) != len(ATTRIBUTES):
        raise ConfigError(
            f"attribute_coef_mean must have {len(ATTRIBUTES)} values, one per attribute "
            f"{ATTRIBUTES} (got {len(cfg.attribute_coef_mean)})"
        )
    for name in ("bump_amplitude", "bump_width_km"):
        pair = tuple(map(float, getattr(cfg, name)))
        if len(pair) != 2 or not 0 <= pair[0] <= pair[1]:
            raise ConfigError(f"{name} must be (low, high) with 0 <= low <= high (got {pair})")
        object.__setattr__(cfg, name, pair)
    if cfg.bump_width_km[0] <= 0:
        raise ConfigError(f"bump_width_km must be > 0 (got {cfg.bump_width_km})")
    if cfg.agency_weights is not None:
        w = tuple(map(float, cfg.agency_weights))
        if len(w) != cfg.n_agencies or any(not math.isfinite(x) or x <= 0 for x in w):
            raise ConfigError(
                f"agency_weights must be {cfg.n_agencies} positive numbers, one per agency "
                f"(got {cfg.agency_weights}); or leave it unset"
            )
        object.__setattr__(cfg, "agency_weights", w)


@dataclass(frozen=True, eq=False)
class SyntheticCity:
    """A generated city.

    Attributes:
        config: the configuration it was drawn from.
        transactions: all transactions (schema columns + ``district``, ``community`` + profile
            columns), in (date, id) order, without the agency.
        communities: ``community, district, lat, lon, <5 attributes>, population``.
        mobility: ``src, dst, flow``.
        truth: ``transaction_id, agency, structural_mean_log, cond_mean_log, residual,
            innovation, n_prior, prior_ids`` aligned with ``transactions``.
        metadata: everything written to ``metadata.json``.
    """

    config: CityConfig
    transactions: pd.DataFrame
    communities: pd.DataFrame
    mobility: pd.DataFrame
    truth: pd.DataFrame
    metadata: dict[str, Any] = field(repr=False)

    @property
    def agencies(self) -> list[str]:
        """Agency names ``agency1..agencyN``."""
        return [f"agency{k + 1}" for k in range(self.config.n_agencies)]

    def agency_transactions(self, agency: str) -> pd.DataFrame:
        """One agency's transactions (no agency column), in (date, id) order."""
        if agency not in self.agencies:
            raise ConfigError(f"unknown agency {agency!r}; choose one of {self.agencies}")
        mask = (self.truth["agency"] == agency).to_numpy()
        return self.transactions.loc[mask].reset_index(drop=True)

    def __repr__(self) -> str:
        sizes = self.truth["agency"].value_counts().reindex(self.agencies).tolist()
        return (
            f"SyntheticCity(seed={self.config.seed}, transactions={len(self.transactions)}, "
            f"communities={len(self.communities)}, districts={self.config.n_districts}, "
            f"agencies={dict(zip(self.agencies, sizes, strict=True))})"
        )


# --------------------------------------------------------------------------- Bayes floor


def bayes_floor_factor(sigma: float) -> float:
    """``E|e^eps - 1|`` for ``eps ~ N(0, sigma²)``, which equals ``e^{sigma²/2} (2 Φ(sigma) - 1)``.

    Proof: ``E|e^eps - 1| = E[(e^eps - 1) 1{eps>0}] - E[(e^eps - 1) 1{eps<0}]``, and
    ``E[e^eps 1{eps>0}] = e^{sigma²/2} Φ(sigma)`` (complete the square: the tilted law is
    ``N(sigma², sigma²)``), ``E[e^eps 1{eps<0}] = e^{sigma²/2} Φ(-sigma)``, ``P(eps>0) = 1/2``;
    so ``= e^{sigma²/2} (Φ(sigma) - Φ(-sigma)) = e^{sigma²/2} (2 Φ(sigma) - 1)``.
    """
    if not math.isfinite(sigma) or sigma <= 0:
        raise ConfigError(f"sigma must be > 0 (got {sigma}); pass a positive value")
    return math.exp(sigma**2 / 2) * (2 * float(ndtr(sigma)) - 1)


def bayes_floor(
    truth: pd.DataFrame, sigma: float, ids: Iterable[str] | None = None
) -> dict[str, float]:
    """Lowest achievable MAE (log price and currency) on the given transactions.

    With ``log price_i = mu_i + eps_i``, ``eps_i ~ N(0, sigma²)`` independent of everything
    observable before the sale, the MAE-optimal prediction is the median: ``mu_i`` on log
    price (MAE ``E|eps| = sigma sqrt(2/pi)``) and ``exp(mu_i)`` in currency (MAE
    ``exp(mu_i) E|e^eps - 1| = exp(mu_i) e^{sigma²/2} (2 Φ(sigma) - 1)``, see
    :func:`bayes_floor_factor`). Rounding prices to whole euros is ignored.

    Args:
        truth: frame with ``transaction_id`` and ``cond_mean_log`` (``truth.csv``).
        sigma: innovation standard deviation (``metadata["sigma"]``).
        ids: transaction ids to average over (e.g. a test split); default all.

    Returns:
        ``{"mae_log": ..., "mae": ...}``.
    """
    for c in ("transaction_id", "cond_mean_log"):
        if c not in truth.columns:
            raise ConfigError(f"truth has no '{c}' column; pass the frame from truth.csv")
    mu = truth["cond_mean_log"].to_numpy(dtype=np.float64)
    if ids is not None:
        wanted = pd.Index([str(i) for i in ids])
        index = pd.Index(truth["transaction_id"].astype(str))
        pos = index.get_indexer(wanted)
        if (pos < 0).any():
            missing = wanted[pos < 0][:5].tolist()
            raise ConfigError(
                f"ids not in truth: {missing}; pass transaction ids that exist in truth.csv"
            )
        mu = mu[pos]
    if len(mu) == 0:
        raise ConfigError("no transactions selected; pass at least one id")
    factor = bayes_floor_factor(sigma)
    return {
        "mae_log": float(sigma * math.sqrt(2 / math.pi)),
        "mae": float(np.mean(np.exp(mu)) * factor),
    }


# --------------------------------------------------------------------------- generation


def make_city(config: CityConfig | None = None) -> SyntheticCity:
    """Generate the synthetic city described in the module docstring.

    Runs the steps of the model in turn, each on its own child stream of
    ``SeedSequence(config.seed)`` (see :func:`_spawn_streams`).

    Args:
        config: parameters; default ``CityConfig()`` (seed 0, 12 000 transactions, 3 agencies).

    Returns:
        The city, deterministic for ``config``.

    Raises:
        ConfigError: an agency ends up without transactions (too few transactions).
    """
    cfg = CityConfig() if config is None else config
    if not isinstance(cfg, CityConfig):
        raise ConfigError(f"config must be a CityConfig (got {type(cfg).__name__})")
    rngs = _spawn_streams(cfg.seed)
    geo = _place_communities(cfg, rngs["geometry"])
    coefs = _draw_coefficients(cfg, rngs["coefficients"])
    communities = _draw_attributes(cfg, geo, coefs.district_level, rngs["attributes"])
    population = communities["population"].to_numpy(dtype=np.float64)
    effect = _community_effect(communities, geo.xy, coefs)
    mobility = _draw_mobility(cfg, geo, population, rngs["mobility"])
    sales = _sort_by_date(_draw_sales(cfg, geo.xy, population, rngs["transactions"]))
    district = geo.district[sales.community]
    m = _structural_mean(cfg, district, coefs, effect.effect, sales)
    resid = _draw_residuals(cfg, sales, rngs["residuals"])
    price = np.round(np.exp(m + resid.e))
    coverage = _cover_districts(cfg, geo.district, population, rngs["agencies"])
    agency = _assign_agencies(cfg, district, coverage, rngs["agencies"])
    ids = _transaction_ids(cfg.n_transactions)
    truth = _truth_frame(cfg, ids, agency, m, resid)
    return SyntheticCity(
        config=cfg,
        transactions=_transactions_frame(cfg, geo, sales, ids, price),
        communities=communities,
        mobility=mobility,
        truth=truth,
        metadata=_metadata(cfg, geo, coefs, effect, coverage, agency, truth, len(mobility)),
    )


@dataclass(frozen=True)
class _Map:
    """Community centres and districts (step 1).

    Attributes:
        xy: ``[n_c, 2]`` centres in km, projected back from the rounded ``lat``/``lon``.
        lat: ``[n_c]`` centre latitudes, rounded to 6 decimals.
        lon: ``[n_c]`` centre longitudes, rounded to 6 decimals.
        district_centres: ``[n_d]`` indices of the communities that are district centres.
        district: ``[n_c]`` district index of each community.
        community_names: ``[n_c]`` ``C001``, ``C002``, ...
        district_names: ``[n_d]`` ``D1``, ``D2``, ...
    """

    xy: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    district_centres: np.ndarray
    district: np.ndarray
    community_names: np.ndarray
    district_names: np.ndarray


@dataclass(frozen=True)
class _Coefficients:
    """Coefficients of the structural mean (step 4).

    Attributes:
        district_level: ``[n_d]`` ``a_d``.
        district_trend: ``[n_d]`` ``b_d`` (log-price per year).
        attribute_weights: ``[5]`` ``w_k``, in :data:`ATTRIBUTES` order.
        bump_xy: ``[n_bumps, 2]`` bump centres ``c_q`` in km.
        bump_amplitude: ``[n_bumps]`` signed amplitudes ``A_q``.
        bump_width: ``[n_bumps]`` widths ``s_q`` in km.
    """

    district_level: np.ndarray
    district_trend: np.ndarray
    attribute_weights: np.ndarray
    bump_xy: np.ndarray
    bump_amplitude: np.ndarray
    bump_width: np.ndarray


@dataclass(frozen=True)
class _CommunityEffect:
    """Per-community part of the structural mean, ``w · z_c + f(c)`` (step 6).

    Attributes:
        effect: ``[n_c]`` ``w · z_c + f(c)``.
        attribute_mean: ``[5]`` means used to standardise the attributes.
        attribute_std: ``[5]`` standard deviations used (1 where an attribute is constant).
    """

    effect: np.ndarray
    attribute_mean: np.ndarray
    attribute_std: np.ndarray


@dataclass(frozen=True)
class _Sales:
    """Drawn transactions (step 5), one entry per sale in every array.

    Attributes:
        community: community index.
        xy: ``[n, 2]`` location in km.
        day: days since ``start_date``.
        area_m2: floor area, 1 decimal.
        rooms: number of rooms.
        property_type: ``"studio"``, ``"house"`` or ``"apartment"`` (object array).
        house: ``property_type == "house"``.
        studio: ``property_type == "studio"``.
        floor: floor (0 for houses).
        building_age: age in years.
        parking: whether the property has parking.
    """

    community: np.ndarray
    xy: np.ndarray
    day: np.ndarray
    area_m2: np.ndarray
    rooms: np.ndarray
    property_type: np.ndarray
    house: np.ndarray
    studio: np.ndarray
    floor: np.ndarray
    building_age: np.ndarray
    parking: np.ndarray


@dataclass(frozen=True)
class _Residuals:
    """Residuals of the recursion (step 7), for sales in (date, id) order.

    Attributes:
        e: residuals ``e_i``.
        eps: innovations ``eps_i``.
        prior_mean: ``mean_{P(i)} e_j`` (0 for an empty ``P(i)``).
        priors: ``P(i)`` as positions into the sorted sales.
    """

    e: np.ndarray
    eps: np.ndarray
    prior_mean: np.ndarray
    priors: list[list[int]]


@dataclass(frozen=True)
class _Coverage:
    """Which agencies cover which districts (step 8).

    Attributes:
        weights: ``[n_a]`` normalised agency weights.
        primary: ``[n_d]`` primary agency of each district.
        districts: per agency, the set of district indices it covers.
    """

    weights: np.ndarray
    primary: np.ndarray
    districts: list[set[int]]


def _spawn_streams(seed: int) -> dict[str, np.random.Generator]:
    """One PCG64 generator per component, the children of ``SeedSequence(seed)``.

    Args:
        seed: ``CityConfig.seed``.

    Returns:
        ``{component: generator}`` for every name in ``_STREAMS``, child ``k`` going to the
        ``k``-th name, so a change in how one component draws leaves the others' draws as
        they are.
    """
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in children), strict=True))


def _place_communities(cfg: CityConfig, rng: np.random.Generator) -> _Map:
    """Step 1: community centres uniform in the box, districts by farthest-point sampling.

    Centres are rounded to 6 decimals of latitude/longitude and projected back, so the
    distances used later are those of the written coordinates.

    Args:
        cfg: the city configuration.
        rng: the ``geometry`` stream.

    Returns:
        The centres, their names and their districts.
    """
    n_c, n_d = cfg.n_communities, cfg.n_districts
    lat0, lon0 = cfg.center_lat, cfg.center_lon
    half_w, half_h = cfg.width_km / 2, cfg.height_km / 2
    xy = np.column_stack([rng.uniform(-half_w, half_w, n_c), rng.uniform(-half_h, half_h, n_c)])
    lat, lon = km_to_degrees(xy[:, 0], xy[:, 1], lat0, lon0)
    lat, lon = np.round(lat, 6), np.round(lon, 6)
    xy = project_km(lat, lon, lat0, lon0)
    centres = _farthest_points(xy, n_d, rng)
    dist = np.linalg.norm(xy[:, None, :] - xy[None, centres, :], axis=2)
    width = max(3, len(str(n_c)))
    return _Map(
        xy=xy,
        lat=lat,
        lon=lon,
        district_centres=centres,
        district=np.argmin(dist, axis=1),
        community_names=np.array([f"C{i + 1:0{width}d}" for i in range(n_c)], dtype=object),
        district_names=np.array([f"D{j + 1}" for j in range(n_d)], dtype=object),
    )


def _farthest_points(xy: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` points of ``xy``: a random first one, then each farthest from the chosen.

    Args:
        xy: ``[n, 2]`` points.
        k: how many to choose (``<= n``).
        rng: draws the first point.

    Returns:
        ``[k]`` indices, in the order chosen.
    """
    chosen = [int(rng.integers(len(xy)))]
    dist = np.linalg.norm(xy - xy[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(xy - xy[nxt], axis=1))
    return np.array(chosen)


def _draw_coefficients(cfg: CityConfig, rng: np.random.Generator) -> _Coefficients:
    """Step 4: district levels and trends, attribute weights and the Gaussian bumps of ``f``.

    Drawn before the attributes of step 2, whose ``income_index`` depends on ``a_d``.

    Args:
        cfg: the city configuration.
        rng: the ``coefficients`` stream.

    Returns:
        The drawn coefficients.
    """
    n_d, n_q = cfg.n_districts, cfg.n_bumps
    half_w, half_h = cfg.width_km / 2, cfg.height_km / 2
    district_level = rng.normal(0.0, cfg.district_level_sd, n_d)
    district_trend = rng.normal(cfg.district_trend_mean, cfg.district_trend_sd, n_d)
    weights = rng.normal(np.array(cfg.attribute_coef_mean), cfg.attribute_coef_sd)
    bump_xy = np.column_stack(
        [rng.uniform(-half_w, half_w, n_q), rng.uniform(-half_h, half_h, n_q)]
    )
    amplitude = rng.uniform(*cfg.bump_amplitude, n_q) * rng.choice([-1.0, 1.0], n_q)
    return _Coefficients(
        district_level=district_level,
        district_trend=district_trend,
        attribute_weights=weights,
        bump_xy=bump_xy,
        bump_amplitude=amplitude,
        bump_width=rng.uniform(*cfg.bump_width_km, n_q),
    )


def _draw_attributes(
    cfg: CityConfig, geo: _Map, district_level: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Step 2: the five community attributes and the population.

    Args:
        cfg: the city configuration.
        geo: the map of step 1.
        district_level: ``a_d`` of step 4 (enters ``income_index``).
        rng: the ``attributes`` stream.

    Returns:
        The communities frame: ``community, district, lat, lon, <5 attributes>, population``.
    """
    n_c = cfg.n_communities
    r = np.linalg.norm(geo.xy, axis=1)
    attrs = {
        "poi_count": rng.poisson(5 + 60 * np.exp(-r / 5)).astype(np.int64),
        "pct_young": np.round(
            np.clip(0.25 + 0.1 * np.exp(-r / 6) + rng.normal(0, 0.04, n_c), 0.05, 0.6), 4
        ),
        "income_index": np.round(
            np.exp(0.5 * district_level[geo.district] + rng.normal(0, 0.15, n_c)), 4
        ),
        "green_share": np.round(rng.beta(2, 5, n_c), 4),
        "transit_access": np.round(np.clip(1 - r / 14 + rng.normal(0, 0.08, n_c), 0, 1), 4),
    }
    population = np.maximum(
        1, np.round(rng.lognormal(math.log(cfg.population_median), cfg.population_log_sd, n_c))
    ).astype(np.int64)
    return pd.DataFrame(
        {
            "community": geo.community_names,
            "district": geo.district_names[geo.district],
            "lat": geo.lat,
            "lon": geo.lon,
            **attrs,
            "population": population,
        }
    )


def _community_effect(
    communities: pd.DataFrame, xy: np.ndarray, coefs: _Coefficients
) -> _CommunityEffect:
    """``w · z_c + f(c)``: standardised attributes times their weights plus the bump field.

    Args:
        communities: the frame of :func:`_draw_attributes`.
        xy: ``[n_c, 2]`` community centres in km.
        coefs: the coefficients of step 4.

    Returns:
        The effect per community and the standardisation used.
    """
    amat = np.column_stack([np.asarray(communities[a], dtype=np.float64) for a in ATTRIBUTES])
    amean, astd = amat.mean(axis=0), amat.std(axis=0)
    astd = np.where(astd > 0, astd, 1.0)
    zc = (amat - amean) / astd
    field_c = np.zeros(len(xy))
    for q in range(len(coefs.bump_amplitude)):
        d2 = np.sum((xy - coefs.bump_xy[q]) ** 2, axis=1)
        field_c += coefs.bump_amplitude[q] * np.exp(-d2 / (2 * coefs.bump_width[q] ** 2))
    return _CommunityEffect(
        effect=zc @ coefs.attribute_weights + field_c, attribute_mean=amean, attribute_std=astd
    )


def _draw_mobility(
    cfg: CityConfig, geo: _Map, population: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Step 3: gravity flows with log-normal noise, the top destinations of each source.

    Args:
        cfg: the city configuration.
        geo: the map of step 1.
        population: ``[n_c]`` community populations (float).
        rng: the ``mobility`` stream.

    Returns:
        ``src, dst, flow``: ``min(mobility_top_k, n_c - 1)`` rows per source, largest flow
        first (ties by destination index).
    """
    n_c, names = cfg.n_communities, geo.community_names
    dmat = np.linalg.norm(geo.xy[:, None, :] - geo.xy[None, :, :], axis=2)
    grav = (
        np.outer(population, population)
        / (dmat + 1) ** 2
        * np.exp(rng.normal(0, cfg.mobility_noise_log_sd, (n_c, n_c)))
    )
    grav = np.round(grav / 1e4, 3)
    np.fill_diagonal(grav, -np.inf)
    top = min(cfg.mobility_top_k, n_c - 1)
    rows = []
    for i in range(n_c if top > 0 else 0):
        order = np.lexsort((np.arange(n_c), -grav[i]))[:top]
        rows += [(names[i], names[j], float(grav[i, j])) for j in order]
    return pd.DataFrame(rows, columns=["src", "dst", "flow"])


def _draw_sales(
    cfg: CityConfig, xy: np.ndarray, population: np.ndarray, rng: np.random.Generator
) -> _Sales:
    """Step 5: community, location and day of each sale, then its property profile.

    Args:
        cfg: the city configuration.
        xy: ``[n_c, 2]`` community centres in km.
        population: ``[n_c]`` community populations (float), the community weights.
        rng: the ``transactions`` stream.

    Returns:
        The sales in draw order (see :func:`_sort_by_date`).
    """
    n, n_c = cfg.n_transactions, cfg.n_communities
    n_days = int((cfg.end - cfg.start).days)
    doy = (cfg.start + pd.to_timedelta(np.arange(n_days), unit="D")).dayofyear.to_numpy()
    intensity = 1 + cfg.seasonality * np.sin(2 * np.pi * (doy - 80) / 365.25)
    comm = rng.choice(n_c, size=n, p=population / population.sum())
    txy = xy[comm] + rng.normal(0.0, cfg.location_sd_m / 1000, (n, 2))
    day = rng.choice(n_days, size=n, p=intensity / intensity.sum())
    return _Sales(community=comm, xy=txy, day=day, **_draw_profiles(cfg, rng))


def _draw_profiles(cfg: CityConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Property profiles of step 5: area, rooms, type, floor, age and parking.

    Args:
        cfg: the city configuration.
        rng: the ``transactions`` stream, after the community, location and day draws.

    Returns:
        The :class:`_Sales` fields from ``area_m2`` on, ``n_transactions`` entries each.
    """
    n = cfg.n_transactions
    area = np.round(
        np.clip(
            rng.lognormal(math.log(cfg.area_median_m2), cfg.area_log_sd, n),
            cfg.area_min_m2,
            cfg.area_max_m2,
        ),
        1,
    )
    rooms = np.maximum(1, np.round(area / 25 + rng.normal(0, 0.6, n))).astype(np.int64)
    u_type, u_house = rng.uniform(size=n), rng.uniform(size=n)
    studio = (area < 35) & (u_type < 0.6)
    house = ~studio & (u_house < 0.03 + 0.3 * (area > 110))
    ptype = np.where(studio, "studio", np.where(house, "house", "apartment")).astype(object)
    floor = np.where(house, 0, np.minimum(15, np.round(rng.exponential(3.0, n)))).astype(np.int64)
    old = rng.uniform(size=n) < 0.35
    age = np.where(old, np.round(rng.uniform(80, 120, n)), np.round(rng.gamma(2.0, 15.0, n)))
    return {
        "area_m2": area,
        "rooms": rooms,
        "property_type": ptype,
        "house": house,
        "studio": studio,
        "floor": floor,
        "building_age": np.clip(age, 0, 120).astype(np.int64),
        "parking": rng.uniform(size=n) < np.where(house, 0.6, 0.25),
    }


def _sort_by_date(sales: _Sales) -> _Sales:
    """The sales in (date, draw order) order, the order of the ids ``T000001``, ...

    Args:
        sales: sales in draw order.

    Returns:
        The same sales, every array reordered alike.
    """
    order = np.lexsort((np.arange(len(sales.day)), sales.day))
    return _Sales(**{f.name: getattr(sales, f.name)[order] for f in dataclasses.fields(sales)})


def _structural_mean(
    cfg: CityConfig,
    district: np.ndarray,
    coefs: _Coefficients,
    community_effect: np.ndarray,
    sales: _Sales,
) -> np.ndarray:
    """Step 6: the structural mean ``m_i`` of each log price.

    Args:
        cfg: the city configuration.
        district: ``[n]`` district index of each sale.
        coefs: the coefficients of step 4.
        community_effect: ``[n_c]`` ``w · z_c + f(c)`` (:func:`_community_effect`).
        sales: the sales, in (date, id) order.

    Returns:
        ``[n]`` ``m_i``.
    """
    t_years = sales.day / 365.25
    return (
        _base_log(cfg)
        + cfg.area_coef * np.log(sales.area_m2 / cfg.reference_area_m2)
        + coefs.district_level[district]
        + coefs.district_trend[district] * t_years
        + community_effect[sales.community]
        + cfg.rooms_coef * sales.rooms
        + cfg.floor_coef * np.minimum(sales.floor, 10)
        + cfg.ground_floor_coef * (sales.floor == 0)
        + cfg.age_coef * sales.building_age
        + cfg.age_sq_coef * sales.building_age**2
        + cfg.house_coef * sales.house
        + cfg.studio_coef * sales.studio
        + cfg.parking_coef * sales.parking
    )


def _base_log(cfg: CityConfig) -> float:
    """``log(base_price_per_m2 · reference_area_m2)``, the intercept of ``m_i``."""
    return math.log(cfg.base_price_per_m2 * cfg.reference_area_m2)


def _draw_residuals(cfg: CityConfig, sales: _Sales, rng: np.random.Generator) -> _Residuals:
    """Step 7: innovations ``eps_i ~ N(0, sigma²)`` and the recursion of :func:`_recursion`.

    Args:
        cfg: the city configuration.
        sales: the sales, in (date, id) order.
        rng: the ``residuals`` stream.

    Returns:
        Residuals, innovations, prior means and ``P(i)``.
    """
    eps = rng.normal(0.0, cfg.sigma, cfg.n_transactions)
    e, prior_mean, priors = _recursion(
        sales.community,
        sales.day,
        eps,
        rho=cfg.rho,
        max_recent=cfg.max_recent,
        window_days=cfg.window_days,
        n_communities=cfg.n_communities,
    )
    return _Residuals(e=e, eps=eps, prior_mean=prior_mean, priors=priors)


def _recursion(
    comm: np.ndarray,
    day: np.ndarray,
    eps: np.ndarray,
    *,
    rho: float,
    max_recent: int,
    window_days: int,
    n_communities: int,
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Residuals ``e``, prior means and ``P(i)`` (positions) for rows sorted by (date, id)."""
    n = len(comm)
    e = np.empty(n)
    prior_mean = np.zeros(n)
    priors: list[list[int]] = [[] for _ in range(n)]
    hist_day: list[list[int]] = [[] for _ in range(n_communities)]
    hist_e: list[list[float]] = [[] for _ in range(n_communities)]
    hist_pos: list[list[int]] = [[] for _ in range(n_communities)]
    comm_l, day_l, eps_l = comm.tolist(), day.tolist(), eps.tolist()
    for i in range(n):
        c, d = comm_l[i], day_l[i]
        days = hist_day[c]
        hi = bisect_left(days, d)  # entries with day < d (lists are in date order)
        lo = bisect_left(days, d - window_days, max(0, hi - max_recent), hi)
        value = eps_l[i]
        if hi > lo:
            m = sum(hist_e[c][lo:hi]) / (hi - lo)
            prior_mean[i] = m
            value += rho * m
            priors[i] = hist_pos[c][lo:hi]
        e[i] = value
        days.append(d)
        hist_e[c].append(value)
        hist_pos[c].append(i)
    return e, prior_mean, priors


def _cover_districts(
    cfg: CityConfig, district: np.ndarray, population: np.ndarray, rng: np.random.Generator
) -> _Coverage:
    """Step 8, coverage: a primary agency per district, then extra random districts per agency.

    Args:
        cfg: the city configuration.
        district: ``[n_c]`` district index of each community.
        population: ``[n_c]`` community populations (float), giving the district shares.
        rng: the ``agencies`` stream (drawn from before :func:`_assign_agencies`).

    Returns:
        The weights, primary agencies and covered districts.
    """
    n_d, n_a = cfg.n_districts, cfg.n_agencies
    weights = cfg.weights()
    mass = np.bincount(district, weights=population, minlength=n_d) / population.sum()
    primary = _primary_agencies(mass, weights)
    covered = [set(np.flatnonzero(primary == a).tolist()) for a in range(n_a)]
    for a in range(n_a):
        extra = cfg.extra_districts_per_agency + (0 if covered[a] else 1)
        free = np.array(sorted(set(range(n_d)) - covered[a]), dtype=np.int64)
        if len(free) and extra:
            covered[a] |= set(rng.choice(free, size=min(extra, len(free)), replace=False).tolist())
    return _Coverage(weights=weights, primary=primary, districts=covered)


def _primary_agencies(mass: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Primary agency of each district: greedy packing of district mass to match the weights.

    Districts in decreasing expected share (ties by index) go to the agency with the largest
    remaining deficit ``weight - assigned share``; then, while some agency has no district and
    another has two or more, the latter's smallest district moves to it.
    """
    n_d, n_a = len(mass), len(weights)
    owner = np.full(n_d, -1, dtype=np.int64)
    assigned = np.zeros(n_a)
    for d in np.lexsort((np.arange(n_d), -mass)):
        a = int(np.argmax(weights - assigned))
        owner[d] = a
        assigned[a] += mass[d]
    for a in range(n_a):
        counts = np.bincount(owner, minlength=n_a)
        if counts[a] > 0 or counts.max() < 2:
            continue
        donor = int(np.argmax(counts))
        mine = np.flatnonzero(owner == donor)
        owner[mine[np.argmin(mass[mine])]] = a
    return owner


def _assign_agencies(
    cfg: CityConfig, district: np.ndarray, coverage: _Coverage, rng: np.random.Generator
) -> np.ndarray:
    """Step 8, sales: each sale to one agency covering its district, ∝ weight x boost.

    Args:
        cfg: the city configuration.
        district: ``[n]`` district index of each sale.
        coverage: the coverage of :func:`_cover_districts`.
        rng: the ``agencies`` stream, after :func:`_cover_districts`.

    Returns:
        ``[n]`` agency index of each sale.

    Raises:
        ConfigError: some agency got no sale.
    """
    agency = np.empty(cfg.n_transactions, dtype=np.int64)
    for dd in range(cfg.n_districts):
        rows_d = np.flatnonzero(district == dd)
        cover = [a for a in range(cfg.n_agencies) if dd in coverage.districts[a]]
        p = np.array(
            [
                coverage.weights[a] * (cfg.primary_boost if coverage.primary[dd] == a else 1.0)
                for a in cover
            ]
        )
        agency[rows_d] = np.array(cover)[rng.choice(len(cover), size=len(rows_d), p=p / p.sum())]
    counts = np.bincount(agency, minlength=cfg.n_agencies)
    if (counts == 0).any():
        empty = [str(x) for x in _agency_names(cfg.n_agencies)[counts == 0]]
        raise ConfigError(
            f"agencies {empty} got no transactions (n_transactions={cfg.n_transactions}); pass "
            "more transactions or fewer agencies"
        )
    return agency


def _agency_names(n_agencies: int) -> np.ndarray:
    """``agency1``, ..., ``agency<n_agencies>`` (object array)."""
    return np.array([f"agency{a + 1}" for a in range(n_agencies)], dtype=object)


def _transaction_ids(n: int) -> np.ndarray:
    """``T000001``, ... (at least 6 digits, more when ``n`` needs them; object array)."""
    width = max(6, len(str(n)))
    return np.array([f"T{i + 1:0{width}d}" for i in range(n)], dtype=object)


def _transactions_frame(
    cfg: CityConfig, geo: _Map, sales: _Sales, ids: np.ndarray, price: np.ndarray
) -> pd.DataFrame:
    """The transactions frame (no agency), locations rounded to 6 decimals of a degree.

    Args:
        cfg: the city configuration.
        geo: the map of step 1.
        sales: the sales, in (date, id) order.
        ids: ``[n]`` transaction ids.
        price: ``[n]`` prices in euros.

    Returns:
        The frame with the columns ``TRANSACTION_COLUMNS``.
    """
    lat, lon = km_to_degrees(sales.xy[:, 0], sales.xy[:, 1], cfg.center_lat, cfg.center_lon)
    dates = cfg.start + pd.to_timedelta(sales.day, unit="D")
    return pd.DataFrame(
        {
            "transaction_id": ids,
            "date": dates.to_numpy(dtype="datetime64[ns]"),
            "lat": np.round(lat, 6),
            "lon": np.round(lon, 6),
            "price": price.astype(np.float64),
            "district": geo.district_names[geo.district[sales.community]],
            "community": geo.community_names[sales.community],
            "area_m2": sales.area_m2,
            "rooms": sales.rooms,
            "floor": sales.floor,
            "building_age": sales.building_age,
            "property_type": sales.property_type,
            "has_parking": np.where(sales.parking, "yes", "no").astype(object),
        }
    )


def _truth_frame(
    cfg: CityConfig, ids: np.ndarray, agency: np.ndarray, m: np.ndarray, resid: _Residuals
) -> pd.DataFrame:
    """The ground-truth frame, aligned with the transactions.

    Args:
        cfg: the city configuration.
        ids: ``[n]`` transaction ids.
        agency: ``[n]`` agency index of each sale.
        m: ``[n]`` structural means.
        resid: the residuals of step 7.

    Returns:
        The frame with the columns ``TRUTH_COLUMNS``.
    """
    return pd.DataFrame(
        {
            "transaction_id": ids,
            "agency": _agency_names(cfg.n_agencies)[agency],
            "structural_mean_log": m,
            "cond_mean_log": m + cfg.rho * resid.prior_mean,
            "residual": resid.e,
            "innovation": resid.eps,
            "n_prior": np.array([len(p) for p in resid.priors], dtype=np.int64),
            "prior_ids": [";".join(ids[p]) for p in resid.priors],
        }
    )


def _metadata(
    cfg: CityConfig,
    geo: _Map,
    coefs: _Coefficients,
    effect: _CommunityEffect,
    coverage: _Coverage,
    agency: np.ndarray,
    truth: pd.DataFrame,
    n_mobility: int,
) -> dict[str, Any]:
    """``metadata.json``: config, model, drawn coefficients, Bayes floor, agencies, counts.

    Args:
        cfg: the city configuration.
        geo: the map of step 1.
        coefs: the coefficients of step 4.
        effect: the community effect and attribute standardisation.
        coverage: the agencies' districts.
        agency: ``[n]`` agency index of each sale.
        truth: the ground-truth frame.
        n_mobility: number of mobility rows.

    Returns:
        The metadata dict (JSON-serialisable).
    """
    names = _agency_names(cfg.n_agencies)
    counts = np.bincount(agency, minlength=cfg.n_agencies)
    files = [f"transactions_{x}.csv" for x in names] + [
        "transactions_all.csv",
        "communities.csv",
        "mobility.csv",
        "truth.csv",
        "metadata.json",
    ]
    return {
        "generator": "fedmugrep.data.synthetic.make_city",
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "period": {
            "start": cfg.start.strftime("%Y-%m-%d"),
            "end_exclusive": cfg.end.strftime("%Y-%m-%d"),
        },
        "model": _formula_lines(cfg),
        "coefficients": _coefficients_metadata(cfg, geo, coefs, effect),
        "sigma": cfg.sigma,
        "rho": cfg.rho,
        "bayes_floor": {
            **bayes_floor(truth, cfg.sigma),
            "over": "all transactions",
            "note": "MAE of the oracle predictor exp(cond_mean_log) (median of the price given "
            "all agencies' past sales and the structural mean); mae_log = sigma*sqrt(2/pi), "
            "mae = mean(exp(cond_mean_log)) * exp(sigma^2/2) * (2*Phi(sigma) - 1)",
        },
        "agencies": _agencies_metadata(geo, coverage, counts),
        "counts": {
            "transactions": cfg.n_transactions,
            "communities": cfg.n_communities,
            "districts": cfg.n_districts,
            "mobility": n_mobility,
            "per_agency": {str(names[a]): int(counts[a]) for a in range(cfg.n_agencies)},
        },
        "files": files,
    }


def _agencies_metadata(geo: _Map, coverage: _Coverage, counts: np.ndarray) -> dict[str, Any]:
    """The ``agencies`` entry of the metadata: weight, districts and size of each agency.

    Args:
        geo: the map of step 1.
        coverage: the agencies' districts.
        counts: ``[n_a]`` number of sales of each agency.

    Returns:
        ``{agency name: {"weight", "primary_districts", "districts", "n_transactions"}}``.
    """
    names = _agency_names(len(counts))
    return {
        str(names[a]): {
            "weight": float(coverage.weights[a]),
            "primary_districts": [
                str(geo.district_names[d])
                for d in range(len(coverage.primary))
                if coverage.primary[d] == a
            ],
            "districts": [str(geo.district_names[d]) for d in sorted(coverage.districts[a])],
            "n_transactions": int(counts[a]),
        }
        for a in range(len(counts))
    }


def _coefficients_metadata(
    cfg: CityConfig, geo: _Map, coefs: _Coefficients, effect: _CommunityEffect
) -> dict[str, Any]:
    """The ``coefficients`` entry of the metadata: every drawn value of the structural mean.

    Args:
        cfg: the city configuration.
        geo: the map of step 1.
        coefs: the coefficients of step 4.
        effect: the community effect and attribute standardisation.

    Returns:
        Plain floats and strings keyed by district, attribute, bump and community.
    """
    dnames = [str(d) for d in geo.district_names]
    bump_lat, bump_lon = km_to_degrees(
        coefs.bump_xy[:, 0], coefs.bump_xy[:, 1], cfg.center_lat, cfg.center_lon
    )
    return {
        "base_log": _base_log(cfg),
        "area_coef": cfg.area_coef,
        "reference_area_m2": cfg.reference_area_m2,
        "district_level": dict(zip(dnames, map(float, coefs.district_level), strict=True)),
        "district_trend_per_year": dict(zip(dnames, map(float, coefs.district_trend), strict=True)),
        "district_centre_community": [str(geo.community_names[i]) for i in geo.district_centres],
        "attribute_weights": dict(
            zip(ATTRIBUTES, map(float, coefs.attribute_weights), strict=True)
        ),
        "attribute_standardisation": {
            a: {"mean": float(effect.attribute_mean[j]), "std": float(effect.attribute_std[j])}
            for j, a in enumerate(ATTRIBUTES)
        },
        "bumps": [
            {
                "lat": float(bump_lat[q]),
                "lon": float(bump_lon[q]),
                "amplitude": float(coefs.bump_amplitude[q]),
                "width_km": float(coefs.bump_width[q]),
            }
            for q in range(len(coefs.bump_amplitude))
        ],
        "community_effect": dict(
            zip(map(str, geo.community_names), map(float, effect.effect), strict=True)
        ),
        "profile": {name: getattr(cfg, name) for name in PROFILE_COEFFICIENTS},
    }


def _formula_lines(cfg: CityConfig) -> list[str]:
    return [
        f"map: {cfg.width_km} x {cfg.height_km} km box centred on ({cfg.center_lat}, "
        f"{cfg.center_lon}); {cfg.n_communities} community centres uniform in the box; "
        f"{cfg.n_districts} district centres = farthest-point sample of community centres; "
        "community district = nearest district centre",
        "attributes (r = km to city centre): poi_count ~ Poisson(5 + 60 exp(-r/5)); pct_young = "
        "clip(0.25 + 0.1 exp(-r/6) + N(0, 0.04^2), 0.05, 0.6); income_index = exp(0.5 a_d + "
        "N(0, 0.15^2)); green_share ~ Beta(2, 5); transit_access = clip(1 - r/14 + N(0, 0.08^2), "
        f"0, 1); population ~ LogNormal(log {cfg.population_median}, {cfg.population_log_sd}^2)",
        f"mobility: flow_ij = pop_i pop_j / (d_ij km + 1)^2 * exp(N(0, "
        f"{cfg.mobility_noise_log_sd}^2)) / 1e4, top {cfg.mobility_top_k} destinations per source",
        f"transactions: community ~ population; location = centre + N(0, {cfg.location_sd_m} m) "
        f"per axis; date uniform over [{cfg.start.date()}, {cfg.end.date()}) with intensity "
        f"1 + {cfg.seasonality} sin(2 pi (doy - 80) / 365.25)",
        "log price = m_i + e_i",
        "m_i = log(base_price_per_m2 * reference_area_m2) + area_coef log(area_m2 / "
        "reference_area_m2) + a_d + b_d t_years + w . z_c + f(lat_c, lon_c) + rooms_coef rooms + "
        "floor_coef min(floor, 10) + ground_floor_coef [floor = 0] + age_coef age + age_sq_coef "
        "age^2 + house_coef [house] + studio_coef [studio] + parking_coef [has_parking]; "
        "t_years = (date - start) / 365.25 days; z_c = community attributes standardised over "
        "communities; f = sum of Gaussian bumps A_q exp(-|x - c_q|^2 / (2 s_q^2))",
        f"e_i = rho * mean(e_j for j in P(i)) + eps_i, eps_i ~ N(0, sigma^2), rho = {cfg.rho}, "
        f"sigma = {cfg.sigma}; P(i) = the last {cfg.max_recent} transactions in (date, id) order "
        f"of the same community with date_j < date_i and date_i - date_j <= {cfg.window_days} days"
        "; empty P(i) => e_i = eps_i",
        "price = round(exp(m_i + e_i)) euros",
        "cond_mean_log mu_i = m_i + rho * mean(e_j for j in P(i)); residual = e_i; "
        "innovation = eps_i",
        "agencies: primary agency per district by greedy packing of district population shares "
        "towards the agency weights, plus "
        f"{cfg.extra_districts_per_agency} extra random district(s) per agency; each "
        "transaction goes to one covering agency with probability ∝ weight * "
        f"({cfg.primary_boost} if primary else 1)",
    ]


def write_city(city: SyntheticCity, out_dir: str | Path) -> dict[str, Path]:
    """Write the city's files into ``out_dir`` (created if needed; existing files replaced).

    Files: ``transactions_agency<k>.csv`` (one per agency, no agency column),
    ``transactions_all.csv``, ``communities.csv``, ``mobility.csv``, ``truth.csv``,
    ``metadata.json``. Floats are written with Python's round-tripping repr, dates as
    ``YYYY-MM-DD``; the bytes depend only on the config.

    Returns:
        ``{file stem: path}``, e.g. ``{"transactions_agency1": Path(...), ..., "metadata": ...}``.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output folder {out} ({exc}); pass a writable path"
        ) from exc
    paths: dict[str, Path] = {}

    def put(stem: str, df: pd.DataFrame) -> None:
        frame = df.copy()
        if "date" in frame.columns:
            frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
        if "price" in frame.columns:
            frame["price"] = frame["price"].astype(np.int64)
        path = out / f"{stem}.csv"
        frame.to_csv(path, index=False, lineterminator="\n")
        paths[stem] = path

    for agency in city.agencies:
        put(f"transactions_{agency}", city.agency_transactions(agency))
    put("transactions_all", city.transactions)
    put("communities", city.communities)
    put("mobility", city.mobility)
    put("truth", city.truth)
    meta_path = out / "metadata.json"
    meta_path.write_text(
        json.dumps(city.metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    paths["metadata"] = meta_path
    return paths
