"""Requests per second and latency of the API's receipts, metrics and heatmap endpoints
with a day of data for 20 stores, from a load generator on loopback, bounded in time.

    .venv/bin/python bench/api_load.py [--stores 20] [--hours 14] [--shoppers 300]
        [--seconds 10] [--concurrency 4] [--database URL]

One store day is simulated (with the default sensor noise), derived with the standard
packs, published into an embedded nats-server and projected into a fresh database (a
SQLite file in a temporary folder, or ``--database``: an empty database or schema);
its rows are then copied to make the other stores (ids suffixed, so every store has
rows of its own: the tables hold ``--stores`` times one real day). ``aisle api run``
serves it on 127.0.0.1 in a process of its own; the load generator (httpx, asyncio,
``--concurrency`` requests in flight) asks each endpoint for ``--seconds`` about a
random store. Each line: requests, requests/s, p50 and p99 in ms, and the target
where there is one (p99 under 100 ms for one receipt and for a day's metrics of one
store). Server and load generator share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.auth import Role, create_token
from bench.projections import OPEN, store_days
from bench.stamp import print_stamp
from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.log import publish_in_order
from core.natsd import EmbeddedNats
from readmodels.database import check_schema, make_engine
from readmodels.runner import ProjectionService
from readmodels.tables import KEPT, READ_MODELS

ROOT = Path(__file__).resolve().parent.parent
BOOKKEEPING = {"projection_position", "projection_applied", "projection_rejection"}
TARGETS_MS = {"receipt": 100.0, "metrics (day)": 100.0}


async def project_one_day(url: str, database: str, hours: float, shoppers: int) -> None:
    lots, _ = store_days(1, hours, shoppers)
    log = await JetStreamLog.open(
        await connect(url), LogConfig(prefix="bench", publish_deadline_s=60)
    )
    try:
        for lot in lots:
            await publish_in_order(log, lot)
        db = make_engine(database)
        check_schema(db)
        await ProjectionService(log, db).run(until_caught_up=True)
    finally:
        await log.delete_streams()
        await log.close()


def _text(c: sa.Column) -> bool:  # type: ignore[type-arg]
    kind = c.type
    return isinstance(kind, sa.String) or isinstance(getattr(kind, "impl", None), sa.String)


def copy_stores(db: sa.Engine, stores: int) -> list[str]:
    """The first store's rows again under ``bench-01`` ...: ids suffixed, the store
    column replaced (tables without one: the rows of ids with no suffix yet)."""
    names = ["bench-00"]
    with db.begin() as conn:
        for n in range(1, stores):
            store = f"bench-{n:02d}"
            names.append(store)
            for name, table in READ_MODELS.tables.items():
                if name in BOOKKEEPING or name in KEPT:
                    continue
                cols, exprs = [], []
                for c in table.columns:
                    cols.append(c.name)
                    if c.name == "store":
                        exprs.append(sa.literal(store))
                    elif (c.name == "id" or c.name.endswith("_id")) and _text(c):
                        exprs.append(c.op("||")(f"-{n:02d}"))
                    else:
                        exprs.append(c)
                if "store" in table.c:
                    where = table.c.store == "bench-00"
                else:
                    key = next(c for c in table.columns if c.name.endswith("_id"))
                    where = key.not_like("%-%")
                conn.execute(table.insert().from_select(cols, sa.select(*exprs).where(where)))
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(
    client: httpx.AsyncClient, paths: list[str], seconds: float, concurrency: int
) -> tuple[int, float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    end = time.perf_counter() + seconds
    rng = random.Random(7)

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < end:
            path = rng.choice(paths)
            t0 = time.perf_counter()
            r = await client.get(path)
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - start
    return len(latencies), took, latencies, failures


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def run_load(base: str, token: str, stores: list[str], receipts: dict[str, list[str]],
                   seconds: float, concurrency: int) -> bool:  # fmt: skip
    day = f"from={OPEN.isoformat()}&to={(OPEN + timedelta(days=1)).isoformat()}".replace("+", "%2B")
    cases = {
        "receipts (list of 50)": [f"/api/v1/stores/{s}/receipts?limit=50" for s in stores],
        "receipt": [f"/api/v1/stores/{s}/receipts/{r}" for s in stores for r in receipts[s]],
        "metrics (day)": [f"/api/v1/stores/{s}/metrics?{day}" for s in stores],
        "metrics.csv (day)": [f"/api/v1/stores/{s}/metrics.csv?{day}" for s in stores],
        "heatmap (day)": [f"/api/v1/stores/{s}/heatmap?{day}" for s in stores],
        "heatmap.png (day)": [f"/api/v1/stores/{s}/heatmap.png?{day}" for s in stores],
    }
    ok = True
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:
        for path in (cases["receipt"][0], cases["metrics (day)"][0]):  # warm up
            (await c.get(path)).raise_for_status()
        print(f"{'endpoint':<22} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  target")
        for name, paths in cases.items():
            n, took, lat, failures = await load(c, paths, seconds, concurrency)
            p99 = pct(lat, 99)
            target = TARGETS_MS.get(name)
            verdict = ""
            if target is not None:
                met = p99 < target
                ok = ok and met
                verdict = f"p99 < {target:.0f} ms: {'met' if met else 'MISSED'}"
            fail = f"  ({failures} not 200)" if failures else ""
            print(f"{name:<22} {n:>9,} {n / took:>8,.0f} {pct(lat, 50):>8.1f} {p99:>8.1f}  "
                  f"{verdict}{fail}")  # fmt: skip
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # type: ignore[union-attr]
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--hours", type=float, default=14.0)
    parser.add_argument("--shoppers", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: SQLite file)")
    args = parser.parse_args()
    print_stamp()
    with tempfile.TemporaryDirectory() as folder:
        database = args.database or f"sqlite:///{Path(folder) / 'readmodels.db'}"
        t0 = time.perf_counter()
        with EmbeddedNats(Path(folder) / "nats") as server:
            asyncio.run(project_one_day(server.url, database, args.hours, args.shoppers))
        db = make_engine(database)
        stores = copy_stores(db, args.stores)
        with db.connect() as conn:
            counts = {
                t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("receipt", "line_evidence", "metric_hour", "heatmap_hour", "alert")
            }
            receipts = {
                s: list(conn.execute(sa.text(
                    "SELECT id FROM receipt WHERE store = :s ORDER BY id LIMIT 50"), {"s": s}
                ).scalars())
                for s in stores
            }  # fmt: skip
        print(f"data: {args.stores} stores x one {args.hours:g} h day of {args.shoppers} "
              f"shoppers, made in {time.perf_counter() - t0:.0f} s; rows: "
              + ", ".join(f"{t} {n:,}" for t, n in counts.items()))  # fmt: skip
        token = create_token(db, Role.OPERATOR, name="bench")[1]
        db.dispose()
        port = free_port()
        env = {**os.environ, "AISLE_DATABASE_URL": database, "AISLE_DATA_DIR": folder}
        server_proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "aisle"),
                "api",
                "run",
                "--no-log",
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{base}/api/v1/openapi.json", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server_proc.poll() is not None:
                        raise SystemExit("the API did not start") from None
                    time.sleep(0.2)
            ok = asyncio.run(
                run_load(base, token, stores, receipts, args.seconds, args.concurrency)
            )
        finally:
            server_proc.terminate()
            server_proc.wait(10)
    print("all targets met" if ok else "a target was MISSED")


if __name__ == "__main__":
    main()
