"""The engine as a service over a real JetStream log: exactly-once output, bad and late
input, rule deployment, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core import events as ev
from core.jetstream import JetStreamLog
from rules.loader import PackError
from rules.reference import Reference
from rules.service import deploy
from rules.service.metrics import SOURCE_LABELS, EngineMetrics
from rules.service.partition import ServiceConfig
from rules.service.worker import Worker
from tests.enginekit import (
    LATENESS_S,
    PACKS,
    derived_ids,
    late_by_source,
    layout,
    publish,
    running,
    settled,
    store_day,
    uninterrupted,
)
from tests.enginekit import (
    engine as engine_for_test,
)

STORE = "corner-01"
ROOT = Path(__file__).resolve().parent.parent


async def test_the_service_derives_what_an_unbroken_engine_does(jslog: JetStreamLog) -> None:
    events = store_day()
    async with running(jslog) as worker:
        await publish(jslog, events)
        await settled(jslog, [STORE])
        applied = worker.metrics.events_in.labels(STORE)._value.get()
    got = await derived_ids(jslog, STORE)
    assert got == await uninterrupted(jslog, STORE)
    assert len(got) > 500 and len(set(got)) == len(got)
    raw = [r async for r in jslog.replay(store=STORE, types=sorted(ev.RAW_TYPES - ev.SAMPLE_TYPES))]
    samples = [r async for r in jslog.replay(store=STORE, types=sorted(ev.SAMPLE_TYPES))]
    assert applied == len(raw) + len(samples)


async def test_a_restart_resumes_from_the_checkpoint_and_publishes_nothing_twice(
    jslog: JetStreamLog,
) -> None:
    events = store_day()
    half = len(events) // 2
    async with running(jslog, checkpoint_every=1000) as worker:
        await publish(jslog, events[:half])
        await settled(jslog, [STORE])
        first = worker.runners[STORE].checkpoint
    assert first is not None and first.seqs[0] > 0  # the clean stop checkpointed
    async with running(jslog, "w2") as worker:
        await publish(jslog, events[half:])
        await settled(jslog, [STORE])
    got = await derived_ids(jslog, STORE)
    assert got == await uninterrupted(jslog, STORE)
    assert len(set(got)) == len(got)


async def test_bad_payloads_go_to_the_dead_letters_and_late_events_to_the_late_subject(
    jslog: JetStreamLog,
) -> None:
    events = store_day(noisy=False, hours=1, shoppers=20)
    last = events[-1]
    async with running(jslog) as worker:
        await publish(jslog, events)
        # Straight onto the subject, past the log's validation (as a rogue adapter might).
        bad = b'{"type":"item.picked","store":"corner-01","data":{"sku":""}}'
        await jslog.js.publish(f"{jslog.config.prefix}.{STORE}.item.picked", bad)
        late = msgspec.structs.replace(last, id="late-one", at=last.at - timedelta(seconds=600))
        await jslog.publish(late)
        after = msgspec.structs.replace(last, id="after-late", at=last.at + timedelta(seconds=1))
        await jslog.publish(after)
        await settled(jslog, [STORE])
        m = worker.metrics
        assert m.deadletters.labels(STORE)._value.get() == 1
        assert late_by_source(m, STORE) == {"sim": 1}
    letters = [d async for _, d in jslog.deadletters(store=STORE)]
    assert [(d.field, d.payload) for d in letters] == [("id", bad)] or letters[0].payload == bad
    late_letters = [d async for _, d in jslog.deadletters(store=STORE, late=True)]
    assert len(late_letters) == 1 and ev.decode(late_letters[0].payload).id == "late-one"
    assert (
        late_letters[0].field == "at" and "behind the store's watermark" in late_letters[0].reason
    )
    # ... and the store carried on: the event after them was applied.
    assert await derived_ids(jslog, STORE) == await uninterrupted(jslog, STORE)


def _metric(port: int, name: str, store: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(f'{name}{{store="{store}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {store} not in /metrics")


def test_late_events_are_labelled_by_source_with_a_bound_on_the_series() -> None:
    """Anyone who can publish names a source: past a bound, sources share one series."""
    metrics = EngineMetrics()
    labels = [metrics.source_label(STORE, f"cam-{k}") for k in range(SOURCE_LABELS + 5)]
    assert labels[:SOURCE_LABELS] == [f"cam-{k}" for k in range(SOURCE_LABELS)]
    assert set(labels[SOURCE_LABELS:]) == {"other"}
    assert metrics.source_label(STORE, "cam-0") == "cam-0"
    assert metrics.source_label("another", "cam-99") == "cam-99"  # a bound per store


async def test_metrics_are_served_over_http(jslog: JetStreamLog) -> None:
    metrics = EngineMetrics()
    port = metrics.serve(0)
    events = store_day(noisy=False, hours=1, shoppers=20)
    config = ServiceConfig(worker="w1", lateness_s=LATENESS_S, checkpoint_s=0.2)
    worker = Worker(jslog, Reference.of(layout()), config, packs=PACKS, metrics=metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await publish(jslog, events)
        await settled(jslog, [STORE])
        await asyncio.sleep(0.5)
        derived = len(await derived_ids(jslog, STORE))
        assert _metric(port, "aisle_engine_derived_out_total", STORE) == derived
        assert _metric(port, "aisle_engine_events_in_total", STORE) >= len(events) * 0.5
        assert _metric(port, "aisle_engine_lag_events", STORE) == 0
        assert 0 <= _metric(port, "aisle_engine_snapshot_age_seconds", STORE) < 10
        assert _metric(port, "aisle_engine_checkpoints_total", STORE) >= 1
        # A quiet store whose snapshot holds all: nothing waits, however old the snapshot
        # (it grew to minutes with a checkpoint every 0.2 s, and an alert on it misfired).
        await asyncio.sleep(3)
        assert _metric(port, "aisle_engine_snapshot_age_seconds", STORE) == 0
    finally:
        stop.set()
        await task


async def test_a_deployment_swaps_the_rules_and_a_refused_one_changes_nothing(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    kv = await jslog.key_value("rules", history=20)
    reference = Reference.of(layout())
    first, new = await deploy.deploy(kv, deploy.validated(PACKS, reference), by="test")
    assert new and (await deploy.deploy(kv, deploy.validated(PACKS, reference), by="test")) == (
        first,
        False,
    )
    async with running(jslog) as worker:
        assert worker.rules_version == first.version
        # A changed pack: its version moves, and the engine picks it up.
        carts = next(p for p in PACKS if p.name == "carts.yaml")
        changed = tmp_path / "carts.yaml"
        text = carts.read_text()
        version_line = next(line for line in text.splitlines() if line.startswith("version:"))
        changed.write_text(text.replace(version_line, "version: 99.0.0", 1))
        files = deploy.validated([changed, *(p for p in PACKS if p != carts)], reference)
        second, _ = await deploy.deploy(kv, files, by="test")
        for _ in range(50):
            if worker.rules_version == second.version:
                break
            await asyncio.sleep(0.1)
        assert worker.rules_version == second.version
        assert worker.engine is not None and worker.engine.rules.packs["carts"] == "99.0.0"
        # Refused at deploy: nothing stored.
        broken = tmp_path / "broken.yaml"
        broken.write_text(text.replace("rules:", "rulez:", 1))
        with pytest.raises(deploy.DeployError, match=r"broken\.yaml:"):
            deploy.validated([broken], reference)
        assert (await deploy.deployed(kv)) == second
        # Refused by the engine (written past the checks): it keeps what it runs.
        bad = deploy.Deployment(
            version="bad000000000", files={"x.yaml": "rules: [1"}, deployed_at=0, by="test"
        )
        await kv.put(deploy.KEY, msgspec.msgpack.encode(bad))
        await asyncio.sleep(1.0)
        assert worker.rules_version == second.version
        assert worker.engine.rules.packs["carts"] == "99.0.0"
        workers, _ = await worker.leases.view()
        assert [(w.worker, w.rules_version) for w in workers] == [("w1", second.version)]


async def test_a_worker_warns_where_the_server_cannot_filter_on_many_subjects(
    jslog: JetStreamLog, caplog: pytest.LogCaptureFixture
) -> None:
    """Before 2.10 each store's consumer reads every store's business events, which many
    stores on one worker cannot keep up with: the operator is told at the start."""
    with caplog.at_level("WARNING", logger="aisle.engine"):
        async with running(jslog):
            pass
    server = jslog.nc.connected_server_version
    warned = [r for r in caplog.records if "before 2.10" in r.getMessage()]
    assert len(warned) == ((server.major, server.minor) < (2, 10))


async def test_a_worker_with_no_rules_says_so(jslog: JetStreamLog) -> None:
    worker = Worker(jslog, Reference.of(layout()), ServiceConfig(worker="w1"), packs=[])
    with pytest.raises(PackError):
        await worker.run(asyncio.Event())


async def test_out_of_order_events_within_the_lateness_are_applied_in_event_time_order(
    jslog: JetStreamLog,
) -> None:
    """Events delivered up to a second late give what the same events in order give. Those
    of one instant are held back together: they keep their order (their source's), which
    the engine applies them in."""
    events = store_day(noisy=False, hours=1, shoppers=30)
    held = {e.at for e in events[::7] if e.type != "position.samples"}
    shuffled = sorted(events, key=lambda e: e.at.timestamp() + (1.0 if e.at in held else 0.0))
    assert shuffled != events
    async with running(jslog) as worker:
        await publish(jslog, shuffled)
        await settled(jslog, [STORE])
        assert late_by_source(worker.metrics, STORE) == {}
    in_order = [d.id for d in engine_for_test().process(events).derived]
    assert await derived_ids(jslog, STORE) == in_order


async def test_deploy_and_status_from_the_command_line(jslog: JetStreamLog, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from core.cli import _load_plugins, app

    _load_plugins()
    runner = CliRunner()
    env = {
        "AISLE_NATS_URL": jslog.nc.connected_url.geturl(),  # type: ignore[union-attr]
        "AISLE_PREFIX": jslog.config.prefix,
    }

    def cli(*args: str) -> Any:
        return runner.invoke(app, list(args), env=env)

    broken = tmp_path / "broken.yaml"
    broken.write_text("pack: broken\nversion: 1.0.0\nrules:\n  - id: x\n    where: nonsense ==\n")
    refused = await asyncio.to_thread(cli, "rules", "deploy", str(broken))
    assert refused.exit_code == 1 and "broken.yaml:" in refused.output
    assert "nothing was deployed" in refused.output
    deployed = await asyncio.to_thread(cli, "rules", "deploy", str(ROOT / "rules" / "packs"))
    assert deployed.exit_code == 0, deployed.output
    version = deployed.output.split("version ")[1].split()[0]
    again = await asyncio.to_thread(cli, "rules", "deploy", str(ROOT / "rules" / "packs"))
    assert f"already deployed rules version {version}" in again.output
    async with running(jslog, "status-w") as worker:
        await worker.leases.announce(worker.status())
        status = await asyncio.to_thread(cli, "rules", "status")
    assert status.exit_code == 0, status.output
    assert f"deployed: {version}" in status.output
    assert "status-w" in status.output and "behind" not in status.output
    as_json = json.loads((await asyncio.to_thread(cli, "rules", "status", "--json")).stdout)
    assert as_json["deployed"]["version"] == version
    assert all(not w["behind"] for w in as_json["workers"])
    info = json.loads((await asyncio.to_thread(cli, "log", "info", "--json")).stdout)
    events = next(s for s in info if s["name"].endswith("_EVENTS"))
    assert events["replicas"] == 1 and "leader" in events and events["lagging"] == []


async def test_a_pack_changed_under_its_version_is_refused_and_rollback_restores_the_last(
    jslog: JetStreamLog, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from core.cli import _load_plugins, app

    _load_plugins()
    env = {
        "AISLE_NATS_URL": jslog.nc.connected_url.geturl(),  # type: ignore[union-attr]
        "AISLE_PREFIX": jslog.config.prefix,
    }

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, list(args), env=env)

    packs = tmp_path / "packs"
    packs.mkdir()
    carts = (ROOT / "rules" / "packs" / "carts.yaml").read_text()
    (packs / "carts.yaml").write_text(carts)
    first = await asyncio.to_thread(cli, "rules", "deploy", str(packs))
    assert first.exit_code == 0, first.output
    v1 = first.output.split("version ")[1].split()[0]
    # A comment is no change of the rules: it deploys under the same pack version.
    (packs / "carts.yaml").write_text("# reviewed\n" + carts)
    commented = await asyncio.to_thread(cli, "rules", "deploy", str(packs))
    assert commented.exit_code == 0, commented.output
    v2 = commented.output.split("version ")[1].split()[0]
    version = next(x for x in carts.splitlines() if x.startswith("version:"))
    changed = carts.replace("description:", "description: changed,", 1)
    (packs / "carts.yaml").write_text(changed)
    refused = await asyncio.to_thread(cli, "rules", "deploy", str(packs))
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1, refused.output
    assert "pack carts differs from the deployed one but keeps its version" in said
    assert "nothing was deployed" in said
    (packs / "carts.yaml").write_text(changed.replace(version, 'version: "99.0.0"', 1))
    bumped = await asyncio.to_thread(cli, "rules", "deploy", str(packs))
    assert bumped.exit_code == 0, bumped.output
    v3 = bumped.output.split("version ")[1].split()[0]

    listed = await asyncio.to_thread(cli, "rules", "history")
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if any(v in line for v in (v1, v2, v3))]
    assert [next(v for v in (v1, v2, v3) if v in r) for r in rows] == [v1, v2, v3]
    assert "(deployed)" in rows[-1]

    back = await asyncio.to_thread(cli, "rules", "rollback")
    assert back.exit_code == 0, back.output
    assert f"deployed rules version {v2}" in back.output
    status = await asyncio.to_thread(cli, "rules", "status")
    assert f"deployed: {v2}" in status.output, status.output
    to_first = await asyncio.to_thread(cli, "rules", "rollback", "--to", v1[:6])
    assert to_first.exit_code == 0 and f"version {v1}" in to_first.output, to_first.output
    nowhere = await asyncio.to_thread(cli, "rules", "rollback", "--to", "ffffffff")
    assert nowhere.exit_code == 1 and "no deployment 'ffffffff' in the history" in nowhere.output
    same = await asyncio.to_thread(cli, "rules", "rollback", "--to", v1)
    assert same.exit_code == 1 and "is what is deployed" in " ".join(same.output.split())


async def test_garbage_in_the_deployment_key_is_reported_and_nothing_stops(
    jslog: JetStreamLog, caplog: pytest.LogCaptureFixture
) -> None:
    """21 bytes of garbage in the key stopped ``aisle engine run`` and ``aisle rules status``
    at start (issue 12): the engine runs its local packs and says why, the status says the
    deployment is unreadable, and a new deployment replaces it."""
    from typer.testing import CliRunner

    from core.cli import _load_plugins, app

    _load_plugins()
    env = {
        "AISLE_NATS_URL": jslog.nc.connected_url.geturl(),  # type: ignore[union-attr]
        "AISLE_PREFIX": jslog.config.prefix,
    }
    kv = await jslog.key_value("rules", history=20)
    garbage = b"not a deployment, no!"
    assert len(garbage) == 21
    await kv.put(deploy.KEY, garbage)
    with pytest.raises(deploy.UnreadableDeployment, match=r"21 bytes.*aisle rules deploy"):
        await deploy.deployed(kv)
    status = await asyncio.to_thread(CliRunner().invoke, app, ["rules", "status"], env=env)
    assert status.exit_code == 0, status.output
    assert "unreadable" in status.output and "21 bytes" in " ".join(status.output.split())
    with caplog.at_level("ERROR"):
        async with running(jslog) as worker:
            assert worker.engine is not None and worker.rules_version == "local"
            files = deploy.validated(PACKS, Reference.of(layout()))
            good, new = await deploy.deploy(kv, files, by="test")
            assert new
            for _ in range(50):
                if worker.rules_version == good.version:
                    break
                await asyncio.sleep(0.1)
            assert worker.rules_version == good.version
            await kv.put(deploy.KEY, garbage)  # the watch meets it too, and carries on
            await asyncio.sleep(1.0)
            assert worker.rules_version == good.version
            await kv.put(deploy.KEY, msgspec.msgpack.encode(good))
            await asyncio.sleep(0.5)
    unreadable = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert unreadable[0] == "deployed rules unreadable; running local packs"
    assert "deployment unreadable; rules unchanged" in unreadable[1:]


async def test_a_message_published_first_under_a_receipts_id_does_not_stand_in_for_it(
    jslog: JetStreamLog, caplog: pytest.LogCaptureFixture
) -> None:
    """Derived ids are predictable and the duplicate window is the stream's: a heartbeat
    published on a raw subject under a coming receipt's ``Nats-Msg-Id`` made the server
    drop the real receipt as its duplicate. The receipt lands, and the impostor is
    reported (log and metric)."""
    events = store_day(noisy=False, hours=1, shoppers=15)
    receipts = [
        d.id for d in engine_for_test().process(events).derived if d.type == "receipt.issued"
    ]
    assert len(receipts) >= 5
    impostor = f"{jslog.config.prefix}.{STORE}.store.heartbeat"
    seqs = []
    for rid in receipts[:5]:
        ack = await jslog.js.publish(impostor, b"{}", headers={"Nats-Msg-Id": rid})
        seqs.append(ack.seq)
    with caplog.at_level(logging.ERROR, logger="core.pubacks"):
        async with running(jslog, stores=(STORE,)) as worker:
            await publish(jslog, events)
            await settled(jslog, [STORE])
            preempted = worker.metrics.preempted.labels(STORE)._value.get()
    stored = {r.event.id async for r in jslog.replay(store=STORE, types=["receipt.issued"])}
    assert set(receipts) <= stored, f"{len(set(receipts) - stored)} receipts dropped"
    assert preempted == 5
    reports = [
        r.getMessage() for r in caplog.records if "taken by another message" in r.getMessage()
    ]
    assert len(reports) == 5
    assert all(f"seq {s} on {impostor}" in " ".join(reports) for s in seqs)
    assert set(await derived_ids(jslog, STORE)) == set(await uninterrupted(jslog, STORE))


def test_a_workers_order_of_free_stores_is_the_same_in_every_process() -> None:
    """Restarted under the same id (a new process, a new hash seed), a worker tries the free
    stores in the same order; two workers' orders differ."""
    import json
    import subprocess
    import sys

    code = (
        "import json; from rules.service.leases import _order;"
        "s=[f'store-{i}' for i in range(20)];"
        "print(json.dumps([sorted(s, key=lambda x: _order(w, x)) for w in ('w1', 'w2')]))"
    )
    root = Path(__file__).resolve().parent.parent
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1]
    first, second = json.loads(runs[0])
    assert first != second
