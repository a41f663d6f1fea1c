"""Atomic file writes and validated table I/O.

Every table of the project is a Parquet file validated by its pandera schema
(`pmg.schemas`) right after it is read and right before it is written. Writes go
to a temporary file in the destination folder and are renamed into place, so a
killed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors

from pmg.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    The temporary file lives in the same folder so the final `os.replace` is an
    atomic rename on POSIX file systems. On any exception the temporary file is
    removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def replace_folder(staging: str | Path, final: str | Path) -> None:
    """Put the completed folder `staging` in place of `final` (which may not exist).

    Two renames: `final` moves aside, `staging` takes its name, then the old
    folder is deleted. Readers see the old folder or the new one, never a
    half-written one; a leftover `.<name>.old` from a killed run is removed.
    """
    staging, final = Path(staging), Path(final)
    if not final.exists():
        staging.rename(final)
        return
    old = final.parent / f".{final.name}.old"
    if old.exists():
        shutil.rmtree(old)
    final.rename(old)
    staging.rename(final)
    shutil.rmtree(old)


@contextlib.contextmanager
def output_folder(final: str | Path) -> Iterator[Path]:
    """Yield a fresh, private, empty staging folder next to `final`; swap it in on success.

    On normal exit the staging folder replaces `final` (see `replace_folder`);
    on an exception it is removed and `final` is left as it was. Every stage
    that writes a folder goes through here, so no other module writes the
    stage-then-rename pattern.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    try:
        yield staging
        # mkdtemp creates 0700; give the folder the mode a plain mkdir would.
        os.chmod(staging, 0o777 & ~_umask())
        replace_folder(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


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


def write_table(frame: pd.DataFrame, path: str | Path, schema: Any) -> pd.DataFrame:
    """Validate `frame` against `schema`, then write it atomically as Parquet."""
    frame = validate(frame, schema, path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame
