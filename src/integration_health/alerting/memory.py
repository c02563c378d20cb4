"""Alerting's tables in process memory, next to a :class:`~integration_health.store.MemoryStore`.

For tests, scripts and the in-memory monitor. It reads results through the monitor's
:class:`~integration_health.store.Store` protocol. One lock serialises transactions; a
transaction that raises is rolled back by restoring a snapshot taken when it began.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from ..errors import StoreError
from ..store.base import Store
from .base import (
    Alert,
    AlertState,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Incident,
    NewDelivery,
    PendingIntegration,
    Subject,
)
from .config import Severity
from .hysteresis import IntegrationAlertState, Observation, VendorStats

__all__ = ["MemoryAlertStore"]


@dataclass
class _Row:
    """A delivery plus its claim (what the SQL stores keep in extra columns)."""

    delivery: Delivery
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass
class _Data:
    states: dict[UUID, IntegrationAlertState]
    alerts: dict[UUID, Alert]
    incidents: dict[UUID, Incident]
    deliveries: dict[UUID, _Row]
    attempts: list[DeliveryAttempt]


class MemoryAlertStore:
    """Alerting in dicts, reading results from ``main`` (any :class:`Store`)."""

    def __init__(self, main: Store) -> None:
        self.url = main.url
        self.main = main
        self._data = _Data({}, {}, {}, {}, [])
        self._attempt_ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_MemoryTransaction]:
        """Serialised; rolled back (snapshot restored) if the block raises."""
        async with self._lock:
            snapshot = copy.deepcopy(self._data)
            try:
                yield _MemoryTransaction(self)
            except BaseException:
                self._data = snapshot
                raise

    async def aclose(self) -> None:
        """Nothing to release."""

    async def claim_deliveries(
        self, *, worker: str, at: datetime, lease_s: float, limit: int
    ) -> list[Delivery]:
        async with self._lock:
            rows = sorted(
                self._data.deliveries.values(),
                key=lambda r: (r.delivery.next_attempt_at or at, r.delivery.created_at),
            )
            claimed: list[Delivery] = []
            for row in rows:
                if len(claimed) >= limit:
                    break
                d = row.delivery
                due = (
                    d.state is DeliveryState.PENDING
                    and d.next_attempt_at is not None
                    and d.next_attempt_at <= at
                ) or (
                    d.state is DeliveryState.DELIVERING
                    and row.lease_until is not None
                    and row.lease_until < at
                )
                if not due or self._blocked(d):
                    continue
                row.delivery = replace(d, state=DeliveryState.DELIVERING)
                row.lease_owner = worker
                row.lease_until = at + timedelta(seconds=lease_s)
                claimed.append(row.delivery)
            return claimed

    def _blocked(self, d: Delivery) -> bool:
        for other in self._data.deliveries.values():
            e = other.delivery
            if e.id == d.id or e.target != d.target:
                continue
            if e.state not in (DeliveryState.PENDING, DeliveryState.DELIVERING):
                continue
            same = (d.alert_id is not None and e.alert_id == d.alert_id) or (
                d.alert_id is None and e.alert_id is None and e.incident_id == d.incident_id
            )
            if same and (e.created_at, str(e.id)) < (d.created_at, str(d.id)):
                return True
        return False

    async def finish_attempt(
        self, attempt: DeliveryAttempt, *, state: DeliveryState, next_attempt_at: datetime | None
    ) -> bool:
        async with self._lock:
            row = self._data.deliveries.get(attempt.delivery_id)
            if (
                row is None
                or row.delivery.state is not DeliveryState.DELIVERING
                or row.lease_owner != attempt.worker
            ):
                return False
            row.delivery = replace(
                row.delivery,
                state=state,
                attempts=attempt.attempt,
                next_attempt_at=next_attempt_at,
                last_status_code=attempt.status_code,
                last_error=attempt.error,
                delivered_at=attempt.at
                if state is DeliveryState.DELIVERED
                else row.delivery.delivered_at,
            )
            row.lease_owner = row.lease_until = None
            self._data.attempts.append(replace(attempt, id=next(self._attempt_ids)))
            return True

    async def list_alerts(
        self, org_id: UUID | None = None, *, open_only: bool = False, limit: int = 100
    ) -> list[Alert]:
        alerts = [
            a
            for a in self._data.alerts.values()
            if (org_id is None or a.org_id == org_id)
            and (not open_only or a.state is AlertState.OPEN)
        ]
        alerts.sort(key=lambda a: (a.state is AlertState.OPEN, a.opened_at), reverse=True)
        return alerts[: max(0, limit)]

    async def list_incidents(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]:
        incidents = [
            i for i in self._data.incidents.values() if not open_only or i.state is AlertState.OPEN
        ]
        incidents.sort(key=lambda i: i.opened_at, reverse=True)
        return incidents[: max(0, limit)]

    async def list_deliveries(
        self,
        *,
        org_id: UUID | None = None,
        alert_id: UUID | None = None,
        incident_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        found = [
            r.delivery
            for r in self._data.deliveries.values()
            if (org_id is None or r.delivery.org_id == org_id)
            and (alert_id is None or r.delivery.alert_id == alert_id)
            and (incident_id is None or r.delivery.incident_id == incident_id)
        ]
        found.sort(key=lambda d: d.created_at, reverse=True)
        return found[: max(0, limit)]

    async def list_attempts(self, delivery_id: UUID) -> list[DeliveryAttempt]:
        return sorted(
            (a for a in self._data.attempts if a.delivery_id == delivery_id),
            key=lambda a: (a.attempt, a.id),
        )


class _MemoryTransaction:
    def __init__(self, store: MemoryAlertStore) -> None:
        self._store = store

    @property
    def _d(self) -> _Data:
        return self._store._data

    async def pending_integrations(self, limit: int) -> list[PendingIntegration]:
        main = self._store.main
        names = {i.integration_id: i.name for i in await main.list_integrations()}
        pending: list[PendingIntegration] = []
        for status in sorted(await main.list_statuses(), key=lambda s: str(s.integration_id)):
            if len(pending) >= limit:
                break
            if status.integration_id not in names:
                continue
            state = self._d.states.get(status.integration_id)
            if state is None:
                state = IntegrationAlertState(
                    status.integration_id, status.org_id, status.integration_type
                )
                self._d.states[status.integration_id] = state
            through = state.evaluated_through
            if through is not None and status.checked_at <= through:
                continue
            history = await main.list_history(status.integration_id)
            observations = [
                Observation(
                    h.id,
                    h.status,
                    h.checked_at,
                    h.error_code.value if h.error_code else None,
                    h.error,
                )
                for h in reversed(history)
                if through is None or (h.checked_at, h.id) > (through, state.evaluated_id)
            ]
            pending.append(
                PendingIntegration(
                    state=replace(state, integration_type=status.integration_type),
                    integration_name=names[status.integration_id],
                    status_checked_at=status.checked_at,
                    observations=observations,
                )
            )
        return pending

    async def save_state(self, state: IntegrationAlertState, *, expected_version: int) -> bool:
        current = self._d.states.get(state.integration_id)
        if current is None or current.version != expected_version:
            return False
        self._d.states[state.integration_id] = replace(state, version=expected_version + 1)
        return True

    async def lock_type(self, integration_type: str) -> None:
        return None  # transactions are serialised already

    async def open_incident(self, integration_type: str) -> Incident | None:
        return next(
            (
                i
                for i in self._d.incidents.values()
                if i.integration_type == integration_type and i.state is AlertState.OPEN
            ),
            None,
        )

    async def open_incidents(self) -> list[Incident]:
        return sorted(
            (i for i in self._d.incidents.values() if i.state is AlertState.OPEN),
            key=lambda i: i.integration_type,
        )

    async def insert_alert(self, alert: Alert) -> None:
        if any(
            a.integration_id == alert.integration_id and a.state is AlertState.OPEN
            for a in self._d.alerts.values()
        ):
            raise StoreError("the integration already has an open alert")
        self._d.alerts[alert.id] = alert

    def _update(self, alert_id: UUID, **changes: Any) -> Alert | None:
        alert = self._d.alerts.get(alert_id)
        if alert is None or alert.state is not AlertState.OPEN:
            return None
        alert = replace(alert, **changes)
        self._d.alerts[alert_id] = alert
        return alert

    async def resolve_alert(self, alert_id: UUID, *, at: datetime) -> Alert | None:
        return self._update(alert_id, state=AlertState.RESOLVED, resolved_at=at)

    async def escalate_alert(
        self,
        alert_id: UUID,
        *,
        severity: Severity,
        consecutive_failures: int,
        error_code: str | None,
        error: str | None,
    ) -> Alert | None:
        return self._update(
            alert_id,
            severity=severity,
            consecutive_failures=consecutive_failures,
            error_code=error_code,
            error=error,
        )

    async def attach_alerts(
        self, integration_type: str, incident_id: UUID, *, failing_since: datetime
    ) -> list[Alert]:
        attached = []
        for alert in list(self._d.alerts.values()):
            if (
                alert.integration_type == integration_type
                and alert.state is AlertState.OPEN
                and alert.incident_id is None
                and alert.first_failure_at >= failing_since
            ):
                updated = self._update(alert.id, incident_id=incident_id)
                assert updated is not None
                attached.append(updated)
        return attached

    async def set_suppressed(self, alert_id: UUID, suppressed: bool) -> None:
        alert = self._d.alerts.get(alert_id)
        if alert is not None:
            self._d.alerts[alert_id] = replace(alert, suppressed=suppressed)

    async def release_alerts(self, incident_id: UUID) -> list[Alert]:
        released = []
        for alert in list(self._d.alerts.values()):
            if (
                alert.incident_id == incident_id
                and alert.state is AlertState.OPEN
                and alert.suppressed
            ):
                updated = self._update(alert.id, suppressed=False)
                assert updated is not None
                released.append(updated)
        return released

    async def cancel_pending(self, subject: Subject) -> set[str]:
        known: set[str] = set()
        for row in self._d.deliveries.values():
            d = row.delivery
            if subject.alert_id is not None:
                same = d.alert_id == subject.alert_id
            else:
                same = d.alert_id is None and d.incident_id == subject.incident_id
            if not same:
                continue
            if d.state is DeliveryState.PENDING:
                row.delivery = replace(d, state=DeliveryState.CANCELLED)
            elif d.state in (DeliveryState.DELIVERING, DeliveryState.DELIVERED):
                known.add(d.target)
        return known

    async def vendor_stats(
        self, since: datetime, integration_type: str | None = None
    ) -> list[VendorStats]:
        monitored = {
            i.integration_id: i.integration_type
            for i in await self._store.main.list_integrations()
            if i.enabled and i.monitoring_mode != "disabled"
        }
        stats = []
        for kind in sorted(set(monitored.values())):
            if integration_type is not None and kind != integration_type:
                continue
            failing = [
                s
                for s in self._d.states.values()
                if s.vendor_failing and monitored.get(s.integration_id) == kind
            ]
            recent = [
                s for s in failing if s.failing_since is not None and s.failing_since >= since
            ]
            stats.append(
                VendorStats(
                    integration_type=kind,
                    total_integrations=sum(1 for k in monitored.values() if k == kind),
                    recent_orgs=len({s.org_id for s in recent}),
                    recent_integrations=len(recent),
                    failing_orgs=len({s.org_id for s in failing}),
                    failing_integrations=len(failing),
                )
            )
        return stats

    async def insert_incident(self, incident: Incident) -> bool:
        if await self.open_incident(incident.integration_type) is not None:
            return False
        self._d.incidents[incident.id] = incident
        return True

    async def update_incident_counts(self, incident: Incident) -> None:
        current = self._d.incidents.get(incident.id)
        if current is not None and current.state is AlertState.OPEN:
            self._d.incidents[incident.id] = replace(
                current,
                failing_orgs=incident.failing_orgs,
                failing_integrations=incident.failing_integrations,
                total_integrations=incident.total_integrations,
                peak_failing_orgs=incident.peak_failing_orgs,
            )

    async def resolve_incident(self, incident_id: UUID, *, at: datetime) -> Incident | None:
        current = self._d.incidents.get(incident_id)
        if current is None or current.state is not AlertState.OPEN:
            return None
        resolved = replace(current, state=AlertState.RESOLVED, resolved_at=at)
        self._d.incidents[incident_id] = resolved
        return resolved

    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        added = 0
        by_key = {r.delivery.dedupe_key: r for r in self._d.deliveries.values()}
        for new in deliveries:
            existing = by_key.get(new.dedupe_key)
            if existing is not None:
                if existing.delivery.state is DeliveryState.CANCELLED:
                    existing.delivery = replace(
                        existing.delivery,
                        state=DeliveryState.PENDING,
                        payload=new.payload,
                        next_attempt_at=new.created_at,
                    )
                    added += 1
                continue
            row = _Row(
                Delivery(
                    id=new.id,
                    dedupe_key=new.dedupe_key,
                    event=new.event,
                    target=new.target,
                    payload=copy.deepcopy(new.payload),
                    state=DeliveryState.PENDING,
                    attempts=0,
                    created_at=new.created_at,
                    org_id=new.org_id,
                    alert_id=new.alert_id,
                    incident_id=new.incident_id,
                    next_attempt_at=new.created_at,
                )
            )
            self._d.deliveries[new.id] = row
            by_key[new.dedupe_key] = row
            added += 1
        return added
