"""What every request reads through: the database, the layouts and the log, made once
when the app starts (``api.app``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from api.problems import Problem
from api.settings import ApiSettings
from core.jetstream import JetStreamLog
from core.layout import Layout
from readmodels.dbfile import DatabaseFile


@dataclass
class Context:
    settings: ApiSettings
    db: Engine
    layouts: dict[str, Layout] = field(default_factory=dict)
    log: JetStreamLog | None = None
    db_file: DatabaseFile = field(default_factory=lambda: DatabaseFile(None, None))
    corrections: Any = None  # api.routes.receipts' corrections on their way, made there
    alert_actions: Any = None  # api.routes.alerts' actions on their way, made there

    def need_log(self) -> JetStreamLog:
        """The log, or 503 at once: an API without it, or a connection that is down (the
        client reconnects by itself; a request would only wait for its deadline)."""
        if self.log is None:
            raise Problem(503, "log unavailable", "this API runs without the log (NATS)")
        if not self.log.nc.is_connected:
            raise Problem(
                503,
                "log unavailable",
                "the log (NATS) is unreachable: the API is reconnecting; try again shortly",
                headers={"Retry-After": "2"},
            )
        return self.log


def context(request: Request) -> Context:
    """The app's context, once its SQLite file is known to be the one it opened (a file
    deleted under the API answers 503 with the reason: ``readmodels.dbfile``)."""
    ctx: Context = request.app.state.ctx
    ctx.db_file.check()
    return ctx


Ctx = Annotated[Context, Depends(context)]
