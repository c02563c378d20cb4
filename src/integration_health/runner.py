"""Run the checks of an organisation in parallel, each against a hard deadline.

How the deadline holds whatever a check does
--------------------------------------------
Checks run inside the run's lanes (:class:`_Lane`: a task that takes the next integration from
the queue, one check at a time). A check's deadline runs from when its lane takes it — for the
first wave, from the run's start, so that the burst of starting them all does not push the
run's end back. At a check's deadline its lane's task is cancelled, which ends
a check that honours cancellation at once: the result is ``unreachable``/``timeout``. A check
that swallows :class:`asyncio.CancelledError` cannot delay the run: :data:`IGNORED_CANCEL_WARN_S`
after ``cancel()`` the run records its timeout, frees its slot, gives its lane up **without
waiting for it** (held in :data:`ABANDONED` until the check ends) and starts a new lane. It is
logged if it ends more than :data:`IGNORED_CANCEL_WARN_S` after ``cancel()`` without raising
``CancelledError`` (or stops more than :data:`SLOW_STOP_WARN_S` after it) — measured from
``cancel()``, so that a burst of deadlines the loop reaches late produces no false warnings.

A check whose ``check`` is a plain function (not ``async``), or an async check that hands
blocking work to :func:`run_blocking`, runs in a daemon thread of its own. Python cannot kill a
thread, but the runner never joins it: the run returns on time, the thread is abandoned and
reaps itself when the call returns, and being a daemon it never blocks the process from
exiting. The one thing no in-process runner can survive is an ``async`` check that blocks the
event loop itself (``time.sleep`` inside ``async def``): adapters must not do that — the
adapter conformance tests catch it — and the loop watchdog logs it when it happens.

One failure never hides another (``Promise.allSettled`` semantics): each check's exception is
turned into its own ``unreachable`` result, with the error text redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from .checks import BrokenIntegration, CheckRegistry, HealthCheck, default_registry
from .config import IntegrationConfigBase
from .errors import ConfigError, UnknownIntegrationType
from .model import ErrorCode, HealthResult, HealthStatus, utcnow
from .policy import IntegrationState, StatusRules, apply_status_rules, next_state
from .redaction import Redactor
from .settings import Settings
from .store import open_store
from .store.base import ResultWrite, StatusRecord, Store
from .transport_errors import classify_exception

__all__ = [
    "ABANDONED",
    "CheckOutcome",
    "CheckPool",
    "build_writes",
    "execute_checks",
    "run_blocking",
    "run_health_checks",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

Integration = IntegrationConfigBase | BrokenIntegration


class CheckOutcome(NamedTuple):
    """One integration and the result of its check (unpacks as a 2-tuple)."""

    integration: Integration
    result: HealthResult


ABANDONED: set[asyncio.Future[Any]] = set()
"""Checks cancelled (at their deadline, or with their run) that have not ended yet."""


class _DefaultStore:
    """Marker: open the store of :class:`~integration_health.settings.Settings`."""


DEFAULT_STORE: Any = _DefaultStore()


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a daemon thread of its own, without ever joining it.

    Cancelling the await (at the check's deadline) returns at once; the thread ends by itself
    when ``fn`` returns. Use it in adapters built on blocking libraries.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def target() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting task, never lost
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(deliver, future.set_exception, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, future.set_result, value)

    name = f"integration-health-blocking:{getattr(fn, '__qualname__', 'call')}"
    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


IGNORED_CANCEL_WARN_S = 0.05
"""A check still running this long after ``cancel()`` has ignored the cancellation: the run
records it as timed out, gives its lane up (see :class:`_Lane`) and goes on without it. If it
then ends without raising ``CancelledError``, that is logged."""
SLOW_STOP_WARN_S = 1.0
"""A cancelled check that does stop (raises ``CancelledError``) but only this long after
``cancel()`` is logged as slow to stop. Generous on purpose: when many deadlines fall together,
the loop itself takes a while to deliver every cancellation, and a check that honours it is
not to blame for that."""


async def _no_check(_org_id: UUID, _config: Any) -> object:  # pragma: no cover - never run
    raise AssertionError("a lane ran a check before CheckPool._prepare set it up")


class _Lane:
    """One worker of a run: a task that runs checks one after the other, and the timer that
    enforces the deadline of the check it is running.

    Checks run inside the lane's task (no task, waiter future and timer of their own: that
    bookkeeping cost ~50 k instructions per check, see docs/benchmarks.md). At the
    deadline the lane's task is cancelled, which ends a check that honours cancellation at
    once. A check still running :data:`IGNORED_CANCEL_WARN_S` later ignores it: the run then
    records the timeout, gives the lane up — its slot is freed, its task left to finish in the
    background (held in :data:`ABANDONED`, logged if it ends late) — and starts a new lane in
    its place. So whatever a check does, its result is recorded within that margin of its
    deadline, and the run ends on time.

    The timer is armed for a lane's first check and not cancelled when a check ends early;
    when it fires it deals with the current check if that check's deadline has passed, and
    otherwise re-arms itself for it: about one timer per lane per ``timeout_s``, not one per
    check.
    """

    __slots__ = (
        "abandoned",
        "anchor",
        "batch",
        "call",
        "cancelled_at",
        "config",
        "deadline",
        "expired_ms",
        "holds_slot",
        "index",
        "pool",
        "recorded",
        "redactor",
        "running",
        "started",
        "started_at",
        "stop_reason",
        "task",
        "timer",
    )

    def __init__(self, pool: CheckPool) -> None:
        self.pool = pool
        self.anchor: tuple[float, float] | None = pool.anchor or (
            time.monotonic(),
            pool.loop.time(),
        )
        """When the lane was started (monotonic, loop time; the run's start for its first
        lanes): its first check's deadline runs from then, see :meth:`begin`."""
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.started = 0.0
        self.index = -1
        self.batch: _Batch | None = None
        """The batch of the check the lane runs (``index`` is its place there)."""
        self.running = False
        self.recorded = False
        """True once the current check's timeout was recorded (at its deadline)."""
        self.holds_slot = False
        self.abandoned = False
        self.expired_ms: float | None = None
        """Set when the deadline cancelled the current check: the time it had waited."""
        self.cancelled_at = 0.0
        self.stop_reason = ""
        """``"at its deadline"`` or ``"with its run"``: why the lane's task was cancelled."""
        self.call: Callable[[UUID, Any], Awaitable[object]] = _no_check
        """What runs the current check (see :func:`_caller`), its resolved config,
        redactor and wall-clock start."""
        self.config: Any = None
        self.redactor = _NO_SECRETS
        self.started_at: datetime | None = None

    # -- the deadline -----------------------------------------------------------------------

    def begin(self, index: int) -> None:
        """A check starts: its deadline is ``timeout_s`` from now — or, for the lane's first
        check, from when the lane was started (unless it had to wait for a slot).

        A run starts all its lanes at once, and opening that many connections in one burst
        takes the loop a while (~0.2–0.4 s of CPU for 1,000 here); counting the first wave's
        deadlines from the run's start keeps the whole run within ``timeout_s`` plus a few
        milliseconds of its start (a check queued behind them gets its full ``timeout_s``
        from when a lane takes it)."""
        loop = self.pool.loop
        self.index = index
        self.expired_ms = None
        self.stop_reason = ""
        self.recorded = False
        anchor = self.anchor
        if anchor is None:
            self.started = time.monotonic()
            self.deadline = loop.time() + self.pool.timeout_s
        else:
            self.anchor = None
            self.started = anchor[0]
            self.deadline = anchor[1] + self.pool.timeout_s
        self.running = True
        if self.timer is None:
            self.timer = loop.call_at(self.deadline, self._fire)

    def _fire(self) -> None:
        self.timer = None
        if not self.running or self.abandoned:
            return
        loop = self.pool.loop
        if self.expired_ms is None:
            if loop.time() < self.deadline:  # armed for an earlier check that ended in time
                self.timer = loop.call_at(self.deadline, self._fire)
                return
            self.expired_ms = (self.pool.noticed_at() - self.started) * 1000
            self.cancel("at its deadline")
            self.timer = loop.call_at(loop.time() + IGNORED_CANCEL_WARN_S, self._fire)
            # The timeout is the result now: it does not wait for the check to unwind.
            self.pool.record_timeout(self)
        else:  # cancelled at the deadline, and still running: it ignores the cancellation
            self.pool.give_up(self)

    def cancel(self, reason: str) -> None:
        assert self.task is not None
        self.stop_reason = reason
        self.cancelled_at = time.monotonic()
        self.task.cancel()

    # -- the process-wide slot --------------------------------------------------------------

    def release_slot(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.pool.slots.release()

    def close(self) -> None:
        self.running = False
        self.release_slot()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def late_stop(self, item: Integration, raised_cancel: bool) -> None:
        """Log a check that stopped (or ended without stopping) late after ``cancel()``."""
        overrun = time.monotonic() - self.cancelled_at
        if raised_cancel:
            if overrun > SLOW_STOP_WARN_S:
                log.warning(
                    "check %s:%s stopped %.1f s after it was cancelled %s (slow to stop)",
                    item.integration_type,
                    item.integration_id,
                    overrun,
                    self.stop_reason,
                )
        elif overrun > IGNORED_CANCEL_WARN_S:
            log.warning(
                "check %s:%s ended %.1f s after it was cancelled %s (it ignored cancellation)",
                item.integration_type,
                item.integration_id,
                overrun,
                self.stop_reason,
            )


class _Batch:
    """One call of :meth:`CheckPool.run` (or :func:`execute_checks`): its items, results and
    the future its caller awaits."""

    __slots__ = ("done", "items", "left", "on_result", "results", "stopped")

    def __init__(
        self,
        items: Sequence[Integration],
        on_result: Callable[[CheckOutcome], None] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.items = items
        self.results: list[HealthResult | None] = [None] * len(items)
        self.on_result = on_result
        self.left = len(items)
        """Items no lane is done with yet: the batch ends at 0 (a check whose timeout was
        recorded at its deadline counts until its lane has unwound it, or given it up)."""
        self.done: asyncio.Future[None] = loop.create_future()
        self.stopped = False
        """Cancelled or failed: its queued items are skipped, its running checks cancelled."""

    def record(self, index: int, result: HealthResult) -> None:
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(CheckOutcome(self.items[index], result))

    def finished_one(self) -> None:
        self.left -= 1
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """End the batch with ``exc`` (raised by :meth:`CheckPool.run`, which stops it)."""
        if not self.done.done():
            self.done.set_exception(exc)


class CheckPool:
    """Lanes that run the checks of successive batches, at most ``concurrency`` at once.

    :func:`execute_checks` runs one batch in a pool of its own. A long-lived caller that
    hands over batch after batch (the scheduler, a worker) keeps one pool: its lanes take the
    next queued check of any batch as soon as they end one, as one call of
    :func:`execute_checks` over every batch would — instead of each batch starting lanes of
    its own, which then wait for the registry's slots and start together, a whole batch in
    one loop iteration, when the batch before them ends. Lanes end when nothing is queued,
    or with ``linger_s``, once nothing was queued for that long (a lane that waits for the
    next batch keeps its task and deadline timer: a new lane per check costs ~4 µs more
    where batches come one after another). The pool must be used on one event loop, inside
    ``async with registry``.
    """

    def __init__(
        self,
        *,
        registry: CheckRegistry,
        rules: StatusRules,
        timeout_s: float,
        concurrency: int,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        linger_s: float = 0.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if linger_s < 0:
            raise ValueError("linger_s must be at least 0")
        self.linger_s = linger_s
        self.registry = registry
        self.slots = registry.slots
        self.rules = rules
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.environ = environ
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.queue: deque[tuple[_Batch, int]] = deque()
        self.lanes: set[_Lane] = set()
        self._noticed: float | None = None
        self.anchor: tuple[float, float] | None = None
        """While lanes are started for a batch: its start (see :meth:`_Lane.begin`)."""
        self.callers: dict[str, Callable[[UUID, Any], Awaitable[object]]] = {}
        """``integration_type`` → how to run its check (see :func:`_caller`), once per pool."""
        self._work_came: asyncio.Future[None] | None = None
        """What lingering lanes await: set when checks are queued, or after ``linger_s``."""
        self._linger_timer: asyncio.TimerHandle | None = None
        self._waiting = 0
        """Lanes lingering for work."""

    @property
    def queued(self) -> int:
        """Checks handed over that no lane has taken yet."""
        return len(self.queue)

    async def run(
        self,
        items: Sequence[Integration],
        *,
        on_result: Callable[[CheckOutcome], None] | None = None,
    ) -> list[CheckOutcome]:
        """Check ``items``; one outcome each, in order (see :func:`execute_checks`).

        They queue behind the checks handed over before them. Cancelling the call (or a
        failing ``on_result``) stops this batch alone: its queued checks are dropped, its
        running ones cancelled and given up; the other batches go on."""
        if self.loop is not asyncio.get_running_loop():
            raise RuntimeError("a CheckPool is used on the event loop it was created on")
        batch = _Batch(items, on_result, self.loop)
        if items:
            self.queue.extend((batch, index) for index in range(len(items)))
            lingering = self._waiting
            self._wake_lingering()
            # The new lanes share one anchor, so the first wave's deadlines fall together and
            # are noticed in one loop iteration (see noticed_at).
            self.anchor = (time.monotonic(), self.loop.time())
            for _ in range(min(self.concurrency - len(self.lanes), len(items) - lingering)):
                self._start_lane()
            self.anchor = None
            try:
                await batch.done
            except BaseException:
                self._stop(batch)
                raise
        return [
            CheckOutcome(item, result)
            for item, result in zip(items, batch.results, strict=True)
            if result is not None
        ]

    def noticed_at(self) -> float:
        """The monotonic time at which the deadlines firing in this loop iteration were
        noticed: the first timer of an iteration reads the clock, the others reuse it.

        When many deadlines fall together (a run's first wave), the loop runs their timers
        one after another; each then records the time its check had waited when the loop
        reached the deadlines, not that plus the time spent cancelling the checks before it
        (~30–60 µs each here: 1,000 of them would add up to ~60 ms). The results follow
        within that burst (``last result`` in docs/benchmarks.md, "Timeout precision")."""
        now = self._noticed
        if now is None:
            now = self._noticed = time.monotonic()
            self.loop.call_soon(self._forget_noticed)  # runs after this iteration's callbacks
        return now

    def _forget_noticed(self) -> None:
        self._noticed = None

    def _start_lane(self) -> None:
        lane = _Lane(self)
        self.lanes.add(lane)
        lane.task = self.loop.create_task(self._work(lane))

    def _wake_lingering(self) -> None:
        """Wake the lanes lingering for work (checks were queued, or ``linger_s`` passed)."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        came, self._work_came = self._work_came, None
        if came is not None and not came.done():
            came.set_result(None)

    async def _linger(self) -> bool:
        """Wait up to ``linger_s`` for checks to be queued; True when some are."""
        until = self.loop.time() + self.linger_s
        while not self.queue:
            if not self.linger_s or self.loop.time() >= until:
                return False
            came = self._work_came
            if came is None:  # one future and one timer for every lane that lingers
                came = self._work_came = self.loop.create_future()
                self._linger_timer = self.loop.call_later(self.linger_s, self._wake_lingering)
            self._waiting += 1
            try:
                await came
            finally:
                self._waiting -= 1
        return True

    def close(self) -> None:
        """Let the lingering lanes end now, and lanes end when nothing is queued from now on
        (checks handed over still run)."""
        self.linger_s = 0.0
        self._wake_lingering()

    def _refill(self) -> None:
        """Start lanes for queued checks after lanes were given up or stopped."""
        for _ in range(min(self.concurrency - len(self.lanes), len(self.queue))):
            self._start_lane()

    async def _work(self, lane: _Lane) -> None:
        """Take the next queued check and run it, inline in this lane's task, until none
        are left (the check's coroutine is awaited right here: no task of its own)."""
        queue = self.queue
        slots = self.slots
        try:
            while queue or (self.linger_s and await self._linger()):
                batch, index = queue.popleft()
                if batch.stopped:
                    continue
                lane.recorded = False  # before any early result, begin() or not
                lane.batch = batch  # from now on: stopping the batch cancels this lane
                if not slots.take():  # a free slot is the rule: nothing to await then
                    await slots.acquire()
                    lane.anchor = None  # waited: the deadline starts with the check
                lane.holds_slot = True
                item = batch.items[index]
                try:
                    result = self._prepare(item, lane, index)
                    if result is None:  # started (lane.begin ran): run the check
                        try:
                            value = await lane.call(item.org_id, lane.config)
                        except asyncio.CancelledError:
                            result = self._cancelled(item, lane)
                            if result is None:
                                raise
                        except Exception as exc:  # noqa: BLE001 - its own result, see _ended
                            result = self._ended(item, lane, None, exc)
                        else:
                            result = self._ended(item, lane, value, None)
                finally:
                    lane.running = False
                    lane.anchor = None  # also when the item never began (a broken config)
                    lane.release_slot()
                if lane.abandoned:
                    return  # the pool recorded this check's timeout and went on without us
                if not lane.recorded:
                    try:
                        batch.record(index, result)
                    except BaseException as exc:  # noqa: BLE001 - from on_result: run() raises it
                        batch.fail(exc)
                lane.batch = None
                batch.finished_one()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - a bug in the runner: its batch raises it
            if lane.batch is not None:
                lane.batch.fail(exc)
        finally:
            lane.close()
            if not lane.abandoned:
                self.lanes.discard(lane)
                if lane.batch is not None:  # it failed (above) or was cancelled mid-check
                    lane.batch.finished_one()
                    lane.batch = None
                if queue:
                    self._refill()

    def _prepare(self, item: Integration, lane: _Lane, index: int) -> HealthResult | None:
        """Set ``lane`` up for ``item``'s check and start its deadline; or the result already,
        for an item that cannot be checked (a broken definition, a missing secret)."""
        clock = self.clock
        if isinstance(item, BrokenIntegration):
            return HealthResult.unreachable(
                ErrorCode.CONFIG_INVALID, item.problem, 0, checked_at=clock()
            )
        try:
            call = self.callers.get(item.integration_type)
            if call is None:
                check = self.registry.check_for(item.integration_type)
                call = self.callers[item.integration_type] = _caller(check)
            config, secrets = item.resolve(self.environ)
        except (ConfigError, UnknownIntegrationType) as exc:
            return HealthResult.unreachable(
                ErrorCode.CONFIG_INVALID, str(exc), 0, checked_at=clock()
            )
        lane.call = call
        lane.config = config
        lane.redactor = Redactor(secrets) if secrets else _NO_SECRETS
        lane.started_at = clock()
        lane.begin(index)
        return None

    def _cancelled(self, item: Integration, lane: _Lane) -> HealthResult | None:
        """The result of a check that raised ``CancelledError``, or None when the lane's task
        must go on raising it (the run is cancelled, or someone else cancelled the task)."""
        task = lane.task
        assert task is not None
        if lane.stop_reason:  # cancelled at the deadline or with the run
            lane.late_stop(item, raised_cancel=True)
            if lane.expired_ms is not None and task.uncancel() == 0 and not lane.abandoned:
                return _timed_out(self, lane.expired_ms)
            return None
        if task.cancelling():
            return None  # someone else cancelled the lane's task: not ours to swallow
        return HealthResult.unreachable(
            ErrorCode.INTERNAL,
            "The check was cancelled by itself.",
            (time.monotonic() - lane.started) * 1000,
            checked_at=self.clock(),
        )

    def _ended(
        self, item: Integration, lane: _Lane, value: object, error: Exception | None
    ) -> HealthResult:
        """The result of a check that returned ``value`` or raised ``error``, stamped with
        ``clock()`` when it ended.

        The adapter's result is copied once at most: status rules, redaction and the
        ``checked_at`` stamp go into the same ``model_copy`` (results are frozen); with the
        default clock, a result the adapter stamped during the check is kept as it is.
        """
        clock = self.clock
        if lane.stop_reason:  # it ended without raising CancelledError: it ignored the cancel
            lane.late_stop(item, raised_cancel=False)
            assert lane.task is not None
            lane.task.uncancel()
            return _timed_out(self, lane.expired_ms or 0.0)  # dropped if the lane was given up
        elapsed_ms = (time.monotonic() - lane.started) * 1000
        if error is not None:
            return _from_exception(error, elapsed_ms, lane.redactor, clock)
        if not isinstance(value, HealthResult):
            return HealthResult.unreachable(
                ErrorCode.INTERNAL,
                f"The {item.integration_type} check returned {type(value).__name__}, "
                "not a HealthResult (a bug in the adapter).",
                elapsed_ms,
                checked_at=clock(),
            )
        config = lane.config
        assert lane.started_at is not None
        result = value
        if (
            value.status is HealthStatus.HEALTHY
            and value.latency_ms > self.rules.latency_threshold_ms(config)
        ):
            result = apply_status_rules(config, value, self.rules)
        # Redaction, and the stamp: copy on change (usually nothing changes).
        redactor = lane.redactor
        said = result.error
        masked = redactor.text(said) if said else said
        details = redactor.obj(result.details)
        restamp = clock is not utcnow or not lane.started_at <= result.checked_at <= utcnow()
        if masked == said and details is result.details and not restamp:
            return result
        update: dict[str, Any] = {}
        if masked != said:
            update["error"] = masked
        if details is not result.details:
            update["details"] = details
        if restamp:
            update["checked_at"] = clock()
        return result.model_copy(update=update)

    def record_timeout(self, lane: _Lane) -> None:
        """Record the timeout of ``lane``'s check, at its deadline."""
        batch = lane.batch
        if lane.recorded or batch is None:
            return
        lane.recorded = True
        try:
            batch.record(lane.index, _timed_out(self, lane.expired_ms or 0.0))
        except BaseException as exc:  # noqa: BLE001 - from on_result: run() raises it
            batch.fail(exc)

    def give_up(self, lane: _Lane) -> None:
        """``lane``'s check ignored its deadline's cancellation: free its slot, leave its task
        to end in the background and start a new lane in its place (the timeout is recorded
        already)."""
        lane.abandoned = True
        lane.release_slot()
        self.lanes.discard(lane)
        assert lane.task is not None
        _abandon(lane.task)
        self.record_timeout(lane)
        batch, lane.batch = lane.batch, None
        if batch is not None:
            batch.finished_one()
        self._refill()  # a lane in its place, if checks wait

    def _stop(self, batch: _Batch) -> None:
        """``batch`` is cancelled (or failed): drop its queued checks and cancel its running
        ones without waiting for them; the other batches' checks go on."""
        batch.stopped = True
        if any(queued is batch for queued, _ in self.queue):
            kept = [entry for entry in self.queue if entry[0] is not batch]
            self.queue.clear()  # in place: the lanes hold the queue itself
            self.queue.extend(kept)
        for lane in [lane for lane in self.lanes if lane.batch is batch]:
            self.lanes.discard(lane)
            lane.abandoned = True
            lane.batch = None
            lane.release_slot()
            if lane.task is not None and not lane.task.done():
                _abandon(lane.task)
                if lane.running:
                    lane.cancel("with its run")
                else:
                    lane.task.cancel()
        self._refill()


def _caller(check: HealthCheck[Any]) -> Callable[[UUID, Any], Awaitable[object]]:
    """How to run ``check``: its own ``check`` for async checks, and for plain functions one
    that runs it in a daemon thread (:func:`run_blocking`)."""
    method = check.check
    if inspect.iscoroutinefunction(method):
        return method
    return functools.partial(run_blocking, method)


def _abandon(task: asyncio.Task[None]) -> None:
    """Hold ``task`` in :data:`ABANDONED` until it ends (however it ends, even unstarted)."""
    ABANDONED.add(task)
    task.add_done_callback(ABANDONED.discard)


def _timed_out(pool: CheckPool, waited_ms: float) -> HealthResult:
    return HealthResult.unreachable(
        ErrorCode.TIMEOUT,
        f"No answer within {pool.timeout_s:g} s: the host may be down or overloaded.",
        waited_ms,
        details={"timeout_s": pool.timeout_s},
        checked_at=pool.clock(),
    )


_NO_SECRETS = Redactor()
"""The redactor of a check without secrets (it still masks secret-shaped substrings)."""


def _from_exception(
    exc: BaseException, elapsed_ms: float, redactor: Redactor, clock: Callable[[], datetime]
) -> HealthResult:
    code, message = classify_exception(exc)
    return HealthResult.unreachable(code, redactor.text(message), elapsed_ms, checked_at=clock())


def _state_of(record: StatusRecord) -> IntegrationState:
    return IntegrationState(
        status=record.status,
        checked_at=record.checked_at,
        consecutive_failures=record.consecutive_failures,
        last_healthy_at=record.last_healthy_at,
        next_check_at=record.next_check_at,
    )


def build_writes(
    outcomes: Sequence[CheckOutcome], previous: Mapping[UUID, StatusRecord]
) -> list[ResultWrite]:
    """The store writes for a run's outcomes (with ``next_check_at`` from the policy)."""
    writes = []
    for integration, result in outcomes:
        before = previous.get(integration.integration_id)
        next_check_at = None
        if isinstance(integration, IntegrationConfigBase):
            state = next_state(_state_of(before) if before else None, integration, result)
            next_check_at = state.next_check_at
        else:
            next_check_at = result.checked_at + timedelta(seconds=integration.check_interval_s)
        writes.append(
            ResultWrite(
                org_id=integration.org_id,
                integration_id=integration.integration_id,
                integration_type=integration.integration_type,
                result=result,
                next_check_at=next_check_at,
            )
        )
    return writes


async def run_health_checks(
    org_id: UUID,
    *,
    integrations: Sequence[Integration] | None = None,
    store: Store | None = DEFAULT_STORE,
    registry: CheckRegistry | None = None,
    timeout_s: float | None = None,
    concurrency: int | None = None,
    rules: StatusRules | None = None,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[CheckOutcome], None] | None = None,
) -> list[CheckOutcome]:
    """Check every enabled, actively monitored integration of ``org_id`` in parallel.

    ``integrations`` defaults to the org's integrations in ``store``; ``store`` defaults to
    the one configured in the environment (``INTEGRATION_HEALTH_DATABASE_URL``) and receives
    every result in one batch — pass ``store=None`` to only return them. Each check is raced
    against ``timeout_s`` (default 10 s). At most ``concurrency`` checks are in flight at once
    for this run (default: the process-wide ``settings.concurrency``, which also bounds all
    runs of the registry together). ``on_result`` is called as each check
    finishes (for progress bars). Returns one :class:`CheckOutcome` per integration, in the
    order of ``integrations``.
    """
    own_store: Store | None = None
    if isinstance(store, _DefaultStore):
        own_store = store = await open_store(Settings().database_url)
    try:
        if registry is None:
            registry = default_registry()
        async with registry:
            return await _run(
                org_id,
                integrations=integrations,
                store=store,
                registry=registry,
                timeout_s=timeout_s if timeout_s is not None else registry.settings.timeout_s,
                concurrency=concurrency or registry.settings.concurrency,
                rules=rules or StatusRules(registry.settings.degraded_latency_ms),
                environ=environ,
                on_result=on_result,
            )
    finally:
        if own_store is not None:
            await own_store.aclose()


async def _run(
    org_id: UUID,
    *,
    integrations: Sequence[Integration] | None,
    store: Store | None,
    registry: CheckRegistry,
    timeout_s: float,
    concurrency: int,
    rules: StatusRules,
    environ: Mapping[str, str] | None,
    on_result: Callable[[CheckOutcome], None] | None,
) -> list[CheckOutcome]:
    if integrations is None:
        if store is None:
            raise ValueError("pass integrations=… or a store to load them from")
        records = await store.list_integrations(org_id)
        integrations = [registry.from_record(record) for record in records]
    for item in integrations:
        if item.org_id != org_id:
            raise ConfigError(
                f"integration {item.integration_id} belongs to organization {item.org_id}, "
                f"not {org_id}"
            )
    due = [item for item in integrations if item.is_checked_actively]
    outcomes = await execute_checks(
        due,
        registry=registry,
        timeout_s=timeout_s,
        concurrency=concurrency,
        rules=rules,
        environ=environ,
        on_result=on_result,
    )
    if store is not None and outcomes:
        previous = {s.integration_id: s for s in await store.list_statuses(org_id)}
        await store.record_results(build_writes(outcomes, previous))
    return outcomes


async def execute_checks(
    items: Sequence[Integration],
    *,
    registry: CheckRegistry,
    timeout_s: float,
    concurrency: int,
    rules: StatusRules,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[CheckOutcome], None] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> list[CheckOutcome]:
    """Check ``items`` (of any organisations) in parallel; one outcome each, in order.

    The building block under :func:`run_health_checks` and the schedulers: no store, no
    filtering — every item given is checked. The caller must hold the registry open. Each
    result's ``checked_at`` is ``clock()`` when its check ended.
    """
    pool = CheckPool(
        registry=registry,
        rules=rules,
        timeout_s=timeout_s,
        concurrency=max(1, concurrency),
        environ=environ,
        clock=clock,
    )
    return await pool.run(items, on_result=on_result)
