"""The pure planner and the backoff policy: every scheduling rule, with an explicit clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal

import pytest
from pydantic import ValidationError

from integration_health import ErrorCode, HealthResult, HealthStatus
from integration_health.config import IntegrationConfigBase
from integration_health.policy import (
    BACKOFF_CAP_S,
    BACKOFF_JITTER,
    IntegrationState,
    backoff_delay_s,
    next_check_at,
    next_state,
)
from integration_health.scheduling import (
    Candidate,
    VendorHold,
    plan_checks,
    rate_limit_switch,
    vendor_holds,
)
from integration_health.store import INITIAL_SLOT, StatusRecord, TypeMode

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class CheapConfig(IntegrationConfigBase):
    integration_type: Literal["cheap"] = "cheap"


class CostlyConfig(IntegrationConfigBase):
    """A vendor whose calls cost money: a 30-minute floor."""

    integration_type: Literal["costly"] = "costly"
    min_check_interval_s: ClassVar[int] = 1800


def cheap(org: uuid.UUID | None = None, **fields: object) -> CheapConfig:
    return CheapConfig(
        integration_id=uuid.uuid4(),
        org_id=org or uuid.uuid4(),
        name="c",
        **fields,  # type: ignore[arg-type]
    )


def status(
    config: IntegrationConfigBase,
    *,
    checked_at: datetime,
    next_check_at: datetime | None,
    state: HealthStatus = HealthStatus.HEALTHY,
) -> StatusRecord:
    return StatusRecord(
        org_id=config.org_id,
        integration_id=config.integration_id,
        integration_type=config.integration_type,
        status=state,
        latency_ms=10,
        checked_at=checked_at,
        error=None,
        error_code=None,
        consecutive_failures=0,
        last_healthy_at=None,
        next_check_at=next_check_at,
    )


def test_never_checked_is_due_at_once_in_the_initial_slot() -> None:
    """An integration with no status is due immediately; its slot is the initial one."""
    item = cheap()
    plan = plan_checks([Candidate(item, None)], at=T0)
    assert [(p.integration, p.slot_at) for p in plan.run] == [(item, INITIAL_SLOT)]


def test_due_only_after_next_check_at() -> None:
    """Before next_check_at nothing runs; at it, the slot is next_check_at."""
    item = cheap()
    st = status(item, checked_at=T0, next_check_at=T0 + timedelta(minutes=15))
    assert plan_checks([Candidate(item, st)], at=T0 + timedelta(minutes=14)).run == []
    plan = plan_checks([Candidate(item, st)], at=T0 + timedelta(minutes=15))
    assert plan.run[0].slot_at == T0 + timedelta(minutes=15)


def test_floor_wins_over_an_early_next_check_at() -> None:
    """Even if next_check_at says so, a type is never probed sooner than its floor."""
    item = CostlyConfig(
        integration_id=uuid.uuid4(), org_id=uuid.uuid4(), name="x", check_interval_s=1800
    )
    st = status(item, checked_at=T0, next_check_at=T0 + timedelta(minutes=1))
    plan = plan_checks([Candidate(item, st)], at=T0 + timedelta(minutes=20))
    assert plan.run == [] and plan.not_yet == 1
    later = plan_checks([Candidate(item, st)], at=T0 + timedelta(minutes=30))
    assert later.run[0].due_at == T0 + timedelta(minutes=30)


def test_interval_below_floor_is_refused() -> None:
    """A configured interval below the (vendor) floor is refused with a clear error."""
    with pytest.raises(ValidationError, match="at least 900 seconds"):
        cheap(check_interval_s=300)
    with pytest.raises(ValidationError, match="at least 1800 seconds"):
        CostlyConfig(
            integration_id=uuid.uuid4(), org_id=uuid.uuid4(), name="x", check_interval_s=900
        )


def test_passive_and_disabled_are_never_planned() -> None:
    """Only enabled, active integrations are probed."""
    items = [
        cheap(monitoring_mode="passive"),
        cheap(enabled=False),
        cheap(monitoring_mode="disabled"),
    ]
    assert plan_checks([Candidate(i, None) for i in items], at=T0).run == []


def test_paused_type_waits_until_the_pause_ends() -> None:
    """A paused type's due checks are held back (and counted) until passive_until."""
    item = cheap()
    pause = TypeMode("cheap", T0 + timedelta(hours=1), "rate limited", T0)
    plan = plan_checks([Candidate(item, None)], at=T0, type_modes={"cheap": pause})
    assert plan.run == [] and plan.paused == {"cheap": 1}
    after = plan_checks(
        [Candidate(item, None)], at=T0 + timedelta(hours=1, seconds=1), type_modes={"cheap": pause}
    )
    assert len(after.run) == 1


def test_budget_limits_each_type_per_pass() -> None:
    """A type's budget caps how many of its checks start; the rest are deferred."""
    items = [cheap() for _ in range(10)]
    plan = plan_checks([Candidate(i, None) for i in items], at=T0, budgets={"cheap": 3})
    assert len(plan.run) == 3
    assert plan.deferred_budget == {"cheap": 7}
    unlimited = plan_checks([Candidate(i, None) for i in items], at=T0, budgets={"other": 0})
    assert len(unlimited.run) == 10


def test_fair_across_organisations() -> None:
    """A big organisation's backlog does not starve a small one: picks alternate."""
    big, small = uuid.uuid4(), uuid.uuid4()
    candidates = [Candidate(cheap(big), None) for _ in range(1000)]
    candidates += [Candidate(cheap(small), status(cheap(small), checked_at=T0, next_check_at=T0))]
    # the small org's check is due later than all of the big org's
    small_item = cheap(small)
    candidates.append(
        Candidate(
            small_item, status(small_item, checked_at=T0 - timedelta(hours=1), next_check_at=T0)
        )
    )
    plan = plan_checks(candidates, at=T0 + timedelta(hours=2), max_checks=10)
    orgs = [p.integration.org_id for p in plan.run]
    assert orgs.count(small) == 2  # both of the small org's checks are in the first 10
    assert len(plan.run) == 10


def test_oldest_due_first_within_an_organisation() -> None:
    """Within one organisation the most overdue check is picked first."""
    org = uuid.uuid4()
    a, b = cheap(org), cheap(org)
    cands = [
        Candidate(a, status(a, checked_at=T0, next_check_at=T0 + timedelta(minutes=20))),
        Candidate(b, status(b, checked_at=T0, next_check_at=T0 + timedelta(minutes=16))),
    ]
    plan = plan_checks(cands, at=T0 + timedelta(hours=1), max_checks=1)
    assert plan.run[0].integration is b


def test_backoff_grows_is_capped_and_jitter_is_bounded() -> None:
    """Failures double the wait from the interval up to the cap, within ±10 % jitter."""
    interval = 900
    delays = [backoff_delay_s(interval, n, key="x") for n in range(1, 12)]
    assert delays[0] == interval
    for n, delay in enumerate(delays[1:], start=2):
        base = min(interval * 2 ** (n - 1), BACKOFF_CAP_S)
        assert base * (1 - BACKOFF_JITTER) <= delay <= base * (1 + BACKOFF_JITTER)
    assert max(delays) <= BACKOFF_CAP_S * (1 + BACKOFF_JITTER)
    # jitter differs across integrations but is stable for one
    spread = {round(backoff_delay_s(interval, 5, key=str(i))) for i in range(50)}
    assert len(spread) > 10
    assert backoff_delay_s(interval, 5, key="a") == backoff_delay_s(interval, 5, key="a")
    # an interval longer than the cap is never shortened by it
    assert backoff_delay_s(6 * 3600, 4, key="x") >= 6 * 3600


def test_success_resets_backoff() -> None:
    """After failures, one success brings the next check back to one interval."""
    item = cheap()
    state = None
    for minute in range(0, 300, 60):
        failure = HealthResult.unreachable(ErrorCode.CONNECTION, "down", 1).model_copy(
            update={"checked_at": T0 + timedelta(minutes=minute)}
        )
        state = next_state(state, item, failure)
    assert state is not None and state.consecutive_failures == 5
    assert (state.next_check_at - state.checked_at).total_seconds() > 900 * 8  # type: ignore[operator]
    ok = HealthResult.healthy(5).model_copy(update={"checked_at": T0 + timedelta(hours=6)})
    recovered = next_state(state, item, ok)
    assert recovered.consecutive_failures == 0
    assert recovered.last_healthy_at == ok.checked_at
    assert recovered.next_check_at == ok.checked_at + timedelta(seconds=900)


def test_retry_after_is_honoured() -> None:
    """A Retry-After hint longer than the interval pushes the next check out."""
    item = cheap()
    limited = HealthResult.degraded(
        ErrorCode.RATE_LIMITED, "slow down", 3, details={"retry_after_s": 3600}
    ).model_copy(update={"checked_at": T0})
    state = next_state(None, item, limited)
    assert state.next_check_at == T0 + timedelta(hours=1)
    assert state.consecutive_failures == 0  # degraded is not a failure
    short = limited.model_copy(update={"details": {"retry_after_s": 5}})
    assert next_state(None, item, short).next_check_at == T0 + timedelta(seconds=900)
    bogus = limited.model_copy(update={"details": {"retry_after_s": True}})
    assert next_state(None, item, bogus).next_check_at == T0 + timedelta(seconds=900)


def test_next_check_at_is_the_next_states() -> None:
    """The scheduler's shortcut gives the time next_state gives, through healthy results,
    a run of failures (backoff with jitter), a Retry-After hint and a recovery."""
    item = cheap()
    state: IntegrationState | None = None
    results = [HealthResult.healthy(5)]
    results += [HealthResult.unreachable(ErrorCode.CONNECTION, "down", 1)] * 4
    results += [
        HealthResult.degraded(
            ErrorCode.RATE_LIMITED, "slow down", 3, details={"retry_after_s": 7200}
        ),
        HealthResult.healthy(5),
    ]
    for minute, result in enumerate(results):
        stamped = result.model_copy(update={"checked_at": T0 + timedelta(hours=minute)})
        after = next_state(state, item, stamped)
        assert next_check_at(state, item, stamped) == after.next_check_at
        state = after
    assert state is not None and state.consecutive_failures == 0


def test_state_carries_last_healthy() -> None:
    """A failure keeps the previous last_healthy_at."""
    item = cheap()
    before = IntegrationState(HealthStatus.HEALTHY, T0, 0, T0, None)
    fail = HealthResult.unreachable(ErrorCode.TIMEOUT, "t", 10_000).model_copy(
        update={"checked_at": T0 + timedelta(minutes=15)}
    )
    assert next_state(before, item, fail).last_healthy_at == T0


def test_rate_limit_switch_and_cooldown() -> None:
    """N rate-limited results pause the type for the cool-down; it is lifted afterwards."""
    cooldown = timedelta(hours=1)
    assert (
        rate_limit_switch(
            "x", rate_limited_recently=4, threshold=5, at=T0, cooldown=cooldown, current=None
        )
        is None
    )
    pause = rate_limit_switch(
        "x", rate_limited_recently=5, threshold=5, at=T0, cooldown=cooldown, current=None
    )
    assert pause is not None and pause.passive_until == T0 + cooldown
    assert "5 rate-limited results" in pause.reason
    # while paused, more rate limiting does not extend or replace the pause
    same = rate_limit_switch(
        "x",
        rate_limited_recently=50,
        threshold=5,
        at=T0 + timedelta(minutes=30),
        cooldown=cooldown,
        current=pause,
    )
    assert same is pause
    # after it ends, a calm vendor is not paused again
    assert (
        rate_limit_switch(
            "x",
            rate_limited_recently=0,
            threshold=5,
            at=T0 + timedelta(hours=2),
            cooldown=cooldown,
            current=pause,
        )
        is None
    )


# -- what a manual "check now" leaves alone ------------------------------------------------------


def hinted(config: IntegrationConfigBase, hint: object, checked_at: datetime = T0) -> StatusRecord:
    """The status after a rate-limited answer whose details carry ``retry_after_s`` = hint."""
    return StatusRecord(
        org_id=config.org_id,
        integration_id=config.integration_id,
        integration_type=config.integration_type,
        status=HealthStatus.DEGRADED,
        latency_ms=10,
        checked_at=checked_at,
        error="HTTP 429",
        error_code=ErrorCode.RATE_LIMITED,
        consecutive_failures=0,
        last_healthy_at=None,
        next_check_at=checked_at + timedelta(minutes=15),
        details={"retry_after_s": hint},
    )


def test_vendor_holds_a_live_retry_after_until_it_ends() -> None:
    """A Retry-After from the last answer holds the integration until checked_at + hint,
    however the schedule (next_check_at) reads; not at or after its end."""
    item = cheap()
    candidate = Candidate(item, hinted(item, 3600))
    held = vendor_holds([candidate], at=T0 + timedelta(minutes=59))
    assert held == {item.integration_id: VendorHold("retry_after", T0 + timedelta(hours=1))}
    assert held[item.integration_id].message == (
        "not probed: the vendor asked to wait (Retry-After) until 2026-11-28T13:00:00+00:00"
    )
    assert vendor_holds([candidate], at=T0 + timedelta(hours=1)) == {}
    assert vendor_holds([Candidate(item, hinted(item, 2.5))], at=T0 + timedelta(seconds=2)) == {
        item.integration_id: VendorHold("retry_after", T0 + timedelta(seconds=2.5))
    }


@pytest.mark.parametrize("hint", [None, "3600", True, 0, -30, [3600]])
def test_vendor_holds_ignore_a_missing_or_malformed_hint(hint: object) -> None:
    """Only a positive number is a Retry-After; anything else stored in details is ignored
    (a never-checked integration has no hint either)."""
    item = cheap()
    assert vendor_holds([Candidate(item, hinted(item, hint))], at=T0) == {}
    assert vendor_holds([Candidate(item, None)], at=T0) == {}


def test_vendor_holds_an_absurd_hint_until_the_end_of_time() -> None:
    """A hint too large for a datetime holds the integration, as far as one can say."""
    item = cheap()
    held = vendor_holds([Candidate(item, hinted(item, 1e15))], at=T0)
    assert held[item.integration_id].until.year == 9999


def test_vendor_holds_every_integration_of_a_paused_type_until_the_pause_ends() -> None:
    """A paused type holds each of its actively checked integrations until passive_until;
    other types, passive integrations and an ended pause hold nothing. With a Retry-After
    as well, the later end wins."""
    until = T0 + timedelta(minutes=30)
    pause = {"cheap": TypeMode("cheap", until, "rate limited", T0)}
    a, b, passive = cheap(), cheap(), cheap(monitoring_mode="passive")
    other = CostlyConfig(
        integration_id=uuid.uuid4(), org_id=uuid.uuid4(), name="o", check_interval_s=1800
    )
    longer = cheap()
    candidates = [
        Candidate(a, None),
        Candidate(b, hinted(b, 60)),  # the hint ends before the pause
        Candidate(passive, None),
        Candidate(other, None),
        Candidate(longer, hinted(longer, 7200)),  # the hint outlasts the pause
    ]
    held = vendor_holds(candidates, at=T0 + timedelta(seconds=30), type_modes=pause)
    assert held == {
        a.integration_id: VendorHold("paused", until),
        b.integration_id: VendorHold("paused", until),
        longer.integration_id: VendorHold("retry_after", T0 + timedelta(hours=2)),
    }
    assert "paused until 2026-11-28T12:30:00+00:00" in held[a.integration_id].message
    assert "kept rate-limiting" in held[a.integration_id].message
    assert vendor_holds(candidates[:1], at=until, type_modes=pause) == {}
