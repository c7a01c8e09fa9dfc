"""What ``bench/vision_fps.py`` measures the large store's capacity with: a camera played
from a clip gives the frames the layout's rate picks, at the camera's pace by the wall
clock, as a live source (so the adapter drops what it cannot keep up with)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.layout import Layout, load_layout
from tests.benchkit import load_bench

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_bench("vision_fps")


@pytest.fixture(scope="module")
def store() -> Layout:
    return load_layout(ROOT / "examples" / "stores" / "supermarket.yaml")


@pytest.fixture(scope="module")
def clip(bench, store: Layout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clip") / "door.mp4"
    return bench.render_clip(store, "cam-A1", 2, 20, out, seed=1)  # 2 s, looped below


def test_the_large_store_asks_for_74_5_frames_a_second_of_its_64_cameras(store: Layout) -> None:
    rates = [1.0 / c.detect_interval_s for c in store.cameras]
    assert len(rates) == 64
    assert sorted(set(rates)) == [0.25, 10.0] and rates.count(10.0) == 6
    assert sum(rates) == pytest.approx(74.5)


def test_a_clip_played_unpaced_loops_and_gives_the_frames_each_camera_is_sampled_at(
    bench, store: Layout, clip: Path
) -> None:
    t0 = time.monotonic()
    door = bench.PacedClip(clip, store.camera("cam-A1"), t0, t0 + 9.0, paced=False)
    crowd = bench.PacedClip(clip, store.camera("cam-A3"), t0, t0 + 9.0, paced=False)
    assert not door.live and not crowd.live
    door_frames = list(door)
    assert len(door_frames) == 90  # 9 s at 10 frames/s from a 2 s clip, looped
    assert [f.number for f in door_frames] == list(range(1, 91))
    assert [f.offset_s for f in crowd] == [0.0, 4.0, 8.0]  # a frame every 4 s
    assert door_frames[0].image.shape == (480, 640, 3)


def test_a_paced_clip_is_live_and_gives_its_frames_no_sooner_than_the_camera_would(
    bench, store: Layout, clip: Path
) -> None:
    t0 = time.monotonic()
    door = bench.PacedClip(clip, store.camera("cam-A1"), t0, t0 + 1.0)
    assert door.live
    frames = list(door)
    took = time.monotonic() - t0
    assert len(frames) == 10 and took >= 0.9
    assert min(door.late) >= 0.0  # never read before its time
