"""Atomic writes leave the old file intact on failure; tables are validated both ways."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pmg import schemas
from pmg.errors import DataError
from pmg.io import atomic_path, read_table, write_json_atomic, write_table


def _interactions() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": [1, 2], "rating": [4.0, None]})


def test_atomic_path_keeps_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_write_json_atomic(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "m.json").read_text().startswith('{\n  "a"')


def test_table_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "inter.parquet"
    write_table(_interactions(), path, schemas.Interactions)
    back = read_table(path, schemas.Interactions)
    assert back["item_id"].tolist() == ["a", "b"]
    assert pd.isna(back["rating"].iloc[1])


def test_invalid_table_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "inter.parquet"
    bad = _interactions()
    bad.loc[1, "timestamp"] = -5
    with pytest.raises(DataError) as err:
        write_table(bad, path, schemas.Interactions)
    assert "row 1" in str(err.value) and "'timestamp'" in str(err.value)
    assert not path.exists()


def test_read_rejects_garbage_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "none.parquet", schemas.Items)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"\x00not parquet")
    with pytest.raises(DataError, match="not a readable Parquet table"):
        read_table(junk, schemas.Items)


def test_read_validates(tmp_path: Path) -> None:
    path = tmp_path / "inter.parquet"
    frame = _interactions()
    frame["extra"] = 1
    frame.to_parquet(path)
    with pytest.raises(DataError, match="extra"):
        read_table(path, schemas.Interactions)


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path) -> None:
    import os
    import stat

    from pmg.io import write_text_atomic

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_text_atomic(tmp_path / "atomic.txt", "x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "atomic.txt") == mode(plain)


def _hits() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "scenario": ["clothing"] * 3,
            "variant": ["pmg"] * 3,
            "user_id": ["u1", "u2", "u3"],
            "target_item": ["a", "b", "c"],
            "check": ["colour"] * 3,
            "expected": ["red"] * 3,
            "observed": ["red", "blue", ""],
            "value": [1.0, 0.0, None],
            "target_differs": [True, None, False],
        }
    )


def test_same_table_same_bytes_whatever_its_attrs(tmp_path: Path) -> None:
    """Stage reports (timings, cache hits) ride in `attrs`; they must not reach the file."""
    import subprocess
    import sys

    frame = _interactions()
    frame.attrs["report"] = {"seconds": 1.234, "llm_cache": {"hits": 0, "misses": 2}}
    write_table(frame, tmp_path / "a.parquet", schemas.Interactions)
    frame.attrs["report"] = {"seconds": 5.678, "llm_cache": {"hits": 2, "misses": 0}}
    write_table(frame, tmp_path / "b.parquet", schemas.Interactions)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    # Another process writes the same bytes too.
    code = (
        "import sys, pandas as pd; from pmg import schemas; from pmg.io import write_table\n"
        "frame = pd.DataFrame({'user_id': ['u1', 'u1'], 'item_id': ['a', 'b'], 'timestamp': [1, 2], "
        "'rating': [4.0, None]})\n"
        "write_table(frame, sys.argv[1], schemas.Interactions)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.parquet")], check=True)
    assert (tmp_path / "c.parquet").read_bytes() == (tmp_path / "a.parquet").read_bytes()


def test_tables_round_trip_without_pandas_metadata(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "hits.parquet"
    written = write_table(_hits(), path, schemas.GroundTruthHits)
    assert b"pandas" not in (pq.ParquetFile(path).schema_arrow.metadata or {})
    back = read_table(path, schemas.GroundTruthHits)
    pd.testing.assert_frame_equal(back, written)
    assert back["target_differs"].tolist()[0] is True and pd.isna(back["target_differs"].iloc[1])
