"""Alerting: hysteresis, vendor-wide incidents and signed webhook deliveries.

The monitor records every result and every status transition; alerting turns them into
alerts a person should act on — after N consecutive failures (default 3), resolved after M
consecutive successes (default 2) — groups a vendor outage that hits many organisations into
one incident, and delivers notifications to webhooks, signed with HMAC-SHA256 and retried
with persisted backoff. Each decision is made once per transition, however many processes
evaluate (see :mod:`.base`). Details and defaults: ``docs/alerting.md``.

Typical use with the in-process scheduler::

    config = load_alerting_config("alerting.yaml")
    async with await AlertingService.open(database_url, config, settings=settings) as alerting:
        scheduler = Scheduler(store, registry, after_pass=[build_after_pass_hook(alerting)])
        await scheduler.run(stop)
"""

from .base import (
    Alert,
    AlertState,
    AlertStore,
    Delivery,
    DeliveryAttempt,
    DeliveryOutcome,
    DeliveryState,
    Incident,
)
from .config import (
    AlertingConfig,
    RetryPolicy,
    Severity,
    VendorIncidentRules,
    WebhookTarget,
    load_alerting_config,
)
from .delivery import DeliveryReport, SendResult, WebhookDeliverer
from .engine import AlertEngine, EvaluationReport
from .memory import MemoryAlertStore
from .service import AlertingService, build_after_pass_hook, open_alert_store
from .signing import SIGNATURE_HEADER, signature_header, verify_signature
from .sqlite import SQLiteAlertStore

__all__ = [
    "SIGNATURE_HEADER",
    "Alert",
    "AlertEngine",
    "AlertState",
    "AlertStore",
    "AlertingConfig",
    "AlertingService",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryOutcome",
    "DeliveryReport",
    "DeliveryState",
    "EvaluationReport",
    "Incident",
    "MemoryAlertStore",
    "RetryPolicy",
    "SQLiteAlertStore",
    "SendResult",
    "Severity",
    "VendorIncidentRules",
    "WebhookDeliverer",
    "WebhookTarget",
    "build_after_pass_hook",
    "load_alerting_config",
    "open_alert_store",
    "signature_header",
    "verify_signature",
]
