"""The app: ``create_app(settings)`` builds the FastAPI application under ``/api/v1``.

On start it opens the read models' database (its schema must be this code's) and, unless
``settings.log`` is off, connects to the log as the ``api`` NATS role: it publishes
operator events and reads the log, nothing else. A folder ``api/static/`` (the dashboard)
is served at ``/dashboard/``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import nats.errors
from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from api import problems
from api.context import Context
from api.headers import DashboardHeaders
from api.limits import BodyLimit
from api.routes import (
    admin,
    alerts,
    events,
    heatmap,
    metrics,
    receipts,
    rules,
    session,
    stores,
    stream,
)
from api.settings import ApiSettings
from core.access import Role
from core.jetstream import JetStreamLog
from core.layout import load_layout
from core.runtime import open_log
from readmodels.database import check_schema, make_engine
from readmodels.dbfile import DatabaseFile

logger = logging.getLogger(__name__)
PREFIX = "/api/v1"
STATIC = Path(__file__).parent / "static"


@asynccontextmanager
async def _log(settings: ApiSettings) -> AsyncIterator[JetStreamLog]:
    """The log as the ``api`` role; a log gone by the time the app stops is only said."""
    opened = open_log(
        settings.core, name="aisle-api", role=Role.API, keep_going=settings.supervised
    )
    log = await opened.__aenter__()
    try:
        yield log
    finally:
        try:
            await opened.__aexit__(None, None, None)
        except (nats.errors.Error, OSError) as exc:
            logger.warning("the log was gone when the API stopped: %s", exc)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = make_engine(settings.url())
        await asyncio.to_thread(check_schema, db)
        layouts = {}
        for path in settings.layouts:
            layout = load_layout(path)
            layouts[layout.store.id] = layout
        ctx = Context(settings=settings, db=db, layouts=layouts, db_file=DatabaseFile.of(db))
        async with AsyncExitStack() as stack:
            if settings.log:
                ctx.log = await stack.enter_async_context(_log(settings))
            app.state.ctx = ctx
            try:
                yield
            finally:
                db.dispose()

    app = FastAPI(
        title="aisle",
        version="1",
        summary="Receipts, alerts, metrics and heatmaps of checkout-free stores",
        lifespan=lifespan,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN: a store's machine may have no internet
        redoc_url=None,
    )
    problems.install(app)
    problems.openapi_with_problems(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(DashboardHeaders)
    api = APIRouter(prefix=PREFIX)
    routers = (session, stores, receipts, alerts, metrics, heatmap, events, rules, stream, admin)
    for module in routers:
        api.include_router(module.router)
    app.include_router(api)
    if STATIC.is_dir():
        app.mount("/dashboard", StaticFiles(directory=STATIC, html=True), name="dashboard")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/dashboard/")

    return app
