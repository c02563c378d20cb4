"""The runner's cancellation warnings: measured from cancel(), never false for prompt checks."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Literal

import pytest

from integration_health import (
    CheckRegistry,
    ErrorCode,
    HealthResult,
    HealthStatus,
    run_health_checks,
)
from integration_health import runner as runner_module
from integration_health.config import IntegrationConfigBase
from integration_health.runner import ABANDONED
from integration_health.testing import FakeConfig

RUNNER_LOG = "integration_health.runner"


class LingerConfig(IntegrationConfigBase):
    """A check that, once cancelled, keeps running ``linger_s`` more seconds."""

    integration_type: Literal["linger"] = "linger"
    linger_s: float = 0.3
    reraise: bool = False
    """True: it re-raises CancelledError after lingering (slow to stop); False: it returns."""


class LingerCheck:
    integration_type = "linger"

    def __init__(self) -> None:
        self.cancelled_at: list[float] = []

    async def check(self, org_id: uuid.UUID, config: LingerConfig) -> HealthResult:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled_at.append(time.monotonic())
            await asyncio.sleep(config.linger_s)
            if config.reraise:
                raise
        return HealthResult.healthy(1)


def fake(org_id: uuid.UUID, name: str, **fields: object) -> FakeConfig:
    return FakeConfig(integration_id=uuid.uuid4(), org_id=org_id, name=name, **fields)  # type: ignore[arg-type]


def linger(org_id: uuid.UUID, **fields: object) -> LingerConfig:
    return LingerConfig(integration_id=uuid.uuid4(), org_id=org_id, name="linger", **fields)  # type: ignore[arg-type]


def block_loop_at(delay_s: float, block_s: float) -> None:
    """Keep the event loop busy from ``delay_s`` for ``block_s`` (a burst of other work)."""
    asyncio.get_running_loop().call_later(delay_s, time.sleep, block_s)


async def wait_reaped(timeout_s: float = 3.0) -> None:
    ends = time.monotonic() + timeout_s
    while ABANDONED and time.monotonic() < ends:
        await asyncio.sleep(0.02)
    assert not ABANDONED


def runner_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == RUNNER_LOG and r.levelno >= logging.WARNING]


async def test_checks_stopping_promptly_are_not_reported_when_the_loop_is_late(
    registry: CheckRegistry, org_id: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty checks honour cancellation, but the loop reaches their deadline 0.3 s late:
    they time out and no "ignored cancellation" warning is logged."""
    caplog.set_level(logging.WARNING, logger=RUNNER_LOG)
    items = [fake(org_id, f"slow{i}", delay_s=30) for i in range(20)]
    block_loop_at(0.1, 0.4)  # busy from 0.1 s to 0.5 s: the 0.2 s deadlines fire at ~0.5 s
    outcomes = await run_health_checks(
        org_id, integrations=items, store=None, registry=registry, timeout_s=0.2
    )
    assert all(o.result.error_code is ErrorCode.TIMEOUT for o in outcomes)
    assert min(o.result.latency_ms for o in outcomes) >= 350  # the loop really was late
    await wait_reaped()
    assert runner_warnings(caplog) == []


async def test_cancelling_the_run_reports_no_prompt_check(
    registry: CheckRegistry, org_id: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    """A run cancelled (shutdown) while a well-behaved check is in flight logs no warning."""
    caplog.set_level(logging.WARNING, logger=RUNNER_LOG)
    task = asyncio.create_task(
        run_health_checks(
            org_id, integrations=[fake(org_id, "slow", delay_s=30)], store=None, registry=registry
        )
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_reaped()
    assert runner_warnings(caplog) == []


async def test_ignored_cancellation_is_reported_with_the_time_since_cancel(
    registry: CheckRegistry, org_id: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    """A check that returns 0.3 s after being cancelled is reported once, with ~0.3 s — not
    with the extra 0.4 s the loop took to reach its deadline."""
    caplog.set_level(logging.WARNING, logger=RUNNER_LOG)
    check = LingerCheck()
    registry.register_check(LingerConfig, check)
    block_loop_at(0.1, 0.5)  # the 0.2 s deadline fires at ~0.6 s
    item = linger(org_id, linger_s=0.3)
    [(_, result)] = await run_health_checks(
        org_id, integrations=[item], store=None, registry=registry, timeout_s=0.2
    )
    assert result.error_code is ErrorCode.TIMEOUT
    await wait_reaped()
    [record] = runner_warnings(caplog)
    assert "ignored cancellation" in record.getMessage()
    assert "at its deadline" in record.getMessage()
    overrun = record.args[2]  # type: ignore[index]
    assert isinstance(overrun, float)
    assert 0.28 <= overrun < 0.7  # measured from the deadline it would be ≥ 0.7 s


async def test_check_slow_to_stop_is_reported(
    registry: CheckRegistry,
    org_id: uuid.UUID,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A check that re-raises CancelledError only after cleaning up for longer than
    SLOW_STOP_WARN_S is reported as slow to stop; a prompt one is not."""
    monkeypatch.setattr(runner_module, "SLOW_STOP_WARN_S", 0.15)
    caplog.set_level(logging.WARNING, logger=RUNNER_LOG)
    check = LingerCheck()
    registry.register_check(LingerConfig, check)
    slow = linger(org_id, linger_s=0.3, reraise=True)
    prompt = linger(org_id, linger_s=0.0, reraise=True)
    outcomes = await run_health_checks(
        org_id, integrations=[slow, prompt], store=None, registry=registry, timeout_s=0.1
    )
    assert [o.result.error_code for o in outcomes] == [ErrorCode.TIMEOUT, ErrorCode.TIMEOUT]
    await wait_reaped()
    [record] = runner_warnings(caplog)
    assert "slow to stop" in record.getMessage()
    assert str(slow.integration_id) in record.getMessage()
    assert len(check.cancelled_at) == 2


async def test_deadline_race_leaves_nothing_behind(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """Checks that finish in time leave no pending timer: the loop has nothing scheduled
    for their deadlines after the run."""
    items = [fake(org_id, f"quick{i}") for i in range(10)]
    loop = asyncio.get_running_loop()
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    outcomes = await run_health_checks(
        org_id, integrations=items, store=None, registry=registry, timeout_s=30
    )
    assert all(o.result.ok for o in outcomes)
    pending = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert len(pending) <= before


async def test_a_stuck_check_does_not_hold_up_the_queue(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """With one slot, a check that ignores its cancellation is left behind at its deadline and
    the next checks still run at once, in order, each with its own result."""
    stubborn = fake(org_id, "stubborn", outcome="swallow_cancel", delay_s=1.0)
    quick = [fake(org_id, f"quick{i}") for i in range(3)]
    started = time.monotonic()
    outcomes = await asyncio.wait_for(  # a queue nobody takes over would never finish
        run_health_checks(
            org_id,
            integrations=[stubborn, *quick],
            store=None,
            registry=registry,
            timeout_s=0.2,
            concurrency=1,
        ),
        timeout=5,
    )
    assert time.monotonic() - started < 0.6
    assert [o.integration.name for o in outcomes] == ["stubborn", "quick0", "quick1", "quick2"]
    assert outcomes[0].result.error_code is ErrorCode.TIMEOUT
    assert all(o.result.status is HealthStatus.HEALTHY for o in outcomes[1:])
    await wait_reaped()


async def test_cancelling_a_run_gives_its_slots_back(org_id: uuid.UUID) -> None:
    """A run cancelled mid-check frees its process-wide slots: the next run's two checks run
    side by side."""
    from integration_health import Settings
    from integration_health.testing import fake_registry

    registry, _check, _ = fake_registry(settings=Settings(concurrency=2), with_builtins=False)
    first = asyncio.create_task(
        run_health_checks(
            org_id,
            integrations=[fake(org_id, f"slow{i}", delay_s=30) for i in range(2)],
            store=None,
            registry=registry,
        )
    )
    await asyncio.sleep(0.1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await wait_reaped()
    started = time.monotonic()
    outcomes = await asyncio.wait_for(  # a leaked slot would make it wait for ever
        run_health_checks(
            org_id,
            integrations=[fake(org_id, f"next{i}", delay_s=0.3) for i in range(2)],
            store=None,
            registry=registry,
        ),
        timeout=5,
    )
    assert time.monotonic() - started < 0.55  # in parallel, not 0.6 s one after the other
    assert all(o.result.status is HealthStatus.HEALTHY for o in outcomes)


async def test_timed_out_slot_is_given_back_at_the_deadline(org_id: uuid.UUID) -> None:
    """The process-wide slot of a check that ignores cancellation is freed at its deadline,
    not when the check finally ends."""
    from integration_health import Settings
    from integration_health.testing import fake_registry

    registry, _check, _ = fake_registry(settings=Settings(concurrency=1), with_builtins=False)
    stubborn = fake(org_id, "stubborn", outcome="swallow_cancel", delay_s=1.5)
    await run_health_checks(
        org_id, integrations=[stubborn], store=None, registry=registry, timeout_s=0.1
    )
    started = time.monotonic()
    [(_, result)] = await asyncio.wait_for(
        run_health_checks(
            org_id, integrations=[fake(org_id, "next")], store=None, registry=registry
        ),
        timeout=5,
    )
    assert time.monotonic() - started < 0.5  # not waiting ~1.4 s for the stubborn check
    assert result.status is HealthStatus.HEALTHY
    await wait_reaped(timeout_s=3.0)


async def test_timeout_is_delivered_at_the_deadline_not_after_the_check_unwinds(
    registry: CheckRegistry, org_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that takes 0.3 s to clean up after cancel() (and then stops, within the grace
    the run gives it) has its timeout delivered at its deadline: callers never wait for a
    check's clean-up."""
    monkeypatch.setattr(runner_module, "IGNORED_CANCEL_WARN_S", 0.6)  # no give-up in between
    check = LingerCheck()
    registry.register_check(LingerConfig, check)
    delivered: list[float] = []
    started = time.monotonic()
    outcomes = await run_health_checks(
        org_id,
        integrations=[linger(org_id, linger_s=0.3, reraise=True)],
        store=None,
        registry=registry,
        timeout_s=0.2,
        on_result=lambda _outcome: delivered.append(time.monotonic() - started),
    )
    [(_, result)] = outcomes
    assert result.error_code is ErrorCode.TIMEOUT
    assert 200 <= result.latency_ms < 300
    assert len(delivered) == 1  # recorded once, not again when the check stopped
    assert 0.2 <= delivered[0] < 0.4  # after the clean-up it would be ≥ 0.5 s
    assert time.monotonic() - started >= 0.5  # the lane did wait for its check to stop
    await wait_reaped()
