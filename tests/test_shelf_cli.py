"""``aisle shelf`` end to end against a real nats-server: a simulated slice of a day (its
floor in the log, its weighed slots' picks left out) and the simulator's load-cell JSON
lines, with malformed and hostile lines among them, become picks in the log whose
receipts, through the standard packs, are the true ones; run again, nothing new.
Readings on NATS core subjects; a change with nobody near is a review alert; mistakes
on the command line end it with exit code 2."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.config import Settings
from core.jetstream import connect
from core.layout import Layout, load_layout
from core.log import publish_in_order
from core.runtime import open_log
from rules.loader import load_rules
from rules.reference import Reference
from rules.service.partition import ServiceConfig
from simulator.day import Run, simulate, standard_packs
from simulator.loadcells import CellNoise, readings
from tests.conftest import server_url, set_up, unique_prefix

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
START = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
STORE = "corner-01"
runner = CliRunner()
_load_plugins()

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(LAYOUT)


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return set_up(
        {
            "AISLE_NATS_URL": server_url("embedded", request),
            "AISLE_PREFIX": unique_prefix(),
            "AISLE_DATA_DIR": str(tmp_path / "data"),
        }
    )


def weighed(layout: Layout, e: ev.Event) -> bool:
    slots = {(sh.id, sl.sku) for sh in layout.shelves for sl in sh.slots if sl.sensor}
    return isinstance(e, ev.ItemPicked | ev.ItemPutBack) and (e.data.shelf, e.data.sku) in slots


def shelf(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["shelf", "--layout", str(LAYOUT), *args], env=env)
    return result.exit_code, result.output


def business(env: dict[str, str]) -> list[ev.Event]:
    async def read() -> list[ev.Event]:
        async with open_log(Settings.from_env(env), read_only=True) as log:
            return [r.event async for r in log.replay(store=STORE)]

    return asyncio.run(read())


def receipts(layout: Layout, events: list[ev.Event], run: Run) -> dict[str, dict[str, int]]:
    """The standard packs over the log's raw events in event time (as a store's adapters
    deliver them live, each a second or two after it happened)."""
    raw = sorted((e for e in events if not e.derived), key=lambda e: e.at)
    reference = Reference.of(layout, members=run.members)
    engine = ServiceConfig("shelf-test").engine(load_rules(standard_packs(), reference))
    out = engine.process(raw)
    out.extend(engine.advance(STORE, raw[-1].at.timestamp() + 24 * 3600))
    assert not out.errors, out.errors
    return {
        d.data.cart: {line.sku: line.qty for line in d.data.lines}
        for d in out.derived
        if isinstance(d, ev.ReceiptIssued)
    }


def test_a_day_of_readings_becomes_the_true_receipts_and_again_adds_nothing(
    env: dict[str, str], corner: Layout, tmp_path: Path
) -> None:
    run = simulate(corner, START, hours=0.5, shoppers=20, seed=1)
    floor = [e for e in run.events if not weighed(corner, e)]
    truth = [e for e in run.events if weighed(corner, e)]
    assert len(truth) >= 5

    async def publish() -> None:
        async with open_log(Settings.from_env(env)) as log:
            await publish_in_order(log, floor)

    since = datetime.now(UTC) - timedelta(seconds=1)
    asyncio.run(publish())
    cells = tmp_path / "cells.jsonl"
    end = START + timedelta(hours=0.6)
    with cells.open("wb") as f:
        for k, r in enumerate(readings(corner, run.events, START, end, seed=1,
                                       noise=CellNoise(depth=20))):  # fmt: skip
            f.write(msgspec.json.encode(r) + b"\n")
            if k % 20_000 == 7:  # a gateway's garbage among them
                f.write(b'{"sensor": "fd-3", "grams": 12}\n')  # no time
                f.write(b"\x00\xff" * 3000 + b"\n")  # binary, longer than any reading
                f.write(b'{"sensor": "fd-9", "at": "2026-11-28T11:00:00Z", "grams": 1}\n')
    code, output = shelf(
        env, "--source", str(cells), "--positions-from", since.isoformat(),
        "--positions-wait", "3",
    )  # fmt: skip
    assert code == 0, output
    text = " ".join(output.split())
    assert "item.picked" in text and "skipped" in text
    log_events = business(env)
    picks = [e for e in log_events if weighed(corner, e)]
    assert len(picks) == len(truth) and all(p.source.startswith("fd-") for p in picks)
    assert not [e for e in log_events if e.type == "shelf.unresolved"]
    assert receipts(corner, log_events, run) == run.receipts()
    assert any(set(r) & {"cola-500ml", "orange-juice-1l", "iced-coffee-250ml",
                         "water-still-500ml", "water-sparkling-500ml"}
               for r in run.receipts().values())  # fmt: skip

    again, output = shelf(
        env, "--source", str(cells), "--positions-from", since.isoformat(),
        "--positions-wait", "3",
    )  # fmt: skip
    assert again == 0, output
    assert " 0 new" in " ".join(output.split()), "the outbox remembers what it published"
    assert Counter(e.id for e in business(env)) == Counter(e.id for e in log_events)


def test_readings_on_nats_subjects_with_nobody_near_become_a_review_alert(
    env: dict[str, str], corner: Layout
) -> None:
    prefix = env["AISLE_PREFIX"]
    t0 = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    lines = []
    for k in range(80):  # a cola off fd-3 at 3 s, no one on the floor
        grams = 6000.0 if k < 30 else 5460.0
        at = (t0 + timedelta(seconds=k / 10)).isoformat()
        lines.append(msgspec.json.encode({"sensor": "fd-3", "at": at, "grams": grams}))
    lines.insert(40, b"x" * 5000)  # hostile: one huge message
    lines.insert(41, b'{"sensor": "fd-3", "at": "2026-11-28T10:00:00Z", "grams": 1}')  # older
    lines.insert(42, b'{"sensor": "fd-3", "at": "2999-01-01T00:00:00Z", "grams": 1}')  # a clock

    def gateway() -> None:  # once the command listens, then it is stopped
        async def send() -> None:
            nc = await connect(env["AISLE_NATS_URL"])
            for k in range(0, len(lines), 10):  # ten lines a message
                await nc.publish(f"{prefix}.{STORE}.readings.fd-3", b"\n".join(lines[k : k + 10]))
            await nc.flush()
            await nc.close()

        time.sleep(3.0)
        asyncio.run(send())
        time.sleep(3.0)
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=gateway)
    sender.start()
    try:
        code, output = shelf(env, "--source", "nats", "--no-positions")
    finally:
        sender.join()
    assert code == 0, output
    (review,) = [e for e in business(env) if isinstance(e, ev.ShelfUnresolved)]
    assert review.subject == "fd-3" and review.source == "fd-3"
    assert review.data.picked and -545 < review.data.grams < -535
    assert "nobody at the shelf" in review.data.reason
    assert "3 skipped" in " ".join(output.split())
    assert "in the future" in " ".join(output.split())
    engine = ServiceConfig("t").engine(load_rules(standard_packs(), Reference.of(corner)))
    out = engine.process([review])
    out.extend(engine.advance(STORE, review.at.timestamp() + 3600))
    (alert,) = [d for d in out.derived if isinstance(d, ev.AlertRaised)]
    assert alert.data.alert == "shelf_review" and alert.data.labels["sensor"] == "fd-3"


def test_a_tcp_gateway_read_once_to_its_close(env: dict[str, str]) -> None:
    t0 = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    lines = b"".join(
        msgspec.json.encode(
            {"sensor": "fd-4", "at": (t0 + timedelta(seconds=k / 10)).isoformat(),
             "grams": 5000.0 if k < 30 else 2840.0}  # two juices (1080 g each) taken
        ) + b"\r\n"
        for k in range(60)
    )  # fmt: skip
    ready, done, port = threading.Event(), threading.Event(), [0]

    def gateway() -> None:
        async def serve(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(lines)
            await w.drain()
            w.close()

        async def main() -> None:
            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            port[0] = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:  # up until the command is done (a slow start found it gone)
                for _ in range(300):
                    if done.is_set():
                        break
                    await asyncio.sleep(0.1)

        asyncio.run(main())

    thread = threading.Thread(target=gateway)
    thread.start()
    ready.wait(5)
    try:
        code, output = shelf(env, "--source", f"tcp://127.0.0.1:{port[0]}", "--once",
                             "--no-positions", "--positions-wait", "0.5")  # fmt: skip
    finally:
        done.set()
        thread.join()
    assert code == 0, output
    (review,) = [e for e in business(env) if isinstance(e, ev.ShelfUnresolved)]
    assert review.source == "fd-4" and review.data.items == (
        ev.ShelfItem(sku="orange-juice-1l", qty=2),
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "--source: where the readings come from"),
        (["--source", "udp://x:1"], "unknown scheme 'udp'"),
        (["--source", "no-such.jsonl"], "no such file"),
        (["--source", "tcp://gw", "--positions-from", "noon"], "write tcp://HOST:PORT"),
        (["--source", "-", "--positions-from", "noon"], "'noon' is not an ISO date"),
    ],
)
def test_mistakes_on_the_command_line_end_it_with_the_reason(args: list[str], says: str) -> None:
    code, output = shelf({"AISLE_NATS_URL": "nats://127.0.0.1:1"}, *args)
    assert code == 2 and says in " ".join(output.split()), output


def test_a_layout_without_weighed_slots_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    lines = LAYOUT.read_text().splitlines()
    bare.write_text(
        "\n".join(x.split(", sensor:")[0] + "}" if ", sensor:" in x else x for x in lines)
    )

    result = runner.invoke(app, ["shelf", "--layout", str(bare), "--source", "-"])
    assert result.exit_code == 2 and "has no weighed slot" in result.output
