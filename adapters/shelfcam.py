"""A shelf camera's frames to picks and put-backs: MediaPipe hands say a hand was in a
slot, the slot's look before and after says what changed, the floor positions say whose
hand it was.

- Hands: MediaPipe's ``solutions.hands`` (the models in the mediapipe 0.10.14 wheel, on
  the CPU, in tracking mode). A hand is in a slot when a fingertip is in the slot's box
  (``ShelfCamera.slots``). One reach is the run of frames with a hand in the slot, gaps
  of up to ``gap_s`` of missed detections bridged.
- Change: each slot keeps a reference look, updated only while no hand is over the slot
  and the picture is still. After a reach, once the slot has been quiet for
  ``settle_s``, each facing (the slot box split evenly by the slot's ``facings``) is
  compared with its reference: a mean absolute difference of the blurred grey crop above
  ``change_grey`` is a changed facing. Whether it was taken or put back is read from the
  facing's fill: goods are textured and coloured, the back panel an empty facing shows is
  flat and dark, so the fill (grey standard deviation plus mean saturation) falls when
  one is taken and rises when one is put back. The frames of the reach never enter the
  comparison, so the arm itself is no change.
- A look that changed with no hand found in the slot (MediaPipe missed it, or a sleeve
  hid it) is not adopted silently: once it has stayed changed for ``unseen_s`` it is a
  reading of its own, attributed to the shopper nearest the slot, always for review.
- Whose hand: the arm's column where it leaves the image's bottom edge (the line from the
  knuckles' middle through the wrist, extended) is a point of the shelf front
  (``ShelfCamera.floor_at``); ``adapters.attribution`` gives the shopper nearest that
  point, with its confidence, from the floor positions. Two shoppers at one shelf are
  thus told apart by where each arm comes from, not only by who is nearest the shelf.
- Result: ``decide`` returns a ``ShelfReading`` with a confidence and, when unsure, the
  reason (``review``); ``item_event`` turns a sure reading into the ``item.picked`` /
  ``item.put_back`` the simulator publishes. A reach that changes nothing gives no event.

mediapipe 0.10.14 was built against protobuf 4; ``protobuf_compat`` (call it before
importing mediapipe) gives protobuf 5 and 6 back the method they dropped that it calls
(``GetPrototype``), so one protobuf serves both mediapipe and onnx (docs/adapters.md,
"Shelf cameras").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import cv2
import numpy as np

from adapters.attribution import Attributor, Positions
from adapters.weights import Change, SlotChange
from core import events as ev
from core.layout import Layout, Shelf, ShelfCamera

__all__ = [
    "Hand",
    "HandFinder",
    "Reach",
    "ShelfReading",
    "ShelfWatch",
    "WatchSettings",
    "decide",
    "item_event",
    "protobuf_compat",
]

_TIPS = (4, 8, 12, 16, 20)


def protobuf_compat() -> None:
    """protobuf 5 dropped ``GetPrototype`` from ``SymbolDatabase`` and ``MessageFactory``;
    mediapipe 0.10.14 calls the first to read its landmark lists, and its C++ bindings the
    second on import (printing an AttributeError when it is missing).
    ``message_factory.GetMessageClass`` is their successor. Call before importing it."""
    from google.protobuf import message_factory, symbol_database

    def get_prototype(self: Any, descriptor: Any) -> Any:
        return message_factory.GetMessageClass(descriptor)

    for cls in (symbol_database.SymbolDatabase, message_factory.MessageFactory):
        if not hasattr(cls, "GetPrototype"):
            cls.GetPrototype = get_prototype  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Hand:
    points: np.ndarray  # 21 landmarks, pixels (x, y)
    score: float

    def bottom_column(self, height: int) -> float:
        """Where the arm leaves the image: the line from the knuckles' middle (the four
        finger bases, steadier than any one of them) through the wrist, at the bottom."""
        wx, wy = self.points[0]
        kx, ky = self.points[[5, 9, 13, 17]].mean(axis=0)
        dy = wy - ky
        if dy <= 1e-6:  # the hand points down or sideways: the wrist is the best guess
            return float(wx)
        return float(wx + (wx - kx) * (height - wy) / dy)


class HandFinder:
    """MediaPipe hands on BGR frames, in tracking mode (one instance per camera)."""

    def __init__(
        self, max_hands: int = 4, model_complexity: int = 1, min_confidence: float = 0.5
    ) -> None:
        protobuf_compat()
        import mediapipe as mp

        with warnings.catch_warnings():
            # protobuf 6 deprecates what mediapipe reads to build its graph (7 removes it,
            # hence protobuf<7): known, pinned, and no news to the user
            warnings.filterwarnings("ignore", r"label\(\) is deprecated", DeprecationWarning)
            self._hands = mp.solutions.hands.Hands(
                static_image_mode=False,
                max_num_hands=max_hands,
                model_complexity=model_complexity,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )

    def find(self, frame: np.ndarray) -> list[Hand]:
        h, w = frame.shape[:2]
        result = self._hands.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        found: list[Hand] = []
        for marks, side in zip(
            result.multi_hand_landmarks or [], result.multi_handedness or [], strict=False
        ):
            pts = np.array([(m.x * w, m.y * h) for m in marks.landmark], dtype=np.float32)
            size = float(np.linalg.norm(pts[0] - pts[9]))
            # the tracker now and then reports one hand twice, a pixel or two apart
            if any(np.linalg.norm(o.points[0] - pts[0]) < 0.3 * size for o in found):
                continue
            found.append(Hand(pts, float(side.classification[0].score)))
        return found

    def close(self) -> None:
        self._hands.close()


@dataclass(frozen=True, slots=True)
class WatchSettings:
    pad_px: float = 8.0  # a fingertip this near a slot box is in it
    gap_s: float = 0.4  # missed detections bridged within one reach
    settle_s: float = 0.33  # quiet after a reach before the after look is taken
    still_grey: float = 6.0  # frame-to-frame mean change under this: the slot is still
    change_grey: float = 18.0  # a facing whose look moved more than this has changed
    blur: int = 5
    unseen_s: float = 1.0  # a changed look, still this long with no hand seen: review

    def frames(self, seconds: float, fps: float) -> int:
        """A duration in frames of a camera at ``fps``, at least one."""
        return max(1, round(seconds * fps))


@dataclass
class Reach:
    """A hand's visit to one slot, and what the slot looked like before it."""

    slot: int
    first: int
    last: int
    first_at: datetime
    last_at: datetime
    before: np.ndarray
    columns: list[float] = field(default_factory=list)
    quiet: int = 0
    seen: bool = True  # False: the look changed, but no hand was found in the slot


@dataclass(frozen=True, slots=True)
class ShelfReading:
    """What one reach did, with how sure: the result the publishing glue acts on."""

    camera: str
    shelf: str
    sku: str
    action: Literal["picked", "put_back", "none"]
    qty: int
    subject: str | None
    confidence: float
    started: datetime
    ended: datetime
    column: float
    review: str | None = None  # why a person should look


@dataclass(frozen=True, slots=True)
class FacingChange:
    changed: tuple[int, ...]  # facings whose look changed
    fill_delta: tuple[float, ...]  # after less before, per changed facing
    confidence: float


class ShelfWatch:
    """One shelf camera: frames in, finished reaches with their change out."""

    def __init__(
        self,
        layout: Layout,
        camera_id: str,
        settings: WatchSettings | None = None,
        finder: HandFinder | None = None,
    ) -> None:
        self.cam: ShelfCamera = layout.shelf_camera(camera_id)
        self.shelf: Shelf = layout.shelf(self.cam.shelf)
        self.settings = settings or WatchSettings()
        self.finder = finder or HandFinder()
        fps = self.cam.fps
        self._gap = self.settings.frames(self.settings.gap_s, fps)
        self._settle = self.settings.frames(self.settings.settle_s, fps)
        self._unseen_n = self.settings.frames(self.settings.unseen_s, fps)
        facings = {s.sku: s.facings for s in self.shelf.slots}
        self.facings = [facings[v.sku] for v in self.cam.slots]
        self._boxes = [tuple(round(c) for c in v.box) for v in self.cam.slots]
        self._ref: list[np.ndarray | None] = [None] * len(self._boxes)
        self._prev: list[np.ndarray | None] = [None] * len(self._boxes)
        self._open: dict[int, Reach] = {}
        self._quiet_at: list[tuple[int, datetime] | None] = [None] * len(self._boxes)
        self._unseen: list[int] = [0] * len(self._boxes)
        self.frames = 0

    def _crop(self, grey: np.ndarray, i: int) -> np.ndarray:
        x0, y0, x1, y1 = self._boxes[i]
        return grey[y0:y1, x0:x1]

    def _hand_in(self, hand: Hand, i: int) -> bool:
        x0, y0, x1, y1 = self._boxes[i]
        p = self.settings.pad_px
        tips = hand.points[list(_TIPS)]
        inside = (
            (tips[:, 0] >= x0 - p)
            & (tips[:, 0] <= x1 + p)
            & (tips[:, 1] >= y0 - p)
            & (tips[:, 1] <= y1 + p)
        )
        return bool(inside.any())

    def _hand_over(self, hand: Hand, i: int) -> bool:
        """Any part of the hand over the box: its look is not the slot's own then."""
        x0, y0, x1, y1 = self._boxes[i]
        hx0, hy0 = hand.points.min(axis=0) - 0.3 * np.linalg.norm(hand.points[0] - hand.points[9])
        hx1, hy1 = hand.points.max(axis=0) + 0.3 * np.linalg.norm(hand.points[0] - hand.points[9])
        return bool(hx0 < x1 and x0 < hx1 and hy0 < y1 and y0 < hy1)

    def feed(self, frame: np.ndarray, at: datetime) -> list[tuple[Reach, np.ndarray]]:
        """One frame; returns the reaches that ended and settled, each with the slot's
        look after it (colour crop)."""
        s = self.settings
        f = self.frames
        self.frames += 1
        hands = self.finder.find(frame)
        k = s.blur | 1
        smooth = cv2.GaussianBlur(frame, (k, k), 0)
        done: list[tuple[Reach, np.ndarray]] = []
        for i in range(len(self._boxes)):
            crop = self._crop(smooth, i).astype(np.float32)
            prev, self._prev[i] = self._prev[i], crop
            still = prev is not None and float(np.abs(crop - prev).mean()) < s.still_grey
            inside = [h for h in hands if self._hand_in(h, i)]
            over = any(self._hand_over(h, i) for h in hands)
            reach = self._open.get(i)
            if inside:
                if reach is None:
                    before = self._ref[i] if self._ref[i] is not None else prev
                    if before is None:
                        continue  # a hand in the very first frame: no before to compare
                    reach = self._open[i] = Reach(i, f, f, at, at, before)
                reach.last, reach.last_at, reach.quiet = f, at, 0
                reach.columns += [h.bottom_column(frame.shape[0]) for h in inside]
                continue
            if reach is not None:
                if f - reach.last <= self._gap and (over or not still):
                    continue
                reach.quiet = reach.quiet + 1 if (still and not over) else 0
                if reach.quiet >= self._settle:
                    del self._open[i]
                    self._ref[i], self._quiet_at[i] = crop, (f, at)
                    done.append((reach, crop))
                continue
            if not (still and not over):
                self._unseen[i] = 0
                continue
            ref = self._ref[i]
            since = self._quiet_at[i]
            if ref is not None and since is not None and self._changed(ref, crop, i):
                # a hand MediaPipe missed, or a hand resting in the slot: only a look
                # that stays changed for unseen_s is reported, and for review
                self._unseen[i] += 1
                if self._unseen[i] >= self._unseen_n:
                    x0, _, x1, _ = self._boxes[i]
                    done.append(
                        (
                            Reach(i, since[0], f, since[1], at, ref, [(x0 + x1) / 2], seen=False),
                            crop,
                        )
                    )
                    self._ref[i], self._unseen[i], self._quiet_at[i] = crop, 0, (f, at)
                continue
            self._unseen[i] = 0
            self._quiet_at[i] = (f, at)
            self._ref[i] = crop if ref is None else 0.8 * ref + 0.2 * crop
        return done

    def _changed(self, before: np.ndarray, after: np.ndarray, i: int) -> bool:
        return bool(facing_change(before, after, self.facings[i], self.settings).changed)

    def change(self, reach: Reach, after: np.ndarray) -> FacingChange:
        """Which facings of the slot changed between the look before and after a reach."""
        return facing_change(reach.before, after, self.facings[reach.slot], self.settings)


def _fill(crop: np.ndarray) -> float:
    """How full a facing looks: goods are textured and coloured, the back panel flat."""
    c = np.clip(crop, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(c, cv2.COLOR_BGR2HSV)
    grey = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)
    return float(grey.std() + hsv[..., 1].mean())


def facing_change(
    before: np.ndarray, after: np.ndarray, facings: int, settings: WatchSettings
) -> FacingChange:
    """Per facing of a slot (its box split evenly), whether its look changed, and how
    its fill moved; the confidence is how far every facing is from the threshold."""
    w = before.shape[1]
    changed, deltas, margins = [], [], []
    for k in range(facings):
        a, b = round(k * w / facings), round((k + 1) * w / facings)
        diff = float(np.abs(after[:, a:b] - before[:, a:b]).mean())
        ratio = diff / settings.change_grey
        if ratio > 1:
            changed.append(k)
            deltas.append(_fill(after[:, a:b]) - _fill(before[:, a:b]))
            margins.append(ratio)
        else:
            margins.append(1 / max(ratio, 1e-6))
    confidence = 0.5 + 0.5 * min(1.0, max(0.0, min(margins) - 1.0))
    return FacingChange(tuple(changed), tuple(deltas), round(confidence, 3))


def decide(
    watch: ShelfWatch,
    reach: Reach,
    after: np.ndarray,
    positions: Positions,
    attributor: Attributor | None = None,
    held: Mapping[str, Mapping[str, int]] | None = None,
) -> ShelfReading:
    """What a finished reach did and who did it, with a confidence; ``review`` says why
    it should go to a person instead of a cart. ``held``: what each shopper has taken so
    far (SKU -> units); given, a put-back by a shopper who holds none of the slot's SKU
    is for review: the camera sees a facing filled, not which product filled it, and it
    may be another product put into the wrong slot."""
    attributor = attributor or Attributor(margin_m=0.5)
    cam, shelf = watch.cam, watch.shelf
    sku = cam.slots[reach.slot].sku
    column = float(np.median(reach.columns))
    change = watch.change(reach, after)
    review: str | None = None
    if not change.changed:
        action: Literal["picked", "put_back", "none"] = "none"
    elif all(d < 0 for d in change.fill_delta):
        action = "picked"
    elif all(d > 0 for d in change.fill_delta):
        action = "put_back"
    else:
        action = "picked" if sum(change.fill_delta) < 0 else "put_back"
        review = f"facings of {sku} emptied and filled in one reach"
    qty = len(change.changed)
    # where the arm came from, as a point of the shelf front: the shopper nearest it
    x, y = cam.floor_at(column)
    spot = Shelf(id=shelf.id, zone=shelf.zone, footprint=((x - 0.01, y), (x + 0.01, y)))
    slot_change = SlotChange(
        sensor=cam.id,
        shelf=shelf.id,
        sku=sku,
        picked=action == "picked",
        qty=qty,
        change=Change(started=reach.first_at, settled=reach.last_at, delta_g=0.0),
    )
    who = attributor.attribute(slot_change, spot, positions, {})
    if not reach.seen and action != "none":
        review = _join(review, f"the look of {sku} changed, but no hand was seen in the slot")
    if who.review is not None:
        review = _join(review, who.review)
    if (
        action == "put_back"
        and held is not None
        and who.subject is not None
        and held.get(who.subject, {}).get(sku, 0) < qty
    ):
        review = _join(
            review,
            f"{who.subject} puts {qty} back into the slot of {sku} but holds "
            f"{held.get(who.subject, {}).get(sku, 0)}: maybe another product, wrong slot",
        )
    confidence = round(who.confidence * change.confidence, 3)
    if review is None and action != "none" and confidence < attributor.min_confidence:
        review = f"the change of {sku} is faint (confidence {change.confidence})"
    if action == "none":
        review = None  # nothing moved: nothing for a person to look at
    return ShelfReading(
        camera=cam.id,
        shelf=shelf.id,
        sku=sku,
        action=action,
        qty=qty,
        subject=who.subject,
        confidence=confidence,
        started=reach.first_at,
        ended=reach.last_at,
        column=column,
        review=review,
    )


def _join(a: str | None, b: str) -> str:
    return b if a is None else f"{a}; {b}"


def item_event(reading: ShelfReading, store: str) -> ev.Event | None:
    """The ``item.picked`` / ``item.put_back`` of a sure reading; None for a reach that
    changed nothing or one that goes to review (the caller routes those)."""
    if reading.action == "none" or reading.review is not None or reading.subject is None:
        return None
    cls = ev.ItemPicked if reading.action == "picked" else ev.ItemPutBack
    return ev.new(
        cls,
        store=store,
        at=reading.started + (reading.ended - reading.started) / 2,
        source=reading.camera,
        subject=reading.subject,
        data=ev.ItemData(sku=reading.sku, shelf=reading.shelf, qty=reading.qty),
    )


def watch_video(
    watch: ShelfWatch,
    frames: Sequence[np.ndarray] | Any,
    start: datetime,
    positions: Positions,
    attributor: Attributor | None = None,
    held: Mapping[str, Mapping[str, int]] | None = None,
) -> list[ShelfReading]:
    """Every reach in a run of frames (a list or an iterator), decided."""
    step = timedelta(seconds=1 / watch.cam.fps)
    out = []
    for n, frame in enumerate(frames):
        for reach, after in watch.feed(frame, start + n * step):
            out.append(decide(watch, reach, after, positions, attributor, held))
    return out
