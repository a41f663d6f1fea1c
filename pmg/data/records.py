"""Delimited text files read with located errors: the readers every real-data loader shares.

`read_text` decodes a file as UTF-8 (optionally Latin-1) and names the line
and column of an undecodable byte; `iter_records` splits records while
keeping each one's line number (CSV quoting optional); `records_frame` and
`read_headed` collect them into string frames with a `_line` column, so later
checks (`numbers`) can name the line of a bad value. Used by the MovieLens
loaders (`pmg.data.movielens`) and the POG loader (`pmg.data.pog`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pmg.errors import DataError

def read_text(
    path: Path,
    *,
    sep: str,
    columns: Sequence[str] | None = None,
    typed_header: bool = False,
    latin1_fallback: bool = False,
) -> str:
    """Read a text file as UTF-8, with a located error for undecodable bytes.

    Args:
        path: the file.
        sep: the field separator, used to tell which column a bad byte is in.
        columns: the column names of a file without a header; for a file with
            a header, the names are taken from its first line.
        typed_header: the header names columns as `name:type` (RecBole);
            errors then name the column by `name` alone.
        latin1_fallback: decode as Latin-1 when the file is not valid UTF-8
            (for `u.item`, which GroupLens publishes in Latin-1).

    Returns:
        The decoded text, without a leading byte-order mark.

    Raises:
        DataError: the file is missing, empty, or not valid UTF-8.
    """
    if not path.is_file():
        raise DataError(path, "file does not exist")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(path, "file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if latin1_fallback:
            return data.decode("latin-1")
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        prefix = data[line_start : err.start].decode("utf-8", errors="replace")
        field = prefix.count(sep)
        names = list(columns) if columns is not None else _header_names(data, sep)
        if typed_header:
            names = [name.partition(":")[0] for name in names]
        column = names[field] if field < len(names) else None
        raise DataError(
            path,
            f"bytes {data[err.start : err.end]!r} at byte {err.start} are not valid UTF-8 "
            "(re-save the file as UTF-8)",
            row=line,
            column=column,
        ) from None
    return text.removeprefix("\ufeff")


def _header_names(data: bytes, sep: str) -> list[str]:
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").removeprefix("\ufeff").strip()
    return [name.strip().strip('"') for name in first.split(sep)]


def iter_records(
    path: Path, text: str, *, sep: str, quoted: bool = False, maxsplit: int = -1
) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, stripped fields) for each non-blank record.

    Args:
        path: the file, for error messages.
        text: its decoded content.
        sep: the field separator.
        quoted: parse CSV quoting (`"a, b"`, `""` for a quote); otherwise a
            line is split on every `sep` (files whose fields never hold it).
        maxsplit: split at most this many times (unquoted only), so the last
            field may hold the separator (POG titles).

    Raises:
        DataError: malformed quoting.
    """
    if quoted:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
        try:
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    yield reader.line_num, [f.strip() for f in fields]
        except csv.Error as err:
            raise DataError(path, f"malformed CSV: {err}", row=reader.line_num) from None
        return
    # split("\n"), not splitlines(): the latter also splits on \x85 and other
    # characters that Latin-1 text legitimately holds.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, [f.strip() for f in line.rstrip("\r").split(sep, maxsplit)]


def records_frame(
    path: Path, records: Iterator[tuple[int, list[str]]], columns: Sequence[str]
) -> pd.DataFrame:
    """Collect records of exactly `len(columns)` fields into a string frame.

    The frame has the given columns plus `_line`, the record's line number,
    so later checks can name the line.

    Raises:
        DataError: a record has too many or too few fields.
    """
    lines: list[int] = []
    rows: list[list[str]] = []
    width = len(columns)
    for number, fields in records:
        if len(fields) != width:
            column = columns[len(fields)] if len(fields) < width else None
            raise DataError(
                path,
                f"expected {width} fields ({', '.join(columns)}), found {len(fields)}",
                row=number,
                column=column,
            )
        lines.append(number)
        rows.append(fields)
    frame = pd.DataFrame(rows, columns=list(columns), dtype=object)
    frame["_line"] = np.asarray(lines, dtype=np.int64)
    return frame


def read_headed(
    path: Path, *, sep: str, required: Sequence[str], quoted: bool, allow_no_rows: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Read a delimited file whose first record is a header.

    Returns:
        The frame (all header columns, as strings, plus `_line`) and the
        header names.

    Raises:
        DataError: missing/empty file, a required column missing from the
            header, a record of the wrong width, no rows.
    """
    text = read_text(path, sep=sep)
    records = iter_records(path, text, sep=sep, quoted=quoted)
    first = next(records, None)
    if first is None:
        raise DataError(path, "file is empty")
    header_line, header = first
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(
            path,
            f"header {sep.join(header)!r} lacks column(s) {', '.join(missing)} "
            f"(expected {sep.join(required)})",
            row=header_line,
            column=missing[0],
        )
    if len(set(header)) != len(header):
        raise DataError(path, f"header {sep.join(header)!r} repeats a column name", row=header_line)
    frame = records_frame(path, records, header)
    if frame.empty and not allow_no_rows:
        raise DataError(path, "file has a header but no rows", row=header_line + 1)
    return frame, header


def numbers(
    path: Path,
    frame: pd.DataFrame,
    column: str,
    *,
    low: float | None = None,
    high: float | None = None,
) -> pd.Series:
    """Parse a string column as finite floats, naming the first bad line.

    Raises:
        DataError: a value is not a number (empty included) or lies outside
            [`low`, `high`].
    """
    values = pd.to_numeric(frame[column].astype(object), errors="coerce").astype(np.float64)
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            path,
            f"{frame[column].iloc[first]!r} is not a number",
            row=int(frame["_line"].iloc[first]),
            column=column,
        )
    out = np.zeros(len(values), dtype=bool)
    if low is not None:
        out |= values.to_numpy() < low
    if high is not None:
        out |= values.to_numpy() > high
    if out.any():
        first = int(np.argmax(out))
        raise DataError(
            path,
            f"{frame[column].iloc[first]!r} is outside the scale [{low}, {high}]",
            row=int(frame["_line"].iloc[first]),
            column=column,
        )
    return values


