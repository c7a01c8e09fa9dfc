"""``aisle adapt`` as a process, against a nats-server of the test's own: the server stopped
mid-run and restarted on the same store, and the adapter SIGKILLed mid-run and run again
over the same video. Either way every event is in the log once, each subject in the
order of a run that had neither; each process runs with a PYTHONHASHSEED of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from core.config import LogConfig
from core.jetstream import JetStreamLog, connect
from core.layout import Layout, load_layout
from core.natsd import EmbeddedNats
from tests.conftest import set_up, unique_prefix
from tests.test_adapt_cli import CAMERA, LAYOUT, render

pytestmark = pytest.mark.integration

AISLE = Path(sys.executable).parent / "aisle"
STORE = "corner-01"
FRAMES = 360  # 24 s of the door camera: six shoppers come in, about 80 events


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corner: Layout = load_layout(LAYOUT)
    return render(corner, CAMERA, tmp_path_factory.mktemp("outage"), FRAMES)


class Run:
    """One ``aisle adapt`` process over ``video``, into ``prefix``'s streams, with an
    outbox in ``data``; its stderr in a file (a pipe left unread could block it)."""

    def __init__(self, url: str, prefix: str, data: Path, video: Path, seed: int) -> None:
        self.stderr = data.with_suffix(f".{seed}.stderr")
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AISLE_NATS_URL": url,
            "AISLE_PREFIX": prefix,
            "AISLE_DATA_DIR": str(data),
            "PYTHONHASHSEED": str(seed),
        }
        cmd = [str(AISLE), "adapt", "--layout", str(LAYOUT), "--camera", CAMERA]
        cmd += ["--source", str(video)]
        with self.stderr.open("w") as sink:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=data, stdout=subprocess.PIPE, stderr=sink, text=True
            )

    def wait(self, timeout_s: float = 300) -> tuple[int, str, str]:
        out, _ = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, out, self.stderr.read_text()


def deployment(url: str) -> str:
    """A new prefix with its deployment set up (an adapter makes none)."""
    prefix = unique_prefix()
    set_up({"AISLE_NATS_URL": url, "AISLE_PREFIX": prefix})
    return prefix


async def held(url: str, prefix: str) -> dict[tuple[str, str], list[str]]:
    """Each subject's event ids in the log, in the log's order."""
    log = await JetStreamLog.open(await connect(url), LogConfig(prefix=prefix), read_only=True)
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    try:
        for types in (None, ["position.samples"]):
            async for r in log.replay(store=STORE, types=types):
                out[(r.event.store, r.event.type)].append(r.event.id)
    finally:
        await log.close()
    return dict(out)


def count(url: str, prefix: str) -> int:
    try:
        return sum(len(ids) for ids in asyncio.run(held(url, prefix)).values())
    except Exception:  # the streams are not made yet
        return 0


def until_stored(url: str, prefix: str, run: Run, at_least: int) -> int:
    deadline = time.monotonic() + 180
    while (n := count(url, prefix)) < at_least:
        assert run.proc.poll() is None, run.stderr.read_text()
        assert time.monotonic() < deadline, f"only {n} events stored"
        time.sleep(0.2)
    return n


@pytest.fixture
def baseline(private_nats: EmbeddedNats, video: Path, tmp_path: Path) -> dict:
    """What a run with no outage and no crash stores."""
    prefix = deployment(private_nats.url)
    code, out, err = Run(private_nats.url, prefix, tmp_path / "base", video, seed=1).wait()
    assert code == 0, out + err
    return asyncio.run(held(private_nats.url, prefix))


def test_nats_stopped_mid_run_and_restarted_loses_nothing_and_stores_nothing_twice(
    private_nats: EmbeddedNats, video: Path, tmp_path: Path, baseline: dict
) -> None:
    total = sum(len(ids) for ids in baseline.values())
    assert total > 40 and (STORE, "shopper.entered") in baseline, baseline.keys()
    prefix = deployment(private_nats.url)
    run = Run(private_nats.url, prefix, tmp_path / "outage", video, seed=2)
    before = until_stored(private_nats.url, prefix, run, 5)
    private_nats.stop()  # publishes in flight; the adapter carries on into its outbox
    time.sleep(4)
    assert run.proc.poll() is None, "the command waits for the log with events to send"
    private_nats.start()  # the same port and store directory
    code, out, err = run.wait()
    assert code == 0, out + err
    assert before < total, "the outage fell inside the run"
    assert "the log is unavailable" in err and "the log is back" in err, err
    got = asyncio.run(held(private_nats.url, prefix))
    ids = Counter(i for subject in got.values() for i in subject)
    assert max(ids.values()) == 1, "nothing stored twice"
    assert got == baseline, "every event, each subject in the same order"


def test_an_adapter_killed_mid_run_and_run_again_publishes_each_event_once_in_order(
    private_nats: EmbeddedNats, video: Path, tmp_path: Path, baseline: dict
) -> None:
    total = sum(len(ids) for ids in baseline.values())
    prefix = deployment(private_nats.url)
    data = tmp_path / "killed"
    run = Run(private_nats.url, prefix, data, video, seed=3)
    until_stored(private_nats.url, prefix, run, 20)
    run.proc.send_signal(signal.SIGKILL)
    run.wait()
    cut = count(private_nats.url, prefix)
    assert 20 <= cut < total, "killed mid-run"
    again = Run(private_nats.url, prefix, data, video, seed=4)  # the same outbox
    code, out, err = again.wait()
    assert code == 0, out + err
    got = asyncio.run(held(private_nats.url, prefix))
    assert max(Counter(i for s in got.values() for i in s).values()) == 1, "nothing twice"
    assert got == baseline, "nothing missing, each subject in the same order"


def test_an_adapter_started_while_nats_is_down_sends_everything_when_it_comes_up(
    private_nats: EmbeddedNats, video: Path, tmp_path: Path, baseline: dict
) -> None:
    """A camera does not wait for the log: the whole video goes into the outbox while no
    server answers, and into the log, in order, once one does."""
    prefix = deployment(private_nats.url)
    private_nats.stop()
    run = Run(private_nats.url, prefix, tmp_path / "late", video, seed=5)
    deadline = time.monotonic() + 240
    while "source ended" not in (said := run.stderr.read_text()):
        assert run.proc.poll() is None, said
        assert time.monotonic() < deadline, said
        time.sleep(0.2)
    assert "the log is away: the events wait in the outbox" in said
    private_nats.start()
    code, out, err = run.wait()
    assert code == 0, out + err
    assert asyncio.run(held(private_nats.url, prefix)) == baseline
