"""Rule deployment: validated packs in a key-value bucket, which running engines watch.

``aisle rules deploy`` validates the packs against the stores' layouts first and stores them
only if all are good; an engine that still refuses a deployment (its layouts differ) keeps
the rules it runs and says why. The version is a digest of the files, so deploying the same
packs twice changes nothing. A pack whose rules changed must say so with a new ``version:``
(a deployment under the same pack version with other rules is refused); the bucket keeps
the last deployments, which ``aisle rules history`` lists and ``aisle rules rollback``
deploys again.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from core.yamlsource import load_yaml
from rules.engine import RuleSet
from rules.loader import MAX_PACK_BYTES, check_rules, load_rules
from rules.reference import Reference

KEY = "packs"


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    files: dict[str, str]  # file name -> YAML text
    deployed_at: float
    by: str  # the NATS user that stored it, as the server authenticated it
    note: str = ""  # what it is, beyond its packs: "rollback to revision 3"


class UnreadableDeployment(ValueError):
    """The deployment key holds something no ``aisle rules deploy`` wrote: engines keep
    (or start with) their local packs, and say so, rather than stop."""


class DeployError(ValueError):
    """The packs were refused; ``errors`` says where, as file:line:col: message."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def version_of(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()[:12]


def validated(paths: list[Path], reference: Reference) -> dict[str, str]:
    """The packs' texts by file name, if every one is valid (``DeployError`` otherwise)."""
    if not paths:
        raise DeployError(["no packs to deploy: the paths hold no *.yaml packs"])
    names = [p.name for p in paths]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DeployError(
            [f"two packs named {n}: a deployment holds packs by file name" for n in twice]
        )
    checked = check_rules(paths, reference)
    if checked.errors:
        raise DeployError([str(e) for e in checked.errors])
    return {p.name: p.read_text() for p in paths}


def packs_of(files: dict[str, str]) -> dict[str, tuple[str, str, object]]:
    """Each pack of a deployment by its id: (file name, version, its content without the
    comments)."""
    found = {}
    for name, text in files.items():
        data = load_yaml(name, text=text, max_bytes=MAX_PACK_BYTES).data
        if isinstance(data, dict) and isinstance(data.get("pack"), str):
            found[data["pack"]] = (name, str(data.get("version", "")), data)
    return found


def unchanged_versions(current: Deployment, files: dict[str, str]) -> list[str]:
    """Packs whose rules differ from the deployed ones under the same version: a version
    must name one set of rules, or the engines' records (rule versions on every derived
    event) would not say which rules made what."""
    before = packs_of(current.files)
    problems = []
    for pack, (name, version, data) in sorted(packs_of(files).items()):
        if pack in before and before[pack][1] == version and before[pack][2] != data:
            problems.append(
                f"{name}: pack {pack} differs from the deployed one but keeps its version "
                f"{version}: give it a new version (the deployed {version} stays as it is)"
            )
    return problems


async def deploy(
    kv: KeyValue, files: dict[str, str], *, by: str, note: str = ""
) -> tuple[Deployment, bool]:
    """Store validated packs; returns the deployment and whether it is new.

    ``by`` is who the server says the connection is (``core.access.authenticated_user``),
    not a name the deploying machine makes up. An unreadable deployment is replaced. A
    pack changed under its deployed version is refused (``DeployError``).
    """
    try:
        current = await deployed(kv)
    except UnreadableDeployment:
        current = None
    version = version_of(files)
    if current is not None and current.version == version:
        return current, False
    if current is not None and (problems := unchanged_versions(current, files)):
        raise DeployError(problems)
    deployment = Deployment(version=version, files=files, deployed_at=time.time(), by=by, note=note)
    await kv.put(KEY, msgspec.msgpack.encode(deployment))
    return deployment, True


class Past(msgspec.Struct, frozen=True):
    """A deployment the bucket still keeps, with its revision (the bucket's counter)."""

    revision: int
    deployment: Deployment | None  # None: a revision aisle cannot read


async def history(kv: KeyValue) -> list[Past]:
    """The deployments the bucket keeps, oldest first."""
    try:
        entries = await kv.history(KEY)
    except nats.js.errors.NoKeysError:
        return []
    found = []
    for entry in entries:
        if not entry.value:
            continue
        try:
            found.append(Past(entry.revision or 0, decode(entry.value, entry.revision)))
        except UnreadableDeployment:
            found.append(Past(entry.revision or 0, None))
    return found


async def rollback(
    kv: KeyValue, reference: Reference, *, to: str | None, by: str
) -> tuple[Deployment, Past]:
    """Deploy again the packs of an earlier deployment: ``to`` is a revision number or a
    version (a prefix will do), by default the one before the current. The packs are
    checked against this machine's layouts again, as a deploy checks them; the version
    check of ``deploy`` does not apply, since these are packs that ran before."""
    past = [p for p in await history(kv) if p.deployment is not None]
    if not past:
        raise DeployError(["no deployment to roll back to: none was ever deployed"])
    if to is None:
        if len(past) < 2:
            raise DeployError(["no earlier deployment to roll back to (only the current one)"])
        target = past[-2]
    else:
        matches = [
            p
            for p in past
            if str(p.revision) == to or (p.deployment and p.deployment.version.startswith(to))
        ]
        if not matches:
            kept = ", ".join(f"{p.revision} ({p.deployment.version})" for p in past if p.deployment)
            raise DeployError([f"no deployment {to!r} in the history; kept: {kept}"])
        target = matches[-1]
    assert target.deployment is not None
    current = past[-1].deployment
    if current is not None and current.version == target.deployment.version:
        raise DeployError([f"revision {target.revision} ({current.version}) is what is deployed"])
    checked = check_rules(sorted(target.deployment.files.items()), reference)
    if checked.errors:
        raise DeployError([str(e) for e in checked.errors])
    files = dict(target.deployment.files)
    deployment = Deployment(
        version=version_of(files),
        files=files,
        deployed_at=time.time(),
        by=by,
        note=f"rollback to revision {target.revision}",
    )
    await kv.put(KEY, msgspec.msgpack.encode(deployment))
    return deployment, target


async def rules_bucket(js: JetStreamContext, bucket: str) -> KeyValue | None:
    """The rules bucket if it exists (None if not: only an admin creates it), after a look
    at its stream: one that takes messages from elsewhere (``sources``, ``mirror``, a
    subject transform, a republish) could hold a deployment no admin put there, so it is
    refused with ``UnreadableDeployment``."""
    try:
        info = await js.stream_info(f"KV_{bucket}")
    except nats.js.errors.NotFoundError:
        return None
    c = info.config
    odd = [
        name
        for name, value in (
            ("sources", c.sources),
            ("mirror", c.mirror),
            ("subject_transform", c.subject_transform),
            ("republish", c.republish),
        )
        if value
    ]
    if c.subjects and c.subjects != [f"$KV.{bucket}.>"]:
        odd.append(f"subjects {c.subjects}")
    if odd:
        raise UnreadableDeployment(
            f"the rules bucket {bucket} (stream KV_{bucket}) takes messages from elsewhere "
            f"({', '.join(odd)}): not a bucket an admin made; delete it and deploy again as "
            "an admin (`aisle rules deploy`)"
        )
    return await js.key_value(bucket)


async def deployed(kv: KeyValue) -> Deployment | None:
    """The current deployment, if any (``UnreadableDeployment`` if the key holds garbage)."""
    try:
        entry = await kv.get(KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    return decode(entry.value, entry.revision) if entry.value else None


def decode(value: bytes, revision: int | None = None) -> Deployment:
    try:
        return msgspec.msgpack.decode(value, type=Deployment)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnreadableDeployment(
            f"the rules deployment (bucket key {KEY!r}, revision {revision}, "
            f"{len(value)} bytes) is not one aisle wrote: {exc}; "
            "deploy rules again with `aisle rules deploy`"
        ) from None


def compile_deployment(deployment: Deployment, reference: Reference) -> RuleSet:
    """The deployment's rule set (``PackError`` with file:line:col if this engine's
    reference data refuses it)."""
    return load_rules(sorted(deployment.files.items()), reference)
