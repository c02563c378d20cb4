"""run_health_checks: parallelism, deadlines, error mapping, redaction, writes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Literal

import pytest

from integration_health import (
    BrokenIntegration,
    CheckRegistry,
    ConfigError,
    ErrorCode,
    HealthResult,
    HealthStatus,
    StatusRules,
    run_health_checks,
)
from integration_health.integrations_file import to_records
from integration_health.runner import ABANDONED
from integration_health.store import MemoryStore, Organization
from integration_health.testing import BlockingFakeCheck, BlockingFakeConfig, FakeCheck, FakeConfig


def fake(org_id: uuid.UUID, name: str, **fields: Any) -> FakeConfig:
    return FakeConfig(integration_id=uuid.uuid4(), org_id=org_id, name=name, **fields)


async def test_all_checks_run_in_parallel(
    registry: CheckRegistry, fake_check: FakeCheck, org_id: uuid.UUID
) -> None:
    """Five checks of 0.1–0.5 s take about as long as the slowest, and every one is called."""
    items = [fake(org_id, f"c{i}", delay_s=0.1 * i) for i in range(1, 6)]
    started = time.monotonic()
    outcomes = await run_health_checks(org_id, integrations=items, store=None, registry=registry)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.9
    assert {c.integration_id for c in fake_check.calls} == {i.integration_id for i in items}
    starts = [c.started for c in fake_check.calls]
    assert max(starts) - min(starts) < 0.1  # all started together, not one after another
    assert [o.integration for o in outcomes] == items  # results in the order given
    assert all(o.result.status is HealthStatus.HEALTHY for o in outcomes)


async def test_slow_check_is_cancelled_at_the_deadline(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """A check longer than the timeout becomes unreachable/timeout with latency ≈ time waited."""
    item = fake(org_id, "slow", delay_s=5)
    started = time.monotonic()
    [(_, result)] = await run_health_checks(
        org_id, integrations=[item], store=None, registry=registry, timeout_s=0.3
    )
    assert time.monotonic() - started < 0.6
    assert result.status is HealthStatus.UNREACHABLE
    assert result.error_code is ErrorCode.TIMEOUT
    assert 290 <= result.latency_ms < 500
    assert "0.3 s" in (result.error or "")


async def test_check_that_swallows_cancellation_does_not_delay_the_run(
    registry: CheckRegistry, fake_check: FakeCheck, org_id: uuid.UUID
) -> None:
    """A check ignoring CancelledError is abandoned: the run still ends at the deadline."""
    stubborn = fake(org_id, "stubborn", outcome="swallow_cancel", delay_s=1.0)
    quick = fake(org_id, "quick")
    started = time.monotonic()
    outcomes = await run_health_checks(
        org_id, integrations=[stubborn, quick], store=None, registry=registry, timeout_s=0.2
    )
    assert time.monotonic() - started < 0.5
    by_name = {o.integration.name: o.result for o in outcomes}
    assert by_name["stubborn"].error_code is ErrorCode.TIMEOUT
    assert by_name["quick"].status is HealthStatus.HEALTHY
    assert len(ABANDONED) >= 1  # it is still running, tracked
    await asyncio.sleep(1.0)
    assert fake_check.finished_after_cancel == 1
    assert not ABANDONED  # reaped once it ended


async def test_blocking_check_runs_in_its_own_thread_and_is_abandoned(
    registry: CheckRegistry,
    fakes: tuple[CheckRegistry, FakeCheck, BlockingFakeCheck],
    org_id: uuid.UUID,
) -> None:
    """A plain-function check that blocks for 2 s does not hold the run past its deadline."""
    blocking = BlockingFakeConfig(
        integration_id=uuid.uuid4(), org_id=org_id, name="sdk", delay_s=2.0
    )
    quick = fake(org_id, "quick")
    started = time.monotonic()
    outcomes = await run_health_checks(
        org_id, integrations=[blocking, quick], store=None, registry=registry, timeout_s=0.3
    )
    assert time.monotonic() - started < 0.7
    assert outcomes[0].result.error_code is ErrorCode.TIMEOUT
    assert outcomes[1].result.status is HealthStatus.HEALTHY
    assert len(fakes[2].calls) == 1


async def test_blocking_check_result_is_used_when_in_time(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """A blocking check that finishes in time gives its own result."""
    blocking = BlockingFakeConfig(
        integration_id=uuid.uuid4(), org_id=org_id, name="sdk", outcome="unreachable", delay_s=0.05
    )
    [(_, result)] = await run_health_checks(
        org_id, integrations=[blocking], store=None, registry=registry
    )
    assert result.error_code is ErrorCode.SERVER_ERROR


async def test_raising_check_is_unreachable_with_its_error(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """An exception becomes unreachable/internal with the text; the others are unaffected."""
    items = [
        fake(org_id, "boom", outcome="raise", message="adapter exploded"),
        fake(org_id, "fine"),
        fake(org_id, "down", outcome="unreachable"),
        fake(org_id, "garbage", outcome="return_garbage"),
    ]
    outcomes = await run_health_checks(org_id, integrations=items, store=None, registry=registry)
    boom, fine, down, garbage = (o.result for o in outcomes)
    assert boom.status is HealthStatus.UNREACHABLE
    assert boom.error_code is ErrorCode.INTERNAL
    assert "RuntimeError: adapter exploded" in (boom.error or "")
    assert fine.status is HealthStatus.HEALTHY
    assert down.error_code is ErrorCode.SERVER_ERROR
    assert garbage.error_code is ErrorCode.INTERNAL
    assert "not a HealthResult" in (garbage.error or "")


async def test_secrets_are_redacted_from_errors_and_details(
    registry: CheckRegistry, org_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret that leaks into an error text or exception is masked before it is stored."""
    monkeypatch.setenv("FAKE_SECRET", "canary-5ecret-value")
    leaky = fake(org_id, "leaky", outcome="unreachable", secret="${FAKE_SECRET}")
    raising = fake(org_id, "raising", outcome="raise", secret="${FAKE_SECRET}")
    store = MemoryStore()
    await store.import_definitions([Organization(org_id, "o")], [], to_records([leaky, raising]))
    outcomes = await run_health_checks(
        org_id, integrations=[leaky, raising], store=store, registry=registry
    )
    for _, result in outcomes:
        assert "canary-5ecret-value" not in result.model_dump_json()
        assert "[REDACTED]" in (result.error or "")
    stored = [s.error for s in await store.list_statuses(org_id)]
    history = [
        h.error for i in (leaky, raising) for h in await store.list_history(i.integration_id)
    ]
    assert all("canary-5ecret-value" not in (text or "") for text in stored + history)


async def test_missing_secret_is_config_invalid_without_calling_the_check(
    registry: CheckRegistry, fake_check: FakeCheck, org_id: uuid.UUID
) -> None:
    """An unset ${VAR} gives unreachable/config_invalid naming the variable."""
    item = fake(org_id, "nosecret", secret="${SURELY_NOT_SET_ANYWHERE}")
    [(_, result)] = await run_health_checks(
        org_id, integrations=[item], store=None, registry=registry, environ={}
    )
    assert result.error_code is ErrorCode.CONFIG_INVALID
    assert "SURELY_NOT_SET_ANYWHERE is not set" in (result.error or "")
    assert fake_check.calls == []


async def test_broken_and_unknown_type_integrations_are_config_invalid(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """A stored config that no longer validates is reported, not raised."""
    broken = BrokenIntegration(uuid.uuid4(), org_id, "http", "old", problem="bad url")
    [(_, result)] = await run_health_checks(
        org_id, integrations=[broken], store=None, registry=registry
    )
    assert (result.status, result.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.CONFIG_INVALID,
    )
    assert result.error == "bad url"


async def test_slow_success_is_degraded_by_threshold(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """Healthy but slower than degraded_latency_ms → degraded; per-type and per-integration."""
    default = fake(org_id, "default", latency_ms=2500)
    own = fake(org_id, "own", latency_ms=700, degraded_latency_ms=500)
    fast = fake(org_id, "fast", latency_ms=1999)
    outcomes = await run_health_checks(
        org_id, integrations=[default, own, fast], store=None, registry=registry
    )
    assert [o.result.status for o in outcomes] == [
        HealthStatus.DEGRADED,
        HealthStatus.DEGRADED,
        HealthStatus.HEALTHY,
    ]
    assert outcomes[0].result.error_code is None
    assert "2,500 ms" in (outcomes[0].result.error or "")
    typed = await run_health_checks(
        org_id,
        integrations=[fast],
        store=None,
        registry=registry,
        rules=StatusRules({"fake": 1000}),
    )
    assert typed[0].result.status is HealthStatus.DEGRADED


async def test_only_enabled_active_integrations_run(
    registry: CheckRegistry, fake_check: FakeCheck, org_id: uuid.UUID
) -> None:
    """Disabled and passive integrations are not probed."""
    items = [
        fake(org_id, "on"),
        fake(org_id, "off", enabled=False),
        fake(org_id, "passive", monitoring_mode="passive"),
        fake(org_id, "disabled", monitoring_mode="disabled"),
    ]
    outcomes = await run_health_checks(org_id, integrations=items, store=None, registry=registry)
    assert [o.integration.name for o in outcomes] == ["on"]
    assert len(fake_check.calls) == 1


async def test_integration_of_another_org_is_refused(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """Passing an integration of another organisation is a configuration error."""
    with pytest.raises(ConfigError, match="belongs to organization"):
        await run_health_checks(
            org_id, integrations=[fake(uuid.uuid4(), "x")], store=None, registry=registry
        )
    with pytest.raises(ValueError, match="positive"):
        await run_health_checks(org_id, integrations=[], store=None, registry=registry, timeout_s=0)
    with pytest.raises(ValueError, match="pass integrations"):
        await run_health_checks(org_id, store=None, registry=registry)


async def test_concurrency_is_bounded(
    registry: CheckRegistry, fake_check: FakeCheck, org_id: uuid.UUID
) -> None:
    """With concurrency=4, twelve 0.15 s checks run in three waves."""
    items = [fake(org_id, f"c{i}", delay_s=0.15) for i in range(12)]
    started = time.monotonic()
    await run_health_checks(
        org_id, integrations=items, store=None, registry=registry, concurrency=4
    )
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 0.8
    starts = sorted(c.started for c in fake_check.calls)
    # never more than 4 started within one check's duration
    for i in range(len(starts) - 4):
        assert starts[i + 4] - starts[i] >= 0.14


async def test_process_wide_limit_spans_concurrent_runs(
    fakes: tuple[CheckRegistry, FakeCheck, BlockingFakeCheck], org_id: uuid.UUID
) -> None:
    """The registry's limit (settings.concurrency) bounds all runs together."""
    from integration_health import Settings
    from integration_health.testing import fake_registry

    registry, check, _ = fake_registry(settings=Settings(concurrency=2), with_builtins=False)
    other_org = uuid.uuid4()
    a = [fake(org_id, f"a{i}", delay_s=0.15) for i in range(2)]
    b = [fake(other_org, f"b{i}", delay_s=0.15) for i in range(2)]
    started = time.monotonic()
    await asyncio.gather(
        run_health_checks(org_id, integrations=a, store=None, registry=registry),
        run_health_checks(other_org, integrations=b, store=None, registry=registry),
    )
    assert time.monotonic() - started >= 0.29  # 4 checks, 2 at a time
    assert len(check.calls) == 4


async def test_results_are_written_to_the_store(registry: CheckRegistry, org_id: uuid.UUID) -> None:
    """Each result upserts the status row and adds a history row; next_check_at is set."""
    items = [fake(org_id, "ok"), fake(org_id, "down", outcome="unreachable")]
    store = MemoryStore()
    await store.import_definitions([Organization(org_id, "o")], [], to_records(items))
    await run_health_checks(org_id, store=store, registry=registry)
    await run_health_checks(org_id, store=store, registry=registry)
    statuses = {s.integration_id: s for s in await store.list_statuses(org_id)}
    ok, down = statuses[items[0].integration_id], statuses[items[1].integration_id]
    assert ok.status is HealthStatus.HEALTHY and ok.consecutive_failures == 0
    assert ok.last_healthy_at == ok.checked_at
    assert down.consecutive_failures == 2
    assert down.next_check_at is not None
    # backoff: the second failure in a row waits longer than one interval
    assert (down.next_check_at - down.checked_at).total_seconds() > 900 * 1.5
    assert ok.next_check_at is not None
    assert (ok.next_check_at - ok.checked_at).total_seconds() == 900
    assert len(await store.list_history(items[1].integration_id)) == 2


async def test_run_cancellation_propagates(registry: CheckRegistry, org_id: uuid.UUID) -> None:
    """Cancelling the run (shutdown) cancels it promptly instead of waiting for checks."""
    items = [fake(org_id, "slow", delay_s=5)]
    task = asyncio.create_task(
        run_health_checks(org_id, integrations=items, store=None, registry=registry)
    )
    await asyncio.sleep(0.1)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.2


async def test_default_store_comes_from_settings(
    registry: CheckRegistry, org_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Without store=…, results go to INTEGRATION_HEALTH_DATABASE_URL's store."""
    from integration_health.store import open_store

    url = f"sqlite:///{tmp_path / 'default.db'}"
    monkeypatch.setenv("INTEGRATION_HEALTH_DATABASE_URL", url)
    item = fake(org_id, "x")
    seed = await open_store(url)
    await seed.import_definitions([Organization(org_id, "o")], [], to_records([item]))
    await seed.aclose()
    await run_health_checks(org_id, registry=registry)
    check_store = await open_store(url)
    try:
        assert [s.integration_id for s in await check_store.list_statuses(org_id)] == [
            item.integration_id
        ]
    finally:
        await check_store.aclose()


async def test_every_item_of_a_lane_gets_its_result_after_a_timeout(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """One lane (concurrency 1): a timed-out check, then items that never start a check (a
    broken config, a missing secret), then a healthy one — each gets its own result."""
    slow = fake(org_id, "slow", delay_s=5)
    broken = BrokenIntegration(uuid.uuid4(), org_id, "fake", "broken", problem="bad url")
    missing = fake(org_id, "missing", secret="${IH_TEST_UNSET_VARIABLE}")
    quick = fake(org_id, "quick")
    outcomes = await run_health_checks(
        org_id,
        integrations=[slow, broken, missing, quick],
        store=None,
        registry=registry,
        timeout_s=0.2,
        concurrency=1,
        environ={},
    )
    assert [(o.integration.name, o.result.error_code) for o in outcomes] == [
        ("slow", ErrorCode.TIMEOUT),
        ("broken", ErrorCode.CONFIG_INVALID),
        ("missing", ErrorCode.CONFIG_INVALID),
        ("quick", None),
    ]


class BurstConfig(FakeConfig):
    integration_type: Literal["burst"] = "burst"  # type: ignore[assignment]


class BurstCheck:
    """Spends 30 ms of the loop's time before it waits forever: what opening hundreds of
    connections in one burst costs the loop at a run's start."""

    integration_type = "burst"

    async def check(self, org_id: uuid.UUID, config: BurstConfig) -> HealthResult:
        time.sleep(0.03)
        await asyncio.sleep(10)
        raise AssertionError("not reached")


async def test_first_wave_deadlines_run_from_the_run_start(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """Ten checks that each take the loop 30 ms to start (0.3 s in all) and then never answer,
    timeout 0.4 s, all in flight at once: the run still ends ~0.4 s after it started, not
    0.4 s after the last check got going (0.7 s), and every timeout says ~400 ms waited."""
    registry.register_check(BurstConfig, BurstCheck())
    items = [
        BurstConfig(integration_id=uuid.uuid4(), org_id=org_id, name=f"b{i}") for i in range(10)
    ]
    started = time.monotonic()
    outcomes = await run_health_checks(
        org_id, integrations=items, store=None, registry=registry, timeout_s=0.4, concurrency=10
    )
    elapsed = time.monotonic() - started
    assert elapsed < 0.6, elapsed
    assert [o.result.error_code for o in outcomes] == [ErrorCode.TIMEOUT] * 10
    assert all(400 <= o.result.latency_ms < 550 for o in outcomes), [
        o.result.latency_ms for o in outcomes
    ]


async def test_a_queued_check_gets_its_full_deadline(
    registry: CheckRegistry, org_id: uuid.UUID
) -> None:
    """With one lane, the second slow check's deadline starts when it starts (after the
    first one's 0.2 s), not with the run: both wait ~0.2 s, the run takes ~0.4 s."""
    items = [fake(org_id, "first", delay_s=5), fake(org_id, "second", delay_s=5)]
    started = time.monotonic()
    outcomes = await run_health_checks(
        org_id, integrations=items, store=None, registry=registry, timeout_s=0.2, concurrency=1
    )
    elapsed = time.monotonic() - started
    assert 0.38 <= elapsed < 0.7
    assert all(o.result.error_code is ErrorCode.TIMEOUT for o in outcomes)
    assert all(190 <= o.result.latency_ms < 300 for o in outcomes)
