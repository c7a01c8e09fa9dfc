"""``aisle demo``: the store end to end, as far as aisle goes today.

It loads the example convenience store, publishes a simulated day into the log (the
embedded nats-server unless ``AISLE_NATS_URL`` is set), shows that a malformed event lands
on the dead-letter subject, runs the standard rule packs over what the log holds (in the
order and with the settings of ``aisle engine run``'s defaults), publishes the derived events
back to it, and prints what an operator wants to see: footfall, conversion, receipts, alerts
and the busiest heatmap cells.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from rich.table import Table

from core import events as ev
from core.config import Settings
from core.console import Console
from core.jetstream import JetStreamLog
from core.layout import Layout
from core.log import Rejected, publish_in_order, read_arrived
from core.progress import Steps
from core.runtime import open_log
from rules.loader import PACKS, load_rules, pack_files
from rules.reference import Reference
from rules.service.partition import ServiceConfig
from simulator.day import simulate
from simulator.scenario_report import day_cells

out = Console()


async def _publish(log: JetStreamLog, events: list[ev.Event], label: str, held: set[str]) -> int:
    """Publish what the log does not hold yet (``held``: its ids), in batches with a
    progress bar; returns how many were new. Checking the log, not only the server's
    duplicate window, makes a rerun add nothing however much later it comes."""
    new = [e for e in events if e.id not in held]
    with Steps(label, len(new)) as progress:
        for i in range(0, len(new), 1000):
            batch = new[i : i + 1000]
            await publish_in_order(log, batch)  # the service merges its streams by arrival
            progress.advance(len(batch))
    held.update(e.id for e in new)
    return len(new)


async def demo(settings: Settings, layout: Layout, shoppers: int, day: datetime) -> None:
    run = simulate(layout, day, hours=15, shoppers=shoppers, seed=1)
    events = run.events
    store = layout.store.id
    packs = pack_files([PACKS])
    reference = Reference.of(layout, members=run.members)
    # What `aisle engine run` would derive at its defaults: its lateness and idle bound.
    engine = ServiceConfig("demo").engine(load_rules(packs, reference))
    async with open_log(settings, name="aisle-demo", create=True) as log:
        where = settings.nats_url or f"embedded nats-server in {settings.data_dir}/"
        out.print(f"[bold]aisle demo[/]: {layout.store.name} ({store}), log on {where}")
        held = {r.event.id async for r in log.replay(store=store)}
        held |= {r.event.id async for r in log.replay(store=store, types=ev.SAMPLE_TYPES)}
        new = await _publish(log, events, "publishing the shoppers' events", held)
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

        inputs = await read_arrived(log, store)  # in the order the engine service applies them
        result = engine.process(inputs)
        # The day is over, and so is its week (members' visit frequency is weekly): close them.
        end = max(e.at for e in inputs).timestamp() + 7 * 24 * 3600
        result.extend(engine.advance(store, end))
        derived = result.derived
        new = await _publish(log, derived, "publishing derived events", held)
        out.print(
            f"the {len(packs)} standard rule packs derived {len(derived):,} events from "
            f"{len(inputs):,} ({new:,} new to the log); {len(result.late)} late, "
            f"{len(result.errors)} rule errors"
        )
    _report(layout, derived)


def _day_conversions(
    visits: list[ev.Metric], fronts: set[str], top: int = 3
) -> list[tuple[str, tuple[int, int]]]:
    """Zone conversion over the whole day, for the ``top`` shelf fronts with most visitors:
    (zone, (buyers, visitors)), as ``traffic.zone_conversion`` counts them each hour (the
    shoppers whose visit lasted ``min_dwell``, and those of them who left with an item).
    The pack's metric is hourly: its last value would be the last hour's, not the day's."""
    visitors: dict[str, set[str]] = {}
    buyers: dict[str, set[str]] = {}
    for m in visits:
        zone = m.data.labels.get("zone", "?")
        if zone not in fronts:
            continue
        visitors.setdefault(zone, set()).add(m.subject)
        if m.data.labels.get("took") == "yes":
            buyers.setdefault(zone, set()).add(m.subject)
    busiest = sorted(visitors, key=lambda z: (-len(visitors[z]), z))[:top]
    return [(z, (len(buyers.get(z, ())), len(visitors[z]))) for z in busiest]


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
    fronts = {z.id for z in layout.zones if z.kind == "shelf_front"}
    for zone, (buyers, visitors) in _day_conversions(metrics.get("zone_visit_s", []), fronts):
        traffic.add_row(
            f"conversion at {zone}, the day ({visitors} visitors)", f"{buyers / visitors:.0%}"
        )
    kpis = (
        ("store_conversion", "store conversion (visits with a receipt)", "{:.0%}"),
        ("group_share", "shoppers who came in a group", "{:.0%}"),
        ("picked_not_bought_share", "picked something up, left with nothing", "{:.0%}"),
        ("pick_conversion", "items picked that were bought", "{:.0%}"),
        ("member_visit_frequency", "visits per opted-in member this week", "{:.2f}"),
    )
    for name, label, shown in kpis:
        if metrics.get(name):
            traffic.add_row(label, shown.format(metrics[name][-1].data.value))
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

    table = Table("cell (x, y in m)", "visitors", "dwell", title="busiest heatmap cells today")
    for size, c in sorted(day_cells(derived), key=lambda t: -t[1].dwell_s)[:5]:
        table.add_row(
            f"{c.cell_x * size:.1f}, {c.cell_y * size:.1f}", str(c.visits), f"{c.dwell_s:.0f} s"
        )
    out.print(table)
