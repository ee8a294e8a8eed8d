"""``fedmugrep report``: a self-contained HTML page (plus PNGs) describing one run folder.

:func:`write_report` reads ``RUN_DIR/report.json`` and the optional ``predictions.csv``,
``city/communities.csv``, ``sweep.json`` and datasite ledgers, draws one figure per section
(:mod:`fedmugrep.report.plots`) and writes ``index.html`` with the figures embedded and
saved as PNG files next to it (:mod:`fedmugrep.report.html`).
"""

from __future__ import annotations

from fedmugrep.report.html import FIGURES, ReportResult, write_report
from fedmugrep.report.inputs import EpsilonCurve, Missing, ReportInputs, load_inputs

__all__ = [
    "FIGURES",
    "EpsilonCurve",
    "Missing",
    "ReportInputs",
    "ReportResult",
    "load_inputs",
    "write_report",
]
