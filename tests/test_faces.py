"""Face match at the entrance on real photos (scikit-image's astronaut, matplotlib's Grace
Hopper): the same face under crop, scale, rotation and dimming matches its member; another
face matches no one; templates are sealed at rest and gone once consent is revoked; and
nothing of a face (crop, template, descriptor) reaches an event, a log line or the store
unsealed."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import matplotlib
import msgspec
import numpy as np
import pytest
import skimage.data

from adapters.face_match import FaceMatcher, MatchSettings
from adapters.faces import MAX_FACES, FaceDetector, FaceFinder
from adapters.members import ENTRY, KEY_ENV, MembersError, MemberStore
from core import events as ev

pytest.importorskip("dlib", reason="face matching needs the faces extra (dlib-bin)")

AT = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def hopper() -> np.ndarray:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def variants(image: np.ndarray) -> dict[str, np.ndarray]:
    h, w = image.shape[:2]
    return {
        "crop": image[h // 10 :, w // 8 : w - w // 8],
        "half size": cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        "1.5x": cv2.resize(image, (w * 3 // 2, h * 3 // 2)),
        "rotated 12 degrees": rotated(image, 12),
        "dimmed to 45%": (image.astype(np.float32) * 0.45).astype(np.uint8),
    }


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    return FaceFinder()


@pytest.fixture
def store(tmp_path: Path) -> MemberStore:
    return MemberStore(tmp_path / "members.db")


def one_face(finder: FaceFinder, image: np.ndarray) -> np.ndarray:
    faces = finder.find(image)
    assert len(faces) == 1, [f.box for f in faces]
    return faces[0].descriptor


def test_the_same_face_changed_matches_its_member_and_another_face_matches_no_one(
    finder: FaceFinder, store: MemberStore
) -> None:
    member = store.enrol([one_face(finder, astronaut())], consent="form 2026-11-28/17")
    matcher = FaceMatcher("corner-01", "cam-door", store.templates(ENTRY))
    for name, image in variants(astronaut()).items():
        faces = finder.find(image)
        assert len(faces) == 1, name
        m = matcher.match(faces[0])
        assert m is not None and m.member == member, (name, m)
        assert m.distance < 0.3, (name, m.distance)
    for name, image in {"Grace Hopper": hopper(), **variants(hopper())}.items():
        faces = finder.find(image)
        assert faces, name
        assert all(matcher.match(f) is None for f in faces), name


def test_the_opencv_detector_finds_the_faces_the_descriptor_needs(finder: FaceFinder) -> None:
    opencv = FaceFinder(FaceDetector.OPENCV)
    for image in (astronaut(), hopper()):
        a, b = one_face(finder, image), one_face(opencv, image)
        assert np.linalg.norm(a - b) < 0.2  # the same face, boxed a little differently


def test_one_event_per_visit_with_a_per_visit_subject_and_no_event_for_strangers(
    finder: FaceFinder, store: MemberStore
) -> None:
    member = store.enrol([one_face(finder, astronaut())], consent="form 17")
    matcher = FaceMatcher("corner-01", "cam-door", store.templates(ENTRY), MatchSettings(gap_s=60))
    seen = finder.find(astronaut())
    stranger = finder.find(hopper())
    events = []
    for s in range(0, 30, 2):  # half a minute at the door, a stranger beside her
        events += matcher.frame(AT + timedelta(seconds=s), seen + stranger)
    events += matcher.frame(AT + timedelta(minutes=5), stranger)
    events += matcher.frame(AT + timedelta(minutes=10), seen)  # back: a new visit
    assert [type(e) for e in events] == [ev.FaceMatched, ev.FaceMatched]
    first, second = events
    assert first.data.member == second.data.member == member
    assert first.subject != second.subject and first.subject.startswith("v-")
    assert first.data.confidence > 0.7 and not first.data.watchlist
    again = FaceMatcher("corner-01", "cam-door", store.templates(ENTRY), MatchSettings(gap_s=60))
    assert again.frame(AT, seen)[0].id == first.id, "the same file again: the same event id"


def test_the_watch_list_is_matched_only_when_asked_and_says_so(
    finder: FaceFinder, store: MemberStore
) -> None:
    listed = store.enrol(
        [one_face(finder, hopper())], consent="incident 2026-11-02", watchlist=True
    )
    assert listed.startswith("w-")
    face = finder.find(hopper())
    assert FaceMatcher("s", "c", store.templates(ENTRY)).frame(AT, face) == []
    (event,) = FaceMatcher("s", "c", store.templates(ENTRY, watchlist=True)).frame(AT, face)
    assert event.data.watchlist and event.data.member == listed


def test_templates_are_sealed_at_rest_bound_to_their_member_and_gone_after_revoking(
    finder: FaceFinder, store: MemberStore, tmp_path: Path
) -> None:
    descriptor = one_face(finder, astronaut())
    member = store.enrol([descriptor, descriptor * 0.999], consent="form 17")
    other = store.enrol([one_face(finder, hopper())], consent="form 18")
    raw = (tmp_path / "members.db").read_bytes()
    plain = descriptor.astype("<f4").tobytes()
    assert plain[:32] not in raw and plain[-32:] not in raw, "a template in the clear"
    assert oct((tmp_path / "members.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "members.db").stat().st_mode & 0o777) == "0o600"
    # A template moved onto another member's row does not open.
    with sqlite3.connect(tmp_path / "members.db") as db:
        db.execute(
            "UPDATE template SET member_id = ?, n = n + 10 WHERE member_id = ?", (other, member)
        )
    with pytest.raises(MembersError, match="does not open with this key"):
        store.templates(ENTRY)
    with sqlite3.connect(tmp_path / "members.db") as db:
        db.execute("UPDATE template SET member_id = ?, n = n - 10 WHERE n >= 10", (member,))
    revoked = store.revoke(member)
    assert revoked.revoked_at is not None and revoked.templates == 0
    assert [e.member for e in store.templates(ENTRY)] == [other]
    assert store.revoke(member).revoked_at == revoked.revoked_at, "revoking twice changes nothing"


def test_a_wrong_or_unreadable_key_is_refused_with_the_reason(
    finder: FaceFinder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemberStore(tmp_path / "members.db")
    store.enrol([one_face(finder, astronaut())], consent="form 17")
    monkeypatch.setenv(KEY_ENV, "bm90IGEga2V5")
    with pytest.raises(MembersError, match=f"{KEY_ENV}: not a 256-bit key"):
        MemberStore(tmp_path / "members.db")
    monkeypatch.setenv(KEY_ENV, "A" * 43 + "=")
    with pytest.raises(MembersError, match="sealed with another key than this one"):
        MemberStore(tmp_path / "members.db")
    monkeypatch.delenv(KEY_ENV)
    os.chmod(tmp_path / "members.key", 0o644)
    with pytest.raises(MembersError, match="others may read the key"):
        MemberStore(tmp_path / "members.db")


def test_enrolment_input_is_bounded(finder: FaceFinder, store: MemberStore) -> None:
    d = one_face(finder, astronaut())
    with pytest.raises(MembersError, match="no face to enrol"):
        store.enrol([], consent="x")
    with pytest.raises(MembersError, match="at most 10"):
        store.enrol([d] * 11, consent="x")
    with pytest.raises(MembersError, match="--consent: printable text"):
        store.enrol([d], consent="a\x00b")
    with pytest.raises(MembersError, match="128 finite numbers"):
        store.enrol([np.full(128, np.nan, np.float32)], consent="x")
    with pytest.raises(ValueError, match="larger than 4096"):
        finder.find(np.zeros((5000, 10, 3), np.uint8))
    row = np.concatenate([astronaut(), hopper()[:512, :512]], axis=1)
    crowd = np.concatenate([row, row], axis=0)  # four faces
    few = FaceFinder(max_faces=3)
    assert len(finder.find(crowd)) == 4 and len(few.find(crowd)) == 3
    assert finder.max_faces == MAX_FACES


def test_nothing_of_a_face_reaches_an_event_or_a_log_line(
    finder: FaceFinder, store: MemberStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    descriptor = one_face(finder, astronaut())
    store.enrol([descriptor], consent="form 17")
    matcher = FaceMatcher("corner-01", "cam-door", store.templates(ENTRY))
    events = matcher.frame(AT, finder.find(astronaut()) + finder.find(hopper()))
    assert len(events) == 1
    wire = ev.encode(events[0])
    assert set(msgspec.json.decode(wire)["data"]) == {"member", "watchlist", "confidence"}
    numbers = {f"{x:.4f}" for x in descriptor[:16]}
    text = wire.decode() + caplog.text
    assert not any(n in text for n in numbers), "a descriptor's numbers in the output"
    assert "hopper" not in caplog.text.lower() and len(wire) < 400


def test_a_store_that_is_not_one_or_not_there_is_refused_and_nothing_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MembersError, match="no enrolment store there"):
        MemberStore(tmp_path / "nx" / "m.db", create=False)
    assert not (tmp_path / "nx").exists()
    with pytest.raises(MembersError, match="not a file"):
        MemberStore(tmp_path)
    text = tmp_path / "notes.db"
    text.write_text("not a database at all, " * 100)
    with pytest.raises(MembersError, match="its key"):
        MemberStore(text)
    monkeypatch.setenv(KEY_ENV, "A" * 43 + "=")
    with pytest.raises(MembersError, match="not an enrolment store"):
        MemberStore(text)
    monkeypatch.delenv(KEY_ENV)
    store = tmp_path / "m.db"
    MemberStore(store)
    (tmp_path / "m.key").unlink()
    with pytest.raises(MembersError, match=r"its key .* is missing"):
        MemberStore(store)
    assert not (tmp_path / "m.key").exists(), "no new key beside an old store"
