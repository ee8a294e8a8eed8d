"""Property-based fuzzing of the three loaders with mutated CSV files.

Start from a small valid table, mutate it (a bad cell of a known kind, a structural change, or
arbitrary text in any cell), write it with the ``csv`` module and load it. Every outcome must be
either a fully validated frame or a :class:`~fedmugrep.errors.DataValidationError` whose message
names the file and, when a cell is at fault, its 1-based data row and column. Any other exception
(pandas, numpy, csv, UnicodeError...) escapes ``pytest.raises`` and fails the test.

Cases: 200 + 120 + 120 + 150 + 40 = 630 per run (hypothesis, ``deadline=None``, no database).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmugrep.data.loading import load_communities, load_mobility, load_transactions
from fedmugrep.errors import DataValidationError

pytestmark = pytest.mark.slow


def fuzz(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


TX_HEADER = ["transaction_id", "date", "lat", "lon", "price", "district", "community", "area"]
TX_ROWS = [
    ["T-0001", "2021-01-04", "48.85", "2.35", "350000", "D1", "C1", "61.5"],
    ["T-0002", "2021-02-11", "48.86", "2.36", "412000.5", "D1", "C2", "70"],
    ["T-0003", "2021-03-15", "48.84", "2.30", "289000", "D2", "C3", "48"],
    ["T-0004", "2021-04-01", "48.83", "2.31", "505000", "D2", "C3", "88"],
    ["T-0005", "2021-05-20", "48.87", "2.40", "199000", "D1", "C1", "33"],
]
COMM_HEADER = ["community", "district", "lat", "lon", "population", "income_index"]
COMM_ROWS = [
    ["C1", "D1", "48.85", "2.35", "6000", "1.1"],
    ["C2", "D1", "48.86", "2.36", "7200", "0.9"],
    ["C3", "D2", "48.84", "2.30", "5100", ""],
    ["C4", "D2", "48.83", "2.31", "4000", "1.3"],
]
MOB_HEADER = ["src", "dst", "flow"]
MOB_ROWS = [
    ["C1", "C2", "120"],
    ["C2", "C1", "80.5"],
    ["C1", "C3", "0"],
    ["C3", "C4", "15"],
]

# values that must be refused in a column, whatever the rest of the file says
BAD_NUMBER = [
    "abc",
    "1e400",
    "-1e400",
    "inf",
    "-Infinity",
    "350 000",
    "€350000",
    "1,5",
    "0x1A",
    "--3",
]
BAD_CELLS: dict[str, dict[str, list[str]]] = {
    "transactions": {
        "transaction_id": [""],
        "date": [
            "2021-13-01",
            "2021-02-30",
            "yesterday",
            "",
            "NaN",
            "2021-03-15T25:00",
            "2021/3/x",
        ],
        "lat": [*BAD_NUMBER, "", "nan", "91", "-90.0001", "1e9"],
        "lon": [*BAD_NUMBER, "", "NULL", "180.5", "-1000"],
        "price": [*BAD_NUMBER, "", "N/A", "0", "-1", "-0.01", "-1e308", "0.0"],
        "district": ["", "  "],
        "community": [""],
    },
    "communities": {
        "community": [""],
        "district": [""],
        "lat": [*BAD_NUMBER, "", "90.1"],
        "lon": [*BAD_NUMBER, "", "-181"],
        "population": ["abc", "inf", "-inf", "1e999", "12 people", "1.2.3"],
        "income_index": ["high", "Infinity", "1e400"],
    },
    "mobility": {
        "src": ["", "C9"],
        "dst": ["", "Cx"],
        "flow": [*BAD_NUMBER, "", "-1", "-0.5", "nan"],
    },
}
TABLES = {
    "transactions": (TX_HEADER, TX_ROWS),
    "communities": (COMM_HEADER, COMM_ROWS),
    "mobility": (MOB_HEADER, MOB_ROWS),
}


@dataclass
class Case:
    """A mutated file and what the loader must do with it."""

    header: list[str]
    rows: list[list[str]]
    row: int | None = None  # 1-based data row the error must name (None: file-wide or valid)
    column: str | None = None
    valid: bool = False  # must load
    raw: bytes | None = None  # written as is instead of header + rows
    blank_lines: bool = False


def render(case: Case) -> bytes:
    if case.raw is not None:
        return case.raw
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # quotes cells holding \r or \n
    w.writerow(case.header)
    for row in case.rows:
        if case.blank_lines:
            buf.write("\n")  # blank lines are not counted as rows
        w.writerow(row)
    return buf.getvalue().encode("utf-8")


def load(kind: str, path: Path) -> pd.DataFrame:
    if kind == "transactions":
        return load_transactions(path)
    if kind == "communities":
        return load_communities(path)
    comms = pd.DataFrame({"community": [r[0] for r in COMM_ROWS]})
    return load_mobility(path, comms)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzcsv")


def check(kind: str, case: Case, folder: Path) -> pd.DataFrame | DataValidationError:
    """Load ``case``; assert the outcome is a valid frame or a well-addressed error."""
    path = folder / f"{kind}.csv"
    path.write_bytes(render(case))
    if case.valid:
        return load(kind, path)
    with pytest.raises(DataValidationError) as info:  # any other exception fails the test
        load(kind, path)
    err = info.value
    message = str(err)
    assert err.file == str(path) and f"file {path}" in message, message
    assert "Fix:" in message and err.fix, message
    if case.row is not None:
        assert err.row == case.row and f"row {case.row}" in message, message
    if case.column is not None:
        assert err.column == case.column and f"column '{case.column}'" in message, message
    return err


# ============================================================================ strategies
@st.composite
def bad_cell(draw: st.DrawFn, kind: str) -> Case:
    """One cell set to a value its column refuses; the error must name that row and column."""
    header, rows = TABLES[kind]
    column = draw(st.sampled_from(sorted(BAD_CELLS[kind])))
    value = draw(st.sampled_from(BAD_CELLS[kind][column]))
    padding = draw(st.sampled_from(["", " ", "  ", "\t"]))
    r = draw(st.integers(0, len(rows) - 1))
    new = [list(x) for x in rows]
    new[r][header.index(column)] = padding + value + padding
    if kind == "mobility" and column in ("src", "dst") and value.strip() == "":
        pass  # empty id
    return Case(header, new, row=r + 1, column=column, blank_lines=draw(st.booleans()))


@st.composite
def duplicate_key(draw: st.DrawFn, kind: str) -> Case:
    """A unique key repeated: the error names the *later* row."""
    header, rows = TABLES[kind]
    i, j = sorted(
        draw(st.lists(st.integers(0, len(rows) - 1), min_size=2, max_size=2, unique=True))
    )
    new = [list(x) for x in rows]
    if kind == "mobility":
        new[j][0], new[j][1] = new[i][0], new[i][1]
        return Case(header, new, row=j + 1, column="dst")
    new[j][0] = " " + new[i][0]  # stripped before comparing
    return Case(header, new, row=j + 1, column=header[0])


REQUIRED = {
    "transactions": ["transaction_id", "date", "lat", "lon", "price"],
    "communities": ["community"],
    "mobility": ["src", "dst", "flow"],
}


@st.composite
def structural(draw: st.DrawFn, kind: str) -> Case:
    """File-level damage: missing columns, empty files, ragged rows, bad headers, bad bytes."""
    header, rows = TABLES[kind]
    what = draw(
        st.sampled_from(
            [
                "drop",
                "empty",
                "header_only",
                "ragged",
                "dup_header",
                "unnamed",
                "latin1",
                "binary",
                "whitespace",
            ]
            + (["lat_only"] if kind == "communities" else [])
            + (["extra_col"] if kind == "mobility" else [])
        )
    )
    if what == "drop":
        col = draw(st.sampled_from(REQUIRED[kind]))
        k = header.index(col)
        return Case([h for h in header if h != col], [r[:k] + r[k + 1 :] for r in rows], column=col)
    if what == "lat_only":
        k = header.index("lon")
        return Case(
            [h for h in header if h != "lon"], [r[:k] + r[k + 1 :] for r in rows], column="lon"
        )
    if what == "extra_col":
        return Case([*header, "note"], [[*r, "x"] for r in rows], column="note")
    if what == "empty":
        return Case(
            header, rows, raw=draw(st.sampled_from([b"", b"\n\n", b"\xef\xbb\xbf", b" , ,\n"]))
        )
    if what == "header_only":
        return Case(header, [])
    if what == "ragged":
        r = draw(st.integers(0, len(rows) - 1))
        new = [list(x) for x in rows]
        new[r] = new[r] + ["extra"] if draw(st.booleans()) else new[r][:-1]
        return Case(header, new, row=r + 1)
    if what == "dup_header":
        k = draw(st.integers(1, len(header) - 1))
        return Case([*header[:k], header[0], *header[k + 1 :]], rows, column=header[0])
    if what == "unnamed":
        k = draw(st.integers(0, len(header) - 1))
        return Case([*header[:k], "", *header[k + 1 :]], rows)
    if what == "latin1":
        text = render(Case(header, rows)).decode("utf-8")
        return Case(header, rows, raw=text.replace(rows[0][0], rows[0][0] + "é").encode("latin-1"))
    if what == "binary":
        return Case(
            header, rows, raw=draw(st.binary(min_size=1, max_size=64)).replace(b"\n", b"\xff")
        )
    # whitespace only
    return Case(header, rows, raw=b"   \n\t\n  \n")


@st.composite
def still_valid(draw: st.DrawFn, kind: str) -> Case:
    """Mutations that keep the file valid: BOM, blank lines, padding, junk in a free column."""
    header, rows = TABLES[kind]
    new = [list(x) for x in rows]
    case = Case(header, new, valid=True, blank_lines=draw(st.booleans()))
    if kind == "transactions":
        junk = draw(st.text(max_size=20))
        r = draw(st.integers(0, len(rows) - 1))
        new[r][header.index("area")] = junk
        new[0][header.index("price")] = draw(st.sampled_from(["1e300", "0.0001", "9" * 30]))
    elif kind == "communities":
        new[1][header.index("population")] = draw(st.sampled_from(["", "NA", "1e300", "-5"]))
    else:
        new[0][2] = draw(st.sampled_from(["1e300", "0", " 7 "]))
    if draw(st.booleans()):
        case.raw = b"\xef\xbb\xbf" + render(case)
    return case


# ============================================================================ tests
@fuzz(200)
@given(kind=st.sampled_from(sorted(TABLES)), data=st.data())
def test_bad_cells_name_file_row_and_column(kind: str, data: st.DataObject, folder: Path) -> None:
    case = data.draw(st.one_of(bad_cell(kind), duplicate_key(kind)))
    check(kind, case, folder)


@fuzz(120)
@given(kind=st.sampled_from(sorted(TABLES)), data=st.data())
def test_structural_damage_is_a_data_validation_error(
    kind: str, data: st.DataObject, folder: Path
) -> None:
    check(kind, data.draw(structural(kind)), folder)


@fuzz(120)
@given(kind=st.sampled_from(sorted(TABLES)), data=st.data())
def test_valid_variants_load(kind: str, data: st.DataObject, folder: Path) -> None:
    case = data.draw(still_valid(kind))
    df = check(kind, case, folder)
    assert isinstance(df, pd.DataFrame) and len(df) == len(case.rows)
    assert df.attrs["kind"] == kind
    if kind == "transactions":
        assert (df["price"] > 0).all() and np.isfinite(df["price"]).all()
        assert df["transaction_id"].is_unique
    if kind == "mobility":
        assert (df["flow"] >= 0).all()


CHECKERS: dict[str, dict[str, Callable[[object], bool]]] = {
    "transactions": {
        "price": lambda v: math.isfinite(v) and v > 0,
        "lat": lambda v: -90 <= v <= 90,
        "lon": lambda v: -180 <= v <= 180,
    },
    "communities": {},
    "mobility": {"flow": lambda v: math.isfinite(v) and v >= 0},
}


@fuzz(150)
@given(
    kind=st.sampled_from(sorted(TABLES)),
    junk=st.one_of(
        st.text(max_size=25),
        st.text(alphabet=st.characters(categories=["Nd", "No", "Zs", "Sc", "Pd"]), max_size=10),
        st.floats().map(repr),
        st.integers().map(str),
        st.sampled_from(["\ufeff1", "１２３", "٣", "1_000", "+5", "1e-400", "0e0", "-0"]),
    ),
    data=st.data(),
)
def test_arbitrary_text_in_any_cell(
    kind: str, junk: str, data: st.DataObject, folder: Path
) -> None:
    """Any text in any one cell: loads with a schema-conforming value, or an error at that cell
    (or a file-wide one, e.g. for a NUL byte the csv module refuses)."""
    header, rows = TABLES[kind]
    r = data.draw(st.integers(0, len(rows) - 1))
    c = data.draw(st.integers(0, len(header) - 1))
    new = [list(x) for x in rows]
    new[r][c] = junk
    path = folder / f"{kind}.csv"
    path.write_bytes(render(Case(header, new)))
    try:
        df = load(kind, path)
    except DataValidationError as err:
        message = str(err)
        assert err.file == str(path) and f"file {path}" in message
        if err.row is not None:
            duplicated = "duplicated" in message  # junk equal to another row's key
            assert err.row == r + 1 or duplicated, message
            assert err.column == header[c] or (duplicated and kind == "mobility"), message
            assert f"row {err.row}" in message and f"column '{err.column}'" in message
        return
    assert len(df) == len(rows)
    col = header[c]
    check_value = CHECKERS[kind].get(col)
    if check_value is not None:
        assert check_value(float(df[col].iloc[r])), (col, junk, df[col].iloc[r])
    if col == "date":
        assert pd.notna(df["date"].iloc[r])
    if col in ("transaction_id", "community", "src", "dst") and kind != "communities":
        assert str(df[col].iloc[r]) != ""


@fuzz(40)
@given(kind=st.sampled_from(sorted(TABLES)), n=st.integers(2, 400), data=st.data())
def test_many_problems_report_the_first_in_reading_order(
    kind: str, n: int, data: st.DataObject, folder: Path
) -> None:
    """Long files with several bad cells: the error is about the first bad cell (row, then
    column position), whatever the number of problems."""
    header, rows = TABLES[kind]
    base = [list(rows[i % len(rows)]) for i in range(n)]
    for i, row in enumerate(base):  # keep unique keys unique
        if kind != "mobility":
            row[0] = f"K{i}"
        else:
            row[0], row[1] = "C1", "C2"
    if kind == "mobility":  # pairs must be unique: use a valid set of communities and vary flows
        base = [["C1", "C2", "1"]] + [
            [f"C{1 + i % 4}", f"C{1 + (i + 1) % 4}", "1"] for i in range(1, 4)
        ]
        n = len(base)
    bad = data.draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.sampled_from(sorted(BAD_CELLS[kind]))),
            min_size=1,
            max_size=12,
        )
    )
    for r, col in bad:
        value = BAD_CELLS[kind][col][0]
        base[r][header.index(col)] = value if value else ""
    first_r, first_col = min(bad, key=lambda rc: (rc[0], header.index(rc[1])))
    # an emptied key can duplicate nothing, so the first problem is the first bad cell
    err = check(kind, Case(header, base, row=first_r + 1, column=first_col), folder)
    assert isinstance(err, DataValidationError)
    assert len(err.problems) >= 1  # type: ignore[attr-defined]
