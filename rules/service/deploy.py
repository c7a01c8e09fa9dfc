"""Rule deployment: validated packs in a key-value bucket, which running engines watch.

``aisle rules deploy`` validates the packs against the stores' layouts first and stores them
only if all are good; an engine that still refuses a deployment (its layouts differ) keeps
the rules it runs and says why. The version is a digest of the files, so deploying the same
packs twice changes nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
import time
from pathlib import Path

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from rules.engine import Context, RuleSet
from rules.loader import check_rules, load_rules
from rules.reference import Reference

KEY = "packs"


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    files: dict[str, str]  # file name -> YAML text
    deployed_at: float
    by: str


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


async def deploy(kv: KeyValue, paths: list[Path], reference: Reference) -> tuple[Deployment, bool]:
    """Validate and store the packs; returns the deployment and whether it is new."""
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise DeployError(
            [f"two packs named {n}" for n in sorted({n for n in names if names.count(n) > 1})]
        )
    checked = check_rules(paths, reference)
    if checked.errors:
        raise DeployError([str(e) for e in checked.errors])
    files = {p.name: p.read_text() for p in paths}
    current = await deployed(kv)
    version = version_of(files)
    if current is not None and current.version == version:
        return current, False
    deployment = Deployment(
        version=version,
        files=files,
        deployed_at=time.time(),
        by=f"{getpass.getuser()}@{socket.gethostname()}",
    )
    await kv.put(KEY, msgspec.msgpack.encode(deployment))
    return deployment, True


async def deployed(kv: KeyValue) -> Deployment | None:
    try:
        entry = await kv.get(KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    return msgspec.msgpack.decode(entry.value, type=Deployment) if entry.value else None


def decode(value: bytes) -> Deployment:
    return msgspec.msgpack.decode(value, type=Deployment)


def compile_deployment(deployment: Deployment, reference: Reference, context: Context) -> RuleSet:
    """The deployment's rule set (``PackError`` with file:line:col if this engine's
    reference data refuses it)."""
    return load_rules(sorted(deployment.files.items()), reference, context)
