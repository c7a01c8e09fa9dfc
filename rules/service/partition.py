"""One store on one worker: read its raw events, apply the rules, publish, ack, checkpoint.

The order of effects is what makes the output exactly-once:

1. read a batch from the store's two durable consumers, merged in arrival order;
2. apply it to the engine (a refused payload goes to the dead letters, a late event to the
   late subject, each with its reason, and the store carries on);
3. wait for the log to confirm the previous batch's output, and ack that batch's input
   (cumulative acks: its last message per stream);
4. send what the rules derived from this batch, with their deterministic ids: it is
   confirmed while the next batch is read and applied;
5. every N events or T seconds, confirm what is outstanding and commit a checkpoint: the
   store's engine state with the sequences it has applied.

After a crash the next owner restores the checkpoint and reads on from its sequences: the
engine derives again what it derived after the checkpoint, with the same ids. Those the
log already holds (it reads the store's derived events published since the checkpoint)
are not published again, even past the server's duplicate window.

Nothing forged or stray is applied: a payload whose type or store is not its subject's,
or dated beyond ``max_future_s`` after the log stored it, goes to the dead letters; a
derived event the log would refuse (over the server's payload limit, say) is its rule's
error and a dead letter, not a store that stops; and a message on which the engine itself
fails ``max_strikes`` times goes to the dead letters, so a store never loops on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from core import events as ev
from core.jetstream import ELECTION_S, JetStreamLog, Refusal, SubjectFilter, electing
from core.log import DeadLetter, Stream
from core.merge import ArrivalMerge
from core.pubacks import Sending
from core.puller import Delivered, Puller
from rules.engine import Engine, EngineFailure, Output, RuleError, RuleSet
from rules.service.checkpoints import Checkpoint, Checkpoints, Pacer
from rules.service.metrics import EngineMetrics
from rules.snapshot import restore, snapshot

log = logging.getLogger("aisle.engine")

# The engine's input: each stream with the raw types it holds.
INPUTS = (
    (Stream.EVENTS, tuple(sorted(ev.RAW_TYPES - ev.SAMPLE_TYPES))),
    (Stream.SAMPLES, tuple(sorted(ev.SAMPLE_TYPES))),
)


Input = tuple[Delivered, ev.Event | ev.EventError | None]
_FIRST = float("-inf")
SOURCE_IDLE_S = 10.0  # ServiceConfig's and `aisle engine run --source-idle`'s default
MAX_FUTURE_S = 5.0  # ServiceConfig's and `--max-future`'s; LogConfig.max_future_s's too


@dataclass(frozen=True)
class ServiceConfig:
    """How a worker runs; every value has a flag on ``aisle engine run``."""

    worker: str
    lateness_s: float = 2.0
    source_idle_s: float = SOURCE_IDLE_S  # how long a quiet source holds the store back
    batch: int = 1000
    checkpoint_every: int = 20_000  # events
    checkpoint_s: float = 5.0
    lease_ttl_s: float = 6.0
    checkpoint_budget: float = 0.05  # of the time, at most, for all stores' checkpoints
    stores: tuple[str, ...] = ()  # empty: every store the log holds
    # How far an event may be dated after the log stored it (clock skew of its source);
    # measured against the stored time, so a replay decides alike. Keep it equal to the
    # log's ``LogConfig.max_future_s``, which the publisher and offline replays use; and
    # below the idle bound less the lateness (``clock_conflict``).
    max_future_s: float = MAX_FUTURE_S
    max_strikes: int = 3  # failures of the engine on one message before it is set aside
    rule_errors_per_minute: int = 20  # logged per store; the rest are counted only

    def engine(self, rules: RuleSet) -> Engine:
        """An engine that applies events as this service does: its lateness and idle bound.
        The worker runs it; a QA scenario or the demo runs it too, over the events in the
        order the service applies them (``core.log.read_arrived``), to derive what it would."""
        return Engine(rules, lateness_s=self.lateness_s, source_idle_s=self.source_idle_s)

    def clock_conflict(self) -> str | None:
        """Why the clock settings let one event blind a store, or None.

        An event dated ``max_future_s`` ahead (allowed: a clock a little fast, or anyone who
        may publish) moves its store's newest time that far. Every source more than
        ``source_idle_s`` behind it then stops holding the watermark back, which jumps, and
        their next events are late. A source within the lateness of the present must stay
        active: ``max_future_s + lateness_s < source_idle_s``. With one clock per store
        (``source_idle_s`` 0) the watermark follows the newest event itself: then
        ``max_future_s <= lateness_s``.
        """
        f, lateness, idle = self.max_future_s, self.lateness_s, self.source_idle_s
        if idle == 0 and f > lateness:
            return (
                f"--max-future {f:g} is over --lateness {lateness:g} with one clock per store "
                "(--source-idle 0): one event dated that far ahead would make the real "
                "events of its store late; lower --max-future or raise --lateness"
            )
        if idle > 0 and f + lateness >= idle:
            return (
                f"--max-future {f:g} plus --lateness {lateness:g} is not below --source-idle "
                f"{idle:g}: one event dated that far ahead would put every other source of "
                "its store behind the idle bound, and their events would be late; lower "
                "--max-future (keep clocks in sync, NTP) or raise --source-idle"
            )
        return None


@dataclass
class Strikes:
    """How often the engine failed on each message, per store, kept by the worker across
    the store's restarts: after ``limit`` failures the message is set aside.

    An exception the engine does not catch leaves a store's state unknown: the store
    stops and restarts from its checkpoint, and without a count it would fail on the same
    message forever. Counts live in the worker's memory: a store that moves to another
    worker is given ``limit`` more tries there.
    """

    limit: int = 3
    counts: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)

    def note(self, store: str, event_id: str, error: str) -> int:
        n = self.counts.get((store, event_id), (0, ""))[0] + 1
        self.counts[(store, event_id)] = (n, error)
        return n

    def out(self, store: str, event_id: str) -> str | None:
        """Why the event is set aside, if the engine has failed on it ``limit`` times."""
        n, error = self.counts.get((store, event_id), (0, ""))
        return f"the engine failed on it {n} times: {error}" if n >= self.limit else None


class _Budget:
    """At most ``per_minute`` log lines a minute; then a count of those held back, so a
    rule that fails on every event cannot flood the log."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.window = 0.0
        self.used = 0
        self.held = 0

    def take(self, now: float) -> tuple[bool, int]:
        """(may log now, how many were held back in the window that just ended)."""
        held = 0
        if now - self.window >= 60.0:
            self.window, self.used, held, self.held = now, 0, self.held, 0
        if self.used < self.per_minute:
            self.used += 1
            return True, held
        self.held += 1
        return False, held


@dataclass(frozen=True)
class _Unconfirmed:
    """A batch applied whose output the log has not confirmed yet (nor its input acked)."""

    sending: Sending | None
    last: list[Delivered | None]  # per input stream, the batch's last message


def consumer_name(store: str, stream: Stream, worker: str = "") -> str:
    return f"engine_{store}_{stream.value}_{worker}"


class StoreRunner:
    def __init__(
        self,
        store: str,
        log: JetStreamLog,
        engine: Engine,
        checkpoints: Checkpoints,
        metrics: EngineMetrics,
        config: ServiceConfig,
        pacer: Pacer,
        strikes: Strikes | None = None,
    ) -> None:
        """``pacer``: the checkpoint time this store shares with the worker's others;
        ``strikes``: the worker's counts of the engine's failures, kept across restarts."""
        self.store = store
        self.log = log
        self.engine = engine
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.config = config
        self.seqs = [0] * len(INPUTS)
        self.derived_seq = 0
        self.revision = 0
        self.checkpoint: Checkpoint | None = None
        self.since_checkpoint = 0
        self.checkpointed_at = time.monotonic()
        self.uncovered_since = 0.0  # when the first event no snapshot holds was applied
        self.pacer = pacer
        self.strikes = strikes if strikes is not None else Strikes(config.max_strikes)
        self._errors_logged = _Budget(config.rule_errors_per_minute)
        self._unconfirmed: _Unconfirmed | None = None  # the last batch, until settled
        self._published: set[str] = set()  # derived ids the log had when this run began
        self._pullers: list[Puller] = []
        self._wanted: SubjectFilter | None = None  # where the server cannot filter
        prefix = log.config.prefix
        self._subjects = {t: f"{prefix}.{store}.{t}" for _, ts in INPUTS for t in ts}
        self._merge: ArrivalMerge[Input] | None = None
        self.stopping = False

    async def open(self) -> None:
        """Restore the checkpoint (if any) and start reading right after it."""
        cp, state, self.revision = await self.checkpoints.load(self.store)
        if cp is not None:
            restore(self.engine, state)
            self.checkpoint = cp
            self.seqs = list(cp.seqs)
            self.derived_seq = cp.derived_seq
        self._published = {
            r.event.id
            async for r in self.log.replay(
                store=self.store,
                types=sorted(ev.DERIVED_TYPES),
                from_seq=self.derived_seq + 1,
            )
        }
        for (stream, types), seq in zip(INPUTS, self.seqs, strict=True):
            name = consumer_name(self.store, stream, self.config.worker)
            await self.log.drop_consumers(
                stream, consumer_name(self.store, stream), keep=name
            )  # fences out a previous owner
            puller, client_filter = await self.log.engine_consumer(
                name, stream, store=self.store, types=types, start_seq=seq + 1
            )
            self._pullers.append(puller)
            if client_filter is not None:
                self._wanted = SubjectFilter(
                    f"{self.log.config.prefix}.{self.store}.{t}" for _, ts in INPUTS for t in ts
                )
        self._merge = ArrivalMerge(self._pullers, self._read, batch=self.config.batch)
        # A random phase: the stores of a worker must not all checkpoint at once (each
        # snapshot holds the event loop).
        self.checkpointed_at = time.monotonic() - random.uniform(0, self.config.checkpoint_s)
        log.info(
            "store opened",
            extra={
                "store": self.store,
                "from_seqs": self.seqs,
                "restored": cp is not None,
                "already_published": len(self._published),
            },
        )

    async def step(self, timeout_s: float = 1.0) -> int:
        """Read and apply one batch, then publish its output once the previous batch's is
        confirmed (and that batch's input acked); returns how many messages it held.

        While the log stores one batch's output, the next is read and applied: the acks
        are awaited only after that. One batch's output is confirmed before the next is
        sent, so the log keeps the order in which the rules derived.
        """
        assert self._merge is not None
        # Nothing there yet: settle the last batch (ack its input) before waiting, not after.
        batch = await self._merge.next(self.config.batch, timeout_s, idle=self.settle)
        if not batch:
            await self.settle()
            await self.maybe_checkpoint()
            return 0
        last: list[Delivered | None] = [None] * len(INPUTS)
        events: list[ev.Event] = []
        refused: list[DeadLetter] = []
        strikes = self.strikes
        for i, (d, item) in batch:
            if d.seq <= self.seqs[i]:
                continue  # a redelivery of what was applied already
            last[i], self.seqs[i] = d, d.seq
            if strikes.counts and isinstance(item, ev.Event):
                struck = strikes.out(self.store, item.id)
                if struck is not None:
                    item = ev.EventError("$", struck)
            if isinstance(item, ev.EventError):
                refused.append(
                    DeadLetter(
                        store=self.store,
                        field=item.field,
                        reason=item.reason,
                        payload=d.msg.data,
                        source="engine",
                    )
                )
            elif item is not None:
                events.append(item)
        feed = iter(events)
        try:
            out = self.engine.process(feed)
        except Exception as exc:  # not a rule's (the engine catches those): a bug, a poison
            taken = len(events) - operator.length_hint(feed)
            culprit = _culprit(exc, events[taken - 1] if taken else None)
            if culprit is not None:
                self._strike(culprit, exc)
            raise
        derived = []
        for d in out.derived:
            if d.id in self._published:
                self._published.discard(d.id)  # published before a crash: the log has it
            else:
                derived.append(d)
        if refused:
            await self.log.set_aside(refused)
            log.warning(
                "payloads refused",
                extra={
                    "store": self.store,
                    "count": len(refused),
                    "first": f"{refused[0].field}: {refused[0].reason}",
                },
            )
        if out.late:
            await self.log.set_aside([self._late(e) for e in out.late], late=True)
        await self.settle()
        unsent: list[Refusal] = []
        self._unconfirmed = _Unconfirmed(
            await self.log.send_many(derived, refused=unsent) if derived else None, last
        )
        if unsent:  # the log would refuse them: their rules' errors, kept as dead letters
            await self._unsendable(unsent, out)
        self._count(len(events) + len(refused), len(derived) - len(unsent), out, refused, last)
        if batch and not self.since_checkpoint:
            self.uncovered_since = time.monotonic()
        self.since_checkpoint += len(batch)
        await self.maybe_checkpoint()
        return len(batch)

    async def settle(self) -> None:
        """Wait for the last batch's output to be confirmed, then ack its input."""
        if self._unconfirmed is None:
            return
        sending, last = self._unconfirmed.sending, self._unconfirmed.last
        if sending is not None:
            acks = await sending.confirmed()
            self.derived_seq = max(self.derived_seq, *(a.seq for a in acks))
            if sending.preempted:
                self.metrics.preempted.labels(self.store).inc(sending.preempted)
        self._unconfirmed = None
        for d in last:
            if d is not None:
                await d.msg.ack()

    def _read(self, d: Delivered) -> tuple[float, Input]:
        """A message's event time and what it holds, for the merge; a payload that is
        refused goes first (it has no time) and then to the dead letters."""
        if self._wanted is not None and not self._wanted(d.msg.subject):
            return _FIRST, (d, None)  # another store's, or derived: an old server sent it
        try:
            e = ev.decode(d.msg.data)
            if self._subjects.get(e.type) != d.msg.subject or e.store != self.store:
                ev.check_subject(e, d.msg.subject)  # a forged type, another store's payload
            at = e.at.timestamp()
            if at > d.ns * 1e-9 + self.config.max_future_s:
                ev.check_time(e, d.ns * 1e-9, self.config.max_future_s)
        except ev.EventError as exc:
            return _FIRST, (d, ev.subject_fault(d.msg.data, d.msg.subject) or exc)
        return at, (d, e)

    def _strike(self, culprit: ev.Event, exc: Exception) -> None:
        """Count a failure of the engine against ``culprit``: after ``max_strikes`` the
        store reads it as refused (``step``) and moves on."""
        n = self.strikes.note(self.store, culprit.id, _message(exc))
        log.error(
            "the engine failed on an event; the store restarts from its checkpoint",
            extra={
                "store": self.store,
                "event": culprit.id,
                "strikes": n,
                "error": _message(exc),
            },
        )

    async def _unsendable(self, unsent: list[Refusal], out: Output) -> None:
        for r in unsent:
            rule = getattr(r.event, "rule", None)
            rule_id = rule.id if rule is not None else r.event.source
            out.errors.append(RuleError(rule_id, r.event.id, f"not published: {r.error}"))
        await self.log.set_aside(
            [
                DeadLetter(
                    store=self.store,
                    field=r.error.field,
                    reason=f"derived by {r.event.source}, refused: {r.error.reason}",
                    payload=r.payload,
                    source=r.event.source,
                )
                for r in unsent
            ]
        )

    def _late(self, e: ev.Event) -> DeadLetter:
        p = self.engine.partitions[self.store]
        behind = p.watermark - e.at.timestamp()
        return DeadLetter(
            store=self.store,
            field="at",
            reason=f"late: {behind:.3f}s behind the store's watermark "
            f"(allowed lateness {self.config.lateness_s}s; the watermark followed "
            f"{p.held_by or 'no source'!r}; this event's source: {e.source!r})",
            payload=ev.encode(e),
            source=e.source,
        )

    def _count(
        self,
        n: int,
        derived: int,
        out: Output,
        refused: list[DeadLetter],
        last: list[Delivered | None],
    ) -> None:
        m, s = self.metrics, self.store
        m.events_in.labels(s).inc(n)
        m.derived_out.labels(s).inc(derived)
        if out.late:
            for source, n in Counter(m.source_label(s, e.source) for e in out.late).items():
                m.late.labels(s, source).inc(n)
        m.deadletters.labels(s).inc(len(refused))
        m.rule_errors.labels(s).inc(len(out.errors))
        if out.errors:
            self._log_errors(out.errors)
        newest = [d for d in last if d is not None]
        if newest:  # else every message was a redelivery
            m.lag_seconds.labels(s).set(max(0.0, time.time() - max(d.ns for d in newest) / 1e9))
            m.lag_events.labels(s).set(sum(d.pending for d in newest))

    def _log_errors(self, errors: list[RuleError]) -> None:
        now = time.monotonic()
        for e in errors:
            may, held = self._errors_logged.take(now)
            if held:
                log.warning(
                    "rule errors not logged (over the limit a minute)",
                    extra={"store": self.store, "count": held},
                )
            if may:
                log.warning(
                    "rule failed",
                    extra={
                        "store": self.store,
                        "rule": e.rule,
                        "event": e.event,
                        "error": e.message,
                    },
                )

    async def maybe_checkpoint(self) -> None:
        """Checkpoint after N events or T seconds, but no oftener than the budget allows:
        a snapshot grows with the day, and at most ``checkpoint_budget`` of the time goes
        to taking them, for all the worker's stores (``Pacer``)."""
        since = time.monotonic() - self.checkpointed_at
        due = since >= self.config.checkpoint_s or (
            self.since_checkpoint >= self.config.checkpoint_every
        )
        if self.since_checkpoint and due and self.pacer.may(self.store, self.checkpointed_at):
            await self.commit()
        # How long applied events have waited for a snapshot: what a restart would replay.
        # A quiet store whose snapshot holds everything has nothing waiting (0), however
        # long ago the snapshot was taken, so an alert on it does not fire for quiet.
        self.metrics.snapshot_age.labels(self.store).set(
            time.monotonic() - self.uncovered_since if self.since_checkpoint else 0.0
        )

    async def commit(self) -> None:
        """Checkpoint now (``LostStore`` if another worker has committed since)."""
        await self.settle()  # the sequences committed are those whose output is in the log
        for puller in self._pullers:  # ...read through consumers as the engine made them
            await puller.verify()  # (ConsumerTampered: start over from the last checkpoint)
        start = time.monotonic()
        state = snapshot(self.engine, [self.store])
        while True:  # a commit the cluster leaves unanswered in an election is tried again
            try:
                self.checkpoint, self.revision = await self.checkpoints.save(
                    self.store,
                    seqs=tuple(self.seqs),
                    derived_seq=self.derived_seq,
                    packs=dict(self.engine.rules.packs),
                    state=state,
                    revision=self.revision,
                    previous=self.checkpoint.snapshot if self.checkpoint else None,
                )
                break
            except Exception as exc:  # one that landed unanswered is then LostStore
                if not electing(exc) or time.monotonic() - start > ELECTION_S:
                    raise
                log.info("checkpoint unanswered; trying again", extra={"store": self.store})
                await asyncio.sleep(0.5)
        self.since_checkpoint = 0
        self.checkpointed_at = time.monotonic()
        self.pacer.spent(self.store, self.checkpointed_at - start)
        self.metrics.checkpoints.labels(self.store).inc()

    async def close(self, *, commit: bool) -> None:
        """Stop reading; with ``commit``, checkpoint first (a clean hand-over). Without, what
        is unconfirmed stays unacked: the next owner applies it again."""
        if commit and self.since_checkpoint:
            await self.commit()
        if self._unconfirmed is not None and self._unconfirmed.sending is not None:
            self._unconfirmed.sending.abandon()
        self._unconfirmed = None
        if self._merge is not None:
            await self._merge.close()
        for puller in self._pullers:
            with contextlib.suppress(Exception):  # the connection is going: nothing to stop
                await puller.stop()
        self._pullers.clear()
        self.pacer.forget(self.store)
        self.engine.drop(self.store)
        self.metrics.forget(self.store)


def _message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _culprit(exc: Exception, given_last: ev.Event | None) -> ev.Event | None:
    """The input event the engine was applying when it failed: the engine names it
    (``EngineFailure``). It is not always the one it was given last: with a lateness, an
    event waits in the buffer until a later one moves the watermark past it. A failure
    outside applying an event blames the event given last."""
    return exc.event if isinstance(exc, EngineFailure) else given_last
