"""A producer for the crash tests: puts the same events on every run, through an outbox.

    python -m tests.outbox_producer URL PREFIX PATH EVENTS

Prints ``put <n> published <m>`` after each put, and ``done`` once the log has them all.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from core.config import LogConfig
from core.outbox import Outbox, OutboxConfig
from tests.outboxkit import opener, produce


async def main(url: str, prefix: str, path: Path, n: int) -> None:
    events = produce(n)
    config = LogConfig(prefix=prefix, publish_timeout_s=1.0)
    async with Outbox.open(path, opener(url, config), OutboxConfig(batch=50)) as outbox:
        for i in range(0, n, 20):
            await outbox.put(events[i : i + 20])
            print(f"put {i + 20} published {outbox.status().published}", flush=True)
            await asyncio.sleep(0.005)
        await outbox.flush()
        s = outbox.status()
        print(f"done published {s.published} known {s.known} reordered {s.reordered}", flush=True)


if __name__ == "__main__":
    url, prefix, path, n = sys.argv[1:5]
    asyncio.run(main(url, prefix, Path(path), int(n)))
