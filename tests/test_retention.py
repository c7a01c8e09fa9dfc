"""Retention: with a short schedule, what is about people is gone after its period, from
the log (the stream's max_age) and from the read models (readmodels.retention), while
what is about the store only stays."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from readmodels.retention import prune
from tests.conftest import unique_prefix
from tests.enginekit import OPEN
from tests.readmodelkit import count, day_with_derived, dump, project, publish_lots, sqlite_db

STORE = "corner-01"
PEOPLE = (
    "visit", "face_match", "shelf_event", "cart", "cart_change", "receipt", "receipt_line",
    "line_evidence", "alert", "metric_point",
)  # fmt: skip
STORE_ONLY = ("metric_hour", "occupancy", "heatmap_hour")


@pytest.mark.integration
async def test_the_read_models_keep_people_no_longer_than_the_log_and_the_store_for_good(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    await publish_lots(jslog, day_with_derived(STORE, hours=1, shoppers=30, seed=8))
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db)
    before = dump(db)
    assert all(before[t] for t in PEOPLE if t != "face_match") and before["heatmap_cell"]
    schedule = dataclasses.replace(jslog.config, events_max_age_s=30 * 86400.0)
    days = count(db, "heatmap_cell", "span_s >= 86400")
    assert prune(db, schedule, OPEN + timedelta(days=29)) == {}, "within the month: all kept"
    # A month on: every row about a visit is gone, and the ten-second heatmap windows; the
    # store's own figures are as they were.
    done = prune(db, schedule, OPEN + timedelta(days=31))
    assert done["receipt"] == len(before["receipt"]) and done["heatmap_cell"] > 0
    assert count(db, "heatmap_cell", "span_s >= 86400") == days, "a day's heatmap stays"
    after = dump(db)
    assert {t: len(after[t]) for t in PEOPLE} == dict.fromkeys(PEOPLE, 0)
    assert {t: after[t] for t in STORE_ONLY} == {t: before[t] for t in STORE_ONLY}
    unlimited = dataclasses.replace(schedule, events_max_age_s=0.0)
    assert prune(db, unlimited, OPEN + timedelta(days=3650)) == {}


@pytest.mark.integration
async def test_the_log_drops_events_older_than_the_configured_retention() -> None:
    config = LogConfig(prefix=unique_prefix(), events_max_age_s=1.0, duplicate_window_s=1.0)
    log = await JetStreamLog.open(await connect("nats://127.0.0.1:4222", name="t"), config)
    try:
        lots = day_with_derived(STORE, hours=0.1, shoppers=3, seed=2)
        await publish_lots(log, lots)
        events = config.events_stream
        assert (await log.js.stream_info(events)).state.messages > 0
        for _ in range(50):  # the server removes them within a second or so of the limit
            if (await log.js.stream_info(events)).state.messages == 0:
                break
            await asyncio.sleep(0.1)
        assert (await log.js.stream_info(events)).state.messages == 0
    finally:
        await log.delete_streams()
        await log.close()
