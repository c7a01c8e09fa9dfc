"""The shelf-camera adapter on rendered shelf-camera video: MediaPipe hands on the
drawn arms, the slot's look before and after, the floor positions for whose hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest

from adapters.attribution import Positions
from adapters.shelfcam import (
    ShelfReading,
    ShelfWatch,
    item_event,
    protobuf_compat,
    watch_video,
)
from core import events as ev
from core.layout import Layout, check_layout, load_layout
from simulator.shelfcam import Reach, ReachTruth, reaches_from_events, render_shelf_camera

protobuf_compat()  # before mediapipe is imported: its bindings call what protobuf 5 dropped
pytest.importorskip("mediapipe")

STORE = Path(__file__).parent.parent / "examples" / "stores" / "convenience.yaml"
CAM = "shelfcam-g1-east"
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def layout() -> Layout:
    return load_layout(STORE)


def _run(
    layout: Layout,
    tmp_path: Path,
    reaches: list[Reach],
    stand: dict[str, tuple[float, float]],
    stock: dict[str, int] | None = None,
    held: dict[str, dict[str, int]] | None = None,
) -> tuple[list[ShelfReading], list[ReachTruth]]:
    """Render the reaches, let the shoppers stand where ``stand`` says for the whole
    video, and run the adapter over the video as decoded from disk."""
    video = tmp_path / "shelf.avi"
    truth = render_shelf_camera(layout, CAM, reaches, video, stock=stock, seed=3)
    cam = layout.shelf_camera(CAM)
    positions = Positions(keep_s=120)
    n = truth[-1].last + 40
    for f in range(0, n, 3):
        positions.add(
            T0 + timedelta(seconds=f / cam.fps), [(s, x, y) for s, (x, y) in stand.items()]
        )
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return watch_video(ShelfWatch(layout, CAM), frames, T0, positions, held=held), truth


def test_a_pick_is_found_and_attributed(layout: Layout, tmp_path: Path) -> None:
    readings, truth = _run(
        layout,
        tmp_path,
        [Reach("v-a", "milk-chocolate-100g", 0.6, "picked", (3.1, 4.05))],
        {"v-a": (3.1, 4.05), "v-far": (3.2, 2.9)},
    )
    assert [(r.sku, r.action, r.qty, r.subject, r.review) for r in readings] == [
        ("milk-chocolate-100g", "picked", 1, "v-a", None)
    ]
    r = readings[0]
    assert r.confidence >= 0.9
    fps = layout.shelf_camera(CAM).fps
    assert abs((r.started - T0).total_seconds() - truth[0].first / fps) < 0.5
    event = item_event(r, "corner-01")
    assert isinstance(event, ev.ItemPicked)
    assert event.subject == "v-a" and event.source == CAM
    assert (event.data.sku, event.data.shelf, event.data.qty) == (
        "milk-chocolate-100g",
        "g1-east",
        1,
    )
    assert ev.decode(ev.encode(event)) == event


def test_a_put_back_is_found(layout: Layout, tmp_path: Path) -> None:
    readings, _ = _run(
        layout,
        tmp_path,
        [Reach("v-b", "chewing-gum-mint", 0.6, "put_back", (3.1, 5.3))],
        {"v-b": (3.1, 5.3)},
        stock={"chewing-gum-mint": 1},
        held={"v-b": {"chewing-gum-mint": 1}},
    )
    assert [(r.sku, r.action, r.qty, r.subject, r.review) for r in readings] == [
        ("chewing-gum-mint", "put_back", 1, "v-b", None)
    ]
    assert isinstance(item_event(readings[0], "corner-01"), ev.ItemPutBack)


def test_two_shoppers_at_one_shelf_each_get_their_own(layout: Layout, tmp_path: Path) -> None:
    """Both stand 0.3 m from the shelf, 0.7 m apart along it, and reach at once: by the
    shelf alone they cannot be told apart; by where each arm comes in they can."""
    stand = {"v-a": (3.1, 4.05), "v-b": (3.1, 4.75)}
    readings, _ = _run(
        layout,
        tmp_path,
        [
            Reach("v-a", "milk-chocolate-100g", 0.6, "picked", stand["v-a"]),
            Reach("v-b", "salted-peanuts-200g", 0.8, "picked", stand["v-b"]),
        ],
        stand,
    )
    got = sorted((r.sku, r.action, r.subject, r.review) for r in readings)
    assert got == [
        ("milk-chocolate-100g", "picked", "v-a", None),
        ("salted-peanuts-200g", "picked", "v-b", None),
    ]


def test_a_reach_that_takes_nothing_gives_no_event(layout: Layout, tmp_path: Path) -> None:
    readings, _ = _run(
        layout,
        tmp_path,
        [Reach("v-a", "crisps-sea-salt-150g", 0.6, "none", (3.1, 3.0))],
        {"v-a": (3.1, 3.0)},
    )
    assert [(r.sku, r.action, r.subject) for r in readings] == [
        ("crisps-sea-salt-150g", "none", "v-a")
    ]
    assert item_event(readings[0], "corner-01") is None


def test_a_change_with_no_hand_seen_goes_to_review(layout: Layout, tmp_path: Path) -> None:
    """The facing goes, but no arm is in the picture: not adopted silently, not charged."""
    readings, _ = _run(
        layout,
        tmp_path,
        [Reach("v-a", "salted-peanuts-200g", 0.6, "picked", (3.1, 4.75), seen=False)],
        {"v-a": (3.1, 4.75)},
    )
    assert [(r.sku, r.action, r.qty, r.subject) for r in readings] == [
        ("salted-peanuts-200g", "picked", 1, "v-a")
    ]
    assert "no hand was seen" in (readings[0].review or "")
    assert item_event(readings[0], "corner-01") is None


def test_the_shelf_camera_section_is_checked(tmp_path: Path) -> None:
    text = STORE.read_text().replace(
        "{sku: chewing-gum-mint, box: [515, 110, 620, 250]}",
        "{sku: chewing-gun-mint, box: [515, 110, 700, 250]}",
    )
    errors = [e.message for e in check_layout(tmp_path / "s.yaml", text=text)]
    assert any("'chewing-gun-mint'" in m and "chewing-gum-mint" in m for m in errors), errors
    assert any("[515.0, 110.0, 700.0, 250.0]" in m and "640x480" in m for m in errors), errors


def test_the_simulators_picks_come_back_as_the_same_events(layout: Layout, tmp_path: Path) -> None:
    """Simulated events in, rendered video, events out: the adapter's picks and
    put-backs are the simulator's (type, subject, sku, shelf, qty), from the video alone
    and the position samples."""
    store, src = "corner-01", "sim"
    stand = {"v-a": (3.1, 3.3), "v-b": (3.1, 5.2)}
    samples = [
        ev.new(
            ev.PositionSamples,
            store=store,
            at=T0 + timedelta(seconds=k / 5),
            source=src,
            subject="floor",
            data=ev.PositionData(
                frame=k, samples=tuple(ev.PositionSample(s, x, y) for s, (x, y) in stand.items())
            ),
        )
        for k in range(60)
    ]

    def item(cls: type, subject: str, sku: str, s: float) -> ev.Event:
        data = ev.ItemData(sku=sku, shelf="g1-east")
        return ev.new(
            cls, store=store, at=T0 + timedelta(seconds=s), source=src, subject=subject, data=data
        )

    told = [
        item(ev.ItemPicked, "v-a", "crisps-sea-salt-150g", 1.5),
        item(ev.ItemPicked, "v-b", "chewing-gum-mint", 2.0),
        item(ev.ItemPutBack, "v-a", "crisps-sea-salt-150g", 5.0),
        item(ev.ItemPicked, "v-a", "porridge-oats-1kg", 6.0),  # another shelf: not seen
    ]
    reaches = reaches_from_events(layout, CAM, [*samples, *told], T0)
    assert [(r.subject, r.sku, r.action) for r in reaches] == [
        ("v-a", "crisps-sea-salt-150g", "picked"),
        ("v-b", "chewing-gum-mint", "picked"),
        ("v-a", "crisps-sea-salt-150g", "put_back"),
    ]
    readings, _ = _run(layout, tmp_path, reaches, stand)
    got = [item_event(r, store) for r in readings]
    assert all(e is not None for e in got), readings

    def key(e: ev.Event) -> tuple:
        return (e.type, e.subject, e.data.sku, e.data.shelf, e.data.qty)

    assert sorted(map(key, got)) == sorted(map(key, told[:3]))
    for e in got:
        same = [t for t in told[:3] if key(t) == key(e)]
        assert min(abs((e.at - t.at).total_seconds()) for t in same) < 0.5


def test_a_put_back_by_a_shopper_who_took_none_is_for_review(
    layout: Layout, tmp_path: Path
) -> None:
    """A facing filled by someone who holds none of that SKU: likely another product in
    the wrong slot, which the camera cannot name."""
    readings, _ = _run(
        layout,
        tmp_path,
        [Reach("v-b", "chewing-gum-mint", 0.6, "put_back", (3.1, 5.3))],
        {"v-b": (3.1, 5.3)},
        stock={"chewing-gum-mint": 1},
        held={"v-b": {"cornflakes-500g": 1}},
    )
    assert [(r.action, r.subject) for r in readings] == [("put_back", "v-b")]
    assert "wrong slot" in (readings[0].review or "")
    assert item_event(readings[0], "corner-01") is None


def test_a_reach_past_another_shopper_goes_to_the_one_whose_arm_it_is(
    layout: Layout, tmp_path: Path
) -> None:
    """v-a, by the chocolate, reaches across to the gum where v-b stands: nearest the
    slot is v-b, but the arm comes in at v-a's place. (Attributed from the shoppers'
    places alone, the nearest to the gum would be v-b.)"""
    stand = {"v-a": (3.1, 4.0), "v-b": (3.1, 5.3)}
    readings, _ = _run(
        layout,
        tmp_path,
        [Reach("v-a", "chewing-gum-mint", 0.6, "picked", stand["v-a"])],
        stand,
    )
    changed = [r for r in readings if r.action != "none"]
    assert [(r.sku, r.action, r.subject, r.review) for r in changed] == [
        ("chewing-gum-mint", "picked", "v-a", None)
    ]
    # the arm crosses the peanuts on its way: a fingertip there, nothing taken, no event
    assert all(item_event(r, "corner-01") is None for r in readings if r.action == "none")


def test_aisle_render_films_a_shelf_camera_with_its_reach_truth(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from simulator.cli import register

    app = typer.Typer()
    register(app)  # the simulator's commands alone, as `aisle` loads them
    args = ["render", "--camera", CAM, "--minutes", "3", "--shoppers", "10", "--seed", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / f"{CAM}.avi.truth.json").read_text())
    reaches = truth["reaches"]
    assert reaches and all(r["action"] in ("picked", "put_back", "none") for r in reaches)
    skus = {v.sku for v in load_layout(STORE).shelf_camera(CAM).slots}
    assert {r["sku"] for r in reaches} <= skus
    cap = cv2.VideoCapture(str(tmp_path / f"{CAM}.avi"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) > max(r["last"] for r in reaches)
    cap.release()


def test_mediapipe_brings_no_second_opencv() -> None:
    """mediapipe asks for opencv-contrib-python; installed --no-deps, cv2 stays the
    project's opencv-python below 5, with the HOG people detector."""
    from importlib import metadata

    import mediapipe

    assert mediapipe.__version__ == "0.10.14"
    names = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert {n for n in names if n.startswith("opencv")} == {"opencv-python"}
    assert cv2.__version__.split(".")[0] == "4"
    assert metadata.version("opencv-python").startswith(cv2.__version__)
    cv2.HOGDescriptor().setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
