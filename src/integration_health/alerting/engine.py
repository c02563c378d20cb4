"""The alert engine: turns stored results into alerts, vendor incidents and deliveries.

:meth:`AlertEngine.evaluate` is idempotent and safe to run at the same time from any number
of processes sharing one database:

1. **Per integration** (batches, one transaction each): lock the state rows of integrations
   with results newer than their cursor (``evaluated_through``), count those results with the
   pure rules of :mod:`.hysteresis`, save each state with compare-and-set, and write what
   changed — open, escalate or resolve the alert, and enqueue its deliveries. An alert opened
   while its vendor has an open incident is grouped under it and suppressed.
2. **Per integration type**: open an incident when the vendor fails in many organisations at
   once (grouping and suppressing the alerts that began with it), update its counts, and
   resolve it when the vendor has recovered — alerts still open then are released and
   notified on their own.

Delivering is separate (:class:`~integration_health.alerting.delivery.WebhookDeliverer`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from .. import metrics
from ..model import utcnow
from .base import (
    NO_MORE_ROWS,
    Alert,
    AlertState,
    AlertStore,
    AlertTransaction,
    Incident,
    NewDelivery,
    PendingIntegration,
    Subject,
)
from .config import AlertingConfig, Severity
from .hysteresis import (
    IntegrationAlertState,
    Transition,
    VendorDecision,
    VendorStats,
    decide_vendor,
    step,
)
from .payloads import alert_payload, incident_payload

__all__ = ["AlertEngine", "EvaluationReport"]

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    """What one :meth:`AlertEngine.evaluate` did."""

    at: datetime
    evaluated: int = 0
    """Integrations whose new results were counted."""
    opened: int = 0
    escalated: int = 0
    resolved: int = 0
    suppressed: int = 0
    """Alerts grouped under a vendor incident instead of being notified on their own."""
    released: int = 0
    """Suppressed alerts notified on their own because they outlived their incident."""
    incidents_opened: int = 0
    incidents_resolved: int = 0
    enqueued: int = 0
    """Deliveries added."""


class AlertEngine:
    """Evaluates new results into alerts and incidents (see the module docstring)."""

    def __init__(
        self,
        store: AlertStore,
        config: AlertingConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_batches: int = 1_000,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.max_batches = max_batches

    async def evaluate(self, at: datetime | None = None) -> EvaluationReport:
        """Count every result not counted yet; decide alerts, incidents and deliveries."""
        at = at or self.clock()
        report = EvaluationReport(at=at)
        for _ in range(self.max_batches):
            if await self._evaluate_batch(at, report) < self.config.batch_size:
                break
        await self._evaluate_incidents(at, report)
        return report

    # -- per integration ----------------------------------------------------------------------

    async def _evaluate_batch(self, at: datetime, report: EvaluationReport) -> int:
        async with self.store.transaction() as tx:
            pending = await tx.pending_integrations(self.config.batch_size)
            decided = []
            for item in pending:
                state, transition = step(item.state, item.observations, self.config)
                if not item.observations:  # nothing left at that timestamp: move past it
                    state = replace(
                        state,
                        evaluated_through=item.status_checked_at,
                        evaluated_id=NO_MORE_ROWS,
                    )
                decided.append((item, state, transition))
            # Type locks in one global order, so concurrent engines cannot deadlock.
            for kind in sorted({i.state.integration_type for i, _, t in decided if t}):
                await tx.lock_type(kind)
            for item, state, transition in decided:
                await self._apply(tx, item, state, transition, at, report)
            report.evaluated += len(pending)
            return len(pending)

    async def _apply(
        self,
        tx: AlertTransaction,
        item: PendingIntegration,
        state: IntegrationAlertState,
        transition: Transition | None,
        at: datetime,
        report: EvaluationReport,
    ) -> None:
        previous = item.state
        if transition is Transition.OPEN:
            state = replace(state, open_alert_id=uuid.uuid4())
        elif transition is Transition.RESOLVE:
            state = replace(state, open_alert_id=None)
        if not await tx.save_state(state, expected_version=previous.version):
            log.info("alert state of %s changed meanwhile; skipped", previous.integration_id)
            return
        if transition is Transition.OPEN:
            await self._open_alert(tx, item, state, at, report)
        elif transition is Transition.ESCALATE and previous.open_alert_id is not None:
            await self._escalate_alert(tx, previous.open_alert_id, state, at, report)
        elif transition is Transition.RESOLVE and previous.open_alert_id is not None:
            await self._resolve_alert(tx, previous.open_alert_id, state, at, report)

    async def _open_alert(
        self,
        tx: AlertTransaction,
        item: PendingIntegration,
        state: IntegrationAlertState,
        at: datetime,
        report: EvaluationReport,
    ) -> None:
        assert state.open_alert_id is not None
        assert state.open_severity is not None
        severity = state.open_severity
        opened_at = state.last_checked_at or at
        first_failure = (
            (state.failing_since if severity is Severity.UNREACHABLE else None)
            or state.bad_since
            or opened_at
        )
        incident = await tx.open_incident(state.integration_type)
        window = timedelta(seconds=self.config.vendor_incidents.window_s)
        grouped = incident is not None and first_failure >= incident.opened_at - window
        alert = Alert(
            id=state.open_alert_id,
            org_id=state.org_id,
            integration_id=state.integration_id,
            integration_type=state.integration_type,
            integration_name=item.integration_name,
            severity=severity,
            state=AlertState.OPEN,
            opened_at=opened_at,
            first_failure_at=first_failure,
            consecutive_failures=state.bad_streak,
            error_code=state.last_error_code,
            error=state.last_error,
            incident_id=incident.id if grouped and incident else None,
            suppressed=grouped,
        )
        await tx.insert_alert(alert)
        report.opened += 1
        metrics.ALERTS.labels("opened", severity.value).inc()
        if grouped:
            report.suppressed += 1
            log.info(
                "alert %s (%s) grouped under the %s incident %s",
                alert.id,
                alert.integration_name,
                alert.integration_type,
                alert.incident_id,
            )
            return
        log.warning(
            "alert opened: %s (%s) of organization %s is %s",
            alert.integration_name,
            alert.integration_type,
            alert.org_id,
            severity.value,
        )
        targets = [t.name for t in self.config.routes(severity)]
        await self._enqueue(
            tx, "alert.opened", targets, alert_payload("alert.opened", alert), at, report, alert
        )

    async def _escalate_alert(
        self,
        tx: AlertTransaction,
        alert_id: UUID,
        state: IntegrationAlertState,
        at: datetime,
        report: EvaluationReport,
    ) -> None:
        alert = await tx.escalate_alert(
            alert_id,
            severity=Severity.UNREACHABLE,
            consecutive_failures=state.bad_streak,
            error_code=state.last_error_code,
            error=state.last_error,
        )
        if alert is None:
            return
        report.escalated += 1
        metrics.ALERTS.labels("escalated", alert.severity.value).inc()
        if alert.suppressed:
            return
        targets = [t.name for t in self.config.routes(Severity.UNREACHABLE)]
        payload = alert_payload("alert.escalated", alert)
        await self._enqueue(tx, "alert.escalated", targets, payload, at, report, alert)

    async def _resolve_alert(
        self,
        tx: AlertTransaction,
        alert_id: UUID,
        state: IntegrationAlertState,
        at: datetime,
        report: EvaluationReport,
    ) -> None:
        alert = await tx.resolve_alert(alert_id, at=state.last_checked_at or at)
        if alert is None:
            return
        report.resolved += 1
        metrics.ALERTS.labels("resolved", alert.severity.value).inc()
        # Whatever was not sent yet is moot now; tell only the receivers that heard of it.
        known = await tx.cancel_pending(Subject(alert_id=alert.id))
        if alert.suppressed or not known:
            return
        log.info("alert resolved: %s (%s)", alert.integration_name, alert.integration_type)
        targets = [t.name for t in self.config.webhooks if t.name in known]
        payload = alert_payload("alert.resolved", alert)
        await self._enqueue(tx, "alert.resolved", targets, payload, at, report, alert)

    # -- per vendor ---------------------------------------------------------------------------

    async def _evaluate_incidents(self, at: datetime, report: EvaluationReport) -> None:
        rules = self.config.vendor_incidents
        since = at - timedelta(seconds=rules.window_s)
        async with self.store.transaction() as tx:
            open_incidents = {i.integration_type: i for i in await tx.open_incidents()}
            if not rules.enabled and not open_incidents:
                return
            stats = {s.integration_type: s for s in await tx.vendor_stats(since)}
        for kind in sorted(set(stats) | set(open_incidents)):
            current = stats.get(kind) or _no_stats(kind)
            incident = open_incidents.get(kind)
            peak = incident.peak_failing_orgs if incident else None
            if decide_vendor(current, open_peak_orgs=peak, rules=rules) is None and (
                incident is None or _same_counts(incident, current)
            ):
                continue
            async with self.store.transaction() as tx:
                await tx.lock_type(kind)  # decide again, alone, on fresh numbers
                fresh = await tx.vendor_stats(since, kind)
                current = fresh[0] if fresh else _no_stats(kind)
                incident = await tx.open_incident(kind)
                peak = incident.peak_failing_orgs if incident else None
                decision = decide_vendor(current, open_peak_orgs=peak, rules=rules)
                if decision is VendorDecision.OPEN:
                    await self._open_incident(tx, current, at, since, report)
                elif decision is VendorDecision.RESOLVE and incident is not None:
                    await self._resolve_incident(tx, incident, current, at, report)
                elif incident is not None and not _same_counts(incident, current):
                    await tx.update_incident_counts(_with_counts(incident, current))

    async def _open_incident(
        self,
        tx: AlertTransaction,
        stats: VendorStats,
        at: datetime,
        since: datetime,
        report: EvaluationReport,
    ) -> None:
        incident = Incident(
            id=uuid.uuid4(),
            integration_type=stats.integration_type,
            state=AlertState.OPEN,
            opened_at=at,
            failing_orgs=stats.failing_orgs,
            failing_integrations=stats.failing_integrations,
            total_integrations=stats.total_integrations,
            peak_failing_orgs=stats.failing_orgs,
        )
        if not await tx.insert_incident(incident):
            return
        report.incidents_opened += 1
        metrics.ALERT_INCIDENTS.labels("opened", incident.integration_type).inc()
        log.warning(
            "vendor incident opened: %s fails in %d organization(s) (%d of %d integrations)",
            incident.integration_type,
            incident.failing_orgs,
            incident.failing_integrations,
            incident.total_integrations,
        )
        targets = [t.name for t in self.config.routes(Severity.UNREACHABLE)]
        payload = incident_payload("incident.opened", incident)
        await self._enqueue(tx, "incident.opened", targets, payload, at, report, incident=incident)
        for alert in await tx.attach_alerts(
            incident.integration_type, incident.id, failing_since=since
        ):
            known = await tx.cancel_pending(Subject(alert_id=alert.id))
            if not known:  # nobody heard of it yet: the incident speaks for it
                await tx.set_suppressed(alert.id, True)
                report.suppressed += 1

    async def _resolve_incident(
        self,
        tx: AlertTransaction,
        incident: Incident,
        stats: VendorStats,
        at: datetime,
        report: EvaluationReport,
    ) -> None:
        await tx.update_incident_counts(_with_counts(incident, stats))
        resolved = await tx.resolve_incident(incident.id, at=at)
        if resolved is None:
            return
        report.incidents_resolved += 1
        metrics.ALERT_INCIDENTS.labels("resolved", incident.integration_type).inc()
        log.warning("vendor incident resolved: %s recovered", incident.integration_type)
        known = await tx.cancel_pending(Subject(incident_id=incident.id))
        targets = [t.name for t in self.config.webhooks if t.name in known]
        payload = incident_payload("incident.resolved", resolved)
        await self._enqueue(
            tx, "incident.resolved", targets, payload, at, report, incident=resolved
        )
        for alert in await tx.release_alerts(incident.id):
            report.released += 1
            note = (
                f"Still failing after the {alert.integration_type} incident ended: "
                "not explained by the vendor outage."
            )
            payload = alert_payload("alert.opened", alert, incident=resolved, note=note)
            targets = [t.name for t in self.config.routes(alert.severity)]
            await self._enqueue(tx, "alert.opened", targets, payload, at, report, alert)

    # -- deliveries ---------------------------------------------------------------------------

    async def _enqueue(
        self,
        tx: AlertTransaction,
        event: str,
        targets: Iterable[str],
        payload: dict[str, object],
        at: datetime,
        report: EvaluationReport,
        alert: Alert | None = None,
        *,
        incident: Incident | None = None,
    ) -> None:
        if alert is not None:
            subject = f"alert:{alert.id}"
        else:
            assert incident is not None
            subject = f"incident:{incident.id}"
        deliveries = [
            NewDelivery(
                id=uuid.uuid4(),
                dedupe_key=f"{subject}:{event}:{target}",
                event=event,
                target=target,
                payload=payload,
                created_at=at,
                org_id=alert.org_id if alert else None,
                alert_id=alert.id if alert else None,
                incident_id=(alert.incident_id if alert else incident.id if incident else None),
            )
            for target in targets
        ]
        report.enqueued += await tx.enqueue(deliveries)


def _no_stats(kind: str) -> VendorStats:
    return VendorStats(kind, 0, 0, 0, 0, 0)


def _same_counts(incident: Incident, stats: VendorStats) -> bool:
    return (
        incident.failing_orgs == stats.failing_orgs
        and incident.failing_integrations == stats.failing_integrations
        and incident.total_integrations == stats.total_integrations
    )


def _with_counts(incident: Incident, stats: VendorStats) -> Incident:
    return replace(
        incident,
        failing_orgs=stats.failing_orgs,
        failing_integrations=stats.failing_integrations,
        total_integrations=stats.total_integrations,
        peak_failing_orgs=max(incident.peak_failing_orgs, stats.failing_orgs),
    )
