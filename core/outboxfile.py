"""The outbox's file: SQLite in WAL mode, one process at a time, checked before use.

A buffer file outlives crashes and may be handed over, edited or damaged: before the
outbox (``core/outbox.py``) reads a record, the file's header, schema, pages and records
are checked, and every failure names the file and where (``OutboxCorrupt``). A write a
crash cut short is SQLite's to drop; it is found in the WAL and reported, not hidden.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("core.outbox")  # one logger for what the outbox reports

APPLICATION_ID = 0x6F757462  # "outb", at offset 68 of the file: the outbox's files only
SCHEMA_VERSION = 1  # the file's user_version, at offset 60
_SCHEMA = (
    "CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
    "payload BLOB NOT NULL, sent_at REAL)",
    "CREATE TABLE done (n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, at REAL NOT NULL, "
    "refused INTEGER NOT NULL)",
)
_HEADER = b"SQLite format 3\x00"


class OutboxError(RuntimeError):
    """The outbox cannot do what was asked; the message names the file and why."""


class OutboxCorrupt(OutboxError):
    """The file is not an outbox, or is damaged: the message names the file and where."""


def open_file(path: Path, *, max_value_bytes: int, fsync: bool) -> tuple[sqlite3.Connection, int]:
    """The outbox's file at ``path`` (created if missing), checked, with its lock.

    ``max_value_bytes``: the longest value (an event) it may hold; SQLite reads nothing
    longer. ``fsync``: every commit reaches the disk before it returns (else a process
    crash loses nothing, an OS crash may lose the last commits). The lock is released by
    closing it (``os.close``), or by the OS when the process dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(path)
    try:
        _check_header(path)
        _report_torn(path)
        db = _connect(path, max_value_bytes)
        try:
            _check(db, path, max_value_bytes, fsync)
        except BaseException:
            db.close()
            raise
    except BaseException:
        os.close(lock)
        raise
    return db, lock


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One SQLite transaction, committed (and with fsync, on the disk) when the block
    ends, rolled back if it raises: what is stored and what is forgotten go together."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# -- the file -------------------------------------------------------------------------------


def _lock(path: Path) -> int:
    """An exclusive lock beside the file, released by the OS when the process ends (a
    SIGKILL included): two senders on one buffer would each send it."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxError(
            f"outbox {path} is in use by another process (it holds {lock_path}): one "
            "producer at a time per outbox file"
        ) from None
    return fd


def _check_header(path: Path) -> None:
    """Refuse a file that is not an outbox by its first 100 bytes, before SQLite reads it."""
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return
    if not head:
        return  # an empty file: a new outbox
    if not head.startswith(_HEADER):
        raise OutboxCorrupt(
            f"{path}: offset 0: not an outbox file (it does not start as a SQLite database)"
        )
    if len(head) < 100:
        raise OutboxCorrupt(f"{path}: offset {len(head)}: the SQLite header is cut short")
    (app,) = struct.unpack(">I", head[68:72])
    if app not in (0, APPLICATION_ID):
        raise OutboxCorrupt(
            f"{path}: offset 68: application id {app:#x}: a SQLite database of another "
            f"program, not an outbox ({APPLICATION_ID:#x})"
        )


def _connect(path: Path, max_value_bytes: int) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise OutboxCorrupt(f"{path}: cannot open: {exc}") from None
    # Bounded reads: no value, hence no record, longer than one event and its id may be.
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes + 64 * 1024)
    try:
        db.execute("PRAGMA trusted_schema = OFF")
        db.execute("PRAGMA cell_size_check = ON")
        # One process (the lock above): no shared-memory index, no -shm file to trust.
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
    except sqlite3.Error as exc:
        db.close()
        raise OutboxCorrupt(f"{path}: not a usable outbox file: {exc}") from None
    return db


def _wal(db: sqlite3.Connection, path: Path, fsync: bool) -> None:
    """WAL mode and the fsync policy, set once the file is known to be an outbox (a file
    refused is left as it was)."""
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise OutboxCorrupt(f"{path}: SQLite refused WAL mode (journal mode {mode})")
    db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
    db.execute("PRAGMA journal_size_limit = 67108864")


def _expected_schema() -> list[tuple[str, str, str, str | None]]:
    ref = sqlite3.connect(":memory:")
    for statement in _SCHEMA:
        ref.execute(statement)
    rows = ref.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
    ).fetchall()
    ref.close()
    return rows


def _check(db: sqlite3.Connection, path: Path, max_value_bytes: int, fsync: bool) -> None:
    """Create the schema in a new file; in an existing one, check that it is an outbox's
    and whole, so that the sender never trips over a record it cannot read."""
    try:
        found = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
        ).fetchall()
        if not found:
            # Before anything is written (WAL mode is): pages freed by sent events can
            # then be given back to the file system without rewriting the file.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            _wal(db, path, fsync)
            with transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if app != APPLICATION_ID:
            raise OutboxCorrupt(
                f"{path}: offset 68: application id {app:#x}: not an outbox file "
                f"({APPLICATION_ID:#x})"
            )
        if version != SCHEMA_VERSION:
            raise OutboxCorrupt(
                f"{path}: offset 60: outbox format {version}, this aisle reads format "
                f"{SCHEMA_VERSION}"
            )
        if found != _expected_schema():
            odd = sorted({r[1] for r in set(found) ^ set(_expected_schema())})
            raise OutboxCorrupt(
                f"{path}: the schema is not the outbox's (unexpected or altered: {', '.join(odd)})"
            )
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise OutboxCorrupt(f"{path}: damaged: {_with_offsets(db, problems)}")
        bad = db.execute(
            "SELECT seq, typeof(id), typeof(payload), length(payload), typeof(sent_at) "
            "FROM pending WHERE typeof(id) != 'text' OR typeof(payload) != 'blob' "
            "OR length(payload) > ? OR typeof(sent_at) NOT IN ('null', 'real', 'integer') "
            "LIMIT 1",
            (max_value_bytes,),
        ).fetchone()
        if bad is not None:
            seq, id_type, payload_type, size, sent_type = bad
            raise OutboxCorrupt(
                f"{path}: record seq {seq}: not one the outbox wrote (id {id_type}, payload "
                f"{payload_type} of {size} bytes, the limit being {max_value_bytes}; "
                f"sent_at {sent_type})"
            )
        _wal(db, path, fsync)
    except sqlite3.Error as exc:
        raise OutboxCorrupt(f"{path}: damaged: {exc}") from None


def _with_offsets(db: sqlite3.Connection, problems: list[str]) -> str:
    """SQLite's findings, each page it names given as a byte offset in the file too."""
    size = db.execute("PRAGMA page_size").fetchone()[0]

    def offset(m: re.Match[str]) -> str:
        page = int(m.group(1))
        return f"{m.group(0)} (offset {(page - 1) * size})"

    return "; ".join(re.sub(r"\b[Pp]age (\d+)", offset, p) for p in problems)


def _report_torn(path: Path) -> None:
    """Warn about a write a crash cut short: bytes at the end of the WAL that are not a
    whole committed transaction. SQLite drops them when it opens the file (its frames
    are checksummed); they were a ``put`` or a record of acknowledgements that never
    returned, so nothing ``put`` accepted is lost (``docs/log.md``)."""
    wal = path.with_name(path.name + "-wal")
    try:
        size = wal.stat().st_size
    except FileNotFoundError:
        return
    if not size:
        return
    torn = _torn_tail(wal, size)
    if torn is None:
        log.info("outbox %s was not closed cleanly: SQLite recovers it from its WAL", path)
        return
    offset, length = torn
    log.warning(
        "outbox %s: the last write was cut short by a crash: %d bytes at offset %d of %s "
        "are not a whole transaction and are dropped (that put had not returned: a "
        "producer run again makes its events again, with the same ids)",
        path,
        length,
        offset,
        wal,
    )


_WAL_MAGIC = (0x377F0682, 0x377F0683)


def _torn_tail(wal: Path, size: int) -> tuple[int, int] | None:
    """Where the WAL's last committed transaction ends and how many bytes follow it that
    belong to the current generation (same salts) or are a cut-short frame; None if
    none. Frames are read one at a time: the reads are bounded by one page."""
    with wal.open("rb") as f:
        head = f.read(32)
        if len(head) < 32:
            return 0, size
        magic, _, page_size, _, salt1, salt2, c1, c2 = struct.unpack(">8I", head)
        if magic not in _WAL_MAGIC or page_size & (page_size - 1) or not 512 <= page_size <= 65536:
            return 0, size
        order = ">" if magic & 1 else "<"
        s = _checksum(order, head[:24], 0, 0)
        if s != (c1, c2):
            return 0, size
        frame = 24 + page_size
        pos = committed = end = 32
        while pos + frame <= size:
            data = f.read(frame)
            _, commit, fs1, fs2, fc1, fc2 = struct.unpack(">6I", data[:24])
            if (fs1, fs2) != (salt1, salt2):
                break  # an older generation's frame: not part of this one
            s = _checksum(order, data[:8] + data[24:], *s)
            end = pos + frame
            if s != (fc1, fc2):
                break  # a frame written in part
            pos = end
            if commit:
                committed = pos
        else:
            end = size  # a cut-short frame at the end, if any
    return (committed, end - committed) if end > committed else None


def _checksum(order: str, data: bytes, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum (its file format, section 4.1), carried on from ``s0, s1``."""
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1
