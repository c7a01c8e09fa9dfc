"""The detectors on real and rendered frames, scored against ground truth at IoU 0.5.

- Background subtraction (MOG2 and KNN) on the convenience store's front camera, rendered
  by the simulator with its MOTChallenge ground truth: the simulated shoppers walking,
  queueing and touching, with the renderer's lighting drift, flicker and sensor noise.
- HOG on rendered upright figures seen by an angled 640x480 camera (TUD-Campus's size),
  and on real photos bundled with scikit-image: a standing man, and photos of no one.
- ``det.txt`` on TUD-Campus's real Faster R-CNN detections (``../shared/data/mot``).

Scoring: detections and ground-truth boxes are matched one to one (Hungarian, on IoU) and a
match counts at IoU >= 0.5. People the renderer shows less than a quarter of (cut by the
image border, or behind a shelf) are "don't care", as in MOT16: finding them is not a
false positive, and missing them not a miss.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import matplotlib
import numpy as np
import pytest
import skimage.data
import supervision as sv
from scipy.optimize import linear_sum_assignment

from adapters import (
    PERSON,
    BackgroundSubtraction,
    BlobLimits,
    Detector,
    DetFile,
    DetFileError,
    Frame,
    HogPeople,
    open_source,
    people,
)
from adapters import detfile as detfile_module
from core.layout import Layout, load_layout, load_layout_text
from simulator.day import simulate
from simulator.render import Person, RenderOptions, RenderStats, render_camera
from tests.datakit import needs
from tests.test_render import pinhole

ROOT = Path(__file__).resolve().parent.parent
STORES = ROOT / "examples" / "stores"
TUD, needs_tud = needs("mot/TUD-Campus")
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CARE = 0.25  # visibility below which a ground-truth person is "don't care"


def frame_of(image: np.ndarray, number: int = 1, offset_s: float = 0.0) -> Frame:
    return Frame(
        image=image,
        number=number,
        offset_s=offset_s,
        at=START + timedelta(seconds=offset_s),
        source="test",
    )


# -- scoring -------------------------------------------------------------------------------


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    def add(self, found: np.ndarray, care: np.ndarray, dont: np.ndarray) -> None:
        """Match ``found`` boxes to the ``care`` boxes; unmatched ones that lie mostly on
        a ``dont`` (don't care) box are neither right nor wrong."""
        matched: set[int] = set()
        if len(found) and len(care):
            iou = sv.box_iou_batch(care, found)
            rows, cols = linear_sum_assignment(-iou)
            hit = iou[rows, cols] >= 0.5
            matched = set(cols[hit].tolist())
            self.tp += int(hit.sum())
        self.fn += len(care) - len(matched)
        for j in set(range(len(found))) - matched:
            if len(dont):
                x1 = np.maximum(dont[:, 0], found[j, 0])
                y1 = np.maximum(dont[:, 1], found[j, 1])
                x2 = np.minimum(dont[:, 2], found[j, 2])
                y2 = np.minimum(dont[:, 3], found[j, 3])
                inside = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
                area = (found[j, 2] - found[j, 0]) * (found[j, 3] - found[j, 1])
                if inside.max() >= 0.5 * area:
                    continue
            self.fp += 1


def read_gt(path: Path) -> dict[int, list[tuple[list[float], float]]]:
    """frame: [(x1 y1 x2 y2, visibility)] from the renderer's MOTChallenge ground truth."""
    gt: dict[int, list[tuple[list[float], float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        f, _, x, y, w, h, _, _, vis = line.split(",")
        x0, y0 = float(x), float(y)
        gt[int(f)].append(([x0, y0, x0 + float(w), y0 + float(h)], float(vis)))
    return gt


def split(
    rows: list[tuple[list[float], float]], care: float = CARE
) -> tuple[np.ndarray, np.ndarray]:
    keep = np.array([b for b, v in rows if v >= care]).reshape(-1, 4)
    dont = np.array([b for b, v in rows if v < care]).reshape(-1, 4)
    return keep, dont


# -- background subtraction on the rendered store -----------------------------------------

FRONT = "cam-front-west"
WARMUP = 30  # frames the background model learns from before it is scored
SCORED = 450


@pytest.fixture(scope="module")
def corner() -> Layout:
    return load_layout(STORES / "convenience.yaml")


@pytest.fixture(scope="module")
def front(corner: Layout, tmp_path_factory: pytest.TempPathFactory) -> RenderStats:
    """30 s of the front camera (1280x720, 15 frames/s) as the store fills up: 432 people
    to find in frames 31 to 450, up to five at once, in the queue and at the door."""
    out = tmp_path_factory.mktemp("front")
    start = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo(corner.store.timezone))
    run = simulate(corner, start, hours=1 / 60, shoppers=12, seed=2)
    people_in_view = itertools.islice(run.people(corner.camera(FRONT).fps), SCORED)
    return render_camera(
        corner,
        FRONT,
        people_in_view,
        out / "front.mp4",
        out / "front.gt.txt",
        RenderOptions(seed=2, min_visibility=0.0),  # every person, for the don't-care rule
    )


@pytest.mark.parametrize("method", ["mog2", "knn"])
def test_background_subtraction_finds_the_rendered_shoppers(
    front: RenderStats, method: str
) -> None:
    gt = read_gt(front.video_path.with_name("front.gt.txt"))
    detector = BackgroundSubtraction(method)  # type: ignore[arg-type]
    assert isinstance(detector, Detector)
    score = Score()
    with open_source(front.video_path, start=START) as source:
        for frame in source:
            found = detector.detect(frame)
            assert set(found.class_id.tolist()) <= {PERSON}
            if frame.number > WARMUP:
                score.add(found.xyxy, *split(gt.get(frame.number, [])))
    assert score.tp + score.fn >= 400  # enough people to mean something
    # KNN lets people who stand still at their spots (a shelf, the queue) fade into the
    # background sooner than MOG2, and under the store's wide lenses they are small.
    assert score.recall >= (0.9 if method == "mog2" else 0.85), score
    assert score.precision >= 0.9, score


def empty_store(corner: Layout, tmp_path: Path, frames: int) -> list[np.ndarray]:
    """The front camera's view of the empty store, rendered with noise and lighting."""
    stats = render_camera(
        corner,
        FRONT,
        ((k / 15, []) for k in range(frames)),
        tmp_path / "empty.mp4",
        tmp_path / "empty.gt.txt",
        RenderOptions(seed=5),
    )
    with open_source(stats.video_path, start=START) as source:
        return [f.image for f in source]


@pytest.mark.parametrize("shadows", [True, False])
def test_a_shadow_on_the_floor_is_not_a_person(
    corner: Layout, tmp_path: Path, shadows: bool
) -> None:
    """A person-sized patch of floor at 60 % of its brightness is what a shadow looks
    like to the subtractor: with shadow detection it is thresholded out; without, the
    same patch is one "person", which shows the test can tell."""
    images = empty_store(corner, tmp_path, 40)
    detector = BackgroundSubtraction(shadows=shadows)
    for n, image in enumerate(images[:-1], start=1):
        assert len(detector.detect(frame_of(image, n, (n - 1) / 15))) == 0
    shadowed = images[-1].copy()
    patch = np.zeros(shadowed.shape[:2], np.uint8)
    cv2.ellipse(patch, (700, 520), (90, 55), 20, 0, 360, 255, -1)
    dim = (shadowed * 0.6).astype(np.uint8)
    np.copyto(shadowed, dim, where=patch[..., None] > 0)
    found = detector.detect(frame_of(shadowed, len(images), (len(images) - 1) / 15))
    assert len(found) == (0 if shadows else 1)


def test_the_lights_dimming_does_not_hide_people_or_make_one_of_the_whole_image(
    front: RenderStats,
) -> None:
    """At frame 300 (five people in view) the detector sees the frame at 60 % of its
    brightness: the lights dimmed, the camera's exposure lagging. The people in it are
    still found, and no image-sized "person" appears."""
    gt = read_gt(front.video_path.with_name("front.gt.txt"))
    detector = BackgroundSubtraction()
    with open_source(front.video_path, start=START) as source:
        for frame in itertools.islice(source, 300):
            image = frame.image if frame.number < 300 else (frame.image * 0.6).astype(np.uint8)
            found = detector.detect(frame_of(image, frame.number, frame.offset_s))
    care, dont = split(gt[300], 0.5)
    assert len(care) >= 3
    score = Score()
    score.add(found.xyxy, care, dont)
    assert score.fn == 0 and score.fp == 0, score
    areas = (found.xyxy[:, 2] - found.xyxy[:, 0]) * (found.xyxy[:, 3] - found.xyxy[:, 1])
    assert areas.max() < 0.1 * 1280 * 720


@pytest.mark.parametrize(("still_s", "seen"), [(120.0, True), (5.0, False)])
def test_a_shopper_standing_still_stays_found_for_still_s_at_any_frame_rate(
    corner: Layout, tmp_path: Path, still_s: float, seen: bool
) -> None:
    """One frame every half second (a layout's detect rate); after the model has learnt
    the empty store, a shopper walks in and stands at the queue for 18 s. With still_s
    120 s they are still found at the end; with 5 s they have faded into the background,
    as documented."""
    times = [k * 0.5 for k in range(70)]

    def where(t: float) -> list[Person]:
        if t < 14:
            return []
        x = min(2.6, 0.8 + 0.6 * (t - 14))  # walks east for 3 s, then stands
        return [Person("waiting", x, 1.6)]

    stats = render_camera(
        corner,
        FRONT,
        ((t, where(t)) for t in times),
        tmp_path / "still.mp4",
        tmp_path / "still.gt.txt",
        RenderOptions(seed=3),
    )
    gt = read_gt(tmp_path / "still.gt.txt")
    detector = BackgroundSubtraction(still_s=still_s)
    with open_source(stats.video_path, start=START) as source:
        for frame, t in zip(source, times, strict=True):
            found = detector.detect(frame_of(frame.image, frame.number, t))
    truth = np.array([b for b, _ in gt[len(times)]])
    hits = sv.box_iou_batch(truth, found.xyxy) if len(found) else np.zeros((1, 0))
    assert (hits.max(initial=0) >= 0.5) == seen


def test_a_hog_score_floor_below_the_svms_boundary_is_refused() -> None:
    """Below it, nearly every window of every pyramid level is a "person": millions of
    boxes before suppression (it ran a test machine out of memory)."""
    with pytest.raises(ValueError, match=r"min_score must be in \[0.5, 1\)"):
        HogPeople(min_score=0.1)


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5])
def test_a_scale_outside_0_to_1_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match=rf"scale must be in \(0, 1\], got {scale}"):
        BackgroundSubtraction(scale=scale)


def test_half_size_boxes_come_back_in_the_frames_pixels(corner: Layout, tmp_path: Path) -> None:
    """A person-sized bright patch on the empty store, found at half size and at full
    size: the same box in the frame's pixels (within the 2 px a half-size pixel is), and
    the limits applied in full-frame pixels (a patch smaller than ``min_area`` is not
    found at either size)."""
    images = empty_store(corner, tmp_path, 30)
    found = {}
    for scale in (1.0, 0.5):
        detector = BackgroundSubtraction(scale=scale, limits=BlobLimits(min_area=2000))
        for n, image in enumerate(images[:-1], start=1):
            detector.detect(frame_of(image, n, (n - 1) / 15))
        person = images[-1].copy()
        cv2.rectangle(person, (600, 300), (659, 419), (250, 250, 250), -1)  # 60 x 120 px
        cv2.rectangle(person, (200, 200), (229, 229), (250, 250, 250), -1)  # 30 x 30: too small
        found[scale] = detector.detect(frame_of(person, len(images), (len(images) - 1) / 15))
    assert len(found[1.0]) == len(found[0.5]) == 1
    assert np.abs(found[0.5].xyxy - found[1.0].xyxy).max() <= 2
    assert np.abs(found[1.0].xyxy[0] - [600, 300, 660, 420]).max() <= 2


def test_an_unknown_subtraction_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown background subtraction method 'gmg'"):
        BackgroundSubtraction("gmg")  # type: ignore[arg-type]


# -- HOG on rendered angled frames and real photos ----------------------------------------


def angled_640() -> Layout:
    """A 12 x 10 m floor seen by an angled camera at 640x480, 2.5 m up, tipped 15°."""
    size = (640, 480)
    p = pinhole((0.5, 0.5, 2.5), yaw=40, pitch=15, focal=450, size=size)
    to_image = p[:, [0, 1, 3]]
    to_floor = np.linalg.inv(to_image)
    marks = []
    for fu, fv in ((0.2, 0.6), (0.8, 0.6), (0.85, 0.9), (0.15, 0.9), (0.5, 0.75)):
        q = to_floor @ [fu * size[0], fv * size[1], 1.0]
        x, y = round(q[0] / q[2], 2), round(q[1] / q[2], 2)
        u = to_image @ [x, y, 1.0]
        marks.append(
            f"        - {{image: [{u[0] / u[2]:.3f}, {u[1] / u[2]:.3f}], floor: [{x}, {y}]}}"
        )
    text = "\n".join(
        [
            "store: {id: angle-02, name: Angled shop, timezone: Europe/Amsterdam}",
            "floor: [[0, 0], [12, 0], [12, 10], [0, 10]]",
            "zones:",
            "  - {id: shop, kind: aisle, polygon: [[0, 0], [12, 0], [12, 10], [0, 10]]}",
            "cameras:",
            "  - id: cam-angled",
            "    kind: angled",
            "    position: [0.5, 0.5, 2.5]",
            "    image: {width: 640, height: 480}",
            "    fps: 10",
            "    sees: [shop]",
            "    calibration:",
            "      points:",
            *marks,
        ]
    )
    return load_layout_text(text + "\n", "angled.yaml")


def test_hog_finds_upright_people_in_rendered_640x480_frames(tmp_path: Path) -> None:
    """Five people, 90 to 220 px tall, walking across an angled view for 1.5 s; the ones
    fully in view and at least 100 px tall (HOG's window is 128) must be found."""
    layout = angled_640()

    def scene(t: float) -> list[Person]:
        return [
            Person("a", 3.0 + 0.4 * t, 2.2),
            Person("b", 5.5, 3.2 - 0.4 * t),
            Person("c", 2.2, 4.8 + 0.3 * t),
            Person("d", 6.5 - 0.4 * t, 6.5),
            Person("e", 4.0, 8.0),
        ]

    stats = render_camera(
        layout,
        "cam-angled",
        ((k / 10, scene(k / 10)) for k in range(15)),
        tmp_path / "angled.mp4",
        tmp_path / "angled.gt.txt",
        RenderOptions(seed=3),
    )
    gt = read_gt(tmp_path / "angled.gt.txt")
    detector = HogPeople()
    score = Score()
    with open_source(stats.video_path, start=START) as source:
        for frame in source:
            assert frame.size == (640, 480)
            found = detector.detect(frame)
            assert np.all((found.confidence >= 0.5) & (found.confidence <= 1))
            rows = gt[frame.number]
            care = [r for r in rows if r[1] >= 0.9 and r[0][3] - r[0][1] >= 100]
            dont = [r for r in rows if r not in care]
            score.add(found.xyxy, *split(care, 0.0)[:1], split(dont, 0.0)[0])
    assert score.tp + score.fn >= 45
    assert score.recall >= 0.75, score
    assert score.precision >= 0.75, score


def test_hog_finds_the_man_in_a_real_photo_at_pedestrian_size() -> None:
    """scikit-image's ``camera``: a real photo of a man standing behind a tripod, cut at
    the knees. Shrunk so that he is about as tall as HOG's 128 px window, with a margin
    of the photo's own edge pixels, HOG finds one person, and the box lies on him."""
    photo = cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2BGR)  # 512 x 512
    man = np.array([0, 62, 300, 512], float)  # drawn by hand: hair to the bottom edge
    scale, pad = 0.25, 64
    image = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = HogPeople().detect(frame_of(image))
    assert len(found) == 1
    box = ((found.xyxy[0] - pad) / scale).clip(0, 512)  # back into the photo's pixels
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert man[0] <= cx <= man[2] and man[1] <= cy <= man[3]
    inside = (min(box[2], man[2]) - max(box[0], man[0])) * (
        min(box[3], man[3]) - max(box[1], man[1])
    )
    assert inside >= 0.8 * (box[2] - box[0]) * (box[3] - box[1])


@pytest.mark.parametrize("photo", ["coffee", "chelsea", "brick", "grass"])
def test_hog_finds_no_one_in_real_photos_of_no_one(photo: str) -> None:
    image = cv2.cvtColor(getattr(skimage.data, photo)(), cv2.COLOR_RGB2BGR)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    assert len(HogPeople().detect(frame_of(image))) == 0


def test_hog_on_a_real_portrait_keeps_its_scores_in_range_and_its_boxes_in_the_image() -> None:
    """Grace Hopper's portrait (matplotlib's sample data): whatever HOG makes of a
    head-and-shoulders photo, it keeps the interface's promises."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(str(path))
    assert image is not None
    found = HogPeople(win_stride=4).detect(frame_of(image))
    assert len(found) >= 1
    h, w = image.shape[:2]
    assert np.all(found.xyxy >= 0) and np.all(found.xyxy[:, [0, 2]] <= w)
    assert np.all(found.xyxy[:, [1, 3]] <= h)
    assert np.all((found.confidence >= 0) & (found.confidence <= 1))
    assert found.xyxy.dtype == np.float32


# -- det.txt: TUD-Campus's real detections ------------------------------------------------


@needs_tud
def test_tud_campus_detections_replay_frame_by_frame() -> None:
    dets = DetFile(TUD / "det.txt")
    rows = [line.split(",") for line in (TUD / "det.txt").read_text().splitlines()]
    assert len(dets) == len(rows) == 321
    assert dets.frames == tuple(range(1, 72))
    assert not dets.rescaled  # Faster R-CNN scores are probabilities already
    first = dets.detect(frame_of(np.zeros((480, 640, 3), np.uint8), number=1))
    expected = [[float(v) for v in r[2:7]] for r in rows if r[0] == "1"]
    assert len(first) == len(expected) == 6
    for (x1, y1, x2, y2), conf, (x, y, w, h, s) in zip(
        first.xyxy, first.confidence, expected, strict=True
    ):
        assert (x1, y1) == pytest.approx((x, y), abs=1e-3)
        assert (x2, y2) == pytest.approx((min(x + w, 640), min(y + h, 480)), abs=1e-3)
        assert conf == pytest.approx(s, abs=1e-6)
    assert len(dets.at(72)) == 0
    per_frame = [len(dets.at(n)) for n in dets.frames]
    assert sum(per_frame) == 321


@needs_tud
def test_a_score_filter_and_image_clipping_apply_to_replayed_detections() -> None:
    dets = DetFile(TUD / "det.txt", min_score=0.9)
    kept = sum(len(dets.at(n)) for n in dets.frames)
    raw = [float(line.split(",")[6]) for line in (TUD / "det.txt").read_text().splitlines()]
    assert kept == sum(s >= 0.9 for s in raw) < 321
    clipped = dets.at(1, size=(320, 240))
    assert clipped.xyxy[:, [0, 2]].max() <= 320 and clipped.xyxy[:, [1, 3]].max() <= 240


@pytest.mark.parametrize(
    ("line", "phrase"),
    [
        ("1,-1,10,20,30", "expected 7 to 10 comma-separated numbers"),
        ("1,-1,10,20,30,40,0.9,-1,-1,-1,-1", "got 11"),
        ("1,-1,10,twenty,30,40,0.9", "'twenty' is not a number"),
        ("0,-1,10,20,30,40,0.9", "frame must be a whole number from 1, got 0"),
        ("1.5,-1,10,20,30,40,0.9", "frame must be a whole number from 1"),
        ("1,-1,10,20,0,40,0.9", "a box needs a positive width and height"),
        ("1,-1,10,20,30,-4,0.9", "a box needs a positive width and height"),
        ("1,-1,nan,20,30,40,0.9", "must be finite numbers"),
        ("1,-1,1e9,20,30,40,0.9", "beyond a million pixels"),
    ],
)
def test_a_broken_det_file_is_refused_with_its_line_number(
    tmp_path: Path, line: str, phrase: str
) -> None:
    path = tmp_path / "det.txt"
    path.write_text("1,-1,10,20,30,40,0.9,-1,-1,-1\n\n2,-1,11,20,30,40,0.8\n" + line + "\n")
    with pytest.raises(DetFileError) as info:
        DetFile(path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert phrase in str(info.value)


def test_a_det_file_too_large_missing_or_not_text_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "det.txt"
    path.write_text("1,-1,10,20,30,40,0.9\n" * 100)
    monkeypatch.setattr(detfile_module, "MAX_DET_BYTES", 1000)
    with pytest.raises(DetFileError, match="2,100 bytes, more than the 1,000"):
        DetFile(path)
    monkeypatch.undo()
    with pytest.raises(DetFileError, match="no such file"):
        DetFile(tmp_path / "nothing.txt")
    path.write_bytes(b"1,-1,10,20,30,40,0.9\n\xff\xfe\x00binary\n")
    with pytest.raises(DetFileError, match=r":2: not a text line of numbers"):
        DetFile(path)
    path.write_text("1," * 600 + "\n")
    with pytest.raises(DetFileError, match=r":1: a line longer than 1024 bytes"):
        DetFile(path)


def test_svm_margins_in_a_det_file_become_ordered_confidences(tmp_path: Path) -> None:
    """DPM's MOT17 detections score with an SVM margin; the logistic keeps their order."""
    path = tmp_path / "det.txt"
    path.write_text("1,-1,0,0,10,20,-0.5\n1,-1,50,0,10,20,1.5\n1,-1,90,0,10,20,0\n")
    dets = DetFile(path)
    assert dets.rescaled
    conf = dets.at(1).confidence
    assert conf.tolist() == pytest.approx([1 / (1 + np.exp(0.5)), 1 / (1 + np.exp(-1.5)), 0.5])


# -- the interface's own promises -----------------------------------------------------------


def test_people_builds_clipped_float32_person_detections() -> None:
    found = people(
        [[-5, 10, 50, 500], [600, 0, 700, 40], [700, 0, 800, 40]], [0.9, 0.5, 0.2], size=(640, 480)
    )
    assert found.xyxy.dtype == np.float32 and found.confidence.dtype == np.float32
    assert found.xyxy.tolist() == [[0, 10, 50, 480], [600, 0, 640, 40]]  # the third is outside
    assert found.confidence.tolist() == pytest.approx([0.9, 0.5])
    assert found.class_id.tolist() == [PERSON, PERSON]
    assert len(people(np.empty((0, 4)), [])) == 0


@pytest.mark.parametrize(
    ("boxes", "scores", "phrase"),
    [
        ([[0, 0, 10, 10]], [0.5, 0.6], "1 boxes but 2 scores"),
        ([[0, 0, 10, 10]], [1.5], r"scores must lie in \[0, 1\]"),
        ([[0, 0, np.inf, 10]], [0.5], "not a finite number"),
        ([[10, 0, 5, 10]], [0.5], "x2 <= x1"),
    ],
)
def test_people_refuses_what_breaks_the_interface(boxes, scores, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        people(boxes, scores)
