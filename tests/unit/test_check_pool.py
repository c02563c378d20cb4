"""CheckPool: lanes shared by successive batches (the scheduler's and the workers' runner)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from integration_health import CheckRegistry, ErrorCode, HealthStatus, Settings, StatusRules
from integration_health.runner import CheckOutcome, CheckPool
from integration_health.testing import FakeCheck, FakeConfig, fake_registry


def fake(org_id: uuid.UUID, name: str, **fields: Any) -> FakeConfig:
    return FakeConfig(integration_id=uuid.uuid4(), org_id=org_id, name=name, **fields)


def _pool(registry: CheckRegistry, *, concurrency: int, timeout_s: float = 5.0) -> CheckPool:
    return CheckPool(
        registry=registry,
        rules=StatusRules(registry.settings.degraded_latency_ms),
        timeout_s=timeout_s,
        concurrency=concurrency,
    )


class _Gauge:
    """Counts the checks of a FakeCheck running at once, and those cancelled."""

    def __init__(self, check: FakeCheck) -> None:
        self.now = self.most = self.cancelled = 0
        self._check = check.check

        async def counted(org_id: uuid.UUID, config: FakeConfig) -> Any:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                return await self._check(org_id, config)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.now -= 1

        check.check = counted  # type: ignore[method-assign]


async def test_batches_share_the_lanes_in_order_and_within_concurrency(org_id: uuid.UUID) -> None:
    """Two batches handed over together never run more than ``concurrency`` checks at once,
    nobody waits for the registry's slots, the second batch's checks start as lanes come
    free (first in, first out) and each batch gets its own outcomes, in its order."""
    registry, check, _ = fake_registry(settings=Settings(concurrency=3), with_builtins=False)
    gauge = _Gauge(check)
    first = [fake(org_id, f"a{i}", delay_s=0.1) for i in range(5)]
    second = [fake(org_id, f"b{i}", delay_s=0.1) for i in range(2)]
    async with registry:
        pool = _pool(registry, concurrency=3)
        started = time.monotonic()
        a = asyncio.create_task(pool.run(first))
        b = asyncio.create_task(pool.run(second))
        await asyncio.sleep(0.01)
        assert len(pool.lanes) == 3 and pool.queued == 4
        assert not registry.slots._waiters  # lanes never outnumber the slots
        got_a, got_b = await asyncio.gather(a, b)
    elapsed = time.monotonic() - started
    assert gauge.most == 3
    assert 0.29 <= elapsed < 0.6  # 7 checks of 0.1 s, 3 at a time: 3 waves
    assert [o.integration for o in got_a] == first
    assert [o.integration for o in got_b] == second
    assert all(o.result.status is HealthStatus.HEALTHY for o in got_a + got_b)
    order = [c.integration_id for c in sorted(check.calls, key=lambda c: c.started)]
    assert order == [i.integration_id for i in first + second]
    assert not pool.lanes and pool.queued == 0  # lanes end when nothing is queued


async def test_cancelling_one_batch_leaves_the_others_running(org_id: uuid.UUID) -> None:
    """A cancelled batch's queued checks are dropped and its running ones cancelled; the
    batch handed over after it still gets every result, and the slots are given back."""
    registry, check, _ = fake_registry(settings=Settings(concurrency=2), with_builtins=False)
    gauge = _Gauge(check)
    slow = [fake(org_id, f"slow{i}", delay_s=5) for i in range(4)]
    quick = [fake(org_id, f"quick{i}", delay_s=0.05) for i in range(3)]
    async with registry:
        pool = _pool(registry, concurrency=2)
        doomed = asyncio.create_task(pool.run(slow))
        kept = asyncio.create_task(pool.run(quick))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        outcomes = await asyncio.wait_for(kept, 2)
        assert time.monotonic() - started < 1
        assert registry.slots._value == registry.settings.concurrency
    assert [o.integration for o in outcomes] == quick
    assert all(o.result.status is HealthStatus.HEALTHY for o in outcomes)
    ran = {c.integration_id for c in check.calls}
    assert {s.integration_id for s in slow[2:]}.isdisjoint(ran)  # queued ones never started
    assert gauge.cancelled == 2 and gauge.now == 0  # the two running were cancelled


async def test_a_failing_on_result_fails_its_own_batch_only(org_id: uuid.UUID) -> None:
    registry, _, _ = fake_registry(settings=Settings(concurrency=2), with_builtins=False)

    def explode(outcome: CheckOutcome) -> None:
        raise RuntimeError(f"callback failed on {outcome.integration.name}")

    async with registry:
        pool = _pool(registry, concurrency=2)
        bad = asyncio.create_task(
            pool.run([fake(org_id, f"x{i}", delay_s=0.05) for i in range(3)], on_result=explode)
        )
        good_items = [fake(org_id, f"y{i}", delay_s=0.05) for i in range(3)]
        good = asyncio.create_task(pool.run(good_items))
        with pytest.raises(RuntimeError, match="callback failed on x"):
            await bad
        outcomes = await asyncio.wait_for(good, 2)
    assert [o.integration for o in outcomes] == good_items


async def test_a_queued_check_gets_its_full_deadline_from_when_a_lane_takes_it(
    org_id: uuid.UUID,
) -> None:
    """With one lane, a check of another batch queued behind a 0.25 s check has its whole
    0.3 s once it starts; one that overruns is cut at its own deadline."""
    registry, _, _ = fake_registry(settings=Settings(concurrency=1), with_builtins=False)
    async with registry:
        pool = _pool(registry, concurrency=1, timeout_s=0.3)
        first = asyncio.create_task(pool.run([fake(org_id, "first", delay_s=0.25)]))
        second = asyncio.create_task(
            pool.run([fake(org_id, "second", delay_s=0.2), fake(org_id, "late", delay_s=1)])
        )
        [(_, a)] = await first
        (_, b), (_, late) = await second
    assert a.status is HealthStatus.HEALTHY and b.status is HealthStatus.HEALTHY
    assert late.error_code is ErrorCode.TIMEOUT
    assert 290 <= late.latency_ms < 450


async def test_pool_arguments_and_loop_are_checked(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    rules = StatusRules()
    with pytest.raises(ValueError, match="timeout_s"):
        CheckPool(registry=registry, rules=rules, timeout_s=0, concurrency=1)
    with pytest.raises(ValueError, match="concurrency"):
        CheckPool(registry=registry, rules=rules, timeout_s=1, concurrency=0)
    pool = CheckPool(registry=registry, rules=rules, timeout_s=1, concurrency=1)
    assert await pool.run([]) == []

    def elsewhere() -> None:
        with pytest.raises(RuntimeError, match="event loop it was created on"):
            asyncio.run(pool.run([fake(org_id, "x")]))

    await asyncio.to_thread(elsewhere)


async def test_lingering_lanes_wait_for_the_next_batch_then_end(org_id: uuid.UUID) -> None:
    """With ``linger_s`` the lanes of a batch wait for the next one (the same lane tasks run
    it), a batch smaller than the lanes waiting leaves the others waiting, and lanes end once
    nothing came for ``linger_s`` — or at once on ``close()``."""
    registry, _, _ = fake_registry(settings=Settings(concurrency=3), with_builtins=False)
    async with registry:
        pool = CheckPool(
            registry=registry,
            rules=StatusRules(),
            timeout_s=5,
            concurrency=3,
            linger_s=0.3,
        )
        await pool.run([fake(org_id, f"a{i}", delay_s=0.02) for i in range(3)])
        lanes = set(pool.lanes)
        assert len(lanes) == 3  # waiting for work
        await pool.run([fake(org_id, "b")])
        await pool.run([fake(org_id, f"c{i}", delay_s=0.02) for i in range(3)])
        assert pool.lanes == lanes  # no lane was started for b or c
        await asyncio.sleep(0.5)
        assert not pool.lanes  # nothing came for linger_s
        await pool.run([fake(org_id, f"d{i}") for i in range(2)])
        assert len(pool.lanes) == 2
        pool.close()
        await asyncio.sleep(0)
        assert not pool.lanes
        outcomes = await pool.run([fake(org_id, "e")])  # still usable; lanes end at once now
        assert outcomes[0].result.status is HealthStatus.HEALTHY
        await asyncio.sleep(0)
        assert not pool.lanes
    with pytest.raises(ValueError, match="linger_s"):
        CheckPool(registry=registry, rules=StatusRules(), timeout_s=1, concurrency=1, linger_s=-1)
