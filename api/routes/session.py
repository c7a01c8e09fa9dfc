"""Who a token is, and a browser's session: the token in an HttpOnly, SameSite=Strict
cookie, so the dashboard's EventSource and images (which cannot send an Authorization
header) authenticate too, and no script can read it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api.auth import COOKIE, Principal, Viewer, authenticate
from api.context import Ctx
from api.problems import Problem, documented

router = APIRouter(tags=["session"], responses=documented(401, 422))


class Me(BaseModel):
    token_id: str
    role: str
    stores: list[str]  # empty: every store (``all_stores``)
    all_stores: bool
    name: str


class SessionIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)


def _me(who: Principal) -> Me:
    return Me(
        token_id=who.token_id,
        role=who.role.value,
        stores=list(who.stores),
        all_stores=not who.stores,
        name=who.name,
    )


@router.get("/me", response_model=Me)
def me(who: Viewer) -> Me:
    """The token's id, role, stores and holder."""
    return _me(who)


@router.post("/session", response_model=Me)
def open_session(ctx: Ctx, body: SessionIn, request: Request, response: Response) -> Me:
    """Check the token and keep it in a cookie for this browser."""
    who = authenticate(ctx.db, body.token)
    if who is None:
        raise Problem(
            401, "unauthorized", "the token is unknown, wrong or revoked", field="body.token"
        )
    response.set_cookie(
        COOKIE,
        body.token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return _me(who)


@router.delete("/session", status_code=204)
def close_session(response: Response) -> Response:
    response.delete_cookie(COOKIE, path="/")
    response.status_code = 204
    return response
