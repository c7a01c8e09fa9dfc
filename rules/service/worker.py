"""An engine worker: takes its share of the stores, runs them, hands them over.

Stores are the partitions. A worker holds a lease per store it runs (``leases.py``), runs
one ``StoreRunner`` per store over one shared engine, renews its leases every third of
their time to live, and rebalances: it takes free stores up to its fair share and hands
back the excess when more workers join. A store moves like this:

- worker joins: the others see one more worker, checkpoint the stores above their new
  share and give their leases back; the newcomer takes them and restores the checkpoints;
- worker stops cleanly (SIGTERM): it checkpoints every store and gives the leases back;
- worker dies: its leases expire after their time to live, the others take its stores
  and restore the last checkpoints. Output ids are deterministic, so what the dead worker
  had derived after its checkpoint is derived again, and not published twice.

Rule deployments are watched in the rules bucket and swapped in between batches; a
deployment this worker refuses leaves it running the rules it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from pathlib import Path

from nats.js.kv import KeyValue

from core import events as ev
from core.jetstream import JetStreamLog, electing
from rules.engine import Engine, RuleSet
from rules.loader import PackError, load_rules
from rules.reference import Reference
from rules.service import deploy
from rules.service.checkpoints import Checkpoints, Pacer
from rules.service.leases import Board, Leases, WorkerStatus
from rules.service.metrics import EngineMetrics
from rules.service.partition import ServiceConfig, StoreRunner, Strikes

log = logging.getLogger("aisle.engine")
_store_id = re.compile(ev.STORE_PATTERN)


class Worker:
    def __init__(
        self,
        log_: JetStreamLog,
        reference: Reference,
        config: ServiceConfig,
        *,
        packs: list[Path] | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.log = log_
        self.reference = reference
        self.config = config
        self.packs = packs or []
        self.metrics = metrics or EngineMetrics()
        self.runners: dict[str, StoreRunner] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.rules_version = "local"
        self.started_at = time.time()
        # For /healthz and /readyz: when the loop last went round, and last rebalanced.
        self.ticked_at = self.rebalanced_at = 0.0
        self._renewed = 0.0
        self.engine: Engine | None = None
        self.pacer = Pacer(config.checkpoint_budget)  # shared by the worker's stores
        self.strikes = Strikes(config.max_strikes)  # outlives a store's restarts
        self._invalid: set[str] = set()  # store ids in subjects, refused (reported once)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        c = self.config
        kv = await self.log.key_value("engine_leases", ttl_s=c.lease_ttl_s)
        self.leases = Leases(kv, c.worker, Board(kv, c.lease_ttl_s), ttl_s=c.lease_ttl_s)
        await self.leases.alone(patience_s=c.lease_ttl_s / 3 + 2.0)  # a round, and some
        self.checkpoints = Checkpoints(
            await self.log.key_value("engine_checkpoints"),
            await self.log.object_store("engine_snapshots"),
        )
        # The admin creates the rules bucket; until it exists, the local packs run.
        self.rules_kv: KeyValue | None = None
        self._rules_said = ""  # what the worker last said about the bucket (said once)
        self.engine = c.engine(await self._first_rules())
        self._announce_rules()
        self._watching = asyncio.create_task(self._watch_rules())
        log.info("worker started", extra={"worker": c.worker, "rules": self.rules_version})
        if not self.log.many_filters:
            log.warning(
                "nats-server before 2.10: each store reads every store's business events; "
                "upgrade the server, or run few stores per worker",
                extra={"server": ".".join(map(str, self.log.server_version))},
            )
        try:
            while not stop.is_set():
                self.ticked_at = time.monotonic()
                try:
                    await self._rebalance()
                    self.rebalanced_at = time.monotonic()
                except Exception as exc:  # an election, a reconnect: leases expire, not workers
                    log.warning("rebalance failed; next round", extra={"error": repr(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), c.lease_ttl_s / 3)
        finally:
            self._watching.cancel()
            with contextlib.suppress(BaseException):
                await self._watching
            if self.leases.board:
                await self.leases.board.close()
            for store in list(self.runners):
                await self._hand_over(store)
            await self.leases.retire()
            log.info("worker stopped", extra={"worker": c.worker})

    async def _rebalance(self) -> None:
        if self._watching.done():  # the watch ended (a lost connection): watch again
            if not self._watching.cancelled() and self._watching.exception():
                log.warning("rules watch ended", extra={"error": repr(self._watching.exception())})
            self._watching = asyncio.create_task(self._watch_rules())
        await self._renew()
        for store, task in list(self.tasks.items()):
            if task.done():  # it failed (or lost its checkpoint to another worker)
                exc = task.exception() if not task.cancelled() else None
                log.error("store stopped", extra={"store": store, "error": repr(exc)})
                await self._drop(store)
                await self.leases.give_back(store)
        stores = self.config.stores or await self._stores_in_log()
        take, give = await self.leases.plan(stores)
        for store in give:
            await self._hand_over(store)
        for store in take:
            if await self.leases.take(store):
                await self._start(store)
            if time.monotonic() - self._renewed > self.config.lease_ttl_s / 3:
                await self._renew()  # opening many stores can take longer than a lease lives
        self.metrics.stores.set(len(self.runners))
        board = self.leases.board
        watchers = (not self._watching.done()) + bool(board and board.watching)
        self.metrics.consumers.set(self.log.open_consumers + watchers)
        if self.leases.board:
            self.metrics.watchers_started.set(self.leases.board.watchers)
        await self.leases.announce(self.status())

    async def _renew(self) -> None:
        self._renewed = time.monotonic()
        for store in await self.leases.renew():
            log.warning("lease lost", extra={"store": store, "worker": self.config.worker})
            await self._drop(store)

    def status(self) -> WorkerStatus:
        assert self.engine is not None
        return WorkerStatus(
            worker=self.config.worker,
            rules_version=self.rules_version,
            packs=dict(self.engine.rules.packs),
            stores=tuple(sorted(self.runners)),
            started_at=self.started_at,
            seen_at=time.time(),
        )

    async def _stores_in_log(self) -> list[str]:
        """Every store with raw events in the log (from the streams' subject counts).

        A subject's store token is not always a store id: anyone who can publish around
        the log can store ``aisle.bäd.item.picked``. Such a token cannot name a lease, a
        consumer or a checkpoint, so it is skipped and reported (once, and as a metric),
        and the worker runs the valid stores.
        """
        stores = set()
        for stats in await self.log.stats():
            if stats.name in (self.log.config.events_stream, self.log.config.samples_stream):
                stores.update(subject.split(".")[1] for subject in stats.subjects)
        invalid = {s for s in stores if not _store_id.match(s)}
        for store in sorted(invalid - self._invalid):
            log.warning(
                "a subject names an invalid store id; its messages are not read",
                extra={"store": store, "expected": ev.STORE_PATTERN},
            )
        self._invalid |= invalid
        self.metrics.invalid_stores.set(len(self._invalid))
        return sorted(stores - invalid)

    # -- stores ------------------------------------------------------------------------------

    async def _start(self, store: str) -> None:
        assert self.engine is not None
        runner = StoreRunner(
            store,
            self.log,
            self.engine,
            self.checkpoints,
            self.metrics,
            self.config,
            self.pacer,
            self.strikes,
        )
        try:
            await runner.open()
        except Exception as exc:
            _failed("store failed to open", exc, store)
            await runner.close(commit=False)
            await self.leases.give_back(store)
            return
        self.runners[store] = runner
        self.metrics.open(store)
        self.tasks[store] = asyncio.create_task(self._run_store(runner))
        log.info("store taken", extra={"store": store, "worker": self.config.worker})

    async def _run_store(self, runner: StoreRunner) -> None:
        while not runner.stopping:
            await runner.step(timeout_s=0.5)

    async def _hand_over(self, store: str) -> None:
        """Finish the batch at hand, checkpoint, close and give the lease back."""
        runner, task = self.runners.get(store), self.tasks.get(store)
        if runner is None or task is None:
            return
        runner.stopping = True
        with contextlib.suppress(Exception):
            await task
        try:
            await runner.close(commit=not task.cancelled() and task.exception() is None)
        except Exception as exc:
            _failed("checkpoint on hand-over failed", exc, store)
            await runner.close(commit=False)
        del self.runners[store], self.tasks[store]
        try:
            await self.leases.give_back(store)
        except Exception as exc:  # it will expire instead
            _failed("giving the lease back failed", exc, store)
        log.info("store handed over", extra={"store": store, "worker": self.config.worker})

    async def _drop(self, store: str) -> None:
        """Stop at once, without a checkpoint: the store is someone else's now."""
        runner, task = self.runners.pop(store, None), self.tasks.pop(store, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if runner is not None:
            await runner.close(commit=False)

    # -- rules -------------------------------------------------------------------------------

    async def _first_rules(self) -> RuleSet:
        try:
            bucket = self.log.config.bucket("rules")
            self.rules_kv = await deploy.rules_bucket(self.log.js, bucket)
            current = await deploy.deployed(self.rules_kv) if self.rules_kv else None
        except deploy.UnreadableDeployment as exc:
            if not self.packs:
                raise
            log.error("deployed rules unreadable; running local packs", extra={"errors": str(exc)})
            current = None
        if current is not None:
            try:
                ruleset = deploy.compile_deployment(current, self.reference)
                self.rules_version = current.version
                return ruleset
            except PackError as exc:
                if not self.packs:
                    raise
                log.error("deployed rules refused; running local packs", extra={"errors": str(exc)})
        if not self.packs:
            raise PackError([])  # the CLI says: deploy rules or pass --packs
        return load_rules(self.packs, self.reference)

    async def _watch_rules(self) -> None:
        """Follow the deployment; with no rules bucket (or a refused one), look again at
        the next rebalance, which starts this again once it has ended."""
        if self.rules_kv is None:
            bucket = self.log.config.bucket("rules")
            try:
                self.rules_kv = await deploy.rules_bucket(self.log.js, bucket)
                said = "" if self.rules_kv else f"no rules bucket {bucket}"
            except deploy.UnreadableDeployment as exc:
                said = str(exc)
            if said and said != self._rules_said:
                log.error(
                    "no usable rules bucket; running local packs until an admin deploys "
                    "(`aisle rules deploy`): this worker looks again at each rebalance",
                    extra={"reason": said, "rules": self.rules_version},
                )
            self._rules_said = said
            if self.rules_kv is None:
                return
        watcher = await self.rules_kv.watch(deploy.KEY)
        async for entry in watcher:
            if entry is None or not entry.value:
                continue
            try:
                found = deploy.decode(entry.value, entry.revision)
            except deploy.UnreadableDeployment as exc:
                log.error("deployment unreadable; rules unchanged", extra={"errors": str(exc)})
                continue
            if found.version == self.rules_version:
                continue
            assert self.engine is not None
            try:
                ruleset = deploy.compile_deployment(found, self.reference)
            except PackError as exc:
                log.error(
                    "deployment refused; rules unchanged",
                    extra={
                        "version": found.version,
                        "running": self.rules_version,
                        "errors": str(exc),
                    },
                )
                continue
            self.engine.reload(ruleset)  # between batches: process() never awaits
            self.rules_version = found.version
            self._announce_rules()
            await self.leases.announce(self.status())
            log.info("rules deployed", extra={"version": found.version, "packs": ruleset.packs})

    def _announce_rules(self) -> None:
        assert self.engine is not None
        self.metrics.rules.info(
            {
                "version": self.rules_version,
                **{f"pack_{k}": v for k, v in self.engine.rules.packs.items()},
            }
        )


def _failed(what: str, exc: Exception, store: str) -> None:
    """Log a store's step that failed: with its traceback if it is a bug, in one line if it
    is what a cluster electing a leader answers (the next round tries again)."""
    if electing(exc):
        log.warning(
            f"{what} (the cluster is electing a leader)", extra={"store": store, "error": repr(exc)}
        )
    else:
        log.exception(what, extra={"store": store})
