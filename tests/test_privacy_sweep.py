"""No biometric-derived value reaches the log, a read model, the API or a log line: a real
face (scikit-image's astronaut) enrolled and matched at the door of a simulated day, the
standard packs run over it all, the read models projected and read through the API, and
every byte of each searched for the face's descriptor."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import numpy as np
import pytest
from fastapi.testclient import TestClient

from adapters.face_match import FaceMatcher
from adapters.members import ENTRY, MemberStore
from api.app import create_app
from api.auth import Role, create_token
from api.settings import ApiSettings
from core import events as ev
from core.jetstream import JetStreamLog
from core.log import publish_in_order
from tests.enginekit import LAYOUT_FILE, engine, store_day
from tests.readmodelkit import dump, project, sqlite_db
from tests.test_faces import AT, astronaut, hopper

pytest.importorskip("dlib", reason="face matching needs the faces extra (dlib-bin)")

STORE = "corner-01"


def _found(descriptor: np.ndarray, text: str) -> int:
    """How many of the descriptor's first 32 numbers the text holds, as an output might
    print one (4 or 6 decimals, or Python's repr). A text of many floats holds a few by
    chance at 4 decimals; a descriptor written out holds nearly all."""
    values = [float(x) for x in descriptor[:32] if abs(x) > 1e-2]
    return sum(any(form in text for form in (f"{x:.4f}", f"{x:.6f}", repr(x)[:10])) for x in values)


@pytest.mark.integration
async def test_no_descriptor_reaches_the_log_the_read_models_the_api_or_a_log_line(
    jslog: JetStreamLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.faces import FaceFinder

    caplog.set_level(logging.DEBUG)
    finder = FaceFinder()
    (face,) = finder.find(astronaut())
    members = MemberStore(tmp_path / "members.db")
    member = members.enrol([face.descriptor], consent="form 17")
    matcher = FaceMatcher(STORE, "cam-door", members.templates(ENTRY))
    (matched,) = matcher.frame(AT, finder.find(astronaut()) + finder.find(hopper()))
    raw = store_day(STORE, hours=1, shoppers=30, seed=4)
    visit = next(e for e in raw if isinstance(e, ev.ShopperEntered))
    # The real match, given to a visit of the day (the adapter's subject is its own hash).
    raw.insert(raw.index(visit) + 1, msgspec.structs.replace(
        matched, subject=visit.subject, at=visit.at, store=STORE
    ))  # fmt: skip
    derived = engine().process(raw).derived
    await publish_in_order(jslog, [*raw, *derived])
    db = sqlite_db(tmp_path / "rm.db")
    await project(jslog, db)

    held = [record.event async for record in jslog.replay()]  # every type, both streams
    held += [record.event async for record in jslog.replay(types=["position.samples"])]
    assert any(isinstance(e, ev.FaceMatched) and e.data.member == member for e in held)
    texts = {"the log": b"".join(ev.encode(e) for e in held).decode()}
    texts["the read models"] = repr(dump(db))
    token = create_token(db, Role.OPERATOR)[1]
    settings = ApiSettings(database_url=str(db.url), layouts=(LAYOUT_FILE,), log=False)
    auth = {"Authorization": f"Bearer {token}"}
    day = {"from": "2026-11-28T00:00:00Z", "to": "2026-11-29T00:00:00Z"}
    answers = []
    with TestClient(create_app(settings)) as c:
        base = f"/api/v1/stores/{STORE}"
        for path in ("/receipts", "/alerts", "/live", "/metrics", "/heatmap", "/metrics.csv"):
            r = c.get(base + path, headers=auth, params=day if "m" in path[:3] else None)
            assert r.status_code == 200, (path, r.text)
            answers.append(r.text)
        for receipt in c.get(base + "/receipts", headers=auth, params={"limit": 500}).json()[
            "items"
        ]:
            answers.append(c.get(f"{base}/receipts/{receipt['id']}", headers=auth).text)
    texts["the API"] = "\n".join(answers)
    texts["a log line"] = caplog.text
    found = {where: _found(face.descriptor, text) for where, text in texts.items()}
    assert all(n <= 3 for n in found.values()), f"a descriptor's numbers in {found}"
    # The check finds a descriptor that is there, printed any of those ways.
    leaked = texts["the log"] + ", ".join(f"{x:.4f}" for x in face.descriptor)
    assert _found(face.descriptor, leaked) >= 20
    assert member in texts["the log"] and member in texts["the read models"]
