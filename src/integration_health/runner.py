"""Run the checks of an organisation in parallel, each against a hard deadline.

How the deadline holds whatever a check does
--------------------------------------------
Every check runs as its own task and is raced against its deadline (the task's end and a
``call_later`` timer wake the same future: :func:`asyncio.wait` without its bookkeeping). When
the deadline passes the runner cancels the task and **does not wait for it**: the result is
recorded as ``unreachable``/``timeout`` at once. A check that swallows
:class:`asyncio.CancelledError` therefore cannot delay the run; it keeps running in the
background (held in :data:`ABANDONED`) until it returns, and is logged if it ends more than
:data:`IGNORED_CANCEL_WARN_S` after ``cancel()`` without raising ``CancelledError`` (or stops
more than :data:`SLOW_STOP_WARN_S` after it) — measured from ``cancel()``, so that a burst of
deadlines the loop reaches late produces no false warnings.

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
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from .checks import BrokenIntegration, CheckRegistry, HealthCheck, default_registry
from .config import IntegrationConfigBase
from .errors import ConfigError, UnknownIntegrationType
from .model import ErrorCode, HealthResult, utcnow
from .policy import IntegrationState, StatusRules, apply_status_rules, next_state
from .redaction import Redactor
from .settings import Settings
from .store import open_store
from .store.base import ResultWrite, StatusRecord, Store
from .transport_errors import classify_exception

__all__ = [
    "ABANDONED",
    "CheckOutcome",
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


def _run_check(check: HealthCheck[Any], org_id: UUID, config: IntegrationConfigBase) -> Any:
    """Start a check: a coroutine for async checks, a daemon thread for plain functions."""
    method = check.check
    if inspect.iscoroutinefunction(method):
        return method(org_id, config)
    return run_blocking(method, org_id, config)


IGNORED_CANCEL_WARN_S = 0.05
"""A cancelled check that ends without raising ``CancelledError`` more than this long after
``cancel()`` is logged as having ignored the cancellation."""
SLOW_STOP_WARN_S = 1.0
"""A cancelled check that does stop (raises ``CancelledError``) but only this long after
``cancel()`` is logged as slow to stop. Generous on purpose: when many deadlines fall together,
the loop itself takes a while to deliver every cancellation, and a check that honours it is
not to blame for that."""


def _abandon(task: asyncio.Future[Any], item: Integration, when: str) -> None:
    """Cancel ``task`` without waiting for it; log it if it keeps running after ``cancel()``.

    The overrun is measured from the ``cancel()`` call, not from the deadline, so a check that
    stops promptly once cancelled is never reported, however late the loop got to it.
    """
    cancelled_at = time.monotonic()
    task.cancel()
    if task.done():
        return
    ABANDONED.add(task)

    def reap(done: asyncio.Future[Any]) -> None:
        ABANDONED.discard(done)
        overrun = time.monotonic() - cancelled_at
        if done.cancelled():
            if overrun > SLOW_STOP_WARN_S:
                log.warning(
                    "check %s:%s stopped %.1f s after it was cancelled %s (slow to stop)",
                    item.integration_type,
                    item.integration_id,
                    overrun,
                    when,
                )
            return
        done.exception()  # retrieve it, so asyncio does not log "never retrieved"
        if overrun > IGNORED_CANCEL_WARN_S:
            log.warning(
                "check %s:%s ended %.1f s after it was cancelled %s (it ignored cancellation)",
                item.integration_type,
                item.integration_id,
                overrun,
                when,
            )

    task.add_done_callback(reap)


async def _check_one(
    item: Integration,
    *,
    org_id: UUID,
    registry: CheckRegistry,
    rules: StatusRules,
    timeout_s: float,
    environ: Mapping[str, str] | None,
    clock: Callable[[], datetime] = utcnow,
) -> HealthResult:
    """Run one check to a result stamped with ``clock()`` when it ended; never raises
    (except for the run's own cancellation)."""
    result = await _check_result(
        item, org_id=org_id, registry=registry, rules=rules, timeout_s=timeout_s, environ=environ
    )
    return result.model_copy(update={"checked_at": clock()})


async def _check_result(
    item: Integration,
    *,
    org_id: UUID,
    registry: CheckRegistry,
    rules: StatusRules,
    timeout_s: float,
    environ: Mapping[str, str] | None,
) -> HealthResult:
    if isinstance(item, BrokenIntegration):
        return HealthResult.unreachable(ErrorCode.CONFIG_INVALID, item.problem, 0)
    try:
        check = registry.check_for(item.integration_type)
        config, secrets = item.resolve(environ)
    except (ConfigError, UnknownIntegrationType) as exc:
        return HealthResult.unreachable(ErrorCode.CONFIG_INVALID, str(exc), 0)
    redactor = Redactor(secrets) if secrets else _NO_SECRETS
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        task: asyncio.Future[Any] = asyncio.ensure_future(_run_check(check, org_id, config))
    except Exception as exc:  # noqa: BLE001 - a check that fails before it even starts
        return _from_exception(exc, 0.0, redactor)
    # The race of asyncio.wait({task}, timeout=…), without its sets and counters: whichever
    # comes first, the task's end or the deadline, wakes ``waiter``.
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(timeout_s, wake)
    try:
        await waiter
    except asyncio.CancelledError:
        timer.cancel()
        task.remove_done_callback(wake)
        _abandon(task, item, "with its run")
        raise
    timer.cancel()
    elapsed_ms = (time.monotonic() - started) * 1000
    if not task.done():
        task.remove_done_callback(wake)
        _abandon(task, item, "at its deadline")
        return HealthResult.unreachable(
            ErrorCode.TIMEOUT,
            f"No answer within {timeout_s:g} s: the host may be down or overloaded.",
            elapsed_ms,
            details={"timeout_s": timeout_s},
        )
    if task.cancelled():
        return HealthResult.unreachable(
            ErrorCode.INTERNAL, "The check was cancelled by itself.", elapsed_ms
        )
    error = task.exception()
    if error is not None:
        return _from_exception(error, elapsed_ms, redactor)
    result = task.result()
    if not isinstance(result, HealthResult):
        return HealthResult.unreachable(
            ErrorCode.INTERNAL,
            f"The {item.integration_type} check returned {type(result).__name__}, "
            "not a HealthResult (a bug in the adapter).",
            elapsed_ms,
        )
    result = apply_status_rules(config, result, rules)
    return _redact(result, redactor)


_NO_SECRETS = Redactor()
"""The redactor of a check without secrets (it still masks secret-shaped substrings)."""


def _from_exception(exc: BaseException, elapsed_ms: float, redactor: Redactor) -> HealthResult:
    code, message = classify_exception(exc)
    return HealthResult.unreachable(code, redactor.text(message), elapsed_ms)


def _redact(result: HealthResult, redactor: Redactor) -> HealthResult:
    error = redactor.text(result.error) if result.error else result.error
    details = redactor.obj(result.details)
    if error == result.error and details == result.details:
        return result
    return result.model_copy(update={"error": error, "details": details})


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
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    results: list[HealthResult | None] = [None] * len(items)
    queue = iter(range(len(items)))
    slots = registry.slots

    async def worker() -> None:
        for index in queue:
            item = items[index]
            async with slots:
                result = await _check_one(
                    item,
                    org_id=item.org_id,
                    registry=registry,
                    rules=rules,
                    timeout_s=timeout_s,
                    environ=environ,
                    clock=clock,
                )
            results[index] = result
            if on_result is not None:
                on_result(CheckOutcome(item, result))

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(items)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        raise
    return [
        CheckOutcome(item, result)
        for item, result in zip(items, results, strict=True)
        if result is not None
    ]
