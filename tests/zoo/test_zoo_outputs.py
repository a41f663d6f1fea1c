"""The zoo's model folders: the same bytes from the same inputs, ordinary modes (issue 16).

The SD pipeline's check is `test_sd.test_training_is_deterministic_given_the_seed`
(it reuses that module's trained pipeline).

A model folder is a DVC output, so a rebuild on the same inputs (and the
same libraries and thread count) must write the same bytes, or every
`dvc.lock` disagrees. The CLIP folder carried its training time in
`training.json`; both folders were built in a `mkdtemp` folder (0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
from test_clip import TINY  # tests/zoo/ is on sys.path

from pmg.zoo.clip import TRAINING_INFO_NAME, train_mini_clip


def files_of(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def has_timings(node: object) -> bool:
    if isinstance(node, dict):
        return any(str(k).endswith("seconds") or has_timings(v) for k, v in node.items())
    return False


def assert_ordinary_modes(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


@pytest.mark.slow
def test_mini_clip_rebuild_writes_the_same_bytes(tiny_text_tower: Path, squares: pd.DataFrame, tmp_path: Path) -> None:
    cfg, out = TINY.model_copy(update={"epochs": 2}), tmp_path / "clip"
    builds = []
    for _ in range(2):  # a rerun of the stage: same inputs, same folder
        train_mini_clip(cfg, squares, text_tower=tiny_text_tower, out=out, seed=3, log=lambda _: None)
        builds.append(files_of(out))
    assert builds[0] == builds[1]
    assert not has_timings(json.loads((out / TRAINING_INFO_NAME).read_text()))
    assert_ordinary_modes(out)
