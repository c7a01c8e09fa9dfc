"""``aisle demo``: the store end to end, as far as aisle goes today.

It loads the example convenience store, publishes scripted visits into the log (the
embedded nats-server unless ``AISLE_NATS_URL`` is set), shows that a malformed event lands
on the dead-letter subject, replays the store from the log and prints what an operator
would want to see.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from core import events as ev
from core.config import Settings
from core.layout import Layout, load_layout
from core.log import Rejected
from core.runtime import open_log
from simulator.scripted import plan, visit_events

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
out = Console()


async def demo(settings: Settings, layout: Layout, shoppers: int, day: datetime) -> None:
    visits = plan(layout, shoppers, day)
    events = [e for v in visits for e in visit_events(layout, v)]
    store = layout.store.id
    async with open_log(settings, name="aisle-demo") as log:
        where = settings.nats_url or f"embedded nats-server in {settings.data_dir}/"
        out.print(f"[bold]aisle demo[/]: {layout.store.name} ({store}), log on {where}")
        first_seq: dict[str, int] = {}
        new = 0
        with Progress(console=out, transient=True) as progress:
            task = progress.add_task("publishing", total=len(events))
            for i in range(0, len(events), 500):
                for ack in await log.publish_many(events[i : i + 500]):
                    first_seq.setdefault(ack.stream, ack.seq)
                    new += not ack.duplicate
                progress.advance(task, min(500, len(events) - i))
        out.print(
            f"published {len(events):,} events "
            f"({new:,} new, {len(events) - new:,} already in the log)"
        )

        try:
            await log.publish_raw(
                b'{"type":"item.picked","store":"%s","data":{"sku":""}}' % store.encode()
            )
        except Rejected as exc:
            out.print(
                f"a malformed event was refused ([red]{exc.field}[/]: {exc.reason}) "
                f"and kept as dead letter {exc.deadletter_seq}"
            )

        seen: set[str] = set()
        counts: Counter[str] = Counter()
        baskets: dict[str, Counter[str]] = defaultdict(Counter)
        zones: Counter[str] = Counter()
        async for record in log.replay(
            store=store, from_seq=first_seq.get(log.config.events_stream)
        ):
            e = record.event
            if e.id in seen:
                continue
            seen.add(e.id)
            counts[e.type] += 1
            if isinstance(e, ev.ItemPicked):
                baskets[e.subject][e.data.sku] += e.data.qty
            elif isinstance(e, ev.ItemPutBack):
                baskets[e.subject][e.data.sku] -= e.data.qty
            elif isinstance(e, ev.ZoneEntered):
                zones[e.data.zone] += 1
        samples = 0
        async for record in log.replay(
            store=store,
            types=["position.samples"],
            from_seq=first_seq.get(log.config.samples_stream),
        ):
            samples += len(record.event.data.samples)

    table = Table("event type", "count", title="replayed from the log")
    for kind, n in sorted(counts.items()):
        table.add_row(kind, f"{n:,}")
    table.add_row("position samples", f"{samples:,}")
    out.print(table)
    items = Table(
        "shopper",
        "basket (picked minus put back)",
        "value",
        title="baskets (the rules engine will make these receipts)",
    )
    for shopper, basket in sorted(baskets.items())[:10]:
        held = {sku: n for sku, n in basket.items() if n > 0}
        value = sum(layout.sku(sku).price_cents * n for sku, n in held.items()) / 100
        items.add_row(
            shopper,
            ", ".join(f"{n}× {layout.sku(s).name}" for s, n in held.items()) or "-",
            f"{value:.2f} {layout.store.currency}",
        )
    out.print(items)
    busiest = Table("zone", "visits", title="busiest zones")
    for zone, n in zones.most_common(5):
        busiest.add_row(zone, str(n))
    out.print(busiest)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        layout_file: Annotated[Path, typer.Option("--layout", help="Store layout file.")] = EXAMPLE,
        shoppers: Annotated[int, typer.Option(help="Scripted shoppers to send through.")] = 40,
    ) -> None:
        """Run the simulated store end to end on the embedded defaults."""
        layout = load_layout(layout_file)
        day = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
        asyncio.run(demo(Settings.from_env(), layout, shoppers, day))
