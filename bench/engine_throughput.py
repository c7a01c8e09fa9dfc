"""The rules engine on one core: all standard packs together, the carts pack against a
hand-written loop (the practical limit), and the state it keeps per shopper.

    .venv/bin/python bench/engine_throughput.py [--events 1000000]

The input is a realistic mix for the example convenience store: shoppers arriving every
few seconds (about a dozen in the store at once), each camera frame batching every
person's position (counted one by one, as the target says), zone changes, picks and
put-backs, exits through the gate.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import sys
import time
import tracemalloc
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import events as ev  # noqa: E402
from core.layout import Layout, load_layout  # noqa: E402
from rules.engine import Context, Engine  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from rules.reference import Reference  # noqa: E402
from simulator.scripted import plan, visit_events  # noqa: E402

PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
T0 = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def workload(layout: Layout, target: int, spacing_s: float = 5.0) -> tuple[list[ev.Event], int]:
    """Events in time order, and how many they count for (samples one by one)."""
    raw: list[ev.Event] = []
    counted = 0
    i = 0
    frames: dict[datetime, list[ev.PositionSample]] = defaultdict(list)
    while counted < target:
        batch = plan(layout, 200, T0, seed=1000 + i)
        for n, v in enumerate(batch):
            v = dataclasses.replace(
                v, shopper=f"v{i}-{n}", start=T0 + timedelta(seconds=spacing_s * (i * 200 + n))
            )
            for e in visit_events(layout, v):
                if isinstance(e, ev.PositionSamples):
                    frames[e.at] += e.data.samples
                    counted += 1
                else:
                    raw.append(e)
                    counted += 1
        i += 1
    store = layout.store.id
    for frame, (at, samples) in enumerate(sorted(frames.items())):
        data = ev.PositionData(frame=frame, samples=tuple(samples))
        raw.append(
            ev.new(
                ev.PositionSamples, store=store, at=at, source="cams", subject="floor", data=data
            )
        )
    raw.sort(key=lambda e: (e.at, e.id))
    return raw, counted


def engine_for(packs: list[Path], layout: Layout) -> Engine:
    context = Context()
    return Engine(load_rules(packs, Reference.of(layout), context), context=context)


def run_engine(engine: Engine, events: list[ev.Event]) -> tuple[float, list[ev.Event]]:
    gc.collect()
    start = time.perf_counter()
    out = []
    for i in range(0, len(events), 1000):
        out += engine.process(events[i : i + 1000]).derived
    return time.perf_counter() - start, out


def hand_written_carts(
    events: list[ev.Event], layout: Layout
) -> tuple[float, list[tuple[str, int]]]:
    """What the carts pack computes, written by hand: the fastest plain Python can do it."""
    gc.collect()
    gate = {z.id for z in layout.zones if z.kind == "exit_gate"}
    prices = {c.sku: c.price_cents for c in layout.catalog}
    start = time.perf_counter()
    staff: set[str] = set()
    alias: dict[str, str] = {}
    crews: dict[str, list[str]] = {}
    carts: dict[str, dict[str, int]] = {}
    receipts: list[tuple[str, int]] = []
    for e in events:
        t = e.type
        if t == "position.samples":
            continue
        s = e.subject
        if t == "staff.session_started":
            staff.add(s)
            continue
        if s in staff:
            continue
        if t == "shopper.entered" and e.data.group is not None:
            alias[s] = e.data.group
            crews.setdefault(e.data.group, []).append(s)
        elif t == "item.picked":
            cart = carts.setdefault(alias.get(s, s), {})
            cart[e.data.sku] = cart.get(e.data.sku, 0) + e.data.qty
        elif t == "item.put_back":
            cart = carts.get(alias.get(s, s))
            if cart and cart.get(e.data.sku):
                n = min(e.data.qty, cart[e.data.sku])
                cart[e.data.sku] -= n
                if not cart[e.data.sku]:
                    del cart[e.data.sku]
        elif t == "zone.entered" and e.data.zone in gate:
            cid = alias.pop(s, s)
            crew = crews.get(cid)
            if crew is not None:
                crew.remove(s)
                if crew:
                    continue
                del crews[cid]
            cart = carts.pop(cid, None)
            if cart:
                receipts.append((cid, sum(prices[k] * n for k, n in cart.items())))
    return time.perf_counter() - start, receipts


def state_per_shopper(layout: Layout, shoppers: int = 2000) -> tuple[float, float]:
    """Bytes the engine holds per shopper in the store (all packs; every shopper entered,
    picked two items, walked an aisle and joined the queue), measured with tracemalloc
    against the same engine before they came; and bytes per shopper still held once they
    have all left and the windows have closed."""
    engine = engine_for(PACKS, layout)
    base = {"store": layout.store.id, "source": "cam"}
    t = T0
    inside: list[ev.Event] = []
    leaving: list[ev.Event] = []
    for n in range(shoppers):
        s = {"subject": f"s{n}", **base}
        t += timedelta(milliseconds=50)
        inside += [
            ev.new(ev.ShopperEntered, at=t, data=ev.EntryData(line="entrance"), **s),
            ev.new(ev.ZoneEntered, at=t, data=ev.ZoneData(zone="aisle-1"), **s),
            ev.new(
                ev.ItemPicked, at=t, data=ev.ItemData(sku="cola-500ml", shelf="fridge-drinks"), **s
            ),
            ev.new(
                ev.ItemPicked, at=t, data=ev.ItemData(sku="butter-250g", shelf="fridge-dairy"), **s
            ),
            ev.new(ev.ZoneExited, at=t, data=ev.ZoneData(zone="aisle-1"), **s),
            ev.new(ev.ZoneEntered, at=t, data=ev.ZoneData(zone="checkout-queue"), **s),
        ]
    for n in range(shoppers):
        s = {"subject": f"s{n}", **base}
        t += timedelta(milliseconds=50)
        leaving += [
            ev.new(ev.ZoneExited, at=t, data=ev.ZoneData(zone="checkout-queue"), **s),
            ev.new(ev.ZoneEntered, at=t, data=ev.ZoneData(zone="exit-gate"), **s),
            ev.new(
                ev.ShopperExited, at=t + timedelta(seconds=2), data=ev.ExitData(line="exit"), **s
            ),
        ]
    leaving.sort(key=lambda e: (e.at, e.id))
    # A first shopper warms the engine up (partition, caches), so only state is counted.
    engine.process(inside[:6])
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine.process(inside[6:])
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    engine.process(leaving)
    engine.advance(layout.store.id, (t + timedelta(days=1)).timestamp())
    engine._seen.clear()  # the dedup memory of event ids is bounded by time, not by shoppers
    gc.collect()
    left = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / (shoppers - 1), left / shoppers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    layout = load_layout(ROOT / "examples" / "stores" / "convenience.yaml").prepare()
    t = time.perf_counter()
    events, counted = workload(layout, args.events)
    kinds = defaultdict(int)
    for e in events:
        kinds[e.type] += len(e.data.samples) if isinstance(e, ev.PositionSamples) else 1
    python = f"Python {platform.python_version()}, {platform.machine()}"
    print(f"aisle engine benchmark ({python}, one process)")
    built = time.perf_counter() - t
    print(
        f"workload: {counted:,} events (samples one by one) in {len(events):,} messages "
        f"({built:.1f} s to build)"
    )
    print("  " + ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])))

    elapsed, derived = run_engine(engine_for(PACKS, layout), events)
    rate = counted / elapsed
    print(
        f"\nall {len(PACKS)} standard packs: {rate:,.0f} events/s "
        f"({elapsed:.2f} s, {len(derived):,} derived)"
    )

    carts_time, carts_out = run_engine(
        engine_for([ROOT / "rules/packs/carts.yaml"], layout), events
    )
    loop_time, loop_receipts = hand_written_carts(events, layout)
    engine_receipts = [
        (d.data.cart, d.data.total_cents) for d in carts_out if isinstance(d, ev.ReceiptIssued)
    ]
    assert engine_receipts == loop_receipts, "the carts pack and the hand-written loop disagree"
    ratio = carts_time / loop_time
    print(f"carts pack {carts_time:.2f} s, hand-written loop {loop_time:.2f} s: {ratio:.2f}x")
    print(f"  ({len(loop_receipts):,} receipts, identical)")

    per_shopper, left = state_per_shopper(layout)
    print(f"state: {per_shopper:,.0f} bytes per shopper in the store (all packs, tracemalloc)")
    print(f"  {left:,.0f} bytes per shopper still held after they all left and the windows closed")


if __name__ == "__main__":
    main()
