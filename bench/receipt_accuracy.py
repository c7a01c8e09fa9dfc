"""Receipt accuracy against the ground truth: simulated store days through the standard rule
packs, with sensor noise off and at the default noise profile.

    .venv/bin/python bench/receipt_accuracy.py [--days 20] [--shoppers 500]

A receipt is exactly right when it has every line and every quantity of the true cart.
The report counts the kinds of error that remain: a receipt missing, one that should not be
there, an item missing, an item too many, a quantity off.
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
from rules.engine import Engine  # noqa: E402
from rules.loader import load_rules  # noqa: E402
from rules.reference import Reference  # noqa: E402
from simulator.day import Run, simulate  # noqa: E402
from simulator.shoppers import Store  # noqa: E402

PACKS = sorted(
    p for p in (ROOT / "rules" / "packs").glob("*.yaml") if not p.name.endswith("_test.yaml")
)
OPEN = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))


def derive(
    store: Store, run: Run, events: list[ev.Event], lateness_s: float
) -> dict[str, dict[str, int]]:
    reference = Reference.of(store.layout, members=run.members)
    engine = Engine(load_rules(PACKS, reference), lateness_s=lateness_s)
    out = engine.process(events)
    out.extend(engine.advance(store.layout.store.id, max(e.at for e in events).timestamp() + 86400))
    return {
        d.data.cart: {line.sku: line.qty for line in d.data.lines}
        for d in out.derived
        if isinstance(d, ev.ReceiptIssued)
    }


def compare(
    truth: dict[str, dict[str, int]], got: dict[str, dict[str, int]], errors: Counter[str]
) -> int:
    """Exactly right receipts; the errors counted by kind."""
    right = 0
    for cart in truth.keys() | got.keys():
        want, have = truth.get(cart), got.get(cart)
        if want == have:
            right += 1
        elif have is None:
            errors["receipt missing"] += 1
        elif want is None:
            errors["receipt not due"] += 1
        else:
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--shoppers", type=int, default=500)
    args = parser.parse_args()
    stamp.print_stamp()
    store = Store(load_layout(ROOT / "examples" / "stores" / "convenience.yaml"))
    try:
        from simulator import noise
    except ImportError:  # the noise part of the simulator is not there yet
        noise = None  # type: ignore[assignment]
    profiles = [("noise off", None)] + ([("default noise", noise.DEFAULT)] if noise else [])
    days = f"{args.days} store days of {args.shoppers} shoppers"
    print(f"receipt accuracy: {days}, {store.layout.store.id}")
    for label, profile in profiles:
        start = time.perf_counter()
        visits = due = right = 0
        errors: Counter[str] = Counter()
        for seed in range(1, args.days + 1):
            run = simulate(store, OPEN, hours=15, shoppers=args.shoppers, seed=seed)
            events, lateness = run.events, 0.0
            if profile is not None:
                events = noise.apply(events, profile, seed=seed, layout=store.layout)
                lateness = profile.late_s + 2 * profile.clock_skew_s  # what noise.py asks
            truth = run.receipts()
            visits += len(run.visitors)
            due += len(truth)
            right += compare(truth, derive(store, run, events, lateness), errors)
        total = due + errors["receipt not due"]
        share = right / total if total else 1.0
        print(
            f"  {label}: {visits:,} visits, {due:,} receipts due, {right:,} exactly right: "
            f"{share:.4%} ({time.perf_counter() - start:.0f} s)"
        )
        for kind, n in errors.most_common():
            print(f"    {kind}: {n:,}")


if __name__ == "__main__":
    main()
