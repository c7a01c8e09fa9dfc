"""What ``aisle projections status`` and ``rebuild`` do: where each projection stands
against the log, and starting projections over from the log's first message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nats.js.errors
from nats.js import api
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, func, select

from core.access import may_publish
from core.jetstream import JetStreamLog
from readmodels.database import check_schema, current, drop_all, head, migrate
from readmodels.projection import Projection
from readmodels.runner import (
    ALL_STORES,
    CONSUMER_PREFIX,
    Progress,
    ProjectionService,
    ScopeConflict,
    consumer_name,
    projections,
)
from readmodels.tables import KEPT, READ_MODELS, Applied, Position, Rejection


@dataclass(frozen=True, slots=True)
class Standing:
    """A projection's position against the log."""

    projection: str
    scope: str
    seq: int  # the last stream sequence it has considered
    last_seq: int  # the stream's last sequence now
    pending: int  # messages of its types after its position: its lag
    applied: int
    rejected: int


async def standings(log: JetStreamLog, db: Engine) -> list[Standing]:
    """Every projection's position (one per scope it runs on) against the stream now."""
    with Session(db) as s:
        positions = list(s.exec(select(Position)))
        rejected = dict(
            s.exec(select(Rejection.projection, func.count()).group_by(Rejection.projection)).all()
        )
    info = await log.js.stream_info(log.config.events_stream)
    last = int(info.state.last_seq)
    kinds = {p.name: p for p in projections()}
    out = []
    for pos in sorted(positions, key=lambda p: (list(kinds).index(p.projection), p.scope)):
        types = kinds[pos.projection].types if pos.projection in kinds else frozenset()
        out.append(
            Standing(
                projection=pos.projection,
                scope=pos.scope,
                seq=pos.seq,
                last_seq=last,
                pending=await _pending(log, pos.scope, types, pos.seq) if pos.seq < last else 0,
                applied=pos.events,
                rejected=int(rejected.get(pos.projection, 0)),
            )
        )
    return out


async def _pending(log: JetStreamLog, scope: str, types: frozenset[str], seq: int) -> int:
    """Messages of ``types`` after ``seq``: one short-lived consumer per type (a server
    before 2.10 takes one filter a consumer), asked how many it would deliver."""
    total = 0
    stream = log.config.events_stream
    # A viewer may not delete consumers: asked once, so as not to wait on a refusal.
    deletes = await may_publish(log.nc, f"$JS.API.CONSUMER.DELETE.{stream}.any")
    for t in sorted(types):
        cfg = api.ConsumerConfig(
            filter_subject=f"{log.config.prefix}.{scope}.{t}",
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=seq + 1,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=5.0,
        )
        info = await log.js.add_consumer(stream, cfg)
        total += int(info.num_pending or 0)
        if deletes:  # else it expires by its inactive_threshold
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await log.js.delete_consumer(stream, info.name)
    return total


def _scopes(db: Engine) -> set[str]:
    check_schema(db)
    with Session(db) as s:
        return set(s.exec(select(Position.scope)).all())


def reset(db: Engine, selected: Sequence[Projection]) -> None:
    """Drop the read models of ``selected`` (all of them: every table but the API's tokens
    and audit, which the log cannot give back; a schema not this code's is made again
    whole), their positions and what they remembered."""
    every = {p.name for p in projections()}
    names = [p.name for p in selected]
    if set(names) == every and current(db) != head():
        drop_all(db)  # a schema not this code's: start it again (the API's tokens too)
        migrate(db)
        return
    check_schema(db)
    tables = [t.__table__ for p in selected for t in p.tables]  # type: ignore[attr-defined]
    if set(names) == every:  # everything but what the log cannot give back (API tokens, audit)
        tables = [t for n, t in READ_MODELS.tables.items() if n not in KEPT]
    READ_MODELS.drop_all(db, tables=tables)
    READ_MODELS.create_all(db, tables=tables)
    with Session(db) as s, s.begin():
        for table in (Position, Applied, Rejection):
            s.exec(delete(table).where(col(table.projection).in_(names)))  # type: ignore[call-overload]


async def drop_consumers(log: JetStreamLog, selected: Sequence[Projection]) -> None:
    """Delete the durable consumers of ``selected`` (every scope): a rebuild starts them
    again from the stream's first message."""
    names = {p.name for p in selected}
    for info in await log.js.consumers_info(log.config.events_stream):
        name = info.name
        if not name.startswith(CONSUMER_PREFIX):
            continue
        if any(name.startswith(consumer_name(n, "x")[:-1]) for n in names):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await log.js.delete_consumer(log.config.events_stream, name)


async def _in_use(log: JetStreamLog, selected: Sequence[Projection], looks: int = 4) -> list[str]:
    """The selected projections' consumers that a process reads through now: a running
    projection always has a pull request waiting but for a moment between two, so a few
    looks a third of a second apart see it."""
    prefixes = {consumer_name(p.name, "x")[:-1] for p in selected}
    busy: set[str] = set()
    for look in range(looks):
        for info in await log.js.consumers_info(log.config.events_stream):
            name = info.name or ""
            if any(name.startswith(x) for x in prefixes) and (info.num_waiting or 0) > 0:
                busy.add(name)
        if look + 1 < looks:
            await asyncio.sleep(0.35)
    return sorted(busy)


async def rebuild(
    log: JetStreamLog,
    db: Engine,
    *,
    selected: Sequence[Projection] | None = None,
    scope: str = ALL_STORES,
    on_progress: Callable[[list[Progress]], None] | None = None,
) -> list[Progress]:
    """Drop the read models and project the log again from its first message, until
    caught up with what it holds."""
    chosen = list(selected or projections())
    if scope != ALL_STORES:
        others = await asyncio.to_thread(_scopes, db)
        if others - {scope}:
            raise ScopeConflict(
                f"the read models in this database follow {', '.join(sorted(others))}: a "
                f"rebuild of store {scope} alone would drop theirs; rebuild every store "
                "(without --store), or give each store a database of its own"
            )
    if running := await _in_use(log, chosen):
        raise ScopeConflict(
            f"the projections are running ({', '.join(running)} reading the log): a rebuild "
            "would take their consumers and stop them; stop `aisle serve` or `aisle "
            "projections run` first, then rebuild"
        )
    await asyncio.to_thread(reset, db, chosen)
    await drop_consumers(log, chosen)
    service = ProjectionService(log, db, scope=scope, selected=chosen)
    await service.run(until_caught_up=True, on_progress=on_progress)
    return service.progress
