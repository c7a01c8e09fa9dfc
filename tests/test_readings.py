"""The reading format and its sources: JSON lines of sensor, time and grams, in any
chunking; malformed and hostile lines counted, logged with the reason and the line's
number, never raised; overlong lines cut off; readings from a file, a TCP stream and a
serial line (a pseudo-terminal, when pyserial is installed)."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.readings import LOGGED, LineReader, Reading, SourceSpecError, source_from
from simulator.loadcells import Reading as SimReading

T = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
GOOD = b'{"sensor": "fd-3", "at": "2026-11-28T11:00:00Z", "grams": 5123.4}'


def test_a_reading_is_a_json_line_of_sensor_time_and_grams_other_fields_ignored() -> None:
    r = LineReader("test")
    got = r.feed(GOOD + b"\n" + b'{"sensor":"fd-1","at":"2026-11-28T12:00:00+01:00",'
                 b'"grams":-3,"seq":17}\r\n')  # fmt: skip
    assert got == [
        Reading(sensor="fd-3", at=T, grams=5123.4),
        Reading(sensor="fd-1", at=T, grams=-3.0),
    ]
    assert r.lines == 2 and r.malformed == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"sensor": "fd-3", "grams": 1}', "missing required field `at`"),
        (b'{"sensor": "fd-3", "at": "2026-11-28T11:00:00", "grams": 1}', "timezone"),
        (b'{"sensor": "fd-3", "at": "2026-11-28T11:00:00Z", "grams": "heavy"}', "Expected `float`"),
        (b'{"sensor": "fd-3", "at": "2026-11-28T11:00:00Z", "grams": 1e300}', "<= 1000000"),
        (b'{"sensor": "fd 3; rm -rf", "at": "2026-11-28T11:00:00Z", "grams": 1}', "at `sensor`"),
        (b'{"sensor": "fd-3", "at": "2026-11-28T11:00:00Z", "grams": NaN}', "not JSON"),
        (b"[1, 2, 3]", "Expected `object`"),
        (b"\xff\xfe\x00garbage", "not JSON"),
    ],
)
def test_a_malformed_line_is_counted_and_logged_with_its_reason_and_number(
    line: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    r = LineReader("tcp://gw:7000")
    with caplog.at_level(logging.WARNING, logger="adapters.readings"):
        got = r.feed(GOOD + b"\n\n" + line + b"\n" + GOOD + b"\n")
    assert len(got) == 2 and r.malformed == 1 and r.lines == 4
    (message,) = [m for m in caplog.messages]
    assert message.startswith("tcp://gw:7000:3: reading skipped: ") and reason in message, message


def test_a_line_longer_than_the_bound_is_cut_off_and_the_next_one_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = LineReader("serial:///dev/ttyUSB0", max_line=128)
    with caplog.at_level(logging.WARNING, logger="adapters.readings"):
        got = []
        for _ in range(1000):  # a megabyte with no newline, in chunks
            got += r.feed(b"x" * 1000)
        got += r.feed(b"tail of it\n" + GOOD + b"\n")
    assert got == [Reading(sensor="fd-3", at=T, grams=5123.4)]
    assert r.bad == {"line longer than 128 bytes": 1} and r.lines == 2
    assert len(r._buf) < 200, "nothing of the long line kept"
    assert "serial:///dev/ttyUSB0:1: reading skipped: line longer than 128 bytes" in caplog.text


def test_a_flood_of_bad_lines_is_counted_in_full_and_logged_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = LineReader("nats:aisle.corner-01.readings.>")
    with caplog.at_level(logging.WARNING, logger="adapters.readings"):
        r.feed(b"{}\n" * 5000)
    assert r.malformed == 5000 and r.lines == 5000
    assert LOGGED <= len(caplog.records) <= LOGGED + 5
    assert "(5,000 so far)" in caplog.records[-1].getMessage()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(st.just(GOOD), st.binary(max_size=300), st.sampled_from([b"", b"\r", b"{"])),
        max_size=20,
    ),
    st.integers(1, 64),
)
def test_any_bytes_in_any_chunking_give_the_good_lines_and_never_raise(
    lines: list[bytes], size: int
) -> None:
    data = b"\n".join(lines) + b"\n"
    r = LineReader("fuzz", max_line=256)
    got = []
    for i in range(0, len(data), size):
        got += r.feed(data[i : i + size])
    got += r.end()
    whole = LineReader("fuzz", max_line=256)
    assert got == whole.feed(data) + whole.end()
    assert len(got) >= sum(1 for line in lines if line == GOOD)
    assert all(isinstance(x, Reading) for x in got)


def test_a_last_line_without_a_newline_is_read_at_the_end() -> None:
    r = LineReader("file")
    assert r.feed(GOOD) == []
    assert r.end() == [Reading(sensor="fd-3", at=T, grams=5123.4)]


async def collect(spec: str, **kw: bool) -> list[bytes]:
    _, open_source = source_from(spec, **kw)
    return [chunk async for chunk in open_source()]


def test_a_file_of_readings_is_read_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "cells.jsonl"
    path.write_bytes(GOOD + b"\n" + GOOD + b"\n")
    assert b"".join(asyncio.run(collect(str(path)))) == path.read_bytes()


def test_a_tcp_stream_of_readings_is_read_until_it_closes_with_once() -> None:
    async def go() -> list[Reading]:
        async def serve(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            for _ in range(3):  # a reading cut across two packets
                w.write(GOOD[:20])
                await w.drain()
                await asyncio.sleep(0.01)
                w.write(GOOD[20:] + b"\n")
            w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader = LineReader("tcp")
            got: list[Reading] = []
            for chunk in await collect(f"tcp://127.0.0.1:{port}", reconnect=False):
                got += reader.feed(chunk)
            return got

    assert asyncio.run(go()) == [Reading(sensor="fd-3", at=T, grams=5123.4)] * 3


def test_a_tcp_stream_that_closes_is_opened_again() -> None:
    async def go() -> int:
        connections = 0

        async def serve(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            w.write(GOOD[:30])  # cut off by the close: no reading, no harm
            w.write(b"\n" + GOOD + b"\n" if connections > 1 else b"")
            w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            _, open_source = source_from(f"tcp://127.0.0.1:{port}")
            reader, got = LineReader("tcp"), []
            async for chunk in open_source():
                got += reader.feed(chunk)
                if got:
                    break
            assert reader.malformed == 2  # the two cut lines
            return connections

    assert asyncio.run(go()) == 2


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tcp://gateway", "write tcp://HOST:PORT"),
        ("serial://", "serial:///dev/ttyUSB0"),
        ("udp://x:1", "unknown scheme 'udp'"),
        ("no/such/file.jsonl", "no such file"),
        ("serial:///dev/ttyS0?parity=E", "unknown option 'parity'"),
    ],
)
def test_a_source_that_names_nothing_openable_is_refused_with_the_reason(
    spec: str, says: str
) -> None:
    with pytest.raises(SourceSpecError, match=says.replace("?", r"\?")):
        source_from(spec)


def test_a_serial_line_gives_its_readings() -> None:
    pytest.importorskip("serial", reason="pyserial is not installed (pip install 'aisle[shelf]')")
    master, slave = os.openpty()
    device = os.ttyname(slave)

    async def go() -> list[Reading]:
        _, open_source = source_from(f"serial://{device}?baud=115200")
        reader, got = LineReader(device), []

        async def gateway() -> None:  # once the port is open (opening it empties it)
            await asyncio.sleep(0.5)
            os.write(master, GOOD + b"\n" + b"garbage\n" + GOOD + b"\n")

        sending = asyncio.create_task(gateway())
        chunks = open_source()
        async for chunk in chunks:
            got += reader.feed(chunk)
            if len(got) == 2:
                break
        await chunks.aclose()  # type: ignore[attr-defined]
        await sending
        assert reader.malformed == 1
        return got

    try:
        assert asyncio.run(go()) == [Reading(sensor="fd-3", at=T, grams=5123.4)] * 2
    finally:
        os.close(master)
        os.close(slave)


def test_the_simulators_readings_are_this_format() -> None:
    line = msgspec.json.encode(SimReading(sensor="fd-2", at=T, grams=1.5))
    assert LineReader("sim").feed(line + b"\n") == [Reading(sensor="fd-2", at=T, grams=1.5)]
