"""The in-process scheduler: plans and runs every due check, over SQLite or PostgreSQL.

One pass (:meth:`Scheduler.run_pass`):

1. read ``now`` once; load due checks from the store; warm up what is due soon;
2. plan (pure :func:`~integration_health.scheduling.planner.plan_checks`): floors, paused
   types, per-type budgets, fair order across organisations;
3. claim each (integration, slot) — a slot already claimed or done is skipped, so a second
   scheduler, a late pass or a retried job never runs it again;
4. run the checks (the runner's hard deadlines), log drift past 5 minutes;
5. write the results, each completing its slot in the same transaction — in chunks of
   ``write_every`` while the rest of the batch still runs (one write at a time), the last
   chunk once the batch has finished;
6. pause a type whose vendor keeps rate-limiting us; lift pauses that ended.

:meth:`Scheduler.run` repeats passes until asked to stop, overlapping them: the next pass plans
while the previous one's last checks still run (see :meth:`Scheduler.run`); stopping lets the
running passes end (bounded by the check deadline), writes what finished and returns.

Store outages (:class:`~integration_health.errors.StoreUnavailable`): inside :meth:`run`, results
that cannot be written are kept in a bounded in-memory buffer (``buffer_limit``, oldest dropped
beyond it, counted) and written first thing at the next passes, until they land. A retried
write is idempotent: each result completes its claimed slot in the same transaction, so a
batch that committed but whose acknowledgement was lost writes nothing the second time. While
the store is unreachable no pass plans or claims anything; the loop logs the outage once, backs
off (doubling from ``tick_s`` up to ``outage_backoff_max_s``) and logs again when it recovers.
:meth:`Scheduler.buffer_state` is what ``/healthz`` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prometheus_client import Counter, Gauge

from .. import metrics
from ..checks import BrokenIntegration, CheckRegistry, IntegrationRecord
from ..config import IntegrationConfigBase
from ..errors import StoreError, StoreUnavailable
from ..model import ErrorCode, HealthResult, HealthStatus, utcnow
from ..policy import IntegrationState, StatusRules, next_check_at
from ..runner import CheckOutcome, CheckPool
from ..store.base import (
    BUDGET_WINDOW,
    INITIAL_SLOT,
    DueCheck,
    ResultWrite,
    SlotClaim,
    StatusRecord,
    Store,
    TypeMode,
)
from .planner import (
    Candidate,
    Integration,
    Plan,
    PlannedCheck,
    plan_checks,
    rate_limit_switch,
)

__all__ = [
    "BufferState",
    "PassReport",
    "Scheduler",
    "SchedulerOptions",
    "default_worker_id",
    "state_of",
]

log = logging.getLogger(__name__)

BUFFERED_RESULTS = Gauge(
    "integration_health_scheduler_buffered_results",
    "Results kept in memory because the store could not be written (retried every pass).",
    registry=metrics.REGISTRY,
)
DROPPED_RESULTS = Counter(
    "integration_health_scheduler_dropped_results",
    "Buffered results dropped: the buffer was full, or the store refused them for good.",
    ["reason"],
    registry=metrics.REGISTRY,
)
STORE_OUTAGES = Counter(
    "integration_health_scheduler_store_outages",
    "Times the scheduler found its store unreachable after it had been reachable.",
    registry=metrics.REGISTRY,
)


def state_of(record: StatusRecord | None) -> IntegrationState | None:
    """The policy's view of a stored status row."""
    if record is None:
        return None
    return IntegrationState(
        status=record.status,
        checked_at=record.checked_at,
        consecutive_failures=record.consecutive_failures,
        last_healthy_at=record.last_healthy_at,
        next_check_at=record.next_check_at,
    )


async def first_of(*waits: Awaitable[Any]) -> None:
    """Wait until the first of ``waits`` completes. Coroutines are wrapped and cancelled once
    one completes; tasks and futures passed in are left to run."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait, future in zip(waits, futures, strict=True):
            if future is not wait:  # ours: a coroutine we wrapped
                future.cancel()


def default_worker_id() -> str:
    """``host:pid:random`` — unique per process, readable in logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


_PRUNE_EVERY = timedelta(hours=1)
_READ_ON = 2
"""A pass reads one batch of due checks (earliest first). Only when checks held back (paused
type, spent budget, floor not reached) left the plan short of a full window does it read on,
this many batches deep, leaving out the held types. Each row read costs ~15–35 µs of this
process's CPU (decoded, its record built, compared with the parsed one): reading two batches
for every pass, as before, made ~25 % of the scheduling's own CPU
(``bench/end_to_end.py --instant``, docs/benchmarks.md run P)."""
_LANES_LINGER_S = 2.0
"""How long the check pool's lanes wait for the next batch before they end (passes follow
each other within a fraction of a second while much is due)."""
_PARSED_WINDOWS = 2
"""The parse cache holds the rows of this many batches; beyond that, the entries added
longest ago (checks run passes ago) make room, see :meth:`Scheduler.parse`."""
_PRUNE_BATCH = 10_000
_PRUNE_BATCHES = 2
"""Batches of old slot runs deleted per pass at most. A pruning round starts once an hour and
goes on at every pass until a batch comes back short: it keeps up with any rate at which runs
age out (1,000,000 integrations every 15 minutes age 4 million an hour; a pass every second
deletes up to 20,000), and no pass spends long on it."""


@dataclass(frozen=True)
class SchedulerOptions:
    """Tuning of the scheduler (defaults suit most deployments)."""

    tick_s: float = 5.0
    """Seconds between planning passes when there is nothing left to do."""
    batch_size: int = 500
    """Most checks one pass plans, claims and runs (a pass's cost grows with its batch, not
    with the number of integrations; 500 kept a concurrency of 1,000 busiest against fast
    vendors, docs/benchmarks.md, run U)."""
    lease_s: float = 120.0
    """A claimed slot whose worker has not finished it after this long may be taken over."""
    warmup_s: float = 30.0
    """How far ahead to warm up (open pools, refresh tokens) checks that are due soon."""
    drift_warning_s: float = 300.0
    """Starting a check this much later than its slot is logged as a warning and counted."""
    cold_after_s: float = 600.0
    """A type idle this long makes its next check a cold start (logged)."""
    budgets_per_minute: Mapping[str, int] = field(default_factory=dict)
    """Most checks started per minute, per integration type (types not listed: unlimited)."""
    rate_limit_threshold: int = 5
    """This many rate-limited results of a type within ``rate_limit_window`` pause the type."""
    rate_limit_window: timedelta = timedelta(minutes=15)
    rate_limit_cooldown: timedelta = timedelta(hours=1)
    """How long active checks of a rate-limited type stay paused (sync outcomes continue)."""
    buffer_limit: int = 100_000
    """Most results kept in memory while the store cannot be written; beyond it the oldest
    are dropped (logged as a warning and counted in
    ``integration_health_scheduler_dropped_results_total``)."""
    outage_backoff_max_s: float = 30.0
    """Longest wait between passes while the store is unreachable (the wait doubles from
    ``tick_s`` with every failed pass)."""
    write_every: int = 200
    """Results are written in chunks of this many while the rest of the batch still runs
    (one write at a time per scheduler; the last chunk once the batch has finished)."""
    runs_retention_s: float = 86_400.0
    """Slot runs older than this are deleted (at most hourly, in batches): a run guards its
    slot only while it can be claimed again, i.e. within the lease."""

    def __post_init__(self) -> None:
        if self.runs_retention_s < self.lease_s:
            raise ValueError("runs_retention_s must be at least lease_s")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.write_every < 1:
            raise ValueError(f"write_every must be at least 1, not {self.write_every}")
        if self.buffer_limit < 1:
            raise ValueError(f"buffer_limit must be at least 1, not {self.buffer_limit}")
        if self.rate_limit_threshold < 1:
            raise ValueError(
                f"rate_limit_threshold must be at least 1, not {self.rate_limit_threshold}"
            )
        if self.rate_limit_window <= timedelta(0) or self.rate_limit_cooldown <= timedelta(0):
            raise ValueError("rate_limit_window and rate_limit_cooldown must be positive")
        for kind, per_minute in self.budgets_per_minute.items():
            if per_minute < 1:
                raise ValueError(
                    f"the budget of {kind!r} must be at least 1 check per minute, not {per_minute}"
                )
        if self.outage_backoff_max_s < self.tick_s:
            object.__setattr__(self, "outage_backoff_max_s", self.tick_s)


@dataclass
class PassReport:
    """What one pass did."""

    at: datetime
    due: int = 0
    ran: int = 0
    written: int = 0
    skipped_claims: int = 0
    deferred_budget: dict[str, int] = field(default_factory=dict)
    paused: dict[str, int] = field(default_factory=dict)
    drift_warnings: int = 0
    outcomes: list[CheckOutcome] = field(default_factory=list)
    buffered: int = 0
    """Results of this pass kept in memory because the store could not be written."""
    flushed: int = 0
    """Results of earlier passes written from the buffer at the start of this pass."""


@dataclass(frozen=True)
class BufferState:
    """Results waiting for the store, and the store's last failure (``/healthz`` shows it)."""

    size: int
    """Results in memory, not yet written."""
    limit: int
    """:attr:`SchedulerOptions.buffer_limit`."""
    oldest_age_s: float | None
    """How long the oldest buffered result has waited (``None``: the buffer is empty)."""
    dropped: int
    """Results dropped since start (buffer full, or refused by the store for good)."""
    store_error: str | None
    """Why the store was last unreachable; ``None`` once a pass succeeded again."""
    store_unavailable_since: datetime | None
    """When the current outage began (``None``: the store answers)."""


@dataclass
class _ChunkedWrites:
    """What the writer of one batch did with its chunks."""

    not_done: int = 0
    """Results not written because another worker had completed their slot."""
    outage: StoreUnavailable | None = None
    """The first outage; this chunk and every later one were not tried."""
    unwritten: list[ResultWrite] = field(default_factory=list)
    """The results of the chunks that were not written because of :attr:`outage`."""


class Scheduler:
    """Plans and runs due checks; several may share a store (slots are claimed)."""

    def __init__(
        self,
        store: Store,
        registry: CheckRegistry,
        *,
        options: SchedulerOptions | None = None,
        worker: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        rules: StatusRules | None = None,
        environ: Mapping[str, str] | None = None,
        after_pass: Sequence[Callable[[PassReport], Awaitable[None]]] = (),
    ) -> None:
        self.store = store
        self.registry = registry
        self.options = options or SchedulerOptions()
        self.worker = worker or default_worker_id()
        self.clock = clock
        self.rules = rules or StatusRules(registry.settings.degraded_latency_ms)
        self.environ = environ
        self.after_pass = list(after_pass)
        """Called with each pass's report once its results are written (alerting hooks here);
        a failing hook is logged and does not stop the scheduler."""
        self.last_pass_at: datetime | None = None
        """When the last pass completed (the heartbeat ``/healthz`` reads)."""
        self.last_error: str | None = None
        self._upcoming: tuple[datetime, list[DueCheck]] | None = None
        self._parsed: dict[UUID, tuple[IntegrationRecord, Integration]] = {}
        self._pool: CheckPool | None = None
        self._check_counters: dict[tuple[str, HealthStatus, ErrorCode | None], Any] = {}
        self._latency_histograms: dict[str, Any] = {}
        self._pruned_at: datetime | None = None
        """When the last pruning round started."""
        self._pruning: int | None = None
        """Runs deleted so far by the pruning round in progress (``None``: none is)."""
        self._last_activity: dict[str, float] = {}
        self._buffer: deque[tuple[datetime, ResultWrite]] = deque()
        self._dropped = 0
        self._store_error: str | None = None
        self._unavailable_since: datetime | None = None
        self._in_flight = 0
        """Checks being executed (claimed, started or waiting for a lane, no result yet)."""
        self._below: list[tuple[int, asyncio.Future[None]]] = []
        """Waiters of :meth:`wait_below`: (limit, future)."""
        self._finishing = asyncio.Lock()
        """Overlapping passes (:meth:`run`) run their after-pass hooks one at a time."""

    # -- results waiting for the store ---------------------------------------------------------

    def buffer_state(self) -> BufferState:
        """The buffer of unwritten results and the store's last failure, right now."""
        oldest = (self.clock() - self._buffer[0][0]).total_seconds() if self._buffer else None
        return BufferState(
            size=len(self._buffer),
            limit=self.options.buffer_limit,
            oldest_age_s=None if oldest is None else max(0.0, oldest),
            dropped=self._dropped,
            store_error=self._store_error,
            store_unavailable_since=self._unavailable_since,
        )

    def _keep(self, writes: Sequence[ResultWrite], exc: StoreUnavailable) -> None:
        """Buffer ``writes`` (the store could not take them), dropping the oldest if full."""
        now = self.clock()
        self._buffer.extend((now, w) for w in writes)
        self._trim()
        self._store_down(exc)

    def _trim(self) -> None:
        """Drop the oldest buffered results beyond ``buffer_limit`` (counted, logged)."""
        excess = len(self._buffer) - self.options.buffer_limit
        if excess > 0:
            for _ in range(excess):
                self._buffer.popleft()
            self._dropped += excess
            DROPPED_RESULTS.labels("buffer_full").inc(excess)
            log.warning(
                "result buffer full (limit %d): dropped the %d oldest unwritten result(s)",
                self.options.buffer_limit,
                excess,
            )
        BUFFERED_RESULTS.set(len(self._buffer))

    def _store_down(self, exc: StoreUnavailable) -> None:
        self._store_error = str(exc)
        if self._unavailable_since is None:
            self._unavailable_since = self.clock()
            STORE_OUTAGES.inc()
            log.warning(
                "store unavailable, scheduling paused: %s — %d result(s) kept in memory "
                "(limit %d) and retried; passes back off up to %g s",
                exc,
                len(self._buffer),
                self.options.buffer_limit,
                self.options.outage_backoff_max_s,
            )

    def _store_up(self, flushed: int) -> None:
        if self._unavailable_since is None:
            return
        down_s = (self.clock() - self._unavailable_since).total_seconds()
        log.warning(
            "store reachable again after %.0f s: %d buffered result(s) written, scheduling resumed",
            down_s,
            flushed,
        )
        self._unavailable_since = None
        self._store_error = None

    async def flush_buffer(self) -> int:
        """Write the buffered results, oldest first, in batches; returns how many landed.

        Raises :class:`StoreUnavailable` while the store is still unreachable (what is left
        stays buffered). A batch the store refuses for another reason is retried one result
        at a time, and only the results it still refuses are dropped (logged, counted).
        Results whose slot was completed meanwhile (a write that committed although its
        acknowledgement was lost, or a slot taken over after its lease) write nothing.
        """
        written = 0
        while self._buffer:
            # Taken out while they are written: a pass running meanwhile (:meth:`run` overlaps
            # them) may buffer more and drop the oldest, which must not be these.
            taken = [
                self._buffer.popleft()
                for _ in range(min(self.options.batch_size, len(self._buffer)))
            ]
            BUFFERED_RESULTS.set(len(self._buffer))
            batch = [w for _, w in taken]
            landed = False
            try:
                try:
                    written += await self.store.record_results(batch)
                except StoreUnavailable:
                    raise
                except StoreError as exc:
                    written += await self._write_one_by_one(batch, exc)
                landed = True
            except StoreUnavailable as exc:
                self._store_down(exc)
                raise
            finally:
                if not landed:  # refused for now, or cancelled: first again, oldest first
                    self._buffer.extendleft(reversed(taken))
                    self._trim()  # passes meanwhile may have filled the buffer up
        return written

    async def _write_one_by_one(self, batch: list[ResultWrite], exc: StoreError) -> int:
        log.error(
            "the store refused a batch of %d buffered result(s) (%s): writing them one by one",
            len(batch),
            exc,
        )
        written = 0
        for write in batch:
            try:
                written += await self.store.record_results([write])
            except StoreUnavailable:
                raise
            except StoreError as one:
                self._dropped += 1
                DROPPED_RESULTS.labels("refused").inc()
                log.error(
                    "dropped the buffered result of integration %s (slot %s): %s",
                    write.integration_id,
                    write.slot_at.isoformat() if write.slot_at else "none",
                    one,
                )
        return written

    # -- one pass -----------------------------------------------------------------------------

    async def run_pass(
        self, at: datetime | None = None, *, buffer_on_outage: bool = False
    ) -> PassReport:
        """Plan and run what is due at ``at`` (default: now).

        Results buffered by earlier passes are written first; while that fails the pass
        raises :class:`StoreUnavailable` before planning anything. With
        ``buffer_on_outage`` (how :meth:`run` calls it), results whose write fails because
        the store is unreachable are buffered instead of raised.
        """
        report, held, previous = await self._start_pass(at or self.clock())
        await self._complete_pass(report, held, previous, buffer_on_outage=buffer_on_outage)
        return report

    async def _start_pass(
        self, at: datetime, *, hide_own_claims: bool = False
    ) -> tuple[PassReport, list[PlannedCheck], dict[UUID, IntegrationState | None]]:
        """A pass up to its checks: flush the buffer, plan, warm up, claim."""
        report = PassReport(at=at)
        if self._buffer:
            report.flushed = await self.flush_buffer()
        plan, previous = await self.plan(at, report, hide_own_claims=hide_own_claims)
        await self.warm_up(at)
        held = await self.claim(plan.run, worker=self.worker, at=at, report=report)
        return report, held, previous

    async def _complete_pass(
        self,
        report: PassReport,
        held: list[PlannedCheck],
        previous: Mapping[UUID, IntegrationState | None],
        *,
        buffer_on_outage: bool,
        counted: bool = False,
    ) -> None:
        """The rest of a pass: run the checks it holds, write them, finish the pass."""
        if held:
            await self.execute(
                held,
                previous,
                worker=self.worker,
                at=report.at,
                report=report,
                buffer_on_outage=buffer_on_outage,
                counted=counted,
            )
        if not report.buffered:
            self._store_up(report.flushed)
        await self.finish_pass(report)

    async def plan(
        self,
        at: datetime,
        report: PassReport,
        *,
        max_checks: int | None = None,
        hide_own_claims: bool = False,
    ) -> tuple[Plan, dict[UUID, IntegrationState | None]]:
        """Load due checks and plan at most ``max_checks`` of them (default: a batch);
        returns the plan and each one's previous state. ``hide_own_claims``: leave out the
        slots this scheduler holds too (another of its passes is running them)."""
        # One query serves planning and warm-up: the checks due by the end of the warm-up
        # window, earliest first; those due now come first, the rest are only warmed up.
        most = self.options.batch_size if max_checks is None else max(1, max_checks)
        # Checks whose slot a live batch of another worker holds (claimed within the lease,
        # not written yet: queued or running elsewhere) are left out, so that planning again
        # before they finish moves on to the checks after them. Our own claims are listed
        # while none of our passes runs: their results were dropped (or the pass failed), so
        # they run again; while one runs, they are its checks and are left out too.
        claimed_since = at - timedelta(seconds=self.options.lease_s)
        mine = None if hide_own_claims else self.worker
        upcoming = await self.store.list_due(
            at + timedelta(seconds=self.options.warmup_s),
            limit=most,
            claimed_since=claimed_since,
            claimed_by_me=mine,
        )
        self._upcoming = (at, upcoming)
        due = [d for d in upcoming if d.slot_at <= at]
        modes = await self._current_modes(at)
        budgets = await self._budgets(at)
        candidates = [Candidate(self.parse(d.integration), d.status) for d in due]
        plan = plan_checks(candidates, at=at, type_modes=modes, budgets=budgets, max_checks=most)
        held = set(plan.paused) | {kind for kind, count in plan.deferred_budget.items() if count}
        if (held or plan.not_yet) and len(upcoming) >= most and len(plan.run) < most:
            # The window was full and checks held back (paused type, spent budget, floor not
            # reached) took room in it: read on, without the held types, so that a vendor
            # with more due checks than the window — or a head of checks waiting for their
            # floor — does not hold every other check up until its pause or floor ends.
            more = await self.store.list_due(
                at,
                limit=most * _READ_ON,
                exclude_types=held,
                claimed_since=claimed_since,
                claimed_by_me=mine,
            )
            seen = {c.integration.integration_id for c in candidates}
            extra = [
                Candidate(self.parse(d.integration), d.status)
                for d in more
                if d.integration.integration_id not in seen
            ]
            left = dict(budgets)
            for p in plan.run:
                kind = p.integration.integration_type
                if kind in left:
                    left[kind] -= 1
            plan.run.extend(
                plan_checks(
                    extra,
                    at=at,
                    type_modes=modes,
                    budgets=left,
                    max_checks=most - len(plan.run),
                ).run
            )
            candidates.extend(extra)
        report.due = len(plan.run)
        report.deferred_budget = plan.deferred_budget
        for kind in budgets:
            metrics.BUDGET_HELD.labels(kind).set(plan.deferred_budget.get(kind, 0))
        report.paused = plan.paused
        previous = {c.integration.integration_id: state_of(c.status) for c in candidates}
        return plan, previous

    def parse(self, record: IntegrationRecord) -> Integration:
        """``registry.from_record(record)``, remembered while the stored record is unchanged.

        Warm-up parses the rows planning read, and the rows a pass does not run (held back,
        or due only within the warm-up window) come back at the next pass; a record compares
        equal (its columns and raw config) far faster than pydantic validates it. References
        stay unresolved in the cache: secrets are resolved per check. The cache holds
        ``_PARSED_WINDOWS`` batches of rows at most: when full, the batch of entries added
        longest ago goes, at once (the due rows move on by a batch per pass, so those are
        checks already run), so its memory follows the batch size, not the number of
        integrations.
        """
        cache = self._parsed
        cached = cache.get(record.integration_id)
        if cached is not None and (cached[0] is record or cached[0] == record):
            return cached[1]
        batch = self.options.batch_size
        if len(cache) >= _PARSED_WINDOWS * batch:  # dicts keep insertion order: oldest first
            for key in list(itertools.islice(cache, batch)):
                del cache[key]
        parsed = self.registry.from_record(record)
        cache[record.integration_id] = (record, parsed)
        return parsed

    async def claim(
        self, planned: list[PlannedCheck], *, worker: str, at: datetime, report: PassReport
    ) -> list[PlannedCheck]:
        """Claim the slots of ``planned`` for ``worker``; returns those it holds.

        Budgeted types are claimed against their budget in the store, atomically with every
        other scheduler and worker on it (:meth:`Store.claim_slots`'s ``budgets``): when two
        plans counted the same remainder, the later claims get what is left, the rest are
        skipped (counted as skipped claims) and come due again at a later pass."""
        if not planned:
            return []
        budgeted = self.options.budgets_per_minute
        claims = [
            SlotClaim(
                p.integration.org_id,
                p.integration.integration_id,
                p.slot_at,
                # kept with the claim for the budget's count (``_budgets``)
                p.integration.integration_type
                if p.integration.integration_type in budgeted
                else None,
            )
            for p in planned
        ]
        got = await self.store.claim_slots(
            claims,
            worker=worker,
            at=at,
            lease_s=self.options.lease_s,
            budgets=budgeted or None,
        )
        held = {(c.integration_id, c.slot_at) for c in got}
        kept = [p for p in planned if (p.integration.integration_id, p.slot_at) in held]
        skipped = len(planned) - len(kept)
        report.skipped_claims += skipped
        if skipped:
            metrics.SLOTS_SKIPPED.inc(skipped)
        return kept

    async def finish_pass(self, report: PassReport) -> None:
        """Prune old slot runs (hourly), run the after-pass hooks and beat the heart."""
        async with self._finishing:
            await self._prune_runs(report.at)
            for hook in self.after_pass:
                try:
                    await hook(report)
                except Exception as exc:  # noqa: BLE001 - a hook must not stop scheduling
                    log.error("after-pass hook %r failed: %s: %s", hook, type(exc).__name__, exc)
            self.last_pass_at = self.clock()
            metrics.SCHEDULER_HEARTBEAT.set(time.time())

    async def _prune_runs(self, at: datetime) -> None:
        """Delete slot runs older than ``runs_retention_s``: a round starts once an hour and
        deletes up to :data:`_PRUNE_BATCHES` batches per pass until it has caught up."""
        if self._pruning is None:
            if self._pruned_at is not None and at - self._pruned_at < _PRUNE_EVERY:
                return
            self._pruned_at, self._pruning = at, 0
        before = at - timedelta(seconds=self.options.runs_retention_s)
        try:
            for _ in range(_PRUNE_BATCHES):
                count = await self.store.prune_runs(before, limit=_PRUNE_BATCH)
                self._pruning += count
                if count < _PRUNE_BATCH:
                    break
            else:
                return  # more to delete: the next pass goes on
        except StoreError as exc:  # the next round tries again; checks go on meanwhile
            log.warning("pruning old slot runs failed: %s", exc)
            self._pruning = None
            return
        deleted, self._pruning = self._pruning, None
        if deleted:
            log.info("pruned %d slot runs claimed before %s", deleted, before.isoformat())

    async def _current_modes(self, at: datetime) -> dict[str, TypeMode]:
        modes = {}
        for mode in await self.store.list_type_modes():
            if mode.passive_until <= at:
                await self.store.set_type_mode(None, integration_type=mode.integration_type)
                log.warning(
                    "active checks of %s resume: the rate-limit pause ended at %s",
                    mode.integration_type,
                    mode.passive_until.isoformat(),
                )
            else:
                modes[mode.integration_type] = mode
        return modes

    async def _budgets(self, at: datetime) -> dict[str, int]:
        """What is left of each budgeted type's request budget at ``at``: its per-minute
        budget less the checks of the type claimed in the minute before, by any process on
        this store — counted when claimed, not when run, so a pass planned while another's
        checks have not started yet (:meth:`run` overlaps passes; other workers plan too)
        sees them spent."""
        per_minute = self.options.budgets_per_minute
        if not per_minute:
            return {}
        started = await self.store.count_claims(per_minute, since=at - BUDGET_WINDOW)
        return {kind: max(0, n - started.get(kind, 0)) for kind, n in per_minute.items()}

    async def warm_up(self, at: datetime) -> None:
        """Warm up the checks due within ``options.warmup_s`` of ``at``.

        After :meth:`plan` for the same ``at`` this reuses what planning read.
        """
        if self._upcoming is not None and self._upcoming[0] == at:
            soon = self._upcoming[1]
            self._upcoming = None
        else:
            soon = await self.store.list_due(
                at + timedelta(seconds=self.options.warmup_s), limit=self.options.batch_size
            )
        items = [self.parse(d.integration) for d in soon]
        configs = [i for i in items if isinstance(i, IntegrationConfigBase)]
        if configs:
            await self.registry.warm_up(configs, environ=self.environ)

    async def execute(
        self,
        to_run: list[PlannedCheck],
        previous: Mapping[UUID, IntegrationState | None],
        *,
        worker: str,
        at: datetime,
        report: PassReport,
        buffer_on_outage: bool = False,
        counted: bool = False,
    ) -> None:
        """Run checks whose slots ``worker`` holds, and write their results.

        The checks count as in flight (:meth:`run`'s pipeline) until each one's result;
        ``counted``: the caller counted them already (:meth:`run`, before this task starts).

        Results are written in chunks of ``options.write_every`` as checks finish, while the
        rest of the batch runs (one write at a time, in order), and the rest after it. When
        the store is unreachable for a chunk, that chunk and every later one are not tried:
        with ``buffer_on_outage`` they are kept in the scheduler's buffer (see
        :meth:`flush_buffer`), otherwise :class:`StoreUnavailable` is raised once the batch
        has finished. Rate-limit switches are decided after the last write.
        """
        left = len(to_run)  # of this batch, still counted in self._in_flight
        if not counted:
            self._in_flight += left
        try:
            if not to_run:
                return
            started = self.clock()
            drift = {id(p): self._drift(p, started) for p in to_run}
            report.drift_warnings += sum(
                1 for d in drift.values() if d is not None and d > self.options.drift_warning_s
            )
            self._note_cold_starts(to_run)
            # Results are written in chunks of ``write_every`` while the rest of the batch still
            # runs: one writer task per batch takes the chunks in order, so writes never overlap.
            by_item: dict[int, list[PlannedCheck]] = defaultdict(list)
            for p in to_run:
                by_item[id(p.integration)].append(p)
            pending: list[ResultWrite] = []
            chunks: asyncio.Queue[list[ResultWrite] | None] = asyncio.Queue()
            chunked = _ChunkedWrites()

            def on_result(outcome: CheckOutcome) -> None:
                nonlocal left
                left -= 1
                self._ended(1)
                integration, result = outcome
                planned = by_item[id(integration)].pop(0)  # outcomes arrive in completion order
                before = previous.get(integration.integration_id)
                pending.append(
                    self._write_for(
                        planned, integration, result, before, drift[id(planned)], worker
                    )
                )
                self._count(integration.integration_type, result)
                if len(pending) >= self.options.write_every:
                    chunks.put_nowait(pending.copy())
                    pending.clear()

            writer = asyncio.create_task(self._write_chunks(chunks, chunked, report))
            try:
                outcomes = await self._check_pool().run(
                    [p.integration for p in to_run], on_result=on_result
                )
            except BaseException:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                raise
            if pending:
                chunks.put_nowait(pending)
            chunks.put_nowait(None)
            await writer  # a refusal other than an outage is raised here, after the batch
            report.ran += len(outcomes)
            report.outcomes.extend(outcomes)
            if chunked.outage is not None:
                if not buffer_on_outage:
                    raise chunked.outage
                self._keep(chunked.unwritten, chunked.outage)
                report.buffered += len(chunked.unwritten)
                return  # the rate-limit switch reads the store: it waits for the next results
            if chunked.not_done:
                log.info(
                    "%d result(s) not written: their slot was completed by another worker",
                    chunked.not_done,
                )
            await self._rate_limit_switches(outcomes, at)
        finally:
            # Checks that never ended: the batch failed before they ran, or the run was
            # cancelled or failed (every result ends its own check in on_result).
            self._ended(left)

    def _check_pool(self) -> CheckPool:
        """The lanes every batch of this scheduler runs its checks in, one after the other
        as lanes come free (:class:`~integration_health.runner.CheckPool`): a batch planned
        while another runs queues behind it instead of starting lanes of its own that wait
        for the registry's slots. A new pool for a new event loop or changed settings."""
        settings = self.registry.settings
        pool = self._pool
        if (
            pool is None
            or pool.loop is not asyncio.get_running_loop()
            or pool.timeout_s != settings.timeout_s
            or pool.concurrency != settings.concurrency
        ):
            if pool is not None:
                pool.close()
            pool = self._pool = CheckPool(
                registry=self.registry,
                rules=self.rules,
                timeout_s=settings.timeout_s,
                concurrency=settings.concurrency,
                environ=self.environ,
                clock=self.clock,
                linger_s=_LANES_LINGER_S,
            )
        return pool

    def close_lanes(self) -> None:
        """Let the check pool's idle lanes end now instead of after ``_LANES_LINGER_S``
        (:meth:`run` does this as it ends; a worker when it stops)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _ended(self, count: int) -> None:
        """``count`` checks of a batch have ended (or will not run)."""
        if count:
            self._in_flight -= count
            if self._below:
                self._release_below()

    @property
    def in_flight(self) -> int:
        """Checks of this scheduler's batches that have not ended yet (running, or waiting
        for one of the registry's slots)."""
        return self._in_flight

    async def wait_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` checks are in flight (at once if so already).

        Woken once, when the count falls below ``limit``, not at every check that ends (each
        of a worker's jobs waits so: up to 11 of them with the default settings)."""
        while self._in_flight >= limit:
            waiter = asyncio.get_running_loop().create_future()
            entry = (limit, waiter)
            self._below.append(entry)
            try:
                await waiter
            finally:
                if entry in self._below:
                    self._below.remove(entry)

    def _release_below(self) -> None:
        """Wake the :meth:`wait_below` waiters whose limit the count is now below."""
        count = self._in_flight
        waiting = []
        for entry in self._below:
            limit, waiter = entry
            if count < limit:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append(entry)
        self._below = waiting

    def _pipeline_limit(self) -> int:
        """:meth:`run` plans the next pass once fewer checks than this are in flight: the
        lanes' worth plus half a batch of checks waiting for a lane, which covers a pass's
        planning time (so the lanes do not run dry at a batch's tail, or wait behind a check
        that hangs until its deadline)."""
        return self.registry.settings.concurrency + self.options.batch_size // 2

    async def _write_chunks(
        self,
        chunks: asyncio.Queue[list[ResultWrite] | None],
        state: _ChunkedWrites,
        report: PassReport,
    ) -> None:
        """Write each chunk in turn until ``None``; from the first outage on, keep them."""
        while (chunk := await chunks.get()) is not None:
            if state.outage is not None:
                state.unwritten.extend(chunk)
                continue
            try:
                written = await self.store.record_results(chunk)
            except StoreUnavailable as exc:
                state.outage = exc
                state.unwritten.extend(chunk)
                continue
            report.written += written
            state.not_done += len(chunk) - written

    def _count(self, integration_type: str, result: HealthResult) -> None:
        """Count a result in the check metrics (label children kept: ``labels()`` costs
        several microseconds per call, and there are few distinct label sets)."""
        key = (integration_type, result.status, result.error_code)
        counter = self._check_counters.get(key)
        if counter is None:
            counter = self._check_counters[key] = metrics.CHECKS.labels(
                integration_type,
                result.status.value,
                result.error_code.value if result.error_code else "",
            )
        counter.inc()
        latency = self._latency_histograms.get(integration_type)
        if latency is None:
            latency = self._latency_histograms[integration_type] = metrics.CHECK_LATENCY.labels(
                integration_type
            )
        latency.observe(result.latency_ms / 1000)

    def _drift(self, planned: PlannedCheck, started: datetime) -> float | None:
        if planned.slot_at == INITIAL_SLOT:
            return None
        drift_s = max(0.0, (started - planned.due_at).total_seconds())
        metrics.SCHEDULER_DRIFT.observe(drift_s)
        if drift_s > self.options.drift_warning_s:
            metrics.DRIFT_WARNINGS.inc()
            log.warning(
                "check of %s (%s) for slot %s started at %s: %.1f min late",
                planned.integration.name,
                planned.integration.integration_id,
                planned.due_at.isoformat(),
                started.isoformat(),
                drift_s / 60,
            )
        return drift_s

    def _note_cold_starts(self, planned: list[PlannedCheck]) -> None:
        now = time.monotonic()
        for kind in {p.integration.integration_type for p in planned}:
            last = self._last_activity.get(kind)
            if last is not None and now - last > self.options.cold_after_s:
                metrics.COLD_STARTS.labels(kind).inc()
                log.info("cold start: first %s check after %.0f min idle", kind, (now - last) / 60)
            self._last_activity[kind] = now

    def _write_for(
        self,
        planned: PlannedCheck,
        integration: IntegrationConfigBase | BrokenIntegration,
        result: HealthResult,
        before: IntegrationState | None,
        drift_s: float | None,
        worker: str,
    ) -> ResultWrite:
        if isinstance(integration, IntegrationConfigBase):
            next_at = next_check_at(before, integration, result)
        else:
            next_at = result.checked_at + timedelta(seconds=integration.check_interval_s)
        return ResultWrite(
            org_id=integration.org_id,
            integration_id=integration.integration_id,
            integration_type=integration.integration_type,
            result=result,
            next_check_at=next_at,
            slot_at=planned.slot_at,
            worker=worker,
            drift_ms=None if drift_s is None else round(drift_s * 1000),
        )

    async def _rate_limit_switches(self, outcomes: list[CheckOutcome], at: datetime) -> None:
        limited_types = {
            o.integration.integration_type
            for o in outcomes
            if o.result.error_code is ErrorCode.RATE_LIMITED
            and o.result.status is not HealthStatus.HEALTHY
        }
        if not limited_types:
            return
        current = {m.integration_type: m for m in await self.store.list_type_modes()}
        options = self.options
        for kind in sorted(limited_types):
            count = await self.store.count_results(
                kind, ErrorCode.RATE_LIMITED, since=at - options.rate_limit_window
            )
            decided = rate_limit_switch(
                kind,
                rate_limited_recently=count,
                threshold=options.rate_limit_threshold,
                at=at,
                cooldown=options.rate_limit_cooldown,
                current=current.get(kind),
            )
            if decided is not None and decided is not current.get(kind):
                await self.store.set_type_mode(decided, integration_type=kind)
                metrics.TYPE_PAUSES.labels(kind).inc()
                log.warning(
                    "%s: %s (until %s)", kind, decided.reason, decided.passive_until.isoformat()
                )

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run passes until ``stop`` is set; the passes in progress finish and are written.

        Passes overlap: once a pass has claimed its checks, they run in the background and
        the next pass plans as soon as fewer than :meth:`_pipeline_limit` checks are in
        flight — at the running batch's tail, or while a few of its checks wait for their
        deadline (a hung host), instead of after its last check. Checks in flight stay
        within the registry's concurrency; a pass planned while others run leaves out the
        slots this scheduler holds (:meth:`plan`'s ``hide_own_claims``), so no check runs
        twice. Planning, claiming and the buffer's flush happen one pass at a time.
        """
        wait_s = self.options.tick_s
        running: set[asyncio.Task[None]] = set()
        async with self.registry:
            try:
                while not stop.is_set():
                    await self._wait_for_room(stop)
                    if stop.is_set():
                        break
                    started = None
                    try:
                        started = await self._start_pass(
                            self.clock(), hide_own_claims=bool(running)
                        )
                        self.last_error = None
                    except Exception as exc:  # noqa: BLE001 - the loop must survive a bad pass
                        self._pass_failed(exc)
                    if started is not None:
                        # in flight from now: the next pass waits for room before the task runs
                        self._in_flight += len(started[1])
                        task = asyncio.create_task(self._complete_in_background(*started))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        wait_s = self.options.tick_s
                        if len(started[1]) >= self.options.batch_size:
                            continue  # a full batch: more is due right now
                    elif self._unavailable_since is not None:  # back off while it is down
                        wait_s = min(wait_s * 2, self.options.outage_backoff_max_s)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=wait_s)
            except BaseException:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                self._in_flight = 0  # every pass has ended (one cancelled before it began too)
                self.close_lanes()
                raise
            await asyncio.gather(*running, return_exceptions=True)
            self.close_lanes()
            await self._flush_before_exit()

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        """Wait until fewer checks than :meth:`_pipeline_limit` are in flight, or ``stop``."""
        if not stop.is_set():
            await first_of(self.wait_below(self._pipeline_limit()), stop.wait())

    async def _complete_in_background(
        self,
        report: PassReport,
        held: list[PlannedCheck],
        previous: Mapping[UUID, IntegrationState | None],
    ) -> None:
        try:
            await self._complete_pass(report, held, previous, buffer_on_outage=True, counted=True)
        except Exception as exc:  # noqa: BLE001 - the loop must survive a bad pass
            self._pass_failed(exc)

    def _pass_failed(self, exc: Exception) -> None:
        """Note a failed pass (:meth:`run` goes on); an outage is logged once per outage."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, StoreUnavailable):
            self._store_down(exc)
        else:
            log.error("scheduler pass failed: %s", self.last_error)

    async def _flush_before_exit(self) -> None:
        if not self._buffer:
            return
        try:
            flushed = await self.flush_buffer()
        except StoreError as exc:
            lost = len(self._buffer)
            self._dropped += lost
            DROPPED_RESULTS.labels("shutdown").inc(lost)
            self._buffer.clear()
            BUFFERED_RESULTS.set(0)
            log.error(
                "stopping with the store unreachable: %d buffered result(s) lost (%s)", lost, exc
            )
        else:
            self._store_up(flushed)
