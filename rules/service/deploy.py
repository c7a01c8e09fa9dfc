"""Rule deployment: validated packs in a key-value bucket, which running engines watch.

``aisle rules deploy`` validates the packs against the stores' layouts first and stores them
only if all are good; an engine that still refuses a deployment (its layouts differ) keeps
the rules it runs and says why. The version is a digest of the files, so deploying the same
packs twice changes nothing.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from rules.engine import RuleSet
from rules.loader import check_rules, load_rules
from rules.reference import Reference

KEY = "packs"


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    files: dict[str, str]  # file name -> YAML text
    deployed_at: float
    by: str  # the NATS user that stored it, as the server authenticated it


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


async def deploy(kv: KeyValue, files: dict[str, str], *, by: str) -> tuple[Deployment, bool]:
    """Store validated packs; returns the deployment and whether it is new.

    ``by`` is who the server says the connection is (``core.access.authenticated_user``),
    not a name the deploying machine makes up. An unreadable deployment is replaced.
    """
    try:
        current = await deployed(kv)
    except UnreadableDeployment:
        current = None
    version = version_of(files)
    if current is not None and current.version == version:
        return current, False
    deployment = Deployment(
        version=version,
        files=files,
        deployed_at=time.time(),
        by=by,
    )
    await kv.put(KEY, msgspec.msgpack.encode(deployment))
    return deployment, True


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
