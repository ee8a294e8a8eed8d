"""The user documentation matches the code and the committed measurements.

Links resolve inside the repository, the docs speak of the product (no development history),
the privacy table of ``docs/FEDERATION.md`` is what the review sheet computes for the default
plan, and the accuracy figures of the README and ``docs/FEDERATION.md`` are the ones in
``benchmarks/results/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import mean

import pytest

from fedmugrep.federation.admission import release_schedule, transaction_contract
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "docs" / "ARCHITECTURE.md",
    ROOT / "docs" / "FEDERATION.md",
    ROOT / "benchmarks" / "README.md",
    ROOT / "datasites" / "README.md",
]
FEDERATION = ROOT / "docs" / "FEDERATION.md"


def _links(markdown: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", markdown)


def test_the_link_pattern_finds_the_readmes_links() -> None:
    links = _links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {"docs/ARCHITECTURE.md", "docs/FEDERATION.md", "benchmarks/README.md"} <= set(links)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for link in _links(text):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = (doc.parent / link.split("#")[0]).resolve()
        assert target.exists(), f"{doc.name}: link {link} points at nothing"
        assert ROOT in target.parents or target == ROOT, f"{doc.name}: {link} leaves the repo"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_of_the_product_not_its_history(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for pattern in (
        r"\bissue #?\d+",
        r"(?<![\w&])#\d{1,3}\b",  # issue references
        r"\bthis pass\b",
        r"\bborrowed\b",
        r"\bnot re-?run\b",
        r"intermediate plan",
        r"DESIGN\.md",
        r"\[built\]",
        r"\bcommit [0-9a-f]{7}",
        r"final commit",
    ):
        hit = re.search(pattern, text, flags=re.I)
        assert hit is None, f"{doc.name}: {hit.group(0)!r} ({pattern})"


def _default_plan() -> FederationPlan:
    return FederationPlan(rounds=30, privacy=PrivacyPlan.for_epsilon(8.0, region_epsilon=8.0))


def test_federation_privacy_table_is_what_the_datasite_computes() -> None:
    plan = _default_plan()
    text = FEDERATION.read_text(encoding="utf-8")
    table = text[text.index("| release | how often |") :]
    table = table[: table.index("\n\n")]
    rows = {
        r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
        for r in table.splitlines()[2:]
    }
    schedule = release_schedule(plan, role="transaction", n_communities=60)
    assert len(schedule) == 5
    for release in schedule:
        key = release.name  # the doc names each release as the review sheet does
        how_often, _mech, sensitivity, _noise, eps = rows[key]
        assert int(how_often) == release.count, key
        assert sensitivity.startswith(f"{release.sensitivity:.4g}"), (key, release.sensitivity)
        assert abs(float(eps) - release.epsilon) <= 0.006, (key, release.epsilon)
    total = transaction_contract(plan).projected_epsilon
    assert f"**{total:.4g}**" in rows["**total per agency**"][-1]
    nm = plan.noise_multiplier()
    assert f"noise multiplier {nm:.3g}" in rows["clipped gradient sum (theta, z) jointly"][3]
    (region,) = release_schedule(plan, role="region", n_communities=60)
    row = rows["region representations z (region datasite)"]
    assert int(row[0]) == region.count and row[2].startswith(f"{region.sensitivity:.4g}")


def _accuracy() -> dict[str, float]:
    runs = json.loads((ROOT / "benchmarks" / "results" / "accuracy.json").read_text())["runs"]
    by: dict[str, list[float]] = {}
    for r in runs:
        by.setdefault(r["config"], []).append(r["mape"])
    return {k: mean(v) for k, v in by.items()}


def test_accuracy_figures_in_the_docs_are_the_committed_results() -> None:
    acc = _accuracy()
    central, nopriv, eps8 = acc["central"], acc["no-privacy"], acc["eps=8"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    federation = FEDERATION.read_text(encoding="utf-8")
    bench = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    for text in (readme, federation, bench):
        assert f"{central:.4f}" in text
        assert f"{nopriv:.4f}" in text
        assert f"{eps8:.4f}" in text
    assert f"{eps8 / central:.3f} ×" in readme
    assert f"({eps8 / central:.2f} ×)" in federation
    assert f"| {eps8 / central:.3f} × | ≤ 1.25 × ✔ |" in bench


def test_the_module_paths_architecture_names_exist() -> None:
    """Every ``module/file.py`` or ``folder/`` the architecture map names is in the package (or,
    for tests and benchmarks, in the repository)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`([a-z_]+/[a-z_/]*(?:\.py)?)`", text))
    assert len(paths) > 20, paths  # the pattern sees them
    package = ROOT / "plugin" / "fedmugrep"
    missing = sorted(p for p in paths if not (package / p).exists() and not (ROOT / p).exists())
    assert missing == []
