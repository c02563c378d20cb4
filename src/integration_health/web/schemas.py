"""Request and response models of the API (they shape ``/openapi.json``).

Answers are built as plain JSON by :mod:`~integration_health.web.payloads` (fast for
organisations with thousands of integrations); these models describe them, field by field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..model import ErrorCode, HealthStatus
from ..passive import MAX_ERROR_LENGTH

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "EventList",
    "EventOut",
    "FieldProblem",
    "HealthzOut",
    "HeldOut",
    "HistoryList",
    "HistoryOut",
    "IntegrationHealthOut",
    "OrgHealthOut",
    "OrgList",
    "OrgOut",
    "PausedTypeOut",
    "RunNowOut",
    "RunResultOut",
    "StatusSummary",
    "SyncOutcomeIn",
    "SyncOutcomeOut",
]


class FieldProblem(BaseModel):
    """One invalid field of a request."""

    field: str
    """Where: ``body.duration_ms``, ``query.limit``, ``path.org_id``."""
    message: str


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    """Stable machine-readable code: ``not_found``, ``validation_error``, ``rate_limited``,
    ``missing_token``, ``invalid_token``, ``token_expired``, ``payload_too_large``, …"""
    message: str
    """A sentence for humans."""
    fields: list[FieldProblem] | None = None
    """For ``validation_error``: each invalid field."""


class ErrorBody(BaseModel):
    """Every error answer of the API has this shape."""

    error: ErrorDetail


class StatusSummary(BaseModel):
    """How many enabled integrations are in each status."""

    healthy: int
    degraded: int
    unreachable: int
    not_checked: int
    total: int
    """All integrations of the organisation, disabled ones included."""


class PausedTypeOut(BaseModel):
    """An integration type whose active checks are paused (the vendor kept rate-limiting)."""

    integration_type: str
    passive_until: str
    reason: str
    switched_at: str


class IntegrationHealthOut(BaseModel):
    """One integration and its current status."""

    integration_id: str
    name: str
    integration_type: str
    enabled: bool
    monitoring_mode: str
    check_interval_s: int
    status: HealthStatus | None
    """``null`` until the first check."""
    latency_ms: int | None
    checked_at: str | None
    next_check_at: str | None
    error: str | None
    error_code: ErrorCode | None
    advice: str | None
    """What to do about it, in plain language."""
    consecutive_failures: int
    last_healthy_at: str | None
    source: str | None
    """``active`` (a probe) or ``passive`` (a sync outcome)."""


class OrgHealthOut(BaseModel):
    """The current health of an organisation's integrations."""

    org_id: str
    name: str | None
    status: HealthStatus | None
    """The worst status of the enabled integrations (``null``: none checked yet)."""
    summary: StatusSummary
    paused_types: list[PausedTypeOut]
    integrations: list[IntegrationHealthOut]
    generated_at: str


class OrgOut(BaseModel):
    """An organisation the caller may see, with its overall status."""

    org_id: str
    name: str
    status: HealthStatus | None
    summary: StatusSummary


class OrgList(BaseModel):
    """The organisations the caller may see."""

    organizations: list[OrgOut]


class HistoryOut(BaseModel):
    """One past result."""

    status: HealthStatus
    latency_ms: int
    checked_at: str
    error: str | None
    error_code: ErrorCode | None


class HistoryList(BaseModel):
    """The newest results of one integration, newest first."""

    org_id: str
    integration_id: str
    name: str
    integration_type: str
    limit: int
    history: list[HistoryOut]


class EventOut(BaseModel):
    """A status transition."""

    id: int
    integration_id: str
    integration_type: str
    from_status: HealthStatus | None
    to_status: HealthStatus
    at: str
    error_code: ErrorCode | None
    error: str | None
    source: str


class EventList(BaseModel):
    """Status transitions of an organisation, newest first."""

    org_id: str
    events: list[EventOut]


class RunResultOut(BaseModel):
    """The result of one check run now."""

    integration_id: str
    integration_type: str
    name: str
    status: HealthStatus
    latency_ms: int
    checked_at: str
    error: str | None
    error_code: ErrorCode | None
    advice: str | None


class HeldOut(BaseModel):
    """An integration "check now" did not probe: its vendor asked us to wait."""

    integration_id: str
    integration_type: str
    name: str
    reason: Literal["paused", "retry_after"]
    """``paused``: checks of its type are paused because the vendor kept rate-limiting;
    ``retry_after``: its last answer carried a ``Retry-After`` that has not passed yet."""
    until: str
    """When it may be probed again."""
    message: str


class RunNowOut(BaseModel):
    """What a "check now" run found."""

    org_id: str
    checked: int
    summary: dict[str, int]
    results: list[RunResultOut]
    held: list[HeldOut]
    """Integrations not probed because their vendor asked us to wait (not in ``checked``)."""


class SyncOutcomeIn(BaseModel):
    """One outcome of the sync system for an integration (passive health)."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    """Whether the sync succeeded."""
    error: str | None = Field(default=None, max_length=MAX_ERROR_LENGTH)
    """What went wrong (redacted before it is stored)."""
    duration_ms: int = Field(default=0, ge=0, le=86_400_000)
    """How long the sync took."""
    error_code: ErrorCode | None = None
    """The failure's code, when the sync system knows it (else inferred from ``error``)."""


class SyncOutcomeOut(BaseModel):
    """The status recorded from a sync outcome."""

    integration_id: str
    status: HealthStatus
    latency_ms: int
    checked_at: str
    error: str | None
    error_code: ErrorCode | None


class HealthzOut(BaseModel):
    """The monitor's own health."""

    status: str
    """``ok`` or ``failing``."""
    version: str
    checks: dict[str, dict[str, object]]
