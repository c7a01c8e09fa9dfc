"""Load-cell readings: the one format the shelf adapter reads, and where it reads it from.

A reading is one JSON object on a line of its own (``docs/adapters.md``)::

    {"sensor": "fd-3", "at": "2026-11-28T11:00:00.100Z", "grams": 5123.4}

``sensor`` is the id a slot's ``sensor`` names in the layout, ``at`` an ISO 8601 time with
its offset, ``grams`` the load on the cell. Other fields are ignored (a gateway may add a
sequence number, a raw count). The readings come from a serial line (``serial://``,
pyserial, an optional dependency), a TCP stream of JSON lines (``tcp://HOST:PORT``), NATS
core subjects (``nats://SUBJECT``, each message one or more lines) or a file (a path, or
``-`` for standard input).

What comes in is not trusted: a line longer than ``max_line`` bytes is cut off and
skipped up to its end, and every line that is not a reading (bad JSON, a field missing or
out of range, a time without an offset) is counted and logged with the reason and where
it was (the source and the line's number), never raised: one bad line from a gateway
must not stop a store's shelves. Only the first ``LOGGED`` of a source are logged line by
line, then one in ``LOG_EVERY``: a gateway gone mad cannot fill the disk with log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from msgspec import Meta

__all__ = [
    "MAX_LINE",
    "LineReader",
    "Reading",
    "ReadingSource",
    "SourceSpecError",
    "nats_source",
    "source_from",
]

log = logging.getLogger(__name__)

MAX_LINE = 1024
"""The longest line taken, in bytes: a reading is under 100."""
LOGGED = 20
LOG_EVERY = 1000
CHUNK = 64 * 1024


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """One reading of one load cell (the simulator's ``simulator/loadcells.py`` writes them)."""

    sensor: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    at: Annotated[datetime, Meta(tz=True)]
    grams: Annotated[float, Meta(ge=-1e6, le=1e6)]


_decoder = msgspec.json.Decoder(Reading)


@dataclass
class LineReader:
    """Bytes in (any chunking), readings out; what is not a reading is counted by reason."""

    source: str
    max_line: int = MAX_LINE
    lines: int = 0  # lines seen, bad ones included
    bad: Counter[str] = field(default_factory=Counter)  # reason -> lines
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False  # inside a line that was too long: up to its end
    numbers: list[int] = field(default_factory=list)
    """The line number of each reading the last ``feed`` or ``end`` returned."""

    @property
    def malformed(self) -> int:
        return sum(self.bad.values())

    def feed(self, chunk: bytes) -> list[Reading]:
        """The readings completed by ``chunk``."""
        out: list[Reading] = []
        self.numbers = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                self._buf += chunk[start:end]
                self._line(bytes(self._buf), out)
            self._buf.clear()
            start = end + 1
        if not self._skipping:
            self._buf += chunk[start:]
            if len(self._buf) > self.max_line:
                self.lines += 1
                self._reject(f"line longer than {self.max_line} bytes")
                self._buf.clear()
                self._skipping = True
        return out

    def end(self) -> list[Reading]:
        """The source ended: its last line, if it had no newline."""
        out: list[Reading] = []
        self.numbers = []
        if self._buf and not self._skipping:
            self._line(bytes(self._buf), out)
        self._buf.clear()
        self._skipping = False
        return out

    def _line(self, line: bytes, out: list[Reading]) -> None:
        self.lines += 1  # blank ones too: the count is the line's number in a file
        line = line.strip()
        if not line:  # a keep-alive
            return
        if len(line) > self.max_line:
            self._reject(f"line longer than {self.max_line} bytes")
            return
        try:
            out.append(_decoder.decode(line))
            self.numbers.append(self.lines)
        except msgspec.ValidationError as exc:
            self._reject(str(exc).replace("`$.", "`"))
        except msgspec.DecodeError as exc:
            self._reject(f"not JSON ({exc})")

    def reject(self, reason: str, line: int | None = None) -> None:
        """A reading that parsed but cannot be used (an unknown sensor, out of order)."""
        self._reject(reason, line)

    def _reject(self, reason: str, line: int | None = None) -> None:
        kind = reason.split(" - ")[0].split("(")[0].strip()[:80]
        self.bad[kind] += 1
        n = self.malformed
        if n <= LOGGED or n % LOG_EVERY == 0:
            where = f"{self.source}:{line if line is not None else self.lines}"
            more = f" ({n:,} so far)" if n > LOGGED else ""
            log.warning("%s: reading skipped: %s%s", where, reason, more)


class SourceSpecError(ValueError):
    """A ``--source`` that names no reading source aisle can open."""


ReadingSource = Callable[[], AsyncIterator[bytes]]
"""Opens the source: its bytes as they come, ending when the source ends."""


def source_from(spec: str, *, reconnect: bool = True) -> tuple[str, ReadingSource]:
    """A source of reading bytes, and its name for the log lines, from a ``--source``:
    ``tcp://HOST:PORT``, ``serial://DEVICE?baud=N``, a file path or ``-``. A TCP stream
    that closes is opened again (``reconnect``), unless it was asked to end. NATS
    subjects are the shelf command's (they need its connection: ``nats_source``)."""
    url = urlsplit(spec)
    scheme = url.scheme.lower()
    if scheme == "tcp":
        if not url.hostname or url.port is None:
            raise SourceSpecError(f"--source {spec!r}: write tcp://HOST:PORT")
        host, port = url.hostname, url.port
        return spec, lambda: _tcp(host, port, reconnect)
    if scheme == "serial":
        device = (url.netloc + url.path) or ""
        if not device:
            raise SourceSpecError(f"--source {spec!r}: write serial:///dev/ttyUSB0?baud=115200")
        query = parse_qs(url.query)
        unknown = set(query) - {"baud"}
        if unknown:
            raise SourceSpecError(f"--source {spec!r}: unknown option {sorted(unknown)[0]!r}")
        try:
            baud = int(query.get("baud", ["115200"])[0])
        except ValueError:
            raise SourceSpecError(f"--source {spec!r}: baud is a number") from None
        _serial_module(spec)  # fails now, not at the first read
        return spec, lambda: _serial(device, baud)
    if scheme == "nats":
        raise SourceSpecError(f"--source {spec!r}: NATS subjects need the log's connection")
    if spec == "-":
        return "stdin", lambda: _file(None)
    if scheme and len(scheme) > 1:
        raise SourceSpecError(
            f"--source {spec!r}: unknown scheme {scheme!r} (tcp://, serial://, nats://, a file)"
        )
    path = Path(spec)
    if not path.is_file():
        raise SourceSpecError(f"--source {spec!r}: no such file")
    return str(path), lambda: _file(path)


async def _file(path: Path | None) -> AsyncIterator[bytes]:
    """A file's bytes (or standard input's), read off the event loop."""
    stream = sys.stdin.buffer if path is None else path.open("rb")
    try:
        while chunk := await asyncio.to_thread(stream.read1, CHUNK):  # type: ignore[attr-defined]
            yield chunk
    finally:
        if path is not None:
            stream.close()


async def _tcp(host: str, port: int, reconnect: bool) -> AsyncIterator[bytes]:
    """A TCP stream of lines; opened again after it closes or fails (``reconnect``), a
    second later, then up to 30 s between tries while it stays away."""
    pause = 1.0
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=CHUNK)
        except OSError as exc:
            if not reconnect:
                raise
            log.warning("tcp://%s:%d: %s; trying again in %.0f s", host, port, exc, pause)
            await asyncio.sleep(pause)
            pause = min(30.0, pause * 2)
            continue
        log.info("tcp://%s:%d: connected", host, port)
        pause = 1.0
        try:
            while chunk := await reader.read(CHUNK):
                yield chunk
        except OSError as exc:
            log.warning("tcp://%s:%d: %s", host, port, exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not reconnect:
            return
        log.warning("tcp://%s:%d: closed; opening it again in %.0f s", host, port, pause)
        yield b"\n"  # a line cut by the close is no reading: end it here
        await asyncio.sleep(pause)


async def nats_source(nc: Any, subject: str, pending: int = 10_000) -> AsyncIterator[bytes]:
    """The payloads of NATS core messages on ``subject`` (wildcards allowed), each ended
    as a line. At most ``pending`` messages wait: beyond that they are dropped and
    counted in the log, rather than a flood held in memory."""
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=pending)
    dropped = 0

    async def take(msg: Any) -> None:
        nonlocal dropped
        try:
            queue.put_nowait(msg.data + b"\n")
        except asyncio.QueueFull:
            dropped += 1
            if dropped == 1 or dropped % LOG_EVERY == 0:
                log.warning("nats %s: %d messages dropped, the adapter is behind", subject, dropped)

    sub = await nc.subscribe(subject, cb=take)
    log.info("nats: reading %s", subject)
    try:
        while True:
            yield await queue.get()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _serial_module(spec: str) -> Any:
    try:
        import serial
    except ImportError:
        raise SourceSpecError(
            f"--source {spec!r}: a serial line needs pyserial (pip install 'aisle[shelf]')"
        ) from None
    return serial


async def _serial(device: str, baud: int) -> AsyncIterator[bytes]:
    """A serial line's bytes, read in a thread (pyserial blocks) a chunk at a time."""
    serial = _serial_module(device)
    try:
        port = await asyncio.to_thread(serial.serial_for_url, device, baudrate=baud, timeout=0.5)
    except (serial.SerialException, ValueError) as exc:
        raise SourceSpecError(f"--source serial://{device}: {exc}") from None
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(port.read, 4096)
            except serial.SerialException as exc:
                log.warning("serial://%s: %s: the line ended", device, exc)
                return
            if chunk:
                yield chunk
    finally:
        port.close()
