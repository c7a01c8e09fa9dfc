"""The outbox: events on disk until the log has them, through outages, crashes and
hostile files, with a real nats-server stopped, restarted and killed under it."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core import events as ev
from core.access import Role
from core.config import ConfigError, LogConfig, Settings
from core.jetstream import JetStreamLog, connect
from core.log import EventLog, Published
from core.natsd import EmbeddedNats, free_port
from core.outbox import Outbox, OutboxConfig, OutboxCorrupt, OutboxError, OutboxFull
from core.runtime import embedded_or_configured, log_factory, open_log
from tests.outboxkit import by_subject, opener, produce, stored

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


async def reader(server: EmbeddedNats, prefix: str) -> JetStreamLog:
    return await JetStreamLog.open(await connect(server.url), LogConfig(prefix=prefix))


async def never() -> EventLog:
    raise ConnectionError("no log in this test")


# -- outages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_a_nats_outage_mid_stream_loses_nothing_stores_nothing_twice_and_keeps_order(
    private_nats: EmbeddedNats, tmp_path: Path, outage: str
) -> None:
    config = LogConfig(prefix="outage", publish_timeout_s=1.0)
    events = produce(3000)
    box = Outbox.open(
        tmp_path / "outbox.db", opener(private_nats.url, config), OutboxConfig(batch=100)
    )
    async with box:

        async def put(start: int, stop: int) -> None:
            for i in range(start, stop, 10):
                await box.put(events[i : i + 10])
                await asyncio.sleep(0.002)

        async def noticed() -> None:
            while box.status().connected:
                await asyncio.sleep(0.05)

        producing = asyncio.create_task(put(0, 2000))
        while box.status().published < 400:
            await asyncio.sleep(0.005)
        # The server goes with publishes in flight, and the producer carries on.
        await asyncio.to_thread(private_nats.stop if outage == "stop" else private_nats.kill)
        published_before = box.status().published
        await producing
        await asyncio.wait_for(noticed(), 30)
        while_down = box.status()
        await asyncio.to_thread(private_nats.start)  # the same port and store directory
        await put(2000, 3000)
        await asyncio.wait_for(box.flush(), 120)
        after = box.status()

    assert published_before < 2000, "the outage must fall inside the stream"
    assert while_down.pending + while_down.published == 2000 and while_down.pending > 0
    assert while_down.last_error, "the outage is reported"
    assert after.pending == 0 and after.refused == 0 and after.reordered == 0
    log = await reader(private_nats, "outage")
    held = await stored(log, ["s0", "s1"])
    await log.close()
    assert Counter(i for ids in held.values() for i in ids) == Counter(e.id for e in events)
    assert held == by_subject(events), "each subject's events in the order they were put"


async def test_the_producer_starts_while_nats_is_down_and_its_events_go_when_it_comes_up(
    tmp_path: Path,
) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    events = produce(500)
    config = LogConfig(prefix="late", publish_timeout_s=1.0)
    box = Outbox.open(
        tmp_path / "outbox.db", opener(server.url, config), OutboxConfig(retry_max_s=0.2)
    )
    try:
        async with box:
            await box.put(events)
            assert box.status().pending == 500 and not box.status().connected
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(box.flush(), 120)
        log = await reader(server, "late")
        assert await stored(log, ["s0", "s1"]) == by_subject(events)
        await log.close()
    finally:
        server.stop()


# -- a full buffer ----------------------------------------------------------------------------


async def test_a_full_buffer_is_refused_to_the_producer_reported_and_then_waits_for_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = EmbeddedNats(tmp_path / "nats", port=port)
    events = produce(61)
    config = LogConfig(prefix="full", publish_timeout_s=1.0)
    path = tmp_path / "outbox.db"
    box = Outbox.open(
        path, opener(server.url, config), OutboxConfig(max_events=50, retry_max_s=0.2)
    )
    try:
        async with box:
            assert await box.put(events[:50]) == 50
            with (
                caplog.at_level(logging.WARNING, logger="core.outbox"),
                pytest.raises(OutboxFull) as full,
            ):
                await box.put(events[50:60])
            assert str(path) in str(full.value) and "is full" in str(full.value)
            assert full.value.pending == 50
            assert box.status().full == 1 and box.status().pending == 50, "none of it stored"
            assert any("is full" in r.getMessage() for r in caplog.records)
            # The producer that chooses to wait is held until the log takes events.
            waiting = asyncio.create_task(box.put(events[50:60], wait=True))
            await asyncio.sleep(0.5)
            assert not waiting.done(), "no room while the log is away"
            await asyncio.to_thread(server.start)
            assert await asyncio.wait_for(waiting, 60) == 10
            await box.put(events[60:])
            await asyncio.wait_for(box.flush(), 60)
        log = await reader(server, "full")
        assert await stored(log, ["s0", "s1"]) == by_subject(events)
        await log.close()
    finally:
        server.stop()


async def test_a_put_larger_than_the_whole_buffer_is_refused_even_when_it_would_wait(
    tmp_path: Path,
) -> None:
    events = produce(20)
    size = len(ev.encode(events[0]))
    async with Outbox.open(tmp_path / "o.db", never, OutboxConfig(max_bytes=size * 5)) as box:
        with pytest.raises(OutboxFull, match="can never fit"):
            await box.put(events, wait=True)
        assert box.status().pending == 0


# -- the file's size -----------------------------------------------------------------------------


def on_disk(path: Path) -> int:
    """The outbox's bytes on disk: the file and its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


@pytest.mark.parametrize("made", ["now", "before"])
async def test_an_outbox_that_grew_through_an_outage_shrinks_on_disk_once_drained(
    tmp_path: Path, made: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A file made by this outbox is vacuumed incrementally; one made before that (no
    auto_vacuum) is rewritten once and switched over."""
    server = EmbeddedNats(tmp_path / "nats")
    events = produce(8000)
    path = tmp_path / "o.db"
    config = OutboxConfig(retry_max_s=0.2, reclaim_bytes=256 * 1024)
    if made == "before":
        older = Outbox.open(path, never, config)  # as an aisle before auto_vacuum made it
        older._db.executescript("PRAGMA auto_vacuum = NONE; VACUUM;")
        assert older._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        await older.close()
    log_config = LogConfig(prefix="shrink", publish_timeout_s=1.0)
    box = Outbox.open(path, opener(server.url, log_config), config)
    try:
        async with box:
            for i in range(0, len(events), 500):
                await box.put(events[i : i + 500])
            grown = on_disk(path)
            with caplog.at_level(logging.INFO, logger="core.outbox"):
                await asyncio.to_thread(server.start)
                await asyncio.wait_for(box.flush(), 120)
            drained = on_disk(path)
            mode = box._db.execute("PRAGMA auto_vacuum").fetchone()[0]
        log = await reader(server, "shrink")
        assert await stored(log, ["s0", "s1"]) == by_subject(events), "nothing lost to it"
        await log.close()
    finally:
        server.stop()
    payload = sum(len(ev.encode(e)) for e in events)
    assert grown > payload, "the events waited on disk"
    assert drained < grown / 4, (grown, drained)
    assert mode == 2, "incremental from now on"
    assert any("given back to the file system" in r.getMessage() for r in caplog.records)
    async with Outbox.open(path, never, config) as again:  # a re-run still knows them
        assert await again.put(events[:100]) == 0


async def test_a_drained_outbox_below_the_threshold_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox.open(path, never, OutboxConfig(reclaim_bytes=64 * 2**20)) as box:
        await box.put(produce(2000))
        box._db.execute("DELETE FROM pending")
        assert box.reclaim() == 0


def test_the_outbox_settings_come_from_the_environment_and_a_bad_one_is_named() -> None:
    settings = Settings.from_env(
        {
            "AISLE_DATA_DIR": "/srv/aisle",
            "AISLE_OUTBOX_MAX_EVENTS": "5000",
            "AISLE_OUTBOX_MAX_BYTES": "64_000_000",
            "AISLE_DUPLICATE_WINDOW_S": "30",
        }
    )
    assert settings.outbox.max_events == 5000 and settings.outbox.max_bytes == 64_000_000
    assert settings.outbox.duplicate_window_s == 30.0 == settings.log.duplicate_window_s
    assert settings.outboxes == Path("/srv/aisle/outbox")
    assert Settings.from_env({"AISLE_OUTBOX_DIR": "/var/spool/aisle"}).outboxes == Path(
        "/var/spool/aisle"
    )
    assert Settings.from_env({}).outbox == OutboxConfig()
    for name, value, says in [
        ("AISLE_OUTBOX_MAX_EVENTS", "lots", "'lots': not a whole number"),
        ("AISLE_OUTBOX_MAX_BYTES", "0", "'0': at least 1"),
        ("AISLE_DUPLICATE_WINDOW_S", "-1", "'-1': more than 0 s"),
    ]:
        with pytest.raises(ConfigError, match=f"{name}={says}"):
            Settings.from_env({name: value})


# -- refusals ---------------------------------------------------------------------------------


async def test_an_event_the_log_refuses_goes_to_the_dead_letters_and_the_rest_goes_on(
    private_nats: EmbeddedNats, tmp_path: Path
) -> None:
    events = produce(40)
    ahead = ev.new(
        ev.ItemPicked,
        store="s1",
        at=datetime.now(UTC) + timedelta(hours=1),
        source="cam-1",
        subject="v-9",
        data=ev.ItemData(sku="sku-1", shelf="A1"),
    )
    config = LogConfig(prefix="refuse", publish_timeout_s=1.0)
    async with Outbox.open(tmp_path / "o.db", opener(private_nats.url, config)) as box:
        await box.put([*events[:20], ahead, *events[20:]])
        await asyncio.wait_for(box.flush(), 60)
        status = box.status()
    assert status.refused == 1 and status.published == 40 and status.pending == 0
    log = await reader(private_nats, "refuse")
    assert await stored(log, ["s0", "s1"]) == by_subject(events)
    letters = [letter async for _, letter in log.deadletters(store="s1")]
    await log.close()
    assert [(d.field, d.payload) for d in letters] == [("at", ev.encode(ahead))]


async def test_a_stored_record_that_is_not_an_event_goes_to_the_dead_letters_naming_the_file(
    private_nats: EmbeddedNats, tmp_path: Path
) -> None:
    events = produce(10)
    path = tmp_path / "o.db"
    async with Outbox.open(path, never) as box:
        await box.put(events)
    db = sqlite3.connect(path)
    db.execute("UPDATE pending SET payload = ? WHERE seq = 4", (b'{"store": "s1", "type": 7}',))
    db.commit()
    db.close()
    config = LogConfig(prefix="tampered", publish_timeout_s=1.0)
    async with Outbox.open(path, opener(private_nats.url, config)) as box:
        await asyncio.wait_for(box.flush(), 60)
        assert box.status().refused == 1
    log = await reader(private_nats, "tampered")
    kept = [e for i, e in enumerate(events) if i != 3]
    assert await stored(log, ["s0", "s1"]) == by_subject(kept)
    letters = [letter async for _, letter in log.deadletters(store="s1")]
    await log.close()
    assert len(letters) == 1 and letters[0].source == f"outbox {path} seq 4"


# -- re-runs and what is in doubt -------------------------------------------------------------


async def test_a_rerun_long_after_puts_nothing_the_log_already_has(
    private_nats: EmbeddedNats, tmp_path: Path
) -> None:
    events = produce(200)
    config = LogConfig(prefix="rerun", publish_timeout_s=1.0, duplicate_window_s=1.0)
    path = tmp_path / "o.db"
    async with Outbox.open(path, opener(private_nats.url, config)) as box:
        await box.put(events)
        await asyncio.wait_for(box.flush(), 60)
    await asyncio.sleep(1.5)  # past the server's duplicate window: only the outbox remembers
    async with Outbox.open(path, opener(private_nats.url, config)) as box:
        assert await box.put(events) == 0
        assert box.status().known == 200
    log = await reader(private_nats, "rerun")
    assert await stored(log, ["s0", "s1"]) == by_subject(events)
    await log.close()


class _DiesAfterSending:
    """A log through which events are stored, after which the producer "dies": the
    acknowledgement never reaches the outbox."""

    def __init__(self, inner: EventLog) -> None:
        self.inner = inner
        self.sent = asyncio.Event()

    async def publish_many(self, events: Sequence[ev.Event]) -> list[Published]:
        await self.inner.publish_many(events)
        self.sent.set()
        await asyncio.Event().wait()  # never returns
        raise AssertionError

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.parametrize("role", [Role.ADMIN, Role.ADAPTER])
async def test_events_sent_unacknowledged_before_a_crash_are_settled_after_the_window(
    tmp_path: Path, role: Role
) -> None:
    """Past the duplicate window the server would store a resend again: the outbox
    searches the stream first. An adapter's user may not read the stream (the embedded
    server's real permissions here): it sends again, and counts and logs it."""
    events = produce(30)
    config = LogConfig(prefix="doubt", publish_timeout_s=1.0, duplicate_window_s=1.0)
    settings = Settings(nats_url=None, data_dir=tmp_path / ".aisle", log=config)
    box_config = OutboxConfig(duplicate_window_s=1.0)
    path = tmp_path / "o.db"
    dying: list[_DiesAfterSending] = []
    async with open_log(settings) as admin, embedded_or_configured(settings) as url:
        new_log = log_factory(settings, url, name="cam-1", role=role)

        async def new_dying_log() -> EventLog:
            dying.append(_DiesAfterSending(await new_log()))
            return dying[-1]  # type: ignore[return-value]

        async with Outbox.open(path, new_dying_log, box_config) as box:
            await box.put(events)
            while not dying:
                await asyncio.sleep(0.01)
            await asyncio.wait_for(dying[0].sent.wait(), 30)
        await asyncio.sleep(1.5)  # past the window
        async with Outbox.open(path, new_log, box_config) as box:
            await asyncio.wait_for(box.flush(), 60)
            status = box.status()
        held = await stored(admin, ["s0", "s1"])
    copies = Counter(i for ids in held.values() for i in ids)
    if role is Role.ADMIN:
        assert held == by_subject(events) and status.unverified == 0
        assert status.duplicates == 30, "found in the stream, not sent again"
    else:
        assert status.unverified == 30, "every one sent again unchecked is counted"
        assert set(copies) == {e.id for e in events} and max(copies.values()) == 2


# -- crashes ----------------------------------------------------------------------------------


def _producer(server: EmbeddedNats, path: Path, n: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": str(random.randrange(1, 2**32))}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.outbox_producer", server.url, "crash", str(path), str(n)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill_after(proc: subprocess.Popen[str], puts: int) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("put ") and int(line.split()[1]) >= puts:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


@pytest.mark.parametrize("nats_up", [True, False], ids=["while-sending", "during-an-outage"])
async def test_a_producer_killed_at_any_moment_resumes_from_its_buffer_without_loss_or_copy(
    private_nats: EmbeddedNats, tmp_path: Path, nats_up: bool
) -> None:
    """SIGKILL twice at random points, then a run to the end; each run makes the same
    events (in another process, with another hash seed), as an adapter re-run would."""
    n = 1500
    path = tmp_path / "o.db"
    if not nats_up:
        private_nats.stop()
    rng = random.Random()
    for _ in range(2):
        await asyncio.to_thread(
            _kill_after, _producer(private_nats, path, n), rng.randrange(100, n)
        )
    if not nats_up:
        private_nats.start()
    proc = _producer(private_nats, path, n)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=240)
    assert proc.returncode == 0
    assert out.splitlines()[-1].endswith("reordered 0")
    log = await reader(private_nats, "crash")
    held = await stored(log, ["s0", "s1"])
    await log.close()
    assert held == by_subject(produce(n))


async def test_a_write_cut_short_by_a_crash_is_dropped_with_a_warning_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = produce(20)
    path = tmp_path / "o.db"
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    box = Outbox.open(path, never)
    await box.put(events[:10])
    await box.put(events[10:])
    # The files as a SIGKILL would leave them, then the last write cut short.
    for name in ("o.db", "o.db-wal"):
        shutil.copy(tmp_path / name, crashed / name)
    await box.close()
    wal = crashed / "o.db-wal"
    size = wal.stat().st_size
    with wal.open("r+b") as f:
        f.truncate(size - 1000)
    with caplog.at_level(logging.WARNING, logger="core.outbox"):
        again = Outbox.open(crashed / "o.db", never)
    torn = [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    assert torn and str(wal) in torn[0] and "offset" in torn[0]
    assert again.status().pending == 10, "the first put is whole"
    assert await again.put(events) == 10, "the run again makes the second put's events"
    await again.close()


async def test_a_clean_close_leaves_no_warning_and_the_waiting_events_for_next_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    async with Outbox.open(path, never) as box:
        await box.put(produce(30))
    assert not (tmp_path / "o.db-wal").exists()
    with caplog.at_level(logging.INFO, logger="core.outbox"):
        again = Outbox.open(path, never)
    assert not caplog.records
    assert again.status().pending == 30
    await again.close()


async def test_one_process_at_a_time_per_outbox_file(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", never)
    with pytest.raises(OutboxError, match="in use by another process"):
        Outbox.open(tmp_path / "o.db", never)
    await box.close()
    await Outbox.open(tmp_path / "o.db", never).close()  # free again


# -- hostile files ----------------------------------------------------------------------------


def _outbox_file(path: Path, n: int = 200) -> None:
    async def fill() -> None:
        async with Outbox.open(path, never) as box:
            await box.put(produce(n))

    asyncio.run(fill())


def _damage_page(path: Path) -> None:
    _outbox_file(path)
    with path.open("r+b") as f:
        f.seek(4096 * 2)  # the b-tree header of page 3
        f.write(b"\x0d" + b"\xff" * 7)


def _other_program(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 305419896")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()


def _no_application_id(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE pending (x)")
    db.commit()
    db.close()


def _tamper(sql: str, *args: object) -> object:
    def go(path: Path) -> None:
        _outbox_file(path, 5)
        db = sqlite3.connect(path)
        db.execute(sql, args)
        db.commit()
        db.close()

    return go


HOSTILE = {
    "random bytes": (lambda p: p.write_bytes(os.urandom(5000)), "offset 0"),
    "a header cut short": (
        lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(30)),
        "offset 46",
    ),
    "another program's database": (_other_program, "offset 68"),
    "a database with no application id": (_no_application_id, "offset 68"),
    "an added trigger": (
        _tamper("CREATE TRIGGER t AFTER INSERT ON pending BEGIN DELETE FROM done; END"),
        "schema",
    ),
    "a huge record": (
        _tamper("UPDATE pending SET payload = zeroblob(9000000) WHERE seq = 2"),
        "record seq 2",
    ),
    "a text record": (_tamper("UPDATE pending SET payload = 'x' WHERE seq = 3"), "record seq 3"),
    "a damaged page": (_damage_page, "offset"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
async def test_a_hostile_or_damaged_file_is_refused_naming_the_file_and_where(
    tmp_path: Path, kind: str
) -> None:
    make, where = HOSTILE[kind]
    path = tmp_path / "o.db"
    await asyncio.to_thread(make, path)  # type: ignore[operator]
    before = path.read_bytes()
    with pytest.raises(OutboxCorrupt) as refused:
        Outbox.open(path, never)
    message = str(refused.value)
    assert str(path) in message and where in message, message
    assert path.read_bytes() == before, "a file refused is left as it was"
    path.unlink()
    await Outbox.open(path, never).close()  # the lock was let go: the file can be replaced
