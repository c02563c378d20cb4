"""Which checks to run now: pure functions of the integrations, their state and ``at``.

No I/O and no clock: the scheduler reads ``now`` once and passes ``at=``, so the same code is
driven over simulated days in tests.

Rules (DESIGN §8):

- an integration is due when it was never checked, or its ``next_check_at`` has passed —
  ``next_check_at`` already carries the interval, the backoff after failures and any
  ``Retry-After`` hint (see :func:`integration_health.policy.next_state`);
- never sooner than the type's floor after the last check (15 min for authenticated probes,
  longer where calls cost money), whatever ``next_check_at`` says;
- integrations of a type that is paused (the vendor keeps rate-limiting us) wait until the
  pause ends; ``passive`` and ``disabled`` integrations are never probed;
- each type has a request budget per minute: checks beyond it wait for a later pass;
- fair across organisations: picks alternate between organisations (round robin, most
  overdue first within each), so one organisation with 10 000 due checks cannot starve one
  with 10.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from ..checks import BrokenIntegration
from ..config import MIN_CHECK_INTERVAL_S, IntegrationConfigBase
from ..store.base import INITIAL_SLOT, StatusRecord, TypeMode

__all__ = ["Candidate", "Plan", "PlannedCheck", "plan_checks", "rate_limit_switch"]

Integration = IntegrationConfigBase | BrokenIntegration


@dataclass(frozen=True)
class Candidate:
    """An integration and its current state, as the store returns due checks."""

    integration: Integration
    status: StatusRecord | None


@dataclass(frozen=True)
class PlannedCheck:
    """One check to run now, for one slot."""

    integration: Integration
    slot_at: datetime
    """The scheduled time this run fills (the idempotency key with the integration id)."""
    due_at: datetime
    """When it became due (``slot_at``, or later if the floor pushed it)."""


@dataclass
class Plan:
    """What a planning pass decided."""

    run: list[PlannedCheck] = field(default_factory=list)
    """Checks to run now, in fair order."""
    deferred_budget: dict[str, int] = field(default_factory=dict)
    """Due checks per type held back by the type's request budget."""
    paused: dict[str, int] = field(default_factory=dict)
    """Due checks per type held back because the type is paused."""
    not_yet: int = 0
    """Candidates that are not due yet (floor not reached)."""


def floor_s(item: Integration) -> int:
    """The fewest seconds between two results of ``item`` before it is probed again: its
    type's minimum interval (the general floor, 900 s, for an integration whose config no
    longer validates)."""
    if isinstance(item, IntegrationConfigBase):
        return max(type(item).min_check_interval_s, 1)
    return MIN_CHECK_INTERVAL_S


def plan_checks(
    candidates: Sequence[Candidate],
    *,
    at: datetime,
    type_modes: Mapping[str, TypeMode] | None = None,
    budgets: Mapping[str, int] | None = None,
    max_checks: int | None = None,
) -> Plan:
    """Choose the checks to run at ``at``.

    ``budgets`` maps a type to the most checks it may start in this pass (the scheduler
    derives it from the type's per-minute budget and what it already started this minute);
    types not listed are unlimited. ``max_checks`` caps the whole pass.
    """
    plan = Plan()
    modes = type_modes or {}
    per_org: OrderedDict[UUID, list[PlannedCheck]] = OrderedDict()
    for candidate in sorted(candidates, key=_due_key):
        item = candidate.integration
        if not item.is_checked_actively:
            continue
        mode = modes.get(item.integration_type)
        status = candidate.status
        slot_at = (
            INITIAL_SLOT if status is None or status.next_check_at is None else status.next_check_at
        )
        due_at = slot_at
        if status is not None:
            due_at = max(due_at, status.checked_at + timedelta(seconds=floor_s(item)))
        if due_at > at:
            plan.not_yet += 1
            continue
        if mode is not None and mode.passive_until > at:
            plan.paused[item.integration_type] = plan.paused.get(item.integration_type, 0) + 1
            continue
        per_org.setdefault(item.org_id, []).append(PlannedCheck(item, slot_at, due_at))

    remaining = dict(budgets or {})
    queues = deque(deque(checks) for checks in per_org.values())
    limit = max_checks if max_checks is not None else float("inf")
    deferred: defaultdict[str, int] = defaultdict(int)
    while queues and len(plan.run) < limit:
        queue = queues.popleft()
        check = queue.popleft()
        kind = check.integration.integration_type
        if kind in remaining and remaining[kind] <= 0:
            deferred[kind] += 1
        else:
            if kind in remaining:
                remaining[kind] -= 1
            plan.run.append(check)
        if queue:
            queues.append(queue)
    for queue in queues:  # left over by max_checks
        for check in queue:
            kind = check.integration.integration_type
            if kind in remaining and remaining[kind] <= 0:
                deferred[kind] += 1
    plan.deferred_budget = dict(deferred)
    return plan


def _due_key(candidate: Candidate) -> tuple[datetime, int]:
    status = candidate.status
    when = INITIAL_SLOT if status is None or status.next_check_at is None else status.next_check_at
    # The id as its int: the same order as UUIDs, compared in C (UUID's own comparisons are
    # Python methods, called ~20 times per candidate by the sort when many share a time).
    return when, candidate.integration.integration_id.int


def rate_limit_switch(
    integration_type: str,
    *,
    rate_limited_recently: int,
    threshold: int,
    at: datetime,
    cooldown: timedelta,
    current: TypeMode | None,
) -> TypeMode | None:
    """The pause a type should be in, given how often it was rate limited recently.

    At or above ``threshold`` rate-limited results in the window, active checks of the type
    pause for ``cooldown`` (a new pause only if none is running); a pause that has ended is
    lifted (``None``).
    """
    if current is not None and current.passive_until > at:
        return current
    if rate_limited_recently >= threshold:
        return TypeMode(
            integration_type=integration_type,
            passive_until=at + cooldown,
            reason=(
                f"{rate_limited_recently} rate-limited results within the window "
                f"(threshold {threshold}): active checks paused for "
                f"{cooldown.total_seconds() / 60:.0f} min; sync outcomes still update status"
            ),
            switched_at=at,
        )
    return None
