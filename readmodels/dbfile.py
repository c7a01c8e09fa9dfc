"""Whether the read models' SQLite file is still the one a process opened.

A SQLite file deleted (or replaced) under a running process is not an error SQLite
reports: connections already open go on reading and writing the deleted file, and new
ones create an empty file at the path, so the API would answer half from one and half
from the other. The projections and the API check the file's identity (device and
inode) as they run and stop with the reason instead: the database also holds the API's
tokens and its audit, which no rebuild from the log brings back, so recreating it
silently would be worse than stopping. PostgreSQL and in-memory databases have no file
to check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class DatabaseGone(RuntimeError):
    """The database file was deleted or replaced while this process used it."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class DatabaseFile:
    """The file an engine's database lives in, as it was when ``of`` looked."""

    path: Path | None
    identity: tuple[int, int] | None

    @classmethod
    def of(cls, engine: Engine) -> DatabaseFile:
        url = sa.make_url(str(engine.url))
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return cls(None, None)
        path = Path(url.database).resolve()  # type: ignore[arg-type]
        return cls(path, _identity(path))

    def check(self) -> None:
        """``DatabaseGone`` with what happened and what to do, if the file is not the
        one it was."""
        if self.path is None or self.identity is None:
            return
        now = _identity(self.path)
        if now == self.identity:
            return
        what = "was deleted" if now is None else "was replaced by another file"
        raise DatabaseGone(
            f"the read models' database {self.path} {what} while this process used it; "
            "stopping rather than answer from two files. Restore the file, or start again "
            "on a new one (`aisle projections rebuild` fills it from the log; API tokens "
            "and the audit were in the old file)"
        )
