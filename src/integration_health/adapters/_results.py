"""Turning HTTP answers into results, shared by every HTTP-based adapter."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime
from typing import Any

from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure, classify_exception
from ._http import HttpResponse

__all__ = [
    "parse_retry_after",
    "result_for_exception",
    "result_for_http_status",
    "vendor_failure",
]

MAX_RETRY_AFTER_S = 24 * 3600


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Garbage gives ``None``; values are clamped to [0, 24 h].
    """
    if not value:
        return None
    value = value.strip()
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def result_for_http_status(
    response: HttpResponse,
    latency_ms: float,
    *,
    details: dict[str, Any] | None = None,
    what: str = "The vendor",
) -> HealthResult:
    """The default mapping of an HTTP status to a result (see the http adapter's table)."""
    details = dict(details or {})
    details.setdefault("http_status", response.status)
    status = response.status
    if 200 <= status < 400:
        return HealthResult.healthy(latency_ms, details=details)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        hint = ""
        if retry_after is not None:
            details["retry_after_s"] = retry_after
            hint = f" It asks us to wait {retry_after:g} s."
        return HealthResult.degraded(
            ErrorCode.RATE_LIMITED,
            f"{what} is rate limiting us (HTTP 429).{hint} Probes back off automatically.",
            latency_ms,
            details=details,
        )
    if status in (401, 403):
        return HealthResult.unreachable(
            ErrorCode.AUTH,
            f"{what} rejected the credentials (HTTP {status}): renew or correct them.",
            latency_ms,
            details=details,
        )
    if status in (404, 410):
        return HealthResult.unreachable(
            ErrorCode.NOT_FOUND,
            f"{what} says the address does not exist (HTTP {status}): check the URL.",
            latency_ms,
            details=details,
        )
    if status >= 500:
        return HealthResult.unreachable(
            ErrorCode.SERVER_ERROR,
            f"{what} has a server error (HTTP {status}); usually on the vendor's side.",
            latency_ms,
            details=details,
        )
    return HealthResult.unreachable(
        ErrorCode.BAD_RESPONSE,
        f"Unexpected HTTP {status} from {what.lower().removeprefix('the ')}.",
        latency_ms,
        details=details,
    )


def vendor_failure(
    response: HttpResponse,
    latency_ms: float,
    *,
    details: dict[str, Any],
    what: str,
    said: str = "",
    stage: str | None = None,
) -> HealthResult:
    """The result for a vendor answer that is not the success its probe looks for.

    A 2xx/3xx here is unexpected (``bad_response``); a 5xx keeps the vendor's ``Retry-After``
    in ``details`` (the scheduling policy honours it); other statuses get the default mapping
    of :func:`result_for_http_status`. ``said``: the vendor's own words (already redacted),
    appended to the message; ``stage``: which request of the probe failed.
    """
    status = response.status
    if status < 400:
        where = f" ({stage})" if stage else ""
        return HealthResult.unreachable(
            ErrorCode.BAD_RESPONSE,
            f"Unexpected HTTP {status} from {what}{where}.{said}",
            latency_ms,
            details=details,
        )
    if status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            details["retry_after_s"] = retry_after
    result = result_for_http_status(response, latency_ms, details=details, what=what)
    if said and result.error:
        result = result.model_copy(update={"error": result.error + said})
    return result


def result_for_exception(exc: Exception, started: float, details: dict[str, Any]) -> HealthResult:
    """``unreachable`` for a probe that raised: the mapped error code and plain message, the
    time since ``started`` (``time.monotonic()``), and a :class:`ProbeFailure`'s details."""
    code, message = classify_exception(exc)
    if isinstance(exc, ProbeFailure):
        details.update(exc.details)
    latency_ms = (time.monotonic() - started) * 1000
    return HealthResult.unreachable(code, message, latency_ms, details=details)
