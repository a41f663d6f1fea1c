"""Atomic file writes, locked folder outputs and validated table I/O.

Every table of the project is a Parquet file validated by its pandera schema
(`pmg.schemas`) right after it is read and right before it is written. Writes go
to a temporary file in the destination folder and are renamed into place, so a
killed run never leaves a half-written file under the final name. A file write
holds the file's lock (`.<name>.lock`, as a folder's below) from the temporary
file to the rename, and first removes the `.<name>.<random>.tmp` files killed
writers left (found by the fault-injection suite, `benchmarks/faults.py`: a
stage killed while writing its table or metrics left one behind for good).

Folder outputs (a prepared scenario, an adapter, a model folder, ...) go
through `output_folder`, which makes concurrent runs of one stage safe:

* **One writer at a time.** The writer holds an exclusive `flock` on a sibling
  lock file `.<name>.lock` (an OS lock: it dies with the process, so a killed
  run never leaves a stale lock). The file holds the holder's pid, host,
  command and start time, so a second run can say who is in its way. A second
  run waits up to `PMG_OUTPUT_LOCK_WAIT_S` seconds (default 120) and then
  fails with `OutputBusyError` naming the holder. The lock file is removed on
  release (waiters check after locking that they locked the file still at
  that path), so finished outputs have no lock file beside them.
* **A private staging folder.** Each run builds in a unique `mkdtemp` sibling
  `.<name>.<random>.staging`, never a fixed name another run could share.
* **Atomic replacement.** The completed staging folder is exchanged with the
  old folder in one `renameat2(RENAME_EXCHANGE)` call (Linux, glibc >= 2.28;
  ext4, xfs, btrfs, tmpfs, overlayfs), so `final` always exists, old or new.
  Where that call is missing or refused (other systems, some network file
  systems) two renames are used and `final` is missing for a moment.
* **Readers see one version.** `read_folder` reads several files of a folder
  optimistically and reads again if the folder was swapped meanwhile (it
  holds the folder open and compares inodes), so a reader of several files
  (`pmg.data.store.read_scenario`) never mixes two versions and never holds
  up a writer. (A shared `flock` taken by readers was tried first: steady
  readers starved the writer's exclusive lock.) Files opened later, such as
  images a stage reads after `read_scenario`, are not covered: DVC and
  Prefect run a consumer after its producer, and a rebuilt folder on the
  same inputs has the same bytes.
* **No leftovers.** On failure the staging folder is removed and `final` is
  untouched; a run killed with SIGKILL leaves `.<name>.*.staging` or
  `.<name>.*.old`, which the next holder of the lock removes (no one else can
  be writing them while it holds the lock).

Locks are advisory and local: `flock` does not reach across machines on
network file systems; runs on several machines should not share an output
folder (they share the DVC remote and the registry instead).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pandera.errors

from pmg.errors import DataError, OutputBusyError

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, wait_s: float | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    The temporary file lives in the same folder so the final `os.replace` is an
    atomic rename on POSIX file systems. On any exception the temporary file is
    removed and `path` is left as it was. The write holds `path`'s lock
    (`lock_file`) throughout, so it can remove the temporary files that
    writers killed mid-write left (no live writer of `path` exists while it
    holds the lock); writers of one file take turns.

    Args:
        path: the file to (re)place; its folder is created.
        wait_s: how long to wait for another writer of `path` (see `output_folder`).

    Raises:
        OutputBusyError: another writer held `path` for longer than the wait.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _acquire(path, _lock_wait_s(wait_s))
    try:
        remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            # mkstemp creates 0600; give the file the mode a plain open() would.
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    finally:
        _release(path, lock)


# ------------------------------------------------------------------ folders

#: Seconds a second writer of the same output waits for the first (env override).
LOCK_WAIT_ENV = "PMG_OUTPUT_LOCK_WAIT_S"
DEFAULT_LOCK_WAIT_S = 120.0

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _load_renameat2():
    """libc's `renameat2`, or None where the C library has none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def _rename2(source: Path, target: Path, flags: int) -> bool:
    """`renameat2(source, target, flags)`; False when the system cannot do it.

    Raises:
        OSError: any other failure (e.g. `FileExistsError` for NOREPLACE).
    """
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(target))


def _wait_flock(fd: int, operation: int, deadline: float) -> bool:
    """Take `flock(fd, operation)`, polling until `deadline`; False on timeout."""
    delay = 0.02
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)


def _lock_wait_s(wait_s: float | None) -> float:
    if wait_s is not None:
        return max(0.0, float(wait_s))
    raw = os.environ.get(LOCK_WAIT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_LOCK_WAIT_S
    except ValueError:
        return DEFAULT_LOCK_WAIT_S


def lock_file(final: str | Path) -> Path:
    """The lock file of an output folder: `.<name>.lock` beside it."""
    final = Path(final)
    return final.parent / f".{final.name}.lock"


def _holder(fd: int) -> str:
    """Who holds a lock file, from what it wrote into it (best effort)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        text = f"pid {info['pid']} on {info['host']} since {info['since']} (`{info['command']}`)"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its name yet)"
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            text += "; that process has exited, a child process it started still holds the lock"
        except PermissionError:
            pass
    return text


def _acquire(final: Path, wait_s: float) -> int:
    """Lock `final`'s lock file exclusively (waiting up to `wait_s`); return its fd.

    Raises:
        OutputBusyError: another run held it for the whole wait.
    """
    path = lock_file(final)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        if not _wait_flock(fd, fcntl.LOCK_EX, deadline):
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusyError(
                f"{final} is being written by {holder}; waited {wait_s:g} s for it. Let that run finish "
                f"or stop it (set {LOCK_WAIT_ENV} to wait longer)"
            )
        # The previous holder unlinks the file when it lets go: a lock taken on
        # the unlinked file guards nothing, so try again on the new one.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv) or sys.executable,
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Written, then cut to length: truncating to 0 first made ext4 flush the
    # file on close (its replace-by-truncate heuristic), ~4 ms a lock.
    data = (json.dumps(info) + "\n").encode("utf-8")
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    return fd


def _release(final: Path, fd: int) -> None:
    """Unlink the lock file while still holding it, then let go."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_file(final))
    os.close(fd)


def _leftover_pattern(final: Path) -> re.Pattern[str]:
    # mkdtemp's and mkstemp's random part is 8 characters of [a-z0-9_]; the
    # fixed names are those of the old `staging_folder`/`replace_folder`.
    name = re.escape(final.name)
    return re.compile(rf"\.{name}\.(?:[a-z0-9_]{{8}}(?:\.(?:staging|old|pull|tmp))?|staging|old)")


def remove_leftovers(final: str | Path) -> list[Path]:
    """Delete the staging and old folders and temporary files that killed writers of `final` left.

    Only safe while holding `final`'s lock (`output_folder` and `atomic_path`
    call it then): no live writer of `final` exists, so every such entry is
    a dead one's.

    Returns:
        The paths removed.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = _leftover_pattern(final)
    prefix = f".{final.name}."
    removed = []
    with os.scandir(final.parent) as entries:  # no Path per entry: a file write calls this too
        for entry in entries:
            if entry.name.startswith(prefix) and pattern.fullmatch(entry.name):
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _umask_modes(folder: Path) -> None:
    """Give `folder` and everything in it at least the modes the umask allows.

    `mkdtemp` makes 0700 folders and some writers (safetensors, mkstemp) 0600
    files; outputs should be readable like any file a plain `open` makes.
    """
    allowed_dir = 0o777 & ~_umask()
    allowed_file = 0o666 & ~_umask()
    for root, _dirs, files in os.walk(folder):
        for name, allowed in [(root, allowed_dir), *((os.path.join(root, f), allowed_file) for f in files)]:
            mode = os.lstat(name).st_mode
            if not os.path.islink(name) and (mode & allowed) != allowed:
                os.chmod(name, (mode & 0o7777) | allowed)


def replace_folder(staging: str | Path, final: str | Path) -> None:
    """Put the completed folder `staging` in place of `final` (which may not exist).

    The swap primitive of `output_folder` (use that: it also locks out other
    writers). With `renameat2` the two folders are exchanged in one call, so
    `final` never disappears; otherwise `final` moves to a unique
    `.<name>.<random>.old` and `staging` takes its name. The old folder is
    deleted.
    """
    staging, final = Path(staging), Path(final)
    for _ in range(100):
        if not os.path.lexists(final):
            try:
                if not _rename2(staging, final, _RENAME_NOREPLACE):
                    if os.path.lexists(final):
                        raise FileExistsError(errno.EEXIST, "exists", str(final))
                    os.rename(staging, final)
                return
            except FileExistsError:
                continue  # another (unlocked) writer got there first: swap with its folder
        if _rename2(staging, final, _RENAME_EXCHANGE):
            old = staging
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.rename(final, old)  # onto the empty folder mkdtemp made
            os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"{final}: could not replace it (it kept appearing and disappearing)")


@contextlib.contextmanager
def output_folder(final: str | Path, *, wait_s: float | None = None) -> Iterator[Path]:
    """Yield a fresh, private, empty staging folder that replaces `final` on success.

    The one way the project writes a folder output (see the module docstring
    for the protocol): an exclusive lock on `final` for the whole run, a
    unique staging folder beside it, an atomic swap on normal exit, the
    staging folder removed on an exception (`final` untouched), leftovers of
    killed runs removed. Files and folders written get the umask's modes.

    Args:
        final: the output folder to (re)place; its parent is created.
        wait_s: how long to wait for another writer of `final`; None reads
            `PMG_OUTPUT_LOCK_WAIT_S` (default 120 s).

    Yields:
        The staging folder (mode as a plain `mkdir` makes it).

    Raises:
        OutputBusyError: another run holds `final` for longer than the wait;
            the message names its pid, host, command and start time.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(final, _lock_wait_s(wait_s))
    try:
        remove_leftovers(final)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
        try:
            os.chmod(staging, 0o777 & ~_umask())
            yield staging
            _umask_modes(staging)
            replace_folder(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        _release(final, fd)


def _same_folder(fd: int, folder: Path) -> bool:
    """Whether the open folder `fd` is still the one at `folder`."""
    try:
        now = os.stat(folder)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def read_folder(folder: str | Path, read: Callable[[Path], T], *, attempts: int = 50) -> T:
    """`read(folder)`, taken again until no swap of `folder` happened meanwhile.

    Optimistic, so readers never hold up writers: the folder is opened before
    `read` runs and checked after it to still be the one at that path (the
    open descriptor keeps its inode number from being reused). A reader that
    overlapped a swap, even one that failed on the half it saw, reads again;
    a failure of a read that overlapped no swap is raised as is. A missing
    folder while a writer holds its lock (the moment between the two renames
    where `renameat2` is missing) is waited for.

    Raises:
        OutputBusyError: the folder changed during every attempt.
    """
    folder = Path(folder)
    for attempt in range(attempts):
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            if attempt + 1 < attempts and lock_file(folder).exists():
                time.sleep(0.05)
                continue
            return read(folder)
        try:
            try:
                result, failure = read(folder), None
            except Exception as err:  # noqa: BLE001 - re-raised below unless a swap explains it
                result, failure = None, err
            if _same_folder(fd, folder):
                if failure is not None:
                    raise failure
                return result  # type: ignore[return-value]
        finally:
            os.close(fd)
        time.sleep(0.01 * (attempt + 1))
    raise OutputBusyError(f"{folder} was replaced during each of {attempts} attempts to read it")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def without_timings(info: dict) -> dict:
    """`info` without wall-clock figures (keys ending in `seconds`), at any depth.

    A model or data folder is a DVC output: a rerun on the same inputs must
    write the same bytes, so timings go to the stage's `metrics/` file only.
    """
    return {
        key: without_timings(value) if isinstance(value, dict) else value
        for key, value in info.items()
        if not key.endswith("seconds")
    }


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _schema_failure(path: str | Path, schema_name: str, err: Exception) -> DataError:
    """Turn a pandera error into a `DataError` naming file, row and column."""
    if isinstance(err, pandera.errors.SchemaErrors):
        cases = err.failure_cases
        if len(cases):
            first = cases.iloc[0]
            column = first.get("column")
            index = first.get("index")
            row = int(index) if index is not None and pd.notna(index) else None
            check = first.get("check")
            value = first.get("failure_case")
            more = f" (and {len(cases) - 1} more failures)" if len(cases) > 1 else ""
            return DataError(
                path,
                f"{schema_name}: check {check!s} failed for value {value!r}{more}",
                row=row,
                column=str(column) if column is not None and pd.notna(column) else None,
            )
    if isinstance(err, pandera.errors.SchemaError):
        column = getattr(err.schema, "name", None) if err.schema is not None else None
        row = None
        cases = err.failure_cases
        if isinstance(cases, pd.DataFrame) and len(cases) and "index" in cases:
            idx = cases["index"].iloc[0]
            row = int(idx) if pd.notna(idx) else None
        return DataError(path, f"{schema_name}: {err}", row=row, column=column)
    return DataError(path, f"{schema_name}: {err}")


def validate(frame: pd.DataFrame, schema: Any, path: str | Path) -> pd.DataFrame:
    """Validate `frame` with a pandera `schema`; raise `DataError` naming `path`.

    Args:
        frame: the table.
        schema: a `pandera.DataFrameModel` subclass from `pmg.schemas`.
        path: the file the frame came from or goes to, for the message.

    Returns:
        The validated (and coerced) frame.
    """
    # Row numbers in messages are positions: a fresh index also sidesteps
    # pandera failing on duplicate index labels.
    frame = frame.reset_index(drop=True)
    try:
        return schema.validate(frame, lazy=True)
    except (pandera.errors.SchemaErrors, pandera.errors.SchemaError) as err:
        raise _schema_failure(path, schema.__name__, err) from None


def read_table(path: str | Path, schema: Any) -> pd.DataFrame:
    """Read a Parquet table and validate it against `schema`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "table file does not exist (run the stage that makes it)")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any parse failure becomes a clear message
        raise DataError(path, f"not a readable Parquet table: {err}") from None
    return validate(frame, schema, path)


def table_to_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """Write `frame` as Parquet whose bytes depend only on the table's content.

    `DataFrame.to_parquet` stores a `pandas` schema entry holding the frame's
    `attrs` (the stages keep their reports there: timings, cache hits), the
    pandas version and the pyarrow version, so the same table gave different
    bytes on every run and DVC saw a changed output. The entry is dropped:
    every table is validated by its schema, with `coerce`, right after it is
    read, which restores the dtypes the entry described. What remains is
    pyarrow's own: the Arrow schema and the footer's `created_by` (the
    pyarrow version), fixed for one environment.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, str(path))


def write_table(frame: pd.DataFrame, path: str | Path, schema: Any) -> pd.DataFrame:
    """Validate `frame` against `schema`, then write it atomically as Parquet.

    The same table gives the same bytes (see `table_to_parquet`).
    """
    frame = validate(frame, schema, path)
    with atomic_path(path) as tmp:
        table_to_parquet(frame, tmp)
    return frame


# ---------------------------------------------------------------- feature files


def write_features(path: str | Path, ids: Sequence[str], values: np.ndarray) -> None:
    """Save features as `.npz` (`ids` (N,) str, `features` (N, D) float32), atomically."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] != len(ids):
        raise ValueError(f"features must be ({len(ids)}, D); got {values.shape}")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, ids=np.asarray([str(i) for i in ids], dtype=str), features=values)


def read_features(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Load a feature file written by `write_features`.

    Raises:
        DataError: the file is missing, not an `.npz` of that layout, or its
            ids and rows disagree; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "feature file does not exist (run the stage that makes it)")
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, features = data["ids"], data["features"]
    except Exception as err:  # noqa: BLE001 - any parse failure becomes a clear message
        raise DataError(path, f"not a feature file (.npz with 'ids' and 'features'): {err}") from None
    if features.ndim != 2 or ids.ndim != 1 or len(ids) != features.shape[0]:
        raise DataError(path, f"'ids' {ids.shape} and 'features' {features.shape} do not match")
    if len(set(ids.tolist())) != len(ids):
        raise DataError(path, "duplicate ids", column="ids")
    return [str(i) for i in ids], features.astype(np.float32)
