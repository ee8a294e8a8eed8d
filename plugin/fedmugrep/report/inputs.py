"""Read and validate what ``fedmugrep report`` plots, from one run folder.

Every command that trains writes a run folder: ``fedmugrep demo --out RUN_DIR``,
``fedmugrep train-federated --home RUN_DIR``, ``fedmugrep train-central ... --out RUN_DIR`` and
``fedmugrep federation train`` (the ``home`` of its federation file). A run folder holds::

    RUN_DIR/
      report.json              metrics, privacy per datasite, history per round, plan
      predictions.csv          test-split predictions (median and 80% interval)
      sweep.json               optional: privacy-utility sweep (``fedmugrep sweep``)
      city/communities.csv     community centres (or the file report.json names)
      datasites/<site>/privacy_ledger.sqlite   (or the homes report.json names)

Only ``report.json`` is required. Every other input is optional: when it is missing or
malformed, :class:`ReportInputs.missing` records, per section, which file is missing and how
to produce it (with the command that made this folder), and the page shows that instead of
the figure. Every datasite's ledger is verified here (:class:`LedgerCheck`), never taken from
what report.json says.
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
    "RUN_KINDS",
    "EpsilonCurve",
    "LedgerCheck",
    "Missing",
    "ReportInputs",
    "check_ledgers",
    "load_inputs",
    "run_kind",
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

RUN_KINDS: tuple[str, ...] = ("demo", "train-federated", "train-central", "federation train")
"""The commands whose output folder the report reads (``report.json``'s ``"command"``)."""


def run_kind(report: dict[str, Any]) -> str:
    """Which command wrote ``report``: one of :data:`RUN_KINDS`, or ``"unknown"``.

    ``report["command"]`` when present; otherwise recognised by its keys (folders written
    before the reports named their command).
    """
    named = report.get("command")
    if isinstance(named, str) and named in RUN_KINDS:
        return named
    if "mode" in report and "federated" in report:
        return "demo"
    if "released" in report and "federated" not in report:
        return "federation train"
    if "federated" in report and "homes" in report:
        return "train-federated"
    if "model" in report and "federated" not in report:
        return "train-central"
    return "unknown"


def rerun_hint(report: dict[str, Any], run_dir: Path) -> str:
    """The command that (re)writes this run folder, for the "to produce it" of a note."""
    kind = run_kind(report)
    if kind == "train-federated":
        named = report.get("communities_file")
        city = Path(named).parent if isinstance(named, str) else Path("CITY")
        return f"run `fedmugrep train-federated --city {city} --home {run_dir}`"
    if kind == "train-central":
        return f"run `fedmugrep train-central --transactions ... --out {run_dir}`"
    if kind == "federation train":
        return "run `fedmugrep federation train --file FEDERATION.toml` (its [training] home)"
    return DEMO_HINT.format(run=run_dir)


@dataclass(frozen=True)
class LedgerCheck:
    """What the report found when it verified one datasite's privacy ledger.

    Attributes:
        site: the datasite (dataset name, as in report.json's ``privacy``).
        status: ``"verified"`` (the hash chain checks), ``"failed"`` (a problem was found or
            the file is unreadable; ``detail`` says which), ``"not found"`` (no ledger file at
            ``path``), or ``"remote"`` (the ledger is on another organisation's datasite).
        path: the ledger file checked or looked for (``None`` for ``"remote"``).
        detail: entries read, the problem, or where the ledger is.
    """

    site: str
    status: str
    path: Path | None
    detail: str


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
        ledgers: per datasite, what verifying its ledger found (:class:`LedgerCheck`).
        kind: the command that wrote the folder (:func:`run_kind`).
        missing: section name -> why it cannot be drawn.
    """

    run_dir: Path
    report: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    communities: pd.DataFrame | None = None
    sweep: list[dict[str, Any]] | None = None
    epsilon_curves: dict[str, EpsilonCurve] = field(default_factory=dict)
    ledgers: dict[str, LedgerCheck] = field(default_factory=dict)
    kind: str = "unknown"
    missing: dict[str, Missing] = field(default_factory=dict)

    @property
    def privacy(self) -> dict[str, dict[str, Any]]:
        """``report["privacy"]``: ``{site: {"epsilon", "cap", "delta", "ledger_ok"}}``."""
        value = self.report.get("privacy") or {}
        return value if isinstance(value, dict) else {}


def _read_report(run_dir: Path) -> dict[str, Any]:
    if run_dir.is_file():
        raise DataValidationError(
            file=str(run_dir),
            problem="is a file, not a run folder",
            fix="pass the folder holding report.json: `fedmugrep demo --out DIR`, "
            "`fedmugrep train-federated --home DIR`, `fedmugrep train-central ... --out DIR` "
            "and `fedmugrep federation train` (its [training] home) each write one",
        )
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
    """``report["history"]``, or rounds rebuilt from the legacy ``bytes_per_round`` list.

    A centralized run's history (``train-central``: one record per evaluated epoch with
    ``epoch``, ``train_nll``, ``val_mae_log``) is read with the epoch as its ``round`` and
    ``train_nll`` as its ``train_loss``.
    """
    hist = report.get("history")
    if isinstance(hist, list) and hist:
        out = []
        for i, rec in enumerate(hist):
            if not isinstance(rec, dict):
                continue
            if "round" not in rec and "epoch" in rec:
                rec = {**rec, "round": rec["epoch"]}
                if "train_nll" in rec and "train_loss" not in rec:
                    rec["train_loss"] = rec["train_nll"]
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


def _read_sweep(
    path: Path, run_dir: Path, report: dict[str, Any]
) -> tuple[list[dict[str, Any]] | None, Missing | None]:
    named = report.get("communities_file")
    city = Path(named).parent if isinstance(named, str) else run_dir / "city"
    fix = (
        f"run `fedmugrep sweep --city {city} --epsilons 1 2 4 8 --out {path}` (a JSON list "
        'of {"epsilon": float or null, "mape": float, "seed": int}), or pass one with --sweep'
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


def _remote_sites(report: dict[str, Any]) -> dict[str, str]:
    """``report["datasites"]``: site -> where it runs, for a run against datasites by URL."""
    sites = report.get("datasites")
    if not isinstance(sites, dict):
        return {}
    out = {}
    for name, info in sites.items():
        url = info.get("url") if isinstance(info, dict) else info
        out[str(name)] = str(url)
    return out


def _ledger_homes(run_dir: Path, report: dict[str, Any]) -> dict[str, list[Path]]:
    """Per datasite, the folders its ledger may be in, most likely first.

    The home report.json names (``report["homes"]``), then the same folder name inside
    ``run_dir`` or ``run_dir/datasites`` (a run folder that was moved or copied), then
    ``run_dir/datasites/<site>``
    (the demo's layout). Sites are those of ``report["privacy"]`` and ``report["homes"]``, and
    any ``run_dir/datasites/<site>`` holding a ledger.
    """
    homes = report.get("homes") if isinstance(report.get("homes"), dict) else {}
    privacy = report.get("privacy") if isinstance(report.get("privacy"), dict) else {}
    base = run_dir / "datasites"
    out: dict[str, list[Path]] = {}
    for site in sorted(set(privacy) | set(homes)):
        candidates = []
        named = homes.get(site)
        if isinstance(named, str):
            candidates += [Path(named), run_dir / Path(named).name, base / Path(named).name]
        candidates.append(base / site)
        out[site] = list(dict.fromkeys(candidates))
    # a ledger under run_dir/datasites that no site above is looked for in: its own site
    known = {c.resolve() for cands in out.values() for c in cands}
    if base.is_dir():
        for ledger in sorted(base.glob(f"*/{LEDGER_FILENAME}")):
            if ledger.parent.resolve() not in known:
                out.setdefault(ledger.parent.name, [ledger.parent])
    return out


def _ledger_file(candidates: list[Path]) -> Path | None:
    for home in candidates:
        if (home / LEDGER_FILENAME).is_file():
            return home / LEDGER_FILENAME
    return None


def check_ledgers(run_dir: Path, report: dict[str, Any]) -> dict[str, LedgerCheck]:
    """Verify the privacy ledger of every datasite of a run (``Ledger(home).verify()``).

    Datasites are those report.json charges (``privacy``) or names (``homes``), and any ledger
    under ``run_dir/datasites``; sites of a no-privacy run whose home holds no ledger are left
    out. A run against other organisations' datasites (``report["datasites"]``, written by
    ``fedmugrep federation train``) has no ledger here: each is ``"remote"``.
    """
    run_dir = Path(run_dir)
    privacy = report.get("privacy") if isinstance(report.get("privacy"), dict) else {}
    out: dict[str, LedgerCheck] = {}
    for site, url in _remote_sites(report).items():
        out[site] = LedgerCheck(
            site,
            "remote",
            None,
            f"held by datasite '{site}' at {url}; its owner verifies it with "
            "`fedmugrep audit --home HOME --verify` on that datasite's home",
        )
    for site, candidates in _ledger_homes(run_dir, report).items():
        if site in out:
            continue
        path = _ledger_file(candidates)
        if path is None:
            if site in privacy:
                looked = candidates[0] / LEDGER_FILENAME
                out[site] = LedgerCheck(
                    site,
                    "not found",
                    looked,
                    f"no ledger at {looked}"
                    + (
                        f" (nor {len(candidates) - 1} other place(s) tried)"
                        if len(candidates) > 1
                        else ""
                    )
                    + "; it was not checked",
                )
            continue
        try:
            result = Ledger(path.parent, create=False).verify()
        except (FedMugRepError, OSError, ValueError, sqlite3.Error) as exc:
            out[site] = LedgerCheck(site, "failed", path, f"unreadable ({exc})")
            continue
        if result.ok:
            out[site] = LedgerCheck(
                site, "verified", path, f"{result.entries} entries, hash chain intact"
            )
        else:
            reasons = "; ".join(f"[{p.kind}] {p.message}" for p in result.problems[:3])
            more = len(result.problems) - 3
            out[site] = LedgerCheck(
                site, "failed", path, reasons + (f"; and {more} more" if more > 0 else "")
            )
    return out


def _curves_from_ledgers(
    run_dir: Path, report: dict[str, Any]
) -> tuple[dict[str, EpsilonCurve], list[str]]:
    """Cumulative epsilon per charged ledger entry, in ledger order, per datasite.

    The ledgers are found as :func:`_ledger_homes` says (the homes report.json names, else
    ``run_dir/datasites/<site>``).

    Uses ``total_epsilon`` of each ``charged`` entry (the pair's total at the cap's delta after
    that release). When a ledger holds several pairs, the pair whose dataset is named after the
    site is used, else the one with the most charges.
    """
    curves: dict[str, EpsilonCurve] = {}
    problems: list[str] = []
    for site, candidates in _ledger_homes(run_dir, report).items():
        path = _ledger_file(candidates)
        if path is None:
            problems.append(f"{candidates[0] / LEDGER_FILENAME} not found")
            continue
        try:
            entries = Ledger(path.parent, create=False).entries()
        except (FedMugRepError, OSError, ValueError, sqlite3.Error) as exc:
            problems.append(f"{path} unreadable ({exc})")
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
    """Read and validate a run folder, and verify its datasites' ledgers.

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
    kind = run_kind(report)
    inputs = ReportInputs(run_dir=run_dir, report=report, history=_history(report), kind=kind)
    rerun = rerun_hint(report, run_dir)
    report_path = run_dir / "report.json"

    if not inputs.history:
        inputs.missing["history"] = Missing(
            report_path,
            'no "history" (per-round records)',
            f"{rerun} with a fedmugrep version that records the history",
        )

    pred_path = run_dir / "predictions.csv"
    if kind == "federation train":
        pred_fix = (
            "nothing can: the test sales and their predictions stay on the datasites, and a run "
            "against other organisations' datasites receives only the noised test metrics shown "
            "above; `fedmugrep demo` or `fedmugrep train-federated` on a city you hold write it"
        )
    else:
        pred_fix = f"{rerun}; it writes the test-split predictions to {pred_path}"
    frame, miss = _read_csv(pred_path, PREDICTION_COLUMNS, pred_fix)
    if frame is not None:
        frame, miss = _clean_predictions(frame, pred_path, pred_fix)
    inputs.predictions = frame
    if miss is not None:
        inputs.missing["predictions"] = miss

    # a run's report may name its community table (train-federated reads the city elsewhere)
    named = report.get("communities_file")
    comm_path = Path(named) if isinstance(named, str) else run_dir / "city" / "communities.csv"
    if kind == "demo" or kind == "unknown":
        comm_fix = f"{rerun} (writes the city there) or `fedmugrep synth --out {run_dir / 'city'}`"
    else:
        comm_fix = f"{rerun}: its report.json then names the city's communities.csv"
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
    inputs.sweep, miss = _read_sweep(sweep_path, run_dir, report)
    if miss is not None:
        inputs.missing["sweep"] = miss

    inputs.ledgers = check_ledgers(run_dir, report)
    curves = _curves_from_history(inputs.history)
    if not curves:
        curves, problems = _curves_from_ledgers(run_dir, report)
        if not curves:
            if kind == "train-central":
                problem, fix = (
                    "centralized training on pooled data: no datasite, so no privacy budget is "
                    "spent",
                    "nothing to do (federated runs spend ε: `fedmugrep train-federated`, "
                    "`fedmugrep demo`)",
                )
            elif kind == "federation train":
                problem, fix = (
                    "the ledgers of a run against other organisations' datasites are on those "
                    "datasites, and report.json has no per-round ε",
                    "each owner shows what was spent with `fedmugrep audit --home HOME` or "
                    "`fedmugrep budget show --config TOML`",
                )
            else:
                problem = (
                    'report.json has no per-round "epsilon" in its history, and no ledger with '
                    "charged releases was found"
                )
                if problems:
                    problem += " (" + "; ".join(problems[:4]) + ")"
                fix = f"{rerun} without --no-privacy (a run without privacy spends no epsilon)"
            where = run_dir / "datasites" if kind in ("demo", "unknown") else report_path
            inputs.missing["epsilon"] = Missing(where, problem, fix)
    inputs.epsilon_curves = curves
    return inputs
