"""Prometheus metrics of the monitor itself (served at ``/metrics`` by the API).

All series live in one :data:`REGISTRY` (not the global default one), so embedding the
library never pollutes an application's own metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ALERTS",
    "ALERT_DELIVERIES",
    "ALERT_DELIVERY_DURATION",
    "ALERT_INCIDENTS",
    "BUDGET_HELD",
    "CHECKS",
    "CHECK_LATENCY",
    "COLD_STARTS",
    "DRIFT_WARNINGS",
    "REGISTRY",
    "SCHEDULER_DRIFT",
    "SCHEDULER_HEARTBEAT",
    "SLOTS_SKIPPED",
    "TYPE_PAUSES",
]

REGISTRY = CollectorRegistry(auto_describe=True)

CHECKS = Counter(
    "integration_health_checks",
    "Checks run, by integration type, resulting status and error code.",
    ["integration_type", "status", "error_code"],
    registry=REGISTRY,
)
CHECK_LATENCY = Histogram(
    "integration_health_check_latency_seconds",
    "Latency of checks (time waited, for timeouts), by integration type.",
    ["integration_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15),
    registry=REGISTRY,
)
SCHEDULER_DRIFT = Histogram(
    "integration_health_scheduler_drift_seconds",
    "How late scheduled checks started after their slot.",
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
DRIFT_WARNINGS = Counter(
    "integration_health_scheduler_drift_warnings",
    "Scheduled checks that started more than 5 minutes after their slot.",
    registry=REGISTRY,
)
SLOTS_SKIPPED = Counter(
    "integration_health_slots_skipped",
    "Planned checks not run because their slot was already claimed or done.",
    registry=REGISTRY,
)
TYPE_PAUSES = Counter(
    "integration_health_rate_limit_switches",
    "Times active checks of a type switched to passive because the vendor kept rate-limiting.",
    ["integration_type"],
    registry=REGISTRY,
)
COLD_STARTS = Counter(
    "integration_health_cold_starts",
    "First checks of a type after a long idle period.",
    ["integration_type"],
    registry=REGISTRY,
)
BUDGET_HELD = Gauge(
    "integration_health_budget_held_checks",
    "Due checks of a type that its per-minute request budget held back at the last plan of"
    " this process (0 once the budget keeps up; lasting above 0: the budget is too small for"
    " the type's integrations and intervals).",
    ["integration_type"],
    registry=REGISTRY,
)
SCHEDULER_HEARTBEAT = Gauge(
    "integration_health_scheduler_heartbeat_timestamp_seconds",
    "Unix time of the scheduler's last completed planning pass.",
    registry=REGISTRY,
)

# -- alerting (integration_health.alerting) ------------------------------------------------

ALERTS = Counter(
    "integration_health_alerts",
    "Alert transitions (opened, escalated, resolved), by severity; suppressed ones included.",
    ["event", "severity"],
    registry=REGISTRY,
)
ALERT_INCIDENTS = Counter(
    "integration_health_alert_incidents",
    "Vendor-wide incidents opened and resolved, by integration type.",
    ["event", "integration_type"],
    registry=REGISTRY,
)
ALERT_DELIVERIES = Counter(
    "integration_health_alert_deliveries",
    "Webhook delivery attempts, by outcome (delivered, retrying, failed).",
    ["outcome"],
    registry=REGISTRY,
)
ALERT_DELIVERY_DURATION = Histogram(
    "integration_health_alert_delivery_seconds",
    "Duration of webhook delivery attempts.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
