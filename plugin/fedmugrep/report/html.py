"""Assemble the report page: header tables, one section per figure, and the PNG files.

The page is self-contained (figures embedded as base64 PNG ``<img>``, CSS inline) and each
figure is also written as a PNG next to it. A section whose input is missing says which file
is missing and how to produce it instead of showing a figure.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedmugrep.report import plots
from fedmugrep.report.inputs import (
    LedgerCheck,
    ReportInputs,
    load_inputs,
    rerun_hint,
)

__all__ = ["FIGURES", "ReportResult", "render_page", "write_report"]

FIGURES: tuple[tuple[str, str], ...] = (
    ("training", "training_curves.png"),
    ("epsilon", "epsilon_spent.png"),
    ("bytes", "bytes_per_round.png"),
    ("map", "city_map.png"),
    ("calibration", "predicted_vs_actual.png"),
    ("sweep", "privacy_utility.png"),
)
"""Section key and PNG file name of every figure, in page order."""

_DPI = 110


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes:
        html: the page.
        pngs: the figures written next to it, in page order.
        missing: section key -> why it has no figure (the text shown on the page).
    """

    html: Path
    pngs: list[Path] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "html": str(self.html),
            "pngs": [str(p) for p in self.pngs],
            "missing": dict(self.missing),
        }


@dataclass
class _Section:
    key: str
    title: str
    caption: str = ""
    png: bytes | None = None
    file: str | None = None
    missing: str | None = None
    extra_html: str = ""
    caption_extra: str = ""


# --------------------------------------------------------------------------- formatting


def _num(value: Any, fmt: str = "{:.4f}") -> str:
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if not math.isfinite(v):
        return "—"
    return fmt.format(v)


def _pct(value: Any) -> str:
    return _num(None if value is None else 100 * float(value), "{:.2f}%")


def _euros(value: Any) -> str:
    return _num(value, "€{:,.0f}")


def _seconds(value: Any) -> str:
    if value is None:
        return "—"
    v = float(value)
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _metrics_table(report: Mapping[str, Any]) -> str:
    rows: list[tuple[str, Mapping[str, Any], str]] = []
    for key, label, cls in (
        ("federated", "fed-MugRep, federated (this run)", "fed"),
        ("centralized", "fed-MugRep, centralized on pooled data", ""),
    ):
        if isinstance(report.get(key), Mapping):
            rows.append((label, report[key], cls))
    baselines = report.get("baselines")
    if isinstance(baselines, Mapping):
        for name, m in baselines.items():
            if isinstance(m, Mapping):
                rows.append((f"baseline: {name.replace('_', ' ')} (pooled)", m, ""))
    if isinstance(report.get("bayes_floor"), Mapping):
        rows.append(("Bayes floor (oracle; lowest achievable)", report["bayes_floor"], "floor"))
    released = report.get("federated_released", report.get("released"))
    if isinstance(released, Mapping) and any(
        released.get(k) is not None for k in ("mape", "mae_log")
    ):
        rows.insert(
            1 if isinstance(report.get("federated"), Mapping) else 0,
            (
                "fed-MugRep, federated: released to the data scientist (noised, ± noise sd)",
                released,
                "fed",
            ),
        )
    if not rows:
        return '<p class="missing">report.json has no "federated" or "centralized" metrics.</p>'
    fed = report.get("federated") if isinstance(report.get("federated"), Mapping) else None

    def sd(m: Mapping[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
        noise = m.get(f"{key}_noise_sd")
        return "" if noise is None else f" ± {fmt(noise)}"

    out = []
    for label, m, cls in rows:
        cells = [
            f'<span class="{cls}">{html.escape(label)}</span>',
            _euros(m.get("mae")) + sd(m, "mae", _euros),
            _pct(m.get("mape")) + sd(m, "mape", _pct),
            _num(m.get("mae_log")) + sd(m, "mae_log", _num),
            _pct(m.get("coverage80")) + sd(m, "coverage80", _pct),
        ]
        out.append(cells)
    table = _table(
        ["model", "MAE (€)", "MAPE", "MAE of log price", "80% interval coverage"], out, "num"
    )
    note = ""
    cen = report.get("centralized")
    if fed and isinstance(cen, Mapping) and fed.get("mape") and cen.get("mape"):
        note = (
            f"<p>Federated MAPE is <b>{float(fed['mape']) / float(cen['mape']):.2f}×</b> the "
            "centralized MAPE. Coverage should be close to 80%; “—” means not measured.</p>"
        )
    if isinstance(released, Mapping):
        for line in released.get("warnings") or []:
            note += f'<p class="missing">Released metrics: {html.escape(str(line))}</p>'
    return table + note


_LEDGER_STATUS = {
    "verified": '<span class="ok">✔ verified</span>',
    "failed": '<span class="bad">✘ FAILED verification</span>',
    "not found": '<span class="bad">not found: not checked</span>',
    "remote": "on the datasite: not checked here",
}


def _ledger_cell(check: LedgerCheck | None) -> str:
    if check is None:
        return "no ledger named for this datasite: not checked"
    return f"{_LEDGER_STATUS[check.status]}<br><small>{html.escape(check.detail)}</small>"


def _privacy_table(inputs: ReportInputs) -> str:
    """ε per datasite against its cap, and what verifying each ledger found *now* (the
    report's own check, never report.json's recorded ``ledger_ok``)."""
    priv = inputs.privacy
    checks = inputs.ledgers
    if not priv and not checks:
        if inputs.kind == "train-central":
            return (
                "<p>Centralized training on pooled data: <b>no datasite, no differential "
                "privacy, no ledger</b>.</p>"
            )
        plan = inputs.report.get("plan") or {}
        if isinstance(plan, Mapping) and plan.get("privacy") is None and "privacy" in plan:
            return "<p>This run used <b>no differential privacy</b> (owners opted in to exact releases).</p>"
        return '<p class="missing">report.json has no "privacy" section.</p>'
    rows = []
    for site in sorted(set(priv) | set(checks)):
        p = priv.get(site, {})
        eps, cap = p.get("epsilon"), p.get("cap")
        used = (
            f"{100 * float(eps) / float(cap):.1f}%"
            if eps is not None and cap not in (None, 0)
            else "—"
        )
        rows.append(
            [
                html.escape(site),
                _num(eps, "{:.3f}"),
                _num(cap, "{:g}"),
                used,
                _num(p.get("delta"), "{:.0e}"),
                _ledger_cell(checks.get(site)),
            ]
        )
    table = _table(
        ["datasite", "ε spent", "ε cap", "share of cap", "δ", "privacy ledger (verified now)"],
        rows,
        "num",
    )
    counts = {k: sum(c.status == k for c in checks.values()) for k in _LEDGER_STATUS}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    return table + (
        f"<p>Ledgers: {summary}. Each ledger's hash chain was verified when this page was "
        "written (what report.json recorded is not taken on trust); a ledger that is not found, "
        "or that is on another organisation's datasite, was not checked.</p>"
    )


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += _flatten(v, name + ".")
        else:
            out.append((name, v))
    return out


def _run_table(report: Mapping[str, Any]) -> str:
    central = report.get("command") == "train-central"
    rows = []
    if isinstance(report.get("command"), str):
        rows.append(["written by", f"<code>fedmugrep {html.escape(report['command'])}</code>"])
    for key, label in (
        ("mode", "datasites"),
        ("demo_seconds", "total run time"),
        ("setup_seconds", "datasite setup"),
        ("train_seconds", "centralized training" if central else "federated training"),
        ("best_epoch", "best epoch (kept)"),
        ("noise_multiplier", "DP noise multiplier"),
    ):
        if key in report:
            v = report[key]
            text = _seconds(v) if key.endswith("seconds") else html.escape(str(v))
            rows.append([label, text])
    plan = report.get("plan")
    plan_html = ""
    if isinstance(plan, Mapping):
        for key, label in (
            ("rounds", "rounds"),
            ("optimizer", "optimizer"),
            ("lr", "learning rate"),
        ):
            if key in plan:
                rows.append([label, html.escape(str(plan[key]))])
        flat = [[html.escape(k), html.escape(str(v))] for k, v in _flatten(plan)]
        plan_html = (
            "<details><summary>full federation plan</summary>"
            + _table(["setting", "value"], flat, "plan")
            + "</details>"
        )
    if not rows and not plan_html:
        return '<p class="missing">report.json has no run time or plan.</p>'
    return _table(["", ""], rows, "kv") + plan_html


# --------------------------------------------------------------------------- sections


def _private(inputs: ReportInputs) -> bool:
    plan = inputs.report.get("plan")
    if isinstance(plan, Mapping) and "privacy" in plan:
        return plan["privacy"] is not None
    return bool(inputs.privacy)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot state
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    return buf.getvalue()


def _draw(section: _Section, make: Callable[[], Figure | None], file: str) -> None:
    fig = make()
    if fig is None:
        return
    section.png = _png(fig)
    section.file = file


def _bytes_ratio(history: list[dict[str, Any]], upload_rate: Any = None) -> str:
    """The caption's comparison of the uploads with the dense update, from the totals: how
    many times smaller, or larger, or about the same size (within 2%)."""
    up = dense = 0.0
    n = 0
    for r in history:
        if not r.get("bytes_dense") or not isinstance(r.get("bytes_up"), Mapping):
            continue
        for v in r["bytes_up"].values():
            if v:
                up += float(v)
                dense += float(r["bytes_dense"])
                n += 1
    if not n:
        return ""
    mean_up, mean_dense = up / n, dense / n
    sizes = (
        f"{plots.format_bytes(mean_up)} per upload against {plots.format_bytes(mean_dense)} dense"
    )
    ratio = mean_dense / mean_up
    if abs(ratio - 1.0) <= 0.02:
        return f" On average an upload is about the same size as the dense update ({sizes})."
    if ratio > 1.0:
        return (
            f" On average an upload is <b>{ratio:.1f}× smaller</b> than the dense update ({sizes})."
        )
    why = ""
    if isinstance(upload_rate, int | float) and upload_rate >= 1:
        why = (
            ": at upload rate 1 every channel is sent densely, so the format's 32-byte header "
            "is pure overhead; a lower --upload-rate sends fewer channels"
        )
    return (
        f" On average an upload is <b>{1 / ratio:.2f}× larger</b> than the dense update "
        f"({sizes}){why}."
    )


#: Section key -> its PNG's file name.
_FIGURE_FILES = dict(FIGURES)


def _sections(inputs: ReportInputs) -> list[_Section]:
    """The page's six sections, in order; a section whose input is missing says what is missing
    and which command writes it."""
    return [
        build(inputs)
        for build in (
            _training_section,
            _epsilon_section,
            _bytes_section,
            _map_section,
            _calibration_section,
            _sweep_section,
        )
    ]


def _missing_text(miss: Mapping[str, Any], key: str) -> str:
    return str(miss.get(key))


def _training_section(inputs: ReportInputs) -> _Section:
    """Section 1: training curves, or, for a private run, what it released (ε per round, the
    noised test metrics)."""
    rep = inputs.report
    miss = inputs.missing
    central = inputs.kind == "train-central"
    unit = "epoch" if central else "round"
    released = rep.get("federated_released", rep.get("released"))
    released = released if isinstance(released, Mapping) else None
    exact = rep.get("federated") if isinstance(rep.get("federated"), Mapping) else None
    s = _Section("training", "1. Training and validation curves")
    if "history" in miss and not (_private(inputs) and released):
        s.missing = _missing_text(miss, "history")
    elif _private(inputs):
        s.title = "1. Training: what a private run releases"
        has_loss = any(r.get("train_loss") is not None for r in inputs.history)
        has_val = any(r.get("val_mae_log") is not None for r in inputs.history)
        if has_loss or has_val:
            _draw(s, lambda: plots.training_curves(inputs.history), _FIGURE_FILES["training"])
        else:
            _draw(
                s,
                lambda: plots.private_releases(inputs.epsilon_curves, released, exact),
                _FIGURE_FILES["training"],
            )
        per_round = any(c.per_round for c in inputs.epsilon_curves.values())
        notes = [
            "Training loss is not shown: under differential privacy the datasites release "
            "only clipped, noised gradients, never their training loss, so it is not recorded. "
            "No validation curve either: no per-round validation metric is released."
        ]
        if per_round:
            notes.append(
                "Left: the ε each datasite's ledger charged in each round (the first round "
                "includes the one-off releases made before training: intra-region sums, "
                "counts, the community price level)."
            )
        if released:
            notes.append(
                "Right: the test metrics released once, after training, Laplace-noised, with "
                "± one noise standard deviation"
                + (
                    "; beside them (green) the data owners' exact figures, which only a run "
                    "that plays every owner can pool."
                    if exact
                    else "."
                )
            )
        s.caption = " ".join(notes)
        if s.png is None:
            s.missing = (
                f"{inputs.run_dir / 'report.json'}: no per-round ε in the history and no "
                "released test metrics (federated_released). To produce it: "
                f"{rerun_hint(rep, inputs.run_dir)}."
            )
    else:
        has_loss = any(r.get("train_loss") is not None for r in inputs.history)
        has_val = any(r.get("val_mae_log") is not None for r in inputs.history)
        _draw(s, lambda: plots.training_curves(inputs.history, unit), _FIGURE_FILES["training"])
        notes = []
        if has_loss:
            notes.append(
                "Training loss per epoch (negative log-likelihood on the pooled training sales)."
                if central
                else "Training loss per round, averaged over the datasites' training targets."
            )
        if has_val:
            notes.append(
                f"Validation MAE of log price per {unit}, "
                + (
                    "on the pooled validation sales "
                    if central
                    else "computed by each data owner on its own validation sales "
                )
                + "(lower is better; 0.1 ≈ 10% typical error)."
            )
        if not has_loss:
            notes.append('The history has no "train_loss", so no training loss is shown.')
        if not has_val:
            notes.append('The history has no "val_mae_log", so no validation curve is shown.')
        s.caption = " ".join(notes)
        if s.png is None:
            s.missing = (
                f"{inputs.run_dir / 'report.json'}: the history has neither train_loss "
                f"nor val_mae_log. To produce it: {rerun_hint(rep, inputs.run_dir)}."
            )
    return s


def _epsilon_section(inputs: ReportInputs) -> _Section:
    """Section 2: ε spent per datasite against its cap."""
    miss = inputs.missing
    s = _Section("epsilon", "2. Privacy budget spent per datasite")
    if "epsilon" in miss:
        s.missing = _missing_text(miss, "epsilon")
    else:
        _draw(
            s,
            lambda: plots.epsilon_spent(inputs.epsilon_curves, inputs.privacy),
            _FIGURE_FILES["epsilon"],
        )
        per_round = all(c.per_round for c in inputs.epsilon_curves.values())
        s.caption = (
            "Cumulative ε spent by each agency datasite after each round, against the cap its "
            "data owner set (dashed). A datasite's ledger refuses any release that would cross "
            "the cap."
            if per_round
            else "Cumulative ε spent by each datasite, rebuilt from its privacy ledger "
            "(RUN_DIR/datasites/&lt;site&gt;/privacy_ledger.sqlite): one point per charged "
            "release in ledger order (a run charges a few one-off releases, e.g. intra-region sums "
            "and counts, besides those of every round), because report.json has no per-round ε. "
            "Dashed: the cap."
        )
    return s


def _bytes_section(inputs: ReportInputs) -> _Section:
    """Section 3: bytes uploaded per round against the dense update."""
    rep = inputs.report
    miss = inputs.missing
    central = inputs.kind == "train-central"
    s = _Section("bytes", "3. Communication per round")
    if central:
        s.missing = (
            "centralized training on pooled data sends no update: there is nothing to count. "
            "Federated runs (`fedmugrep train-federated`, `fedmugrep demo`) record the bytes "
            "each datasite uploads per round."
        )
    elif "history" in miss:
        s.missing = _missing_text(miss, "history")
    else:
        _draw(s, lambda: plots.bytes_per_round(inputs.history), _FIGURE_FILES["bytes"])
        if s.png is None:
            s.missing = (
                f"{inputs.run_dir / 'report.json'}: the history has no bytes_up. To produce it: "
                "re-run `fedmugrep demo`."
            )
        else:
            plan = rep.get("plan") if isinstance(rep.get("plan"), Mapping) else {}
            s.caption_extra = _bytes_ratio(inputs.history, plan.get("upload_rate"))
            s.caption = (
                "Bytes each agency datasite uploads per round with compression (one line style "
                "and marker per datasite, log scale) against the same update sent dense, without "
                "compression (dashed)." + s.caption_extra
            )
    return s


def _map_section(inputs: ReportInputs) -> _Section:
    """Section 4: the city map of predicted prices and test errors."""
    miss = inputs.missing
    s = _Section("map", "4. City map: predicted price level and test error")
    if "communities" in miss or "predictions" in miss:
        s.missing = " ".join(
            _missing_text(miss, k) for k in ("communities", "predictions") if k in miss
        )
    else:
        preds, comms = inputs.predictions, inputs.communities
        assert preds is not None and comms is not None
        known = preds["community"].isin(comms["community"])
        if not known.any():
            s.missing = (
                f"{inputs.run_dir / 'predictions.csv'}: no community matches "
                f"{inputs.run_dir / 'city' / 'communities.csv'}. To produce it: re-run "
                "`fedmugrep demo` so both come from the same city."
            )
        else:
            _draw(s, lambda: plots.city_map(comms, preds[known]), _FIGURE_FILES["map"])
            s.caption = (
                "Each dot is a community centre (longitude/latitude); its area grows with the "
                "number of test sales there; district labels sit at the centre of their "
                "communities. Left: median predicted price of the community's test sales. "
                "Right: mean absolute percentage error of the predicted median on those sales "
                "(colour scale from the 5th to the 95th percentile of communities). Hollow grey: no test sale."
            )
    return s


def _calibration_section(inputs: ReportInputs) -> _Section:
    """Section 5: predicted against actual prices with the 80 % intervals."""
    miss = inputs.missing
    s = _Section("calibration", "5. Predicted vs actual price with 80% intervals")
    if "predictions" in miss:
        s.missing = _missing_text(miss, "predictions")
    else:
        preds = inputs.predictions
        assert preds is not None
        _draw(s, lambda: plots.predicted_vs_actual(preds), _FIGURE_FILES["calibration"])
        cov = plots.coverage80(preds)
        s.caption = (
            f"Test sales (n = {len(preds)}): predicted median against the actual price, both "
            "on log scales; vertical bars are 80% prediction intervals (a random subset when "
            f"there are many). <b>Coverage: {100 * cov:.1f}%</b> of actual prices fall inside "
            "their 80% interval (a calibrated model gives about 80%)."
        )
    return s


def _sweep_section(inputs: ReportInputs) -> _Section:
    """Section 6: the privacy–utility sweep."""
    rep = inputs.report
    miss = inputs.missing
    s = _Section("sweep", "6. Privacy–utility trade-off")
    if "sweep" in miss:
        s.missing = _missing_text(miss, "sweep")
    else:
        sweep = inputs.sweep
        assert sweep is not None
        cen = rep.get("centralized")
        cen_mape = (
            float(cen["mape"]) if isinstance(cen, Mapping) and cen.get("mape") is not None else None
        )
        _draw(s, lambda: plots.privacy_utility(sweep, cen_mape), _FIGURE_FILES["sweep"])
        summ = plots.sweep_summary(sweep)
        rows = [
            [
                "∞ (no DP)" if math.isnan(r.epsilon) else f"{r.epsilon:g}",
                _pct(r.mean),
                _pct(r.std),
                f"{_pct(r.min)} – {_pct(r.max)}",
                str(int(r.n)),
            ]
            for r in summ.itertuples()
        ]
        s.extra_html = _table(["ε", "mean MAPE", "std", "range", "seeds"], rows, "num")
        s.caption = (
            "Test MAPE of federated training for each privacy budget ε per datasite (mean ± "
            "standard deviation over seeds; grey dots: single seeds)"
            + (
                ", against the centralized model trained on pooled data (dashed)"
                if cen_mape
                else ""
            )
            + ". Smaller ε means stronger privacy and more noise."
        )
    return s


# --------------------------------------------------------------------------- page

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d2330;background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:0 0 4px} h2{font-size:1.3em;margin:28px 0 10px;
border-bottom:2px solid #dde1e8;padding-bottom:4px} h3{font-size:1.05em;margin:18px 0 6px}
.sub{color:#5b6473;margin:0 0 18px}
section,.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 18px;
margin:14px 0}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.93em}
th,td{padding:5px 12px;border-bottom:1px solid #e7e9ee;text-align:left}
th{background:#f0f2f6;font-weight:600}
table.num td:not(:first-child),table.num th:not(:first-child){text-align:right;
font-variant-numeric:tabular-nums}
table.kv th{display:none} table.kv td:first-child{color:#5b6473}
.fed{font-weight:700} .floor{color:#5b6473;font-style:italic}
.ok{color:#1a7f37;font-weight:600} .bad{color:#c62828;font-weight:700}
img{max-width:100%;height:auto;display:block;margin:8px auto}
.caption{color:#3b4350;font-size:.95em}
.missing{background:#fff6e5;border-left:4px solid #f0a020;padding:8px 12px;margin:8px 0}
.file{font-size:.85em;color:#5b6473} nav a{margin-right:14px} code{font-size:.92em}
details{margin-top:6px} summary{cursor:pointer;color:#2a5db0}
"""


_HEADINGS = {
    "demo": "fed-MugRep federated appraisal report",
    "train-federated": "fed-MugRep federated appraisal report",
    "federation train": "fed-MugRep federated appraisal report (datasites by URL)",
    "train-central": "fed-MugRep appraisal report: centralized reference on pooled data",
}


def render_page(inputs: ReportInputs, sections: list[_Section], generated: str) -> str:
    """The HTML of the page (figures embedded as base64)."""
    esc = html.escape
    nav = " ".join(f'<a href="#{s.key}">{esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>fedmugrep report — {esc(inputs.run_dir.name or str(inputs.run_dir))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{_HEADINGS.get(inputs.kind, _HEADINGS['demo'])}</h1>",
        f'<p class="sub">Run folder <code>{esc(str(inputs.run_dir))}</code> · generated '
        f"{esc(generated)}</p>",
        '<div class="card"><h3>Test metrics</h3>',
        _metrics_table(inputs.report),
        "<h3>Privacy budget per datasite</h3>",
        _privacy_table(inputs),
        "<h3>Run</h3>",
        _run_table(inputs.report),
        "</div>",
        f"<nav>{nav}</nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{s.key}"><h2>{esc(s.title)}</h2>')
        if s.png is not None and s.file is not None:
            b64 = base64.b64encode(s.png).decode("ascii")
            parts.append(
                f'<img src="data:image/png;base64,{b64}" alt="{esc(s.title)}" '
                f'data-file="{esc(s.file)}">'
            )
            if s.caption:
                parts.append(f'<p class="caption">{s.caption}</p>')
            parts.append(s.extra_html)
            parts.append(
                f'<p class="file">Also saved as <a href="{esc(s.file)}">{esc(s.file)}</a></p>'
            )
        else:
            if s.caption:
                parts.append(f'<p class="caption">{s.caption}</p>')
            parts.append(f'<p class="missing">Not shown — {esc(s.missing or "no data")}</p>')
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir: Path, out: Path | None = None, sweep: Path | None = None) -> ReportResult:
    """Write ``index.html`` and one PNG per drawable figure for a run folder.

    Args:
        run_dir: the run folder (holding ``report.json``; see :mod:`fedmugrep.report.inputs`).
        out: output folder (default ``run_dir / "report"``); created if needed. PNGs of this
            report's figure names left there by an earlier report are removed when the figure
            cannot be drawn now, so the folder always matches the page.
        sweep: privacy-utility sweep file (default ``run_dir / "sweep.json"``).

    Returns:
        The page, the PNGs written, and the sections that could not be drawn.

    Raises:
        DataValidationError: ``run_dir`` does not exist or has no readable ``report.json``.
    """
    run_dir = Path(run_dir)
    inputs = load_inputs(run_dir, sweep=sweep)
    out_dir = Path(out) if out is not None else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(inputs)
    pngs: list[Path] = []
    for s in sections:
        if s.png is not None and s.file is not None:
            path = out_dir / s.file
            path.write_bytes(s.png)
            pngs.append(path)
    for _key, name in FIGURES:
        stale = out_dir / name
        if stale not in pngs and stale.exists():
            stale.unlink()
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    page = out_dir / "index.html"
    page.write_text(render_page(inputs, sections, generated), encoding="utf-8")
    missing = {s.key: s.missing for s in sections if s.png is None and s.missing}
    return ReportResult(html=page, pngs=pngs, missing=missing)
