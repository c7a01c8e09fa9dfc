"""Faces at the entrance to ``face.matched`` events, for enrolled members only.

Each face found in a frame is compared with the enrolled templates (Euclidean distance
between descriptors); the nearest member within ``threshold`` is a match. A face that
matches no one produces nothing: no event, no log line, no count, and its descriptor is
dropped with the frame.

A member seen again within ``gap_s`` of the last sighting is the same visit: one
``face.matched`` per visit, with a per-visit pseudonymous subject (a hash of the store,
the camera, the member and the visit's first sighting). The event's id is a hash of its
content, so a file processed twice publishes nothing twice.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from adapters.faces import Face
from adapters.members import Enrolled
from core import events as ev

__all__ = ["DEFAULT_THRESHOLD", "FaceMatcher", "Match", "MatchSettings"]

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class MatchSettings:
    threshold: float = DEFAULT_THRESHOLD
    """The largest descriptor distance that is a match (dlib's own evaluation uses 0.6)."""
    gap_s: float = 600.0
    """A member not seen for this long starts a new visit when seen again."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0.2 <= self.threshold <= 0.8):
            raise ValueError(f"threshold {self.threshold}: between 0.2 and 0.8")
        if not (math.isfinite(self.gap_s) and 0 < self.gap_s <= 86400):
            raise ValueError(f"gap_s {self.gap_s}: between 0 and 86400 seconds")


@dataclass(frozen=True, slots=True)
class Match:
    member: str
    watchlist: bool
    distance: float

    @property
    def confidence(self) -> float:
        """1 - distance, clipped to [0, 1]: 0.5 at the default threshold."""
        return round(min(1.0, max(0.0, 1.0 - self.distance)), 3)


class FaceMatcher:
    """The matches of a camera's frames, and the events they make."""

    def __init__(
        self,
        store: str,
        camera: str,
        enrolled: list[Enrolled],
        settings: MatchSettings | None = None,
    ) -> None:
        self.store, self.camera = store, camera
        self.settings = settings or MatchSettings()
        self._members = [e.member for e in enrolled]
        self._watch = {e.member: e.watchlist for e in enrolled}
        self._templates = (
            np.stack([e.descriptor for e in enrolled]).astype(np.float32)
            if enrolled
            else np.zeros((0, 128), np.float32)
        )
        self._visits: dict[str, tuple[str, datetime]] = {}  # member -> (subject, last seen)
        self.matches = 0

    def match(self, face: Face) -> Match | None:
        """The nearest enrolled member within the threshold, or None."""
        if not len(self._templates):
            return None
        distances = np.linalg.norm(self._templates - face.descriptor, axis=1)
        best = int(np.argmin(distances))
        d = float(distances[best])
        if d > self.settings.threshold:
            return None
        member = self._members[best]
        return Match(member, self._watch[member], d)

    def frame(self, at: datetime, faces: list[Face]) -> list[ev.FaceMatched]:
        """The events of one frame's faces: a member's first sighting of a visit."""
        best: dict[str, Match] = {}
        for face in faces:
            m = self.match(face)
            if m is not None and (m.member not in best or m.distance < best[m.member].distance):
                best[m.member] = m
        out = []
        for member, m in sorted(best.items()):
            self.matches += 1
            visit = self._visits.get(member)
            if visit is not None and at - visit[1] <= timedelta(seconds=self.settings.gap_s):
                self._visits[member] = (visit[0], at)
                continue
            subject = self._subject(member, at)
            self._visits[member] = (subject, at)
            data = ev.FaceMatchData(member=member, watchlist=m.watchlist, confidence=m.confidence)
            out.append(
                ev.new(
                    ev.FaceMatched,
                    store=self.store,
                    at=at,
                    source=self.camera,
                    subject=subject,
                    data=data,
                )
            )
        return out

    def _subject(self, member: str, first: datetime) -> str:
        text = f"{self.store}|{self.camera}|{member}|{first.isoformat()}"
        return "v-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
