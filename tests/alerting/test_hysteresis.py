"""The pure rules: hysteresis per integration and the vendor-incident decision."""

from __future__ import annotations

import uuid
from datetime import timedelta

from integration_health import HealthStatus
from integration_health.alerting import AlertingConfig, Severity, VendorIncidentRules
from integration_health.alerting.hysteresis import (
    IntegrationAlertState,
    Observation,
    Transition,
    VendorDecision,
    VendorStats,
    decide_vendor,
    step,
)

from .conftest import T0

H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNREACHABLE


class Feed:
    """Feeds results one at a time and records every transition."""

    def __init__(self, config: AlertingConfig | None = None) -> None:
        self.config = config or AlertingConfig()
        self.state = IntegrationAlertState(uuid.uuid4(), uuid.uuid4(), "http")
        self.count = 0
        self.transitions: list[tuple[int, Transition]] = []

    def obs(self, status: HealthStatus) -> Observation:
        self.count += 1
        return Observation(self.count, status, T0 + timedelta(minutes=15 * self.count))

    def __call__(self, *statuses: HealthStatus) -> list[Transition | None]:
        seen = []
        for status in statuses:
            self.state, transition = step(self.state, [self.obs(status)], self.config)
            if transition is not None:
                self.transitions.append((self.count, transition))
            seen.append(transition)
        return seen


def test_three_failures_open_and_two_successes_resolve() -> None:
    """The third consecutive failure opens an alert; the second consecutive success resolves it."""
    feed = Feed()
    assert feed(U, U, U) == [None, None, Transition.OPEN]
    assert feed.state.open_severity is Severity.UNREACHABLE
    assert feed(H, H) == [None, Transition.RESOLVE]
    assert feed.state.open_severity is None


def test_flapping_integration_never_alerts() -> None:
    """Two failures and a success, repeated, never reach three in a row: no alert at all."""
    feed = Feed()
    for _ in range(20):
        feed(U, U, H)
    assert feed.transitions == []


def test_flapping_open_alert_neither_resolves_nor_reopens() -> None:
    """An open alert that alternates success and failure stays open: one alert, no spam."""
    feed = Feed()
    feed(U, U, U)
    for _ in range(20):
        feed(H, U)
    assert feed.transitions == [(3, Transition.OPEN)]


def test_thresholds_are_configurable() -> None:
    """N = 1 opens on the first failure; M = 3 needs three successes to resolve."""
    feed = Feed(AlertingConfig(failure_threshold=1, success_threshold=3))
    assert feed(U) == [Transition.OPEN]
    assert feed(H, H, H) == [None, None, Transition.RESOLVE]


def test_degraded_alert_opens_and_escalates_to_unreachable() -> None:
    """Three non-healthy results with a degraded one open a degraded alert; three unreachable
    in a row then escalate it."""
    feed = Feed()
    assert feed(D, D, U) == [None, None, Transition.OPEN]
    assert feed.state.open_severity is Severity.DEGRADED
    assert feed(U, U) == [None, Transition.ESCALATE]
    assert feed.state.open_severity is Severity.UNREACHABLE


def test_degraded_alerts_can_be_turned_off() -> None:
    """With degraded_alerts off, a degraded integration opens nothing; unreachable still does."""
    feed = Feed(AlertingConfig(degraded_alerts=False))
    assert feed(D, D, D, D) == [None] * 4
    assert feed(U, U, U)[-1] is Transition.OPEN


def test_degraded_results_do_not_resolve_an_alert() -> None:
    """Only healthy results count as successes: a degraded integration keeps its alert open."""
    feed = Feed()
    feed(U, U, U)
    assert feed(D, D, D, H) == [None, None, None, None]
    assert feed.state.open_severity is Severity.UNREACHABLE


def test_only_the_net_transition_of_a_batch_is_reported() -> None:
    """Results counted together report the net effect: open-then-resolve is nothing at all."""
    feed = Feed()
    observations = [feed.obs(s) for s in (U, U, U, H, H)]
    state, transition = step(feed.state, observations, feed.config)
    assert transition is None
    assert state.open_severity is None
    assert state.evaluated_id == observations[-1].id


def test_vendor_failing_follows_its_own_hysteresis() -> None:
    """An integration counts toward a vendor incident after 2 failures, until 2 successes."""
    feed = Feed()
    feed(U)
    assert not feed.state.vendor_failing
    feed(U)
    assert feed.state.vendor_failing
    assert feed.state.failing_since == T0 + timedelta(minutes=15)
    feed(H)
    assert feed.state.vendor_failing
    feed(H)
    assert not feed.state.vendor_failing


def _stats(**counts: int) -> VendorStats:
    values = {
        "total_integrations": 20,
        "recent_orgs": 0,
        "recent_integrations": 0,
        "failing_orgs": 0,
        "failing_integrations": 0,
    }
    values.update(counts)
    return VendorStats(integration_type="xledger", **values)


def test_vendor_incident_opens_at_k_organisations() -> None:
    """Five organisations failing at once make an incident; four do not (default K = 5)."""
    rules = VendorIncidentRules(min_percent=None)
    four = _stats(recent_orgs=4, recent_integrations=4, failing_orgs=4, failing_integrations=4)
    five = _stats(recent_orgs=5, recent_integrations=5, failing_orgs=5, failing_integrations=5)
    assert decide_vendor(four, open_peak_orgs=None, rules=rules) is None
    assert decide_vendor(five, open_peak_orgs=None, rules=rules) is VendorDecision.OPEN


def test_vendor_incident_opens_at_p_percent_with_a_floor() -> None:
    """Half of a type's integrations failing opens an incident, but only in ≥ 3 organisations."""
    rules = VendorIncidentRules()
    three_of_six = _stats(total_integrations=6, recent_orgs=3, recent_integrations=3)
    two_of_three = _stats(total_integrations=3, recent_orgs=2, recent_integrations=2)
    assert decide_vendor(three_of_six, open_peak_orgs=None, rules=rules) is VendorDecision.OPEN
    assert decide_vendor(two_of_three, open_peak_orgs=None, rules=rules) is None


def test_old_failures_do_not_open_an_incident() -> None:
    """Many organisations failing for a long time (not at once) open no incident."""
    stale = _stats(failing_orgs=10, failing_integrations=10)
    assert decide_vendor(stale, open_peak_orgs=None, rules=VendorIncidentRules()) is None


def test_vendor_incident_resolves_when_most_have_recovered() -> None:
    """An incident that peaked at 10 organisations resolves at 2 still failing, not at 3."""
    rules = VendorIncidentRules()
    assert decide_vendor(_stats(failing_orgs=3), open_peak_orgs=10, rules=rules) is None
    assert (
        decide_vendor(_stats(failing_orgs=2), open_peak_orgs=10, rules=rules)
        is VendorDecision.RESOLVE
    )
