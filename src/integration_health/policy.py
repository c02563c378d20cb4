"""Status rules and what a result means for the integration's state (pure, no I/O).

- :func:`apply_status_rules` turns an adapter's raw result into the final one (slow → degraded).
- :func:`next_state` folds a result into the previous state: consecutive failures, last
  healthy time and when to check next (interval, backoff after failures, ``Retry-After``).
- :func:`overall_status` is the worst status of a set of integrations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .config import IntegrationConfigBase
from .model import HealthResult, HealthStatus

__all__ = [
    "BACKOFF_CAP_S",
    "IntegrationState",
    "StatusRules",
    "apply_status_rules",
    "backoff_delay_s",
    "next_check_at",
    "next_state",
    "overall_status",
    "retry_after_hint",
]

BACKOFF_CAP_S = 4 * 3600
"""Longest wait between two checks of a failing integration (4 hours)."""

BACKOFF_JITTER = 0.1
"""Backoff delays are spread by up to ±10 % so integrations failing together do not retry
together."""


@dataclass(frozen=True)
class StatusRules:
    """Thresholds that turn observations into a status.

    ``degraded_latency_ms`` maps an integration type to its default threshold; an
    integration's own ``degraded_latency_ms`` wins over it.
    """

    degraded_latency_ms: Mapping[str, int] = field(default_factory=dict)

    def latency_threshold_ms(self, config: IntegrationConfigBase) -> int:
        """The threshold above which a successful probe of ``config`` is degraded."""
        if config.degraded_latency_ms is not None:
            return config.degraded_latency_ms
        return self.degraded_latency_ms.get(
            config.integration_type, config.default_degraded_latency_ms
        )


def apply_status_rules(
    config: IntegrationConfigBase, result: HealthResult, rules: StatusRules
) -> HealthResult:
    """A healthy result slower than the threshold becomes ``degraded`` (no error_code)."""
    threshold = rules.latency_threshold_ms(config)
    if result.status is HealthStatus.HEALTHY and result.latency_ms > threshold:
        return result.model_copy(
            update={
                "status": HealthStatus.DEGRADED,
                "error": (
                    f"Slow answer: {result.latency_ms:,} ms, above the {threshold:,} ms "
                    "threshold. The integration works; watch the trend."
                ),
                "details": {**result.details, "degraded_latency_ms": threshold},
            }
        )
    return result


@dataclass(frozen=True)
class IntegrationState:
    """What the store keeps about an integration between two results."""

    status: HealthStatus
    checked_at: datetime
    consecutive_failures: int = 0
    last_healthy_at: datetime | None = None
    next_check_at: datetime | None = None


def backoff_delay_s(
    interval_s: int, consecutive_failures: int, *, key: str = "", cap_s: int = BACKOFF_CAP_S
) -> float:
    """Seconds until the next check after ``consecutive_failures`` failures in a row.

    ``interval_s`` after the first failure, then doubling (``2 × interval``, ``4 ×``, …) up to
    ``cap_s`` (never below the interval), spread by ±10 % jitter. The jitter is derived from
    ``key`` (the integration id) and the failure count, so it is stable for one integration
    — reproducible in tests — yet different across integrations.
    """
    if consecutive_failures <= 1:
        return float(interval_s)
    exponent = min(consecutive_failures - 1, 32)
    base = min(float(interval_s) * 2.0**exponent, float(max(cap_s, interval_s)))
    digest = hashlib.blake2b(f"{key}:{consecutive_failures}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2**64  # in [0, 1)
    jittered = base * (1 + BACKOFF_JITTER * (2 * unit - 1))
    return max(float(interval_s), jittered)


def retry_after_hint(details: Mapping[str, Any]) -> float | None:
    """The vendor's ``retry_after_s`` hint in a result's details, in seconds, when it is a
    positive number (anything else stored there is no hint)."""
    hint = details.get("retry_after_s")
    if isinstance(hint, int | float) and not isinstance(hint, bool) and hint > 0:
        return float(hint)
    return None


def next_state(
    previous: IntegrationState | None,
    config: IntegrationConfigBase,
    result: HealthResult,
) -> IntegrationState:
    """The state after ``result``.

    Only ``unreachable`` counts as a failure; any other status resets the count. The next
    check comes one interval later, later still while failing (backoff), and never before a
    ``retry_after_s`` hint in the result's details.
    """
    failures = _failures(previous, result)
    last_healthy = previous.last_healthy_at if previous else None
    if result.status is HealthStatus.HEALTHY:
        last_healthy = result.checked_at
    return IntegrationState(
        status=result.status,
        checked_at=result.checked_at,
        consecutive_failures=failures,
        last_healthy_at=last_healthy,
        next_check_at=result.checked_at + timedelta(seconds=_delay_s(config, result, failures)),
    )


def next_check_at(
    previous: IntegrationState | None,
    config: IntegrationConfigBase,
    result: HealthResult,
) -> datetime:
    """``next_state(previous, config, result).next_check_at``, without the rest of the state
    (the scheduler asks this once per check)."""
    delay = _delay_s(config, result, _failures(previous, result))
    return result.checked_at + timedelta(seconds=delay)


def _failures(previous: IntegrationState | None, result: HealthResult) -> int:
    """Consecutive failures after ``result``: only ``unreachable`` counts, anything else
    resets the count."""
    return (previous.consecutive_failures if previous else 0) + 1 if not result.ok else 0


def _delay_s(config: IntegrationConfigBase, result: HealthResult, failures: int) -> float:
    """Seconds from ``result`` to the next check: one interval, longer while failing
    (backoff), never before a ``retry_after_s`` hint."""
    delay = float(config.check_interval_s)
    if failures > 1:  # the key (the id as text) only seeds the jitter of a backoff
        delay = backoff_delay_s(config.check_interval_s, failures, key=str(config.integration_id))
    retry_after = retry_after_hint(result.details)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def overall_status(statuses: Iterable[HealthStatus]) -> HealthStatus | None:
    """The worst of ``statuses`` (``None`` when there are none)."""
    return min(statuses, default=None)
