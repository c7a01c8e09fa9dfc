"""``/healthz`` and ``/readyz`` of an engine worker, beside its ``/metrics``.

Alive: the worker's loop goes round (it wakes every third of a lease time), so a process
whose loop is stuck is restarted. Ready: it is connected to NATS and its last round of
leases succeeded, so that a load balancer or an operator sees a worker that holds no
stores because it cannot reach the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rules.service.worker import Worker

Check = tuple[bool, str]


class Health:
    def __init__(self, lease_ttl_s: float) -> None:
        self.worker: Worker | None = None  # set once the worker runs
        self.stale_s = 3 * lease_ttl_s + 5  # three missed rounds, and a margin

    def _since(self, at: float) -> float:
        return time.monotonic() - at

    def live(self) -> Check:
        w = self.worker
        if w is None or not w.ticked_at:
            return True, "starting"
        if (late := self._since(w.ticked_at)) > self.stale_s:
            return False, f"the worker's loop has not gone round for {late:.0f} s"
        return True, "ok"

    def ready(self) -> Check:
        w = self.worker
        if w is None or not w.rebalanced_at:
            return False, "starting: no round of leases yet"
        if not w.log.nc.is_connected:
            return False, "not connected to NATS"
        if (late := self._since(w.rebalanced_at)) > self.stale_s:
            return False, f"no round of leases has succeeded for {late:.0f} s"
        return True, f"ok: {len(w.runners)} stores, rules {w.rules_version}"

    def app(self, metrics: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """A WSGI app: the two checks, and ``metrics`` (prometheus_client's) for the rest."""

        def serve(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path not in ("/healthz", "/readyz"):
                return metrics(environ, start)
            ok, why = self.live() if path == "/healthz" else self.ready()
            body = json.dumps({"status": "ok" if ok else "fail", "detail": why}).encode()
            start(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]

        return serve
