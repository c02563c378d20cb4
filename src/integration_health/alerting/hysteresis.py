"""Pure alerting rules: what a run of results does to an integration's alert, and when a
vendor-wide outage opens or closes an incident. No I/O, no clock: the engine passes
everything in, so these rules are tested over any sequence in microseconds.

Per integration (defaults N = 3, M = 2):

- ``unreachable_streak ≥ N`` opens an ``unreachable`` alert;
- otherwise, with ``degraded_alerts``, ``bad_streak ≥ N`` (N non-healthy results, at least
  one degraded) opens a ``degraded`` alert; one that then reaches ``unreachable_streak ≥ N``
  is *escalated* to ``unreachable``;
- ``good_streak ≥ M`` (M healthy results in a row) resolves the open alert.

A flapping integration (fail, fail, ok, fail, fail, ok…) never reaches N failures in a row
and opens nothing; an open alert that flaps (ok, fail, ok, fail…) never gets M successes in a
row and stays open — no notification storm either way.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from ..model import HealthStatus
from .config import AlertingConfig, Severity, VendorIncidentRules

__all__ = [
    "IntegrationAlertState",
    "Observation",
    "Transition",
    "VendorDecision",
    "VendorStats",
    "decide_vendor",
    "step",
]


@dataclass(frozen=True)
class Observation:
    """One stored result of an integration (a history row), oldest first when in a list."""

    id: int
    status: HealthStatus
    checked_at: datetime
    error_code: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class IntegrationAlertState:
    """What alerting remembers about one integration (``alert_integration_state``)."""

    integration_id: UUID
    org_id: UUID
    integration_type: str
    version: int = 0
    """Bumped on every save: writers compare-and-set on it."""
    evaluated_through: datetime | None = None
    """``checked_at`` of the newest result already counted (the per-integration cursor)."""
    evaluated_id: int = 0
    """History id of that result (ties on ``checked_at``)."""
    bad_streak: int = 0
    """Consecutive non-healthy results."""
    unreachable_streak: int = 0
    """Consecutive unreachable results."""
    good_streak: int = 0
    """Consecutive healthy results."""
    bad_since: datetime | None = None
    """First result of the current non-healthy run."""
    failing_since: datetime | None = None
    """First result of the current unreachable run."""
    vendor_failing: bool = False
    """Counts toward a vendor incident (see :class:`VendorIncidentRules`)."""
    last_status: HealthStatus | None = None
    last_checked_at: datetime | None = None
    last_error_code: str | None = None
    last_error: str | None = None
    open_alert_id: UUID | None = None
    open_severity: Severity | None = None
    """Severity of the open alert (``None`` when no alert is open)."""


class Transition(enum.StrEnum):
    """What a run of results did to the integration's alert (net effect)."""

    OPEN = "opened"
    ESCALATE = "escalated"
    RESOLVE = "resolved"


def _apply_one(
    state: IntegrationAlertState, obs: Observation, config: AlertingConfig
) -> IntegrationAlertState:
    status = obs.status
    if status is HealthStatus.HEALTHY:
        state = replace(
            state,
            good_streak=state.good_streak + 1,
            bad_streak=0,
            unreachable_streak=0,
            bad_since=None,
            failing_since=None,
        )
    elif status is HealthStatus.DEGRADED:
        state = replace(
            state,
            good_streak=0,
            bad_streak=state.bad_streak + 1,
            unreachable_streak=0,
            bad_since=state.bad_since or obs.checked_at,
            failing_since=None,
        )
    else:
        state = replace(
            state,
            good_streak=0,
            bad_streak=state.bad_streak + 1,
            unreachable_streak=state.unreachable_streak + 1,
            bad_since=state.bad_since or obs.checked_at,
            failing_since=state.failing_since or obs.checked_at,
        )
    state = replace(
        state,
        last_status=status,
        last_checked_at=obs.checked_at,
        last_error_code=obs.error_code,
        last_error=obs.error,
        evaluated_through=obs.checked_at,
        evaluated_id=obs.id,
    )
    n, m = config.failure_threshold, config.success_threshold
    # The alert, as if each result were evaluated on its own.
    severity = state.open_severity
    if severity is not None:
        if state.good_streak >= m:
            severity = None
        elif severity is Severity.DEGRADED and state.unreachable_streak >= n:
            severity = Severity.UNREACHABLE
    elif state.unreachable_streak >= n:
        severity = Severity.UNREACHABLE
    elif config.degraded_alerts and state.bad_streak >= n:
        severity = Severity.DEGRADED
    # Vendor counting has the same shape: on after F failures, off after M successes.
    vendor = state.vendor_failing
    if state.unreachable_streak >= config.vendor_incidents.failures_per_integration:
        vendor = True
    elif state.good_streak >= m:
        vendor = False
    return replace(state, open_severity=severity, vendor_failing=vendor)


def step(
    state: IntegrationAlertState, observations: Sequence[Observation], config: AlertingConfig
) -> tuple[IntegrationAlertState, Transition | None]:
    """Count ``observations`` (oldest first) into ``state``; return it and the net transition.

    Only the net effect is reported: results that opened and resolved an alert while nobody
    evaluated them (the engine was down) notify nothing; a resolve-then-reopen of the same
    severity keeps the open alert. The returned state's ``open_alert_id`` is unchanged — the
    engine sets it when it writes the alert.
    """
    before = state.open_severity
    for obs in observations:
        state = _apply_one(state, obs, config)
    after = state.open_severity
    if before is Severity.UNREACHABLE and after is Severity.DEGRADED:
        # Resolved and reopened as degraded while unobserved: the open alert simply goes on.
        state = replace(state, open_severity=before)
        after = before
    if before is None and after is not None:
        return state, Transition.OPEN
    if before is not None and after is None:
        return state, Transition.RESOLVE
    if before is Severity.DEGRADED and after is Severity.UNREACHABLE:
        return state, Transition.ESCALATE
    return state, None


@dataclass(frozen=True)
class VendorStats:
    """How many integrations of one type fail, across every organisation."""

    integration_type: str
    total_integrations: int
    """Enabled, monitored integrations of the type."""
    recent_orgs: int
    """Organisations with an integration counting as failing whose failure began in the window."""
    recent_integrations: int
    failing_orgs: int
    """Organisations with an integration counting as failing (any age)."""
    failing_integrations: int


class VendorDecision(enum.StrEnum):
    """What to do with a type's incident."""

    OPEN = "opened"
    RESOLVE = "resolved"


def _vendor_wide(orgs: int, integrations: int, total: int, rules: VendorIncidentRules) -> bool:
    if orgs >= rules.min_orgs:
        return True
    if rules.min_percent is None or total <= 0 or orgs < rules.min_orgs_for_percent:
        return False
    return integrations * 100.0 >= rules.min_percent * total


def decide_vendor(
    stats: VendorStats, *, open_peak_orgs: int | None, rules: VendorIncidentRules
) -> VendorDecision | None:
    """Open an incident for a vendor-wide outage, or resolve one whose vendor recovered.

    ``open_peak_orgs`` is the open incident's peak of failing organisations (``None`` when no
    incident is open).
    """
    if open_peak_orgs is None:
        if rules.enabled and _vendor_wide(
            stats.recent_orgs, stats.recent_integrations, stats.total_integrations, rules
        ):
            return VendorDecision.OPEN
        return None
    recovered = stats.failing_orgs * 100.0 <= rules.recovery_percent * max(1, open_peak_orgs)
    if recovered or not rules.enabled:
        return VendorDecision.RESOLVE
    return None
