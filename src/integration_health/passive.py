"""Passive health: the sync system's real outcomes update status and history.

Integrations in ``passive`` mode are never probed; their status comes only from here. Active
integrations take sync outcomes too (they are real evidence), without moving their probe
schedule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from uuid import UUID

from .checks import CheckRegistry
from .config import MIN_CHECK_INTERVAL_S, IntegrationConfigBase
from .errors import ConfigError, UnknownIntegration
from .model import ErrorCode, HealthResult, HealthStatus, utcnow
from .redaction import Redactor
from .scheduling.planner import floor_s
from .store.base import ResultWrite, Store

__all__ = ["classify_sync_error", "record_sync_outcome"]

MAX_ERROR_LENGTH = 2_000

_PATTERNS: list[tuple[re.Pattern[str], ErrorCode]] = [
    (re.compile(r"(?i)\b(429|rate.?limit|too many requests|throttl)"), ErrorCode.RATE_LIMITED),
    (
        re.compile(
            r"(?i)\b(401|403|unauthori[sz]ed|forbidden|invalid_grant|invalid_client|"
            r"credential|expired token|token expired|access denied)"
        ),
        ErrorCode.AUTH,
    ),
    (re.compile(r"(?i)\b(timed? ?out|timeout|deadline)"), ErrorCode.TIMEOUT),
    (re.compile(r"(?i)\b(404|not found|unknown (company|tenant))"), ErrorCode.NOT_FOUND),
    (re.compile(r"(?i)\b(name resolution|getaddrinfo|nxdomain|dns)"), ErrorCode.DNS),
    (re.compile(r"(?i)\b(certificate|ssl|tls)"), ErrorCode.TLS),
    (re.compile(r"(?i)\b(connection (refused|reset)|econn|unreachable)"), ErrorCode.CONNECTION),
    (
        re.compile(r"(?i)\b(5\d\d|server error|service unavailable|bad gateway)"),
        ErrorCode.SERVER_ERROR,
    ),
]


def classify_sync_error(error: str | None) -> ErrorCode:
    """A best-effort error code for a sync failure described only by text."""
    for pattern, code in _PATTERNS:
        if error and pattern.search(error):
            return code
    return ErrorCode.SERVER_ERROR


async def record_sync_outcome(
    org_id: UUID,
    integration_id: UUID,
    ok: bool,
    error: str | None = None,
    duration_ms: int = 0,
    *,
    store: Store,
    registry: CheckRegistry | None = None,
    error_code: ErrorCode | None = None,
    at: datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> HealthResult:
    """Record one outcome of the sync system for an integration; returns the stored result.

    A success is ``healthy``; a failure is ``unreachable`` with ``error_code`` (or one
    inferred from the error text), except rate limiting, which is ``degraded``. The error text
    is redacted (the integration's own secrets, and secret-shaped text) before it is stored.
    Raises :class:`UnknownIntegration` for an integration that does not exist in ``org_id``.
    """
    if duration_ms < 0:
        raise ConfigError("duration_ms must be ≥ 0")
    record = await store.get_integration(integration_id)
    if record is None or record.org_id != org_id:
        raise UnknownIntegration(f"unknown integration {integration_id} in organization {org_id}")
    secrets: set[str] = set()
    floor = MIN_CHECK_INTERVAL_S
    if registry is not None:
        config = registry.from_record(record)
        floor = floor_s(config)
        if isinstance(config, IntegrationConfigBase):
            try:
                _, secrets = config.resolve(environ)
            except ConfigError:
                secrets = set()
    redactor = Redactor(secrets)
    checked_at = at or utcnow()
    details = {"source": "sync", "duration_ms": duration_ms}
    if ok:
        result = HealthResult(
            status=HealthStatus.HEALTHY,
            latency_ms=duration_ms,
            checked_at=checked_at,
            details=details,
        )
    else:
        text = redactor.text((error or "The sync failed (no error text given).")[:MAX_ERROR_LENGTH])
        code = error_code or classify_sync_error(error)
        status = (
            HealthStatus.DEGRADED if code is ErrorCode.RATE_LIMITED else HealthStatus.UNREACHABLE
        )
        result = HealthResult(
            status=status,
            latency_ms=duration_ms,
            checked_at=checked_at,
            error=f"Sync failed: {text}",
            error_code=code,
            details=details,
        )
    await store.record_results(
        [
            ResultWrite(
                org_id=org_id,
                integration_id=integration_id,
                integration_type=record.integration_type,
                result=result,
                # An active integration is not probed within its floor of this outcome (the
                # planner's rule): its next check moves to then at the earliest, so that it
                # is not listed as due meanwhile — integrations that sync often would fill
                # the planner's due window and hold up every other check.
                next_check_at=checked_at + timedelta(seconds=floor)
                if record.monitoring_mode == "active"
                else None,
                source="passive",
            )
        ]
    )
    return result
