"""The report's figures: one function per figure, each returning a :class:`matplotlib.figure.Figure`.

Figures are built with :class:`~matplotlib.figure.Figure` directly (no ``pyplot`` state, so
nothing leaks between calls and no display is needed); saving goes through the Agg canvas.
Inputs are the validated objects of :mod:`fedmugrep.report.inputs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fedmugrep.report.inputs import EpsilonCurve

__all__ = [
    "bytes_per_round",
    "city_map",
    "community_stats",
    "coverage80",
    "epsilon_spent",
    "format_bytes",
    "format_euros",
    "predicted_vs_actual",
    "privacy_utility",
    "private_releases",
    "site_colors",
    "site_styles",
    "sweep_summary",
    "training_curves",
]

_TITLE = 13
_LABEL = 11


def site_colors(sites: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per datasite (sorted names -> tab10), the same in every figure."""
    from matplotlib import colormaps  # deferred: loads matplotlib

    cmap = colormaps["tab10"]
    return {s: cmap(i % 10) for i, s in enumerate(sorted(sites))}


#: Line styles and markers of the datasites' series, in sorted-name order (never ``--``: a
#: dashed line is a cap or a reference in every figure).
_LINESTYLES: tuple[Any, ...] = ("-", "-.", ":", (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 1)))
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "h")


def site_styles(sites: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Matplotlib line properties per datasite: colour, line style and marker all differ, so
    two datasites whose series coincide stay distinguishable (colour alone is not enough
    once the lines lie on top of each other). Sorted names, the same in every figure."""
    colors = site_colors(sites)
    return {
        s: {
            "color": colors[s],
            "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
            "marker": _MARKERS[i % len(_MARKERS)],
        }
        for i, s in enumerate(sorted(sites))
    }


def _same_series(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], rel: float = 1e-6
) -> dict[str, str]:
    """``{site: earlier site}`` for every series identical (same x, same y within ``rel``)
    to a series of an earlier site in sorted order."""
    out: dict[str, str] = {}
    names = sorted(series)
    for i, s in enumerate(names):
        xs, ys = series[s]
        for t in names[:i]:
            if t in out:
                continue
            xt, yt = series[t]
            if len(xs) == len(xt) and np.allclose(xs, xt) and np.allclose(ys, yt, rtol=rel, atol=0):
                out[s] = t
                break
    return out


def _nested_marker(rank: int) -> dict[str, Any]:
    """Marker size and face of the ``rank``-th of several coinciding series: the first is
    drawn largest and filled, each later one smaller and hollow on top, so every marker of
    the group shows."""
    return {
        "markersize": max(3.5, 9.0 - 2.2 * rank),
        "markerfacecolor": None if rank == 0 else "white",
        "markeredgewidth": 1.2,
        "zorder": 3 + rank,
    }


def format_euros(value: float, _pos: object = None) -> str:
    """``1234567 -> "€1.23M"``, ``250000 -> "€250k"``."""
    a = abs(value)
    if a >= 1e6:
        return f"€{value / 1e6:.3g}M"
    if a >= 1e3:
        return f"€{value / 1e3:.3g}k"
    return f"€{value:.0f}"


def format_bytes(value: float, _pos: object = None) -> str:
    """Bytes with SI prefixes: ``20000 -> "20 kB"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=_TITLE)
    ax.set_xlabel(xlabel, fontsize=_LABEL)
    ax.set_ylabel(ylabel, fontsize=_LABEL)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=9.5)


def _integer_rounds(ax: Any, rounds: Sequence[float]) -> None:
    from matplotlib.ticker import MaxNLocator  # deferred: loads matplotlib

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    if rounds:
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)


# --------------------------------------------------------------------------- 1. training


def training_curves(history: Sequence[Mapping[str, Any]], unit: str = "round") -> Figure | None:
    """Training loss and validation MAE (log price) per round; ``None`` if neither exists.

    One panel per series present (training loss is absent from private runs). ``unit`` names
    the x axis (``"epoch"`` for centralized training).
    """
    series = []
    for key, title, ylabel, color in (
        ("train_loss", "Training loss", "loss (mean per training target)", "tab:blue"),
        (
            "val_mae_log",
            "Validation error",
            "validation MAE of log price",
            "tab:orange",
        ),
    ):
        pts = [
            (float(r["round"]), float(r[key]))
            for r in history
            if r.get(key) is not None and math.isfinite(float(r[key]))
        ]
        if pts:
            series.append((key, title, ylabel, color, pts))
    if not series:
        return None
    fig = Figure(figsize=(6.2 * len(series), 4.4), layout="constrained")
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (key, title, ylabel, color, pts) in zip(axes, series, strict=True):
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, "-o", color=color, markersize=3.5, linewidth=1.6, label=title.lower())
        if key == "val_mae_log":
            i = int(np.argmin(ys))
            ax.scatter(
                [xs[i]], [ys[i]], s=90, facecolors="none", edgecolors="black", zorder=5,
                label=f"best: {ys[i]:.4f} ({unit} {xs[i]:.0f})",
            )  # fmt: skip
            ax.legend(fontsize=9, loc="upper right")
        _style(ax, title, unit, ylabel)
        _integer_rounds(ax, xs)
    what = "Centralized training" if unit == "epoch" else "Federated training"
    if len(series) > 1:
        fig.suptitle(f"{what}, per {unit}", fontsize=_TITLE + 1)
    else:
        axes[0].set_title(f"{series[0][1]} per {unit} ({what.lower()})", fontsize=_TITLE)
    return fig


#: The released test metrics :func:`private_releases` shows, with their axis labels.
RELEASED_METRICS: tuple[tuple[str, str], ...] = (
    ("mape", "MAPE"),
    ("mae_log", "MAE of log price"),
    ("coverage80", "80% interval coverage"),
)


def private_releases(
    curves: Mapping[str, EpsilonCurve],
    released: Mapping[str, Any] | None,
    exact: Mapping[str, Any] | None,
) -> Figure | None:
    """What a private run releases, for the training section: the ε each datasite was charged
    in each round (from the per-round cumulative curves), and the noised test metrics the
    data scientist received (± one noise standard deviation) beside the data owners' exact
    ones when the report has them. ``None`` when there is neither."""
    per_round = {s: c for s, c in curves.items() if c.per_round and c.x}
    metrics = []
    if isinstance(released, Mapping):
        for key, label in RELEASED_METRICS:
            v = released.get(key)
            if v is None or not math.isfinite(float(v)):
                continue
            sd = released.get(f"{key}_noise_sd")
            ex = exact.get(key) if isinstance(exact, Mapping) else None
            metrics.append((label, float(v), None if sd is None else float(sd), ex))
    panels = int(bool(per_round)) + int(bool(metrics))
    if not panels:
        return None
    fig = Figure(figsize=(6.4 * panels, 4.6), layout="constrained")
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if per_round:
        ax = axes.pop(0)
        styles = site_styles(list(per_round))
        inc = {
            s: (c.x, tuple(np.diff(np.asarray(c.epsilon), prepend=0.0)))
            for s, c in per_round.items()
        }
        same = _same_series(inc)
        for s in sorted(inc):
            xs, ys = inc[s]
            group = sorted([t for t, f in same.items() if f == same.get(s, s)])
            rank = group.index(s) + 1 if s in same else 0
            label = s + (f" (same as {same[s]})" if s in same else "")
            ax.plot(xs, ys, **styles[s], **_nested_marker(rank), linewidth=1.6, label=label)
        _style(
            ax, "ε charged in each round", "round",
            "ε charged (first round: with the one-off releases)",
        )  # fmt: skip
        _integer_rounds(ax, [x for xs, _ in inc.values() for x in xs])
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=9, loc="upper right", framealpha=0.9)
    if metrics:
        ax = axes.pop(0)
        pos = np.arange(len(metrics), dtype=float)
        vals = [m[1] for m in metrics]
        sds = [m[2] if m[2] is not None else 0.0 for m in metrics]
        ax.errorbar(
            pos - 0.12, vals, yerr=sds, fmt="o", color="tab:purple", capsize=5, markersize=7,
            label="released to the data scientist (noised; bar: ± 1 noise sd)",
        )  # fmt: skip
        exacts = [
            (p + 0.12, float(m[3])) for p, m in zip(pos, metrics, strict=True) if m[3] is not None
        ]
        if exacts:
            ax.scatter(
                [e[0] for e in exacts], [e[1] for e in exacts], marker="D", s=45,
                color="tab:green", zorder=4, label="data owners' exact figure (never released)",
            )  # fmt: skip
        ax.axhline(0.0, color="0.4", linewidth=0.8)
        ax.set_xticks(pos, [m[0] for m in metrics])
        ax.set_xlim(-0.6, len(metrics) - 0.4)
        _style(ax, "Released test metrics (once, after training)", "", "value")
        ax.legend(fontsize=8.5, loc="upper right", framealpha=0.9)
    fig.suptitle("What this private run released", fontsize=_TITLE + 1)
    return fig


# --------------------------------------------------------------------------- 2. epsilon


def epsilon_spent(
    curves: Mapping[str, EpsilonCurve], privacy: Mapping[str, Mapping[str, Any]]
) -> Figure:
    """Cumulative epsilon per datasite with its cap as a dashed line of the same colour."""
    sites = sorted(set(curves) | {s for s, p in privacy.items() if p.get("cap") is not None})
    colors = site_colors(sites)
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    per_round = all(c.per_round for c in curves.values()) if curves else True
    caps = {s: privacy.get(s, {}).get("cap") for s in sites}
    cap_values = {float(c) for c in caps.values() if c is not None}
    shared_cap = len(cap_values) == 1 and all(c is not None for c in caps.values())
    after_label = "after the rounds: calibration and evaluation releases"
    after_x: list[float] = []
    styles = site_styles(sites)
    same = _same_series({s: (c.x, c.epsilon) for s, c in curves.items() if c.x})
    rank = {s: 0 for s in sites}
    for s, first in same.items():
        group = sorted([t for t, f in same.items() if f == first])
        rank[s] = group.index(s) + 1
    for s in sites:
        c = curves.get(s)
        if c is not None and c.x:
            final = privacy.get(s, {}).get("epsilon")
            final = float(final) if final is not None else c.epsilon[-1]
            style = dict(styles[s])
            if len(c.x) > 60:
                style["marker"] = None
            label = f"{s}: spent ({final:.3g} in all)"
            if s in same:
                label += f"; same curve as {same[s]}"
            ax.plot(
                c.x, c.epsilon, **style, **_nested_marker(rank[s]), linewidth=1.8, label=label,
                drawstyle="default" if per_round else "steps-post",
            )  # fmt: skip
            if per_round and final > c.epsilon[-1] + 1e-9:  # the releases after the last round
                step = c.x[-1] - c.x[-2] if len(c.x) > 1 else 1.0
                ax.plot(
                    [c.x[-1], c.x[-1] + step], [c.epsilon[-1], final], ":", color=colors[s],
                    linewidth=1.5,
                )  # fmt: skip
                nested = _nested_marker(rank[s])
                ax.plot(
                    [c.x[-1] + step], [final], "*", color=colors[s],
                    markersize=nested["markersize"] + 4, markerfacecolor=nested["markerfacecolor"],
                    zorder=nested["zorder"], label="_nolegend_",
                )  # fmt: skip
                after_x.append(c.x[-1] + step)
        cap = caps.get(s)
        if cap is not None and not shared_cap:
            ax.axhline(
                float(cap), color=colors[s], linestyle="--", linewidth=1.3,
                label=f"{s}: cap {float(cap):.3g}",
            )  # fmt: skip
    if shared_cap:
        cap = cap_values.pop()
        ax.axhline(
            cap, color="black", linestyle="--", linewidth=1.4,
            label=f"cap of every datasite: ε = {cap:.3g}",
        )  # fmt: skip
    deltas = {p.get("delta") for p in privacy.values() if p.get("delta") is not None}
    at = f" (at δ = {deltas.pop():.0e})" if len(deltas) == 1 else ""
    xlabel = "round" if per_round else "release number (charged ledger entries, in order)"
    _style(ax, f"Privacy budget spent per datasite{at}", xlabel, "cumulative ε spent")
    top = max(
        [float(c) for c in caps.values() if c is not None]
        + [max(c.epsilon) for c in curves.values() if c.epsilon]
        + [1e-3]
    )
    ax.set_ylim(0, top * 1.12)
    _integer_rounds(ax, [x for c in curves.values() for x in c.x] + after_x)
    handles, labels = ax.get_legend_handles_labels()
    if after_x:  # one entry for every datasite's star, drawn in that datasite's colour
        handles.insert(1, Line2D([], [], marker="*", linestyle="", color="0.35", markersize=10))
        labels.insert(1, after_label)
    ax.legend(handles, labels, fontsize=9, loc="lower right", framealpha=0.9)
    return fig


# --------------------------------------------------------------------------- 3. bytes


def bytes_per_round(history: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Bytes uploaded per round per datasite (compressed) against the dense size; ``None``
    when the history carries no byte counts."""
    rows = [r for r in history if isinstance(r.get("bytes_up"), Mapping) and r["bytes_up"]]
    if not rows:
        return None
    sites = sorted({s for r in rows for s in r["bytes_up"]})
    styles = site_styles(sites)
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    rounds = [float(r["round"]) for r in rows]
    ys_of = {s: [float(r["bytes_up"].get(s, np.nan)) for r in rows] for s in sites}
    same = _same_series({s: (rounds, ys) for s, ys in ys_of.items()})
    for s in sites:
        style = dict(styles[s])
        if len(rows) > 60:
            style["marker"] = None
        group = sorted([t for t, f in same.items() if f == same.get(s, s)])
        rank = group.index(s) + 1 if s in same else 0
        label = f"{s}: compressed upload" + (f"; same as {same[s]}" if s in same else "")
        ax.plot(
            rounds, ys_of[s], **style, **_nested_marker(rank), linewidth=1.8, label=label,
        )  # fmt: skip
    dense = [float(r["bytes_dense"]) if r.get("bytes_dense") else np.nan for r in rows]
    if any(np.isfinite(dense)):
        ax.plot(
            rounds, dense, color="black", linestyle="--", linewidth=1.6,
            label="without compression (dense update)",
        )  # fmt: skip
    ax.set_yscale("log")
    values = [v for r in rows for v in r["bytes_up"].values() if v] + [
        d for d in dense if np.isfinite(d)
    ]
    ax.set_ylim(min(values) / 2, max(values) * 2)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(format_bytes))
    ax.yaxis.set_minor_formatter(NullFormatter())
    _style(ax, "Bytes uploaded per datasite per round", "round", "bytes per round (log scale)")
    _integer_rounds(ax, rounds)
    ax.legend(fontsize=9, loc="best", framealpha=0.9)
    return fig


# --------------------------------------------------------------------------- 4. map


def community_stats(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per community: median predicted price, MAPE of the median, number of test sales.

    Returns:
        Frame indexed by community with ``pred_level``, ``mape``, ``n``.
    """
    ape = (predictions["pred_median"] - predictions["price"]).abs() / predictions["price"]
    frame = predictions.assign(ape=ape).groupby("community")
    return pd.DataFrame(
        {
            "pred_level": frame["pred_median"].median(),
            "mape": frame["ape"].mean(),
            "n": frame.size(),
        }
    )


def _error_norm(mape: pd.Series) -> Normalize:
    """Colour range of the error panel: 5th to 95th percentile, so a few outlying communities
    do not wash out the rest (they take the end colours)."""
    lo, hi = float(mape.quantile(0.05)), float(mape.quantile(0.95))
    if hi - lo < 1e-3:
        lo, hi = max(0.0, lo - 0.01), hi + 0.01
    return Normalize(vmin=lo, vmax=hi)


def city_map(communities: pd.DataFrame, predictions: pd.DataFrame) -> Figure:
    """Two map panels of the communities: predicted price level and test MAPE.

    Marker area grows with the number of test sales; communities without test sales are
    hollow grey circles; district names sit at the centroid of their communities.
    """
    stats = community_stats(predictions)
    comm = communities.merge(stats, left_on="community", right_index=True, how="left")
    has = comm["n"].fillna(0) > 0
    n = comm["n"].fillna(0).to_numpy()
    sizes = 30 + 170 * np.sqrt(n / max(n.max(), 1))
    fig = Figure(figsize=(14, 6.2), layout="constrained")
    axes = fig.subplots(1, 2)
    lat0 = float(comm["lat"].mean())
    err_norm = _error_norm(comm.loc[has, "mape"])
    err_digits = 1 if float(err_norm.vmax) - float(err_norm.vmin) < 0.08 else 0
    panels = (
        (
            "pred_level",
            "Predicted price level per community",
            "median predicted price (test sales)",
            "viridis",
            LogNorm(
                vmin=float(comm.loc[has, "pred_level"].min()),
                vmax=float(comm.loc[has, "pred_level"].max()) * 1.0001,
            ),
            FuncFormatter(format_euros),
        ),
        (
            "mape",
            "Test error per community",
            "mean absolute percentage error",
            "magma_r",
            err_norm,
            FuncFormatter(lambda v, _p: f"{100 * v:.{err_digits}f}%"),
        ),
    )
    for ax, (col, title, clabel, cmap, norm, fmt) in zip(axes, panels, strict=True):
        ax.scatter(
            comm.loc[~has, "lon"], comm.loc[~has, "lat"], s=30, facecolors="none",
            edgecolors="0.6", linewidths=0.8, label="no test sale",
        )  # fmt: skip
        sc = ax.scatter(
            comm.loc[has, "lon"], comm.loc[has, "lat"], c=comm.loc[has, col], s=sizes[has],
            cmap=cmap, norm=norm, edgecolors="0.25", linewidths=0.5,
        )  # fmt: skip
        cb = fig.colorbar(sc, ax=ax, shrink=0.85, pad=0.02, format=fmt)
        cb.set_label(clabel, fontsize=_LABEL)
        if isinstance(norm, LogNorm):
            cb.ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
            cb.ax.yaxis.set_major_formatter(fmt)
            cb.ax.yaxis.set_minor_formatter(NullFormatter())
        for district, grp in comm.groupby("district"):
            ax.text(
                grp["lon"].mean(), grp["lat"].mean(), str(district), fontsize=10,
                fontweight="bold", ha="center", va="center", color="black", zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.65},
            )  # fmt: skip
        _style(ax, title, "longitude (°E)", "latitude (°N)")
        ax.set_aspect(1.0 / math.cos(math.radians(lat0)), adjustable="datalim")
    handles = [
        Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="0.6",
               markersize=6, label="no test sale"),
    ]  # fmt: skip
    for k in sorted({int(v) for v in np.quantile(n[n > 0], [0.1, 0.5, 1.0])}) if has.any() else []:
        size = 30 + 170 * math.sqrt(k / max(n.max(), 1))
        handles.append(
            Line2D([], [], marker="o", linestyle="", markerfacecolor="0.75",
                   markeredgecolor="0.25", markersize=math.sqrt(size), label=f"{k} test sale{'s' if k > 1 else ''}")
        )  # fmt: skip
    axes[0].legend(handles=handles, fontsize=8.5, loc="lower left", framealpha=0.85)
    return fig


# --------------------------------------------------------------------------- 5. calibration


def coverage80(predictions: pd.DataFrame) -> float:
    """Share of test prices inside their predicted 80% interval."""
    inside = (predictions["price"] >= predictions["pred_lo80"]) & (
        predictions["price"] <= predictions["pred_hi80"]
    )
    return float(inside.mean())


def predicted_vs_actual(predictions: pd.DataFrame, *, max_bars: int = 400, seed: int = 0) -> Figure:
    """Predicted median against actual price (log-log) with 80% intervals and the diagonal.

    Every sale is a dot; at most ``max_bars`` sales (a fixed random subset) also draw their
    interval as a vertical bar, so large test sets stay readable.
    """
    p = predictions
    inside = (p["price"] >= p["pred_lo80"]) & (p["price"] <= p["pred_hi80"])
    cov = float(inside.mean())
    fig = Figure(figsize=(7.6, 7.0), layout="constrained")
    ax = fig.add_subplot()
    rng = np.random.default_rng(seed)
    bars = np.zeros(len(p), dtype=bool)
    bars[rng.choice(len(p), size=min(max_bars, len(p)), replace=False)] = True
    for mask, color, label in (
        (inside.to_numpy(), "tab:blue", "actual price inside the 80% interval"),
        (~inside.to_numpy(), "tab:red", "actual price outside the 80% interval"),
    ):
        sub = p[mask & bars]
        ax.vlines(
            sub["price"], sub["pred_lo80"], sub["pred_hi80"], color=color, alpha=0.25,
            linewidth=0.9,
        )  # fmt: skip
        sub = p[mask]
        ax.scatter(
            sub["price"], sub["pred_median"], s=9, color=color, alpha=0.6, linewidths=0,
            label=f"{label} ({mask.sum()})",
        )  # fmt: skip
    lo = float(min(p["price"].min(), p["pred_lo80"].min()))
    hi = float(max(p["price"].max(), p["pred_hi80"].max()))
    lo, hi = lo / 1.1, hi * 1.1
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1.2, label="perfect prediction (y = x)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(format_euros))
        axis.set_minor_formatter(NullFormatter())
    ape = ((p["pred_median"] - p["price"]).abs() / p["price"]).mean()
    _style(
        ax,
        "Predicted vs actual price (test sales)",
        "actual sale price (log scale)",
        "predicted median price (log scale)",
    )
    ax.text(
        0.98, 0.03,
        f"80% interval coverage: {100 * cov:.1f}% (target 80%)\nMAPE: {100 * ape:.1f}%   "
        f"n = {len(p)}\nbars: 80% intervals of {int(bars.sum())} sales",
        transform=ax.transAxes, ha="right", va="bottom", fontsize=10,
        bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"},
    )  # fmt: skip
    ax.legend(fontsize=9, loc="upper left", framealpha=0.9)
    return fig


# --------------------------------------------------------------------------- 6. sweep


def sweep_summary(sweep: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean, standard deviation, min, max and count of MAPE per epsilon (``NaN`` = no privacy).

    Returns:
        Frame with columns ``epsilon, mean, std, min, max, n``, finite epsilons ascending,
        then the no-privacy row.
    """
    frame = pd.DataFrame(list(sweep))
    frame["epsilon"] = frame["epsilon"].astype(float)
    g = frame.groupby(frame["epsilon"].fillna(np.inf))["mape"]
    out = pd.DataFrame(
        {
            "mean": g.mean(),
            "std": g.std(ddof=1).fillna(0.0),
            "min": g.min(),
            "max": g.max(),
            "n": g.size(),
        }
    )
    out.index.name = "epsilon"
    out = out.sort_index().reset_index()
    out["epsilon"] = out["epsilon"].replace(np.inf, np.nan)
    return out


def privacy_utility(sweep: Sequence[Mapping[str, Any]], central_mape: float | None) -> Figure:
    """Test MAPE against the epsilon cap (log x): mean ± standard deviation over seeds, each
    seed as a faint dot; the no-privacy runs at the right edge; centralized MAPE as a line."""
    summ = sweep_summary(sweep)
    finite = summ[summ["epsilon"].notna()]
    nopriv = summ[summ["epsilon"].isna()]
    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    eps_max = float(finite["epsilon"].max()) if len(finite) else 1.0
    eps_min = float(finite["epsilon"].min()) if len(finite) else 1.0
    x_nopriv = eps_max * 4
    points = pd.DataFrame(list(sweep))
    points["x"] = points["epsilon"].astype(float).fillna(x_nopriv)
    ax.scatter(
        points["x"], 100 * points["mape"], s=16, color="0.55", alpha=0.7, zorder=2,
        label="one seed",
    )  # fmt: skip
    if len(finite):
        ax.errorbar(
            finite["epsilon"], 100 * finite["mean"], yerr=100 * finite["std"], fmt="-o",
            color="tab:blue", capsize=4, linewidth=1.8, markersize=6, zorder=3,
            label="federated with DP: mean ± std over seeds",
        )  # fmt: skip
    if len(nopriv):
        row = nopriv.iloc[0]
        ax.errorbar(
            [x_nopriv], [100 * row["mean"]], yerr=[100 * row["std"]], fmt="D",
            color="tab:green", capsize=4, markersize=7, zorder=3,
            label="federated without DP (ε = ∞)",
        )  # fmt: skip
    if central_mape is not None:
        ax.axhline(
            100 * central_mape, color="black", linestyle="--", linewidth=1.3,
            label=f"centralized, pooled data: {100 * central_mape:.1f}%",
        )  # fmt: skip
    ax.set_xscale("log")
    ticks = sorted(set(finite["epsilon"].tolist()))
    labels = [f"{t:g}" for t in ticks]
    if len(nopriv):
        ticks.append(x_nopriv)
        labels.append("∞\n(no DP)")
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(eps_min / 1.6, (x_nopriv if len(nopriv) else eps_max) * 1.6)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0f}%"))
    _style(
        ax,
        "Privacy–utility trade-off",
        "privacy budget ε per datasite (log scale; smaller = more private)",
        "test MAPE",
    )
    ax.legend(fontsize=9, loc="upper right", framealpha=0.9)
    return fig
