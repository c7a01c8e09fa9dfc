"""The adapter's own sessions for exported YOLO models (``adapters/yolo_runtime.py``): how
they are set up for a shared CPU, what they refuse, and the letterbox and decoding that
replace Ultralytics' predictor, checked against it. The model is built from Ultralytics'
YAML config (nothing downloaded), as in ``tests/test_yolo.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from adapters.yolo import YoloDetector, YoloError
from adapters.yolo_runtime import Letterbox, available_cores, decode, letterbox, load_exported
from tests.test_yolo import matched, photo, run_python

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

pytest_plugins = ["tests.test_yolo"]  # its session fixtures: weights, onnx, openvino


# -- the sessions ------------------------------------------------------------------------------


def test_the_onnx_runtime_session_uses_the_threads_given_and_does_not_spin(onnx):
    detector = YoloDetector(onnx, threads=1)
    options = detector._session._session.get_session_options()  # type: ignore[union-attr]
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert "1 threads, no spinning" in detector.settings


def test_the_openvino_model_computes_in_the_precision_and_threads_asked(openvino):
    for precision in ("f32", "bf16"):
        detector = YoloDetector(openvino, threads=1, precision=precision)
        compiled = detector._session._compiled  # type: ignore[union-attr]
        assert str(compiled.get_property("INFERENCE_NUM_THREADS")) == "1"
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        # a CPU without bfloat16 computes in f32 whatever is asked
        assert got == precision or (precision == "bf16" and got == "f32"), got


def test_cameras_given_one_exported_model_share_its_session(onnx):
    a, b = YoloDetector(onnx, threads=2), YoloDetector(onnx, threads=2)
    c = YoloDetector(onnx, threads=1)
    assert a._session is b._session
    assert c._session is not a._session


def test_threads_default_to_the_cores_this_process_may_use(onnx):
    assert YoloDetector(onnx).threads == available_cores()


def test_the_pytorch_path_holds_torch_to_the_threads_given(weights):
    out = run_python(
        "import torch\n"
        "from adapters.yolo import YoloDetector\n"
        f"YoloDetector({str(weights)!r}, threads=1)\n"
        "print(torch.get_num_threads())"
    )
    assert out.split()[-1] == "1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threads": 0}, "threads must be from 1"),
        ({"threads": 10_000}, "threads must be from 1"),
        ({"precision": "int4"}, "precision must be one of f32, bf16, f16"),
        ({"hint": "fast"}, "hint must be one of latency, throughput"),
    ],
)
def test_session_settings_out_of_range_are_refused(onnx, options, message):
    with pytest.raises(YoloError, match=message):
        YoloDetector(onnx, **options)


def test_an_exported_model_detects_without_importing_torch_or_ultralytics(onnx, openvino):
    out = run_python(
        "import sys, json, numpy as np\n"
        "from adapters.yolo import YoloDetector\n"
        "image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)\n"
        f"for p in ({str(onnx)!r}, {str(openvino)!r}):\n"
        "    YoloDetector(p, confidence=0.2).detect_image(image)\n"
        "print(json.dumps([m for m in ('torch', 'ultralytics') if m in sys.modules]))"
    )
    assert json.loads(out.splitlines()[-1]) == []


# -- what is refused ---------------------------------------------------------------------------


def test_an_onnx_file_that_is_not_a_model_is_refused_with_its_path(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(YoloError, match=r"model\.onnx: ONNX Runtime cannot load it"):
        YoloDetector(tmp_path / "model.onnx")


def test_an_onnx_model_without_ultralytics_metadata_is_refused(onnx, tmp_path):
    import onnx as onnx_lib

    model = onnx_lib.load(str(onnx))
    del model.metadata_props[:]
    onnx_lib.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(YoloError, match=r"bare\.onnx: no Ultralytics metadata"):
        YoloDetector(tmp_path / "bare.onnx")


def test_an_openvino_folder_without_its_metadata_is_refused(openvino, tmp_path):
    folder = tmp_path / "bare_openvino_model"
    folder.mkdir()
    for f in openvino.iterdir():
        if f.name != "metadata.yaml":
            (folder / f.name).write_bytes(f.read_bytes())
    with pytest.raises(YoloError, match=r"bare_openvino_model: no Ultralytics metadata"):
        YoloDetector(folder)


def test_an_export_of_another_task_is_refused(onnx, tmp_path):
    import onnx as onnx_lib

    model = onnx_lib.load(str(onnx))
    for prop in model.metadata_props:
        if prop.key == "task":
            prop.value = "segment"
    onnx_lib.save(model, str(tmp_path / "seg.onnx"))
    with pytest.raises(YoloError, match=r"seg\.onnx: a 'segment' model"):
        YoloDetector(tmp_path / "seg.onnx")


def test_a_model_that_fails_to_load_is_not_kept_and_fails_again(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"junk")
    for _ in range(2):  # no half-made session was cached
        with pytest.raises(Exception, match="cannot load"):
            load_exported(tmp_path / "m.onnx", "onnx")


# -- the letterbox and the decoding ------------------------------------------------------------


@pytest.mark.parametrize("size", [(1280, 720), (300, 500), (640, 480), (333, 251)])
def test_the_letterbox_gives_the_input_ultralytics_gives(size):
    from ultralytics.data.augment import LetterBox

    image = cv2.resize(photo("zidane.jpg"), size, interpolation=cv2.INTER_AREA)
    blob, box = letterbox(image, (480, 640))
    theirs = LetterBox((480, 640), auto=False, stride=32)(image=image)
    expected = theirs[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    assert blob.shape == (1, 3, 480, 640) and blob.dtype == np.float32
    np.testing.assert_allclose(blob, expected, atol=1e-6)
    assert box.gain == min(480 / size[1], 640 / size[0])


def test_on_padded_frames_the_session_finds_what_ultralytics_finds_with_the_same_model(onnx):
    """A 16:9 frame is padded above and below, a portrait frame at the sides: the boxes
    come back through the padding and the scale exactly as Ultralytics' predictor brings
    them, running the same exported model (less the boxes that lie wholly in the padding,
    which clip to nothing and which no detector here returns)."""
    from ultralytics import YOLO

    reference = YOLO(str(onnx), task="detect")
    detector = YoloDetector(onnx, confidence=0.4, max_det=1000)
    for image in (photo("zidane.jpg"), photo("bus.jpg")):
        theirs = reference.predict(image, conf=0.4, iou=0.7, max_det=1000, classes=[0],
                                   device="cpu", verbose=False)[0].boxes  # fmt: skip
        xyxy, conf = theirs.xyxy.numpy(), theirs.conf.numpy()
        seen = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        expected = sv.Detections(xyxy=xyxy[seen], confidence=conf[seen])
        found = detector.detect_image(image)
        assert len(expected) > 0 and len(found) == len(expected)
        share, gap, score = matched(expected, found, iou=0.99)
        assert share == 1.0 and gap < 0.05 and score < 1e-4
        h, w = image.shape[:2]
        assert found.xyxy[:, [0, 2]].max() <= w and found.xyxy[:, [1, 3]].max() <= h


def raw(boxes: list[tuple[float, float, float, float]], scores: list[list[float]]) -> np.ndarray:
    """A raw output (4 + classes, anchors) from centre-size boxes and per-class scores."""
    return np.concatenate([np.array(boxes, np.float32).T, np.array(scores, np.float32).T])


IDENTITY = Letterbox(gain=1.0, left=0, top=0)


def test_an_anchor_whose_best_class_is_not_person_is_not_a_person():
    out = raw(
        [(100, 100, 40, 80), (300, 100, 40, 80)],
        [[0.9, 0.1], [0.6, 0.8]],  # the second: person 0.6, but a bicycle above it
    )
    xyxy, scores = decode(out, 0, IDENTITY, (640, 480), confidence=0.5, iou=0.7, max_det=10)
    np.testing.assert_allclose(xyxy, [[80, 60, 120, 140]])
    np.testing.assert_allclose(scores, [0.9])


def test_overlapping_person_boxes_keep_the_best_and_max_det_bounds_the_rest():
    boxes = [(100, 100, 40, 80), (102, 101, 40, 80), (300, 100, 40, 80), (500, 100, 40, 80)]
    out = raw(boxes, [[0.7], [0.9], [0.8], [0.6]])
    _, scores = decode(out, 0, IDENTITY, (640, 480), confidence=0.5, iou=0.7, max_det=10)
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.6])  # the 0.7 twin suppressed
    _, few = decode(out, 0, IDENTITY, (640, 480), confidence=0.5, iou=0.7, max_det=2)
    np.testing.assert_allclose(few, [0.9, 0.8])


def test_boxes_are_brought_back_through_the_padding_and_the_scale_and_clipped():
    box = Letterbox(gain=0.5, left=0, top=60)  # 1280x720 into 640x480
    out = raw([(20, 100, 60, 40), (600, 400, 100, 40)], [[0.9], [0.8]])
    xyxy, _ = decode(out, 0, box, (1280, 720), confidence=0.5, iou=0.7, max_det=10)
    np.testing.assert_allclose(xyxy, [[0, 40, 100, 120], [1100, 640, 1280, 720]])


def test_an_end_to_end_output_keeps_its_people_above_the_threshold():
    out = np.array(
        [[10, 10, 50, 90, 0.9, 0], [60, 10, 90, 90, 0.8, 2], [100, 10, 150, 90, 0.3, 0]],
        np.float32,
    )
    xyxy, scores = decode(
        out, 0, IDENTITY, (640, 480), confidence=0.5, iou=0.7, max_det=10, end_to_end=True
    )
    np.testing.assert_allclose(xyxy, [[10, 10, 50, 90]])
    np.testing.assert_allclose(scores, [0.9])


def test_an_output_with_no_candidate_gives_no_box():
    out = raw([(100, 100, 40, 80)], [[0.1]])
    xyxy, scores = decode(out, 0, IDENTITY, (640, 480), confidence=0.5, iou=0.7, max_det=10)
    assert xyxy.shape == (0, 4) and scores.shape == (0,)


def test_a_path_is_resolved_once_for_sharing(onnx, tmp_path: Path):
    link = tmp_path / "same.onnx"
    link.symlink_to(onnx)
    assert load_exported(link, "onnx") is load_exported(onnx, "onnx")
