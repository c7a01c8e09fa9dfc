"""The Ultralytics YOLO detector on real and rendered frames, with a model Ultralytics builds
from its own YAML config (nothing downloaded). Untrained weights find no people that are
there, so these tests check the code path: formats, refusals, the person class, the score
threshold, boxes scaled back to frame pixels, and PyTorch, ONNX Runtime and OpenVINO
agreeing on one frame."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from adapters.detection import PERSON, Detector, Frame
from adapters.yolo import YoloDetector, YoloError, export_yolo, untrained_yolo

# Ultralytics is imported directly here too, as adapters.yolo imports it: offline, no installs.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

ROOT = Path(__file__).resolve().parents[1]
STORES = ROOT / "examples" / "stores"


def photo(name: str) -> np.ndarray:
    """A photo of people that Ultralytics ships (bus.jpg: 810x1080, zidane.jpg: 1280x720)."""
    from ultralytics.utils import ASSETS

    image = cv2.imread(str(ASSETS / name))
    assert image is not None, name
    return image


def frame(image: np.ndarray) -> Frame:
    return Frame(
        image=image, number=1, offset_s=0.0, at=datetime(2026, 1, 1, tzinfo=UTC), source="t"
    )


def street() -> np.ndarray:
    """bus.jpg's street with its four people, cropped to 4:3 and brought to 640x480."""
    return cv2.resize(photo("bus.jpg")[200:808], (640, 480), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    return untrained_yolo(tmp_path_factory.mktemp("yolo") / "yolo11n-untrained.pt")


@pytest.fixture(scope="session")
def onnx(weights) -> Path:
    return export_yolo(weights, "onnx", (480, 640))


@pytest.fixture(scope="session")
def openvino(weights) -> Path:
    return export_yolo(weights, "openvino", (480, 640))


def matched(a: sv.Detections, b: sv.Detections, iou: float = 0.9) -> tuple[float, float, float]:
    """(share of ``a`` with a counterpart in ``b`` at IoU >= ``iou``, largest coordinate gap
    in pixels and largest score gap between counterparts)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0, np.inf, np.inf
    overlap = sv.box_iou_batch(a.xyxy, b.xyxy)
    best = overlap.argmax(axis=1)
    ok = overlap[np.arange(len(a)), best] >= iou
    gap = np.abs(a.xyxy[ok] - b.xyxy[best[ok]]).max(initial=0.0)
    score = np.abs(a.confidence[ok] - b.confidence[best[ok]]).max(initial=0.0)
    return float(ok.mean()), float(gap), float(score)


# -- what is refused ---------------------------------------------------------------------------


def test_a_missing_weights_file_is_refused_before_ultralytics_would_download_it(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(YoloError, match=r"yolo11n\.pt: no such YOLO weights"):
        YoloDetector("yolo11n.pt")  # a release's name: Ultralytics would fetch it
    assert list(tmp_path.iterdir()) == []


def test_weights_of_an_unsupported_kind_are_refused_with_their_path(tmp_path):
    (tmp_path / "model.engine").write_bytes(b"\0")
    (tmp_path / "empty").mkdir()
    (tmp_path / "renamed").mkdir()
    (tmp_path / "renamed" / "model.xml").write_text("<net/>")
    cases = {
        "model.engine": r"model\.engine: unsupported YOLO weights '\.engine'",
        "empty": r"empty: a folder, but not an OpenVINO model",
        "renamed": r"renamed: an OpenVINO folder must be named \*_openvino_model",
    }
    for name, message in cases.items():
        with pytest.raises(YoloError, match=message):
            YoloDetector(tmp_path / name)


def test_a_file_that_is_not_a_model_is_refused_with_its_path(tmp_path):
    (tmp_path / "notes.pt").write_text("not a pickle")
    with pytest.raises(YoloError, match=r"notes\.pt: Ultralytics cannot load it"):
        YoloDetector(tmp_path / "notes.pt")


def test_a_classification_model_is_refused(tmp_path):
    from ultralytics import YOLO

    YOLO("yolo11n-cls.yaml").save(str(tmp_path / "cls.pt"))
    with pytest.raises(YoloError, match=r"cls\.pt: a 'classify' model; a detection model"):
        YoloDetector(tmp_path / "cls.pt")


def test_a_model_without_a_person_class_is_refused(tmp_path):
    from ultralytics import YOLO

    YOLO("yolo11n.yaml").save(str(tmp_path / "numbered.pt"))  # classes named "0" to "79"
    with pytest.raises(YoloError, match=r"no class named 'person' among 80 classes"):
        YoloDetector(tmp_path / "numbered.pt")


@pytest.mark.parametrize("imgsz", [0, 16, 100, 1952, 4096, (480,), (480, 640, 3), (480.0, 640)])
def test_an_input_size_off_the_stride_or_out_of_bounds_is_refused(weights, imgsz):
    with pytest.raises(YoloError, match="imgsz"):
        YoloDetector(weights, imgsz=imgsz)


@pytest.mark.parametrize(
    "options", [{"confidence": -0.1}, {"confidence": 1.5}, {"iou": 2.0}, {"max_det": 0}]
)
def test_thresholds_and_counts_out_of_range_are_refused(weights, options):
    with pytest.raises(YoloError, match=next(iter(options))):
        YoloDetector(weights, **options)


def test_an_exported_model_refuses_an_input_size_it_was_not_exported_for(onnx):
    assert YoloDetector(onnx).imgsz == (480, 640)
    with pytest.raises(YoloError, match=r"exported for input 480x640 .* imgsz 640x640"):
        YoloDetector(onnx, imgsz=640)


@pytest.mark.parametrize(
    "image",
    [np.zeros((480, 640), np.uint8), np.zeros((480, 640, 3), np.float32), np.zeros((0, 640, 3))],
    ids=["grey", "float", "empty"],
)
def test_a_frame_that_is_not_a_bgr_image_is_refused(weights, image):
    with pytest.raises(YoloError, match=r"BGR image of uint8"):
        YoloDetector(weights).detect_image(image)


# -- what is found -----------------------------------------------------------------------------


def test_only_people_are_kept_of_what_the_model_sees(weights):
    from ultralytics import YOLO

    image = street()
    everything = YOLO(str(weights)).predict(image, conf=0.5, max_det=1000, verbose=False)[0]
    classes = everything.boxes.cls.numpy().astype(int)
    assert (classes != 0).sum() > 0 and (classes == 0).sum() > 0  # the test can tell
    assert len(classes) < 1000  # and max_det cut nothing

    found = YoloDetector(weights, confidence=0.5, max_det=1000).detect(frame(image))
    assert isinstance(found, sv.Detections)
    assert found.xyxy.dtype == np.float32 and found.confidence.dtype == np.float32
    assert set(found.class_id) == {PERSON}
    persons = everything.boxes.xyxy.numpy()[classes == 0]
    assert len(found) == len(persons)
    order = np.lexsort(found.xyxy.T)
    np.testing.assert_allclose(found.xyxy[order], persons[np.lexsort(persons.T)], atol=1e-3)


def test_every_score_reaches_the_threshold_and_a_higher_one_keeps_a_subset(weights):
    image = street()
    low = YoloDetector(weights, confidence=0.5, max_det=1000).detect_image(image)
    high = YoloDetector(weights, confidence=0.7, max_det=1000).detect_image(image)
    assert len(low) > len(high) > 0
    assert low.confidence.min() >= 0.5 and high.confidence.min() >= 0.7
    kept = low[low.confidence >= 0.7]
    order_k, order_h = np.lexsort(kept.xyxy.T), np.lexsort(high.xyxy.T)
    np.testing.assert_allclose(kept.xyxy[order_k], high.xyxy[order_h], atol=1e-3)


def test_max_det_bounds_the_people_per_frame(weights):
    found = YoloDetector(weights, confidence=0.01, max_det=5).detect_image(street())
    assert len(found) == 5


@pytest.mark.parametrize("size", [(320, 240), (240, 320)], ids=["landscape", "portrait"])
def test_boxes_come_back_in_the_pixels_of_a_frame_twice_the_size(weights, size):
    """A frame that fits the input (320) and the same frame doubled reach the network as the
    same letterboxed input (a linear halving of doubled pixels restores them), padded across
    for one and down for the other, so every box must double."""
    small = cv2.resize(photo("bus.jpg")[200:800], size, interpolation=cv2.INTER_AREA)
    large = cv2.resize(small, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    detector = YoloDetector(weights, confidence=0.5, imgsz=320)
    a, b = detector.detect_image(small), detector.detect_image(large)
    assert len(a) > 0 and len(a) == len(b)
    w, h = size
    assert a.xyxy[:, [0, 2]].max() <= w and a.xyxy[:, [1, 3]].max() <= h
    np.testing.assert_allclose(b.xyxy, 2 * a.xyxy, atol=0.05)
    np.testing.assert_allclose(b.confidence, a.confidence, atol=1e-5)


def test_a_frame_larger_than_the_input_gets_boxes_in_its_own_pixels(weights):
    image = cv2.resize(photo("zidane.jpg"), (1920, 1080))
    found = YoloDetector(weights, confidence=0.3, imgsz=320).detect_image(image)
    assert len(found) > 0
    assert found.xyxy.min() >= 0
    assert found.xyxy[:, [0, 2]].max() <= 1920 and found.xyxy[:, [1, 3]].max() <= 1080
    assert found.xyxy[:, 2].max() > 320  # beyond the network's input, so scaled back


def test_a_rendered_store_frame_goes_through_the_detector(weights, tmp_path):
    from core.layout import load_layout
    from simulator.render import Person, RenderOptions, render_camera

    layout = load_layout(STORES / "convenience.yaml")
    people = [Person("ann", 1.2, 1.3), Person("bob", 2.5, 1.9, 1.85), Person("cat", 2.2, 1.0)]
    stats = render_camera(
        layout, "cam-front-west", [(0.0, people)], tmp_path / "v.mp4", tmp_path / "gt.txt",
        RenderOptions(noise_sigma=0.0),
    )  # fmt: skip
    ok, image = cv2.VideoCapture(str(stats.video_path)).read()
    assert ok and image.std() > 10
    detector: Detector = YoloDetector(weights, confidence=0.2)
    found = detector.detect(frame(image))
    h, w = image.shape[:2]
    assert len(found) > 0 and set(found.class_id) == {PERSON}
    assert found.xyxy[:, [0, 2]].max() <= w and found.xyxy[:, [1, 3]].max() <= h


def frames_for_agreement() -> dict[str, np.ndarray]:
    """640x480 frames that reach the network unpadded on both paths: the street, a rendered
    store frame, and a crowd (zidane.jpg squeezed to 4:3)."""
    from core.layout import load_layout
    from simulator.render import Person, RenderOptions, render_camera

    layout = load_layout(STORES / "convenience.yaml")
    walkers = [Person("ann", 1.2, 1.3), Person("bob", 2.5, 1.9, 1.85), Person("cat", 2.2, 1.0)]
    with tempfile.TemporaryDirectory() as tmp:
        stats = render_camera(
            layout, "cam-front-west", [(0.0, walkers)], Path(tmp) / "v.mp4",
            Path(tmp) / "gt.txt", RenderOptions(noise_sigma=0.0),
        )  # fmt: skip
        ok, rendered = cv2.VideoCapture(str(stats.video_path)).read()
    assert ok
    crowd = cv2.resize(photo("zidane.jpg"), (640, 480), interpolation=cv2.INTER_AREA)
    rendered = cv2.resize(rendered, (640, 480), interpolation=cv2.INTER_AREA)
    return {"street": street(), "rendered": rendered, "crowd": crowd}


@pytest.mark.parametrize("exported", ["onnx", "openvino"])
def test_an_exported_model_finds_the_people_the_pytorch_model_finds_on_the_same_frames(
    weights, onnx, openvino, exported
):
    """The adapter's own sessions (f32), letterbox and decoding against Ultralytics' PyTorch
    predictor: every box matched at IoU >= 0.9, on three kinds of frame."""
    path = {"onnx": onnx, "openvino": openvino}[exported]
    torch_detector = YoloDetector(weights, confidence=0.5, max_det=1000)
    detector = YoloDetector(path, confidence=0.5, max_det=1000)
    assert detector.format == exported and detector.imgsz == (480, 640)
    for name, image in frames_for_agreement().items():
        expected = torch_detector.detect_image(image)
        found = detector.detect_image(image)
        assert len(expected) > 0, name
        assert abs(len(found) - len(expected)) <= max(1, len(expected) // 50), name
        share, gap, score = matched(expected, found, iou=0.9)
        assert share >= 0.98, (name, share)
        back, _, _ = matched(found, expected, iou=0.9)
        assert back >= 0.98, (name, back)
        assert gap < 1.0 and score < 2e-3, (name, gap, score)


def test_openvino_in_bfloat16_finds_nearly_the_same_people(weights, openvino):
    """bfloat16 keeps 8 bits of mantissa: random weights magnify the gap, so the match is
    looser than f32's, but the people are the same ones."""
    image = street()
    expected = YoloDetector(weights, confidence=0.5, max_det=1000).detect_image(image)
    found = YoloDetector(openvino, confidence=0.5, max_det=1000, precision="bf16").detect_image(
        image
    )
    assert len(expected) > 0
    assert abs(len(found) - len(expected)) <= len(expected) // 10
    share, _, _ = matched(expected, found, iou=0.5)
    assert share >= 0.85


# -- what is not done --------------------------------------------------------------------------


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_the_adapters_loads_neither_torch_nor_ultralytics():
    out = run_python(
        "import sys, json, adapters, adapters.yolo\n"
        "print(json.dumps([m for m in ('torch', 'ultralytics') if m in sys.modules]))"
    )
    assert json.loads(out) == []


def test_loading_and_detecting_reach_for_no_network(weights, onnx):
    """With every way out of the process recording and failing, Ultralytics is imported,
    both formats load and detect, and nothing tried; then, as a check of the probe, a
    lookup Ultralytics makes when not told it is offline is caught."""
    code = f"""
import json, os, socket
tries = []
def refuse(*args, **kwargs):
    tries.append(repr(args[:2]))
    raise OSError("no network in this test")
socket.getaddrinfo = refuse
socket.create_connection = refuse
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
import numpy as np
from adapters.yolo import YoloDetector
image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
paths = ({str(weights)!r}, {str(onnx)!r})
counts = [len(YoloDetector(p, confidence=0.2).detect_image(image)) for p in paths]
before = list(tries)
del os.environ["YOLO_OFFLINE"]
from ultralytics.utils import is_online
is_online()
print(json.dumps({{"before": before, "after": len(tries), "counts": counts}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    out = json.loads(run_python(code, env).splitlines()[-1])
    assert out["before"] == []
    assert out["after"] > 0  # the probe catches a lookup
    assert all(n > 0 for n in out["counts"])


def test_a_broken_image_in_a_folder_is_still_refused_naming_it_once_ultralytics_is_loaded(
    weights: Path, tmp_path: Path
) -> None:
    """Ultralytics replaces ``PIL.Image.open`` with a version that loads pi-heif on a file
    it cannot identify; without pi-heif installed that raised ModuleNotFoundError out of
    the folder source instead of its "not an image" error."""
    from adapters.sources import SourceError, open_source

    YoloDetector(weights)  # imports Ultralytics, and with it its patches
    (tmp_path / "0001.jpg").write_bytes(b"JFIF? no: a text file with a picture's name")
    with pytest.raises(SourceError, match=r"0001\.jpg: not an image"):
        next(iter(open_source(tmp_path, start=datetime(2026, 11, 28, tzinfo=UTC), fps=10)))
