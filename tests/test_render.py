"""Rendered camera frames: the ground-truth boxes against the decoded pixels, occlusion,
determinism, and the camera model behind both.

The example stores have overhead cameras only, so an angled camera is built here from a
known pinhole (position, yaw, pitch, focal length) and calibrated the way an installer
would: floor marks and the pixels they appear at.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.layout import Layout, load_layout, load_layout_text
from simulator.figures import project, projection
from simulator.render import Person, RenderOptions, RenderStats, render_camera, truth_boxes

STORES = Path(__file__).resolve().parent.parent / "examples" / "stores"
PLAIN = RenderOptions(lighting=False, noise_sigma=0.0)  # only the people change pixels
CHANGED = 40  # grey levels: a drawn person against the empty store, after mp4v


def pinhole(
    position: tuple[float, float, float], yaw: float, pitch: float, focal: float, size=(1280, 720)
) -> np.ndarray:
    """The 3x4 projection of a camera at ``position`` facing ``yaw`` (deg), tipped down."""
    yaw, pitch = math.radians(yaw), math.radians(pitch)
    forward = np.array(
        [math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)]
    )
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rot = np.array([right, np.cross(forward, right), forward])  # rows: image u, v, depth
    k = np.array([[focal, 0, size[0] / 2], [0, focal, size[1] / 2], [0, 0, 1]])
    return k @ np.column_stack([rot, -rot @ np.asarray(position, float)])


CAMERA_AT = (0.5, 0.5, 3.0)
TRUE_P = pinhole(CAMERA_AT, yaw=40, pitch=30, focal=800)


def angled_layout() -> Layout:
    """A 10 x 8 m shop: one gondola, a wall rack, a queue, seen by one angled camera."""
    floor_to_image = TRUE_P[:, [0, 1, 3]]
    inv = np.linalg.inv(floor_to_image)
    marks = []
    for fu, fv in ((0.2, 0.5), (0.8, 0.5), (0.85, 0.9), (0.15, 0.9), (0.5, 0.7)):
        q = inv @ [fu * 1280, fv * 720, 1.0]
        x, y = round(q[0] / q[2], 2), round(q[1] / q[2], 2)  # a tape measure's precision
        u = floor_to_image @ [x, y, 1.0]
        marks.append(f"- {{image: [{u[0] / u[2]:.3f}, {u[1] / u[2]:.3f}], floor: [{x}, {y}]}}")
    cx, cy, cz = CAMERA_AT
    text = f"""
store: {{id: angle-01, name: Angled test shop, timezone: Europe/Amsterdam}}
floor: [[0, 0], [10, 0], [10, 8], [0, 8]]
zones:
  - {{id: shop, kind: aisle, polygon: [[0, 0], [10, 0], [10, 8], [0, 8]]}}
  - {{id: sf-g, kind: shelf_front, polygon: [[3.4, 3], [4, 3], [4, 6], [3.4, 6]]}}
  - {{id: queue, kind: checkout_queue, polygon: [[6, 0.5], [8, 0.5], [8, 2], [6, 2]]}}
  - {{id: sf-wall, kind: shelf_front, polygon: [[9.4, 2], [10, 2], [10, 6], [9.4, 6]]}}
shelves:
  - {{id: gondola, zone: sf-g, footprint: [[4, 3], [4.6, 3], [4.6, 6], [4, 6]]}}
  - {{id: wall-rack, zone: sf-wall, footprint: [[10, 2], [10, 6]]}}
cameras:
  - id: cam-angled
    kind: angled
    position: [{cx}, {cy}, {cz}]
    image: {{width: 1280, height: 720}}
    fps: 10
    sees: [shop, sf-g, queue, sf-wall]
    calibration:
      points:
""" + "".join(f"        {m}\n" for m in marks)
    return load_layout_text(text, "angled.yaml")


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(STORES / "convenience.yaml")


@pytest.fixture(scope="module")
def angled() -> Layout:
    return angled_layout()


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def read_gt(path: Path) -> list[tuple[int, int, int, int, int, int, float]]:
    """(frame, id, x, y, w, h, visibility) per line, after checking the fixed columns."""
    rows = []
    for line in path.read_text().splitlines():
        f = line.split(",")
        assert len(f) == 9 and f[6] == "1" and f[7] == "1", line
        rows.append((*map(int, f[:6]), float(f[8])))
    return rows


def render(layout, camera, frames, tmp_path: Path, name: str, options=PLAIN) -> RenderStats:
    return render_camera(
        layout, camera, frames, tmp_path / f"{name}.mp4", tmp_path / f"{name}.gt.txt", options
    )


def walk(people: list[Person], n: int, fps: float, dx: float = 0.3, dy: float = 0.1):
    """``n`` frames of everyone walking in step, ``dx``/``dy`` metres a second."""
    for i in range(n):
        t = i / fps
        yield t, [Person(p.track, p.x + dx * t, p.y + dy * t, p.height_m) for p in people]


# -- the boxes are where the people are drawn ---------------------------------------------------

CASES = {
    "overhead": (
        "corner",
        "cam-front-west",
        [
            Person("ann", 1.2, 1.3),  # the camera hangs 2.8 m above (2, 1.625): people
            Person("bob", 2.5, 1.9, 1.85),  # further out than ~1 m are cut by the border
            Person("cat", 2.2, 1.0, 1.55),
            Person("dan", 3.0, 1.4),
            Person("eve", 1.5, 2.0, 1.65),
        ],
    ),
    "angled": (
        "angled",
        "cam-angled",
        [
            Person("ann", 3.0, 2.0),
            Person("bob", 5.5, 1.5, 1.85),
            Person("cat", 2.0, 4.0, 1.55),
            Person("dan", 7.0, 4.5),
            Person("eve", 2.2, 1.0, 1.65),
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_ground_truth_boxes_are_where_people_are_drawn(case, request, tmp_path):
    fixture, cam, people = CASES[case]
    layout = request.getfixturevalue(fixture)
    fps = layout.camera(cam).fps
    stats = render(layout, cam, walk(people, 6, fps), tmp_path, "people")
    render(layout, cam, [(0.0, [])], tmp_path, "empty")
    (background,) = decode(tmp_path / "empty.mp4")
    frames = decode(stats.video_path)
    rows = read_gt(tmp_path / "people.gt.txt")
    assert stats.frames == len(frames) == 6
    assert stats.boxes == len(rows) == 6 * len(people) and stats.skipped == 0

    full_boxes = 0
    for index, frame in enumerate(frames, start=1):
        changed = np.abs(frame.astype(int) - background.astype(int)).max(axis=2) > CHANGED
        covered = np.zeros(changed.shape, bool)
        for _, _, x, y, w, h, vis in (r for r in rows if r[0] == index):
            assert w > 10 and h > 10
            inside = changed[y : y + h, x : x + w]
            covered[max(y - 3, 0) : y + h + 3, max(x - 3, 0) : x + w + 3] = True
            if vis < 0.99:
                continue
            full_boxes += 1
            assert inside.mean() > 0.35, f"frame {index}: box {x, y, w, h} is mostly empty"
            # tight: something of the person is drawn along each of the four sides
            for side in (inside[:3], inside[-3:], inside[:, :3], inside[:, -3:]):
                assert side.any(), f"frame {index}: box {x, y, w, h} is loose on a side"
        assert changed[~covered].mean() < 0.002, f"frame {index}: drawn pixels outside boxes"
    assert full_boxes >= 3 * len(frames)


def test_ids_are_stable_per_track_and_mapped_back(corner, tmp_path):
    people = CASES["overhead"][2]
    stats = render(corner, "cam-front-west", walk(people, 4, 15), tmp_path, "ids")
    rows = read_gt(tmp_path / "ids.gt.txt")
    id_map = json.loads((tmp_path / "ids.gt.ids.json").read_text())
    assert {r[0] for r in rows} == {1, 2, 3, 4} == set(range(1, stats.frames + 1))
    assert id_map == {str(i + 1): p.track for i, p in enumerate(people)}  # first seen, in order
    for frame in (1, 2, 3, 4):
        assert sorted(r[1] for r in rows if r[0] == frame) == [1, 2, 3, 4, 5]


# -- occlusion and visibility ------------------------------------------------------------------


def on_ray(distance: float, bearing_deg: float = 20.0) -> tuple[float, float]:
    """A floor point ``distance`` metres from the angled camera's foot, along one bearing."""
    b = math.radians(bearing_deg)
    return CAMERA_AT[0] + distance * math.cos(b), CAMERA_AT[1] + distance * math.sin(b)


def visibilities(layout, people, tmp_path, name, **options) -> dict[str, float]:
    opts = RenderOptions(lighting=False, noise_sigma=0.0, **options)
    render(layout, "cam-angled", [(0.0, people)], tmp_path, name, opts)
    id_map = json.loads((tmp_path / f"{name}.gt.ids.json").read_text())
    return {id_map[str(r[1])]: r[6] for r in read_gt(tmp_path / f"{name}.gt.txt")}


def test_a_nearer_person_hides_one_behind_on_the_same_line_of_sight(angled, tmp_path):
    near = Person("near", *on_ray(3.0))
    far = Person("far", *on_ray(4.5))
    assert visibilities(angled, [far], tmp_path, "alone") == {"far": 1.0}
    both = visibilities(angled, [far, near], tmp_path, "both", min_visibility=0.0)
    assert both["near"] == 1.0
    assert both["far"] < 0.8
    kept = visibilities(angled, [far, near], tmp_path, "kept")
    assert kept["near"] == 1.0 and kept.get("far", 0.0) == pytest.approx(both["far"], abs=1e-4)
    unhidden = visibilities(angled, [far, near], tmp_path, "off", occlusion=False)
    assert unhidden == {"near": 1.0, "far": 1.0}


def test_a_shelf_hides_a_person_behind_it(angled, tmp_path):
    behind = Person("behind", 5.2, 5.0)  # the gondola is between it and the camera
    seen = visibilities(angled, [behind], tmp_path, "any", min_visibility=0.0)
    assert seen["behind"] < 0.25
    stats = render(angled, "cam-angled", [(0.0, [behind])], tmp_path, "dropped")
    assert stats.boxes == 0 and stats.skipped == 1
    assert (tmp_path / "dropped.gt.txt").read_text() == ""


def test_people_outside_the_view_are_not_in_the_ground_truth(corner, angled, tmp_path):
    inside = Person("inside", 2.0, 1.2)
    away = [Person("stock-room", 7.5, 5.8), Person("far-aisle", 6.5, 4.0)]
    stats = render(corner, "cam-front-west", [(0.0, [*away, inside])], tmp_path, "over")
    assert (stats.boxes, stats.skipped) == (1, 2)
    assert json.loads((tmp_path / "over.gt.ids.json").read_text()) == {"1": "inside"}

    inside = Person("inside", *on_ray(3.0))
    away = [
        Person("behind-camera", *on_ray(-3.0, 40)),  # behind the lens
        Person("under-camera", 0.1, 0.1),
        Person("off-to-the-side", 0.5, 7.5),
    ]
    stats = render(angled, "cam-angled", [(0.0, [*away, inside])], tmp_path, "angled")
    assert (stats.boxes, stats.skipped) == (1, 3)
    assert json.loads((tmp_path / "angled.gt.ids.json").read_text()) == {"1": "inside"}


def test_a_person_cut_by_the_image_border_keeps_a_clipped_box(angled, tmp_path):
    p = TRUE_P / np.linalg.norm(TRUE_P[2, :3])
    # a floor point whose feet are drawn 40 px below the bottom edge of the image
    q = np.linalg.inv(p[:, [0, 1, 3]]) @ [640, 760, 1.0]
    person = Person("cut", q[0] / q[2], q[1] / q[2])
    seen = visibilities(angled, [person], tmp_path, "cut")
    (row,) = read_gt(tmp_path / "cut.gt.txt")
    _, _, x, y, w, h, _ = row
    assert y + h == 720 and 0 < x < x + w < 1280
    assert 0.25 <= seen["cut"] < 1.0


# -- determinism, lighting, errors -------------------------------------------------------------


def test_same_inputs_and_seed_give_the_same_pixels_and_ground_truth(corner, tmp_path):
    people = CASES["overhead"][2]
    opts = RenderOptions(seed=7)  # lighting and noise on
    a = render(corner, "cam-front-west", walk(people, 8, 15), tmp_path, "a", opts)
    b = render(corner, "cam-front-west", walk(people, 8, 15), tmp_path, "b", opts)
    frames_a, frames_b = decode(a.video_path), decode(b.video_path)
    assert len(frames_a) == len(frames_b) == 8
    assert all(np.array_equal(fa, fb) for fa, fb in zip(frames_a, frames_b, strict=True))
    assert (tmp_path / "a.gt.txt").read_bytes() == (tmp_path / "b.gt.txt").read_bytes()
    assert (tmp_path / "a.gt.ids.json").read_bytes() == (tmp_path / "b.gt.ids.json").read_bytes()

    c = render(corner, "cam-front-west", walk(people, 8, 15), tmp_path, "c", RenderOptions(seed=8))
    assert not all(
        np.array_equal(fa, fc) for fa, fc in zip(frames_a, decode(c.video_path), strict=True)
    )


@pytest.mark.parametrize("case", CASES)
def test_the_ground_truth_alone_is_the_videos_ground_truth(case, request, tmp_path):
    fixture, cam, people = CASES[case]
    layout = request.getfixturevalue(fixture)
    crowd = [*people, *(Person(f"{p.track}-2", p.x + 0.4, p.y + 0.5) for p in people)]
    opts = RenderOptions(seed=3)  # lighting and noise on: they must not matter
    video = render(layout, cam, walk(crowd, 10, 15), tmp_path, "video", opts)
    alone = render_camera(layout, cam, walk(crowd, 10, 15), None, tmp_path / "alone.gt.txt", opts)
    assert alone.video_path is None and alone.codec == ""
    assert (alone.frames, alone.boxes, alone.skipped) == (video.frames, video.boxes, video.skipped)
    assert (tmp_path / "alone.gt.txt").read_bytes() == (tmp_path / "video.gt.txt").read_bytes()
    rows = read_gt(tmp_path / "video.gt.txt")
    assert any(r[6] < 0.99 for r in rows)  # someone is hidden or cut: visibility is compared
    ids = {int(k): v for k, v in json.loads((tmp_path / "video.gt.ids.json").read_text()).items()}
    in_memory = [
        (frame, track, box, round(vis, 4))
        for frame, boxes in enumerate(truth_boxes(layout, cam, walk(crowd, 10, 15), opts), 1)
        for track, box, vis in boxes
    ]
    from_file = [(r[0], ids[r[1]], tuple(r[2:6]), r[6]) for r in rows]
    assert sorted(in_memory) == sorted(from_file)


def test_lighting_drifts_and_plain_frames_do_not(corner, tmp_path):
    empty = [(i / 15, []) for i in range(300)]  # 20 s
    lit = render(corner, "cam-front-west", empty, tmp_path, "lit", RenderOptions(noise_sigma=0))
    means = [f.mean() for f in decode(lit.video_path)]
    assert max(means) - min(means) > 5
    plain = render(corner, "cam-front-west", empty[:30], tmp_path, "plain")
    means = [f.mean() for f in decode(plain.video_path)]
    assert max(means) - min(means) < 0.5


def test_falls_back_to_mjpg_where_mp4v_cannot_be_written(corner, tmp_path, monkeypatch):
    real = cv2.VideoWriter
    mp4v = cv2.VideoWriter_fourcc(*"mp4v")

    def writer(path, fourcc, *args):  # an OpenCV built without an MPEG-4 encoder
        return real() if fourcc == mp4v else real(path, fourcc, *args)

    monkeypatch.setattr(cv2, "VideoWriter", writer)
    people = CASES["overhead"][2]
    stats = render(corner, "cam-front-west", walk(people, 3, 15), tmp_path, "fallback")
    assert stats.codec == "MJPG" and stats.video_path == tmp_path / "fallback.avi"
    assert len(decode(stats.video_path)) == 3 and not (tmp_path / "fallback.mp4").exists()


def test_a_track_twice_in_one_frame_is_refused(corner, tmp_path):
    twice = [Person("ann", 1, 1), Person("ann", 2, 2)]
    with pytest.raises(ValueError, match="twice"):
        render(corner, "cam-front-west", [(0.0, twice)], tmp_path, "twice")


def test_unknown_camera_is_refused(corner, tmp_path):
    with pytest.raises(KeyError, match="no camera 'cam-nowhere'"):
        render(corner, "cam-nowhere", [], tmp_path, "none")


# -- the camera model --------------------------------------------------------------------------


def test_projection_recovers_the_pinhole_from_calibration_and_position(angled):
    p = projection(angled.camera("cam-angled"))
    truth = TRUE_P / np.linalg.norm(TRUE_P[2, :3])
    pts = np.array([[3.0, 2.0, 0.0], [3.0, 2.0, 1.7], [7.0, 5.0, 1.0], [2.0, 4.0, 2.5]])
    uv, w = project(p, pts)
    uv_true, w_true = project(truth, pts)
    np.testing.assert_allclose(uv, uv_true, atol=0.5)  # pixels, heights included
    np.testing.assert_allclose(w, w_true, rtol=1e-3)  # depth in metres


def test_projection_agrees_with_the_floor_calibration(corner):
    for cam in corner.cameras:
        p = projection(cam)
        for mark in cam.calibration.points:
            uv, _ = project(p, np.array([[*mark.floor, 0.0]]))
            assert np.allclose(uv[0], cam.to_image(*mark.floor), atol=1e-6)
        # the vertical through the camera is one ray: a head under the lens hides the feet
        below = np.array([[*cam.position[:2], 0.0], [*cam.position[:2], 1.7]])
        (foot, head), w = project(p, below)
        assert np.allclose(foot, head, atol=1e-6)
        assert w[1] == pytest.approx(cam.position[2] - 1.7, rel=0.02)
