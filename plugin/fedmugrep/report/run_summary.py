"""One post-run report for every training command: what a run spent, released and achieved.

``fedmugrep demo`` and ``fedmugrep train-federated`` both end here: :func:`summarise_run`
collects from a finished run (a :class:`~fedmugrep.federation.coordinator.FederationResult`
and the parties' homes) the epsilon each datasite's ledger says was spent, the per-round
epsilon curves, the data owners' exact test metrics beside the noised ones the data scientist
received, the history and the exported model; :func:`print_summary` prints it and
:func:`save_run` writes ``report.json`` and the report page (``fedmugrep report`` reads the same
folder).

The exact metrics and per-row predictions come from the owners' own reports in their homes:
only a process that plays every owner (a demo, or the local runtime on a synthetic city) can
pool them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedmugrep.federation.coordinator import FederationResult
from fedmugrep.federation.owner_report import owner_predictions, pooled_metrics
from fedmugrep.federation.plan import FederationPlan, epsilon_after_each_round
from fedmugrep.federation.valuation import ValuationModel
from fedmugrep.privacy.audit import spending_summary
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.report.html import ReportResult, write_report

__all__ = [
    "METRICS",
    "RELEASE_NOTES",
    "federation_report",
    "print_summary",
    "save_run",
    "summarise_run",
]

#: The pooled test metrics a report shows.
METRICS = ("mae", "mape", "mae_log", "coverage80", "n")
#: What a private release adds beside its figures: the noise warnings and the evaluation ε
#: that would make the figures useful (see ``federation.coordinator.released_ranges``).
RELEASE_NOTES = ("warnings", "useful_evaluation_epsilon")


def _privacy(res: FederationResult) -> tuple[dict[str, Any], dict[str, list[float]]]:
    spent: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    for dataset, home in res.homes.items():
        summary = spending_summary(home, res.data_scientist, dataset)
        if summary is None:  # nothing capped: exact releases the owner allowed (no privacy)
            continue
        spent[dataset] = summary
        curves[dataset] = epsilon_after_each_round(
            Ledger(home).entries(), dataset, len(res.history)
        )
    return spent, curves


def _history(res: FederationResult, curves: Mapping[str, list[float]]) -> list[dict[str, Any]]:
    history = []
    for i, h in enumerate(res.history):
        rec: dict[str, Any] = {
            "round": h.round,
            "seconds": h.seconds,
            "bytes_up": h.bytes_up,
            "bytes_dense": h.bytes_dense,
            "epsilon": {d: c[i] for d, c in curves.items() if i < len(c)},
        }
        if h.train_loss is not None:
            rec["train_loss"] = h.train_loss
        history.append(rec)
    return history


def summarise_run(
    res: FederationResult,
    plan: FederationPlan,
    *,
    communities: pd.DataFrame,
    out_dir: Path,
    model_file: Path | None = None,
    communities_file: Path | None = None,
) -> dict[str, Any]:
    """The report of a finished run; writes ``predictions.csv`` and the exported model.

    Args:
        res: the run's result (its ``homes`` and ``data_scientist`` name the ledgers).
        plan: the plan it ran.
        communities: the public community table (the model's geography).
        out_dir: where ``predictions.csv`` (and by default ``model.pt``) go.
        model_file: where to export the model (default ``out_dir / "model.pt"``).
        communities_file: the community table's file, for the report's maps (default: the
            run folder's ``city/communities.csv``).

    Returns:
        The JSON-able report (``report.json``'s content).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spent, curves = _privacy(res)
    agency_homes = [h for n, h in res.homes.items() if n != "region" and n not in res.dropped]
    predictions = owner_predictions(agency_homes)
    pooled, per_agency = pooled_metrics(predictions)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    model = ValuationModel.from_result(res, geography=communities)
    saved = model.save(model_file or out_dir / "model.pt")
    return {
        "federated": {k: pooled[k] for k in METRICS if k in pooled},
        "federated_note": "exact test metrics from the data owners' own reports (pooled)",
        "federated_released": {
            k: v for k, v in res.metrics.items() if k in METRICS or k.endswith("_noise_sd")
        }
        | {k: res.metrics[k] for k in RELEASE_NOTES if k in res.metrics},
        "federated_per_agency": per_agency,
        "privacy": spent,
        "noise_multiplier": res.noise_multiplier,
        "history": _history(res, curves),
        "bytes_per_round": [h.bytes_up for h in res.history],
        "bytes_dense_per_round": res.history[-1].bytes_dense if res.history else 0,
        "district_summary": res.district_summary,
        "homes": {n: str(h) for n, h in res.homes.items()},
        "model_file": str(saved),
        "plan": plan.to_dict(),
        **({"communities_file": str(communities_file)} if communities_file else {}),
    }


def federation_report(
    res: FederationResult,
    plan: FederationPlan,
    *,
    model_file: Path,
    sites: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    """The report of a run against other organisations' datasites (``fedmugrep federation
    train``): only what the data scientist holds.

    That is the released (noised) test metrics with their noise sd, the history of the rounds
    (seconds, bytes; no ε: the ledgers are on the datasites), the datasites by name, URL and
    role, the model file and the plan. ``fedmugrep report HOME`` draws it and names, per
    datasite, where its ledger is.

    Args:
        res: the run's result.
        plan: the plan it ran.
        model_file: the exported model.
        sites: ``(name, url, role)`` per datasite, as in the federation file.
    """
    released = {k: v for k, v in res.metrics.items() if k in METRICS or k.endswith("_noise_sd")}
    released |= {k: res.metrics[k] for k in RELEASE_NOTES if k in res.metrics}
    history = _history(res, {})
    for rec in history:
        rec.pop("epsilon")
    return {
        "command": "federation train",
        "released": released,
        "noise_multiplier": res.noise_multiplier,
        "rounds": len(res.history),
        "dropped": list(res.dropped),
        "history": history,
        "bytes_per_round": [h.bytes_up for h in res.history],
        "datasites": {name: {"url": url, "role": role} for name, url, role in sites},
        "model_file": str(model_file),
        "plan": plan.to_dict(),
    }


def print_summary(out: Mapping[str, Any]) -> None:
    """The lines a training command prints at the end (noise sd beside every noised figure)."""
    fed = out["federated"]
    ratio = ""
    if "centralized" in out:
        ratio = f" ({fed['mape'] / out['centralized']['mape']:.2f} x centralized)"
    print(
        f"federated test (data owners' exact metrics): MAE {fed['mae']:,.0f}  MAPE "
        f"{fed['mape']:.4f}{ratio}  MAE log {fed['mae_log']:.4f}  "
        f"coverage80 {fed['coverage80']:.3f}"
    )
    rel = out["federated_released"]
    if out["privacy"] and "mape_noise_sd" in rel:
        print(
            f"  released to the data scientist (Laplace-noised, +- noise sd): MAPE "
            f"{rel['mape']:.4f} +- {rel['mape_noise_sd']:.4f}  MAE log {rel['mae_log']:.4f} "
            f"+- {rel['mae_log_noise_sd']:.4f}  coverage80 {rel['coverage80']:.3f} "
            f"+- {rel['coverage80_noise_sd']:.3f}"
        )
        for line in rel.get("warnings", []):
            print(f"  WARNING: {line}")
    for name, st in out["privacy"].items():
        print(
            f"  {name}: epsilon {st['epsilon']:.3f} of cap {st['cap']}; ledger verified: "
            f"{st['ledger_ok']}"
        )
    history = out["history"]
    if history:
        last = history[-1]["bytes_up"]
        up = sum(last.values()) / len(last)
        print(
            f"  bytes up per datasite per round: {up:,.0f} (dense {out['bytes_dense_per_round']:,})"
        )
    model = out["model_file"]
    print(f"  model for valuations: {model} (fedmugrep appraise --model {model} ...)")


def save_run(out: Mapping[str, Any], run_dir: Path, *, also: Path | None = None) -> ReportResult:
    """Write ``run_dir/report.json`` (and ``also``, when given) and the report page."""
    run_dir = Path(run_dir)
    for target in [run_dir / "report.json", also]:
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(out, indent=2, default=str))
    return write_report(run_dir)
