"""Receipt accuracy against the ground truth: simulated store days through the standard rule
packs, with sensor noise off and at the default noise profile.

    .venv/bin/python bench/receipt_accuracy.py [--days 20] [--shoppers 500]

A cart is exactly right when it got one receipt with every line and every quantity of the
true cart, or none when none was due: the comparison of the QA scenarios
(``simulator.scenario_report.compare_receipts``), so a second receipt for a cart is an error.
The engine runs with the service's settings (``ServiceConfig.engine``) over the events in
delivery order. The report counts the kinds of error that remain: a receipt missing, one
that should not be there, more than one for a cart, an item missing, an item too many, a
quantity off. Every row is measured or the script fails, with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stamp  # noqa: E402
from core import events as ev  # noqa: E402
from core.layout import load_layout  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from rules.reference import Reference  # noqa: E402
from rules.service.partition import ServiceConfig  # noqa: E402
from simulator import noise  # noqa: E402
from simulator.day import Run, simulate, standard_packs  # noqa: E402
from simulator.scenario_report import CartReceipts, compare_receipts  # noqa: E402
from simulator.shoppers import Store  # noqa: E402

PACKS = standard_packs()
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
PROFILES: list[tuple[str, noise.NoiseProfile]] = [
    ("noise off", noise.OFF),
    ("default noise", noise.DEFAULT),
]


def derive(store: Store, run: Run, events: list[ev.Event], lateness_s: float) -> list[ev.Event]:
    """What the engine service would derive from ``events`` (in delivery order), every
    window closed at the end of the day."""
    reference = Reference.of(store.layout, members=run.members)
    engine = ServiceConfig("bench", lateness_s=lateness_s).engine(load_rules(PACKS, reference))
    out = engine.process(events)
    out.extend(engine.advance(store.layout.store.id, max(e.at for e in events).timestamp() + 86400))
    return out.derived


def count(carts: list[CartReceipts], errors: Counter[str]) -> int:
    """Carts exactly right; the others' errors counted by kind."""
    right = 0
    for c in carts:
        if c.right:
            right += 1
        elif len(c.issued) > 1:
            errors["more than one receipt for a cart"] += 1
        elif not c.issued:
            errors["receipt missing"] += 1
        elif c.due is None:
            errors["receipt not due"] += 1
        else:
            want, have = c.due, c.issued[0]
            for sku in want.keys() | have.keys():
                w, h = want.get(sku, 0), have.get(sku, 0)
                if w and not h:
                    errors["item missing"] += 1
                elif h and not w:
                    errors["item too many"] += 1
                elif w != h:
                    errors["quantity off"] += 1
    return right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--shoppers", type=int, default=500)
    args = parser.parse_args()
    stamp.print_stamp()
    store = Store(load_layout(ROOT / "examples" / "stores" / "convenience.yaml"))
    days = f"{args.days} store days of {args.shoppers} shoppers"
    print(f"receipt accuracy: {days}, {store.layout.store.id}")
    for label, profile in PROFILES:
        start = time.perf_counter()
        visits = due = right = carts = 0
        errors: Counter[str] = Counter()
        lateness = profile.late_s + 2 * profile.clock_skew_s  # what noise.py asks
        for seed in range(1, args.days + 1):
            run = simulate(store, OPEN, hours=15, shoppers=args.shoppers, seed=seed)
            events = noise.apply(run.events, profile, seed=seed, layout=store.layout)
            truth = run.receipts()
            compared = compare_receipts(truth, derive(store, run, events, lateness))
            visits += len(run.visitors)
            due += len(truth)
            carts += len(compared)
            right += count(compared, errors)
        share = right / carts if carts else 1.0
        print(
            f"  {label}: {visits:,} visits, {due:,} receipts due, {right:,} of {carts:,} "
            f"carts exactly right: {share:.4%} ({time.perf_counter() - start:.0f} s)"
        )
        for kind, n in errors.most_common():
            print(f"    {kind}: {n:,}")


if __name__ == "__main__":
    main()
