"""The in-process scheduler against real stores and the real runner, with a fake clock."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from integration_health import (
    ErrorCode,
    HealthResult,
    HealthStatus,
    MonitoringMode,
    Settings,
    metrics,
)
from integration_health.adapters.xledger import XledgerConfig
from integration_health.checks import CheckRegistry
from integration_health.errors import StoreError, StoreUnavailable
from integration_health.integrations_file import to_records
from integration_health.passive import classify_sync_error, record_sync_outcome
from integration_health.scheduling import Scheduler, SchedulerOptions
from integration_health.scheduling import scheduler as scheduler_module
from integration_health.scheduling.scheduler import PassReport
from integration_health.store import MemoryStore, Organization, SQLiteStore, Store
from integration_health.store.base import DueCheck, ResultWrite, TypeMode
from integration_health.testing import BlockingFakeConfig, FakeCheck, FakeConfig, fake_registry

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the scheduler."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        sqlite = await SQLiteStore.open(f"sqlite:///{tmp_path / 'sched.db'}")
        yield sqlite
        await sqlite.aclose()


@pytest.fixture
def fakes() -> tuple[CheckRegistry, FakeCheck]:
    registry, check, _ = fake_registry(settings=Settings(timeout_s=1.0, concurrency=100))
    return registry, check


async def seed(
    store: Store, count: int = 3, *, org: uuid.UUID | None = None, **fields: Any
) -> list[FakeConfig]:
    org = org or uuid.uuid4()
    items = [
        FakeConfig(integration_id=uuid.uuid4(), org_id=org, name=f"fake-{i}", **fields)
        for i in range(count)
    ]
    await store.import_definitions([Organization(org, "Org")], [], to_records(items))
    return items


async def test_a_scheduler_moves_on_past_slots_another_one_holds(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """While scheduler A's batch is running (its claims live), B's pass plans the checks after
    it instead of A's, whose claims it would only be refused; A's own claims stay plannable by
    A (it renews them), and once A's lease runs out B may take them over."""
    registry, check = fakes
    items = await seed(store, 6)
    options = SchedulerOptions(batch_size=3, lease_s=60)
    clock = Clock(T0)
    a = Scheduler(store, registry, options=options, clock=clock, worker="a")
    b = Scheduler(store, registry, options=options, clock=clock, worker="b")
    async with registry:
        plan, _ = await a.plan(T0, PassReport(at=T0))
        held = await a.claim(plan.run, worker="a", at=T0, report=PassReport(at=T0))
        assert len(held) == 3  # A's batch "runs": claimed, not written
        a_ids = {p.integration.integration_id for p in held}
        report = await b.run_pass()
        assert (report.ran, report.skipped_claims) == (3, 0)
        ran_by_b = {call.integration_id for call in check.calls}
        assert ran_by_b == {i.integration_id for i in items} - a_ids
        again, _ = await a.plan(T0, PassReport(at=T0))  # A still sees its own claims
        assert {p.integration.integration_id for p in again.run} == a_ids
        assert (await b.run_pass()).ran == 0  # for B they are held
        clock.advance(seconds=61)  # A died: its lease ran out
        assert (await b.run_pass()).ran == 3
    assert len(check.calls) == 6
    for item in items:
        assert len(await store.list_history(item.integration_id)) == 1


async def test_due_checks_run_once_per_slot(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Never-checked integrations run at once; then again only when their interval has passed."""
    registry, check = fakes
    items = await seed(store)
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock)
    async with registry:
        first = await scheduler.run_pass()
        assert (first.ran, first.written) == (3, 3)
        again = await scheduler.run_pass()  # same instant: nothing is due
        assert again.ran == 0
        clock.advance(minutes=14)
        assert (await scheduler.run_pass()).ran == 0
        clock.advance(minutes=1, seconds=1)
        assert (await scheduler.run_pass()).ran == 3
    assert len(check.calls) == 6
    for item in items:
        assert len(await store.list_history(item.integration_id)) == 2
    status = (await store.list_statuses(items[0].org_id))[0]
    assert status.next_check_at is not None
    assert scheduler.last_pass_at == clock.at


async def test_two_schedulers_never_run_a_slot_twice(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Two schedulers passing at the same moment split the work; every slot runs once."""
    registry, check = fakes
    items = await seed(store, 20, delay_s=0.05)
    a = Scheduler(store, registry, clock=Clock(T0), worker="a")
    b = Scheduler(store, registry, clock=Clock(T0), worker="b")
    async with registry:
        ra, rb = await asyncio.gather(a.run_pass(), b.run_pass())
    assert ra.ran + rb.ran == 20
    assert ra.skipped_claims + rb.skipped_claims >= 20 - max(ra.ran, rb.ran)
    assert len(check.calls) == 20
    for item in items:
        assert len(await store.list_history(item.integration_id)) == 1


async def test_late_duplicate_of_a_slot_writes_nothing(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """A delayed run of a slot that another worker already completed changes nothing."""
    registry, _ = fakes
    [item] = await seed(store, 1)
    clock = Clock(T0)
    fast = Scheduler(store, registry, clock=clock, worker="fast")
    async with registry:
        await fast.run_pass()  # initial slot done
        late = Scheduler(store, registry, clock=Clock(T0 + timedelta(seconds=5)), worker="late")
        report = await late.run_pass()
    assert report.ran == 0
    assert len(await store.list_history(item.integration_id)) == 1


async def test_drift_over_five_minutes_is_logged(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck], caplog: pytest.LogCaptureFixture
) -> None:
    """A check starting 6 min after its slot is logged with both timestamps and counted."""
    registry, _ = fakes
    [item] = await seed(store, 1)
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock)
    before = metrics.DRIFT_WARNINGS._value.get()
    async with registry:
        await scheduler.run_pass()
        [status] = await store.list_statuses(item.org_id)
        assert status.next_check_at is not None
        clock.at = status.next_check_at + timedelta(minutes=6)
        with caplog.at_level(logging.WARNING):
            report = await scheduler.run_pass()
    assert report.drift_warnings == 1
    assert metrics.DRIFT_WARNINGS._value.get() == before + 1
    [record] = [r for r in caplog.records if "late" in r.getMessage()]
    message = record.getMessage()
    assert status.next_check_at.isoformat() in message and clock.at.isoformat() in message


async def test_rate_limited_vendor_is_paused_then_resumed(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck], caplog: pytest.LogCaptureFixture
) -> None:
    """Five rate-limited results pause the type (store and log) until the cool-down ends."""
    registry, check = fakes
    items = await seed(store, 5, outcome="degraded")  # the fake reports rate_limited
    clock = Clock(T0)
    options = SchedulerOptions(rate_limit_threshold=5, rate_limit_cooldown=timedelta(hours=1))
    scheduler = Scheduler(store, registry, clock=clock, options=options)
    async with registry:
        with caplog.at_level(logging.WARNING):
            await scheduler.run_pass()
        [mode] = await store.list_type_modes()
        assert mode.integration_type == "fake"
        assert mode.passive_until == T0 + timedelta(hours=1)
        assert any("rate-limited results" in r.getMessage() for r in caplog.records)
        clock.advance(minutes=20)
        paused = await scheduler.run_pass()
        assert paused.ran == 0 and paused.paused == {"fake": 5}
        clock.advance(minutes=41)
        resumed = await scheduler.run_pass()
        assert resumed.ran == 5
    assert len(check.calls) == 10
    assert len(items) == 5


async def test_budget_spreads_checks_over_minutes(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """A per-minute budget of 4 runs 10 due checks over three minutes."""
    registry, _ = fakes
    await seed(store, 10)
    clock = Clock(T0)
    scheduler = Scheduler(
        store, registry, clock=clock, options=SchedulerOptions(budgets_per_minute={"fake": 4})
    )

    def held() -> float | None:
        return metrics.REGISTRY.get_sample_value(
            "integration_health_budget_held_checks", {"integration_type": "fake"}
        )

    async with registry:
        ran = [(await scheduler.run_pass()).ran]
        assert held() == 6
        ran.append((await scheduler.run_pass()).ran)  # same minute: budget spent
        clock.advance(seconds=61)
        ran.append((await scheduler.run_pass()).ran)
        assert held() == 2
        clock.advance(seconds=61)
        ran.append((await scheduler.run_pass()).ran)
        assert held() == 0  # the budget kept up
    assert ran == [4, 0, 4, 2]


async def test_schedulers_sharing_a_store_share_the_budget(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """A budget holds across every scheduler on one database: what one claimed this minute
    is spent for the others (each used to count only its own starts: two schedulers started
    twice the budget)."""
    registry, check = fakes
    await seed(store, 10)
    clock = Clock(T0)
    options = SchedulerOptions(budgets_per_minute={"fake": 4})
    one, two = (Scheduler(store, registry, clock=clock, options=options) for _ in range(2))
    assert one.worker != two.worker
    async with registry:
        ran = [(await one.run_pass()).ran, (await two.run_pass()).ran]
        clock.advance(seconds=30)
        ran.append((await two.run_pass()).ran)  # the same minute: nothing left
        clock.advance(seconds=31)
        ran += [(await two.run_pass()).ran, (await one.run_pass()).ran]
    assert ran == [4, 0, 0, 4, 0]
    assert len(check.calls) == 8


class _CountTogether:
    """The store, but each ``count_claims`` returns only once ``parties`` callers have
    counted (their plans see the same remainder before any of them claims), and ``list_due``
    leaves out ``hide`` (this caller's due list differs from the others')."""

    def __init__(self, store: Store, barrier: asyncio.Barrier, hide: set[uuid.UUID]) -> None:
        self._store = store
        self._barrier = barrier
        self._hide = hide

    async def count_claims(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        counts = await self._store.count_claims(*args, **kwargs)
        await self._barrier.wait()
        return counts

    async def list_due(self, *args: Any, **kwargs: Any) -> list[DueCheck]:
        due = await self._store.list_due(*args, **kwargs)
        return [d for d in due if d.integration.integration_id not in self._hide]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_plans_choosing_different_checks_from_one_remainder_do_not_overspend_it(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Two schedulers count the budget (4 a minute, none spent) at the same moment, and their
    due lists differ — one no longer lists the 4 checks the other will pick — so they plan 4
    different checks each. The claims are counted again in the store, atomically: the first
    to claim gets its 4, the other none. (Counted only at planning, both got 4: 8 starts.) With
    identical due lists the two plans pick the same checks and the slots' claims already
    kept them apart."""
    registry, check = fakes
    await seed(store, 10)
    first_four = {d.integration.integration_id for d in (await store.list_due(T0, limit=10))[:4]}
    clock = Clock(T0)
    options = SchedulerOptions(budgets_per_minute={"fake": 4})
    barrier = asyncio.Barrier(2)
    views = (_CountTogether(store, barrier, set()), _CountTogether(store, barrier, first_four))
    one, two = (
        Scheduler(cast(Store, view), registry, clock=clock, options=options) for view in views
    )
    async with registry:
        reports = await asyncio.gather(one.run_pass(), two.run_pass())
    assert sorted(r.ran for r in reports) == [0, 4]
    assert sum(r.skipped_claims for r in reports) == 4
    assert len(check.calls) == 4


async def test_overlapping_passes_hold_the_budget(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Scheduler.run plans the next pass before the last one's checks start (the batch fills
    less than the pipeline's room): claimed checks count against the budget at once, so
    back-to-back passes in one minute still start only the budget's worth."""
    registry, check = fakes
    await seed(store, 40, delay_s=0.05)
    scheduler = Scheduler(
        store,
        registry,
        options=SchedulerOptions(batch_size=4, tick_s=30, budgets_per_minute={"fake": 4}),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert len(check.calls) == 4


async def test_failing_integration_backs_off(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Consecutive failures push next_check_at out exponentially."""
    registry, _ = fakes
    [item] = await seed(store, 1, outcome="unreachable")
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock)
    gaps = []
    async with registry:
        for _ in range(4):
            await scheduler.run_pass()
            [status] = await store.list_statuses(item.org_id)
            assert status.next_check_at is not None
            gaps.append((status.next_check_at - status.checked_at).total_seconds())
            clock.at = status.next_check_at + timedelta(seconds=1)
    assert gaps[0] == 900
    assert gaps[1] >= 1800 * 0.9 and gaps[2] >= 3600 * 0.9 and gaps[3] >= 7200 * 0.9


async def test_passive_integrations_are_not_probed_but_take_sync_outcomes(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passive integration is never probed; sync outcomes set its status (secrets redacted)."""
    registry, check = fakes
    monkeypatch.setenv("SYNC_SECRET", "sync-canary-secret")
    [item] = await seed(store, 1, monitoring_mode="passive", secret="${SYNC_SECRET}")
    scheduler = Scheduler(store, registry, clock=Clock(T0))
    async with registry:
        assert (await scheduler.run_pass()).ran == 0
    assert check.calls == []
    bad = await record_sync_outcome(
        item.org_id,
        item.integration_id,
        ok=False,
        error="HTTP 401 Unauthorized for token sync-canary-secret",
        duration_ms=1234,
        store=store,
        registry=registry,
        at=T0,
    )
    assert (bad.status, bad.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
    assert "sync-canary-secret" not in (bad.error or "")
    [status] = await store.list_statuses(item.org_id)
    assert status.source == "passive" and status.latency_ms == 1234
    assert "sync-canary-secret" not in (status.error or "")
    good = await record_sync_outcome(
        item.org_id,
        item.integration_id,
        ok=True,
        duration_ms=50,
        store=store,
        at=T0 + timedelta(minutes=1),
    )
    assert good.status is HealthStatus.HEALTHY
    limited = await record_sync_outcome(
        item.org_id,
        item.integration_id,
        ok=False,
        error="429 Too Many Requests",
        store=store,
        at=T0 + timedelta(minutes=2),
    )
    assert (limited.status, limited.error_code) == (HealthStatus.DEGRADED, ErrorCode.RATE_LIMITED)
    events = await store.list_events(item.org_id)
    assert [e.to_status for e in events][:2] == [HealthStatus.DEGRADED, HealthStatus.HEALTHY]


async def test_sync_outcome_for_unknown_integration_is_refused(store: Store) -> None:
    """An outcome for an integration of another (or no) organisation is refused."""
    from integration_health.errors import ConfigError, UnknownIntegration

    [item] = await seed(store, 1)
    with pytest.raises(UnknownIntegration):
        await record_sync_outcome(uuid.uuid4(), item.integration_id, ok=True, store=store)
    with pytest.raises(UnknownIntegration):
        await record_sync_outcome(item.org_id, uuid.uuid4(), ok=True, store=store)
    with pytest.raises(ConfigError, match="duration_ms"):
        await record_sync_outcome(
            item.org_id, item.integration_id, ok=True, duration_ms=-1, store=store
        )


def test_sync_error_classification() -> None:
    """Sync error texts map to error codes by their telltale words."""
    assert classify_sync_error("HTTP 429 Too Many Requests") is ErrorCode.RATE_LIMITED
    assert classify_sync_error("invalid_grant: refresh token expired") is ErrorCode.AUTH
    assert classify_sync_error("Read timed out") is ErrorCode.TIMEOUT
    assert classify_sync_error("Company not found") is ErrorCode.NOT_FOUND
    assert classify_sync_error("getaddrinfo failed") is ErrorCode.DNS
    assert classify_sync_error("SSL certificate verify failed") is ErrorCode.TLS
    assert classify_sync_error("Connection refused") is ErrorCode.CONNECTION
    assert classify_sync_error("502 Bad Gateway") is ErrorCode.SERVER_ERROR
    assert classify_sync_error(None) is ErrorCode.SERVER_ERROR


async def test_graceful_stop_finishes_the_pass_in_flight(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Stopping while checks run lets them finish (within the deadline) and writes them."""
    registry, _ = fakes
    items = await seed(store, 5, delay_s=0.5)
    scheduler = Scheduler(store, registry, options=SchedulerOptions(tick_s=30))
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(0.2)  # the checks are in flight
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, timeout=5)
    assert time.monotonic() - started < registry.settings.timeout_s + 0.5
    for item in items:
        assert len(await store.list_history(item.integration_id)) == 1


async def test_passes_overlap_so_a_hung_check_holds_up_no_other_pass(store: Store) -> None:
    """A check that hangs until its deadline holds up only itself: the next passes plan and
    run while it waits (one hung check per batch of four would otherwise cost a deadline per
    pass), no check runs twice, and stopping lets what runs finish."""
    registry, check, _ = fake_registry(settings=Settings(timeout_s=1.0, concurrency=10))
    org = uuid.uuid4()
    hung = {50, 150, 250, 350}  # in the middle of each batch of 100 (planned in id order)
    items = [
        FakeConfig(
            integration_id=uuid.UUID(int=i + 1),
            org_id=org,
            name=f"fake-{i}",
            outcome="hang" if i in hung else "healthy",
        )
        for i in range(400)
    ]
    await store.import_definitions([Organization(org, "Org")], [], to_records(items))
    scheduler = Scheduler(store, registry, options=SchedulerOptions(batch_size=100, tick_s=30))
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        while len(await store.list_statuses()) < 400:
            assert time.monotonic() - started < 10, "the checks did not all finish"
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    # one deadline (1 s) in all, not one per batch (4 s)
    assert elapsed < 2.5, f"400 checks with 4 hung ones took {elapsed:.1f} s"
    assert len(check.calls) == 400
    statuses = {s.integration_id: s for s in await store.list_statuses()}
    for i, item in enumerate(items):
        assert len(await store.list_history(item.integration_id)) == 1
        expected = HealthStatus.UNREACHABLE if i in hung else HealthStatus.HEALTHY
        assert statuses[item.integration_id].status is expected


async def test_warm_up_calls_checks_due_soon(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Checks due within the warm-up horizon get their warm_up call before their slot."""
    registry, check = fakes
    warmed: list[uuid.UUID] = []

    async def warm_up(org_id: uuid.UUID, config: FakeConfig) -> None:
        warmed.append(config.integration_id)

    check.warm_up = warm_up  # type: ignore[attr-defined]
    [item] = await seed(store, 1)
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock, options=SchedulerOptions(warmup_s=30))
    async with registry:
        await scheduler.run_pass()
        warmed.clear()
        [status] = await store.list_statuses(item.org_id)
        assert status.next_check_at is not None
        clock.at = status.next_check_at - timedelta(seconds=20)
        report = await scheduler.run_pass()
    assert report.ran == 0
    assert warmed == [item.integration_id]


class CountingPrunes:
    """Wraps a store and records each prune_runs call (the store itself does the work)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[datetime] = []
        self.deleted = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def prune_runs(self, before: datetime, *, limit: int = 10_000) -> int:
        self.calls.append(before)
        count = await self.inner.prune_runs(before, limit=limit)
        self.deleted += count
        return count


async def test_old_slot_runs_are_pruned_hourly(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Runs older than runs_retention_s are deleted, at most once an hour, and pruning never
    lets a slot run twice."""
    registry, check = fakes
    await seed(store, check_interval_s=900)
    counting = CountingPrunes(store)
    clock = Clock(T0)
    scheduler = Scheduler(counting, registry, clock=clock)  # type: ignore[arg-type]
    async with registry:
        await scheduler.run_pass()  # prunes (nothing yet), then not again within the hour
        clock.advance(minutes=15)
        await scheduler.run_pass()
        assert len(counting.calls) == 1 and counting.deleted == 0
        for _ in range(4 * 25):  # 25 hours of 15-minute slots
            clock.advance(minutes=15)
            await scheduler.run_pass()
    assert len(counting.calls) == 26
    assert counting.calls[-1] == T0 + timedelta(hours=1)  # the last prune, at T0 + 25 h
    # The first hour's runs (3 integrations x 4 slots) are gone; every later one is kept.
    assert counting.deleted == 3 * 4
    assert await store.prune_runs(T0 + timedelta(hours=1)) == 0
    assert await store.prune_runs(T0 + timedelta(hours=1, minutes=1)) == 3
    assert len(check.calls) == 3 * (2 + 100)


async def test_pruning_keeps_up_when_more_runs_age_out_per_hour_than_a_pass_deletes(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs age out faster than one pass's batches delete (here 24 an hour, 10 a pass): the
    round goes on at the following passes until it has caught up, so at most about an hour's
    runs past the retention are ever left, and no slot runs twice."""
    monkeypatch.setattr(scheduler_module, "_PRUNE_BATCH", 5)
    monkeypatch.setattr(scheduler_module, "_PRUNE_BATCHES", 2)
    registry, check = fakes
    await seed(store, 6, check_interval_s=900)
    counting = CountingPrunes(store)
    clock = Clock(T0)
    scheduler = Scheduler(counting, registry, clock=clock)  # type: ignore[arg-type]
    passes = 0
    async with registry:
        for _ in range(4 * 30):  # 30 hours of 15-minute slots
            await scheduler.run_pass()
            passes += 1
            clock.advance(minutes=15)
    assert len(check.calls) == 6 * passes  # each slot once
    retention = timedelta(seconds=scheduler.options.runs_retention_s)
    left = await store.prune_runs(clock() - retention, limit=1_000_000)
    assert counting.deleted >= 6 * 4 * 4  # the runs of hours 1-4 at least
    assert left <= 6 * 4  # an hour's runs at most (hourly rounds, caught up each time)
    assert len(counting.calls) > 30  # rounds went on over several passes


class FailingPrunes(CountingPrunes):
    """``prune_runs`` raises StoreError while ``failing`` is set."""

    failing = True

    async def prune_runs(self, before: datetime, *, limit: int = 10_000) -> int:
        self.calls.append(before)
        if self.failing:
            raise StoreError("the store refused the delete")
        return await self.inner.prune_runs(before, limit=limit)


async def test_a_failed_pruning_round_is_logged_and_tried_again_an_hour_later(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck], caplog: pytest.LogCaptureFixture
) -> None:
    """Pruning that fails logs a warning; checks go on; the next round starts an hour after
    the failed one, and succeeds."""
    registry, check = fakes
    await seed(store, 2, check_interval_s=900)
    failing = FailingPrunes(store)
    clock = Clock(T0)
    scheduler = Scheduler(failing, registry, clock=clock)  # type: ignore[arg-type]
    async with registry:
        with caplog.at_level(logging.WARNING):
            assert (await scheduler.run_pass()).ran == 2
        assert "pruning old slot runs failed: the store refused the delete" in caplog.text
        failing.failing = False
        for _ in range(4):  # 15, 30, 45, 60 minutes: the next round at 60
            clock.advance(minutes=15)
            await scheduler.run_pass()
    assert failing.calls == [T0 - timedelta(days=1), T0 + timedelta(hours=1) - timedelta(days=1)]
    assert len(check.calls) == 2 * 5


# -- results written while the batch still runs ----------------------------------------------


def gate_one(check: FakeCheck, held: uuid.UUID) -> tuple[asyncio.Event, list[uuid.UUID]]:
    """Make the fake check of ``held`` wait for the returned event; the list collects the
    integrations whose check has returned, in order."""
    gate = asyncio.Event()
    finished: list[uuid.UUID] = []
    original: Callable[[uuid.UUID, FakeConfig], Awaitable[HealthResult]] = check.check

    async def gated(org_id: uuid.UUID, config: FakeConfig) -> HealthResult:
        if config.integration_id == held:
            await gate.wait()
        result = await original(org_id, config)
        finished.append(config.integration_id)
        return result

    check.check = gated  # type: ignore[method-assign]
    return gate, finished


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(1000):  # generous: 10 s
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_results_are_written_while_the_batch_still_runs(store: Store) -> None:
    """With one check held back, the results of the others are in the store (in chunks of
    write_every) while the pass is still running; the held one lands after it ends."""
    registry, check, _ = fake_registry(settings=Settings(timeout_s=30, concurrency=100))
    fast = await seed(store, 6)
    [slow] = await seed(store, 1)
    gate, _finished = gate_one(check, slow.integration_id)
    options = SchedulerOptions(write_every=2)
    scheduler = Scheduler(store, registry, clock=Clock(T0), options=options)

    async def fast_written() -> bool:
        return [len(await store.list_history(i.integration_id)) for i in fast] == [1] * 6

    async with registry:
        task = asyncio.create_task(scheduler.run_pass())
        try:
            await wait_until(fast_written, "the fast checks' results to be stored")
            assert not task.done()  # the batch is still running
            assert await store.list_history(slow.integration_id) == []
        finally:
            gate.set()
        report = await task
    assert (report.ran, report.written, report.buffered) == (7, 7, 0)
    assert len(await store.list_history(slow.integration_id)) == 1
    assert len(check.calls) == 7


class DownAfterWrites:
    """Wraps a real store: after ``ok_writes`` successful ``record_results`` calls every
    further write raises :class:`StoreUnavailable` until ``down`` is cleared."""

    def __init__(self, inner: Store, ok_writes: int) -> None:
        self.inner = inner
        self.ok_writes = ok_writes
        self.write_calls = 0
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        self.write_calls += 1
        if self.write_calls > self.ok_writes:
            self.down = True
        if self.down:
            raise StoreUnavailable("PostgreSQL at postgresql://db/x is unavailable: refused")
        return await self.inner.record_results(writes)


@pytest.mark.parametrize("buffer_on_outage", [True, False])
async def test_an_outage_between_chunks_keeps_the_rest_exactly_once(
    store: Store, buffer_on_outage: bool
) -> None:
    """The store goes away after the first chunk: that chunk stays written, the failed chunk
    and every later one (the last result arrives after the outage) are buffered — or, without
    buffering, StoreUnavailable is raised once the whole batch has run. Either way every
    integration ends with exactly one history row and no check runs twice."""
    registry, check, _ = fake_registry(settings=Settings(timeout_s=30, concurrency=100))
    fast = await seed(store, 6)
    [slow] = await seed(store, 1)
    items = [*fast, slow]
    gate, finished = gate_one(check, slow.integration_id)
    flaky = DownAfterWrites(store, ok_writes=1)
    clock = Clock(T0)
    options = SchedulerOptions(write_every=2)
    scheduler = Scheduler(flaky, registry, clock=clock, options=options)  # type: ignore[arg-type]

    async def second_write_failed() -> bool:
        return flaky.write_calls >= 2

    async with registry:
        task = asyncio.create_task(scheduler.run_pass(buffer_on_outage=buffer_on_outage))
        try:
            await wait_until(second_write_failed, "the second chunk's write to fail")
            assert not task.done()
        finally:
            gate.set()  # the held check ends after the outage began
        if buffer_on_outage:
            report = await task
            assert (report.ran, report.written, report.buffered) == (7, 2, 5)
            assert scheduler.buffer_state().size == 5
        else:
            with pytest.raises(StoreUnavailable):
                await task
            assert len(finished) == 7  # raised after the batch finished, not before
            assert scheduler.buffer_state().size == 0
        assert flaky.write_calls == 2  # chunks after the failed one were not tried
        counts = [len(await store.list_history(i.integration_id)) for i in items]
        assert sorted(counts) == [0, 0, 0, 0, 0, 1, 1]
        assert counts[-1] == 0  # the held check's result came last
        flaky.down, flaky.ok_writes = False, 1_000
        if buffer_on_outage:
            report = await scheduler.run_pass(buffer_on_outage=True)
            assert (report.flushed, report.ran) == (5, 0)
            assert len(check.calls) == 7  # nothing ran twice
        else:  # the unwritten slots are claimed: they run again once their lease ends
            clock.advance(seconds=options.lease_s + 1)
            report = await scheduler.run_pass()
            assert (report.ran, report.written) == (5, 5)
    assert [len(await store.list_history(i.integration_id)) for i in items] == [1] * 7
    assert scheduler.buffer_state().size == 0


async def test_an_edited_integration_is_checked_with_its_new_config(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """The scheduler reuses parsed configs between passes only while the stored record is
    unchanged: after an edit, the next pass checks what the store now holds."""
    registry, _check = fakes
    [item] = await seed(store, 1)
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock)
    async with registry:
        assert (await scheduler.run_pass()).ran == 1
        [before] = await store.list_statuses(item.org_id)
        assert before.status is HealthStatus.HEALTHY
        edited = item.model_copy(update={"outcome": "unreachable", "message": "edited config"})
        await store.import_definitions([Organization(item.org_id, "Org")], [], to_records([edited]))
        clock.advance(minutes=15, seconds=1)
        report = await scheduler.run_pass()
    assert report.ran == 1
    [after] = await store.list_statuses(item.org_id)
    assert after.status is HealthStatus.UNREACHABLE
    assert "edited config" in (after.error or "")


async def test_unchanged_records_are_parsed_once_across_passes(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning and warm-up read the same due records pass after pass; each unchanged record
    is validated once, not once per read."""
    registry, _check = fakes
    items = await seed(store, 5)
    parsed: list[uuid.UUID] = []
    original = registry.from_record

    def counting(record: Any) -> Any:
        parsed.append(record.integration_id)
        return original(record)

    monkeypatch.setattr(registry, "from_record", counting)
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock)
    async with registry:
        for _ in range(3):
            await scheduler.run_pass()
            clock.advance(minutes=15, seconds=1)
    assert sorted(parsed) == sorted(i.integration_id for i in items)  # once each


async def test_the_parse_cache_is_bounded_by_the_batch_size(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """The cache holds at most two batches of due rows, however many integrations; it evicts
    the rows read longest ago, so a row still due is not parsed again."""
    registry, _check = fakes
    await seed(store, 30)
    parsed: list[uuid.UUID] = []
    original = registry.from_record

    def counting(record: Any) -> Any:
        parsed.append(record.integration_id)
        return original(record)

    registry.from_record = counting  # type: ignore[method-assign]
    scheduler = Scheduler(store, registry, clock=Clock(T0), options=SchedulerOptions(batch_size=2))
    async with registry:
        for _ in range(15):
            report = await scheduler.run_pass()
            assert report.ran == 2
            assert len(scheduler._parsed) <= 2 * 2  # the bound under test
    assert len(parsed) == len(set(parsed)) == 30  # each record parsed once: no thrashing


async def test_a_paused_type_filling_the_window_does_not_hold_up_other_types(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Ten due checks of a paused type sort before three of another type and fill the due
    window (a batch of 2): the pass reads on without the paused type and runs the others, and
    the report still counts what the pause held back."""
    registry, _check = fakes
    org = uuid.uuid4()
    paused_items = [
        FakeConfig(integration_id=uuid.UUID(int=i + 1), org_id=org, name=f"paused-{i}")
        for i in range(10)
    ]
    other_items = [
        BlockingFakeConfig(integration_id=uuid.UUID(int=2**127 + i), org_id=org, name=f"o-{i}")
        for i in range(3)
    ]
    await store.import_definitions(
        [Organization(org, "Org")], [], to_records([*paused_items, *other_items])
    )
    await store.set_type_mode(
        TypeMode("fake", T0 + timedelta(hours=1), "test pause", T0), integration_type="fake"
    )
    scheduler = Scheduler(store, registry, clock=Clock(T0), options=SchedulerOptions(batch_size=2))
    async with registry:
        report = await scheduler.run_pass()
        assert report.ran == 2
        assert {o.integration.integration_type for o in report.outcomes} == {"fake_blocking"}
        assert report.paused == {"fake": 2}  # those the first window held
        assert (await scheduler.run_pass()).ran == 1  # the third one
        assert (await scheduler.run_pass()).ran == 0  # only paused ones are left


async def test_integrations_switched_from_passive_do_not_hold_up_other_checks(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """25 passive integrations whose sync system reported a moment ago are switched to active
    (their status rows have no next_check_at): they are not probed within the floor of those
    outcomes, and — more than the due window (a batch of 10) and its read-on (two batches) —
    they do not fill it and hold up another integration's check that is due; once the floor
    has passed, they run."""
    registry, check = fakes
    org = uuid.uuid4()
    clock = Clock(T0)
    [other] = await seed(store, 1)
    scheduler = Scheduler(store, registry, clock=clock, options=SchedulerOptions(batch_size=10))
    async with registry:
        assert (await scheduler.run_pass()).ran == 1
        clock.advance(minutes=16)  # `other` is due again
        synced = await seed(store, 25, org=org, monitoring_mode=MonitoringMode.PASSIVE)
        for item in synced:
            await record_sync_outcome(org, item.integration_id, ok=True, store=store, at=clock())
        active = [i.model_copy(update={"monitoring_mode": MonitoringMode.ACTIVE}) for i in synced]
        await store.import_definitions([Organization(org, "Org")], [], to_records(active))
        clock.advance(minutes=1)
        check.calls.clear()
        report = await scheduler.run_pass()
        assert [o.integration.integration_id for o in report.outcomes] == [other.integration_id]
        clock.advance(minutes=14)  # 15 minutes after the sync outcomes
        while (await scheduler.run_pass()).ran:
            pass
    probed = [c.integration_id for c in check.calls]
    assert sorted(probed[1:]) == sorted(i.integration_id for i in synced)


async def test_checks_held_by_their_floor_do_not_hold_up_the_checks_after_them(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """15 Xledger integrations (floor 30 min) switched from passive, their sync outcomes 20 min
    old, are listed as due (the store applies the general floor, 15 min) but held back by the
    planner: they fill the window (a batch of 10), so the pass reads on and runs the check due
    after them."""
    registry, _check = fakes
    org = uuid.uuid4()
    clock = Clock(T0)
    [other] = await seed(store, 1)
    scheduler = Scheduler(store, registry, clock=clock, options=SchedulerOptions(batch_size=10))
    async with registry:
        assert (await scheduler.run_pass()).ran == 1
        held = [
            XledgerConfig(
                integration_id=uuid.uuid4(),
                org_id=org,
                name=f"xledger-{i}",
                probe="network",
                monitoring_mode=MonitoringMode.PASSIVE,
            )
            for i in range(15)
        ]
        await store.import_definitions([Organization(org, "Org")], [], to_records(held))
        for item in held:
            await record_sync_outcome(org, item.integration_id, ok=True, store=store, at=clock())
        active = [i.model_copy(update={"monitoring_mode": MonitoringMode.ACTIVE}) for i in held]
        await store.import_definitions([Organization(org, "Org")], [], to_records(active))
        clock.advance(minutes=20)
        assert len(await store.list_due(clock(), limit=10)) == 10  # all of them Xledger ones
        report = await scheduler.run_pass()
    assert [o.integration.integration_id for o in report.outcomes] == [other.integration_id]


async def test_an_integration_switched_back_to_active_is_checked_again(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Active, then passive (sync outcomes), then active again within a day: its next slot is
    the one its last probe scheduled (sync outcomes keep it), not the initial slot its first
    check already completed — a slot done is never claimed again."""
    registry, check = fakes
    org = uuid.uuid4()
    [item] = await seed(store, 1, org=org)
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock)
    async with registry:
        assert (await scheduler.run_pass()).ran == 1
        passive = item.model_copy(update={"monitoring_mode": MonitoringMode.PASSIVE})
        await store.import_definitions([Organization(org, "Org")], [], to_records([passive]))
        clock.advance(minutes=30)
        await record_sync_outcome(org, item.integration_id, ok=True, store=store, at=clock())
        await store.import_definitions([Organization(org, "Org")], [], to_records([item]))
        clock.advance(minutes=20)
        report = await scheduler.run_pass()
    assert (report.ran, report.skipped_claims) == (1, 0)
    assert len(check.calls) == 2


async def test_sync_outcomes_of_active_integrations_do_not_hold_up_other_checks(
    store: Store, fakes: tuple[CheckRegistry, FakeCheck]
) -> None:
    """Active integrations whose sync system reports outcomes every 5 minutes are not probed
    within the floor of those outcomes — and, however many they are, they do not fill the due
    window and starve another organisation's checks that are due."""
    registry, check = fakes
    busy = await seed(store, 25)  # more than the due window (a batch of 10), read on twice
    clock = Clock(T0)
    scheduler = Scheduler(store, registry, clock=clock, options=SchedulerOptions(batch_size=10))
    async with registry:
        while (await scheduler.run_pass()).ran:
            pass
        [other] = await seed(store, 1)
        clock.advance(minutes=1)
        assert (await scheduler.run_pass()).ran == 1  # `other` is due 1 min after the busy ones
        check.calls.clear()
        for _ in range(6):  # 30 minutes: `other` is due twice; the busy ones keep syncing
            clock.advance(minutes=5)
            for item in busy:
                await record_sync_outcome(
                    item.org_id, item.integration_id, ok=True, store=store, at=clock()
                )
            while (await scheduler.run_pass()).ran:
                pass
    probed = [c.integration_id for c in check.calls]
    assert probed.count(other.integration_id) == 2
    assert not set(probed) & {i.integration_id for i in busy}  # each synced within the floor


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budgets_per_minute": {"xledger": 0}}, "the budget of 'xledger' must be at least 1"),
        ({"write_every": 0}, "write_every must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"buffer_limit": 0}, "buffer_limit must be at least 1"),
        ({"runs_retention_s": 10.0}, "runs_retention_s must be at least lease_s"),
        ({"rate_limit_threshold": 0}, "rate_limit_threshold must be at least 1"),
        ({"rate_limit_window": timedelta(0)}, "must be positive"),
        ({"rate_limit_cooldown": timedelta(seconds=-1)}, "must be positive"),
    ],
)
def test_options_out_of_range_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulerOptions(**options)


async def test_wait_below_wakes_once_the_checks_in_flight_fall_below_the_limit(
    store: Store,
) -> None:
    """A waiter is woken when fewer than its limit are in flight — not earlier, at checks
    ending above it — and a cancelled waiter leaves the others working."""
    registry, _, _ = fake_registry(settings=Settings(timeout_s=5.0, concurrency=10))
    org = uuid.uuid4()
    items = [  # end one after another, 80 ms apart
        FakeConfig(integration_id=uuid.uuid4(), org_id=org, name=f"f{i}", delay_s=0.08 * (i + 1))
        for i in range(6)
    ]
    await store.import_definitions([Organization(org, "Org")], [], to_records(items))
    scheduler = Scheduler(store, registry, options=SchedulerOptions(tick_s=30))
    await scheduler.wait_below(1)  # nothing in flight: at once
    async with registry:
        task = asyncio.create_task(scheduler.run_pass())
        while scheduler.in_flight < 6:
            await asyncio.sleep(0.005)
        cancelled = asyncio.create_task(scheduler.wait_below(5))
        await asyncio.sleep(0)
        cancelled.cancel()
        seen: list[int] = []

        async def wait(limit: int) -> None:
            await scheduler.wait_below(limit)
            seen.append(scheduler.in_flight)

        started = time.monotonic()
        await asyncio.gather(wait(3), wait(5))
        elapsed = time.monotonic() - started
        assert seen == [4, 2]  # each woke as the count fell below its limit, not before
        assert elapsed >= 0.3  # the 4th check ended at 0.32 s
        await task
    assert cancelled.cancelled()
    assert scheduler.in_flight == 0
