"""The JSON bodies of webhook notifications (schema version 1).

Built from alert and incident rows only: ids, names, times, counts and the last error text,
which the monitor redacted before storing it. No configuration value and no secret is ever
added. Every body has ``schema``, ``event`` and ``sent_by``; the delivery id travels in the
``Idempotency-Key`` header (stable across retries), not in the body.

Events: ``alert.opened``, ``alert.escalated`` (degraded → unreachable), ``alert.resolved``,
``incident.opened``, ``incident.resolved``, and ``test`` (``alerts test-webhook``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .._version import __version__
from .base import Alert, Incident

__all__ = ["alert_payload", "body_bytes", "incident_payload", "test_payload"]

SCHEMA_VERSION = 1


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _envelope(event: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "event": event,
        "sent_by": f"integration-health/{__version__}",
    }


def incident_summary(incident: Incident) -> dict[str, Any]:
    """The incident as it appears inside payloads."""
    return {
        "id": str(incident.id),
        "integration_type": incident.integration_type,
        "state": incident.state.value,
        "opened_at": _iso(incident.opened_at),
        "resolved_at": _iso(incident.resolved_at),
        "failing_organizations": incident.failing_orgs,
        "failing_integrations": incident.failing_integrations,
        "total_integrations": incident.total_integrations,
        "peak_failing_organizations": incident.peak_failing_orgs,
    }


def alert_payload(
    event: str, alert: Alert, *, incident: Incident | None = None, note: str | None = None
) -> dict[str, Any]:
    """The body of ``alert.*`` events."""
    body = _envelope(event)
    body["alert"] = {
        "id": str(alert.id),
        "org_id": str(alert.org_id),
        "integration_id": str(alert.integration_id),
        "integration_type": alert.integration_type,
        "integration_name": alert.integration_name,
        "status": alert.severity.value,
        "severity": alert.severity.level,
        "state": alert.state.value,
        "opened_at": _iso(alert.opened_at),
        "resolved_at": _iso(alert.resolved_at),
        "first_failure_at": _iso(alert.first_failure_at),
        "consecutive_failures": alert.consecutive_failures,
        "error_code": alert.error_code,
        "error": alert.error,
        "incident_id": str(alert.incident_id) if alert.incident_id else None,
    }
    if incident is not None:
        body["incident"] = incident_summary(incident)
    if note:
        body["note"] = note
    return body


def incident_payload(event: str, incident: Incident) -> dict[str, Any]:
    """The body of ``incident.*`` events (vendor-wide: no organisation is named)."""
    body = _envelope(event)
    body["incident"] = incident_summary(incident)
    body["severity"] = "critical"
    return body


def test_payload(target: str, at: datetime) -> dict[str, Any]:
    """The body of a ``test`` event."""
    body = _envelope("test")
    body["target"] = target
    body["at"] = _iso(at)
    body["message"] = "Test notification from integration-health: the webhook works."
    return body


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON with sorted keys, so every retry of a
    delivery sends the same bytes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
