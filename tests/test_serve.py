"""``aisle serve``: the API, the projections and the engine in one command, a demo day in
the log at an accelerated pace, and a clean stop on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from api.serve import (
    EXAMPLE,
    Child,
    DemoDay,
    ServeError,
    _Running,
    bind,
    chain_layouts,
    dashboard_url,
)
from core import events as ev
from core.cli import _load_plugins, app
from core.layout import load_layout
from tests.servekit import start_serve

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def test_the_demo_day_is_the_last_whole_day_before_now_its_closing_heartbeat_included() -> None:
    day = DemoDay(hours=15, opens=7)
    evening = datetime(2026, 12, 7, 23, 30, tzinfo=AMSTERDAM)  # closed, but not yet midnight
    assert day.start("Europe/Amsterdam", evening) == datetime(2026, 12, 6, 7, tzinfo=AMSTERDAM)
    after = datetime(2026, 12, 8, 0, 0, 10, tzinfo=AMSTERDAM)  # the heartbeat may be dated now
    assert day.start("Europe/Amsterdam", after) == datetime(2026, 12, 7, 7, tzinfo=AMSTERDAM)
    assert day.closes(datetime(2026, 12, 7, 7, tzinfo=AMSTERDAM)) == after
    # Whatever the hour, no event of the day, its closing heartbeat included, is after now.
    for hour in range(24):
        now = datetime(2026, 12, 7, hour, 0, tzinfo=AMSTERDAM)
        start = day.start("Europe/Amsterdam", now)
        assert start + timedelta(hours=15) < day.closes(start) <= now
        assert now < day.closes(start) + timedelta(days=1)


def test_the_demo_days_closing_heartbeat_closes_its_last_hour_and_its_day() -> None:
    """What the engine derives from a demo day, without and then with the heartbeat that
    ``aisle serve --demo`` publishes when the day has been published."""
    from api.serve import closing_heartbeats
    from rules.loader import load_rules
    from rules.reference import Reference
    from rules.service.partition import ServiceConfig
    from simulator.day import simulate
    from tests.enginekit import PACKS

    layout = load_layout(EXAMPLE)
    day = DemoDay(shoppers=12, hours=15)
    now = datetime(2026, 12, 7, 9, 0, tzinfo=AMSTERDAM)
    start = day.start(layout.store.timezone, now)
    run = simulate(layout, start, hours=day.hours, shoppers=day.shoppers, seed=day.seed)
    engine = ServiceConfig("demo").engine(
        load_rules(PACKS, Reference.of(layout, members=run.members))
    )
    before = engine.process(sorted(run.events, key=lambda e: e.at)).derived
    midnight = (start + timedelta(days=1)).replace(hour=0).astimezone(UTC)
    day_start = start.replace(hour=0).astimezone(UTC)

    def kpis(derived: list[ev.Event]) -> dict[str, ev.Metric]:
        return {
            e.data.name: e
            for e in derived
            if isinstance(e, ev.Metric) and e.data.window_start == day_start
            and e.data.window_end == midnight
        }  # fmt: skip

    assert "store_conversion" not in kpis(before)  # the day never closed
    heartbeats = closing_heartbeats([layout], day, now)
    assert [h.at for h in heartbeats] == [day.closes(start).astimezone(UTC)]
    after = engine.process(heartbeats).derived
    assert "store_conversion" in kpis(after), sorted(kpis(after))
    last_hour = start.replace(hour=21).astimezone(UTC)
    footfall = [
        e for e in before + after
        if isinstance(e, ev.Metric) and e.data.name == "footfall"
        and e.data.window_start == last_hour
    ]  # fmt: skip
    assert footfall or not [e for e in run.events if e.type == "shopper.entered"
                            and e.at >= last_hour]  # fmt: skip


async def test_the_demo_pace_publishes_store_time_speed_times_faster(jslog) -> None:  # type: ignore[no-untyped-def]
    from simulator.cli import _paced
    from tests.test_log import visit

    events = visit("s1", "v-1", n_items=3)
    span = (events[-1].at - events[0].at).total_seconds()
    began = time.monotonic()
    await _paced(jslog, events, speed=40)  # a minute of the store in 1.5 s
    took = time.monotonic() - began
    assert span / 40 * 0.9 <= took <= span / 40 + 1.0
    assert len([r async for r in jslog.replay()]) == len(events)


def test_a_chain_gets_a_layout_file_per_store_with_its_own_id(tmp_path: Path) -> None:
    paths = chain_layouts(EXAMPLE, 3, tmp_path)
    layouts = [load_layout(p) for p in paths]
    assert [lay.store.id for lay in layouts] == ["corner-01", "corner-02", "corner-03"]
    assert layouts[1].zones == load_layout(EXAMPLE).zones
    assert "# The outline of the shop" in paths[0].read_text()  # the comments are kept
    assert chain_layouts(EXAMPLE, 1, tmp_path) == (EXAMPLE,)


def test_a_port_in_use_is_refused_at_once_with_the_port_named() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"--port {port}: cannot listen there"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


def test_the_printed_url_names_a_host_a_browser_can_reach() -> None:
    assert dashboard_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/dashboard/"
    assert dashboard_url("0.0.0.0", 80) == "http://127.0.0.1:80/dashboard/"
    assert dashboard_url("::1", 8000) == "http://[::1]:8000/dashboard/"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--stores", "3"], "a simulated chain needs --demo"),
        (["--demo", "--store", "corner-01"], "--demo simulates its own stores"),
        (["--store", "bad store"], "letters, digits"),
        (["--layout", "no-such-layout.yaml"], "no-such-layout.yaml"),
        (["--speed", "0"], "--speed"),
    ],
)
def test_bad_options_end_serve_before_it_starts_anything(args: list[str], says: str) -> None:
    _load_plugins()
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_a_port_in_use_ends_the_command_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AISLE_DATA_DIR", str(tmp_path / ".aisle"))
    monkeypatch.setenv("AISLE_DATABASE_URL", f"sqlite:///{tmp_path / 'rm.db'}")
    _load_plugins()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port), "--no-engine"])
    assert result.exit_code == 1
    assert f"--port {port}: cannot listen there" in result.output
    assert not (tmp_path / ".aisle" / "server.json").exists()  # nothing was started


def test_a_part_that_stops_ends_serve_with_the_end_of_its_log(tmp_path: Path) -> None:
    code = "import sys; print('the read models refuse us: schema 0001, want 0002'); sys.exit(3)"
    child = Child("projections", [sys.executable, "-c", code], tmp_path / "projections.log")
    child.start(dict(os.environ))
    running = _Running(bind("127.0.0.1", 0), [child])
    try:
        with pytest.raises(ServeError) as caught:
            asyncio.run(asyncio.wait_for(running.watch(asyncio.Event()), 30))
    finally:
        child.stop()
        running.sock.close()
    message = str(caught.value)
    assert "the projections stopped (exit code 3)" in message
    assert "schema 0001, want 0002" in message  # what it said, not only that it ended


def test_a_part_killed_after_it_settled_is_started_again_not_the_end_of_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill -9 of the engine ended all of serve, the API and the dashboard with it."""
    import signal

    import api.serve

    monkeypatch.setattr(api.serve, "SETTLED_S", 0.5)
    child = Child(
        "engine", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "e.log"
    )
    child.start(dict(os.environ))
    running = _Running(bind("127.0.0.1", 0), [child])
    first = child.process.pid  # type: ignore[union-attr]

    async def kill_then_stop() -> None:
        stop = asyncio.Event()
        watching = asyncio.create_task(running.watch(stop))
        await asyncio.sleep(1.0)
        os.kill(first, signal.SIGKILL)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if child.process is not None and child.process.pid != first:
                break
        stop.set()
        await watching

    try:
        asyncio.run(asyncio.wait_for(kill_then_stop(), 30))
        assert child.process is not None and child.process.pid != first
        assert child.exited() is None and running.restarted == {"engine": 1}
    finally:
        child.stop()
        running.sock.close()


@pytest.mark.integration
def test_serve_demo_shows_a_store_day_through_the_api_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    served = start_serve(
        tmp_path, "--demo", "--shoppers", "40", "--head-start", "6", "--speed", "3000"
    )
    try:
        assert "operator token (new, in " in "".join(served.lines)
        nats = served.nats_pid()
        children = [pid for pid in served.children() if pid != nats]
        assert nats is not None and len(children) == 2  # the engine and the projections
        # The raw day in, the engine's receipts out, the projections' rows in SQL, the API.
        took = served.wait_for(
            "a receipt through the API",
            lambda: bool(served.get("/stores/corner-01/receipts?limit=1")["items"]),
            timeout_s=150,
        )
        live = served.get("/stores/corner-01/live")
        assert live["store"] == "corner-01"
        # At the end of the day its windows close: the day's store conversion appears.
        start = DemoDay().start("Europe/Amsterdam", datetime.now().astimezone())
        day = start.replace(hour=0).astimezone(UTC)
        span = f"from={day:%Y-%m-%dT%H:%M:%SZ}&to={day + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
        closed = served.wait_for(
            "the day's store conversion",
            lambda: (
                served.get(f"/stores/corner-01/metrics?{span}&name=store_conversion")["kpis"][
                    "store_conversion"
                ]
                is not None
            ),
            timeout_s=150,
        )
        with urllib.request.urlopen(served.url, timeout=10) as resp:
            assert "aisle" in resp.read().decode()
        began = time.monotonic()
        code = served.interrupt()
        stopped_in = time.monotonic() - began
    finally:
        served.stop()
    assert code == 0, served.logs()
    for pid in [nats, *children]:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"pid {pid} still runs"
    assert not (served.data_dir / "server.json").exists()
    print(
        f"first receipt through the API after {took:.1f} s, the day closed {closed:.1f} s "
        f"later; stopped in {stopped_in:.1f} s"
    )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_serve_keeps_one_operator_token_across_starts_owner_only(tmp_path: Path) -> None:
    from api.auth import list_tokens, revoke_token
    from api.serve import serve_token
    from tests.readmodelkit import sqlite_db

    db = sqlite_db(tmp_path / "rm.db")
    url, kept = f"sqlite:///{tmp_path / 'rm.db'}", tmp_path / "serve" / "operator.token"
    first, reused = serve_token(url, (), "aisle serve", kept)
    assert not reused and kept.read_text().strip() == first
    assert kept.stat().st_mode & 0o777 == 0o600
    for _ in range(3):  # each start of serve
        assert serve_token(url, (), "aisle serve", kept) == (first, True)
    assert [t.id for t in list_tokens(db)] == [first.split(".")[0]]
    # Other stores: the old token is revoked, not left behind.
    other, reused = serve_token(url, ("corner-01",), "aisle serve", kept)
    assert not reused and other != first
    rows = {t.id: t for t in list_tokens(db)}
    assert rows[first.split(".")[0]].revoked_at is not None
    assert rows[other.split(".")[0]].revoked_at is None
    # Revoked by a user: the next start makes a new one.
    revoke_token(db, other.split(".")[0])
    third, reused = serve_token(url, ("corner-01",), "aisle serve", kept)
    assert not reused and third not in (first, other)
    assert len(list_tokens(db)) == 3
    # A damaged file (no text, or another text): a new token, and the last one revoked.
    for junk in (b"\xff\xfe\x00garbage", b"nothing.like.a.token"):
        kept.write_bytes(junk)
        fresh, reused = serve_token(url, ("corner-01",), "aisle serve", kept)
        assert not reused
        live = [t for t in list_tokens(db) if t.revoked_at is None]
        assert [t.id for t in live] == [fresh.split(".")[0]], "the one before is revoked"


def test_a_second_serve_on_one_data_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    """It took the first's projections over, and the first ended."""
    from api.serve import ServeError, data_dir_lock

    held = rf"another aisle serve \(pid {os.getpid()}\)"
    with (
        data_dir_lock(tmp_path / "serve"),
        pytest.raises(ServeError, match=held),
        data_dir_lock(tmp_path / "serve"),
    ):
        pass
    with data_dir_lock(tmp_path / "serve"):  # the first gone, the lock with it
        pass


@pytest.mark.integration
def test_a_killed_embedded_nats_server_is_restarted_and_serve_goes_on(tmp_path: Path) -> None:
    import signal
    import urllib.error

    served = start_serve(tmp_path, "--no-engine")
    try:
        nats = served.nats_pid()
        children = served.children()
        assert nats is not None and len([p for p in children if p != nats]) == 1
        url = json.loads((served.data_dir / "server.json").read_text())["url"]
        assert served.get("/stores/corner-01/events?limit=1")["items"] == []
        os.kill(nats, signal.SIGKILL)
        answers: set[int] = set()

        def back() -> bool:
            try:
                served.get("/stores/corner-01/events?limit=1")
            except urllib.error.HTTPError as exc:
                answers.add(exc.code)  # while it is down: 503, never a 500
                raise
            now = served.nats_pid()
            return now is not None and now != nats

        took = served.wait_for("the log back through the API", back, timeout_s=60)
        assert answers <= {503}, answers
        assert served.process.poll() is None, served.logs()  # serve did not end
        assert json.loads((served.data_dir / "server.json").read_text())["url"] == url
        served.read_until(r"nats-server \(pid \d+, \S+\) stopped \(killed by signal 9\)", 10)
        served.read_until(r"nats-server is back on \S+ \(pid \d+\)", 10)
        # The projections reconnected (or were started again): a new event reaches the API.
        alert = ev.derive(
            ev.AlertRaised,
            rule=ev.RuleRef("frustration.queue_wait", "1.0.0"),
            caused_by=["0" * 32],
            store="corner-01",
            at=datetime.now(UTC) - timedelta(minutes=1),
            subject="s-after",
            data=ev.AlertData(alert="queue_wait_long", key="s-after", severity="warning"),
        )
        served.publish([alert])
        served.wait_for(
            "an alert published after the restart, projected",
            lambda: bool(served.get(f"/stores/corner-01/alerts/{alert.id}")),
            timeout_s=60,
        )
        new_nats = served.nats_pid()
        code = served.interrupt()
    finally:
        served.stop()
    assert code == 0, served.logs()
    assert new_nats is not None
    assert not Path(f"/proc/{new_nats}").exists() or _zombie(new_nats)
    print(f"the log was back through the API {took:.1f} s after the kill")


def test_a_part_ends_with_serve_even_when_serve_is_killed(tmp_path: Path) -> None:
    """Killed with SIGKILL, serve left its engine and projections running beside the next."""
    import signal
    import subprocess
    import sys
    import time

    from api.serve import ORPHAN_GUARD

    argv = [*ORPHAN_GUARD, sys.executable, "-c", "import time; time.sleep(120)"]
    parent = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({argv!r})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    time.sleep(0.5)
    os.kill(child, 0)  # running
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and b"Z" not in _state(child):
        assert time.monotonic() < deadline, "the part outlived serve"
        time.sleep(0.1)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1][:3]
    except OSError:
        return b"Z"
