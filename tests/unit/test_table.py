"""core.table: a run's tables written without pandas are the bytes pandas writes, and convert to the same frame."""

import math

import numpy as np
import pandas as pd
import pytest

from simcluster.core import outputs
from simcluster.core.table import Table

HOSTILE_FLOATS = [0.0, -0.0, 1.0, 0.1 + 0.2, 1e16, 9999999999999998.0, 1e15, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308,
                  math.inf, -math.inf, math.nan, 123456789012345678.0, -2.5e-7, 2.0**53 + 1]
HOSTILE_TEXT = ["plain", "with,comma", 'with "quotes"', "line\nbreak", "", " spaced ", "caf\u00e9 \u2013 \u00fc",
                "a\rb", "gpu0->leaf3"]


PLAIN_TEXT = ["gpu0", "leaf-spine", "", " spaced ", "caf\u00e9", "nvlink"]


def columns(rows: int, seed: int = 0, text: list[str] = HOSTILE_TEXT) -> dict:
    rng = np.random.default_rng(seed)
    floats = np.concatenate([HOSTILE_FLOATS, rng.random(rows) * 10.0 ** rng.integers(-30, 30, rows)])
    n = len(floats)
    return {"link_id": np.arange(n, dtype=np.int64) - 3, "src": [text[i % len(text)] for i in range(n)],
            "bytes": floats, "flag": np.arange(n) % 3 == 0, "utilisation": rng.random(n),
            "repeated": np.round(rng.random(n) * 4) / 3, "narrow": (rng.random(n) / 3).astype(np.float32)}


@pytest.mark.parametrize("rows", [0, 5, 2000])
@pytest.mark.parametrize("text", [HOSTILE_TEXT, PLAIN_TEXT], ids=["quoted text", "plain text"])
def test_csv_is_byte_for_byte_what_pandas_writes(tmp_path, rows, text, monkeypatch):
    import simcluster.core.table as table_module

    monkeypatch.setattr(table_module, "CSV_CHUNK_ROWS", 7)  # several chunks and a partial last one
    data = columns(rows, text=text)
    Table(data).write_csv(tmp_path / "ours.csv")
    pd.DataFrame(data).to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_a_lone_missing_value_is_written_as_pandas_writes_it(tmp_path):
    data = {"x": np.array([1.5, math.nan, 2.0])}  # one column: an empty field must be quoted to be a row
    Table(data).write_csv(tmp_path / "ours.csv")
    pd.DataFrame(data).to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_rows_become_typed_columns_and_the_frame_pandas_builds_from_them():
    rows = [(0, "compute", 0.0, 1), (1, "dp", 2.5e-3, 8), (1, 'x,"y"', 1, 3)]  # an int among floats: a float column
    names, dtypes = ["rank", "stream", "start_s", "group"], {"rank": "int64", "start_s": "float64", "group": "int64"}
    table = Table.of_rows(rows, names, dtypes)
    assert len(table) == 3 and table.names == names and "stream" in table and "bytes" not in table
    expected = pd.DataFrame.from_records(rows, columns=names)
    pd.testing.assert_frame_equal(table.frame(), expected)
    empty = Table.of_rows([], names, dtypes)
    assert len(empty) == 0 and list(empty.frame().columns) == names


def test_unequal_columns_are_refused():
    with pytest.raises(AssertionError):
        Table({"a": [1, 2], "b": [1]})


def test_write_table_writes_a_table_or_a_frame_alike(tmp_path):
    data = columns(50, seed=3)
    ours = outputs.write_table(Table(data), tmp_path / "ours", "csv")
    theirs = outputs.write_table(pd.DataFrame(data), tmp_path / "theirs", "csv")
    assert ours.name == "ours.csv" and ours.read_bytes() == theirs.read_bytes()


def coded_columns(rows: int, text: list[str], seed: int = 1) -> tuple[dict, dict]:
    """The same table twice: texts as ``Coded`` columns, and as the lists they stand for (pandas' input)."""
    from simcluster.core.table import Coded

    rng = np.random.default_rng(seed)
    names = [f"n{i}/gpu{i % 8}" for i in range(max(rows // 3, 1))] + text   # many names (ends), and hostile ones
    src, dst = rng.integers(0, len(names), rows), rng.integers(0, len(names), rows)
    kinds, kind = ["nvlink", "pcie", "nic", *text[:2]], rng.integers(0, 5, rows)
    few = np.array([0.0, -0.0, 1e16, 0.1 + 0.2, math.nan, 5e-324])[rng.integers(0, 6, rows)]
    coded = {"link_id": np.arange(rows), "src": Coded(names, src), "dst": Coded(names, dst),
             "kind": Coded(kinds, kind), "bytes": few, "utilisation": few / 3, "many": rng.random(rows),
             "runs": np.repeat(few[:max(rows // 50, 1)], 50)[:rows]}   # long runs of equal values
    lists = {**coded, "src": [names[k] for k in src.tolist()], "dst": [names[k] for k in dst.tolist()],
             "kind": [kinds[k] for k in kind.tolist()]}
    return coded, lists


@pytest.mark.parametrize("rows", [0, 5, 3000])
@pytest.mark.parametrize("text", [HOSTILE_TEXT, PLAIN_TEXT], ids=["quoted text", "plain text"])
def test_coded_columns_write_the_bytes_pandas_writes_of_their_values(tmp_path, rows, text, monkeypatch):
    """Coded texts, and neighbouring few-valued columns joined into one before the rows (kind, bytes and
    utilisation here: 5 x 6 x 6 combinations), write what pandas writes of the lists they stand for."""
    import simcluster.core.table as table_module

    monkeypatch.setattr(table_module, "CSV_CHUNK_ROWS", 7)
    coded, lists = coded_columns(rows, text)
    table = Table(coded)
    table.write_csv(tmp_path / "ours.csv")
    pd.DataFrame(lists).to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    pd.testing.assert_frame_equal(table.frame(), pd.DataFrame(lists))
    assert table["src"] == lists["src"] and list(table["kind"][2:4]) == lists["kind"][2:4]


def test_few_valued_neighbours_are_joined_and_many_valued_ones_are_not():
    """The join's pieces: kind, bytes and utilisation become one coded piece whose texts are the distinct
    combinations present (each text the cells of its rows, comma-joined); ids, ends and the many-valued floats
    stay apart."""
    from simcluster.core.table import _coded, _joined

    coded, lists = coded_columns(3000, PLAIN_TEXT)
    pieces = _joined([_coded(column) for column in coded.values()], 3000)
    assert len(pieces) == 6   # link_id, src, dst, (kind, bytes, utilisation), many, runs
    texts, codes = pieces[3]
    assert len(texts) == len(set(texts.tolist())) <= 5 * 6 * 6
    bits = lambda value: "" if value != value else repr(value)  # noqa: E731
    assert texts[codes].tolist() == [f"{k},{bits(b)},{bits(u)}" for k, b, u in
                                     zip(lists["kind"], coded["bytes"].tolist(), coded["utilisation"].tolist(),
                                         strict=True)]
