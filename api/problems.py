"""Errors as RFC 9457 problem details (``application/problem+json``), each naming the
field at fault where there is one; a request never gets a bare 500."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import nats.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DatabaseError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.events import EventError
from core.jetstream import ConnectError
from core.log import PublishError
from readmodels.database import SchemaMismatch
from readmodels.dbfile import DatabaseGone

log = logging.getLogger(__name__)
MEDIA = "application/problem+json"


class FieldError(BaseModel):
    field: str
    reason: str


class ProblemModel(BaseModel):
    """The body of every error."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    field: str | None = None
    errors: list[FieldError] = []


class Problem(Exception):
    """An error the API answers with: ``field`` is the parameter or body field at fault
    (``query.limit``, ``body.adjustments[0].qty``)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.headers = headers


def response(
    status: int,
    title: str,
    detail: str = "",
    *,
    field: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if errors is None:  # one field at fault: ``errors`` names it too, as a 422 always does
        errors = [FieldError(field=field, reason=detail or title)] if field else []
    body = ProblemModel(
        title=title, status=status, detail=detail, field=field, errors=errors
    ).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "adjustments", 0, "qty")`` as ``body.adjustments[0].qty``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _field_error(e: dict[str, Any]) -> FieldError:
    """One of pydantic's errors as the field it names; a body that is not JSON names the
    body and where the parser stopped (FastAPI files the position as a list index)."""
    if e.get("type") == "json_invalid":
        loc = list(e.get("loc") or ())
        at = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        why = (e.get("ctx") or {}).get("error") or e.get("msg", "")
        where = f" at character {at}" if at is not None else ""
        return FieldError(field="body", reason=f"malformed JSON{where}: {why}")
    return FieldError(field=field_name(e["loc"]) or "request", reason=e["msg"])


def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(e) for e in exc.errors()]
    if not errors:
        errors = [FieldError(field="request", reason="invalid request")]
    first = errors[0]
    return response(
        422,
        "invalid request",
        f"{first.field}: {first.reason}",
        field=first.field,
        errors=errors,
    )


def _problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return response(exc.status, exc.title, exc.detail, field=exc.field, headers=exc.headers)


def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "error")
    return response(exc.status_code, title, str(exc.detail), headers=exc.headers)


def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    """The database's trouble in the server's log, whole; to the client a sentence with
    file names but not their folders (a request without a token gets this answer too)."""
    log.warning("read models unavailable: %s", exc)
    if isinstance(exc, OperationalError | DatabaseError):
        first = str(getattr(exc, "orig", exc)).splitlines()[0]  # the driver's own words
        said = f"the read models' database failed: {first}"
        if "malformed" in first or "not a database" in first:
            said += "; `aisle projections rebuild` recreates them from the log"
    else:
        said = str(exc).splitlines()[0]
    return response(
        503,
        "read models unavailable",
        re.sub(r"(?:/[^\s/:'\"]+)*/([^\s/:'\"]+)", r"\1", said)[:500],
    )


def _log_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("the log is unavailable: %s", exc)
    return response(503, "log unavailable", f"the log (NATS) did not take the request: {exc}"[:500])


def _event_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventError)
    field = f"body.{exc.field.removeprefix('data.')}" if exc.field else None
    return response(422, "invalid request", exc.reason, field=field)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return response(500, "internal error", "the server failed; its log says why")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(DatabaseError, _unavailable)  # a corrupt file
    app.add_exception_handler(SchemaMismatch, _unavailable)
    app.add_exception_handler(DatabaseGone, _unavailable)
    app.add_exception_handler(EventError, _event_error)
    for unavailable in (PublishError, ConnectError, nats.errors.Error, asyncio.TimeoutError):
        app.add_exception_handler(unavailable, _log_unavailable)
    app.add_exception_handler(Exception, _unexpected)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, as problem details."""
    return {
        s: {"model": ProblemModel, "content": {MEDIA: {}}, "description": "a problem"}
        for s in statuses
    }


def openapi_with_problems(app: FastAPI) -> None:
    """Errors documented as ``application/problem+json`` (FastAPI files a response model
    under ``application/json``): the schema moves to the media type the API sends."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for answer in operation.get("responses", {}).values():
                    content = answer.get("content", {})
                    if MEDIA in content and "application/json" in content:
                        content[MEDIA] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
