"""Sending deliveries to webhooks: signed, idempotent, retried with persisted backoff.

:meth:`WebhookDeliverer.deliver_pending` claims due deliveries (a lease, so one worker sends
each), POSTs each body through the shared SSRF-guarded
:class:`~integration_health.adapters._http.HttpClient` with:

- ``Content-Type: application/json``;
- ``X-Integration-Health-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``;
- ``Idempotency-Key`` and ``X-Integration-Health-Delivery``: the delivery id, the same on
  every retry, so a receiver can drop duplicates (delivery is at-least-once: a worker that
  dies after sending but before recording is replaced once its lease ends);
- ``X-Integration-Health-Event``: ``alert.opened``, ``incident.resolved``, …

and records the attempt (delivery row + one delivery-log row). A 2xx is delivered. A 408,
425, 429 or 5xx answer, a timeout, a connection failure or a missing secret is retried after
the :class:`~integration_health.alerting.config.RetryPolicy` backoff (never before the
receiver's ``Retry-After``), until ``max_attempts``; other 4xx and 3xx answers, and targets
refused by the SSRF guard, fail at once. The next attempt time is stored, so a restarted
process continues the schedule.

No secret reaches a log line, an error text or a row: the URL is never logged or stored
(only the target's name), response bodies are not kept, and error texts are redacted of the
resolved secret and URL.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import metrics
from ..adapters._http import HttpClient
from ..config import ResolvedSecrets
from ..errors import ConfigError, UnsafeTargetError
from ..model import utcnow
from ..redaction import Redactor
from ..transport_errors import classify_exception
from .base import AlertStore, Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryState
from .config import AlertingConfig, WebhookTarget
from .payloads import body_bytes, test_payload
from .signing import SIGNATURE_HEADER, signature_header

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "IDEMPOTENCY_HEADER",
    "DeliveryReport",
    "SendResult",
    "WebhookDeliverer",
    "post_webhook",
    "send_test",
]

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
DELIVERY_HEADER = "X-Integration-Health-Delivery"
EVENT_HEADER = "X-Integration-Health-Event"

_RETRIABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class SendResult:
    """What one POST came to."""

    status_code: int | None
    """The receiver's HTTP status (``None``: no answer)."""
    error: str | None
    """Why it did not succeed (redacted); ``None`` when delivered."""
    duration_ms: int
    retriable: bool = True
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        """The receiver accepted it (2xx)."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class DeliveryReport:
    """What one :meth:`WebhookDeliverer.deliver_pending` did."""

    at: datetime
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    lost: int = 0
    """Attempts not recorded: another worker took the delivery over (lease ended)."""


def _retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class WebhookDeliverer:
    """Sends due deliveries (see the module docstring)."""

    def __init__(
        self,
        store: AlertStore,
        config: AlertingConfig,
        *,
        http: HttpClient,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        worker: str | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.config = config
        self.http = http
        self.environ = environ
        self.clock = clock
        self.worker = worker or f"deliverer:{uuid.uuid4().hex[:12]}"
        self._jitter = jitter

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery stays ours: the slowest target's timeout + 30 s."""
        return max((t.timeout_s for t in self.config.webhooks), default=10.0) + 30.0

    async def deliver_pending(
        self, at: datetime | None = None, *, limit: int = 100
    ) -> DeliveryReport:
        """Send every delivery due at ``at`` (default: now), at most ``limit``; record each."""
        at = at or self.clock()
        report = DeliveryReport(at=at)
        claimed = await self.store.claim_deliveries(
            worker=self.worker, at=at, lease_s=self.lease_s, limit=limit
        )
        report.claimed = len(claimed)
        if not claimed:
            return report
        gate = asyncio.Semaphore(self.config.delivery_concurrency)

        async def one(delivery: Delivery) -> None:
            async with gate:
                await self._deliver(delivery, at, report)

        results = await asyncio.gather(*(one(d) for d in claimed), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for exc in errors:
            log.error("recording a delivery attempt failed: %s: %s", type(exc).__name__, exc)
        if errors:
            raise errors[0]  # every other attempt was recorded; the claim of this one lapses
        return report

    async def _deliver(self, delivery: Delivery, at: datetime, report: DeliveryReport) -> None:
        attempt_no = delivery.attempts + 1
        target = self.config.target(delivery.target)
        if target is None:
            result = SendResult(
                None,
                f"webhook {delivery.target!r} is no longer configured",
                0,
                retriable=False,
            )
        else:
            result = await self.send(
                target, delivery.payload, delivery_id=str(delivery.id), event=delivery.event
            )
        policy = self.config.retry
        if result.ok:
            outcome, state, next_at = DeliveryOutcome.DELIVERED, DeliveryState.DELIVERED, None
        elif result.retriable and attempt_no < policy.max_attempts:
            delay = policy.delay_s(attempt_no, random_fraction=self._jitter())
            if result.retry_after_s is not None:
                delay = max(delay, min(result.retry_after_s, policy.max_delay_s))
            outcome, state = DeliveryOutcome.RETRYING, DeliveryState.PENDING
            next_at = at + timedelta(seconds=delay)
        else:
            outcome, state, next_at = DeliveryOutcome.FAILED, DeliveryState.FAILED, None
        attempt = DeliveryAttempt(
            delivery_id=delivery.id,
            attempt=attempt_no,
            at=at,
            outcome=outcome,
            duration_ms=result.duration_ms,
            worker=self.worker,
            org_id=delivery.org_id,
            status_code=result.status_code,
            error=result.error,
            next_attempt_at=next_at,
        )
        metrics.ALERT_DELIVERIES.labels(outcome.value).inc()
        metrics.ALERT_DELIVERY_DURATION.observe(result.duration_ms / 1000)
        if not await self.store.finish_attempt(attempt, state=state, next_attempt_at=next_at):
            report.lost += 1
            log.warning(
                "delivery %s to webhook %r: attempt %d not recorded (another worker took it)",
                delivery.id,
                delivery.target,
                attempt_no,
            )
            return
        if outcome is DeliveryOutcome.DELIVERED:
            report.delivered += 1
            log.info("delivered %s %s to webhook %r", delivery.event, delivery.id, delivery.target)
        elif outcome is DeliveryOutcome.RETRYING:
            report.retrying += 1
            assert next_at is not None
            log.warning(
                "delivery %s (%s) to webhook %r failed, attempt %d of %d: %s; retrying at %s",
                delivery.id,
                delivery.event,
                delivery.target,
                attempt_no,
                policy.max_attempts,
                result.error,
                next_at.isoformat(),
            )
        else:
            report.failed += 1
            log.error(
                "delivery %s (%s) to webhook %r given up after attempt %d: %s",
                delivery.id,
                delivery.event,
                delivery.target,
                attempt_no,
                result.error,
            )

    async def send(
        self, target: WebhookTarget, payload: Mapping[str, Any], *, delivery_id: str, event: str
    ) -> SendResult:
        """POST one signed body to ``target`` (see :func:`post_webhook`)."""
        return await post_webhook(
            self.http,
            target,
            payload,
            delivery_id=delivery_id,
            event=event,
            environ=self.environ,
            clock=self.clock,
        )


async def post_webhook(
    http: HttpClient,
    target: WebhookTarget,
    payload: Mapping[str, Any],
    *,
    delivery_id: str,
    event: str,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> SendResult:
    """POST one signed body to ``target``; never raises for a failed delivery.

    The secret and URL references are resolved now (from ``environ``, default the process
    environment), and every resolved value is redacted from the error text.
    """
    started = time.monotonic()
    resolver = ResolvedSecrets(environ)

    def elapsed() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        secret = resolver.substitute(target.secret.get_secret_value())
        url = resolver.substitute(target.url)
    except ConfigError as exc:  # a reference that cannot be resolved (names, not values)
        return SendResult(None, f"webhook {target.name!r}: {exc}", elapsed())
    redactor = Redactor(resolver.values)
    body = body_bytes(dict(payload))
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secret, body),
        IDEMPOTENCY_HEADER: delivery_id,
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event,
    }
    try:
        async with asyncio.timeout(target.timeout_s):
            response = await http.request(
                "POST",
                url,
                headers=headers,
                data=body,
                read_body=False,
                follow_redirects=False,
            )
    except UnsafeTargetError as exc:
        return SendResult(None, redactor.text(str(exc)), elapsed(), retriable=False)
    except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
        code, message = classify_exception(exc)
        if code.value == "timeout":
            message = f"No answer within {target.timeout_s:g} s."
        return SendResult(None, redactor.text(f"{code.value}: {message}"), elapsed())
    status = response.status
    duration = elapsed()
    if 200 <= status < 300:
        return SendResult(status, None, duration)
    retriable = status >= 500 or status in _RETRIABLE_STATUS
    hint = "" if retriable else " (not retried: the receiver refused it)"
    return SendResult(
        status,
        f"HTTP {status} from the receiver{hint}",
        duration,
        retriable=retriable,
        retry_after_s=_retry_after(response.headers.get("retry-after"), clock()),
    )


async def send_test(
    http: HttpClient,
    target: WebhookTarget,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> SendResult:
    """Send a signed ``test`` event to ``target`` now (nothing is stored)."""
    payload = test_payload(target.name, clock())
    return await post_webhook(
        http,
        target,
        payload,
        delivery_id=f"test-{uuid.uuid4()}",
        event="test",
        environ=environ,
        clock=clock,
    )
