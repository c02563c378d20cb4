"""The result of one health check, and the vocabulary it is written in.

A check never "fails" by raising: it returns a :class:`HealthResult` whose ``status`` says how
usable the integration is and whose ``error_code`` says why, so that the runner, the store, the
dashboard and the alerts all speak about failures the same way.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ErrorCode", "HealthResult", "HealthStatus", "utcnow"]


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware (the only clock the model uses)."""
    return datetime.now(UTC)


class HealthStatus(enum.StrEnum):
    """How usable an integration is.

    Ordered from worst to best, so the overall status of an organisation is the ``min()`` of
    its integrations' statuses: ``unreachable < degraded < healthy``.
    """

    UNREACHABLE = "unreachable"
    """The integration cannot be used: down, refused, credentials rejected, timed out."""
    DEGRADED = "degraded"
    """Usable, but slow, rate limited or partly unusable."""
    HEALTHY = "healthy"
    """Usable and answering within the latency threshold."""

    @property
    def rank(self) -> int:
        """0 for the worst status, 2 for the best."""
        return _RANKS[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.rank >= other.rank


_RANKS = {HealthStatus.UNREACHABLE: 0, HealthStatus.DEGRADED: 1, HealthStatus.HEALTHY: 2}


class ErrorCode(enum.StrEnum):
    """Why a check was not healthy. Stored in ``error_code``; stable across versions."""

    TIMEOUT = "timeout"
    """No answer within the check's deadline."""
    CONNECTION = "connection"
    """The connection was refused, reset or closed early."""
    DNS = "dns"
    """The host name could not be resolved."""
    TLS = "tls"
    """The TLS handshake failed (certificate invalid, expired, wrong host, …)."""
    AUTH = "auth"
    """The vendor rejected the credentials (401/403, invalid_client, …)."""
    NOT_FOUND = "not_found"
    """The tenant, company, environment or resource does not exist."""
    RATE_LIMITED = "rate_limited"
    """The vendor asked us to slow down (429 or its own form)."""
    SERVER_ERROR = "server_error"
    """The vendor answered with a 5xx error."""
    BAD_RESPONSE = "bad_response"
    """The answer could not be understood, or was not the expected one."""
    CONFIG_INVALID = "config_invalid"
    """The integration's configuration is invalid or a secret is missing."""
    INTERNAL = "internal"
    """A bug in the check itself (it raised an unexpected exception)."""


class HealthResult(BaseModel):
    """The outcome of one check of one integration.

    ``latency_ms`` is always set: for a timeout it is the time waited. ``error`` is a short
    human sentence (secrets redacted); ``details`` a small JSON-able dict (probe phases, vendor
    request id, ``retry_after_s``, …).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: HealthStatus
    latency_ms: int = Field(ge=0)
    checked_at: datetime = Field(default_factory=utcnow)
    error: str | None = None
    error_code: ErrorCode | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("checked_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("checked_at must be timezone-aware")
        return value.astimezone(UTC)

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _round_latency(cls, value: Any) -> Any:
        if isinstance(value, float):
            return max(0, round(value))
        return value

    @model_validator(mode="after")
    def _healthy_has_no_error_code(self) -> Self:
        if self.status is HealthStatus.HEALTHY and self.error_code is not None:
            raise ValueError("a healthy result has no error_code")
        return self

    @property
    def ok(self) -> bool:
        """True unless the integration is unreachable."""
        return self.status is not HealthStatus.UNREACHABLE

    @classmethod
    def healthy(cls, latency_ms: float, *, details: dict[str, Any] | None = None) -> HealthResult:
        """A successful probe (the runner may still mark it degraded for slowness)."""
        if (
            cls is HealthResult
            and latency_ms.__class__ is float
            and 0.0 <= latency_ms < 1e15
            and (details is None or details.__class__ is dict)
        ):
            # The common case, with nothing to validate: every field's type is known here.
            # Built as validation would build it (tests/unit/test_model.py compares the two)
            # without running the validators, ~2 µs saved on every healthy probe.
            return _trusted(
                {
                    "status": HealthStatus.HEALTHY,
                    "latency_ms": round(latency_ms),
                    "checked_at": utcnow(),
                    "error": None,
                    "error_code": None,
                    "details": {} if details is None else dict(details),  # validation copies
                },
                {"status", "latency_ms", "details"},
            )
        return cls(status=HealthStatus.HEALTHY, latency_ms=latency_ms, details=details or {})

    @classmethod
    def degraded(
        cls,
        error_code: ErrorCode | None,
        error: str | None,
        latency_ms: float,
        *,
        details: dict[str, Any] | None = None,
    ) -> HealthResult:
        """Usable, but rate limited, partly unusable or slow."""
        return cls(
            status=HealthStatus.DEGRADED,
            latency_ms=latency_ms,
            error=error,
            error_code=error_code,
            details=details or {},
        )

    @classmethod
    def unreachable(
        cls,
        error_code: ErrorCode,
        error: str,
        latency_ms: float,
        *,
        details: dict[str, Any] | None = None,
        checked_at: datetime | None = None,
    ) -> HealthResult:
        """Not usable; ``error`` says what happened and, where known, what to do.
        ``checked_at`` defaults to now."""
        return cls(
            status=HealthStatus.UNREACHABLE,
            latency_ms=latency_ms,
            checked_at=checked_at if checked_at is not None else utcnow(),
            error=error,
            error_code=error_code,
            details=details or {},
        )


_set = object.__setattr__


def _trusted(fields: dict[str, Any], fields_set: set[str]) -> HealthResult:
    """A :class:`HealthResult` of already valid ``fields`` (all of them, in declaration
    order), made the way pydantic's validation makes one, without validating.

    For the hot paths only, where each value's type is known; ``fields_set`` is what
    ``model_fields_set`` would be had the fields been given to the constructor.
    """
    result = HealthResult.__new__(HealthResult)
    _set(result, "__dict__", fields)
    _set(result, "__pydantic_fields_set__", fields_set)
    _set(result, "__pydantic_extra__", None)
    _set(result, "__pydantic_private__", None)
    return result
