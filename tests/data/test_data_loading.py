"""Loaders: happy paths and one bad file per validation rule (file, row, column and fix named)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedmugrep.data.loading import (
    MAX_LISTED,
    load_communities,
    load_mobility,
    load_transactions,
)
from fedmugrep.errors import ConfigError, DataValidationError

HEADER = "transaction_id,date,lat,lon,price"
GOOD_ROWS = [
    "t1,2021-01-03,48.80,2.30,300000",
    "t2,2021-02-03,48.81,2.31,350000",
    "t3,2021-03-03,48.82,2.32,410000",
]


def write(tmp_path: Path, text: str, name: str = "tx.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def tx_file(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "tx.csv") -> Path:
    return write(tmp_path, "\n".join([header, *rows]) + "\n", name)


def expect(
    loader, path: Path, *, row: int | None, column: str | None, words: tuple[str, ...] = ()
) -> DataValidationError:
    """Load ``path`` and check the error names file, row and column and carries a fix."""
    with pytest.raises(DataValidationError) as info:
        loader(path)
    err = info.value
    msg = str(err)
    assert err.file == str(path) and str(path) in msg
    assert err.row == row
    assert err.column == column
    if row is not None:
        assert f"row {row}" in msg
    if column is not None:
        assert f"column '{column}'" in msg
    assert "Fix:" in msg and len(err.fix) > 10
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return err


# --------------------------------------------------------------------------- happy paths


def test_load_transactions_happy_path_types_and_order(tmp_path: Path) -> None:
    path = tx_file(
        tmp_path,
        [
            " t2 ,2021-02-03T10:30:00,48.81,2.31,350000.5,55.5,house,3,yes",
            "t1,2021-01-03,48.80,2.30,300000,NA,apartment,2,no",
            "t3,2021-03-03,48.82,-2.32,1e6,80,,4,",
        ],
        header=HEADER + ",area_m2,type,rooms,parking",
    )
    df = load_transactions(str(path))
    assert list(df.columns) == [*HEADER.split(","), "area_m2", "type", "rooms", "parking"]
    assert df["transaction_id"].tolist() == ["t2", "t1", "t3"]  # file order, stripped
    assert df["date"].dtype == np.dtype("datetime64[ns]")
    assert df["date"].tolist() == [
        pd.Timestamp(d) for d in ("2021-02-03", "2021-01-03", "2021-03-03")
    ]
    for c in ("lat", "lon", "price", "area_m2"):
        assert df[c].dtype == np.float64
    assert df["price"].tolist() == [350000.5, 300000.0, 1e6]
    assert np.isnan(df.loc[1, "area_m2"])
    assert df["rooms"].dtype == np.int64
    assert df["type"].tolist()[:2] == ["house", "apartment"] and pd.isna(df.loc[2, "type"])
    assert isinstance(df.index, pd.RangeIndex)
    assert df.attrs == {"source": str(path), "kind": "transactions"}


def test_load_transactions_keeps_optional_region_columns_as_str(tmp_path: Path) -> None:
    path = tx_file(
        tmp_path,
        ["1,2021-01-03,48.8,2.3,3,7,12", "2,2021-01-04,48.8,2.3,3,7,13"],
        header=HEADER + ",district,community",
    )
    df = load_transactions(path)
    assert df["transaction_id"].tolist() == ["1", "2"]
    assert df["district"].tolist() == ["7", "7"]
    assert df["community"].tolist() == ["12", "13"]


def test_timezone_offsets_keep_the_local_date(tmp_path: Path) -> None:
    path = tx_file(
        tmp_path,
        ["a,2021-01-03T23:30:00+02:00,1,1,1", "b,2021-01-04T00:30:00+02:00,1,1,1"],
    )
    df = load_transactions(path)
    assert df["date"].tolist() == [pd.Timestamp("2021-01-03"), pd.Timestamp("2021-01-04")]


def test_parquet_matches_csv(tmp_path: Path) -> None:
    csv_path = tx_file(tmp_path, GOOD_ROWS)
    from_csv = load_transactions(csv_path)
    frame = pd.DataFrame(
        {
            "transaction_id": ["t1", "t2", "t3"],
            "date": pd.to_datetime(["2021-01-03", "2021-02-03", "2021-03-03"]),
            "lat": [48.80, 48.81, 48.82],
            "lon": [2.30, 2.31, 2.32],
            "price": [300000, 350000, 410000],
        }
    )
    pq = tmp_path / "tx.parquet"
    frame.to_parquet(pq, index=False)
    from_pq = load_transactions(pq)
    pd.testing.assert_frame_equal(from_pq, from_csv)


def test_parquet_int_ids_and_saved_index_become_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "transaction_id": [10, 11],
            "date": ["2021-01-03", "2021-01-04"],
            "lat": [1.0, 2.0],
            "lon": [1.0, 2.0],
            "price": [5.0, 6.0],
        }
    ).set_index("transaction_id")
    pq = tmp_path / "tx.PARQUET"
    frame.to_parquet(pq)
    df = load_transactions(pq)
    assert df["transaction_id"].tolist() == ["10", "11"]
    assert df["date"].dtype == np.dtype("datetime64[ns]")


def test_load_communities_and_mobility_happy_path(tmp_path: Path) -> None:
    cpath = write(
        tmp_path,
        "community,district,lat,lon,poi,income\nA,D1,48.8,2.3,3,\nB,D1,48.9,2.4,5,1.5\n",
        "communities.csv",
    )
    comm = load_communities(cpath)
    assert comm["community"].tolist() == ["A", "B"]
    assert comm["poi"].dtype == np.float64 and np.isnan(comm.loc[0, "income"])
    mpath = write(tmp_path, "src,dst,flow\nA,B,2.5\nB,A,0\n", "mobility.csv")
    mob = load_mobility(mpath, comm)
    assert mob["flow"].tolist() == [2.5, 0.0]
    assert mob["src"].tolist() == ["A", "B"]
    assert mob.attrs["kind"] == "mobility"


def test_communities_without_coordinates_load(tmp_path: Path) -> None:
    path = write(tmp_path, "community,x\nA,1\n", "communities.csv")
    assert list(load_communities(path).columns) == ["community", "x"]


# --------------------------------------------------------------------------- file-level rules


def test_missing_file(tmp_path: Path) -> None:
    expect(load_transactions, tmp_path / "nope.csv", row=None, column=None, words=("not found",))


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "\n", "tx.xlsx")
    expect(load_transactions, path, row=None, column=None, words=("unsupported", ".parquet"))


def test_directory_is_rejected(tmp_path: Path) -> None:
    d = tmp_path / "dir.csv"
    d.mkdir()
    expect(load_transactions, d, row=None, column=None, words=("directory",))


def test_empty_file(tmp_path: Path) -> None:
    expect(load_transactions, write(tmp_path, ""), row=None, column=None, words=("empty",))


def test_header_only_has_no_rows(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "\n\n")
    expect(load_transactions, path, row=None, column=None, words=("no data rows",))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_bytes(
        (HEADER + ",ville\nt1,2021-01-01,1,1,1,").encode() + "Orléans\n".encode("latin-1")
    )
    expect(load_transactions, path, row=None, column=None, words=("UTF-8",))


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    path.write_bytes(b"this is not parquet")
    expect(load_transactions, path, row=None, column=None, words=("Parquet",))


@pytest.mark.parametrize("missing", ["transaction_id", "date", "lat", "lon", "price"])
def test_missing_required_column(tmp_path: Path, missing: str) -> None:
    cols = HEADER.split(",")
    keep = [i for i, c in enumerate(cols) if c != missing]
    rows = [",".join(r.split(",")[i] for i in keep) for r in GOOD_ROWS]
    path = tx_file(tmp_path, rows, header=",".join(cols[i] for i in keep))
    expect(load_transactions, path, row=None, column=missing, words=("missing",))


def test_missing_column_suggests_near_name(tmp_path: Path) -> None:
    path = tx_file(tmp_path, GOOD_ROWS, header="transaction_id,date,lat,lon,Price")
    expect(load_transactions, path, row=None, column="price", words=("rename it to 'price'",))


def test_unnamed_index_column(tmp_path: Path) -> None:
    path = tx_file(tmp_path, ["0," + r for r in GOOD_ROWS], header="," + HEADER)
    expect(load_transactions, path, row=None, column="<unnamed column 1>", words=("index=False",))


def test_duplicate_header(tmp_path: Path) -> None:
    path = tx_file(tmp_path, [r + ",1" for r in GOOD_ROWS], header=HEADER + ",price")
    expect(load_transactions, path, row=None, column="price", words=("twice",))


def test_row_with_wrong_number_of_fields(tmp_path: Path) -> None:
    path = tx_file(tmp_path, [GOOD_ROWS[0], GOOD_ROWS[1] + ",extra", GOOD_ROWS[2]])
    err = expect(load_transactions, path, row=2, column=None, words=("6 fields", "header has 5"))
    assert "quote" in err.fix


def test_blank_lines_are_not_counted_as_rows(tmp_path: Path) -> None:
    path = tx_file(tmp_path, [GOOD_ROWS[0], "", GOOD_ROWS[1], "t9,2021-01-01,1,1,-1"])
    expect(load_transactions, path, row=3, column="price")


# --------------------------------------------------------------------------- cell-level rules


@pytest.mark.parametrize(
    ("bad_row", "column", "words"),
    [
        (",2021-01-03,48.8,2.3,1", "transaction_id", ("transaction_id is empty",)),
        ("t9,,48.8,2.3,1", "date", ("date is empty",)),
        ("t9,03/04/2021,48.8,2.3,1", "date", ("ISO 8601", "'03/04/2021'")),
        ("t9,2021-02-30,48.8,2.3,1", "date", ("ISO 8601",)),
        ("t9,2021-01-03,NA,2.3,1", "lat", ("lat is empty",)),
        ("t9,2021-01-03,north,2.3,1", "lat", ("not a number",)),
        ("t9,2021-01-03,91,2.3,1", "lat", ("[-90, 90]", "swapped")),
        ("t9,2021-01-03,48.8,-180.5,1", "lon", ("[-180, 180]",)),
        ("t9,2021-01-03,48.8,2.3,", "price", ("price is empty",)),
        ("t9,2021-01-03,48.8,2.3,€350k", "price", ("not a number", "currency")),
        ("t9,2021-01-03,48.8,2.3,0", "price", ("> 0", "got 0")),
        ("t9,2021-01-03,48.8,2.3,-5", "price", ("> 0", "got -5")),
        ("t9,2021-01-03,48.8,2.3,inf", "price", ("finite",)),
    ],
)
def test_bad_cell(tmp_path: Path, bad_row: str, column: str, words: tuple[str, ...]) -> None:
    path = tx_file(tmp_path, [GOOD_ROWS[0], GOOD_ROWS[1], bad_row])
    expect(load_transactions, path, row=3, column=column, words=words)


def test_duplicate_transaction_id_names_both_rows(tmp_path: Path) -> None:
    path = tx_file(tmp_path, [GOOD_ROWS[0], GOOD_ROWS[1], "t1,2021-05-05,48.8,2.3,5"])
    expect(load_transactions, path, row=3, column="transaction_id", words=("rows 1 and 3", "'t1'"))


@pytest.mark.parametrize("column", ["district", "community"])
def test_empty_optional_region_cell(tmp_path: Path, column: str) -> None:
    path = tx_file(
        tmp_path, [GOOD_ROWS[0] + ",X", GOOD_ROWS[1] + ", "], header=HEADER + f",{column}"
    )
    err = expect(load_transactions, path, row=2, column=column, words=(f"{column} is empty",))
    assert "derive" in err.fix


def test_parquet_bad_cell(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c"],
            "date": pd.to_datetime(["2021-01-01"] * 3),
            "lat": [1.0, 2.0, 3.0],
            "lon": [1.0, 2.0, 3.0],
            "price": [1.0, np.nan, 3.0],
        }
    )
    path = tmp_path / "tx.parquet"
    frame.to_parquet(path, index=False)
    expect(load_transactions, path, row=2, column="price", words=("price is empty",))


def test_first_problem_in_reading_order_and_listing(tmp_path: Path) -> None:
    rows = ["t1,2021-01-03,48.8,2.3,1", "t2,2021-01-03,99,2.3,-1", "t3,bad,48.8,2.3,1"]
    path = tx_file(tmp_path, rows)
    err = expect(load_transactions, path, row=2, column="lat", words=("2 more problem(s)",))
    problems = err.problems  # type: ignore[attr-defined]
    assert [(p.row, p.column) for p in problems] == [(2, "lat"), (2, "price"), (3, "date")]
    assert "row 3, column 'date'" in str(err)


def test_problem_listing_is_capped(tmp_path: Path) -> None:
    rows = [f"t{i},2021-01-03,48.8,2.3,-1" for i in range(30)]
    err = expect(load_transactions, tx_file(tmp_path, rows), row=1, column="price")
    assert len(err.problems) == MAX_LISTED  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- communities


def comm_file(tmp_path: Path, text: str) -> Path:
    return write(tmp_path, text, "communities.csv")


def test_communities_missing_column(tmp_path: Path) -> None:
    path = comm_file(tmp_path, "name,lat,lon\nA,1,1\n")
    expect(load_communities, path, row=None, column="community", words=("missing",))


def test_communities_duplicate_id(tmp_path: Path) -> None:
    path = comm_file(tmp_path, "community,x\nA,1\nB,2\nA,3\n")
    expect(load_communities, path, row=3, column="community", words=("rows 1 and 3",))


def test_communities_empty_id(tmp_path: Path) -> None:
    path = comm_file(tmp_path, "community,x\nA,1\n,2\n")
    expect(load_communities, path, row=2, column="community", words=("empty",))


def test_communities_lat_without_lon(tmp_path: Path) -> None:
    path = comm_file(tmp_path, "community,lat\nA,1\n")
    expect(load_communities, path, row=None, column="lon", words=("both",))


def test_communities_lat_out_of_range(tmp_path: Path) -> None:
    path = comm_file(tmp_path, "community,lat,lon\nA,1,1\nB,-95,1\n")
    expect(load_communities, path, row=2, column="lat", words=("[-90, 90]",))


def test_communities_non_numeric_attribute(tmp_path: Path) -> None:
    path = comm_file(tmp_path, "community,lat,lon,kind\nA,1,1,3\nB,1,1,urban\n")
    err = expect(load_communities, path, row=2, column="kind", words=("numeric", "'urban'"))
    assert "one 0/1 column per category" in err.fix


# --------------------------------------------------------------------------- mobility


@pytest.fixture
def communities(tmp_path: Path) -> pd.DataFrame:
    return load_communities(comm_file(tmp_path, "community\nA\nB\nC\n"))


def mob_file(tmp_path: Path, text: str) -> Path:
    return write(tmp_path, text, "mobility.csv")


def test_mobility_unknown_column(tmp_path: Path) -> None:
    path = mob_file(tmp_path, "src,dst,flow,mode\nA,B,1,car\n")
    expect(load_mobility, path, row=None, column="mode", words=("unknown column",))


def test_mobility_missing_column(tmp_path: Path) -> None:
    path = mob_file(tmp_path, "src,flow\nA,1\n")
    expect(load_mobility, path, row=None, column="dst", words=("missing",))


def test_mobility_negative_flow(tmp_path: Path) -> None:
    path = mob_file(tmp_path, "src,dst,flow\nA,B,1\nB,C,-0.5\n")
    expect(load_mobility, path, row=2, column="flow", words=(">= 0",))


def test_mobility_non_numeric_flow(tmp_path: Path) -> None:
    path = mob_file(tmp_path, "src,dst,flow\nA,B,many\n")
    expect(load_mobility, path, row=1, column="flow", words=("not a number",))


def test_mobility_empty_src(tmp_path: Path) -> None:
    path = mob_file(tmp_path, "src,dst,flow\nA,B,1\n,B,1\n")
    expect(load_mobility, path, row=2, column="src", words=("empty",))


@pytest.mark.parametrize("column", ["src", "dst"])
def test_mobility_unknown_community(tmp_path: Path, communities: pd.DataFrame, column: str) -> None:
    row = "A,Z,1" if column == "dst" else "Z,A,1"
    path = mob_file(tmp_path, f"src,dst,flow\nA,B,1\n{row}\n")
    with pytest.raises(DataValidationError) as info:
        load_mobility(path, communities)
    err = info.value
    assert (err.file, err.row, err.column) == (str(path), 2, column)
    assert "'Z' is not a community" in str(err) and "add community 'Z'" in err.fix
    load_mobility(path)  # without a communities table the ids are not checked


def test_mobility_duplicate_pair(tmp_path: Path) -> None:
    path = mob_file(tmp_path, "src,dst,flow\nA,B,1\nB,A,1\nA,B,2\n")
    expect(load_mobility, path, row=3, column="dst", words=("rows 1 and 3",))


def test_mobility_bad_communities_argument(tmp_path: Path) -> None:
    path = mob_file(tmp_path, "src,dst,flow\nA,B,1\n")
    with pytest.raises(ConfigError, match="community"):
        load_mobility(path, pd.DataFrame({"name": ["A"]}))
