"""API tokens and roles.

A token is ``<id>.<secret>``: the id is public (lists, the audit), the secret is shown
once, at creation, and stored only as a keyed BLAKE2b hash, compared in constant time.
Roles nest: a viewer reads metrics, heatmaps, the layout and live counts (nothing tied to
a shopper); an operator also receipts, alerts, corrections and events; an admin also the
rules and the tokens. A token limited to stores sees nothing of another store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.context import Ctx
from api.problems import Problem
from core.events import STORE_PATTERN
from readmodels.tables import ApiToken


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
_TOKEN = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})$")
_store = re.compile(STORE_PATTERN)


def _hash(token_id: str, secret: str) -> str:
    return hashlib.blake2b(secret.encode(), key=token_id.encode(), digest_size=32).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request is: its token's id, role, stores (empty: all) and holder's name."""

    token_id: str
    role: Role
    stores: tuple[str, ...] = ()
    name: str = ""

    @property
    def who(self) -> str:
        """What operator events and the audit record as ``by``."""
        return f"{self.name} (token {self.token_id})" if self.name else f"token {self.token_id}"

    def may(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]

    def sees(self, store: str) -> bool:
        return not self.stores or store in self.stores


# A token holder's name: no control or bidirectional-override characters.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]*$"


def create_token(
    db: Engine, role: Role, stores: Sequence[str] = (), name: str = ""
) -> tuple[ApiToken, str]:
    """A new token: its row, and the token itself (shown once; only its hash is kept)."""
    bad = [s for s in stores if not _store.fullmatch(s)]
    if bad:
        raise ValueError(f"store ids {bad}: letters, digits, '-' or '_' only (1 to 64)")
    if len(name) > 128:
        raise ValueError("name: at most 128 characters")
    if not re.fullmatch(NAME_PATTERN, name):  # it shows in every event's `by` and the audit
        raise ValueError("name: no control or direction characters (it is shown as text)")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = ApiToken(
        id=token_id,
        secret_hash=_hash(token_id, secret),
        role=role.value,
        stores=sorted(set(stores)),
        name=name,
        created_at=datetime.now(UTC),
    )
    with Session(db) as s, s.begin():
        s.add(row)
    with Session(db) as s:
        stored = s.get(ApiToken, token_id)
        assert stored is not None
    return stored, f"{token_id}.{secret}"


def list_tokens(db: Engine) -> list[ApiToken]:
    with Session(db) as s:
        return list(s.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all())


def revoke_token(db: Engine, token_id: str) -> ApiToken | None:
    """Revoke a token (kept, for the audit's sake); None if there is no such token."""
    with Session(db) as s, s.begin():
        row = s.get(ApiToken, token_id)
        if row is None:
            return None
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            s.add(row)
    with Session(db) as s:
        return s.get(ApiToken, token_id)


def authenticate(db: Engine, token: str) -> Principal | None:
    """The principal ``token`` stands for, or None (unknown, wrong secret, revoked)."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        return None
    token_id, secret = m.groups()
    with db.connect() as conn:  # every request: a prepared Core select, not the ORM
        row = conn.execute(_TOKEN_ROW, {"id": token_id}).first()
    want = row.secret_hash if row is not None else _hash("0" * 16, "")
    ok = hmac.compare_digest(_hash(token_id, secret), want)
    if row is None or not ok or row.revoked_at is not None:
        return None
    return Principal(token_id=row.id, role=Role(row.role), stores=tuple(row.stores), name=row.name)


_TOKENS: sa.Table = ApiToken.__table__  # type: ignore[attr-defined]
_TOKEN_ROW = sa.select(
    _TOKENS.c.id,
    _TOKENS.c.secret_hash,
    _TOKENS.c.role,
    _TOKENS.c.stores,
    _TOKENS.c.name,
    _TOKENS.c.revoked_at,
).where(_TOKENS.c.id == sa.bindparam("id"))


_bearer = HTTPBearer(auto_error=False, description="An API token: `aisle tokens create`.")
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


COOKIE = "aisle_token"
_cookie = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    description="The same token, as `POST /api/v1/session` sets it (for a browser's "
    "EventSource and images, which send no Authorization header).",
)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _same_origin(request: Request) -> None:
    """A change sent with the session cookie must come from the dashboard itself: a page
    elsewhere (another port of 127.0.0.1 is the same "site" to SameSite) can make a browser
    send the cookie, but not an Origin header of this server's own."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin") or request.headers.get("referer", "")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin.rstrip("/") != own and not origin.startswith(own + "/"):
        raise Problem(
            403,
            "forbidden",
            f"a change with the session cookie must come from this server's own pages "
            f"({own}), not {origin or 'a page that sent no Origin'}; other clients send "
            "`Authorization: Bearer <token>`",
            field="header.origin",
        )


def principal(
    request: Request,
    ctx: Ctx,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)] = None,
) -> Principal:
    if creds is None and cookie:
        _same_origin(request)
        creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=cookie)
    if creds is None:
        given = request.headers.get("authorization")
        raise Problem(
            401,
            "unauthorized",
            "the Authorization header is not `Bearer <token>`: put `Bearer ` before the token"
            if given
            else "no token: send `Authorization: Bearer <token>`",
            field="header.authorization",
            headers=_UNAUTHORIZED,
        )
    who = authenticate(ctx.db, creds.credentials)
    if who is None:
        raise Problem(
            401,
            "unauthorized",
            "the token is unknown, wrong or revoked",
            field="header.authorization",
            headers=_UNAUTHORIZED,
        )
    return who


def require(role: Role) -> Callable[[Principal], Principal]:
    """A dependency: the request's principal, if its role is ``role`` or above (403 if not)."""

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.may(role):
            raise Problem(403, "forbidden", f"this needs the {role} role; the token is {who.role}")
        return who

    return check


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


def check_store(who: Principal, store: str) -> None:
    if not who.sees(store):
        raise Problem(
            403,
            "forbidden",
            f"this token is limited to other stores than {store}",
            field="path.store",
        )
