"""The rules: the deployed packs and their version; validate packs; deploy them (admin
only, audited). Packs are checked against the layouts the API was given."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import nats.errors
import nats.js.errors
from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import Admin
from api.context import Context, Ctx
from api.problems import Problem, documented
from core.access import RULES_HISTORY, Role
from core.runtime import open_log
from rules.loader import check_rules
from rules.reference import Reference
from rules.service.deploy import DeployError, UnreadableDeployment, deploy, deployed, rules_bucket
from rules.service.leases import running_workers

router = APIRouter(tags=["rules"], responses=documented(401, 403, 422, 503))

PackName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}\.ya?ml$")]
PackText = Annotated[str, StringConstraints(max_length=512_000)]


class WorkerOut(BaseModel):
    worker: str
    rules_version: str
    behind: bool  # runs other rules than the deployed ones
    stores: list[str]
    packs: dict[str, str]  # pack name -> version


class DeploymentOut(BaseModel):
    version: str | None  # None: nothing deployed (engines run the packs they started with)
    deployed_at: datetime | None = None
    by: str | None = None
    files: dict[str, str] = {}
    workers: list[WorkerOut] = []  # the engine workers running now, and their packs


class PacksIn(BaseModel):
    files: dict[PackName, PackText] = Field(min_length=1, max_length=50)


class PackError(BaseModel):
    file: str
    line: int
    col: int
    message: str


class Validation(BaseModel):
    valid: bool
    errors: list[PackError]
    warnings: list[PackError]


def _check(ctx: Context, files: dict[str, str]) -> Validation:
    reference = Reference.of(*ctx.layouts.values())
    checked = check_rules(sorted(files.items()), reference)
    return Validation(
        valid=not checked.errors,
        errors=[PackError(**e.to_dict()) for e in checked.errors],
        warnings=[PackError(**w.to_dict()) for w in checked.warnings],
    )


@router.get("/rules", response_model=DeploymentOut)
async def get_rules(ctx: Ctx, who: Admin) -> DeploymentOut:
    log = ctx.need_log()
    try:
        kv = await rules_bucket(log.js, log.config.bucket("rules"))
        current = await deployed(kv) if kv is not None else None
    except UnreadableDeployment as exc:
        raise Problem(503, "rules unreadable", str(exc)) from None
    workers = [
        WorkerOut(
            worker=w.worker,
            rules_version=w.rules_version,
            behind=current is not None and w.rules_version != current.version,
            stores=list(w.stores),
            packs=dict(w.packs),
        )
        for w in await running_workers(log.js, log.config.bucket("engine_leases")) or []
    ]
    if current is None:
        return DeploymentOut(version=None, workers=workers)
    return DeploymentOut(
        version=current.version,
        deployed_at=datetime.fromtimestamp(current.deployed_at, UTC),
        by=current.by,
        files=current.files,
        workers=workers,
    )


@router.post("/rules/validate", response_model=Validation)
async def validate_rules(ctx: Ctx, who: Admin, body: PacksIn) -> Validation:
    """Check packs (``file:line:col: message`` for each problem) without deploying them."""
    return await run_in_threadpool(_check, ctx, body.files)


@router.post("/rules/deploy", response_model=DeploymentOut, responses=documented(409))
async def deploy_rules(ctx: Ctx, who: Admin, body: PacksIn) -> DeploymentOut:
    """Validate the packs and deploy them to every running engine; audited."""
    if who.stores:  # a deployment is every store's rules: no token of some stores may
        raise Problem(
            403,
            "forbidden",
            "a deployment changes the rules of every store; this token is limited to "
            f"{', '.join(who.stores)}: deploy with an admin token of every store",
            field="header.authorization",
        )
    ctx.need_log()
    checked = await run_in_threadpool(_check, ctx, body.files)
    if not checked.valid:
        first = checked.errors[0]
        raise Problem(
            422,
            "invalid packs",
            f"{first.file}:{first.line}:{first.col}: {first.message}",
            field=f"body.files.{first.file}",
        )
    try:
        async with open_log(ctx.settings.core, name="aisle-api-deploy", role=Role.ADMIN) as log:
            kv = await log.key_value("rules", history=RULES_HISTORY)
            deployment, new = await deploy(kv, dict(body.files), by=who.who)
    except DeployError as exc:  # a pack changed under its deployed version
        raise Problem(409, "pack version unchanged", exc.errors[0], field="body.files") from None
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        raise Problem(503, "deploy failed", f"the log refused the deployment: {exc}") from None
    await run_in_threadpool(
        audit.record,
        ctx.db,
        who,
        "rules.deployed" if new else "rules.redeployed",
        target=deployment.version,
        detail=", ".join(sorted(body.files)),
    )
    return DeploymentOut(
        version=deployment.version,
        deployed_at=datetime.fromtimestamp(deployment.deployed_at, UTC),
        by=deployment.by,
        files=deployment.files,
    )
