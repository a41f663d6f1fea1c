"""Two and three `pmg prepare` runs of one scenario at once (issue 16, item 1).

Before `pmg.io.output_folder`, the runs shared the fixed staging name
`.<scenario>.staging`: the later run wiped the earlier one's half-built
folder, the first exited 0 with a folder missing images, the second failed,
and with three runs the scenario folder could vanish. Now the runs take turns
(or the later one fails at once with the holder's name), and the committed
folder is byte for byte a clean run's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pmg.data.store import read_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "clothing"


def _command(tmp_path: Path, assets: Path) -> list[str]:
    return [
        sys.executable, "-m", "pmg.cli",
        "--params", str(ROOT / "params.yaml"),
        "--set", f"assets.folder={assets}",
        "--set", f"prepare.out={tmp_path / 'prepared'}",
        "--set", "prepare.image_size=32",
        "--set", "prepare.clothing.n_items=60",
        "--set", "prepare.clothing.n_users=12",
        "--set", "prepare.user_split.validation=0.2",
        "--set", "prepare.user_split.test=0.3",
        "--set", "prepare.user_split.min_users=1",
        "--metrics-root", str(tmp_path / "metrics"),
        "prepare", "--scenario", SCENARIO,
    ]  # fmt: skip


def _digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes."""
    hasher = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hasher.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()


def _start(command: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _clean_run(tmp_path: Path, assets: Path) -> str:
    done = subprocess.run(_command(tmp_path, assets), env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0
    return _digest(tmp_path / "prepared" / SCENARIO)


@pytest.mark.slow
@pytest.mark.parametrize("copies", [2, 3])
def test_concurrent_prepares_take_turns(tmp_path: Path, packaged_data_assets: Path, copies: int) -> None:
    clean = _clean_run(tmp_path, packaged_data_assets)
    runs = []
    for _ in range(copies):
        runs.append(_start(_command(tmp_path, packaged_data_assets)))
        time.sleep(1.0)  # each later run starts while the earlier ones build
    outcomes = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    assert [code for code, _ in outcomes] == [0] * copies, outcomes
    prepared = tmp_path / "prepared"
    assert sorted(p.name for p in prepared.iterdir()) == [SCENARIO]  # no staging, old or lock left
    assert _digest(prepared / SCENARIO) == clean
    assert len(read_scenario(prepared / SCENARIO).items) == 60


@pytest.mark.slow
def test_a_prepare_that_will_not_wait_names_the_holder(tmp_path: Path, packaged_data_assets: Path) -> None:
    clean = _clean_run(tmp_path, packaged_data_assets)
    final = tmp_path / "prepared" / SCENARIO
    ready = tmp_path / "ready"
    holder_code = (
        "import sys, time; from pathlib import Path; from pmg.io import output_folder\n"
        f"with output_folder({str(final)!r}) as staging:\n"
        "    (staging / 'half.png').write_bytes(b'half')\n"
        f"    Path({str(ready)!r}).write_text('ready')\n"
        "    time.sleep(300)\n"
    )
    holder = _start([sys.executable, "-c", holder_code, "holder-marker"])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = _start(_command(tmp_path, packaged_data_assets), PMG_OUTPUT_LOCK_WAIT_S="0")
        code, err = second.wait(timeout=600), second.stderr.read()
        assert code == 2
        assert err.startswith("pmg: error: ") and "Traceback" not in err
        assert f"pid {holder.pid}" in err and "holder-marker" in err
        assert _digest(final) == clean
    finally:
        holder.kill()  # SIGKILL: its staging folder stays behind
        holder.wait()
    # The next run is not blocked by the dead holder and sweeps what it left.
    assert any(p.name.endswith(".staging") for p in final.parent.iterdir())
    rerun = subprocess.run(_command(tmp_path, packaged_data_assets), env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert rerun.returncode == 0
    assert sorted(p.name for p in final.parent.iterdir()) == [SCENARIO]
    assert _digest(final) == clean
