"""Distributed workers on real PostgreSQL: every (integration, slot) runs exactly once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
import pytest

from integration_health import Settings
from integration_health.adapters.http import HttpConfig
from integration_health.checks import CheckRegistry
from integration_health.integrations_file import to_records
from integration_health.model import HealthStatus, utcnow
from integration_health.policy import IntegrationState
from integration_health.scheduling import SchedulerOptions, distributed
from integration_health.scheduling.distributed import (
    MAX_QUEUED,
    MIN_QUEUED,
    PLANNED_FOR_S,
    QUEUE,
    FeedPace,
    LocalBatch,
    PlanLock,
    WorkerRuntime,
    build_app,
    decode_checks,
    default_jobs,
    delete_succeeded,
    encode_checks,
    ensure_procrastinate_schema,
    fail_stalled,
    feed,
    make_runtime,
    plan_and_defer,
    plan_now,
    plan_once,
    queue_depth,
    queue_limit,
    run_batch,
    run_batch_job,
    set_runtime,
)
from integration_health.scheduling.planner import PlannedCheck
from integration_health.scheduling.scheduler import PassReport
from integration_health.store import Organization
from integration_health.store.base import INITIAL_SLOT
from integration_health.store.postgres import PostgresStore
from integration_health.testing import (
    FakeCheck,
    FakeConfig,
    HttpEndpointFake,
    fake_registry,
)
from tests.store.conftest import admin_connect, database_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"ih_test_{uuid.uuid4().hex[:16]}"
    with admin_connect() as admin:
        admin.execute(f'create database "{name}"')
    try:
        yield database_url(name)
    finally:
        with admin_connect() as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def batches_of_50(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs of 50 checks, as these tests' numbers were written for (the default is 200)."""
    monkeypatch.setattr(distributed, "BATCH_SIZE", 50)


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_url)
    await store.upgrade()
    yield store
    await store.aclose()


async def _worker_runtime(
    store: PostgresStore, count: int, *, lease_s: float
) -> tuple[CheckRegistry, FakeCheck, list[FakeConfig]]:
    """``count`` fake integrations of one organisation in ``store``, and the worker runtime
    (a fake registry, ``lease_s``) installed for the tasks; returns the registry, its fake
    check and the integrations."""
    registry, check, _ = fake_registry(settings=Settings(timeout_s=2))
    org = uuid.uuid4()
    items = [
        FakeConfig(integration_id=uuid.uuid4(), org_id=org, name=f"f{i}") for i in range(count)
    ]
    await store.import_definitions([Organization(org, "Org")], [], to_records(items))
    set_runtime(make_runtime(store, registry, SchedulerOptions(lease_s=lease_s)))
    return registry, check, items


@pytest.mark.usefixtures("batches_of_50")
async def test_batches_run_once_even_when_duplicated_or_abandoned(pg_store: PostgresStore) -> None:
    """A batch run twice writes once; a batch whose worker died is re-planned after its lease.

    Planned 40 s ago by this process's clock, with a lease of 30 s: the planned batches are
    too old to run without renewing their claims, the re-planned one is not."""
    registry, check, items = await _worker_runtime(pg_store, 120, lease_s=30)
    deferred: list[dict[str, Any]] = []

    async def defer(*jobs: dict[str, Any]) -> None:
        deferred.extend(jobs)

    try:
        async with registry:
            now = utcnow() - timedelta(seconds=40)
            report = await plan_and_defer(defer, at=now)
            assert report.due == 120 and len(deferred) == 3  # batches of 50
            # planning again right away finds every slot claimed: nothing new deferred
            await plan_and_defer(defer, at=now + timedelta(seconds=1))
            assert len(deferred) == 3
            first, second, lost = deferred
            assert (await run_batch(**first)).written == 50
            assert (await run_batch(**first)).written == 0  # duplicate delivery of the job
            assert (await run_batch(**second)).written == 50
            # the third batch's worker "died": after the lease its slots are planned again
            await plan_and_defer(defer, at=now + timedelta(seconds=31))
            assert len(deferred) == 4
            assert (await run_batch(**deferred[3])).written == 20
            assert (await run_batch(**lost)).written == 0  # the dead worker's batch, late
    finally:
        set_runtime(None)
    assert len(check.calls) == 120
    for item in items:
        assert len(await pg_store.list_history(item.integration_id)) == 1


async def test_a_budget_holds_whichever_worker_plans(pg_store: PostgresStore) -> None:
    """The planning task moves between workers from tick to tick; a type's per-minute budget
    counts every worker's claims (each worker's planner used to count only its own, so N
    workers could start N budgets' worth in a minute)."""
    registry, check, _items = await _worker_runtime(pg_store, 100, lease_s=600)
    # a lease long enough that no batch renews its claims (a renewal counts as a start)
    options = SchedulerOptions(lease_s=600, budgets_per_minute={"fake": 30})
    deferred: list[dict[str, Any]] = []

    async def defer(*jobs: dict[str, Any]) -> None:
        deferred.extend(jobs)

    async def plan_on(worker: int, at: datetime) -> int:
        """Plan on ``worker`` at ``at`` and run the batches it queued; how many it planned."""
        set_runtime(runtimes[worker])
        due = (await plan_and_defer(defer, at=at)).due
        while deferred:
            assert (await run_batch(**deferred.pop())).skipped_claims == 0
        return due

    runtimes = [make_runtime(pg_store, registry, options) for _ in range(3)]
    at = utcnow() - timedelta(minutes=3)
    try:
        async with registry:
            planned = [await plan_on(0, at), await plan_on(1, at + timedelta(seconds=10))]
            planned.append(await plan_on(2, at + timedelta(seconds=50)))
            planned.append(await plan_on(1, at + timedelta(seconds=61)))
            planned.append(await plan_on(2, at + timedelta(seconds=62)))
    finally:
        set_runtime(None)
    assert planned == [30, 0, 0, 30, 0]
    assert len(check.calls) == 60


@pytest.mark.parametrize("lease_s", [60.0, 3.0], ids=["young-claims", "claims-renewed"])
@pytest.mark.usefixtures("batches_of_50")
async def test_a_batch_run_where_it_was_planned_uses_the_planned_integrations(
    pg_store: PostgresStore, pg_url: str, lease_s: float
) -> None:
    """The process that planned a batch runs it with the integrations it planned (no second
    read); another process reads them from the store. Nothing is written for an integration
    deleted after planning, and the rest of its batch runs.

    With a lease long enough for the claims to outlast the batch (60 s, a 2 s deadline), the
    planning process checks the deleted integration as planned, as the single-machine
    scheduler would; with a short one (3 s) it renews the claims, which finds it deleted."""
    registry, check, items = await _worker_runtime(pg_store, 150, lease_s=lease_s)
    deferred: list[dict[str, Any]] = []

    async def defer(*jobs: dict[str, Any]) -> None:
        deferred.extend(jobs)

    try:
        async with registry:
            await plan_and_defer(defer, at=utcnow())
            assert len(deferred) == 3
            batches = [[q.integration_id for q in decode_checks(j["checks"])] for j in deferred]
            edited, deleted, other_edited = (b[0] for b in batches)
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                for integration_id in (edited, other_edited):
                    await conn.execute(
                        "update public.integrations set config = config || "
                        '\'{"outcome": "unreachable"}\' where id = %s',
                        (integration_id,),
                    )
                await conn.execute("delete from public.integrations where id = %s", (deleted,))
            # this process planned the first two batches: it runs them as planned, less
            # the deleted integration
            assert (await run_batch(**deferred[0])).written == 50
            assert (await run_batch(**deferred[1])).written == 49
            # another process (its own runtime, nothing planned there) reads the third
            set_runtime(make_runtime(pg_store, registry, SchedulerOptions(lease_s=lease_s)))
            assert (await run_batch(**deferred[2])).written == 50
    finally:
        set_runtime(None)
    assert len(check.calls) == (150 if lease_s == 60 else 149)
    assert deleted in {i.integration_id for i in items}
    statuses = {s.integration_id: s.status for s in await pg_store.list_statuses()}
    assert deleted not in statuses
    assert statuses[edited] is HealthStatus.HEALTHY  # as planned
    assert statuses[other_edited] is HealthStatus.UNREACHABLE  # as read by the other process


async def _one_batch(
    store: PostgresStore, settings: Settings, fields: Callable[[int], dict[str, Any]]
) -> tuple[CheckRegistry, FakeCheck, WorkerRuntime, list[FakeConfig], dict[str, Any]]:
    """50 fake integrations (``fields(i)`` each), the worker runtime installed, and the one
    planned, claimed batch job that holds them all."""
    registry, check, _ = fake_registry(settings=settings)
    org = uuid.uuid4()
    items = [
        FakeConfig(integration_id=uuid.uuid4(), org_id=org, name=f"f{i}", **fields(i))
        for i in range(50)
    ]
    await store.import_definitions([Organization(org, "Org")], [], to_records(items))
    runtime = make_runtime(store, registry, SchedulerOptions(lease_s=60))
    set_runtime(runtime)
    deferred: list[dict[str, Any]] = []

    async def defer(*jobs: dict[str, Any]) -> None:
        deferred.extend(jobs)

    await plan_and_defer(defer, at=utcnow())
    assert len(deferred) == 1
    return registry, check, runtime, items, deferred[0]


async def test_a_job_ends_before_a_hung_check_and_the_batch_is_still_written(
    pg_store: PostgresStore,
) -> None:
    """A batch with a hung host gives its job slot back once the process has lanes to spare;
    the hung check ends at its deadline in the background and the whole batch is written,
    each slot once. drain() waits for it."""
    registry, check, runtime, items, job = await _one_batch(
        pg_store,
        Settings(timeout_s=1.0, concurrency=100),
        lambda i: {"outcome": "hang" if i == 7 else "healthy"},
    )
    try:
        async with registry:
            started = time.monotonic()
            assert await run_batch_job(**job) is None  # went on in the background
            assert time.monotonic() - started < 0.8  # before the 1 s deadline
            assert len(runtime.background) == 1
            assert runtime.scheduler.in_flight == 1  # the hung check
            await runtime.drain()
            assert time.monotonic() - started >= 1.0
            assert not runtime.background and runtime.scheduler.in_flight == 0
    finally:
        set_runtime(None)
    assert len(check.calls) == 50
    statuses = {s.integration_id: s.status for s in await pg_store.list_statuses()}
    assert statuses[items[7].integration_id] is HealthStatus.UNREACHABLE
    assert sum(status is HealthStatus.HEALTHY for status in statuses.values()) == 49
    for item in items:
        assert len(await pg_store.list_history(item.integration_id)) == 1


async def test_a_job_keeps_its_slot_while_the_process_is_at_capacity(
    pg_store: PostgresStore,
) -> None:
    """With every lane busy a job waits for its batch (no more batches are taken than the
    process can run): it ends only once fewer checks than the concurrency are in flight."""
    registry, check, runtime, items, job = await _one_batch(
        pg_store, Settings(timeout_s=5.0, concurrency=10), lambda i: {"delay_s": 0.1}
    )
    try:
        async with registry:
            started = time.monotonic()
            report = await run_batch_job(**job)
            elapsed = time.monotonic() - started
            in_flight = runtime.scheduler.in_flight
            await runtime.drain()
    finally:
        set_runtime(None)
    # 50 checks of 0.1 s in 10 lanes: the job held on until at most 9 were left (≥ 0.4 s)
    assert in_flight < 10
    assert elapsed >= 0.4, f"the job ended after {elapsed:.2f} s with all lanes busy"
    if report is not None:  # it may also have lasted to the end of the batch
        assert report.written == 50
    assert len(check.calls) == 50
    for item in items:
        assert len(await pg_store.list_history(item.integration_id)) == 1


def test_planned_batches_are_forgotten_after_a_while() -> None:
    """Batches planned here but taken by another worker do not pile up: entries older than
    PLANNED_FOR_S go at the next plan; queueing one again renews it; a batch is taken once,
    under the key it was queued with, and not once it is older than PLANNED_FOR_S."""
    registry, _check, _ = fake_registry(settings=Settings(timeout_s=2))
    runtime = make_runtime(cast(Any, None), registry)

    def batch(queued_at: float) -> LocalBatch:
        return LocalBatch("plan:1", [], {}, queued_at=queued_at)

    runtime.remember({"a": batch(100.0), "b": batch(100.0)})
    runtime.remember({"a": batch(100.0 + PLANNED_FOR_S)})  # renewed
    assert set(runtime.planned) == {"a", "b"}
    runtime.remember({"c": batch(100.0 + PLANNED_FOR_S + 0.5)})
    assert set(runtime.planned) == {"a", "c"}
    assert runtime.take("plan:1", "c", now=100.0 + PLANNED_FOR_S + 1) is not None
    assert runtime.take("plan:1", "c", now=100.0 + PLANNED_FOR_S + 1) is None  # taken once
    assert runtime.take("plan:1", "a", now=100.0 + 2 * PLANNED_FOR_S + 0.1) is None  # too old
    runtime.remember({"d": batch(200.0)})
    assert runtime.take("plan:2", "d", now=200.0) is None  # queued under another key
    assert runtime.planned == {}


@pytest.mark.usefixtures("batches_of_50")
async def test_claims_young_enough_to_outlast_the_batch_are_not_renewed(
    pg_store: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch keeps the claims made when it was planned (no renewal) while half the lease is
    left after the deadline, whichever process runs it; an older one renews them, and so does
    a batch whose key does not tell its claim time (planned by an earlier version). The claim
    time of the slots shows which."""
    registry, check, _items = await _worker_runtime(pg_store, 200, lease_s=60)
    deferred: list[dict[str, Any]] = []

    async def defer(*jobs: dict[str, Any]) -> None:
        deferred.extend(jobs)

    async def claimed_at(job: dict[str, Any]) -> set[datetime]:
        ids = [q.integration_id for q in decode_checks(job["checks"])]
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cursor = await conn.execute(
                "select distinct claimed_at from public.integration_check_runs "
                "where integration_id = any(%s) and state = 'done'",
                (ids,),
            )
            return {row[0] for row in await cursor.fetchall()}

    try:
        async with registry:
            planned_at = utcnow() - timedelta(seconds=20)  # 60 / 2 - 2 = 28 s: young
            await plan_and_defer(defer, at=planned_at, max_checks=100)
            old_at = utcnow() - timedelta(seconds=29)  # older than 28 s
            await plan_and_defer(defer, at=old_at, max_checks=50)
            with monkeypatch.context() as patch:  # a key as earlier versions made them
                patch.setattr(distributed, "plan_key", lambda at: f"plan:{uuid.uuid4().hex}")
                await plan_and_defer(defer, at=planned_at, max_checks=50)
            young, other, old, legacy = deferred
            assert (await run_batch(**young)).written == 50
            assert (await run_batch(**old)).written == 50
            # another process (its own runtime, nothing planned there)
            set_runtime(make_runtime(pg_store, registry, SchedulerOptions(lease_s=60)))
            assert (await run_batch(**other)).written == 50
            assert (await run_batch(**legacy)).written == 50
    finally:
        set_runtime(None)
    assert len(check.calls) == 200
    assert await claimed_at(young) == {planned_at}
    assert await claimed_at(other) == {planned_at}
    (renewed,) = await claimed_at(old)
    assert renewed > old_at + timedelta(seconds=25)
    (renewed,) = await claimed_at(legacy)
    assert renewed > planned_at + timedelta(seconds=15)


def test_plan_keys_carry_their_claim_time() -> None:
    """The claim time rides in a plan key; keys without one (earlier versions) or with a
    malformed one tell nothing."""
    at = datetime(2026, 11, 30, 0, 55, 1, 234567, tzinfo=UTC)
    key = distributed.plan_key(at)
    assert key.startswith("plan:") and distributed.claimed_at(key) == at
    assert distributed.plan_key(at) != key  # fresh each time
    assert distributed.claimed_at("plan:0123abcd") is None
    assert distributed.claimed_at("plan:0123abcd@yesterday") is None
    assert distributed.claimed_at("plan:0123abcd@2026-11-30T00:55:01") is None  # naive


def test_checks_travel_as_one_string_and_back() -> None:
    """encode_checks/decode_checks keep ids, slots, due times and previous states exactly
    (none, partial, full), with no quote in the string (nothing for JSON to escape)."""
    org = uuid.uuid4()
    at = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    items = [FakeConfig(integration_id=uuid.uuid4(), org_id=org, name=f"f{i}") for i in range(3)]
    planned = [
        PlannedCheck(items[0], slot_at=INITIAL_SLOT, due_at=INITIAL_SLOT),
        PlannedCheck(items[1], slot_at=at, due_at=at + timedelta(seconds=90)),
        PlannedCheck(items[2], slot_at=at, due_at=at),
    ]
    previous = {
        items[1].integration_id: IntegrationState(
            status=HealthStatus.UNREACHABLE,
            checked_at=at - timedelta(minutes=15),
            consecutive_failures=3,
            last_healthy_at=None,
            next_check_at=at,
        ),
        items[2].integration_id: IntegrationState(
            status=HealthStatus.HEALTHY,
            checked_at=at - timedelta(minutes=15),
            consecutive_failures=0,
            last_healthy_at=at - timedelta(minutes=15),
            next_check_at=None,
        ),
    }
    text = encode_checks(planned, previous)
    assert '"' not in text and "\\" not in text
    decoded = decode_checks(text)
    assert [(q.integration_id, q.slot_at, q.due_at, q.previous) for q in decoded] == [
        (
            p.integration.integration_id,
            p.slot_at,
            p.due_at,
            previous.get(p.integration.integration_id),
        )
        for p in planned
    ]
    assert decode_checks("") == []


async def test_jobs_queued_in_the_older_form_still_run(pg_store: PostgresStore) -> None:
    """A run_batch job deferred by an earlier worker (``items``: a dict per check) runs."""
    registry, check, items = await _worker_runtime(pg_store, 2, lease_s=30)
    checked_at = utcnow() - timedelta(minutes=20)
    old = [
        {
            "integration_id": str(items[0].integration_id),
            "slot_at": INITIAL_SLOT.isoformat(),
            "due_at": INITIAL_SLOT.isoformat(),
            "previous": None,
        },
        {
            "integration_id": str(items[1].integration_id),
            "slot_at": INITIAL_SLOT.isoformat(),
            "due_at": INITIAL_SLOT.isoformat(),
            "previous": {
                "status": "unreachable",
                "checked_at": checked_at.isoformat(),
                "consecutive_failures": 2,
                "last_healthy_at": None,
                "next_check_at": None,
            },
        },
    ]
    try:
        async with registry:
            assert (await run_batch("batch:old", items=old)).written == 2
    finally:
        set_runtime(None)
    assert len(check.calls) == 2
    for item in items:
        assert len(await pg_store.list_history(item.integration_id)) == 1


def test_default_jobs_keep_two_batches_in_flight() -> None:
    """Enough jobs for the concurrency setting twice over (one batch writes while the next
    runs), one for the planner, at most 64 — in batches of 200 checks."""
    assert distributed.BATCH_SIZE == 200
    assert [default_jobs(c) for c in (1, 200, 201, 1_000, 100_000)] == [3, 3, 5, 11, 64]


def test_queue_limit() -> None:
    """Twice the running batches may wait, at least MIN_QUEUED, at most MAX_QUEUED."""
    assert queue_limit(0) == MIN_QUEUED
    assert queue_limit(10) == 20
    assert queue_limit(10_000) == MAX_QUEUED


@pytest.mark.usefixtures("batches_of_50")
async def test_feed_plans_on_while_the_queue_has_room(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One planning tick keeps the queue topped up, moving on past the slots queued batches
    hold (never planning a check twice), and never queues more than its target (which follows
    the measured pace, so it is read, not predicted: it varies with the machine's timing)."""
    registry, check, items = await _worker_runtime(pg_store, 630, lease_s=60)
    targets: list[int] = []
    measured = FeedPace.target

    def target(pace: FeedPace, running: int, horizon_s: float) -> int:
        targets.append(measured(pace, running, horizon_s))
        return targets[-1]

    monkeypatch.setattr(FeedPace, "target", target)
    waiting: list[dict[str, Any]] = []
    deferred = 0
    most_waiting = 0
    ran: list[int] = []

    async def defer(*jobs: dict[str, Any]) -> None:
        nonlocal deferred, most_waiting
        waiting.extend(jobs)
        deferred += len(jobs)
        most_waiting = max(most_waiting, len(waiting))

    async def queue_depth() -> tuple[int, int]:
        # a worker takes one batch each time the planner looks at the queue
        if waiting:
            ran.append((await run_batch(**waiting.pop(0))).written)
            return len(waiting), 1
        return 0, 0

    try:
        async with registry:
            report = await feed(defer, queue_depth, budget_s=30, poll_s=0.001)
            assert report.due == 630
            while waiting:
                ran.append((await run_batch(**waiting.pop(0))).written)
    finally:
        set_runtime(None)
    assert targets
    assert most_waiting <= max(targets)
    assert deferred == 13  # 630 checks in batches of 50, each planned once
    assert sum(ran) == 630
    assert len(check.calls) == 630
    for item in items:
        assert len(await pg_store.list_history(item.integration_id)) == 1


def test_feed_pace_measures_how_fast_batches_are_taken() -> None:
    """The rate is the batches that left the queue between two looks over the time between
    them; it is smoothed, doubled when the queue was found empty, and the target it gives is
    at least queue_limit(running) and at most MAX_QUEUED."""
    pace = FeedPace()
    pace.look(0, now=10.0)
    assert (pace.rate, pace.taken) == (0.0, None)
    assert pace.target(running=3, horizon_s=0.4) == queue_limit(3)
    pace.queued(20)
    pace.look(12, now=10.5)  # 8 of the 20 taken in 0.5 s
    assert (pace.taken, pace.rate, pace.interval_s) == (8, 16.0, 0.5)
    assert pace.target(running=0, horizon_s=1.0) == 16
    pace.look(4, now=11.0)  # 8 more in 0.5 s, nothing queued meanwhile
    assert (pace.taken, pace.rate) == (8, 16.0)
    pace.queued(4)
    pace.look(0, now=11.5)  # all 8 taken: starved, they could have taken more
    assert (pace.taken, pace.rate) == (8, 32.0)
    assert pace.target(running=0, horizon_s=0.4) == 13  # ceil(32 x 0.4)
    assert pace.target(running=100, horizon_s=0.4) == queue_limit(100)
    assert pace.target(running=0, horizon_s=3_600) == MAX_QUEUED
    pace.look(0, now=12.0)  # nothing queued, nothing taken: the rate halves
    assert (pace.taken, pace.rate) == (0, 16.0)
    pace.look(0, now=12.0)  # no time passed: nothing measured
    assert (pace.taken, pace.rate) == (0, 16.0)
    pace.queued(2, all_due=True)
    pace.look(0, now=12.5)  # empty, but the plan held every due check: not starved
    assert (pace.taken, pace.rate) == (2, 10.0)
    for i in range(2_000):  # workers always ahead of a planner that always finds more
        pace.queued(1)
        pace.look(0, now=13.0 + i)
    assert pace.rate <= 10 * MAX_QUEUED
    assert pace.target(running=0, horizon_s=1.0) == MAX_QUEUED


async def test_feed_keeps_fast_workers_busy(pg_store: PostgresStore) -> None:
    """Workers that take six batches between two looks of the planner (short checks) find
    batches waiting at nearly every look: the queue follows their pace, not the count of
    running batches (a queue of MIN_QUEUED would be empty at every look), and the full
    queue with nothing running at the moment of a look is not mistaken for idle workers."""
    registry, check, items = await _worker_runtime(pg_store, 1_500, lease_s=60)
    waiting: list[dict[str, Any]] = []
    starved = 0
    looks = 0

    async def defer(*jobs: dict[str, Any]) -> None:
        waiting.extend(jobs)

    async def queue_depth() -> tuple[int, int]:
        nonlocal starved, looks
        looks += 1
        if looks > 1:  # the workers had time since the last look
            taken = waiting[:6]
            del waiting[:6]
            starved += len(taken) < 6
            for job in taken:
                await run_batch(**job)
        return len(waiting), 0  # each batch ended before the planner looked

    try:
        async with registry:
            report = await feed(defer, queue_depth, budget_s=30, poll_s=0.01)
            while waiting:
                await run_batch(**waiting.pop(0))
    finally:
        set_runtime(None)
    assert report.due == 1_500
    assert starved <= 2, f"the workers found fewer than six batches at {starved} looks"
    assert len(check.calls) == 1_500
    for item in items[:50]:
        assert len(await pg_store.list_history(item.integration_id)) == 1


async def test_feed_gives_its_job_slot_back_when_nobody_takes_batches(
    pg_store: PostgresStore,
) -> None:
    """A full queue and no batch running: the planning job returns at once instead of
    holding one of the worker's job slots for the rest of the tick."""
    registry, _check, _ = fake_registry(settings=Settings(timeout_s=2))
    set_runtime(make_runtime(pg_store, registry, SchedulerOptions(lease_s=60)))
    looks = 0

    async def queue_depth() -> tuple[int, int]:
        nonlocal looks
        looks += 1
        return MIN_QUEUED, 0

    async def defer(*jobs: dict[str, Any]) -> None:
        raise AssertionError("nothing may be planned into a full queue")

    try:
        t0 = time.monotonic()
        report = await feed(defer, queue_depth, budget_s=30)
    finally:
        set_runtime(None)
    assert (report.due, looks) == (0, 1)
    assert time.monotonic() - t0 < 5


async def test_queue_depth_and_cleanup_on_procrastinate_tables(pg_url: str) -> None:
    """Running batches are those of live workers (a killed worker's jobs stay 'doing');
    the cleanup deletes succeeded jobs of our queue only, not failed ones, not another
    queue's, and not a periodic job procrastinate still refers to."""
    await ensure_procrastinate_schema(pg_url)
    app = build_app(pg_url, tick_s=5)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "insert into procrastinate_workers (last_heartbeat) values "
            "(now()), (now() - interval '5 minutes') returning id"
        )
        live, dead = [r[0] for r in await cursor.fetchall()]
        jobs = [
            ("todo", None, QUEUE, "integration_health.run_batch"),
            ("todo", None, QUEUE, "integration_health.run_batch"),
            ("doing", live, QUEUE, "integration_health.run_batch"),
            ("doing", dead, QUEUE, "integration_health.run_batch"),
            ("doing", dead, QUEUE, "integration_health.run_batch"),
            ("todo", None, "other", "integration_health.run_batch"),
            ("todo", None, QUEUE, "integration_health.plan"),
            ("succeeded", None, QUEUE, "integration_health.run_batch"),
            ("succeeded", None, QUEUE, "integration_health.run_batch"),
            ("failed", None, QUEUE, "integration_health.run_batch"),
            ("succeeded", None, "other", "integration_health.run_batch"),
            ("succeeded", None, QUEUE, "integration_health.plan"),
        ]
        ids = []
        for status, worker, queue, task in jobs:
            cursor = await conn.execute(
                "insert into procrastinate_jobs (queue_name, task_name, status, worker_id) "
                "values (%s, %s, %s, %s) returning id",
                (queue, task, status, worker),
            )
            row = await cursor.fetchone()
            assert row is not None
            ids.append(row[0])
        await conn.execute(  # procrastinate's bookkeeping of the last periodic defer
            "insert into procrastinate_periodic_defers (task_name, defer_timestamp, job_id) "
            "values ('integration_health.plan', 1, %s)",
            (ids[-1],),
        )
        async with app.open_async():
            assert await queue_depth(app.connector) == (2, 1)
            await delete_succeeded(app.connector)
            assert await fail_stalled(app) == 2
            assert await fail_stalled(app) == 0
        cursor = await conn.execute("select id, status from procrastinate_jobs order by id")
        left = {r[0]: r[1] for r in await cursor.fetchall()}
    assert list(left) == ids[:7] + ids[9:]  # the two succeeded run_batch jobs of our queue went
    # the dead worker's two jobs are failed now, the live worker's still doing
    assert [left[i] for i in ids[2:5]] == ["doing", "failed", "failed"]


def _worker(
    url: str,
    tmp: str,
    *,
    jobs: int | None = 4,
    loop: str = "asyncio",
    log_level: str = "warning",
    log_name: str | None = None,
) -> subprocess.Popen[str]:
    """A worker process running ``jobs`` jobs at once (``None``: the default for its
    concurrency setting, 200 checks in flight) on the ``loop`` event loop; its output goes
    to ``tmp/log_name`` (a new name by default)."""
    env = {
        **os.environ,
        "INTEGRATION_HEALTH_DATABASE_URL": url,
        "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS": "true",
        "INTEGRATION_HEALTH_CONCURRENCY": "200",
        "INTEGRATION_HEALTH_LOG_LEVEL": log_level,
    }
    name = log_name or f"worker-{uuid.uuid4().hex[:6]}.log"
    log = open(os.path.join(tmp, name), "w")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "integration_health",
            "worker",
            "--tick",
            "1",
            "--lease",
            "15",
            "--loop",
            loop,
            *(["--concurrency", str(jobs)] if jobs is not None else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _seed(url: str, org: uuid.UUID, configs: list[HttpConfig]) -> None:
    """The schema, one organisation and ``configs`` in the database at ``url``."""

    async def seed() -> None:
        store = await PostgresStore.open(url)
        try:
            await store.upgrade()
            await store.import_definitions([Organization(org, "Org")], [], to_records(configs))
        finally:
            await store.aclose()

    asyncio.run(seed())


@pytest.mark.slow
def test_sigterm_stops_a_worker_gracefully_and_a_second_signal_at_once(
    pg_url: str, endpoint_in_thread: tuple[HttpEndpointFake, str], tmp_path: Any
) -> None:
    """The first SIGTERM lets the checks in flight finish (here hung until their 10 s
    deadline); a second one stops the process at once."""
    fake, url = endpoint_in_thread
    org = uuid.uuid4()
    configs = [
        HttpConfig(
            integration_id=uuid.uuid4(), org_id=org, name=f"h{i}", url=f"{url}/slow?ms=30000"
        )
        for i in range(3)
    ]
    _seed(pg_url, org, configs)
    proc = _worker(pg_url, str(tmp_path))
    try:
        _wait_for(lambda: fake.count("/slow") >= 3, 30, "the checks to be in flight")
        proc.send_signal(signal.SIGTERM)
        time.sleep(2)
        assert proc.poll() is None  # waiting for the checks in flight
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGTERM


def test_worker_at_info_logs_what_it_planned_not_each_task_queue_job(
    pg_url: str, endpoint_in_thread: tuple[HttpEndpointFake, str], tmp_path: Any
) -> None:
    """At --log-level info the worker logs what it planned, not procrastinate's three lines
    per planning tick and two per batch (tens of thousands an hour); at debug those are
    there too."""
    fake, url = endpoint_in_thread
    org = uuid.uuid4()
    logs = {}
    for level in ("info", "debug"):  # three new integrations for each run, due at once
        configs = [
            HttpConfig(
                integration_id=uuid.uuid4(), org_id=org, name=f"{level} {i}", url=f"{url}/ok"
            )
            for i in range(3)
        ]
        _seed(pg_url, org, configs)
        done = fake.count("/ok") + 3
        proc = _worker(pg_url, str(tmp_path), log_level=level, log_name=f"{level}.log")
        try:
            _wait_for(lambda: fake.count("/ok") >= done, 30, "the checks to run")  # noqa: B023
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        logs[level] = (tmp_path / f"{level}.log").read_text()
    assert "INFO integration_health.scheduling.distributed: planned 3 due check(s)" in logs["info"]
    assert " INFO procrastinate" not in logs["info"], logs["info"]
    assert " INFO procrastinate.worker" in logs["debug"]


@pytest.mark.slow
def test_three_worker_processes_and_a_sigkill(
    pg_url: str, endpoint_in_thread: tuple[HttpEndpointFake, str], tmp_path: Any
) -> None:
    """3 workers (one on uvloop), 1,000 integrations, 3 slots each, one worker SIGKILLed
    mid-slot: exactly one result per (integration, slot), none lost."""
    fake, url = endpoint_in_thread
    org = uuid.uuid4()
    configs = [
        HttpConfig(integration_id=uuid.uuid4(), org_id=org, name=f"h{i}", url=f"{url}/ok")
        for i in range(1000)
    ]
    _seed(pg_url, org, configs)
    history = "select count(*) from integration_health_history"
    workers = [_worker(pg_url, str(tmp_path)) for _ in range(2)]
    workers.append(_worker(pg_url, str(tmp_path), jobs=None, loop="uvloop"))
    try:
        for slot in range(1, 4):
            if slot > 1:  # the next slot: as if 15 minutes had passed, every integration is due
                with psycopg.connect(pg_url) as conn:
                    conn.execute(
                        "update integration_health_status set "
                        "checked_at = checked_at - interval '16 minutes', "
                        "next_check_at = now() - interval '1 second'"
                    )
            if slot == 2:
                _wait_for(lambda: _count(pg_url, history) >= 1000 + 150, 60, "slot 2 to start")
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait(10)
            _wait_for(lambda s=slot: _count(pg_url, history) >= 1000 * s, 120, f"slot {slot}")
        time.sleep(3)  # anything still in flight would show up as an extra row
        # the planner deletes succeeded jobs each tick: the queue table does not pile up
        succeeded = (
            "select count(*) from procrastinate_jobs "
            "where status = 'succeeded' and task_name = 'integration_health.run_batch'"
        )
        _wait_for(lambda: _count(pg_url, succeeded) == 0, 15, "succeeded jobs to be deleted")
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert _count(pg_url, history) == 3000
    assert (
        _count(
            pg_url,
            "select count(*) from (select integration_id from integration_health_history "
            "group by integration_id having count(*) <> 3) wrong",
        )
        == 0
    )
    assert (
        _count(pg_url, "select count(*) from integration_check_runs where state = 'done'") == 3000
    )
    assert _count(pg_url, "select count(*) from integration_check_runs where state <> 'done'") == 0
    # the two survivors exited cleanly on SIGTERM
    assert [p.returncode for p in workers[1:]] == [0, 0]
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert logs.count("(4 jobs at once, at most 200 checks in flight; asyncio event loop;") == 2
    assert (
        logs.count(
            f"({default_jobs(200)} jobs at once, at most 200 checks in flight; uvloop event loop;"
        )
        == 1
    )
    assert fake.count("/ok") >= 3000


async def test_plan_now_queues_one_plan_job_at_once(pg_url: str) -> None:
    """A starting worker queues a plan job itself instead of waiting for the periodic tick;
    while one waits in the queue another is not queued (the task's queueing lock); with the
    database gone it gives up within its bound, without raising (the ticks plan anyway)."""
    await ensure_procrastinate_schema(pg_url)
    app = build_app(pg_url, tick_s=59)
    before = int(time.time())
    async with app.open_async():
        assert await plan_now(app) is True
        assert await plan_now(app) is False
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "select task_name, status, queue_name, args from procrastinate_jobs"
        )
        rows = await cursor.fetchall()
    assert len(rows) == 1
    task_name, status, queue, args = rows[0]
    assert (task_name, status, queue) == ("integration_health.plan", "todo", QUEUE)
    assert before <= args["timestamp"] <= time.time()
    unreachable = build_app("postgresql://postgres@127.0.0.1:1/nowhere", tick_s=5)
    t0 = time.monotonic()
    assert await plan_now(unreachable) is False  # never opened: refused at once
    assert time.monotonic() - t0 < 5


class _StoppingApp:
    """Stands in for procrastinate's App: its worker fails ``failures`` times (raising what
    procrastinate raises when a query fails), then runs until cancelled. ``tasks`` holds its
    ``plan`` task, which counts the jobs deferred (:func:`plan_now`)."""

    def __init__(self, failures: list[BaseException | None]) -> None:
        self.failures = failures
        self.starts = 0
        self.cancelled = False
        self.plans: list[int] = []
        self.tasks = {"integration_health.plan": self}

    async def defer_async(self, *, timestamp: int) -> int:
        self.plans.append(self.starts)  # how many worker starts came before this plan
        return len(self.plans)

    async def run_worker_async(self, **options: Any) -> None:
        assert options["install_signal_handlers"] is False
        self.starts += 1
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure
            return  # stopped by itself (a side task failed), as procrastinate does
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_run_worker_starts_a_stopped_worker_again_until_asked_to_stop(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stops by itself (database errors) is started again, backing off, with
    one warning for the outage and one once it runs again; a bug is logged as an error and
    retried too; the stop event cancels the running worker (procrastinate's graceful stop)."""
    from procrastinate.exceptions import ConnectorException

    monkeypatch.setattr(distributed, "RUNNING_AGAIN_S", 0.2)
    lost = ConnectorException("Database error.")
    lost.__cause__ = psycopg.OperationalError("connection to server at 127.0.0.1 refused")
    app = _StoppingApp([lost, None, lost])
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="integration_health")
    task = asyncio.create_task(distributed.run_worker(app, jobs=3, stop=stop, restart_max_s=0.1))
    await asyncio.wait_for(_until(lambda: "worker running again" in caplog.text), 10)
    assert app.starts == 4
    assert app.plans == [0, 1, 2, 3]  # a plan queued before each start
    stop.set()
    assert await asyncio.wait_for(task, 5) == 3
    assert app.cancelled
    assert caplog.text.count("worker lost PostgreSQL") == 1
    assert "connection to server at 127.0.0.1 refused" in caplog.text
    # a failure that is not the database's: logged as an error, and started again
    app = _StoppingApp([RuntimeError("a bug")])
    stop = asyncio.Event()
    task = asyncio.create_task(distributed.run_worker(app, jobs=3, stop=stop, restart_max_s=0.1))
    await asyncio.wait_for(_until(lambda: app.starts == 2), 10)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 1
    assert "the worker failed: RuntimeError: a bug" in caplog.text


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_run_worker_logs_an_error_of_the_sql_itself_as_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A query refused for its own sake (here a missing privilege) is not an outage: it is
    logged as the worker's failure, with its text, each time."""
    from procrastinate.exceptions import ConnectorException

    refused = ConnectorException("Database error.")
    refused.__cause__ = psycopg.errors.InsufficientPrivilege("permission denied for table jobs")
    app = _StoppingApp([refused, refused])
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="integration_health")
    task = asyncio.create_task(distributed.run_worker(app, jobs=3, stop=stop, restart_max_s=0.05))
    await asyncio.wait_for(_until(lambda: app.starts == 3), 10)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 2
    failed = "the worker failed: InsufficientPrivilege: permission denied for table jobs"
    assert caplog.text.count(failed) == 2
    assert "worker lost PostgreSQL" not in caplog.text


async def test_one_plan_job_feeds_at_a_time_in_a_process(pg_store: PostgresStore) -> None:
    """A plan job started while another of the process feeds the queue ends at once instead
    of planning the same due checks again (whose claims the first one holds: every claim of
    the second would be refused); once the first has ended, the next one plans."""
    await _worker_runtime(pg_store, 300, lease_s=60)
    deferred: list[dict[str, Any]] = []
    looks = 0
    second: PassReport | None = None

    async def defer(*jobs: dict[str, Any]) -> None:
        deferred.extend(jobs)

    async def depth() -> tuple[int, int]:
        nonlocal looks, second
        looks += 1
        if looks == 1:  # the first job is feeding: the next tick's job starts
            async with asyncio.timeout(5):  # (waiting for the first job would never end)
                second = await plan_once(lambda: feed(defer, depth, budget_s=5, poll_s=0.001))
        return 0, 1  # nothing waits, one batch runs: plan on

    try:
        first = await plan_once(lambda: feed(defer, depth, budget_s=5, poll_s=0.001, gap_s=0.0))
        assert second is None
        assert first is not None and first.due == 300 and first.skipped_claims == 0
        assert sum(len(job["checks"].split()) for job in deferred) == 300
        third = await plan_once(lambda: feed(defer, depth, budget_s=5, poll_s=0.001))
        assert third is not None and third.due == 0  # ran: all 300 are held by queued jobs
    finally:
        set_runtime(None)


async def test_one_plan_job_feeds_at_a_time_across_processes(
    pg_store: PostgresStore, pg_url: str
) -> None:
    """Plan jobs of different worker processes (each its own PlanLock, its own connection) do
    not feed at once: while one feeds, another ends without planning; once the first has
    ended (or its connection is gone, a killed worker) the next one plans."""
    await _worker_runtime(pg_store, 10, lease_s=60)
    mine, theirs = PlanLock(pg_url), PlanLock(pg_url)
    planned: list[str] = []

    async def plan(name: str) -> PassReport:
        planned.append(name)
        return PassReport(at=utcnow())

    async def while_theirs_feeds() -> PassReport:
        # our plan job starts while theirs feeds (a worker's own lock is free: another process)
        distributed._rt().planning = asyncio.Lock()
        assert await plan_once(lambda: plan("mine"), across=mine) is None
        return await plan("theirs")

    try:
        runtime = distributed._rt()
        own = runtime.planning
        assert await plan_once(while_theirs_feeds, across=theirs) is not None
        runtime.planning = own
        assert planned == ["theirs"]
        assert await plan_once(lambda: plan("mine"), across=mine) is not None  # released
        assert planned == ["theirs", "mine"]
        # a worker killed while feeding: its connection closes, and the lock goes with it
        assert await theirs.try_acquire()
        assert not await mine.try_acquire()
        await theirs.close()
        assert await mine.try_acquire()
        await mine.release()
    finally:
        await mine.close()
        await theirs.close()
        set_runtime(None)


async def test_plans_go_ahead_when_the_plan_lock_cannot_be_asked_for(
    pg_store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock only saves work (claims keep every slot to one run): a lock whose database
    cannot be reached lets the plan go ahead, logged at debug level, without the password."""
    await _worker_runtime(pg_store, 10, lease_s=60)
    lock = PlanLock("postgresql://planner:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=1")
    ran: list[bool] = []

    async def plan() -> PassReport:
        ran.append(True)
        return PassReport(at=utcnow())

    try:
        with caplog.at_level(logging.DEBUG, logger="integration_health"):
            assert await plan_once(plan, across=lock) is not None
        assert ran == [True]
        assert "planning without it" in caplog.text
        assert "s3cret-pw" not in caplog.text
    finally:
        await lock.close()
        set_runtime(None)
