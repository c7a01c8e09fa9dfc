"""``aisle demo``: the store end to end, as far as aisle goes today.

It loads the example convenience store, publishes a simulated day into the log (the
embedded nats-server unless ``AISLE_NATS_URL`` is set), shows that a malformed event lands
on the dead-letter subject, runs the standard rule packs over what the log holds, publishes
the derived events back to it, and prints what an operator wants to see: footfall,
conversion, receipts, alerts and the busiest heatmap cells.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import msgspec
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from core import events as ev
from core.config import Settings
from core.jetstream import JetStreamLog
from core.layout import Layout, load_layout
from core.log import Rejected
from core.runtime import open_log
from rules.engine import Context, Engine
from rules.loader import load_rules
from rules.reference import Reference
from simulator.day import simulate
from simulator.render import RenderOptions, render_camera

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "stores" / "convenience.yaml"
PACKS = ROOT / "rules" / "packs"
out = Console()


async def _publish(log: JetStreamLog, events: list[ev.Event], label: str) -> int:
    """Publish in batches with a progress bar; returns how many were new to the log."""
    new = 0
    with Progress(console=out, transient=True) as progress:
        task = progress.add_task(label, total=len(events))
        for i in range(0, len(events), 1000):
            batch = events[i : i + 1000]
            new += sum(not ack.duplicate for ack in await log.publish_many(batch))
            progress.advance(task, len(batch))
    return new


async def _store_events(log: JetStreamLog, store: str) -> list[ev.Event]:
    """Raw events and position samples of the store, merged in event-time order."""
    raw = [
        r.event async for r in log.replay(store=store, types=sorted(ev.RAW_TYPES - ev.SAMPLE_TYPES))
    ]
    samples = [r.event async for r in log.replay(store=store, types=sorted(ev.SAMPLE_TYPES))]
    return sorted([*raw, *samples], key=lambda e: (e.at, e.id))


async def demo(settings: Settings, layout: Layout, shoppers: int, day: datetime) -> None:
    run = simulate(layout, day, hours=15, shoppers=shoppers, seed=1)
    events = run.events
    store = layout.store.id
    packs = sorted(p for p in PACKS.glob("*.yaml") if not p.name.endswith("_test.yaml"))
    context = Context()
    reference = Reference.of(layout, members=run.members)
    engine = Engine(load_rules(packs, reference, context), context=context)
    async with open_log(settings, name="aisle-demo") as log:
        where = settings.nats_url or f"embedded nats-server in {settings.data_dir}/"
        out.print(f"[bold]aisle demo[/]: {layout.store.name} ({store}), log on {where}")
        new = await _publish(log, events, "publishing the shoppers' events")
        old = len(events) - new
        out.print(f"published {len(events):,} events ({new:,} new, {old:,} already in the log)")
        bad = b'{"type":"item.picked","store":"%s","data":{"sku":""}}' % store.encode()
        try:
            await log.publish_raw(bad, source="demo")
        except Rejected as exc:
            out.print(
                f"a malformed event was refused ([red]{exc.field}[/]: {exc.reason}) "
                f"and kept as dead letter {exc.deadletter_seq}"
            )

        inputs = await _store_events(log, store)
        result = engine.process(inputs)
        end = max(e.at for e in inputs).timestamp() + 24 * 3600  # the day is over: close it
        result.extend(engine.advance(store, end))
        derived = result.derived
        new = await _publish(log, derived, "publishing derived events")
        out.print(
            f"the {len(packs)} standard rule packs derived {len(derived):,} events from "
            f"{len(inputs):,} ({new:,} new to the log); {len(result.late)} late, "
            f"{len(result.errors)} rule errors"
        )
    _report(layout, derived)


def _report(layout: Layout, derived: list[ev.Event]) -> None:
    currency = layout.store.currency
    metrics: dict[str, list[ev.Metric]] = {}
    for d in derived:
        if isinstance(d, ev.Metric):
            metrics.setdefault(d.data.name, []).append(d)

    traffic = Table("metric", "value", title="traffic")
    footfall = sum(m.data.value for m in metrics.get("footfall", []))
    traffic.add_row("footfall", f"{footfall:.0f}")
    waits = [m.data.value for m in metrics.get("queue_wait_s", [])]
    if waits:
        traffic.add_row("queue wait, mean", f"{sum(waits) / len(waits):.0f} s")
    traffic.add_row("queue abandoned", f"{len(metrics.get('queue_abandoned', []))}")
    conversions = Counter()
    for m in metrics.get("zone_conversion", []):
        conversions[m.data.labels.get("zone", "?")] = m.data.value
    for zone, value in conversions.most_common(3):
        traffic.add_row(f"conversion at {zone}", f"{value:.0%}")
    out.print(traffic)

    receipts = [d for d in derived if isinstance(d, ev.ReceiptIssued)]
    table = Table("shopper", "lines", "total", "ID check", title=f"receipts ({len(receipts)})")
    for r in receipts[:8]:
        lines = ", ".join(f"{line.qty}× {line.name}" for line in r.data.lines)
        check = "yes" if r.data.age_check else ""
        table.add_row(r.subject, lines, f"{r.data.total_cents / 100:.2f} {currency}", check)
    if len(receipts) > 8:
        table.add_row("…", f"{len(receipts) - 8} more", "", "")
    out.print(table)

    alerts = [d for d in derived if isinstance(d, ev.AlertRaised)]
    table = Table("time", "alert", "severity", "who", "summary", title=f"alerts ({len(alerts)})")
    local = ZoneInfo(layout.store.timezone)
    for a in alerts[:10]:
        when = f"{a.at.astimezone(local):%H:%M:%S}"
        table.add_row(when, a.data.alert, a.data.severity, a.subject, a.data.summary)
    out.print(table)

    day_tiles = [d for d in derived if isinstance(d, ev.HeatmapTile) and d.subject == "floor-day"]
    table = Table("cell (x, y in m)", "visitors", "dwell", title="busiest heatmap cells today")
    for t in sorted(day_tiles, key=lambda t: -t.data.dwell_s)[:5]:
        x, y = t.data.cell_x * t.data.size, t.data.cell_y * t.data.size
        table.add_row(f"{x:.1f}, {y:.1f}", str(t.data.visits), f"{t.data.dwell_s:.0f} s")
    out.print(table)


def _chain(layout: Layout, stores: int) -> list[Layout]:
    """``stores`` copies of a layout under their own store ids (a chain of one design)."""
    if stores == 1:
        return [layout]
    return [
        msgspec.structs.replace(
            layout, store=msgspec.structs.replace(layout.store, id=f"{layout.store.id}-{k:03d}")
        )
        for k in range(1, stores + 1)
    ]


async def _paced(log: JetStreamLog, events: list[ev.Event]) -> None:
    """Publish as the events happen: a second of store time takes a second of wall time."""
    if not events:
        return
    began, first = time.monotonic(), events[0].at
    i = 0
    while i < len(events):
        due = (events[i].at - first).total_seconds() - (time.monotonic() - began)
        if due > 0:
            await asyncio.sleep(due)
        now = time.monotonic() - began
        j = i + 1
        while j < len(events) and (events[j].at - first).total_seconds() <= now:
            j += 1
        await log.publish_many(events[i:j])
        i = j


async def simulate_chain(
    settings: Settings,
    layouts: list[Layout],
    start: datetime,
    hours: float,
    shoppers: int,
    seed: int,
    truth_dir: Path | None,
    publish: bool,
    realtime: bool = False,
) -> None:
    totals = Counter[str]()
    began = time.perf_counter()

    async def each(log: JetStreamLog | None) -> None:
        with Progress(console=out) as progress:
            task = progress.add_task("simulating", total=len(layouts))
            for k, layout in enumerate(layouts):
                run = simulate(layout, start, hours=hours, shoppers=shoppers, seed=seed + k)
                totals["events"] += len(run.events)
                totals["visitors"] += len(run.visitors)
                totals["receipts"] += len(run.receipts())
                if truth_dir is not None:
                    truth_dir.mkdir(parents=True, exist_ok=True)
                    path = truth_dir / f"{layout.store.id}.truth.jsonl"
                    path.write_bytes(
                        b"\n".join(msgspec.json.encode(r) for r in run.truth_records())
                    )
                    receipts = truth_dir / f"{layout.store.id}.receipts.json"
                    receipts.write_bytes(msgspec.json.encode(run.receipts()))
                if log is not None and realtime:
                    await _paced(log, run.events)
                elif log is not None:
                    for i in range(0, len(run.events), 5000):
                        await log.publish_many(run.events[i : i + 5000])
                progress.advance(task)

    if publish:
        async with open_log(settings, name="aisle-simulate") as log:
            await each(log)
    else:
        await each(None)
    took = time.perf_counter() - began
    done = "published" if publish else "generated"
    out.print(
        f"{done} {totals['events']:,} events of {totals['visitors']:,} visitors in "
        f"{len(layouts)} store(s), {hours:g} h each, in {took:.1f} s "
        f"({totals['events'] / took:,.0f} events/s); {totals['receipts']:,} receipts due"
    )


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render_command(
        store: Annotated[Path, typer.Option("--store", help="Store layout file.")] = EXAMPLE,
        camera: Annotated[
            str | None, typer.Option(help="Camera id; default: every camera of the layout.")
        ] = None,
        minutes: Annotated[float, typer.Option(help="Minutes of shopping to film.")] = 2.0,
        shoppers: Annotated[int, typer.Option(help="Visitors in those minutes.")] = 12,
        seed: Annotated[int, typer.Option(help="Same seed, same video.")] = 1,
        out_dir: Annotated[Path, typer.Option("--out", help="Where the videos go.")] = Path(
            "render"
        ),
    ) -> None:
        """Film simulated shoppers: a video per camera, with MOTChallenge ground truth."""
        layout = load_layout(store)
        known = [c.id for c in layout.cameras]
        if camera is not None and camera not in known:
            raise typer.BadParameter(
                f"{camera!r}; cameras: {', '.join(known)}", param_hint="--camera"
            )
        start = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo(layout.store.timezone))
        run = simulate(layout, start, hours=minutes / 60, shoppers=shoppers, seed=seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        for cam in [c for c in layout.cameras if camera in (None, c.id)]:
            stats = render_camera(
                layout,
                cam.id,
                run.people(cam.fps),
                out_dir / f"{cam.id}.mp4",
                out_dir / f"{cam.id}.gt.txt",
                RenderOptions(seed=seed),
            )
            out.print(
                f"{cam.id}: {stats.frames:,} frames, {stats.boxes:,} boxes "
                f"-> {stats.video_path} ({stats.codec}), {cam.id}.gt.txt"
            )

    @app.command("simulate")
    def simulate_command(
        store: Annotated[Path, typer.Option("--store", help="Store layout file.")] = EXAMPLE,
        hours: Annotated[float, typer.Option(help="Opening hours to simulate.")] = 15.0,
        shoppers: Annotated[int, typer.Option(help="Visitors per store.")] = 300,
        seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 1,
        stores: Annotated[int, typer.Option(help="A chain: this many stores of this layout.")] = 1,
        opens: Annotated[
            str, typer.Option("--opens", help="When the day starts, local time (ISO).")
        ] = "2026-11-28T07:00",
        truth: Annotated[
            Path | None, typer.Option(help="Write the ground truth here, a file per store.")
        ] = None,
        publish: Annotated[bool, typer.Option(help="Publish into the log.")] = True,
        realtime: Annotated[
            bool, typer.Option(help="Publish as it happens (for demos and latency tests).")
        ] = False,
    ) -> None:
        """Simulate shoppers in a store (or a chain) and publish their events into the log."""
        layout = load_layout(store)
        try:
            start = datetime.fromisoformat(opens)
        except ValueError:
            raise typer.BadParameter(
                f"{opens!r} is not an ISO time", param_hint="--opens"
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=ZoneInfo(layout.store.timezone))
        args = (start, hours, shoppers, seed, truth, publish, realtime)
        asyncio.run(simulate_chain(Settings.from_env(), _chain(layout, stores), *args))

    @app.command("demo")
    def demo_command(
        layout_file: Annotated[Path, typer.Option("--layout", help="Store layout file.")] = EXAMPLE,
        shoppers: Annotated[int, typer.Option(help="Visitors in the simulated day.")] = 200,
    ) -> None:
        """Run the simulated store end to end on the embedded defaults."""
        layout = load_layout(layout_file)
        day = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo(layout.store.timezone))
        asyncio.run(demo(Settings.from_env(), layout, shoppers, day))
