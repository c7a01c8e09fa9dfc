"""``aisle members`` and ``aisle faces`` end to end: a member enrolled from a real photo,
an entrance camera's frames (a folder of images) matched into one ``face.matched`` in a
real nats-server's log, strangers leaving nothing; revoking consent ends the matching."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from core import events as ev
from core.cli import _load_plugins, app
from core.config import Settings
from core.runtime import open_log
from tests.conftest import server_url, set_up, unique_prefix
from tests.test_faces import astronaut, hopper

pytest.importorskip("dlib", reason="face matching needs the faces extra (dlib-bin)")
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "examples" / "stores" / "convenience.yaml"
runner = CliRunner()
_load_plugins()


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return set_up(
        {
            "AISLE_NATS_URL": server_url("embedded", request),
            "AISLE_PREFIX": unique_prefix(),
            "AISLE_DATA_DIR": str(tmp_path / "data"),
        }
    )


def at_the_door(face: np.ndarray) -> np.ndarray:
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[100 : 100 + face.shape[0], 400 : 400 + face.shape[1]] = face
    return frame


def in_log(env: dict[str, str]) -> list[ev.Event]:
    async def read() -> list[ev.Event]:
        async with open_log(Settings.from_env(env), read_only=True) as log:
            return [r.event async for r in log.replay(store="corner-01")]

    return asyncio.run(read())


def test_a_member_enrolled_from_a_photo_is_matched_once_and_no_longer_after_revoking(
    env: dict[str, str], tmp_path: Path
) -> None:
    photo = tmp_path / "ann.png"
    cv2.imwrite(str(photo), astronaut())
    enrolled = runner.invoke(
        app, ["members", "enrol", "--photo", str(photo), "--consent", "form 17"], env=env
    )
    assert enrolled.exit_code == 0, enrolled.output
    member = enrolled.output.strip()
    assert member.startswith("m-") and len(member) == 18
    door = tmp_path / "door"
    door.mkdir()
    faces = [astronaut()] * 4 + [hopper()[:600, :512]] * 3 + [astronaut()] * 2
    for k, face in enumerate(faces, 1):
        cv2.imwrite(str(door / f"{k:03d}.jpg"), at_the_door(face))
    args = ["faces", "--layout", str(LAYOUT), "--camera", "cam-front-west", "--source", str(door)]
    args += ["--start", "2026-11-28T09:00:00Z"]
    ran = runner.invoke(app, args, env=env)
    assert ran.exit_code == 0, ran.output
    assert "9 frames" in ran.output and "1 face.matched (1 new)" in ran.output, ran.output
    (matched,) = [e for e in in_log(env) if isinstance(e, ev.FaceMatched)]
    assert matched.data.member == member and matched.source == "cam-front-west"
    again = runner.invoke(app, args, env=env)
    assert "1 face.matched (0 new)" in again.output, "the same frames again: nothing new"
    listed = runner.invoke(app, ["members", "list"], env=env)
    assert member in listed.output and "active" in listed.output and "1 templates" in listed.output
    revoked = runner.invoke(app, ["members", "revoke", member], env=env)
    assert revoked.exit_code == 0 and "templates deleted" in revoked.output, revoked.output
    after = runner.invoke(app, [*args[:-1], "2026-11-28T10:00:00Z"], env=env)
    assert "0 templates; 0 face.matched" in after.output, after.output


def test_mistakes_are_refused_with_the_reason(env: dict[str, str], tmp_path: Path) -> None:
    group = tmp_path / "group.png"
    row = np.concatenate([astronaut(), hopper()[:512, :512]], axis=1)
    cv2.imwrite(str(group), row)
    cases = [
        (["members", "enrol", "--photo", str(group), "--consent", "x"], "2 faces found"),
        (["members", "enrol", "--photo", str(tmp_path / "no.jpg"), "--consent", "x"], "no such"),
        (["members", "enrol", "--photo", str(group)], "a member needs --consent"),
        (["members", "enrol", "--photo", str(group), "--watchlist"], "--watchlist --reason"),
        (["members", "revoke", "m-0000"], "no enrolment store there"),
        (
            ["faces", "--layout", str(LAYOUT), "--camera", "cam-x", "--source", str(tmp_path)],
            "cam-x",
        ),
        (
            ["faces", "--layout", str(LAYOUT), "--camera", "cam-front-west", "--source",
             str(tmp_path / "missing.mp4"), "--threshold", "0.9"],
            "threshold 0.9",
        ),
    ]  # fmt: skip
    for args, says in cases:
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output.replace("\n", " "), (args, result.output)
