"""Who may write what, enforced by nats-server: aisle's roles on the embedded server and on
a three-node cluster (issue 12).

Each role's credentials are refused for every subject class the role must not write; a
forged derived event and a forged deployment are refused, the publisher is told which
permission, the server logs the violation, and aisle logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest

from core import events as ev
from core.access import (
    USERS_FILE,
    Role,
    User,
    add_adapter,
    authenticated_user,
    authorization,
    load_users,
    permissions,
)
from core.config import LogConfig, NatsAuth
from core.jetstream import ConnectError, JetStreamLog, connect
from core.log import PublishError
from core.natsd import EmbeddedNats, free_port
from rules.reference import Reference
from rules.service import deploy
from rules.service.leases import Leases
from rules.service.partition import ServiceConfig
from rules.service.worker import Worker
from tests.enginekit import (
    LATENESS_S,
    PACKS,
    derived_ids,
    engine,
    layout,
    settled,
    store_day,
)

pytestmark = pytest.mark.integration

PREFIX = "acl"
STORE = "corner-01"
OTHER = "corner-02"


@dataclass
class Secured:
    """A server (or cluster) with aisle's users, and the deployment's log settings."""

    url: str
    users: list[User]
    config: LogConfig
    nodes: list[EmbeddedNats]

    def auth(self, name: str) -> NatsAuth:
        user = next(u for u in self.users if u.user == name)
        return NatsAuth(user=user.user, password=user.password)

    def mark(self) -> list[int]:
        return [n.log_file.stat().st_size for n in self.nodes]

    def server_log(self, since: list[int] | None = None) -> str:
        """What the nodes logged (since ``mark()``)."""
        starts = since or [0] * len(self.nodes)
        return "\n".join(
            n.log_file.read_bytes()[start:].decode(errors="replace")
            for n, start in zip(self.nodes, starts, strict=True)
        )


def _users(folder: Path) -> list[User]:
    load_users(folder)
    add_adapter(folder, "adapter-corner-01", [STORE])
    return load_users(folder)


@pytest.fixture(scope="module", params=["embedded", "cluster"])
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp(f"secured-{request.param}")
    users = _users(folder / "creds")
    if request.param == "embedded":
        config = LogConfig(prefix=PREFIX, publish_deadline_s=20)
        nodes = [EmbeddedNats(folder / "n", auth=authorization(users, config))]
    else:
        config = LogConfig(prefix=PREFIX, replicas=3, publish_deadline_s=60)
        routes_ports = [free_port() for _ in range(3)]
        routes = [f"nats://127.0.0.1:{p}" for p in routes_ports]
        nodes = [
            EmbeddedNats(
                folder / f"n{i}",
                name=f"acl-{i}",
                cluster_name="acl",
                cluster_port=routes_ports[i],
                routes=routes,
                ready_timeout_s=60.0,
                auth=authorization(users, config),
            )
            for i in range(3)
        ]
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(EmbeddedNats.start, nodes))
        server = Secured(",".join(n.url for n in nodes), users, config, nodes)
        asyncio.run(_create_streams(server))
        yield server
    finally:
        for n in nodes:
            n.stop()


async def _create_streams(server: Secured) -> None:
    """The admin creates the streams (a new cluster takes them once it has a leader)."""
    nc = await connect(server.url, auth=server.auth("admin"))
    deadline = time.monotonic() + 30.0
    while True:
        try:
            await (await JetStreamLog.open(nc, server.config)).close()
            return
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def as_user(server: Secured, name: str) -> AsyncIterator[JetStreamLog]:
    """The log as ``name`` sees it (streams are the admin's to create)."""
    log = JetStreamLog(await connect(server.url, name=name, auth=server.auth(name)), server.config)
    try:
        yield log
    finally:
        await log.close()


# What each user must not write, by subject class. The stems are the deployment's: ACL_...
REFUSED: dict[str, dict[str, str]] = {
    "adapter": {
        "a derived type": f"{PREFIX}.{STORE}.receipt.issued",
        "an alert": f"{PREFIX}.{STORE}.alert.raised",
        "the late subject": f"{PREFIX}.{STORE}.late",
        "the rules bucket": "$KV.ACL_RULES.packs",
        "the engine's checkpoints": f"$KV.ACL_ENGINE_CHECKPOINTS.{STORE}",
        "the engine's snapshots": "$O.ACL_ENGINE_SNAPSHOTS.C.x",
        "a stream's configuration": "$JS.API.STREAM.UPDATE.ACL_EVENTS",
        "a stream's deletion": "$JS.API.STREAM.DELETE.ACL_EVENTS",
        "a stream's purge": "$JS.API.STREAM.PURGE.ACL_EVENTS",
        "a consumer's deletion": f"$JS.API.CONSUMER.DELETE.ACL_EVENTS.engine_{STORE}_x",
    },
    "adapter-corner-01": {
        "another store's raw events": f"{PREFIX}.{OTHER}.item.picked",
        "another store's samples": f"{PREFIX}.{OTHER}.position.samples",
        "another store's dead letters": f"{PREFIX}.{OTHER}.deadletter",
        "a derived type of its store": f"{PREFIX}.{STORE}.receipt.issued",
    },
    "engine": {
        "the rules bucket": "$KV.ACL_RULES.packs",
        "the rules bucket's deletion": "$JS.API.STREAM.DELETE.KV_ACL_RULES",
        "the rules bucket's purge": "$JS.API.STREAM.PURGE.KV_ACL_RULES",
        "a deployment's deletion": "$JS.API.STREAM.MSG.DELETE.KV_ACL_RULES",
        "a raw type": f"{PREFIX}.{STORE}.item.picked",
        "a stream's configuration": "$JS.API.STREAM.UPDATE.ACL_EVENTS",
        "a stream's deletion": "$JS.API.STREAM.DELETE.ACL_EVENTS",
        "a stream's purge": "$JS.API.STREAM.PURGE.ACL_EVENTS",
    },
    "viewer": {
        "a raw type": f"{PREFIX}.{STORE}.item.picked",
        "a derived type": f"{PREFIX}.{STORE}.receipt.issued",
        "the dead letters": f"{PREFIX}.{STORE}.deadletter",
        "the late subject": f"{PREFIX}.{STORE}.late",
        "the rules bucket": "$KV.ACL_RULES.packs",
        "the engine's leases": "$KV.ACL_ENGINE_LEASES.x",
        "a new stream": "$JS.API.STREAM.CREATE.ACL_X",
        "a stream's deletion": "$JS.API.STREAM.DELETE.ACL_EVENTS",
        "a message's deletion": "$JS.API.STREAM.MSG.DELETE.ACL_EVENTS",
    },
    "api": {
        "a raw type": f"{PREFIX}.{STORE}.item.picked",
        "a derived type": f"{PREFIX}.{STORE}.receipt.issued",
        "an alert": f"{PREFIX}.{STORE}.alert.raised",
        "the dead letters": f"{PREFIX}.{STORE}.deadletter",
        "the rules bucket": "$KV.ACL_RULES.packs",
        "a new stream": "$JS.API.STREAM.CREATE.ACL_X",
        "a message's deletion": "$JS.API.STREAM.MSG.DELETE.ACL_EVENTS",
    },
}
# ...and what the same users may write (unstored subjects where a write would land in a
# stream: the tests share the server).
ALLOWED: dict[str, list[str]] = {
    "adapter": ["$JS.API.STREAM.INFO.ACL_EVENTS"],
    "adapter-corner-01": ["$JS.API.STREAM.INFO.ACL_EVENTS"],
    "engine": ["$JS.API.STREAM.INFO.ACL_EVENTS", "$JS.API.STREAM.INFO.KV_ACL_RULES"],
    "viewer": ["$JS.API.STREAM.INFO.ACL_EVENTS", "$JS.API.STREAM.INFO.KV_ACL_RULES"],
    "api": ["$JS.API.STREAM.INFO.ACL_EVENTS", "$JS.API.STREAM.INFO.KV_ACL_RULES"],
    "admin": ["$JS.API.STREAM.INFO.ACL_EVENTS", "acl-anything.at.all"],
}


async def _violations(
    server: Secured, name: str, subjects: list[str], wait_s: float = 3.0
) -> list[str]:
    """Publish once on each subject as ``name``; the subjects the server refused (within
    ``wait_s``: errors usually come before the flush's PONG, not always on a cluster)."""
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc))

    user = next(u for u in server.users if u.user == name)
    nc = await nats.connect(
        server.url.split(",")[0], user=user.user, password=user.password, error_cb=on_error
    )
    try:
        for subject in subjects:
            await nc.publish(subject, b"{}")
        await nc.flush()

        # The server lowercases the subject in what it tells the client (its log keeps it).
        def found() -> list[str]:
            return [s for s in subjects if any(f'"{s.lower()}"' in r.lower() for r in refused)]

        deadline = time.monotonic() + wait_s
        while len(found()) < len(subjects) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return found()
    finally:
        await nc.close()


async def test_each_role_is_refused_every_subject_class_it_must_not_write(
    secured: Secured,
) -> None:
    for name, classes in REFUSED.items():
        refused = await _violations(secured, name, list(classes.values()))
        let_through = [k for k, s in classes.items() if s not in refused]
        assert not let_through, f"{name} may write {let_through}"
    for name, subjects in ALLOWED.items():
        assert await _violations(secured, name, subjects, wait_s=0.5) == [], name


def test_every_role_may_ask_who_it_is_and_only_the_admin_has_everything() -> None:
    config = LogConfig(prefix=PREFIX)
    for role in Role:
        allow = permissions(role, config)["publish"]["allow"]
        assert ("$SYS.REQ.USER.INFO" in allow) or allow == [">"]
        assert (allow == [">"]) == (role is Role.ADMIN)
    scoped = permissions(Role.ADAPTER, config, [STORE])["publish"]["allow"]
    assert {s.split(".")[1] for s in scoped if s.startswith(f"{PREFIX}.")} == {STORE, "_unknown"}


def test_the_api_role_publishes_operator_events_and_nothing_else_of_the_log() -> None:
    config = LogConfig(prefix=PREFIX)
    allow = permissions(Role.API, config)["publish"]["allow"]
    events = {s for s in allow if s.startswith(f"{PREFIX}.")}
    assert events == {f"{PREFIX}.*.{t}" for t in ev.OPERATOR_TYPES}
    viewer = set(permissions(Role.VIEWER, config)["publish"]["allow"])
    assert set(allow) - viewer == events, "otherwise it reads as a viewer does"


def test_a_users_file_from_before_a_role_existed_gets_that_roles_user_once(
    tmp_path: Path,
) -> None:
    first = load_users(tmp_path)
    older = [u for u in first if u.role is not Role.API]
    (tmp_path / USERS_FILE).write_text(json.dumps([msgspec.to_builtins(u) for u in older]))
    again = load_users(tmp_path)
    assert [u for u in again if u.role is not Role.API] == older, "the others keep passwords"
    (api,) = [u for u in again if u.role is Role.API]
    assert api.user == "api" and load_users(tmp_path) == again


def _receipt() -> ev.Event:
    derived = engine().process(store_day(hours=1, shoppers=20)).derived
    return next(d for d in derived if isinstance(d, ev.ReceiptIssued))


async def test_a_forged_receipt_is_refused_reported_and_never_stored(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    forged = _receipt()
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="core.jetstream"):
        async with as_user(secured, "adapter") as log:
            with pytest.raises(PublishError, match=r"(?i)permissions violation.*receipt\.issued"):
                await log.publish(forged)
    assert time.monotonic() - began < 15  # the publisher is told, not left to its deadline
    subject = f"{PREFIX}.{forged.store}.receipt.issued"
    assert any(subject in r.getMessage() for r in caplog.records), "aisle did not log it"
    assert f'"$G/user:adapter" - Publish Violation - Subject "{subject}"' in secured.server_log()
    async with as_user(secured, "viewer") as log:
        stored = [r async for r in log.replay(types=["receipt.issued"])]
    assert forged.id not in {r.event.id for r in stored}


async def test_a_forged_deployment_is_refused_reported_and_the_deployed_rules_stay(
    secured: Secured,
) -> None:
    files = deploy.validated(PACKS, Reference.of(layout()))
    async with as_user(secured, "admin") as log:
        kv = await log.key_value("rules", history=20)
        who = await authenticated_user(log.nc)
        assert who == "admin"
        good, _ = await deploy.deploy(kv, files, by=who)
    never = {"carts.yaml": "pack: carts\nversion: 9.9.9\nrules: []\n"}
    async with as_user(secured, "engine") as log:
        kv = await log.key_value("rules", history=20)
        assert (await deploy.deployed(kv)) == good  # the engine reads it...
        with pytest.raises(nats.errors.TimeoutError):
            await deploy.deploy(kv, never, by="engine")  # ...and may not write it
        refused = str(log.nc.last_error).lower()
        assert 'permissions violation for publish to "$kv.acl_rules.packs"' in refused
    assert '"$G/user:engine" - Publish Violation - Subject "$KV.ACL_RULES.packs"' in (
        secured.server_log()
    )
    async with as_user(secured, "viewer") as log:
        current = await deploy.deployed(await log.key_value("rules", history=20))
    assert current == good and current.by == "admin"


async def test_the_roles_run_the_pipeline_with_no_violation(secured: Secured) -> None:
    """An adapter publishes a store's day, an engine worker (the engine role) derives from
    it, a viewer reads it all: nothing any of them needs is refused."""
    events = store_day(hours=1, shoppers=20)
    since = secured.mark()
    async with as_user(secured, "adapter-corner-01") as log:
        for i in range(0, len(events), 500):
            await log.publish_many(events[i : i + 500])
    async with as_user(secured, "engine") as log:
        config = ServiceConfig(worker="acl-w", lateness_s=LATENESS_S, lease_ttl_s=3.0)
        worker = Worker(log, Reference.of(layout()), config, packs=PACKS)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            async with as_user(secured, "admin") as admin:
                await settled(admin, [STORE], timeout_s=90)
        finally:
            stop.set()
            await task
    async with as_user(secured, "engine") as log:  # a restart restores the checkpoint
        again = Worker(log, Reference.of(layout()), config, packs=PACKS)
        stop = asyncio.Event()
        task = asyncio.create_task(again.run(stop))
        try:
            deadline = time.monotonic() + 60
            while (runner := again.runners.get(STORE)) is None or runner.checkpoint is None:
                assert not task.done() and time.monotonic() < deadline, "no store restored"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
    async with as_user(secured, "viewer") as log:
        got = await derived_ids(log, STORE)
        raw = [r.event async for r in log.replay(store=STORE)]
        await log.stats()
        [d async for d in log.deadletters()]
        workers, _ = await Leases(await log.key_value("engine_leases"), "viewer").view()
    assert len(got) > 50
    assert {e.id for e in raw} >= {e.id for e in events if e.type != "position.samples"}
    violations = [line for line in secured.server_log(since).splitlines() if "Violation" in line]
    assert violations == []
    assert workers == [] or all(w.worker == "acl-w" for w in workers)


def test_commands_on_the_embedded_default_connect_as_their_roles(tmp_path: Path) -> None:
    """Each command picks the role it needs; a deployment names the user the server
    authenticated (not the login name of the machine it came from)."""
    from typer.testing import CliRunner

    from core.cli import _load_plugins, app

    _load_plugins()
    runner = CliRunner()
    env = {"AISLE_DATA_DIR": str(tmp_path / ".aisle"), "AISLE_NATS_URL": ""}
    packs = str(Path(__file__).resolve().parent.parent / "rules" / "packs")
    for args in (
        ["simulate", "--hours", "0.25", "--shoppers", "3"],
        ["rules", "deploy", packs],
        ["log", "info"],
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, (args, result.output)
    status = runner.invoke(app, ["rules", "status"], env=env)
    assert status.exit_code == 0 and " by admin" in status.output, status.output
    server_log = (tmp_path / ".aisle" / "aisle-embedded.log").read_text()
    assert "Violation" not in server_log


async def test_a_store_scoped_adapter_added_to_a_running_embedded_server_publishes_its_stores_only(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from core.cli import app
    from core.config import Settings
    from core.runtime import embedded_or_configured

    data = tmp_path / ".aisle"
    env = {"AISLE_DATA_DIR": str(data), "AISLE_NATS_URL": "", "AISLE_PREFIX": PREFIX}
    async with embedded_or_configured(Settings(data_dir=data, log=LogConfig(prefix=PREFIX))):
        made = await asyncio.to_thread(
            CliRunner().invoke, app, ["log", "add-adapter", "door-cam", "--store", STORE], env=env
        )
        assert made.exit_code == 0, made.output
        lines = dict(line.split("=", 1) for line in made.output.split() if "=" in line)
        server = Secured(lines["AISLE_NATS_URL"], load_users(data), LogConfig(prefix=PREFIX), [])
        assert lines["AISLE_NATS_PASSWORD"] == server.auth("door-cam").password
        for _ in range(50):  # the reload takes a moment
            with contextlib.suppress(ConnectError):
                await (await connect(server.url, auth=server.auth("door-cam"))).close()
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the running server did not take the new user")
        mine, theirs = f"{PREFIX}.{STORE}.item.picked", f"{PREFIX}.{OTHER}.item.picked"
        assert await _violations(server, "door-cam", [theirs]) == [theirs]
        assert await _violations(server, "door-cam", [mine], wait_s=0.5) == []
    printed = CliRunner().invoke(app, ["log", "permissions", "adapter", "-s", STORE], env=env)
    allow = json.loads(printed.output)["permissions"]["publish"]["allow"]
    assert mine in allow and theirs not in allow


async def _subscribe_violations(
    server: Secured, name: str, subjects: list[str], wait_s: float = 3.0
) -> list[str]:
    """Subscribe once to each subject as ``name``; the subjects the server refused (within
    ``wait_s``)."""
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc).lower())

    user = next(u for u in server.users if u.user == name)
    nc = await nats.connect(
        server.url.split(",")[0], user=user.user, password=user.password, error_cb=on_error
    )
    try:
        for subject in subjects:
            await nc.subscribe(subject)
        await nc.flush()

        def found() -> list[str]:
            return [s for s in subjects if any(f'"{s.lower()}"' in r for r in refused)]

        deadline = time.monotonic() + wait_s
        while len(found()) < len(subjects) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return found()
    finally:
        await nc.close()


async def test_no_role_may_read_the_replies_and_pulled_messages_of_another(
    secured: Secured,
) -> None:
    """Under ``_INBOX.>`` any user would see every message the engine pulls (a store's
    faces, picks, carts): each user has an inbox prefix of its own, and only that."""
    others = ["_INBOX.>", "_INBOX_engine.>", "_INBOX_admin.x", ">"]
    for name in ("adapter", "adapter-corner-01", "viewer"):
        assert await _subscribe_violations(secured, name, others) == others, name
        mine = [f"_INBOX_{name}.>"]
        assert await _subscribe_violations(secured, name, mine, wait_s=0.5) == [], name
    # The shelf adapter reads its store's load-cell readings; a store's adapter no other's.
    readings = [f"{PREFIX}.{STORE}.readings.>"]
    assert await _subscribe_violations(secured, "adapter-corner-01", readings, 0.5) == []
    elsewhere = [f"{PREFIX}.other-02.readings.>", f"{PREFIX}.*.readings.>"]
    assert await _subscribe_violations(secured, "adapter-corner-01", elsewhere) == elsewhere
    assert await _subscribe_violations(secured, "viewer", readings) == readings
    assert await _subscribe_violations(secured, "engine", ["_INBOX.>", "_INBOX_viewer.>"]) == [
        "_INBOX.>",
        "_INBOX_viewer.>",
    ]
    async with as_user(secured, "engine") as log:
        assert log.nc.new_inbox().startswith("_INBOX_engine.")


def test_store_ids_with_wildcards_or_dots_are_refused_in_permissions_and_the_users_file(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from core.cli import app

    config = LogConfig(prefix=PREFIX)
    for bad in ("*", ">", "corner.01", ""):
        with pytest.raises(ValueError, match="store ids"):
            permissions(Role.ADAPTER, config, [bad])
    printed = CliRunner().invoke(app, ["log", "permissions", "adapter", "--store", ">"])
    assert printed.exit_code == 2 and "store ids" in printed.output, printed.output
    assert "permissions" not in printed.stdout
    _users(tmp_path)
    users = json.loads((tmp_path / "nats-users.json").read_text())
    users[-1]["stores"] = ["*"]
    (tmp_path / "nats-users.json").write_text(json.dumps(users))
    with pytest.raises(ValueError, match=r"nats-users\.json: user 'adapter-corner-01'"):
        load_users(tmp_path)


def test_the_embedded_servers_log_is_its_owners_only(secured: Secured) -> None:
    for node in secured.nodes:
        assert node.log_file.stat().st_mode & 0o777 == 0o600


async def test_the_viewer_may_not_create_update_or_delete_a_durable_consumer(
    secured: Secured,
) -> None:
    """A durable create (legacy or named) of the engine's consumer with its filter minus
    ``item.put_back`` was accepted: the engine skipped put-backs silently."""
    engines = f"engine_{STORE}_events_w"
    refused = [
        f"$JS.API.CONSUMER.DURABLE.CREATE.ACL_EVENTS.{engines}",
        f"$JS.API.CONSUMER.CREATE.ACL_EVENTS.{engines}",
        f"$JS.API.CONSUMER.CREATE.ACL_EVENTS.{engines}.{PREFIX}.{STORE}.item.picked",
        f"$JS.API.CONSUMER.DELETE.ACL_EVENTS.{engines}",
        "$JS.API.CONSUMER.DELETE.ACL_DEADLETTER.x",
    ]
    assert await _violations(secured, "viewer", refused) == refused
    # Its readers make ephemeral consumers with no name, and leave them to expire.
    allowed = ["$JS.API.CONSUMER.CREATE.ACL_EVENTS", "$JS.API.CONSUMER.CREATE.KV_ACL_RULES"]
    assert await _violations(secured, "viewer", allowed, wait_s=0.5) == []
    since = secured.mark()
    async with as_user(secured, "viewer") as log:
        [r async for r in log.replay(store=STORE, types=["item.picked"])]
    assert "Violation" not in secured.server_log(since)


async def test_an_engine_consumer_changed_by_another_user_is_noticed_and_made_again(
    secured: Secured,
) -> None:
    """The server lets an ephemeral create that names an existing consumer update it, so
    no permission stops it: the engine compares its consumer's configuration with the one
    it made (every few seconds, not on each pull) and starts over on one of its own."""
    from core.log import Stream
    from core.puller import ConsumerTampered

    name = f"engine_{STORE}_events_tamper"
    types = ["item.picked", "item.put_back"]
    async with as_user(secured, "engine") as log:
        puller, _ = await log.engine_consumer(
            name, Stream.EVENTS, store=STORE, types=types, start_seq=1
        )
        puller.verify_every_s = 0.0
        await puller.poll(1)  # untouched: nothing to say
        made = (await log.js.consumer_info("ACL_EVENTS", name)).config
        narrowed = {
            "name": name,
            "ack_policy": "all",
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": made.opt_start_seq,
            "filter_subject": f"{PREFIX}.{STORE}.item.picked",
        }
        async with as_user(secured, "viewer") as viewer:
            request = {"stream_name": "ACL_EVENTS", "config": narrowed}
            reply = await viewer.nc.request(
                "$JS.API.CONSUMER.CREATE.ACL_EVENTS", json.dumps(request).encode()
            )
        if b'"error"' in reply.data:  # a server that refuses the update: nothing changed
            after = (await log.js.consumer_info("ACL_EVENTS", name)).config
            assert after.filter_subjects == made.filter_subjects
            assert after.filter_subject == made.filter_subject
            await puller.poll(1)  # and the engine has nothing to notice
            await puller.stop()
            return
        with pytest.raises(ConsumerTampered, match=r"filter_subject"):
            await puller.poll(1)
        await puller.stop()
        puller, _ = await log.engine_consumer(
            name, Stream.EVENTS, store=STORE, types=types, start_seq=1
        )
        again = (await log.js.consumer_info("ACL_EVENTS", name)).config
        assert sorted(again.filter_subjects or []) == [f"{PREFIX}.{STORE}.{t}" for t in types]
        await puller.stop()
        await log.js.delete_consumer("ACL_EVENTS", name)


async def test_the_engine_may_not_create_the_rules_bucket(secured: Secured) -> None:
    """It could make it a stream that sources its own leases bucket through a subject
    transform: every lease put would then be a deployment."""
    create = ["$JS.API.STREAM.CREATE.KV_ACL_RULES"]
    assert await _violations(secured, "engine", create) == create
    block = permissions(Role.ENGINE, secured.config)["publish"]["allow"]
    assert not [s for s in block if s.startswith("$JS.API.STREAM.CREATE.KV_ACL_RULES")]


@contextlib.asynccontextmanager
async def _fresh(tmp_path: Path, prefix: str) -> AsyncIterator[Secured]:
    """A server of its own for ``prefix``, its streams made by the admin (no rules bucket)."""
    config = LogConfig(prefix=prefix, publish_deadline_s=20)
    users = _users(tmp_path / "creds")
    node = EmbeddedNats(tmp_path / "n", auth=authorization(users, config)).start()
    try:
        server = Secured(node.url, users, config, [node])
        await _create_streams(server)
        yield server
    finally:
        node.stop()


async def test_a_worker_with_no_rules_bucket_runs_its_packs_and_takes_the_first_deployment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _fresh(tmp_path, "norules") as server:
        async with as_user(server, "engine") as log:
            config = ServiceConfig(worker="nr-w", lateness_s=LATENESS_S, lease_ttl_s=1.5)
            worker = Worker(log, Reference.of(layout()), config, packs=PACKS)
            stop = asyncio.Event()
            with caplog.at_level(logging.ERROR, logger="rules.service.worker"):
                task = asyncio.create_task(worker.run(stop))
                try:
                    await asyncio.sleep(2.5)  # a few rebalances
                    assert worker.rules_version == "local"
                    files = deploy.validated(PACKS, Reference.of(layout()))
                    async with as_user(server, "admin") as admin:
                        kv = await admin.key_value("rules", history=20)
                        good, _ = await deploy.deploy(kv, files, by="admin")
                    for _ in range(100):
                        if worker.rules_version == good.version:
                            break
                        await asyncio.sleep(0.1)
                finally:
                    stop.set()
                    await task
        assert worker.rules_version == good.version
        said = [r for r in caplog.records if "no usable rules bucket" in r.getMessage()]
        assert len(said) == 1, "said once, not at every rebalance"
        assert "Violation" not in server.server_log()


async def test_a_rules_bucket_that_takes_messages_from_elsewhere_is_refused(
    tmp_path: Path,
) -> None:
    from nats.js import api

    async with _fresh(tmp_path, "forged") as server:
        async with as_user(server, "admin") as admin:
            leases = await admin.key_value("engine_leases", ttl_s=1.5)  # the worker's below
            rules = admin.config.bucket("rules")
            await admin.js.add_stream(
                name=f"KV_{rules}",
                max_msgs_per_subject=20,
                allow_direct=True,
                allow_rollup_hdrs=True,
                sources=[
                    api.StreamSource(
                        name=f"KV_{admin.config.bucket('engine_leases')}",
                        subject_transforms=[
                            api.SubjectTransform(
                                src=f"$KV.{admin.config.bucket('engine_leases')}.packs",
                                dest=f"$KV.{rules}.packs",
                            )
                        ],
                    )
                ],
            )
            await leases.put("packs", b"not a deployment")
        async with as_user(server, "engine") as log:
            with pytest.raises(deploy.UnreadableDeployment, match="sources"):
                await deploy.rules_bucket(log.js, rules)
            config = ServiceConfig(worker="fg-w", lateness_s=LATENESS_S, lease_ttl_s=1.5)
            worker = Worker(log, Reference.of(layout()), config, packs=PACKS)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            await asyncio.sleep(1.0)
            stop.set()
            await task
            assert worker.rules_version == "local"


def test_log_permissions_prints_the_users_own_inbox() -> None:
    from typer.testing import CliRunner

    from core.cli import app

    printed = CliRunner().invoke(
        app, ["log", "permissions", "adapter", "--user", "cams-01", "--store", STORE]
    )
    assert printed.exit_code == 0, printed.output
    block = json.loads(printed.output)["permissions"]
    # Its own inbox, and its store's load-cell readings (NATS core, never stored).
    assert block["subscribe"] == {"allow": ["_INBOX_cams-01.>", f"aisle.{STORE}.readings.>"]}
    assert f"aisle.{STORE}.readings.>" in block["publish"]["allow"]
    viewer = permissions(Role.VIEWER, LogConfig(prefix=PREFIX))
    assert viewer["subscribe"] == {"allow": ["_INBOX_viewer.>"]}
    assert not [s for s in viewer["publish"]["allow"] if "DELETE" in s or "DURABLE" in s]


def _tampered(records: list[logging.LogRecord]) -> bool:
    """Whether the worker said a store stopped on a consumer changed by another."""
    for r in records:
        said = f"{getattr(r, 'error', '')} {r.exc_info[1] if r.exc_info else ''}"
        if "ConsumerTampered" in said or ("changed by another" in said and "put_back" in said):
            return True
    return False


async def test_a_viewer_narrowing_the_engines_consumer_costs_no_put_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hostile tester's repro: the engine's consumer, updated by the viewer to its own
    filter minus ``item.put_back``; the engine skipped put-backs silently. Now it notices
    (before its next checkpoint, which would keep what was skipped) and starts over on a
    consumer of its own."""
    events = store_day(hours=1, shoppers=20)
    third = len(events) // 3
    name = f"engine_{STORE}_events_tw"
    async with (
        _fresh(tmp_path, "tamper") as server,
        as_user(server, "adapter-corner-01") as adapter,
        as_user(server, "engine") as log,
        as_user(server, "viewer") as viewer,
        as_user(server, "admin") as admin,
    ):
        await adapter.publish_many(events[:third])
        config = ServiceConfig(worker="tw", lateness_s=LATENESS_S, lease_ttl_s=3.0)
        worker = Worker(log, Reference.of(layout()), config, packs=PACKS)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            for _ in range(300):
                if name in [c.name for c in await viewer.js.consumers_info("TAMPER_EVENTS")]:
                    break
                await asyncio.sleep(0.1)
            info = await viewer.nc.request(f"$JS.API.CONSUMER.INFO.TAMPER_EVENTS.{name}", b"")
            cfg = json.loads(info.data)["config"]
            kept = [f for f in cfg.pop("filter_subjects") if "put_back" not in f]
            cfg.pop("durable_name", None)  # the one create subject the viewer has left
            request = {"stream_name": "TAMPER_EVENTS", "config": {**cfg, "filter_subjects": kept}}
            reply = await viewer.nc.request(
                "$JS.API.CONSUMER.CREATE.TAMPER_EVENTS", json.dumps(request).encode()
            )
            assert b'"error"' not in reply.data, reply.data
            for i in range(third, len(events), 500):
                await adapter.publish_many(events[i : i + 500])
            for _ in range(300):  # within a check's period (or at the next checkpoint)
                if _tampered(caplog.records):
                    break
                await asyncio.sleep(0.1)
            await settled(admin, [STORE], timeout_s=120)
            again = await admin.js.consumer_info("TAMPER_EVENTS", name)
        finally:
            stop.set()
            await task
    assert _tampered(caplog.records), [r.getMessage() for r in caplog.records]
    assert any("put_back" in f for f in again.config.filter_subjects or [])
    # Not asserted: that every derived event is the uninterrupted engine's. What the engine
    # published from the narrowed consumer before it noticed (seconds) stays in the log and,
    # under the same ids, keeps the right ones out (docs/security.md).
