"""Per-camera tracking: a frame's person boxes in, boxes with stable track ids out.

The association itself is the `trackers` package's ByteTrack, used through its public
``update()``; this module adds what an event pipeline needs around it and ByteTrack leaves
out, as two light post-processing steps:

- **Birth frames.** ByteTrack hands out an id only once a track has matched on
  ``confirm_frames`` consecutive frames, so the frames before that carry no id. When an id
  first appears, its earlier boxes (the unassigned detections of the frames before it that
  chain to it by IoU, the same test ByteTrack matched on) are emitted late under that id. A
  person who steps off a door line in the first frames is then seen on the side they came
  from.
- **Short gaps.** A confirmed track missed for a few frames (an occlusion, a missed
  detection) and found again within ``max_gap_s`` gets its missing frames filled by linear
  interpolation, so a line or a zone sees a continuous path instead of a jump.

Late boxes are returned together with the current frame's, flagged, each with its own frame
and time; for any one track, boxes always come out in time order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby

import msgspec
import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

__all__ = ["Box", "CameraTracker", "Tracked", "TrackerSettings", "bottom_centre", "instants"]

Box = tuple[float, float, float, float]
"""A box in pixels: x1, y1 (top left), x2, y2 (bottom right)."""

MAX_DETECTIONS = 1000
"""Most boxes one frame may carry; a detector that returns more is misconfigured."""


class TrackerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a camera's tracker associates boxes; every duration in seconds.

    The defaults are ByteTrack's own except where stated. ``high_score`` and ``min_iou``
    were tuned on the TUD-Campus detections (``bench/tracking_accuracy.py``): a higher
    split between the two association stages lets the low-score stage recover more
    partly hidden people, and a stricter overlap keeps two people walking side by side
    from trading ids.
    """

    fps: float = 10.0
    """The rate frames are processed at (the layout's sampling rate, not the stream's)."""
    lost_s: float = 1.0
    """How long a confirmed track survives without a box before its id is dropped."""
    start_score: float = 0.7
    """Lowest detection score that may start a new track (ByteTrack's default)."""
    high_score: float = 0.8
    """Scores at or above go to the first association stage (ByteTrack: 0.6)."""
    min_iou: float = 0.3
    """Least overlap between a track's predicted box and a detection to match (ByteTrack: 0.1)."""
    confirm_frames: int = 2
    """Consecutive matched frames before a track gets an id (ByteTrack's default)."""
    max_gap_s: float = 0.4
    """Longest gap in a confirmed track that is filled by interpolation; 0 fills nothing."""

    def __post_init__(self) -> None:
        checks = (
            ("fps", 0 < self.fps <= 1000, "a rate in (0, 1000] frames/s"),
            ("lost_s", 0 <= self.lost_s <= 3600, "seconds in [0, 3600]"),
            ("start_score", 0 <= self.start_score <= 1, "a score in [0, 1]"),
            ("high_score", 0 <= self.high_score <= 1, "a score in [0, 1]"),
            ("min_iou", 0 <= self.min_iou <= 1, "an overlap in [0, 1]"),
            ("confirm_frames", 1 <= self.confirm_frames <= 100, "a count in [1, 100]"),
            ("max_gap_s", 0 <= self.max_gap_s <= 60, "seconds in [0, 60]"),
        )
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"tracker setting {name}: {getattr(self, name)!r} is not {want}")


class Tracked(msgspec.Struct, frozen=True, kw_only=True):
    """One tracked person in one frame."""

    track: int
    """Stable per camera for as long as the tracker keeps the person."""
    frame: int
    """The source's frame number the box belongs to."""
    at: float
    """The frame's time in seconds, from the source."""
    box: Box
    score: float
    """The detector's score; for an interpolated box, the lower of the two it lies between."""
    late: bool = False
    """True for a birth frame or a gap filled after the fact (emitted after its own frame)."""


def bottom_centre(box: Box) -> tuple[float, float]:
    """The middle of a box's lower edge: where a standing person's feet are seen from the side."""
    return (box[0] + box[2]) / 2.0, box[3]


def instants(
    tracked: Iterable[Tracked], anchor: Callable[[Box], tuple[float, float]] = bottom_centre
) -> Iterator[tuple[float, dict[int, tuple[float, float]]]]:
    """A tracker's output as (time, {track: anchor point}), one entry per run of equal times.

    This is what ``LineCounter.update`` and ``ZonePresence.update`` take: late boxes
    (birth frames, filled gaps) come as their own instants, before the frame that revealed
    them.
    """
    for at, group in groupby(tracked, key=lambda t: t.at):
        yield at, {t.track: anchor(t.box) for t in group}


class _Seen(msgspec.Struct):
    """The last box of a confirmed track, to fill a gap when it comes back."""

    frame: int
    at: float
    box: Box
    score: float


class _Unclaimed(msgspec.Struct):
    """A detection that left a frame without an id: maybe the birth of a track."""

    box: Box
    score: float
    claimed: bool = False


class CameraTracker:
    """One camera's tracker. Feed it every processed frame in order, empty ones too."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        s = self.settings
        # trackers counts its lost-track buffer in frames at 30 frames/s, whatever the rate.
        self._bytetrack = ByteTrackTracker(
            lost_track_buffer=round(s.lost_s * 30.0),
            frame_rate=s.fps,
            track_activation_threshold=s.start_score,
            minimum_consecutive_frames=s.confirm_frames,
            minimum_iou_threshold=s.min_iou,
            high_conf_det_threshold=s.high_score,
        )
        self._seen: dict[int, _Seen] = {}
        # (frame, at) of the frames processed recently, to know which frames a gap spans.
        self._frames: deque[tuple[int, float]] = deque()
        # The unclaimed detections of the last confirm_frames - 1 frames.
        self._unclaimed: deque[tuple[int, float, list[_Unclaimed]]] = deque(
            maxlen=max(s.confirm_frames - 1, 1)
        )
        self._last: tuple[int, float] | None = None

    def update(
        self,
        frame: int,
        at: float,
        boxes: np.ndarray | Iterable[Box],
        scores: np.ndarray | Iterable[float],
    ) -> list[Tracked]:
        """The tracks in this frame, preceded by any late boxes this frame made known.

        ``frame`` and ``at`` must increase from call to call: they come from the source
        (its frame number and timestamp), never from the wall clock, so a file processed
        twice tracks the same way.
        """
        xyxy = np.asarray(boxes, dtype=float).reshape(-1, 4)
        conf = np.asarray(scores, dtype=float).reshape(-1)
        self._check(frame, at, xyxy, conf)
        self._last = (frame, at)
        self._frames.append((frame, at))
        while self._frames and at - self._frames[0][1] > self.settings.max_gap_s:
            self._frames.popleft()
        # Timestamps let trackers scale its motion model and lost-track budget to the real
        # spacing of frames, which varies when a source drops or samples frames.
        out = self._bytetrack.update(sv.Detections(xyxy=xyxy, confidence=conf), timestamp=at)
        late: list[Tracked] = []
        current: list[Tracked] = []
        unclaimed: list[_Unclaimed] = []
        ids = out.tracker_id if out.tracker_id is not None else np.full(len(out), -1)
        out_conf = out.confidence if out.confidence is not None else np.ones(len(out))
        for raw_box, raw_id, raw_score in zip(out.xyxy, ids, out_conf, strict=True):
            box: Box = (
                float(raw_box[0]),
                float(raw_box[1]),
                float(raw_box[2]),
                float(raw_box[3]),
            )
            track, score = int(raw_id), float(raw_score)
            if track < 0:
                unclaimed.append(_Unclaimed(box=box, score=score))
                continue
            previous = self._seen.get(track)
            if previous is None:
                late.extend(self._birth(track, box))
            else:
                late.extend(self._fill(track, previous, frame, at, box, score))
            self._seen[track] = _Seen(frame=frame, at=at, box=box, score=score)
            current.append(Tracked(track=track, frame=frame, at=at, box=box, score=score))
        self._unclaimed.append((frame, at, unclaimed))
        self._forget(at)
        return late + current

    def _check(self, frame: int, at: float, xyxy: np.ndarray, conf: np.ndarray) -> None:
        if not np.isfinite(at):
            raise ValueError(f"frame {frame}: time {at!r} is not a finite number of seconds")
        if self._last is not None and (frame <= self._last[0] or at <= self._last[1]):
            raise ValueError(
                f"frame {frame} at {at} s comes after frame {self._last[0]} at "
                f"{self._last[1]} s: frames must increase in number and time"
            )
        if len(xyxy) != len(conf):
            raise ValueError(f"frame {frame}: {len(xyxy)} boxes but {len(conf)} scores")
        if len(xyxy) > MAX_DETECTIONS:
            raise ValueError(f"frame {frame}: {len(xyxy)} boxes, more than {MAX_DETECTIONS}")
        if not (np.isfinite(xyxy).all() and np.isfinite(conf).all()):
            raise ValueError(f"frame {frame}: a box or a score is not a finite number")
        if (xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any():
            raise ValueError(f"frame {frame}: a box is not x1, y1, x2, y2 with x1 <= x2, y1 <= y2")

    def _birth(self, track: int, box: Box) -> list[Tracked]:
        """The boxes of a new track's frames before its id, found by chaining back by IoU."""
        chain: list[Tracked] = []
        head = box
        for frame, at, candidates in reversed(self._unclaimed):
            free = [c for c in candidates if not c.claimed]
            if not free:
                break
            ious = sv.box_iou_batch(np.array([head]), np.array([c.box for c in free]))[0]
            best = int(np.argmax(ious))
            if ious[best] < self.settings.min_iou:
                break
            found = free[best]
            found.claimed = True
            head = found.box
            chain.append(
                Tracked(track=track, frame=frame, at=at, box=head, score=found.score, late=True)
            )
        chain.reverse()
        return chain

    def _fill(
        self, track: int, previous: _Seen, frame: int, at: float, box: Box, score: float
    ) -> list[Tracked]:
        """Interpolated boxes for the frames a track was missing from, if the gap is short."""
        if at - previous.at > self.settings.max_gap_s:
            return []
        missing = [(f, t) for f, t in self._frames if previous.frame < f < frame]
        a, b = np.array(previous.box), np.array(box)
        filled = []
        for f, t in missing:
            w = (t - previous.at) / (at - previous.at)
            x1, y1, x2, y2 = ((1.0 - w) * a + w * b).tolist()
            filled.append(
                Tracked(
                    track=track,
                    frame=f,
                    at=t,
                    box=(x1, y1, x2, y2),
                    score=min(previous.score, score),
                    late=True,
                )
            )
        return filled

    def _forget(self, at: float) -> None:
        horizon = self.settings.lost_s + self.settings.max_gap_s
        for track in [t for t, seen in self._seen.items() if at - seen.at > horizon]:
            del self._seen[track]
