"""Errors the project raises on purpose.

Every error a user can cause (a bad file, an unknown id, a wrong path) is a
:class:`PMGError` with a message that names what to fix: the file, the row and
the column for data, the config key and the path for configuration. Entry points
(`pmg` CLI, DVC stages) print the message without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class PMGError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(PMGError):
    """`params.yaml` (or an override) is malformed; the message names the key."""


class AssetError(PMGError):
    """An offline asset could not be fetched, verified or extracted."""


class ModelError(PMGError):
    """A model could not be loaded or answered badly.

    The message names the config key (e.g. `profiles.mini.llm.path`) and the
    path or URL it holds: a missing or wrong path, a checkpoint of the wrong
    kind, a GGUF file that does not parse, an endpoint that times out or
    answers garbage, a device that is not there.
    """


class RegistryError(PMGError):
    """The model registry (S3) refused or failed an operation.

    The message names the endpoint, the bucket and what failed: an unreachable
    server (after bounded retries), rejected credentials, a missing bucket, a
    version that does not exist or does not verify, a refused promotion.
    """


class OutputBusyError(PMGError):
    """Another run is writing the same output folder (see `pmg.io.output_folder`).

    The message names the holder (pid, host, command, start time) and how
    long this run waited for it.
    """


class DataError(PMGError):
    """An input or intermediate table is malformed.

    Args:
        path: the file that holds the bad data.
        message: what is wrong.
        row: 1-based line number in the file (for text formats) or 0-based row
            index (for tables), when one row is to blame.
        column: the column to blame, when one is.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path)
        self.row = row
        self.column = column
        self.reason = message
        where = [self.path]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")
