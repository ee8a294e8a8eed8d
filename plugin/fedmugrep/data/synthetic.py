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
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
                raise ConfigError(
                    f"{name} must be an integer >= {minimum} (got {v!r}); pass e.g. "
                    f"{name}={max(minimum, 1) * 2}"
                )

        def positive(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be > 0 (got {v!r}); pass a positive value")

        def finite(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number (got {v!r})")

        for name in ("seed", "extra_districts_per_agency"):
            positive_int(name, 0)
        for name in (
            "n_transactions",
            "n_agencies",
            "n_districts",
            "n_communities",
            "n_months",
            "mobility_top_k",
            "max_recent",
            "window_days",
            "n_bumps",
        ):
            positive_int(name)
        for name in (
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
        ):
            positive(name)
        for name in (
            "population_log_sd",
            "mobility_noise_log_sd",
            "area_log_sd",
            "district_level_sd",
            "district_trend_sd",
            "attribute_coef_sd",
        ):
            finite(name)
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (got {getattr(self, name)!r})")
        for name in (
            "center_lat",
            "center_lon",
            "seasonality",
            "area_coef",
            "district_trend_mean",
            *PROFILE_COEFFICIENTS,
            "rho",
        ):
            finite(name)
        if not -80 <= self.center_lat <= 80 or not -180 <= self.center_lon <= 180:
            raise ConfigError(
                f"center_lat/center_lon must be in [-80, 80] x [-180, 180] (got "
                f"{self.center_lat}, {self.center_lon})"
            )
        if not 0 <= self.rho < 1:
            raise ConfigError(f"rho must be in [0, 1) (got {self.rho}); pass a value below 1")
        if not 0 <= self.seasonality < 1:
            raise ConfigError(f"seasonality must be in [0, 1) (got {self.seasonality})")
        if self.area_min_m2 >= self.area_max_m2:
            raise ConfigError(
                f"area_min_m2 must be < area_max_m2 (got {self.area_min_m2} >= {self.area_max_m2})"
            )
        if self.n_districts > self.n_communities:
            raise ConfigError(
                f"n_districts must be <= n_communities (got {self.n_districts} > "
                f"{self.n_communities}); pass fewer districts or more communities"
            )
        if self.n_agencies > self.n_transactions:
            raise ConfigError(
                f"n_agencies must be <= n_transactions (got {self.n_agencies} > "
                f"{self.n_transactions})"
            )
        try:
            start = pd.Timestamp(self.start_date)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"start_date must be an ISO date (got {self.start_date!r}); pass e.g. '2021-01-01'"
            ) from exc
        if start != start.normalize():
            raise ConfigError(f"start_date must be a date without time (got {self.start_date!r})")
        object.__setattr__(self, "attribute_coef_mean", tuple(map(float, self.attribute_coef_mean)))
        if len(self.attribute_coef_mean) != len(ATTRIBUTES):
            raise ConfigError(
                f"attribute_coef_mean must have {len(ATTRIBUTES)} values, one per attribute "
                f"{ATTRIBUTES} (got {len(self.attribute_coef_mean)})"
            )
        for name in ("bump_amplitude", "bump_width_km"):
            pair = tuple(map(float, getattr(self, name)))
            if len(pair) != 2 or not 0 <= pair[0] <= pair[1]:
                raise ConfigError(f"{name} must be (low, high) with 0 <= low <= high (got {pair})")
            object.__setattr__(self, name, pair)
        if self.bump_width_km[0] <= 0:
            raise ConfigError(f"bump_width_km must be > 0 (got {self.bump_width_km})")
        if self.agency_weights is not None:
            w = tuple(map(float, self.agency_weights))
            if len(w) != self.n_agencies or any(not math.isfinite(x) or x <= 0 for x in w):
                raise ConfigError(
                    f"agency_weights must be {self.n_agencies} positive numbers, one per agency "
                    f"(got {self.agency_weights}); or leave it unset"
                )
            object.__setattr__(self, "agency_weights", w)

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


def _farthest_points(xy: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    chosen = [int(rng.integers(len(xy)))]
    dist = np.linalg.norm(xy - xy[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(xy - xy[nxt], axis=1))
    return np.array(chosen)


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


def make_city(config: CityConfig | None = None) -> SyntheticCity:
    """Generate the synthetic city described in the module docstring.

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
    rngs = dict(
        zip(
            _STREAMS,
            (
                np.random.default_rng(s)
                for s in np.random.SeedSequence(cfg.seed).spawn(len(_STREAMS))
            ),
            strict=True,
        )
    )
    n_c, n_d, n_a, n = cfg.n_communities, cfg.n_districts, cfg.n_agencies, cfg.n_transactions
    lat0, lon0 = cfg.center_lat, cfg.center_lon
    half_w, half_h = cfg.width_km / 2, cfg.height_km / 2

    # 1. map
    g = rngs["geometry"]
    cxy = np.column_stack([g.uniform(-half_w, half_w, n_c), g.uniform(-half_h, half_h, n_c)])
    clat, clon = km_to_degrees(cxy[:, 0], cxy[:, 1], lat0, lon0)
    clat, clon = np.round(clat, 6), np.round(clon, 6)
    cxy = project_km(clat, clon, lat0, lon0)  # the written coordinates are the true ones
    dcentre = _farthest_points(cxy, n_d, g)
    cdist = np.linalg.norm(cxy[:, None, :] - cxy[None, dcentre, :], axis=2)
    cdistrict = np.argmin(cdist, axis=1)
    cwidth = max(3, len(str(n_c)))
    cnames = np.array([f"C{i + 1:0{cwidth}d}" for i in range(n_c)], dtype=object)
    dnames = np.array([f"D{j + 1}" for j in range(n_d)], dtype=object)

    # 4. coefficients (drawn before attributes: income depends on the district level)
    k = rngs["coefficients"]
    a_d = k.normal(0.0, cfg.district_level_sd, n_d)
    b_d = k.normal(cfg.district_trend_mean, cfg.district_trend_sd, n_d)
    w = k.normal(np.array(cfg.attribute_coef_mean), cfg.attribute_coef_sd)
    bump_xy = np.column_stack(
        [k.uniform(-half_w, half_w, cfg.n_bumps), k.uniform(-half_h, half_h, cfg.n_bumps)]
    )
    bump_amp = k.uniform(*cfg.bump_amplitude, cfg.n_bumps) * k.choice([-1.0, 1.0], cfg.n_bumps)
    bump_sd = k.uniform(*cfg.bump_width_km, cfg.n_bumps)

    # 2. community attributes
    at = rngs["attributes"]
    r = np.linalg.norm(cxy, axis=1)
    attrs = {
        "poi_count": at.poisson(5 + 60 * np.exp(-r / 5)).astype(np.int64),
        "pct_young": np.round(
            np.clip(0.25 + 0.1 * np.exp(-r / 6) + at.normal(0, 0.04, n_c), 0.05, 0.6), 4
        ),
        "income_index": np.round(np.exp(0.5 * a_d[cdistrict] + at.normal(0, 0.15, n_c)), 4),
        "green_share": np.round(at.beta(2, 5, n_c), 4),
        "transit_access": np.round(np.clip(1 - r / 14 + at.normal(0, 0.08, n_c), 0, 1), 4),
    }
    population = np.maximum(
        1, np.round(at.lognormal(math.log(cfg.population_median), cfg.population_log_sd, n_c))
    ).astype(np.int64)
    communities = pd.DataFrame(
        {
            "community": cnames,
            "district": dnames[cdistrict],
            "lat": clat,
            "lon": clon,
            **attrs,
            "population": population,
        }
    )
    amat = np.column_stack([np.asarray(attrs[a], dtype=np.float64) for a in ATTRIBUTES])
    amean, astd = amat.mean(axis=0), amat.std(axis=0)
    astd = np.where(astd > 0, astd, 1.0)
    zc = (amat - amean) / astd
    field_c = np.zeros(n_c)
    for q in range(cfg.n_bumps):
        d2 = np.sum((cxy - bump_xy[q]) ** 2, axis=1)
        field_c += bump_amp[q] * np.exp(-d2 / (2 * bump_sd[q] ** 2))
    community_effect = zc @ w + field_c

    # 3. mobility
    mb = rngs["mobility"]
    dmat = np.linalg.norm(cxy[:, None, :] - cxy[None, :, :], axis=2)
    pop = population.astype(np.float64)
    grav = (
        np.outer(pop, pop)
        / (dmat + 1) ** 2
        * np.exp(mb.normal(0, cfg.mobility_noise_log_sd, (n_c, n_c)))
    )
    grav = np.round(grav / 1e4, 3)
    np.fill_diagonal(grav, -np.inf)
    top = min(cfg.mobility_top_k, n_c - 1)
    rows = []
    for i in range(n_c):
        if top == 0:
            break
        order = np.lexsort((np.arange(n_c), -grav[i]))[:top]
        rows += [(cnames[i], cnames[j], float(grav[i, j])) for j in order]
    mobility = pd.DataFrame(rows, columns=["src", "dst", "flow"])

    # 5. transactions
    t = rngs["transactions"]
    start, end = cfg.start, cfg.end
    n_days = int((end - start).days)
    doy = (start + pd.to_timedelta(np.arange(n_days), unit="D")).dayofyear.to_numpy()
    intensity = 1 + cfg.seasonality * np.sin(2 * np.pi * (doy - 80) / 365.25)
    comm = t.choice(n_c, size=n, p=pop / pop.sum())
    sd_km = cfg.location_sd_m / 1000
    txy = cxy[comm] + t.normal(0.0, sd_km, (n, 2))
    day = t.choice(n_days, size=n, p=intensity / intensity.sum())
    area = np.round(
        np.clip(
            t.lognormal(math.log(cfg.area_median_m2), cfg.area_log_sd, n),
            cfg.area_min_m2,
            cfg.area_max_m2,
        ),
        1,
    )
    rooms = np.maximum(1, np.round(area / 25 + t.normal(0, 0.6, n))).astype(np.int64)
    u_type, u_house = t.uniform(size=n), t.uniform(size=n)
    studio = (area < 35) & (u_type < 0.6)
    house = ~studio & (u_house < 0.03 + 0.3 * (area > 110))
    ptype = np.where(studio, "studio", np.where(house, "house", "apartment")).astype(object)
    floor = np.where(house, 0, np.minimum(15, np.round(t.exponential(3.0, n)))).astype(np.int64)
    old = t.uniform(size=n) < 0.35
    age = np.where(old, np.round(t.uniform(80, 120, n)), np.round(t.gamma(2.0, 15.0, n)))
    age = np.clip(age, 0, 120).astype(np.int64)
    parking = t.uniform(size=n) < np.where(house, 0.6, 0.25)

    order = np.lexsort((np.arange(n), day))  # (date, draw order)
    comm, txy, day, area, rooms = comm[order], txy[order], day[order], area[order], rooms[order]
    ptype, house, studio = ptype[order], house[order], studio[order]
    floor, age, parking = floor[order], age[order], parking[order]
    tlat, tlon = km_to_degrees(txy[:, 0], txy[:, 1], lat0, lon0)
    tlat, tlon = np.round(tlat, 6), np.round(tlon, 6)
    dates = start + pd.to_timedelta(day, unit="D")
    twidth = max(6, len(str(n)))
    ids = np.array([f"T{i + 1:0{twidth}d}" for i in range(n)], dtype=object)

    # 6. structural mean
    t_years = day / 365.25
    tdistrict = cdistrict[comm]
    base_log = math.log(cfg.base_price_per_m2 * cfg.reference_area_m2)
    m = (
        base_log
        + cfg.area_coef * np.log(area / cfg.reference_area_m2)
        + a_d[tdistrict]
        + b_d[tdistrict] * t_years
        + community_effect[comm]
        + cfg.rooms_coef * rooms
        + cfg.floor_coef * np.minimum(floor, 10)
        + cfg.ground_floor_coef * (floor == 0)
        + cfg.age_coef * age
        + cfg.age_sq_coef * age**2
        + cfg.house_coef * house
        + cfg.studio_coef * studio
        + cfg.parking_coef * parking
    )

    # 7. residual recursion
    eps = rngs["residuals"].normal(0.0, cfg.sigma, n)
    e, prior_mean, priors = _recursion(
        comm,
        day,
        eps,
        rho=cfg.rho,
        max_recent=cfg.max_recent,
        window_days=cfg.window_days,
        n_communities=n_c,
    )
    price = np.round(np.exp(m + e))

    # 8. agencies
    ag = rngs["agencies"]
    weights = cfg.weights()
    mass = np.bincount(cdistrict, weights=pop, minlength=n_d) / pop.sum()
    primary_of = _primary_agencies(mass, weights)
    coverage = [set(np.flatnonzero(primary_of == a).tolist()) for a in range(n_a)]
    for a in range(n_a):
        extra = cfg.extra_districts_per_agency + (0 if coverage[a] else 1)
        free = np.array(sorted(set(range(n_d)) - coverage[a]), dtype=np.int64)
        if len(free) and extra:
            coverage[a] |= set(ag.choice(free, size=min(extra, len(free)), replace=False).tolist())
    agency = np.empty(n, dtype=np.int64)
    for dd in range(n_d):
        rows_d = np.flatnonzero(tdistrict == dd)
        cover = [a for a in range(n_a) if dd in coverage[a]]
        p = np.array(
            [weights[a] * (cfg.primary_boost if primary_of[dd] == a else 1.0) for a in cover]
        )
        agency[rows_d] = np.array(cover)[ag.choice(len(cover), size=len(rows_d), p=p / p.sum())]
    anames = np.array([f"agency{a + 1}" for a in range(n_a)], dtype=object)
    counts = np.bincount(agency, minlength=n_a)
    if (counts == 0).any():
        empty = [str(x) for x in anames[counts == 0]]
        raise ConfigError(
            f"agencies {empty} got no transactions (n_transactions={n}); pass more "
            "transactions or fewer agencies"
        )

    transactions = pd.DataFrame(
        {
            "transaction_id": ids,
            "date": dates.to_numpy(dtype="datetime64[ns]"),
            "lat": tlat,
            "lon": tlon,
            "price": price.astype(np.float64),
            "district": dnames[tdistrict],
            "community": cnames[comm],
            "area_m2": area,
            "rooms": rooms,
            "floor": floor,
            "building_age": age,
            "property_type": ptype,
            "has_parking": np.where(parking, "yes", "no").astype(object),
        }
    )
    truth = pd.DataFrame(
        {
            "transaction_id": ids,
            "agency": anames[agency],
            "structural_mean_log": m,
            "cond_mean_log": m + cfg.rho * prior_mean,
            "residual": e,
            "innovation": eps,
            "n_prior": np.array([len(p) for p in priors], dtype=np.int64),
            "prior_ids": [";".join(ids[p]) for p in priors],
        }
    )
    floor_all = bayes_floor(truth, cfg.sigma)
    coverage_meta = {
        str(anames[a]): {
            "weight": float(weights[a]),
            "primary_districts": [str(dnames[d]) for d in range(n_d) if primary_of[d] == a],
            "districts": [str(dnames[d]) for d in sorted(coverage[a])],
            "n_transactions": int(counts[a]),
        }
        for a in range(n_a)
    }
    files = [f"transactions_{x}.csv" for x in anames] + [
        "transactions_all.csv",
        "communities.csv",
        "mobility.csv",
        "truth.csv",
        "metadata.json",
    ]
    metadata: dict[str, Any] = {
        "generator": "fedmugrep.data.synthetic.make_city",
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "period": {"start": start.strftime("%Y-%m-%d"), "end_exclusive": end.strftime("%Y-%m-%d")},
        "model": _formula_lines(cfg),
        "coefficients": {
            "base_log": base_log,
            "area_coef": cfg.area_coef,
            "reference_area_m2": cfg.reference_area_m2,
            "district_level": dict(zip(map(str, dnames), map(float, a_d), strict=True)),
            "district_trend_per_year": dict(zip(map(str, dnames), map(float, b_d), strict=True)),
            "district_centre_community": [str(cnames[i]) for i in dcentre],
            "attribute_weights": dict(zip(ATTRIBUTES, map(float, w), strict=True)),
            "attribute_standardisation": {
                a: {"mean": float(amean[j]), "std": float(astd[j])}
                for j, a in enumerate(ATTRIBUTES)
            },
            "bumps": [
                {
                    "lat": float(bl),
                    "lon": float(bo),
                    "amplitude": float(bump_amp[q]),
                    "width_km": float(bump_sd[q]),
                }
                for q, (bl, bo) in enumerate(
                    zip(*km_to_degrees(bump_xy[:, 0], bump_xy[:, 1], lat0, lon0), strict=True)
                )
            ],
            "community_effect": dict(
                zip(map(str, cnames), map(float, community_effect), strict=True)
            ),
            "profile": {name: getattr(cfg, name) for name in PROFILE_COEFFICIENTS},
        },
        "sigma": cfg.sigma,
        "rho": cfg.rho,
        "bayes_floor": {
            **floor_all,
            "over": "all transactions",
            "note": "MAE of the oracle predictor exp(cond_mean_log) (median of the price given "
            "all agencies' past sales and the structural mean); mae_log = sigma*sqrt(2/pi), "
            "mae = mean(exp(cond_mean_log)) * exp(sigma^2/2) * (2*Phi(sigma) - 1)",
        },
        "agencies": coverage_meta,
        "counts": {
            "transactions": n,
            "communities": n_c,
            "districts": n_d,
            "mobility": len(mobility),
            "per_agency": {str(anames[a]): int(counts[a]) for a in range(n_a)},
        },
        "files": files,
    }
    return SyntheticCity(
        config=cfg,
        transactions=transactions,
        communities=communities,
        mobility=mobility,
        truth=truth,
        metadata=metadata,
    )


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
