"""Records of alerting and the protocol of its storage (memory, SQLite, PostgreSQL).

Alerting keeps its own tables (``alert_integration_state``, ``alerts``, ``alert_incidents``,
``alert_deliveries``, ``alert_delivery_attempts``) next to the monitor's and reads the
monitor's status and history rows with its own SQL. Every decision that must happen once —
however many schedulers or workers evaluate at the same time — is made inside one
:meth:`AlertStore.transaction` and guarded by the database itself:

- the per-integration state row is locked (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite:
  ``BEGIN IMMEDIATE``) and saved with compare-and-set on its ``version``;
- at most one open alert per integration and one open incident per integration type (partial
  unique indexes);
- at most one delivery per (alert or incident, event, webhook) (unique ``dedupe_key``);
- a delivery is claimed for sending with a lease (``FOR UPDATE SKIP LOCKED``), so one worker
  sends it; a worker that died is replaced once its lease ends.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from .config import Severity
from .hysteresis import IntegrationAlertState, Observation, VendorStats

__all__ = [
    "Alert",
    "AlertState",
    "AlertStore",
    "AlertTransaction",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryOutcome",
    "DeliveryState",
    "Incident",
    "NewDelivery",
    "PendingIntegration",
    "Subject",
]

# The columns every alert store reads (same names in SQLite and PostgreSQL).
STATE_COLUMNS = (
    "integration_id, org_id, integration_type, version, evaluated_through, evaluated_id, "
    "bad_streak, unreachable_streak, good_streak, bad_since, failing_since, vendor_failing, "
    "last_status, last_checked_at, last_error_code, last_error, open_alert_id, open_severity"
)
ALERT_COLUMNS = (
    "id, org_id, integration_id, integration_type, integration_name, severity, state, "
    "opened_at, resolved_at, first_failure_at, consecutive_failures, error_code, error, "
    "incident_id, suppressed"
)
INCIDENT_COLUMNS = (
    "id, integration_type, state, opened_at, resolved_at, failing_orgs, failing_integrations, "
    "total_integrations, peak_failing_orgs"
)
DELIVERY_COLUMNS = (
    "id, dedupe_key, org_id, alert_id, incident_id, event, target, payload, state, attempts, "
    "next_attempt_at, last_status_code, last_error, created_at, delivered_at"
)
ATTEMPT_COLUMNS = (
    "id, delivery_id, org_id, attempt, at, outcome, status_code, error, duration_ms, "
    "next_attempt_at, worker"
)

NO_MORE_ROWS = 2**62
"""``evaluated_id`` that sorts after every history id (nothing left at that timestamp)."""


class AlertState(enum.StrEnum):
    """Whether an alert or incident is still going on."""

    OPEN = "open"
    RESOLVED = "resolved"


class DeliveryState(enum.StrEnum):
    """Where a delivery is in its life."""

    PENDING = "pending"
    """Waiting for its (next) attempt at ``next_attempt_at``."""
    DELIVERING = "delivering"
    """Claimed by a worker, being sent (until its lease ends)."""
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    FAILED = "failed"
    """Given up: attempts exhausted, or the receiver refused it for good."""
    CANCELLED = "cancelled"
    """No longer worth sending (the alert was resolved or grouped under an incident first)."""


class DeliveryOutcome(enum.StrEnum):
    """What one attempt came to (the ``outcome`` label of the deliveries metric)."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"


@dataclass(frozen=True)
class Alert:
    """One alert: an integration failing past the threshold, until it recovers."""

    id: UUID
    org_id: UUID
    integration_id: UUID
    integration_type: str
    integration_name: str
    severity: Severity
    state: AlertState
    opened_at: datetime
    """When the N-th consecutive failed result was recorded (its ``checked_at``)."""
    first_failure_at: datetime
    """``checked_at`` of the first failed result of the run."""
    consecutive_failures: int
    error_code: str | None
    error: str | None
    """The last error, as stored by the monitor (already redacted)."""
    resolved_at: datetime | None = None
    incident_id: UUID | None = None
    """The vendor incident it is grouped under, if any."""
    suppressed: bool = False
    """Not notified on its own: a vendor incident covers it."""


@dataclass(frozen=True)
class Incident:
    """One vendor-wide outage: an integration type failing in many organisations at once."""

    id: UUID
    integration_type: str
    state: AlertState
    opened_at: datetime
    failing_orgs: int
    failing_integrations: int
    total_integrations: int
    peak_failing_orgs: int
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class Subject:
    """What a delivery is about: an alert or an incident."""

    alert_id: UUID | None = None
    incident_id: UUID | None = None


@dataclass(frozen=True)
class NewDelivery:
    """A notification to send to one webhook (its payload is fixed when enqueued)."""

    id: UUID
    dedupe_key: str
    """Unique: ``alert:<id>:<event>:<target>`` or ``incident:<id>:<event>:<target>``."""
    event: str
    target: str
    payload: dict[str, Any]
    created_at: datetime
    org_id: UUID | None = None
    """The organisation of an alert (``None`` for vendor incidents)."""
    alert_id: UUID | None = None
    incident_id: UUID | None = None


@dataclass(frozen=True)
class Delivery:
    """A stored delivery and where it stands."""

    id: UUID
    dedupe_key: str
    event: str
    target: str
    payload: dict[str, Any]
    state: DeliveryState
    attempts: int
    created_at: datetime
    org_id: UUID | None = None
    alert_id: UUID | None = None
    incident_id: UUID | None = None
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    """One row of the delivery log."""

    delivery_id: UUID
    attempt: int
    at: datetime
    outcome: DeliveryOutcome
    duration_ms: int
    worker: str
    org_id: UUID | None = None
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    """When the next attempt is due (``None``: delivered or given up)."""
    id: int = 0


@dataclass(frozen=True)
class PendingIntegration:
    """An integration with results alerting has not counted yet."""

    state: IntegrationAlertState
    integration_name: str
    status_checked_at: datetime
    observations: list[Observation] = field(default_factory=list)
    """Its new results, oldest first."""


class AlertTransaction(Protocol):
    """One database transaction of the engine (see the module docstring)."""

    async def pending_integrations(self, limit: int) -> list[PendingIntegration]:
        """Integrations with new results, locked for this transaction (skipping locked ones)."""
        ...

    async def save_state(self, state: IntegrationAlertState, *, expected_version: int) -> bool:
        """Compare-and-set: write ``state`` (version + 1) if the stored version is expected."""
        ...

    async def lock_type(self, integration_type: str) -> None:
        """Serialise alert and incident decisions of one integration type until commit."""
        ...

    async def open_incident(self, integration_type: str) -> Incident | None:
        """The open incident of a type, if any."""
        ...

    async def open_incidents(self) -> list[Incident]:
        """Every open incident."""
        ...

    async def insert_alert(self, alert: Alert) -> None:
        """Store a new open alert (a second open alert of one integration is refused)."""
        ...

    async def resolve_alert(self, alert_id: UUID, *, at: datetime) -> Alert | None:
        """Resolve an open alert; ``None`` when it was not open."""
        ...

    async def escalate_alert(
        self,
        alert_id: UUID,
        *,
        severity: Severity,
        consecutive_failures: int,
        error_code: str | None,
        error: str | None,
    ) -> Alert | None:
        """Raise an open alert's severity; ``None`` when it was not open."""
        ...

    async def attach_alerts(
        self, integration_type: str, incident_id: UUID, *, failing_since: datetime
    ) -> list[Alert]:
        """Group the type's open, ungrouped alerts whose failure began at or after
        ``failing_since`` under the incident; returns them."""
        ...

    async def set_suppressed(self, alert_id: UUID, suppressed: bool) -> None:
        """Mark whether an alert is notified on its own."""
        ...

    async def release_alerts(self, incident_id: UUID) -> list[Alert]:
        """Un-suppress the incident's alerts still open (they outlived it); returns them."""
        ...

    async def cancel_pending(self, subject: Subject) -> set[str]:
        """Cancel the subject's deliveries not yet attempted or in backoff; return the
        targets that were (or are being) sent something about it."""
        ...

    async def vendor_stats(
        self, since: datetime, integration_type: str | None = None
    ) -> list[VendorStats]:
        """Failing counts per integration type (see :class:`VendorStats`)."""
        ...

    async def insert_incident(self, incident: Incident) -> bool:
        """Store a new open incident; False when the type already has one."""
        ...

    async def update_incident_counts(self, incident: Incident) -> None:
        """Store an open incident's current counts and peak."""
        ...

    async def resolve_incident(self, incident_id: UUID, *, at: datetime) -> Incident | None:
        """Resolve an open incident; ``None`` when it was not open."""
        ...

    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        """Add deliveries (a duplicate ``dedupe_key`` is ignored, a cancelled one revived);
        returns how many became pending."""
        ...


class AlertStore(Protocol):
    """Alerting's tables in one database. Every method is safe to call concurrently."""

    url: str
    """Where the tables live (password masked)."""

    def transaction(self) -> AbstractAsyncContextManager[AlertTransaction]:
        """Begin a transaction: committed when the block ends, rolled back on an exception."""
        ...

    async def claim_deliveries(
        self, *, worker: str, at: datetime, lease_s: float, limit: int
    ) -> list[Delivery]:
        """Claim due deliveries for ``worker`` (pending and due, or whose lease ended).

        A delivery waits while an older one about the same alert/incident to the same target
        is unfinished, so a receiver always gets ``opened`` before ``resolved``.
        """
        ...

    async def finish_attempt(
        self, attempt: DeliveryAttempt, *, state: DeliveryState, next_attempt_at: datetime | None
    ) -> bool:
        """Record an attempt (delivery row + log row) if ``attempt.worker`` still holds the
        claim; False when another worker took it over."""
        ...

    async def list_alerts(
        self, org_id: UUID | None = None, *, open_only: bool = False, limit: int = 100
    ) -> list[Alert]:
        """Alerts of one organisation (or all), open first, newest first."""
        ...

    async def list_incidents(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]:
        """Vendor incidents, newest first."""
        ...

    async def list_deliveries(
        self,
        *,
        org_id: UUID | None = None,
        alert_id: UUID | None = None,
        incident_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """Deliveries, newest first."""
        ...

    async def list_attempts(self, delivery_id: UUID) -> list[DeliveryAttempt]:
        """The delivery log of one delivery, oldest first."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
