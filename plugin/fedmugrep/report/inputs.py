"""Read and validate what ``fedmugrep report`` plots, from one run folder.

A run folder (``fedmugrep demo --out RUN_DIR``) holds::

    RUN_DIR/
      report.json              metrics, privacy per datasite, history per round, plan
      predictions.csv          test-split predictions (median and 80% interval)
      sweep.json               optional: privacy-utility sweep (list of {epsilon, mape, seed})
      city/communities.csv     community centres (community, district, lat, lon, ...)
      datasites/<site>/privacy_ledger.sqlite

Only ``report.json`` is required. Every other input is optional: when it is missing or
malformed, :class:`ReportInputs.missing` records, per section, which file is missing and how
to produce it, and the page shows that instead of the figure.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedmugrep.errors import DataValidationError, FedMugRepError
from fedmugrep.privacy.ledger import LEDGER_FILENAME, Ledger

__all__ = [
    "COMMUNITY_COLUMNS",
    "PREDICTION_COLUMNS",
    "EpsilonCurve",
    "Missing",
    "ReportInputs",
    "load_inputs",
]

PREDICTION_COLUMNS: tuple[str, ...] = (
    "community",
    "price",
    "pred_median",
    "pred_lo80",
    "pred_hi80",
)
"""Columns of ``predictions.csv`` the report needs (the demo also writes agency, id, date...)."""

COMMUNITY_COLUMNS: tuple[str, ...] = ("community", "district", "lat", "lon")
"""Columns of ``city/communities.csv`` the map needs."""

DEMO_HINT = "run `fedmugrep demo --out {run}`"


@dataclass(frozen=True)
class Missing:
    """Why a section cannot be drawn.

    Attributes:
        path: the file that is missing or unusable.
        problem: what is wrong with it.
        fix: how to produce it.
    """

    path: Path
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}. To produce it: {self.fix}."


@dataclass(frozen=True)
class EpsilonCurve:
    """Cumulative epsilon spent by one datasite.

    Attributes:
        x: round number (from the history) or release number (rebuilt from the ledger).
        epsilon: cumulative epsilon after each x.
        per_round: ``True`` when ``x`` counts rounds, ``False`` when it counts ledger releases.
    """

    x: tuple[float, ...]
    epsilon: tuple[float, ...]
    per_round: bool


@dataclass
class ReportInputs:
    """Everything the report draws, already validated.

    Attributes:
        run_dir: the run folder.
        report: ``report.json`` as a dict.
        history: per-round records (``report["history"]``), possibly rebuilt from the legacy
            ``bytes_per_round`` list; empty when absent.
        predictions: ``predictions.csv`` or ``None``.
        communities: ``city/communities.csv`` or ``None``.
        sweep: the privacy-utility sweep records or ``None``.
        epsilon_curves: cumulative epsilon per datasite (from the history or the ledgers).
        missing: section name -> why it cannot be drawn.
    """

    run_dir: Path
    report: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    communities: pd.DataFrame | None = None
    sweep: list[dict[str, Any]] | None = None
    epsilon_curves: dict[str, EpsilonCurve] = field(default_factory=dict)
    missing: dict[str, Missing] = field(default_factory=dict)

    @property
    def privacy(self) -> dict[str, dict[str, Any]]:
        """``report["privacy"]``: ``{site: {"epsilon", "cap", "delta", "ledger_ok"}}``."""
        value = self.report.get("privacy") or {}
        return value if isinstance(value, dict) else {}


def _read_report(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise DataValidationError(
            file=str(run_dir),
            problem="run folder does not exist",
            fix=f"pass the folder given to `fedmugrep demo --out`, or {DEMO_HINT.format(run=run_dir)}",
        )
    path = run_dir / "report.json"
    if not path.is_file():
        raise DataValidationError(
            file=str(path),
            problem="no report.json in the run folder",
            fix=f"{DEMO_HINT.format(run=run_dir)} to produce it",
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataValidationError(
            file=str(path), problem=f"not readable JSON ({exc})", fix="re-run `fedmugrep demo`"
        ) from exc
    if not isinstance(report, dict):
        raise DataValidationError(
            file=str(path),
            problem=f"expected a JSON object, got {type(report).__name__}",
            fix="re-run `fedmugrep demo`",
        )
    return report


def _history(report: dict[str, Any]) -> list[dict[str, Any]]:
    """``report["history"]``, or rounds rebuilt from the legacy ``bytes_per_round`` list."""
    hist = report.get("history")
    if isinstance(hist, list) and hist:
        out = []
        for i, rec in enumerate(hist):
            if isinstance(rec, dict):
                out.append({**rec, "round": rec.get("round", i + 1)})
        return out
    legacy = report.get("bytes_per_round")
    if isinstance(legacy, list) and legacy:
        dense = report.get("bytes_dense_per_round")
        return [
            {"round": i + 1, "bytes_up": b, "bytes_dense": dense}
            for i, b in enumerate(legacy)
            if isinstance(b, dict)
        ]
    return []


def _read_csv(
    path: Path, columns: tuple[str, ...], fix: str
) -> tuple[pd.DataFrame | None, Missing | None]:
    if not path.is_file():
        return None, Missing(path, "file not found", fix)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return None, Missing(path, f"not a readable CSV ({exc})", fix)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        return None, Missing(path, f"missing column(s) {', '.join(absent)}", fix)
    if frame.empty:
        return None, Missing(path, "no rows", fix)
    return frame, None


def _clean_predictions(
    frame: pd.DataFrame, path: Path, fix: str
) -> tuple[pd.DataFrame | None, Missing | None]:
    numeric = ["price", "pred_median", "pred_lo80", "pred_hi80"]
    frame = frame.copy()
    for c in numeric:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    ok = frame[numeric].notna().all(axis=1) & (frame[numeric] > 0).all(axis=1)
    frame = frame.loc[ok].reset_index(drop=True)
    if frame.empty:
        return None, Missing(path, "no row with positive price and predictions", fix)
    frame["community"] = frame["community"].astype(str)
    return frame, None


def _read_sweep(path: Path) -> tuple[list[dict[str, Any]] | None, Missing | None]:
    fix = (
        'run a privacy sweep that writes a JSON list of {"epsilon": float or null, '
        '"mape": float, "seed": int} to RUN_DIR/sweep.json, or pass one with --sweep'
    )
    if not path.is_file():
        return None, Missing(path, "file not found (no privacy sweep was run)", fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, Missing(path, f"not readable JSON ({exc})", fix)
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        data = data["runs"]
    if not isinstance(data, list):
        return None, Missing(path, "expected a JSON list of runs", fix)
    out = []
    for rec in data:
        if not isinstance(rec, dict) or "mape" not in rec:
            continue
        eps = rec.get("epsilon")
        try:
            mape = float(rec["mape"])
            eps_f = None if eps is None else float(eps)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(mape) or (eps_f is not None and not (eps_f > 0)):
            continue
        out.append({"epsilon": eps_f, "mape": mape, "seed": rec.get("seed")})
    if not out:
        return None, Missing(path, "no usable {epsilon, mape} record", fix)
    return out, None


def _curves_from_history(history: list[dict[str, Any]]) -> dict[str, EpsilonCurve]:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for rec in history:
        eps = rec.get("epsilon")
        if not isinstance(eps, dict):
            continue
        for site, value in eps.items():
            if value is None:
                continue
            xs, ys = series.setdefault(str(site), ([], []))
            xs.append(float(rec["round"]))
            ys.append(float(value))
    return {s: EpsilonCurve(tuple(x), tuple(y), per_round=True) for s, (x, y) in series.items()}


def _curves_from_ledgers(
    run_dir: Path, sites: list[str], homes: dict[str, str] | None = None
) -> tuple[dict[str, EpsilonCurve], list[str]]:
    """Cumulative epsilon per charged ledger entry, in ledger order, per datasite.

    The ledgers are under ``homes`` (``report["homes"]``: site -> home) when the report names
    them, else under ``run_dir/datasites/<site>``.

    Uses ``total_epsilon`` of each ``charged`` entry (the pair's total at the cap's delta after
    that release). When a ledger holds several pairs, the pair whose dataset is named after the
    site is used, else the one with the most charges.
    """
    curves: dict[str, EpsilonCurve] = {}
    problems: list[str] = []
    base = run_dir / "datasites"
    if homes:
        where = {site: Path(h) for site, h in homes.items()}
    else:
        where = {p.parent.name: p.parent for p in base.glob(f"*/{LEDGER_FILENAME}")}
    candidates = sorted(set(sites) | set(where))
    for site in candidates:
        home = where.get(site, base / site)
        if not (home / LEDGER_FILENAME).is_file():
            problems.append(f"{home / LEDGER_FILENAME} not found")
            continue
        try:
            entries = Ledger(home, create=False).entries()
        except (FedMugRepError, OSError, ValueError, sqlite3.Error) as exc:
            problems.append(f"{home / LEDGER_FILENAME} unreadable ({exc})")
            continue
        charged = [e for e in entries if e.status == "charged"]
        if not charged:
            continue
        by_pair: dict[tuple[str, str], list[float]] = {}
        for e in charged:
            by_pair.setdefault((e.data_scientist, e.dataset), []).append(float(e.total_epsilon))
        named = [p for p in by_pair if p[1] == site]
        pair = named[0] if named else max(by_pair, key=lambda p: len(by_pair[p]))
        ys = by_pair[pair]
        curves[site] = EpsilonCurve(
            tuple(float(i + 1) for i in range(len(ys))), tuple(ys), per_round=False
        )
    return curves, problems


def load_inputs(run_dir: Path, sweep: Path | None = None) -> ReportInputs:
    """Read and validate a run folder.

    Args:
        run_dir: the run folder (holding ``report.json``).
        sweep: the sweep file (default ``run_dir / "sweep.json"``).

    Returns:
        The inputs; optional ones that are missing are listed in ``missing``.

    Raises:
        DataValidationError: ``run_dir`` does not exist or has no readable ``report.json``.
    """
    run_dir = Path(run_dir)
    report = _read_report(run_dir)
    inputs = ReportInputs(run_dir=run_dir, report=report, history=_history(report))
    demo = DEMO_HINT.format(run=run_dir)
    report_path = run_dir / "report.json"

    if not inputs.history:
        inputs.missing["history"] = Missing(
            report_path,
            'no "history" (per-round records)',
            f"{demo} with a fedmugrep version that records the history",
        )

    pred_path = run_dir / "predictions.csv"
    pred_fix = f"{demo}; it writes the test-split predictions to {pred_path}"
    frame, miss = _read_csv(pred_path, PREDICTION_COLUMNS, pred_fix)
    if frame is not None:
        frame, miss = _clean_predictions(frame, pred_path, pred_fix)
    inputs.predictions = frame
    if miss is not None:
        inputs.missing["predictions"] = miss

    # a run's report may name its community table (train-federated reads the city elsewhere)
    named = report.get("communities_file")
    comm_path = Path(named) if isinstance(named, str) else run_dir / "city" / "communities.csv"
    comm_fix = f"{demo} (writes the city there) or `fedmugrep synth --out {run_dir / 'city'}`"
    comms, miss = _read_csv(comm_path, COMMUNITY_COLUMNS, comm_fix)
    if comms is not None:
        comms = comms.copy()
        comms["community"] = comms["community"].astype(str)
        for c in ("lat", "lon"):
            comms[c] = pd.to_numeric(comms[c], errors="coerce")
        comms = comms.dropna(subset=["lat", "lon"]).reset_index(drop=True)
    inputs.communities = comms
    if miss is not None:
        inputs.missing["communities"] = miss

    sweep_path = Path(sweep) if sweep is not None else run_dir / "sweep.json"
    inputs.sweep, miss = _read_sweep(sweep_path)
    if miss is not None:
        inputs.missing["sweep"] = miss

    curves = _curves_from_history(inputs.history)
    if not curves:
        homes = report.get("homes") if isinstance(report.get("homes"), dict) else None
        curves, problems = _curves_from_ledgers(run_dir, sorted(inputs.privacy), homes)
        if not curves:
            problem = (
                'report.json has no per-round "epsilon" in its history, and no ledger with '
                "charged releases was found"
            )
            if problems:
                problem += " (" + "; ".join(problems[:4]) + ")"
            inputs.missing["epsilon"] = Missing(
                run_dir / "datasites",
                problem,
                f"{demo} without --no-privacy (a run without privacy spends no epsilon)",
            )
    inputs.epsilon_curves = curves
    return inputs
