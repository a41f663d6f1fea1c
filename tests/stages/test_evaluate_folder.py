"""The evaluation folder is replaced whole (issue 16: every stage folder through `output_folder`).

`write_evaluation` wrote its three tables straight into the folder, so a run
that failed on the third left the new first two beside the old third.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pmg.stages import evaluate as stage


def _fake_write_table(frame, path: Path, schema) -> None:
    if frame == "bad":
        raise ValueError("this table does not validate")
    path.parent.mkdir(parents=True, exist_ok=True)  # as the real one does
    path.write_text(frame)


def test_a_failed_write_keeps_the_previous_evaluation_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(stage, "write_table", _fake_write_table)
    folder = tmp_path / "evaluate" / "clothing"
    stage.write_evaluation(folder, SimpleNamespace(pairs="old pairs", issues="old issues"), "old hits")
    before = {p.name: p.read_text() for p in folder.iterdir()}
    assert before == {
        stage.PAIRS_TABLE: "old pairs",
        stage.ISSUES_TABLE: "old issues",
        stage.GROUND_TRUTH_TABLE: "old hits",
    }
    with pytest.raises(ValueError, match="does not validate"):
        stage.write_evaluation(folder, SimpleNamespace(pairs="new pairs", issues="new issues"), "bad")
    assert {p.name: p.read_text() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["clothing"]  # no staging or lock left
