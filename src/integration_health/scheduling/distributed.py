"""Many machines: ``integration-health worker`` processes share the due checks (PostgreSQL).

Built on procrastinate, a PostgreSQL-based task engine (jobs in tables, ``LISTEN/NOTIFY``,
periodic tasks deferred once per tick whatever the number of workers). Start any number of
workers, on any machines; no other process is needed.

- Every few seconds (``--tick``) the periodic task ``integration_health.plan`` runs on
  exactly one worker (procrastinate deduplicates periodic defers; a plan job that starts while
  another still feeds the queue, of any process, ends at once, :func:`plan_once`). It plans
  the due checks with the same pure planner as the single-machine scheduler, splits them into
  batches, **claims their slots** in ``integration_check_runs`` under a fresh key, and defers one
  ``integration_health.run_batch`` job per batch of :data:`BATCH_SIZE` (one insert for all;
  the checks travel as one compact string, :func:`encode_checks`). It keeps doing so for most of
  the tick (:func:`feed`), keeping as many batches queued as the workers take until its next
  look (:class:`FeedPace`, at most :data:`MAX_QUEUED`), so the workers never run dry and queued
  claims start well within their lease. Planning again skips the slots that queued or
  running batches hold (``list_due(claimed_since=…)``), so each plan moves on.
- ``run_batch`` renews its claims (a batch that waited too long in the queue and was taken
  over is skipped), runs the checks with the runner's hard deadlines, and writes the results;
  each result completes its slot in the same transaction, or is discarded if the slot is no
  longer this batch's. Claims young enough to outlast the batch are not renewed (their time
  rides in the key, :func:`plan_key`). The process that planned a batch, running it within
  :data:`PLANNED_FOR_S`, takes it as planned, with the integrations it read; another process
  reads the integrations in one query.
- A worker killed mid-batch (``SIGKILL``) leaves its slots claimed but not done: when the
  lease runs out the planner sees them due again and claims them under a new batch — so every
  (integration, slot) produces exactly one result, and nothing is lost.
- A worker that loses PostgreSQL keeps running: procrastinate stops its worker when a query
  of its own fails (its listener's, its heartbeat's, its fetch), so :func:`run_worker` starts
  it again, backing off, until the database answers — logging the outage once, not each
  attempt — and stops only when asked to (SIGTERM, Ctrl-C).
- Finished jobs do not pile up: the planner deletes the succeeded jobs of this queue each
  tick (failed ones are kept for inspection; periodic-defer bookkeeping is left alone), and
  marks failed the jobs that killed workers left ``doing`` (:func:`fail_stalled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from ..checks import CheckRegistry
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..model import HealthStatus, utcnow
from ..policy import IntegrationState
from ..store.base import Store
from .planner import PlannedCheck
from .scheduler import PassReport, Scheduler, SchedulerOptions, first_of

__all__ = ["QUEUE", "WorkerRuntime", "build_app", "default_jobs", "ensure_procrastinate_schema"]

log = logging.getLogger(__name__)

QUEUE = "integration_health"
BATCH_SIZE = 200
"""Checks per ``run_batch`` job: small enough to spread over workers, big enough to be cheap.
A worker starts its jobs one at a time (one fetch each, a round trip through a busy event
loop) and finishes each with another: 200 halved that per check against 100, and one worker
ran faster in most alternated pairs at 50,000 integrations (docs/benchmarks.md, runs U and
V; run T, before those changes, had found 100 ~5 % ahead of 50 and 200)."""
MIN_QUEUED = 4
"""Batches the planner keeps queued even when none is running yet (start-up)."""
MAX_QUEUED = 200
"""Most batches the planner keeps queued, however many are running."""
_RUN_BATCH = "integration_health.run_batch"
_POLL_S = 0.2
_MAX_RATE = 10.0 * MAX_QUEUED
"""Batches per second: a bound on the measured pace (100,000 checks/s), so that doubling it
on every empty queue cannot grow without end."""
PLANNED_FOR_S = 5.0
"""How long a batch run by the process that planned it uses the integrations as planned
(otherwise it reads them again): a configuration edited while the batch waited in the queue
is checked as it was at most this long ago, as the single-machine scheduler checks what it
read when it planned."""
_FETCH_POLL_S = 1.0
"""How often an idle worker looks for jobs without a notification (procrastinate: 5 s).
A worker is told of new jobs by ``LISTEN/NOTIFY``, but its listener starts alongside its
periodic deferrer: a first planning job deferred before the listener listens went
unnoticed for the whole polling interval (seen as a 5 s stall at start in one run of two)."""


@dataclass
class WorkerRuntime:
    """What the tasks of one worker process use (set before the worker starts)."""

    store: Store
    registry: CheckRegistry
    scheduler: Scheduler
    pace: FeedPace = field(default_factory=lambda: FeedPace())
    """The workers' pace as this process's planner measured it (kept across ticks)."""
    planned: dict[str, LocalBatch] = field(default_factory=dict)
    """Batches this process planned and queued, by their ``checks`` argument: a batch run by
    the same process takes its checks from here instead of decoding and reading them again,
    see :func:`run_batch`. Entries leave when their batch runs, or after
    :data:`PLANNED_FOR_S`."""

    background: set[asyncio.Task[PassReport]] = field(default_factory=set)
    """Batches whose job ended before their last checks did (:func:`run_batch_job`)."""
    planning: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a ``plan`` job of this process feeds the queue (:func:`plan_once`)."""
    plan_lock: PlanLock | None = None
    """The lock that keeps the ``plan`` jobs of different processes from feeding at once
    (:class:`PlanLock`; set by the ``plan`` task on its first run, closed by :meth:`drain`)."""

    def detach(self, task: asyncio.Task[PassReport]) -> None:
        """Let ``task`` (a batch) finish in the background; :meth:`drain` waits for it."""
        self.background.add(task)
        task.add_done_callback(self._detached_done)

    def _detached_done(self, task: asyncio.Task[PassReport]) -> None:
        self.background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "a batch failed after its job had ended: %s: %s (its checks run again once "
                "their claims' lease runs out)",
                type(exc).__name__,
                exc,
            )

    async def drain(self) -> None:
        """Wait for the batches finishing in the background (each bounded by the check
        deadline), then let the idle check lanes end; a stopping worker calls this after its
        last job."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
        self.scheduler.close_lanes()
        if self.plan_lock is not None:
            await self.plan_lock.close()

    def remember(self, batches: Mapping[str, LocalBatch]) -> None:
        """Keep the batches just queued (by their ``checks`` argument); forget those queued
        more than :data:`PLANNED_FOR_S` before them."""
        planned = self.planned
        now = max((b.queued_at for b in batches.values()), default=None)
        while planned and now is not None:
            first = next(iter(planned))
            if now - planned[first].queued_at <= PLANNED_FOR_S:
                break
            del planned[first]
        for checks, batch in batches.items():
            planned.pop(checks, None)  # re-insert: keep time order
            planned[checks] = batch

    def take(self, batch_key: str, checks: str, now: float) -> LocalBatch | None:
        """The batch queued here as ``checks`` under ``batch_key``, if queued at most
        :data:`PLANNED_FOR_S` before ``now`` (monotonic); it is forgotten either way."""
        batch = self.planned.pop(checks, None)
        if batch is None or batch.batch_key != batch_key or now - batch.queued_at > PLANNED_FOR_S:
            return None
        return batch


@dataclass(frozen=True)
class LocalBatch:
    """A batch as the process that planned and queued it knows it."""

    batch_key: str
    checks: list[PlannedCheck]
    previous: dict[UUID, IntegrationState | None]
    queued_at: float
    """When it was queued (monotonic)."""


_runtime: WorkerRuntime | None = None


def _rt() -> WorkerRuntime:
    if _runtime is None:  # pragma: no cover - a task run outside `integration-health worker`
        raise RuntimeError("the integration-health worker runtime is not set up")
    return _runtime


def set_runtime(runtime: WorkerRuntime | None) -> None:
    """Install the runtime the tasks use (``integration-health worker`` does this)."""
    global _runtime
    _runtime = runtime


def _state(
    status: str, checked_at: str, failures: str | int, last_healthy_at: str, next_check_at: str
) -> IntegrationState:
    """A previous state from its queued text fields (empty: none)."""
    return IntegrationState(
        status=HealthStatus(status),
        checked_at=datetime.fromisoformat(checked_at),
        consecutive_failures=int(failures),
        last_healthy_at=datetime.fromisoformat(last_healthy_at) if last_healthy_at else None,
        next_check_at=datetime.fromisoformat(next_check_at) if next_check_at else None,
    )


def encode_checks(
    held: list[PlannedCheck], previous: Mapping[UUID, IntegrationState | None]
) -> str:
    """A batch's checks as one compact string (the job's argument).

    One check per space-separated item: comma-separated integration id (hex), slot, due time
    and the previous state (status, checked_at, consecutive failures, last healthy, next
    check; empty fields for none). One flat string keeps the queued job small and cheap to
    store and to log: procrastinate copies a job's arguments into every log record it makes,
    and escapes each quote of their JSON when deferring.
    """
    items = []
    for p in held:
        state = previous.get(p.integration.integration_id)
        fields = [p.integration.integration_id.hex, p.slot_at.isoformat(), p.due_at.isoformat()]
        if state is not None:
            fields += [
                state.status.value,
                state.checked_at.isoformat(),
                str(state.consecutive_failures),
                state.last_healthy_at.isoformat() if state.last_healthy_at else "",
                state.next_check_at.isoformat() if state.next_check_at else "",
            ]
        items.append(",".join(fields))
    return " ".join(items)


@dataclass(frozen=True)
class _Queued:
    integration_id: UUID
    slot_at: datetime
    due_at: datetime
    previous: IntegrationState | None


def decode_checks(checks: str) -> list[_Queued]:
    """The inverse of :func:`encode_checks`."""
    queued = []
    for item in checks.split():
        integration_id, slot_at, due_at, *state = item.split(",")
        previous = _state(*state) if state else None
        queued.append(
            _Queued(
                UUID(hex=integration_id),
                datetime.fromisoformat(slot_at),
                datetime.fromisoformat(due_at),
                previous,
            )
        )
    return queued


def _decode_items(items: list[dict[str, Any]]) -> list[_Queued]:
    """Jobs queued by earlier workers (``items``: one dict per check) are still run."""
    queued = []
    for item in items:
        state = item.get("previous")
        previous = None
        if state is not None:
            previous = _state(
                state["status"],
                state["checked_at"],
                state["consecutive_failures"],
                state["last_healthy_at"] or "",
                state["next_check_at"] or "",
            )
        queued.append(
            _Queued(
                UUID(item["integration_id"]),
                datetime.fromisoformat(item["slot_at"]),
                datetime.fromisoformat(item["due_at"]),
                previous,
            )
        )
    return queued


async def plan_and_defer(
    defer: Callable[..., Awaitable[Any]],
    *,
    at: datetime | None = None,
    max_checks: int | None = None,
) -> PassReport:
    """Plan due checks (at most ``max_checks``, default a scheduler batch), claim them all
    under one key, and defer one job per :data:`BATCH_SIZE` of them, all at once.

    ``defer`` is ``run_batch.batch_defer_async``: called with one keyword dict per job (a
    parameter so the logic is testable alone). The batches of one plan share its key: a slot
    is completed once whichever job writes it, and a duplicate run of a job finds its slots
    done.
    """
    runtime = _rt()
    scheduler = runtime.scheduler
    at = at or scheduler.clock()
    report = PassReport(at=at)
    plan, previous = await scheduler.plan(at, report, max_checks=max_checks)
    await scheduler.warm_up(at)
    key = plan_key(at)
    held = await scheduler.claim(plan.run, worker=key, at=at, report=report)
    now = time.monotonic()
    batches: dict[str, LocalBatch] = {}
    for start in range(0, len(held), BATCH_SIZE):
        checks = held[start : start + BATCH_SIZE]
        ids = [p.integration.integration_id for p in checks]
        batch = LocalBatch(key, checks, {i: previous.get(i) for i in ids}, now)
        batches[encode_checks(checks, previous)] = batch
    jobs = [{"batch_key": key, "checks": checks} for checks in batches]
    runtime.remember(batches)
    if jobs:
        await defer(*jobs)
    await scheduler.finish_pass(report)
    return report


async def plan_once(
    plan: Callable[[], Awaitable[PassReport]], *, across: PlanLock | None = None
) -> PassReport | None:
    """Run ``plan`` (a ``plan`` job's feeding) unless a ``plan`` job is feeding already —
    of this process, or with ``across`` of any process on the database; then return
    ``None`` at once.

    procrastinate's queueing lock keeps one ``plan`` job waiting, not one running: the next
    tick's job (or the one queued at start, :func:`plan_now`) started while the last one still
    fed, and the two planned the same due checks — one of each pair of plans had all its
    claims refused (seen: two or three feeding at once through a whole run, half the plans
    wasted; docs/benchmarks.md, run U). With several workers the next tick's job usually
    runs on another process, hence ``across``."""
    lock = _rt().planning
    if lock.locked():
        log.debug("a plan job is feeding the queue already; this one ends")
        return None
    async with lock:
        if across is not None and not await across.try_acquire():
            log.debug("a plan job of another process is feeding the queue; this one ends")
            return None
        try:
            return await plan()
        finally:
            if across is not None:
                await across.release()


_PLAN_LOCK_SQL = "hashtext('integration_health.plan')"
_PLAN_LOCK_TIMEOUT_S = 3.0


class PlanLock:
    """A PostgreSQL advisory lock held by the ``plan`` job that feeds the queue, so that the
    jobs of different worker processes never feed at once.

    Transaction-scoped (``pg_try_advisory_xact_lock`` in a transaction left open while the
    job feeds, on a connection of its own, without prepared statements): it holds behind a
    transaction-mode pooler too (Supavisor, port 6543), which pins a server connection for a
    transaction, where a session-level lock taken through one server connection could be
    left held on it for good — and every plan after it refused. The open transaction reads
    and writes nothing. A worker that dies loses its connection, and with it the lock.

    It saves work, nothing more: two feeding plans cannot run a slot twice (the claims see to
    that), they only waste each other's plans. So whenever the lock cannot be asked for —
    its connection lost, the database restarting — the plan goes ahead as if it held it
    (logged at debug level), and the connection is opened again at the next plan.
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: Any = None
        self._held = False

    async def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; ``False`` if another session does."""
        import psycopg  # noqa: PLC0415 - optional dependency, present with the worker

        try:
            async with asyncio.timeout(_PLAN_LOCK_TIMEOUT_S):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, prepare_threshold=None
                    )
                cursor = await self._conn.execute(
                    f"select pg_try_advisory_xact_lock({_PLAN_LOCK_SQL})"
                )
                row = await cursor.fetchone()
                self._held = bool(row and row[0])
                if not self._held:
                    await self._conn.rollback()
        except (psycopg.Error, TimeoutError) as exc:
            log.debug("plan lock unavailable (%s); planning without it", _one_line(exc))
            await self.close()
            return True
        return self._held

    async def release(self) -> None:
        """Let go of the lock if this connection holds it (ending its transaction)."""
        import psycopg  # noqa: PLC0415 - optional dependency, present with the worker

        if not self._held:
            return
        self._held = False
        try:
            async with asyncio.timeout(_PLAN_LOCK_TIMEOUT_S):
                await self._conn.rollback()
        except (psycopg.Error, TimeoutError) as exc:  # closing the connection releases it too
            log.debug("plan lock release failed (%s); closing its connection", _one_line(exc))
            await self.close()

    async def close(self) -> None:
        """Close the connection (releasing the lock if held)."""
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def default_jobs(concurrency: int) -> int:
    """Jobs a worker runs at once for ``concurrency`` checks in flight (the registry's limit,
    which holds whatever the number of batches): two batches per :data:`BATCH_SIZE` — while
    one batch renews its claims or writes, the next one's checks run — plus one for the
    planner, at most 64."""
    return min(64, 2 * math.ceil(concurrency / BATCH_SIZE) + 1)


def queue_limit(running: int) -> int:
    """The fewest batches to keep waiting while ``running`` batches run, before the pace of
    the workers is known (see :class:`FeedPace`): enough for the workers to take the next
    ones at once."""
    return min(MAX_QUEUED, max(MIN_QUEUED, 2 * running))


@dataclass
class FeedPace:
    """How fast the workers take batches, measured by the planner from the queue's depth.

    The planner looks at the queue every ``poll_s``; between two looks the workers took the
    batches that waited after the first look and no longer wait at the second. Batches that
    each take a few milliseconds can drain a queue sized by the running batches alone many
    times between two looks, leaving the workers idle: the queue is therefore kept at
    ``rate × horizon`` batches — what the workers take until the planner next refills it —
    and the rate doubles each time the planner finds the queue empty (the workers could have
    taken more than it measured) — unless its last plan queued every due check, when an empty
    queue says nothing of the workers' pace. At most :data:`MAX_QUEUED` wait, so queued claims
    start long before their lease runs out. One pace per worker process, kept across planning
    ticks.
    """

    rate: float = 0.0
    """Batches per second the workers took between the last two looks (smoothed)."""
    taken: int | None = None
    """Batches taken between the last two looks (``None``: no earlier look)."""
    interval_s: float = 0.0
    """Seconds between the last two looks: the poll interval plus the time planning took."""
    _left: int | None = None
    _at: float = 0.0
    _all_due: bool = False

    def look(self, waiting: int, now: float) -> None:
        """Record a look at the queue: ``waiting`` batches wait at monotonic time ``now``."""
        if self._left is not None and now > self._at:
            self.taken = max(0, self._left - waiting)
            self.interval_s = now - self._at
            measured = self.taken / self.interval_s
            if waiting == 0 and self.taken and not self._all_due:  # starved: they could
                self.rate = min(_MAX_RATE, 2 * max(measured, self.rate))  # have taken more
            else:
                self.rate = measured if self.rate == 0 else (self.rate + measured) / 2
        self._left, self._at = waiting, now

    def queued(self, jobs: int, *, all_due: bool = False) -> None:
        """``jobs`` more batches wait since the last look; ``all_due``: they held every
        check that was due (nothing was left to plan)."""
        if self._left is not None:
            self._left += jobs
        self._all_due = all_due

    def target(self, running: int, horizon_s: float) -> int:
        """Batches to keep waiting so that the workers do not run dry for ``horizon_s``."""
        return min(MAX_QUEUED, max(queue_limit(running), math.ceil(self.rate * horizon_s)))


async def feed(
    defer: Callable[..., Awaitable[Any]],
    depth: Callable[[], Awaitable[tuple[int, int]]],
    *,
    budget_s: float,
    poll_s: float = _POLL_S,
    gap_s: float = 0.0,
) -> PassReport:
    """Plan and defer (:func:`plan_and_defer`) again and again for ``budget_s`` seconds,
    keeping the queue as deep as the workers' pace needs (:class:`FeedPace`); returns the
    summed report.

    ``depth`` returns (waiting, running) ``run_batch`` jobs (:func:`queue_depth`). Every
    ``poll_s`` the queue is measured; once at most half the target waits, plans fill it up
    to the target (one scheduler batch per plan, several plans in a row if need be). The
    target covers the workers' pace until the next look: twice the time between looks (the
    poll interval plus planning), and on the last look of this call also ``gap_s`` (until the
    next planning tick starts). Stops early once a plan finds fewer due checks than it had
    room for (everything due is queued or running, or held back), or when the queue is full
    and nobody takes from it (a worker with one job slot would otherwise sit in this task
    while its queue waits).
    """
    runtime = _rt()
    pace = runtime.pace
    deadline = time.monotonic() + budget_s
    total = PassReport(at=runtime.scheduler.clock())
    batch_size = runtime.scheduler.options.batch_size
    while True:
        waiting, running = await depth()
        now = time.monotonic()
        pace.look(waiting, now)
        last = now + poll_s >= deadline
        horizon_s = 2 * max(poll_s, pace.interval_s) + (gap_s if last else 0.0)
        target = pace.target(running, horizon_s)
        if waiting <= target // 2:  # refill in chunks, not one batch at a time
            while waiting < target:
                room = min(batch_size, (target - waiting) * BATCH_SIZE)
                report = await plan_and_defer(defer, max_checks=room)
                total.due += report.due
                total.skipped_claims += report.skipped_claims
                jobs = math.ceil((report.due - report.skipped_claims) / BATCH_SIZE)
                pace.queued(jobs, all_due=report.due < room)
                waiting += jobs
                if report.due < room:
                    return total
        elif running == 0 and not pace.taken:  # a full queue that nobody takes
            return total
        if last:
            return total
        await asyncio.sleep(poll_s)


async def _planned(runtime: WorkerRuntime, queued: list[_Queued]) -> list[PlannedCheck]:
    """The queued checks with their integrations read from the store (one query);
    integrations deleted since they were planned are left out."""
    if not queued:
        return []
    records = await runtime.store.get_integrations([q.integration_id for q in queued])
    planned = []
    for q in queued:
        record = records.get(q.integration_id)
        if record is None:  # deleted since it was planned
            continue
        integration = runtime.scheduler.parse(record)
        planned.append(PlannedCheck(integration, slot_at=q.slot_at, due_at=q.due_at))
    return planned


async def _renew(
    runtime: WorkerRuntime,
    planned: list[PlannedCheck],
    batch_key: str,
    at: datetime,
    report: PassReport,
) -> list[PlannedCheck]:
    """Renew the claims of ``planned``, a batch planned here; returns the checks whose slots
    it still holds. An integration deleted since it was planned (its slot went with it) makes
    the claim fail: the others are then claimed again, the deleted ones left out."""
    scheduler = runtime.scheduler
    try:
        return await scheduler.claim(planned, worker=batch_key, at=at, report=report)
    except StoreUnavailable:
        raise
    except StoreError:
        stored = await runtime.store.get_integrations(
            [p.integration.integration_id for p in planned]
        )
        kept = [p for p in planned if p.integration.integration_id in stored]
        return await scheduler.claim(kept, worker=batch_key, at=at, report=report)


def plan_key(at: datetime) -> str:
    """A fresh key for the claims of a plan made at ``at``: ``plan:<hex>@<at, ISO 8601>``.

    The claim time rides in the key, which every batch job carries and which workers of
    earlier versions use only as an opaque claim holder, so that any worker can tell how young
    a batch's claims are (:func:`claimed_at`)."""
    return f"plan:{uuid.uuid4().hex}@{at.isoformat()}"


def claimed_at(batch_key: str) -> datetime | None:
    """When the claims of ``batch_key`` were made, if the key says (see :func:`plan_key`)."""
    _, sep, when = batch_key.partition("@")
    if not sep:
        return None
    try:
        stamp = datetime.fromisoformat(when)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def _claims_outlast(
    claimed: datetime | None, at: datetime, options: SchedulerOptions, deadline_s: float
) -> bool:
    """Whether claims made at ``claimed`` hold without renewal for a run starting at ``at``:
    at least half the lease is left once its checks' deadline has passed (nobody else can
    claim a slot before its lease runs out). Unknown (``None``): no."""
    if claimed is None:
        return False
    age_s = (at - claimed).total_seconds()
    return 0 <= age_s <= options.lease_s / 2 - deadline_s


async def run_batch(
    batch_key: str,
    checks: str = "",
    items: list[dict[str, Any]] | None = None,
    *,
    executing: asyncio.Event | None = None,
) -> PassReport:
    """Run one batch of claimed checks and write the results (see the module docstring).

    ``checks`` is :func:`encode_checks`'s string; ``items`` the older form of the same.
    ``executing`` is set once the checks count as in flight (``Scheduler.in_flight``).
    """
    runtime = _rt()
    scheduler = runtime.scheduler
    at = scheduler.clock()
    report = PassReport(at=at)
    # Claims still young are not renewed: nobody can take them over before their lease
    # runs out (the claim time rides in the key; keys of earlier versions lack it).
    young = _claims_outlast(
        claimed_at(batch_key), at, scheduler.options, runtime.registry.settings.timeout_s
    )
    # A batch planned by this process a moment ago (the usual case with one worker, and the
    # share of batches a worker takes of its own plans) is run as planned: its integrations
    # are not read again. An integration deleted meanwhile is checked as planned, as the
    # single-machine scheduler does; its slot went with it, so nothing is written for it.
    local = runtime.take(batch_key, checks, time.monotonic()) if items is None else None
    if local is not None:
        planned, previous = local.checks, local.previous
        held = planned if young else await _renew(runtime, planned, batch_key, at, report)
    else:  # another process's batch: its integrations are read (deleted ones left out)
        queued = decode_checks(checks) if items is None else _decode_items(items)
        previous = {q.integration_id: q.previous for q in queued}
        planned = await _planned(runtime, queued)
        if young:
            held = planned
        else:
            held = await scheduler.claim(planned, worker=batch_key, at=at, report=report)
    if len(held) < len(planned):
        log.info(
            "batch %s: %d of %d slots were taken over while it waited; skipping them",
            batch_key,
            len(planned) - len(held),
            len(planned),
        )
    if executing is not None:
        executing.set()  # the waiter runs after execute() has counted the checks in flight
    await scheduler.execute(held, previous, worker=batch_key, at=at, report=report)
    return report


async def run_batch_job(
    batch_key: str, checks: str = "", items: list[dict[str, Any]] | None = None
) -> PassReport | None:
    """What a ``run_batch`` job does: :func:`run_batch`, but the job ends as soon as this
    process has lanes to spare (fewer checks in flight than the concurrency setting) while
    the batch's last checks still run; they finish and are written in the background.

    Without this a job holds one of the worker's job slots until its slowest check ends: a
    batch with one hung host holds it for the whole deadline, and with a few such batches
    every slot waits while the lanes idle. A process at capacity keeps its jobs (no more
    batches are taken than it can run). Returns the report if the batch ended within the
    job (``None``: it went on in the background). A worker killed meanwhile loses nothing:
    the slots are claimed, not done, and are planned again after the lease.
    """
    runtime = _rt()
    scheduler = runtime.scheduler
    limit = runtime.registry.settings.concurrency
    executing = asyncio.Event()
    task = asyncio.create_task(run_batch(batch_key, checks, items, executing=executing))
    try:
        await first_of(task, executing.wait())
        while not task.done():
            if scheduler.in_flight < limit:
                runtime.detach(task)
                return None
            await first_of(task, scheduler.wait_below(limit))
    except asyncio.CancelledError:  # the worker is stopping: finish the batch regardless
        if not task.done():
            runtime.detach(task)
        raise
    return task.result()


def build_app(database_url: str, *, tick_s: int = 5) -> Any:
    """The procrastinate app with the ``plan`` (periodic) and ``run_batch`` tasks."""
    try:
        import procrastinate  # noqa: PLC0415 - optional dependency
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            "the worker needs procrastinate: pip install 'integration-health[postgres]'"
        ) from exc
    if not 1 <= tick_s <= 59:
        raise ConfigError("the planning tick must be between 1 and 59 seconds")
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    app = procrastinate.App(
        # Autocommit: each of procrastinate's queries is one statement (a function call) and
        # it opens no transaction of its own; without it every query of a pooled connection
        # was wrapped in BEGIN and COMMIT, two more round trips (fetch and finish of every job).
        # (Set by ``configure``: procrastinate also opens its listener's connection with the
        # pool's keyword arguments plus ``autocommit=True``, which a second one would break.)
        connector=procrastinate.PsycopgConnector(conninfo=conninfo, configure=_autocommit),
        worker_defaults={"queues": [QUEUE], "fetch_job_polling_interval": _FETCH_POLL_S},
    )

    @app.task(name="integration_health.run_batch", queue=QUEUE, pass_context=False)
    async def run_batch_task(
        batch_key: str, checks: str = "", items: list[dict[str, Any]] | None = None
    ) -> None:
        report = await run_batch_job(batch_key, checks, items)
        if report is not None:
            log.debug("batch %s: %d run, %d written", batch_key, report.ran, report.written)

    @app.periodic(cron=f"* * * * * */{tick_s}", periodic_id="plan")
    @app.task(
        name="integration_health.plan",
        queue=QUEUE,
        queueing_lock="integration_health.plan",
        pass_context=False,
    )
    async def plan_task(timestamp: int) -> None:
        connector = app.connector
        runtime = _rt()
        if runtime.plan_lock is None:
            runtime.plan_lock = PlanLock(conninfo)
        # Most of the tick, leaving room so that the next tick's plan rarely overlaps it.
        report = await plan_once(
            lambda: feed(
                run_batch_task.batch_defer_async,
                lambda: queue_depth(connector),
                budget_s=tick_s * 0.8,
                gap_s=tick_s * 0.2,
            ),
            across=runtime.plan_lock,
        )
        if report is None:
            return
        if report.due:
            log.info(
                "planned %d due check(s) at %s (%d already claimed elsewhere)",
                report.due,
                report.at.isoformat(),
                report.skipped_claims,
            )
        await delete_succeeded(connector)
        await fail_stalled(app)

    return app


_PLAN_NOW_S = 3.0
"""How long :func:`plan_now` waits for the database (a worker starting during an outage)."""


async def plan_now(app: Any) -> bool:
    """Queue a ``plan`` job at once, so that a worker starting up plans without waiting up
    to a whole tick for procrastinate's periodic deferrer; ``False`` when a plan job waits in
    the queue already (its queueing lock), or the database refused (logged: the ticks go on).
    """
    import procrastinate.exceptions  # noqa: PLC0415 - optional dependency, present here

    try:
        async with asyncio.timeout(_PLAN_NOW_S):
            await app.tasks["integration_health.plan"].defer_async(timestamp=int(time.time()))
    except procrastinate.exceptions.AlreadyEnqueued:
        return False
    except Exception as exc:  # noqa: BLE001 - the periodic ticks plan anyway
        log.debug("could not queue a plan at start: %s", _one_line(exc))
        return False
    return True


async def _autocommit(conn: Any) -> None:
    await conn.set_autocommit(True)


RESTART_MAX_S = 30.0
"""Longest wait between two starts of a worker that keeps stopping (database down)."""
RUNNING_AGAIN_S = 10.0
"""A restarted worker that has run this long without stopping is running again (logged)."""


class _DatabaseErrors(logging.Filter):
    """Keeps procrastinate's connection errors out of the log while :func:`run_worker` deals
    with them: each failed query is logged by procrastinate with a traceback (several per
    outage, each ending in ``Database error.``); the outage is logged once instead, with the
    error recorded here. Kept at debug level (``INTEGRATION_HEALTH_LOG_LEVEL=debug``)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None
        """The last database error seen (its cause, in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or not _is_database_error(error):
            return True
        self.last = _one_line(error)
        return logging.getLogger("integration_health").isEnabledFor(logging.DEBUG)


def _is_database_error(error: BaseException) -> bool:
    """Whether ``error`` is procrastinate's report of a lost or refused connection (an
    error of the SQL itself, such as a missing privilege, is not: it is logged as it is)."""
    import psycopg  # noqa: PLC0415 - optional dependency
    from procrastinate.exceptions import ConnectorException  # noqa: PLC0415

    return isinstance(error, ConnectorException) and isinstance(
        error.__cause__, psycopg.OperationalError | psycopg.InterfaceError
    )


def _one_line(error: BaseException) -> str:
    """An error in one line, by its cause if it has one (procrastinate's own text is
    ``Database error.``; psycopg's names the server, never a password)."""
    cause = error.__cause__ or error
    text = " ".join(str(cause).split()) or type(cause).__name__
    return f"{type(cause).__name__}: {text}"


async def run_worker(
    app: Any, *, jobs: int, stop: asyncio.Event, restart_max_s: float = RESTART_MAX_S
) -> int:
    """Run procrastinate's worker on :data:`QUEUE` (``jobs`` at once) until ``stop`` is set;
    returns how many times it had to be started again.

    procrastinate stops its worker when one of its queries fails — PostgreSQL restarted or
    unreachable — and would let the process exit as if asked to. Here it is started again,
    waiting 1 s, then twice as long each time it stops again (at most ``restart_max_s``; back
    to 1 s once a worker has run :data:`RUNNING_AGAIN_S`), until the database answers. The
    outage is logged once when it starts (a warning naming the error) and once when a worker
    has run :data:`RUNNING_AGAIN_S` again; a failure that is not the database's is logged as
    an error each time. Batches running meanwhile finish as a stopping worker's do; results
    that could not be written are checked again after their claims' lease. When ``stop`` is
    set the worker stops gracefully: the jobs it runs finish first."""
    errors = _DatabaseErrors()
    # A logger's filters apply to its own records only, not to its children's.
    loggers = [logging.getLogger(f"procrastinate.{name}") for name in _PROCRASTINATE_LOGGERS]
    for logger in loggers:
        logger.addFilter(errors)
    restarts = 0
    first_wait_s = wait_s = min(1.0, restart_max_s)
    down_since: float | None = None
    try:
        while not stop.is_set():
            await plan_now(app)  # a worker (re)started plans at once, not at the next tick
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[QUEUE], concurrency=jobs, install_signal_handlers=False
                )
            )
            started = time.monotonic()
            while not worker.done() and not stop.is_set():
                await first_of(worker, stop.wait(), asyncio.sleep(RUNNING_AGAIN_S))
                now = time.monotonic()
                if now - started >= RUNNING_AGAIN_S:
                    wait_s = first_wait_s
                    if down_since is not None:
                        log.warning(
                            "worker running again (PostgreSQL lost %.0f s ago; no failure "
                            "for %.0f s)",
                            now - down_since,
                            now - started,
                        )
                        down_since = None
            if not worker.done():  # asked to stop: procrastinate stops gracefully
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
                break
            error = None if worker.cancelled() else worker.exception()
            if error is not None and not _is_database_error(error):
                log.error("the worker failed: %s (started again in %g s)", _one_line(error), wait_s)
            elif down_since is None:
                down_since = time.monotonic()
                log.warning(
                    "worker lost PostgreSQL (%s): started again when it answers, every %g to %g s",
                    _one_line(error) if error is not None else errors.last or "no detail",
                    wait_s,
                    restart_max_s,
                )
            restarts += 1
            await first_of(stop.wait(), asyncio.sleep(wait_s))
            wait_s = min(restart_max_s, wait_s * 2)
    finally:
        for logger in loggers:
            logger.removeFilter(errors)
    return restarts


_PROCRASTINATE_LOGGERS = ("worker", "worker.worker", "utils", "manager", "periodic", "app")
"""procrastinate's loggers that report its database errors (``worker.worker``: the worker's
own, named after it)."""


async def queue_depth(connector: Any) -> tuple[int, int]:
    """(waiting, running) ``run_batch`` jobs; ``connector`` is the app's procrastinate
    connector. A job stays ``doing`` when its worker was killed: only jobs of workers whose
    heartbeat is recent count as running."""
    row = await connector.execute_query_one_async(_QUEUE_DEPTH, queue=QUEUE, task=_RUN_BATCH)
    return int(row["waiting"]), int(row["running"])


async def delete_succeeded(connector: Any) -> None:
    """Delete the queue's succeeded jobs, at most 10,000 per call (failed ones are kept)."""
    await connector.execute_query_async(_DELETE_SUCCEEDED, queue=QUEUE)


async def fail_stalled(app: Any) -> int:
    """Mark failed the queue's jobs left ``doing`` by workers that stopped beating (killed):
    procrastinate leaves them so for ever. Their slots need nothing: they are planned again
    once their claims' lease runs out. Returns how many were marked (logged as a warning)."""
    from procrastinate.jobs import Status  # noqa: PLC0415 - optional dependency

    manager = app.job_manager
    stalled = [
        job
        for job in await manager.get_stalled_jobs(
            queue=QUEUE, seconds_since_heartbeat=_STALLED_AFTER_S
        )
        if job.id is not None
    ]
    for job in stalled:
        await manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
    if stalled:
        log.warning(
            "%d job(s) of workers that stopped without finishing them marked failed; their "
            "checks run again once their claims' lease runs out",
            len(stalled),
        )
    return len(stalled)


_STALLED_AFTER_S = 30
"""A worker silent this long is gone: its ``doing`` jobs are stalled (it beats every 10 s)."""

# Waiting and running run_batch jobs; a running job's worker beats every 10 s.
_QUEUE_DEPTH = """
select count(*) filter (where j.status = 'todo') as waiting,
       count(*) filter (where j.status = 'doing'
                          and w.last_heartbeat > now() - interval '30 seconds') as running
from procrastinate_jobs j
left join procrastinate_workers w on w.id = j.worker_id
where j.queue_name = %(queue)s and j.task_name = %(task)s and j.status in ('todo', 'doing')
"""

# Succeeded jobs of our queue (their events go with them, ON DELETE CASCADE); a periodic
# job still referenced by procrastinate's defer bookkeeping stays until that moves on.
_DELETE_SUCCEEDED = """
delete from procrastinate_jobs
where id in (
    select j.id from procrastinate_jobs j
    where j.queue_name = %(queue)s and j.status = 'succeeded'
      and not exists (select 1 from procrastinate_periodic_defers d where d.job_id = j.id)
    limit 10000
)
"""


async def ensure_procrastinate_schema(database_url: str) -> bool:
    """Apply procrastinate's schema if the database lacks it; True if it was applied.

    One transaction under an advisory lock, so workers starting together apply it once.
    """
    import psycopg  # noqa: PLC0415 - optional dependency
    from procrastinate.schema import SchemaManager  # noqa: PLC0415

    async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('integration_health.procrastinate'))"
        )
        cursor = await conn.execute("SELECT to_regclass('public.procrastinate_jobs') IS NOT NULL")
        row = await cursor.fetchone()
        if row is not None and row[0]:
            return False
        await conn.execute(SchemaManager.get_schema())
        return True


def make_runtime(
    store: Store, registry: CheckRegistry, options: SchedulerOptions | None = None
) -> WorkerRuntime:
    """A runtime whose scheduler is used only for its plan/claim/execute steps."""
    scheduler = Scheduler(store, registry, options=options, clock=utcnow)
    return WorkerRuntime(store=store, registry=registry, scheduler=scheduler)
