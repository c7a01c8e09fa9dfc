"""A lease renewal that meets what an election leaves behind keeps the lease when it is
still this worker's, and gives it up when anyone else may have written it."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from core.jetstream import JetStreamLog
from rules.service.leases import Leases


async def test_a_renewal_that_landed_unanswered_is_still_ours(jslog: JetStreamLog) -> None:
    kv = await jslog.key_value("engine_leases", ttl_s=5.0)
    leases = Leases(kv, "w1", ttl_s=5.0)
    assert await leases.take("s1")
    await kv.update("store.s1", b"w1", last=leases.held["s1"])  # its answer was lost
    assert await leases.renew() == []
    assert (await kv.get("store.s1")).revision == leases.held["s1"]


async def test_a_lease_another_worker_wrote_is_lost(jslog: JetStreamLog) -> None:
    kv = await jslog.key_value("engine_leases", ttl_s=5.0)
    leases = Leases(kv, "w1", ttl_s=5.0)
    assert await leases.take("s1") and await leases.take("s2")
    await kv.update("store.s1", b"w2", last=leases.held["s1"])  # taken over
    await kv.delete("store.s2")  # given back by whoever had it since
    assert sorted(await leases.renew()) == ["s1", "s2"]
    assert leases.held == {}


async def test_a_lease_that_expired_unrenewed_is_taken_again_within_twice_its_time(
    jslog: JetStreamLog,
) -> None:
    """The cluster could take no renewal (an election) until the lease had expired; nobody
    can have written the key since, for that takes longer than twice the lease time."""
    kv = await jslog.key_value("engine_leases", ttl_s=1.0)
    leases = Leases(kv, "w1", ttl_s=1.0)
    assert await leases.take("s1")
    await asyncio.sleep(1.5)  # expired: the key is gone
    assert await leases.renew() == []
    assert (await kv.get("store.s1")).value == b"w1"
    await asyncio.sleep(2.5)  # past twice the lease time: someone may have had it
    assert await leases.renew() == ["s1"]


async def test_a_renewal_nobody_answers_is_tried_again_then_raised(jslog: JetStreamLog) -> None:
    kv = await jslog.key_value("engine_leases", ttl_s=5.0)
    leases = Leases(kv, "w1", ttl_s=5.0)
    assert await leases.take("s1")
    calls = 0
    update = kv.update

    async def electing(*args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise nats.errors.TimeoutError
        return await update(*args, **kwargs)  # type: ignore[arg-type]

    kv.update = electing  # type: ignore[method-assign]
    assert await leases.renew() == [] and calls == 3
    calls = -100
    with pytest.raises(nats.errors.TimeoutError):  # unanswered for longer than the patience
        await leases.renew(patience_s=1.0)
    assert "s1" in leases.held, "held still: the next round tries again"
