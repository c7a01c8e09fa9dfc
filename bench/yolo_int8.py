"""YOLO in int8 on OpenVINO (NNCF's post-training quantization) beside f32, bf16 and the
PyTorch path, on the same frames in one process, in turns of 10 frames.

    .venv/bin/python bench/yolo_int8.py [--weights yolo11n.pt] [--frames 60] [--confidence 0.5]

Needs the ``quantize`` extra (``pip install -e .[yolo,quantize]``). The calibration
frames are a rendered walk through the example convenience store (``cam-front-west``, the
frames ``bench/vision_fps.py`` times), never downloaded data: the first ``--frames`` of the
walk calibrate (every other one), the next ``--frames`` are timed. Each path's boxes are
compared with PyTorch's on the same frames: frames with the same number of people, and the
share of PyTorch's boxes that the path matches at IoU 0.9 or more. Without ``--weights``
the model is yolo11n built untrained (``adapters.yolo.untrained_yolo``), whose scores sit
so close together that any rounding moves boxes across the threshold: its agreement says
little about a trained model's, its speed is the same.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stamp import print_stamp  # noqa: E402
from bench.vision_fps import HEIGHT, WIDTH, load_average, rendered_frames, versions  # noqa: E402


def quantize(openvino_dir: Path, frames: list[np.ndarray], out: Path) -> Path:
    """The OpenVINO model in ``openvino_dir`` quantized to int8 on ``frames`` (letterboxed
    as the adapter's session feeds them), saved to ``out`` with Ultralytics' metadata."""
    import nncf
    import openvino as ov

    from adapters.yolo_runtime import letterbox

    core = ov.Core()
    model = core.read_model(next(openvino_dir.glob("*.xml")))
    dataset = nncf.Dataset(frames, lambda image: letterbox(image, (HEIGHT, WIDTH))[0])
    quantized = nncf.quantize(
        model, dataset, subset_size=len(frames), preset=nncf.QuantizationPreset.MIXED
    )
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out / "model.xml")
    shutil.copy(openvino_dir / "metadata.yaml", out / "metadata.yaml")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="YOLO .pt weights (default: untrained)")
    parser.add_argument("--frames", type=int, default=60, help="frames to calibrate and to time")
    parser.add_argument("--confidence", type=float, default=0.5, help="YOLO score threshold")
    args = parser.parse_args()
    import supervision as sv

    from adapters.yolo import YoloDetector, export_yolo, untrained_yolo

    print_stamp()
    print(versions())
    with tempfile.TemporaryDirectory(prefix="yolo-int8-") as tmp:
        work = Path(tmp)
        if args.weights:
            weights = work / args.weights.name
            shutil.copy(args.weights, weights)
        else:
            weights = untrained_yolo(work / "yolo11n-untrained.pt")
        frames = rendered_frames(2 * args.frames, work)
        calibrate, timed = frames[: args.frames : 2], frames[args.frames :]
        exported = export_yolo(weights, "openvino", (HEIGHT, WIDTH))
        t = time.perf_counter()
        int8 = quantize(exported, calibrate, work / "int8_openvino_model")
        print(f"quantized on {len(calibrate)} frames in {time.perf_counter() - t:.0f} s")
        paths = {
            "YOLO PyTorch": YoloDetector(weights, confidence=args.confidence),
            "YOLO OpenVINO f32": YoloDetector(exported, confidence=args.confidence),
            "YOLO OpenVINO bf16": YoloDetector(
                exported, confidence=args.confidence, precision="bf16"
            ),
            "YOLO OpenVINO int8": YoloDetector(int8, confidence=args.confidence),
        }
        for detector in paths.values():
            detector.detect_image(timed[0])  # compiled, warmed
        wall = dict.fromkeys(paths, 0.0)
        found: dict[str, list[sv.Detections]] = {k: [] for k in paths}
        print(f"load average before: {load_average()}", flush=True)
        for start in range(0, len(timed), 10):
            for label, detector in paths.items():
                t = time.perf_counter()
                found[label] += [detector.detect_image(im) for im in timed[start : start + 10]]
                wall[label] += time.perf_counter() - t
        print(f"load average after: {load_average()}")
        n, base = len(timed), "YOLO PyTorch"
        print(f"\n{n} frames of {WIDTH}x{HEIGHT}, confidence {args.confidence}")
        print(
            f"{'path':20} {'frames/s':>8} {'ms':>7} {'x PyTorch':>9} {'boxes':>6} "
            f"{'same count':>10} {'IoU>=0.9':>8}"
        )
        for label in paths:
            same, ious = 0, []
            for a, b in zip(found[base], found[label], strict=True):
                same += len(a) == len(b)
                if len(a):
                    best = (
                        sv.box_iou_batch(a.xyxy, b.xyxy).max(axis=1) if len(b) else 0 * a.xyxy[:, 0]
                    )
                    ious.extend(best)
            matched = float(np.mean(np.asarray(ious) >= 0.9)) if ious else 1.0
            boxes = np.mean([len(d) for d in found[label]])
            print(
                f"{label:20} {n / wall[label]:8.2f} {wall[label] / n * 1e3:7.1f} "
                f"{wall[base] / wall[label]:9.2f} {boxes:6.1f} {same:>5}/{n:<4} {matched:8.2f}"
            )


if __name__ == "__main__":
    main()
