"""A file writer killed mid-write leaves nothing for good (issue 16, found by `benchmarks/faults.py`).

`atomic_path` wrote to `.<name>.<random>.tmp` and renamed it: a SIGKILL
between the two left the temporary file beside the table, the metrics file
or the LLM cache entry, and no later run removed it. Now a write holds the
file's lock and sweeps what dead writers of that file left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pmg import schemas
from pmg.io import atomic_path, lock_file, read_table, write_table
from pmg.method.llm_cache import ContentCache

ROOT = Path(__file__).resolve().parents[1]

KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from pmg.io import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a tab")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_writer(path: Path) -> None:
    command = [sys.executable, "-c", KILLED_MID_WRITE, str(path)]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == -signal.SIGKILL


def _scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1"], "scenario": ["clothing"], "target_item": ["g7"], "candidate": [0],
            "w_p": [1.0], "w_t": [0.0], "d_p": [0.0], "d_t": [0.0], "z": [0.0], "floored": [False],
            "chosen": [True],
        }
    )  # fmt: skip


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    table = tmp_path / "select" / "clothing.parquet"
    _killed_writer(table)
    left = {p.name for p in table.parent.iterdir()}
    assert ".clothing.parquet.lock" in left and len(left) == 2, left
    assert next(iter(left - {".clothing.parquet.lock"})).endswith(".tmp"), left
    assert not table.exists()  # the half-written file never took the final name
    write_table(_scores(), table, schemas.Scores)
    assert sorted(p.name for p in table.parent.iterdir()) == ["clothing.parquet"]
    assert len(read_table(table, schemas.Scores)) == 1


def test_a_cache_entry_write_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    _killed_writer(cache.path(key))
    cache.put(key, {"answer": "x"})
    assert [p.name for p in cache.path(key).parent.iterdir()] == [f"{key}.json"]
    assert cache.get(key) == {"answer": "x", "key": key}


def test_writers_of_one_file_take_turns(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    with atomic_path(path) as tmp:
        tmp.write_text("first")
        assert lock_file(path).exists()
        from pmg.errors import OutputBusyError

        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"), atomic_path(path, wait_s=0):
            pass
    assert path.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
