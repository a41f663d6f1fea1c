"""`pmg.io.output_folder`: one writer at a time, private staging, atomic swap, no leftovers.

Each test breaks if one part of the protocol is missing: the lock (two
writers interleave), the unique staging name (a second writer wipes the
first's files), the swap (a reader sees a missing or mixed folder), the
cleanup (leftovers of killed writers pile up), the modes (0700 folders).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pmg import io as pmg_io
from pmg.errors import OutputBusyError
from pmg.io import lock_file, output_folder, read_folder, replace_folder

ROOT = Path(__file__).resolve().parents[1]


def _write_version(folder: Path, version: int, files: int = 5) -> None:
    for k in range(files):
        (folder / f"part{k}.txt").write_text(f"{version}\n")


def _versions(folder: Path) -> set[str]:
    return {p.read_text() for p in folder.glob("part*.txt")}


def _holder_script(final: Path, ready: Path) -> str:
    """A process that enters `output_folder(final)`, writes a file, says so and sleeps."""
    return textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from pmg.io import output_folder
        with output_folder({str(final)!r}) as staging:
            (staging / "half.txt").write_text("half")
            Path({str(ready)!r}).write_text("ready")
            time.sleep(120)
        """
    )


def _start_holder(tmp_path: Path, final: Path) -> subprocess.Popen:
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _holder_script(final, ready), "holder-marker"], env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, "the holder process died"
        assert time.monotonic() < deadline, "the holder process did not start"
        time.sleep(0.05)
    return proc


def test_success_replaces_and_leaves_nothing_beside(tmp_path: Path) -> None:
    final = tmp_path / "out"
    for version in (1, 2):
        with output_folder(final) as staging:
            assert staging.parent == tmp_path and staging != final and not any(staging.iterdir())
            assert lock_file(final).exists()
            _write_version(staging, version)
        assert _versions(final) == {f"{version}\n"}
    # No staging folder, no old folder, no lock file once done.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_keeps_the_old_folder_and_removes_staging(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with output_folder(final) as staging:
        _write_version(staging, 1)
    with pytest.raises(RuntimeError):
        with output_folder(final) as staging:
            _write_version(staging, 2, files=2)
            raise RuntimeError("killed half-way")
    assert _versions(final) == {"1\n"} and len(list(final.iterdir())) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staging_names_are_unique(tmp_path: Path) -> None:
    # The old `staging_folder` used `.<name>.staging`: a second run wiped the first's files.
    seen = set()
    for name in ("a", "b"):
        with output_folder(tmp_path / "out" / name) as one:
            seen.add(one.name)
    with output_folder(tmp_path / "x") as first:
        seen.add(first.name)
    with output_folder(tmp_path / "x") as second:
        assert second.name not in seen


def test_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    final = tmp_path / "out"
    inside = threading.Event()
    order: list[str] = []

    def first() -> None:
        with output_folder(final) as staging:
            order.append("first in")
            inside.set()
            for k in range(5):
                time.sleep(0.05)  # a slow build; the second writer must not touch it
                (staging / f"part{k}.txt").write_text("1\n")
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    with output_folder(final, wait_s=30) as staging:
        order.append("second in")
        _write_version(staging, 2)
    thread.join()
    assert order == ["first in", "first out", "second in"]
    assert _versions(final) == {"2\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_busy_output_names_its_holder(tmp_path: Path) -> None:
    final = tmp_path / "out"
    holder = _start_holder(tmp_path, final)
    try:
        started = time.monotonic()
        with pytest.raises(OutputBusyError) as err:
            with output_folder(final, wait_s=0.5):
                pass
        assert time.monotonic() - started < 10
        message = str(err.value)
        assert f"pid {holder.pid}" in message and "holder-marker" in message and str(final) in message
        assert "PMG_OUTPUT_LOCK_WAIT_S" in message
    finally:
        holder.kill()
        holder.wait()


def test_killed_writer_releases_the_lock_and_its_leftovers_go(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with output_folder(final) as staging:
        _write_version(staging, 1)
    holder = _start_holder(tmp_path, final)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out."))
    assert any(name.endswith(".staging") for name in left)  # what kill -9 leaves
    # Leftovers of the old fixed-name helpers are swept too.
    (tmp_path / ".out.old").mkdir()
    (tmp_path / ".out.staging").mkdir()
    (tmp_path / ".outer.abcdefgh.staging").mkdir()  # another output's: kept
    started = time.monotonic()
    with output_folder(final, wait_s=5) as staging:
        _write_version(staging, 2)
    assert time.monotonic() - started < 5  # the OS lock died with the process
    assert _versions(final) == {"2\n"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ready") == [".outer.abcdefgh.staging", "out"]


def test_outputs_get_the_umask_modes(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with output_folder(final) as staging:
        (staging / "sub").mkdir(mode=0o700)
        secret = staging / "sub" / "weights.bin"
        secret.write_bytes(b"x")
        secret.chmod(0o600)  # as safetensors writes it
    umask = os.umask(0)
    os.umask(umask)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(final) == 0o777 & ~umask
    assert mode(final / "sub") == 0o777 & ~umask
    assert mode(final / "sub" / "weights.bin") == 0o666 & ~umask


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replace_folder_swaps_and_deletes_the_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange) -> None:
    if not exchange:
        monkeypatch.setattr(pmg_io, "_RENAMEAT2", None)
    elif pmg_io._RENAMEAT2 is None:
        pytest.skip("no renameat2 in this C library")
    final = tmp_path / "out"
    for version in (1, 2):
        staging = tmp_path / f"new{version}"
        staging.mkdir()
        _write_version(staging, version)
        replace_folder(staging, final)
        assert _versions(final) == {f"{version}\n"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_readers_never_see_a_missing_or_mixed_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    """A reader of several files gets one version: never none, never two, and writers are not starved."""
    if not exchange:
        monkeypatch.setattr(pmg_io, "_RENAMEAT2", None)
    elif pmg_io._RENAMEAT2 is None:
        pytest.skip("no renameat2 in this C library")
    final = tmp_path / "out"
    with output_folder(final) as staging:
        _write_version(staging, 0)
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def read(folder: Path) -> list[str]:
        seen = []
        for k in range(5):
            seen.append((folder / f"part{k}.txt").read_text())
            time.sleep(0.001)  # a slow reader: a swap now would mix versions
        return seen

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                seen = read_folder(final, read)
            except Exception as err:  # noqa: BLE001 - any failure is a finding
                problems.append(repr(err))
                continue
            reads += 1
            if len(set(seen)) != 1:
                problems.append(f"mixed versions {seen}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for version in range(1, 40):
            with output_folder(final, wait_s=10) as staging:
                _write_version(staging, version)
            time.sleep(0.02)  # room for whole reads between swaps
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert reads > 10
    assert problems == []
    assert _versions(final) == {"39\n"}


def test_final_never_disappears_with_renameat2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `renameat2` the swap is one exchange: after every rename the folder is there."""
    if pmg_io._RENAMEAT2 is None:
        pytest.skip("no renameat2 in this C library")
    final = tmp_path / "out"
    with output_folder(final) as staging:
        _write_version(staging, 1)
    present: list[bool] = []
    real_rename = os.rename

    def watched_rename(source, target) -> None:
        real_rename(source, target)
        present.append(final.is_dir())

    monkeypatch.setattr(pmg_io.os, "rename", watched_rename)
    with output_folder(final) as staging:
        _write_version(staging, 2)
    assert all(present) and _versions(final) == {"2\n"}
