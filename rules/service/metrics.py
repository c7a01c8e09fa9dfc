"""The engine's Prometheus metrics, in a registry of its own (no process-wide state)."""

from __future__ import annotations

import contextlib
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, make_wsgi_app

from rules.service.health import Health

SOURCE_LABELS = 32  # sources per store with a series of their own; the rest are "other"


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        by = ["store"]
        self.events_in = Counter(
            "aisle_engine_events_in", "Raw events read from the log", by, registry=r
        )
        self.derived_out = Counter(
            "aisle_engine_derived_out", "Derived events published", by, registry=r
        )
        self.late = Counter(
            "aisle_engine_late_events",
            "Events too late to apply (set aside), by the source that sent them",
            ["store", "source"],
            registry=r,
        )
        # Per store, the sources given a label so far: a bound on the series, as anyone
        # who can publish can name a source.
        self._labelled: dict[str, set[str]] = {}
        self.deadletters = Counter(
            "aisle_engine_deadletter_events", "Payloads refused on the way in", by, registry=r
        )
        self.preempted = Counter(
            "aisle_engine_preempted_events",
            "Derived events whose message id another message had taken (a forgery or a "
            "collision), stored again under a fresh one",
            by,
            registry=r,
        )
        self.rule_errors = Counter(
            "aisle_engine_rule_errors", "Rules that failed on an event", by, registry=r
        )
        self.lag_events = Gauge(
            "aisle_engine_lag_events", "Messages in the log not yet applied", by, registry=r
        )
        self.lag_seconds = Gauge(
            "aisle_engine_lag_seconds",
            "Age of the newest applied message when it was applied",
            by,
            registry=r,
        )
        self.snapshot_age = Gauge(
            "aisle_engine_snapshot_age_seconds",
            "How long the oldest applied event no snapshot holds has waited (0: none waits)",
            by,
            registry=r,
        )
        self.checkpoints = Counter(
            "aisle_engine_checkpoints", "Checkpoints committed", by, registry=r
        )
        self.stores = Gauge("aisle_engine_stores", "Stores this worker runs", registry=r)
        self.consumers = Gauge(
            "aisle_engine_consumers",
            "NATS consumers this worker reads through: its stores' and its watchers'",
            registry=r,
        )
        self.watchers_started = Gauge(
            "aisle_engine_lease_watchers_started",
            "Watchers of the lease bucket started since the worker began (one a minute)",
            registry=r,
        )
        self.invalid_stores = Gauge(
            "aisle_engine_invalid_store_ids",
            "Store tokens in the log's subjects that are not store ids (not read)",
            registry=r,
        )
        self.rules = Info("aisle_engine_rules", "The rule set this worker runs", registry=r)

    def source_label(self, store: str, source: str) -> str:
        """``source`` as the label of its store's series: its own name for the first
        ``SOURCE_LABELS`` sources, then ``other``."""
        named = self._labelled.setdefault(store, set())
        if source in named:
            return source
        if len(named) < SOURCE_LABELS:
            named.add(source)
            return source
        return "other"

    def open(self, store: str) -> None:
        """A store taken: its counters are on /metrics from 0, so that an alert on their
        increase (``examples/monitoring``) has a series before the first one counts."""
        for counter in (
            self.events_in, self.derived_out, self.deadletters, self.preempted, self.rule_errors
        ):  # fmt: skip
            counter.labels(store=store)

    def forget(self, store: str) -> None:
        """A store moved away: its series go with it (the new owner reports them)."""
        for gauge in (self.lag_events, self.lag_seconds, self.snapshot_age):
            with contextlib.suppress(KeyError):
                gauge.remove(store)

    def serve(self, port: int, addr: str = "127.0.0.1", health: Health | None = None) -> int:
        """Serve ``/metrics`` (and ``health``'s ``/healthz`` and ``/readyz``) over HTTP, in
        a thread; returns the port (useful with ``port=0``)."""
        app = make_wsgi_app(self.registry)
        if health is not None:
            app = health.app(app)
        server = make_server(addr, port, app, _Threading, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return int(server.server_port)


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """A scrape every few seconds is not news."""
