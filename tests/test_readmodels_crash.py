"""Exactly-once read models: ``aisle projections run`` SIGKILLed again and again while a
store day streams in, each time in a new process with another hash seed, ends with the
same tables, row for row, as one run that was never interrupted."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from core import events as ev
from core.natsd import EmbeddedNats
from tests.conftest import scratch_log
from tests.enginekit import ROOT
from tests.readmodelkit import (
    day_with_derived,
    dump,
    postgres_db,
    project,
    publish_lots,
    scalar,
    sqlite_db,
)

pytestmark = pytest.mark.integration
_UNCOUNTED = """SELECT count(*) FROM projection_position p WHERE p.events !=
    (SELECT count(*) FROM projection_applied a WHERE a.projection = p.projection)"""


def _projections(
    url: str, prefix: str, database: str, data: Path, seed: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AISLE_NATS_URL": url,
        "AISLE_PREFIX": prefix,
        "AISLE_DATABASE_URL": database,
        "AISLE_DATA_DIR": str(data),
        "PYTHONHASHSEED": str(seed),
    }
    cmd = [str(Path(sys.executable).parent / "aisle"), "projections", "run", "--batch", "25"]
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@contextmanager
def _database(kind: str, path: Path) -> Iterator[Engine]:
    if kind == "sqlite":
        yield sqlite_db(path)
    else:
        with postgres_db() as db:
            yield db


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_sigkilled_ten_times_the_read_models_equal_an_uninterrupted_run(
    kind: str, embedded_nats: EmbeddedNats, tmp_path: Path
) -> None:
    lots = day_with_derived(hours=2, shoppers=60)
    rng = random.Random(11)
    with _database(kind, tmp_path / "k.db") as db:
        await _crash_and_resume(embedded_nats, tmp_path, db, rng, lots)


async def _crash_and_resume(
    embedded_nats: EmbeddedNats,
    tmp_path: Path,
    db: Engine,
    rng: random.Random,
    lots: list[list[ev.Event]],
) -> None:
    async with scratch_log(embedded_nats.url) as log:
        database = db.url.render_as_string(hide_password=False)

        def applied() -> int:
            return int(scalar(db, "SELECT coalesce(sum(events), 0) FROM projection_position"))

        # The day streams in while each process runs: a share of it per process, so that
        # every kill finds work in hand (a process that caught up would be killed idle).
        share = len(lots) // 10
        seen = []
        for kill in range(10):
            proc = _projections(embedded_nats.url, log.config.prefix, database, tmp_path, kill + 1)
            before = applied()
            try:
                await publish_lots(
                    log, lots[kill * share : (kill + 1) * share if kill < 9 else None]
                )
                for _ in range(1200):  # until this process has committed something (60 s)
                    await asyncio.sleep(0.05)
                    if applied() > before or proc.poll() is not None:
                        break
                await asyncio.sleep(rng.uniform(0.0, 0.6))
                assert proc.poll() is None, "the projections process ended by itself"
            finally:
                proc.kill()
                proc.wait()
            seen.append(applied())
            # What each projection applied and where it stands were committed together.
            assert scalar(db, _UNCOUNTED) == 0
        total = sum(len(lot) for lot in lots)
        assert seen[-1] > seen[0], seen
        assert len(set(seen)) >= 8, f"killed while it worked, not idle: {seen}"
        assert seen[-1] < total, "the last kill came before the end of the day"
        await project(log, db, batch=25)  # resumed, to the end
        clean = sqlite_db(tmp_path / "clean.db")
        await project(log, clean)
        killed, unbroken = dump(db), dump(clean)
        assert unbroken["receipt"] and unbroken["alert"] and unbroken["heatmap_cell"]
        assert killed == unbroken
