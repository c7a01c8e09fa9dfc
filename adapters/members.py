"""The enrolment store: members who consented to be recognised at the entrance, and the
store's watch list, each with face templates encrypted at rest.

It is a SQLite file of its own (``.aisle/members.db`` by default), never the event log
and never a read model. Templates are sealed with AES-GCM under a key kept apart from the
file (``.aisle/members.key``, readable by its owner only, or ``AISLE_MEMBERS_KEY``), and
bound to their member's id, so a template copied onto another member's row does not
open. Revoking consent deletes the templates (SQLite's ``secure_delete`` overwrites the
freed pages) and keeps the consent record with the time it was revoked.

Member ids are pseudonymous (``m-`` and random hex; ``w-`` on the watch list): the
store links one to a loyalty account elsewhere if it wants to; aisle never learns who
it is. Consent is recorded per purpose; the matcher loads only the templates of members
who consented to the purpose it serves.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.faces import DESCRIPTOR_SIZE

__all__ = [
    "ENTRY",
    "KEY_ENV",
    "MAX_TEMPLATES",
    "Enrolled",
    "Member",
    "MemberStore",
    "MembersError",
]

KEY_ENV = "AISLE_MEMBERS_KEY"
ENTRY = "entry-recognition"  # the purpose a member consents to: recognised at the entrance
WATCHLIST = "watchlist"  # not a member's consent: the store's own list, kept apart
MAX_TEMPLATES = 10  # photos a member enrols at most
MAX_TEXT = 200
NONCE = 12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS member (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('member', 'watchlist')),
    purposes TEXT NOT NULL,
    consent TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS template (
    member_id TEXT NOT NULL REFERENCES member(id),
    n INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (member_id, n)
);
"""


class MembersError(Exception):
    """What is wrong with an enrolment, a key or the store, in a sentence."""


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    kind: str  # member or watchlist
    purposes: tuple[str, ...]
    consent: str  # the consent record (a form's reference), or the watch-list reason
    enrolled_at: datetime
    revoked_at: datetime | None
    templates: int


@dataclass(frozen=True, slots=True)
class Enrolled:
    """A template opened for matching: in memory only."""

    member: str
    watchlist: bool
    descriptor: npt.NDArray[np.float32]


def _key(key_file: Path) -> bytes:
    """The store's key: ``AISLE_MEMBERS_KEY`` (base64), else the key file, made on first
    use with owner-only permissions."""
    text = os.environ.get(KEY_ENV)
    if text is None and key_file.exists():
        if key_file.stat().st_mode & 0o077:
            raise MembersError(
                f"{key_file}: others may read the key (chmod 600 {key_file}, or set {KEY_ENV})"
            )
        text = key_file.read_text().strip()
    if text is None:
        key = AESGCM.generate_key(bit_length=256)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
        return key
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        where = KEY_ENV if KEY_ENV in os.environ else str(key_file)
        raise MembersError(f"{where}: not a 256-bit key in base64")
    return key


def _text(name: str, value: str) -> str:
    if not value.strip() or len(value) > MAX_TEXT or not value.isprintable():
        raise MembersError(f"{name}: printable text of 1 to {MAX_TEXT} characters is needed")
    return value


class MemberStore:
    """The enrolment store in ``path``, its key in ``key_file`` (or the environment)."""

    def __init__(self, path: Path, key_file: Path | None = None, *, create: bool = True) -> None:
        """``create``: make the store (and its key) if there is none; otherwise a store
        that is not there is an error (a mistyped path must not start an empty one)."""
        self.path = path
        if path.exists() and not path.is_file():
            raise MembersError(f"{path}: not a file")
        if not path.exists() and not create:
            raise MembersError(f"{path}: no enrolment store there (aisle members enrol makes one)")
        key_path = key_file or path.with_suffix(".key")
        if path.exists() and KEY_ENV not in os.environ and not key_path.exists():
            raise MembersError(f"{path}: its key {key_path} is missing (or set {KEY_ENV})")
        key = _key(key_path)
        self._aead = AESGCM(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.executescript(_SCHEMA)
                db.execute("CREATE TABLE IF NOT EXISTS key_check (sealed BLOB NOT NULL)")
                row = db.execute("SELECT sealed FROM key_check").fetchone()
                if row is None:
                    db.execute("INSERT INTO key_check VALUES (?)", (self._seal_text(b"aisle"),))
                elif self._open_text(row[0]) != b"aisle":
                    raise MembersError(
                        f"{path}: its templates were sealed with another key than this one "
                        f"({KEY_ENV} or {path.with_suffix('.key')})"
                    )
        except sqlite3.DatabaseError as exc:
            raise MembersError(f"{path}: not an enrolment store ({exc})") from None
        os.chmod(path, 0o600)

    def _seal_text(self, plain: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        return nonce + self._aead.encrypt(nonce, plain, b"key-check")

    def _open_text(self, sealed: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], b"key-check")
        except InvalidTag:
            return None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA secure_delete = ON")
            db.execute("PRAGMA foreign_keys = ON")
            with db:
                yield db
        finally:
            db.close()

    def enrol(
        self,
        descriptors: list[npt.NDArray[np.float32]],
        *,
        consent: str,
        purposes: tuple[str, ...] = (ENTRY,),
        watchlist: bool = False,
    ) -> str:
        """A new member (or watch-list entry) with these templates; its pseudonymous id."""
        if not descriptors:
            raise MembersError("no face to enrol")
        if len(descriptors) > MAX_TEMPLATES:
            raise MembersError(f"{len(descriptors)} photos: at most {MAX_TEMPLATES}")
        consent = _text("--consent" if not watchlist else "--reason", consent)
        purposes = (WATCHLIST,) if watchlist else tuple(_text("--purpose", p) for p in purposes)
        member = ("w-" if watchlist else "m-") + secrets.token_hex(8)
        now = datetime.now(UTC).isoformat()
        with self._db() as db:
            db.execute(
                "INSERT INTO member VALUES (?, ?, ?, ?, ?, NULL)",
                (member, "watchlist" if watchlist else "member", ",".join(purposes), consent, now),
            )
            db.executemany(
                "INSERT INTO template VALUES (?, ?, ?)",
                [(member, n, self._seal(member, d)) for n, d in enumerate(descriptors)],
            )
        return member

    def revoke(self, member: str) -> Member:
        """Withdraw consent: the templates are deleted, the record says when."""
        with self._db() as db:
            row = db.execute("SELECT revoked_at FROM member WHERE id = ?", (member,)).fetchone()
            if row is None:
                raise MembersError(f"no member {member!r}")
            db.execute("DELETE FROM template WHERE member_id = ?", (member,))
            if row[0] is None:
                now = datetime.now(UTC).isoformat()
                db.execute("UPDATE member SET revoked_at = ? WHERE id = ?", (now, member))
        return next(m for m in self.members() if m.id == member)

    def members(self) -> list[Member]:
        with self._db() as db:
            rows = db.execute(
                "SELECT m.id, m.kind, m.purposes, m.consent, m.enrolled_at, m.revoked_at, "
                "(SELECT count(*) FROM template t WHERE t.member_id = m.id) "
                "FROM member m ORDER BY m.enrolled_at, m.id"
            ).fetchall()
        return [
            Member(
                id=r[0],
                kind=r[1],
                purposes=tuple(r[2].split(",")),
                consent=r[3],
                enrolled_at=datetime.fromisoformat(r[4]),
                revoked_at=datetime.fromisoformat(r[5]) if r[5] else None,
                templates=r[6],
            )
            for r in rows
        ]

    def templates(self, purpose: str = ENTRY, watchlist: bool = False) -> list[Enrolled]:
        """The templates of members who consented to ``purpose`` and have not revoked it,
        and, if asked, the watch list's; opened for matching."""
        kinds = ("member", "watchlist") if watchlist else ("member",)
        with self._db() as db:
            rows = db.execute(
                "SELECT m.id, m.kind, m.purposes, t.sealed FROM member m "
                "JOIN template t ON t.member_id = m.id "
                f"WHERE m.revoked_at IS NULL AND m.kind IN ({','.join('?' * len(kinds))}) "
                "ORDER BY m.id, t.n",
                kinds,
            ).fetchall()
        return [
            Enrolled(member, kind == "watchlist", self._open(member, sealed))
            for member, kind, purposes, sealed in rows
            if kind == "watchlist" or purpose in purposes.split(",")
        ]

    def _seal(self, member: str, descriptor: npt.NDArray[np.float32]) -> bytes:
        vector = np.asarray(descriptor, dtype="<f4")
        if vector.shape != (DESCRIPTOR_SIZE,) or not np.isfinite(vector).all():
            raise MembersError(f"a template is {DESCRIPTOR_SIZE} finite numbers")
        nonce = secrets.token_bytes(NONCE)
        return nonce + self._aead.encrypt(nonce, vector.tobytes(), member.encode())

    def _open(self, member: str, sealed: bytes) -> npt.NDArray[np.float32]:
        try:
            plain = self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], member.encode())
        except InvalidTag:
            raise MembersError(
                f"{self.path}: a template of {member} does not open with this key "
                "(another store's key, or the file was altered)"
            ) from None
        return np.frombuffer(plain, dtype="<f4").copy()
