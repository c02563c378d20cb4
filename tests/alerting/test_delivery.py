"""Webhook delivery: signatures, idempotency, retries with persisted backoff, the delivery log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from integration_health import HealthStatus, Settings
from integration_health.adapters._http import HttpClient
from integration_health.alerting import (
    AlertingConfig,
    AlertingService,
    DeliveryOutcome,
    DeliveryState,
    Severity,
    SQLiteAlertStore,
    WebhookTarget,
    load_alerting_config,
    signature_header,
    verify_signature,
)
from integration_health.alerting.delivery import send_test
from integration_health.alerting.payloads import body_bytes
from integration_health.errors import ConfigError
from integration_health.testing import LocalServer

from .conftest import (
    SECRET_ENV,
    SQL_KINDS,
    Backend,
    Receiver,
    Timeline,
    closed_port_url,
    config_for,
    open_backend,
    record,
    seed,
    settings,
)

U = HealthStatus.UNREACHABLE


@pytest.fixture(params=SQL_KINDS)
async def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """SQLite and PostgreSQL."""
    b = await open_backend(request.param, tmp_path, request)
    yield b
    await b.aclose()


async def open_alert(backend: Backend, service: AlertingService, timeline: Timeline) -> None:
    """Three failures of one new integration, evaluated: one alert, one pending delivery."""
    [item] = await seed(backend.main)
    for _ in range(3):
        await record(backend.main, [item], U, timeline.next())
    await service.engine.evaluate(timeline.now)


async def test_signature_is_verifiable_by_the_receiver(
    sqlite_backend: Backend, secret_env: str
) -> None:
    """A receiver that checks the HMAC over t.body with the shared secret accepts the request,
    and the idempotency key is the delivery id."""
    verdicts: list[bool] = []
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(body)
        ok = verify_signature(
            secret_env, request.headers.get("X-Integration-Health-Signature"), body
        )
        verdicts.append(ok)
        tampered = verify_signature(
            secret_env, request.headers["X-Integration-Health-Signature"], body + b" "
        )
        wrong_key = verify_signature(
            "another-secret", request.headers["X-Integration-Health-Signature"], body
        )
        assert not tampered
        assert not wrong_key
        return web.Response(status=204 if ok else 401)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with LocalServer(app) as server:
        service = await sqlite_backend.service(config_for(f"{server.url}/hook"))
        timeline = Timeline()
        await open_alert(sqlite_backend, service, timeline)
        report = await service.deliverer.deliver_pending(timeline.now)
    assert report.delivered == 1
    assert verdicts == [True]
    [delivery] = await service.store.list_deliveries()
    assert delivery.state is DeliveryState.DELIVERED
    assert json.loads(bodies[0]) == delivery.payload


async def test_headers_carry_event_and_a_stable_idempotency_key(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Every attempt of one delivery sends the same body and the same Idempotency-Key."""
    fake, url = receiver
    fake.statuses = [500]
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    await service.deliverer.deliver_pending(timeline.now)
    await service.deliverer.deliver_pending(timeline.now + timedelta(seconds=30))
    first, second = fake.requests
    [delivery] = await service.store.list_deliveries()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == str(delivery.id)
    assert first.headers["X-Integration-Health-Delivery"] == str(delivery.id)
    assert first.headers["X-Integration-Health-Event"] == "alert.opened"
    assert first.headers["Content-Type"] == "application/json"
    assert first.body == second.body


async def test_retries_back_off_exponentially_after_500s(
    sql_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """After two 500s the delivery is retried at 30 s, then 60 s later, never earlier; the
    delivery log holds each attempt with its status, error and next attempt."""
    fake, url = receiver
    fake.statuses = [500, 502]
    service = await sql_backend.service(config_for(url))
    timeline = Timeline()
    await open_alert(sql_backend, service, timeline)
    t0 = timeline.now
    first = await service.deliverer.deliver_pending(t0)
    assert (first.claimed, first.retrying) == (1, 1)
    assert (await service.deliverer.deliver_pending(t0 + timedelta(seconds=29))).claimed == 0
    second = await service.deliverer.deliver_pending(t0 + timedelta(seconds=30))
    assert second.retrying == 1
    assert (await service.deliverer.deliver_pending(t0 + timedelta(seconds=89))).claimed == 0
    third = await service.deliverer.deliver_pending(t0 + timedelta(seconds=90))
    assert third.delivered == 1
    [delivery] = await service.store.list_deliveries()
    assert delivery.state is DeliveryState.DELIVERED
    assert delivery.attempts == 3
    assert delivery.delivered_at == t0 + timedelta(seconds=90)
    log = await service.store.list_attempts(delivery.id)
    assert [(a.attempt, a.outcome, a.status_code) for a in log] == [
        (1, DeliveryOutcome.RETRYING, 500),
        (2, DeliveryOutcome.RETRYING, 502),
        (3, DeliveryOutcome.DELIVERED, 200),
    ]
    assert [a.at for a in log] == [t0, t0 + timedelta(seconds=30), t0 + timedelta(seconds=90)]
    assert [a.next_attempt_at for a in log] == [
        t0 + timedelta(seconds=30),
        t0 + timedelta(seconds=90),
        None,
    ]
    assert log[0].error == "HTTP 500 from the receiver"
    assert log[2].error is None
    assert all(a.duration_ms >= 0 and a.worker == service.deliverer.worker for a in log)
    assert len(fake.requests) == 3


async def test_connection_refused_is_retried(sqlite_backend: Backend, secret_env: str) -> None:
    """A receiver that is down is logged as a connection failure and retried later."""
    service = await sqlite_backend.service(config_for(closed_port_url()))
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    report = await service.deliverer.deliver_pending(timeline.now)
    assert report.retrying == 1
    [delivery] = await service.store.list_deliveries()
    assert delivery.state is DeliveryState.PENDING
    assert delivery.next_attempt_at == timeline.now + timedelta(seconds=30)
    [attempt] = await service.store.list_attempts(delivery.id)
    assert attempt.status_code is None
    assert attempt.error is not None
    assert attempt.error.startswith("connection: Connection refused")


async def test_retries_survive_a_restart(
    sql_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """A delivery that failed before the process stopped is retried by the next process (a new
    connection, engine and deliverer), at its stored time, with its attempt count and log."""
    fake, url = receiver
    fake.statuses = [500]
    config = config_for(url)
    timeline = Timeline()
    first = await AlertingService.open(
        sql_backend.url, config, settings=settings(), main_store=sql_backend.main
    )
    await open_alert(sql_backend, first, timeline)
    report = await first.deliverer.deliver_pending(timeline.now)
    assert report.retrying == 1
    await first.aclose()  # the process ends: its connection closes

    second = await AlertingService.open(
        sql_backend.url, config, settings=settings(), main_store=sql_backend.main
    )
    try:
        assert (await second.deliverer.deliver_pending(timeline.now)).claimed == 0
        report = await second.deliverer.deliver_pending(timeline.now + timedelta(seconds=30))
        assert report.delivered == 1
        [delivery] = await second.store.list_deliveries()
        log = await second.store.list_attempts(delivery.id)
    finally:
        await second.aclose()
    assert delivery.attempts == 2
    assert [(a.attempt, a.status_code) for a in log] == [(1, 500), (2, 200)]
    assert log[0].next_attempt_at == timeline.now + timedelta(seconds=30)
    assert log[0].worker != log[1].worker
    keys = {r.headers["Idempotency-Key"] for r in fake.requests}
    assert keys == {str(delivery.id)}


async def test_a_dead_workers_claim_is_taken_over_after_its_lease(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """A delivery claimed by a worker that never finished is sent by another after the lease."""
    fake, url = receiver
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    store = service.store
    lost = await store.claim_deliveries(worker="dead", at=timeline.now, lease_s=40, limit=10)
    assert len(lost) == 1
    assert (await service.deliverer.deliver_pending(timeline.now)).claimed == 0
    later = timeline.now + timedelta(seconds=41)
    assert (await service.deliverer.deliver_pending(later)).delivered == 1
    assert len(fake.requests) == 1


async def test_attempts_are_bounded(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """After max_attempts failures the delivery is given up (failed), and not sent again."""
    fake, url = receiver
    fake.statuses = [503] * 10
    config = config_for(url, retry={"max_attempts": 3, "jitter": 0.0, "initial_delay_s": 10})
    service = await sqlite_backend.service(config)
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    for seconds in (0, 10, 30, 70, 1000):
        await service.deliverer.deliver_pending(timeline.now + timedelta(seconds=seconds))
    [delivery] = await service.store.list_deliveries()
    assert delivery.state is DeliveryState.FAILED
    assert len(fake.requests) == 3
    log = await service.store.list_attempts(delivery.id)
    assert [a.outcome for a in log] == [
        DeliveryOutcome.RETRYING,
        DeliveryOutcome.RETRYING,
        DeliveryOutcome.FAILED,
    ]
    assert log[-1].next_attempt_at is None


async def test_client_errors_are_not_retried(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """A 400 (e.g. the receiver rejects the signature) fails at once instead of retrying."""
    fake, url = receiver
    fake.statuses = [400]
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    report = await service.deliverer.deliver_pending(timeline.now)
    assert report.failed == 1
    [delivery] = await service.store.list_deliveries()
    assert delivery.state is DeliveryState.FAILED
    assert (
        delivery.last_error == "HTTP 400 from the receiver (not retried: the receiver refused it)"
    )


async def test_retry_after_is_honoured(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """A 429 with Retry-After: 600 delays the next attempt 600 s, beyond the 30 s backoff."""
    fake, url = receiver
    fake.statuses = [429]
    fake.retry_after = "600"
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    await service.deliverer.deliver_pending(timeline.now)
    [delivery] = await service.store.list_deliveries()
    assert delivery.next_attempt_at == timeline.now + timedelta(seconds=600)


async def test_private_targets_are_refused_unless_allowed(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """With the SSRF guard on (the default), a webhook on 127.0.0.1 is refused, not called."""
    fake, url = receiver
    store = await sqlite_backend.alert_store()
    guarded = AlertingService(
        store,
        config_for(url),
        settings=Settings(allow_private_networks=False, database_url="memory://"),
        owns_store=False,
    )
    sqlite_backend.services.append(guarded)
    timeline = Timeline()
    await open_alert(sqlite_backend, guarded, timeline)
    report = await guarded.deliverer.deliver_pending(timeline.now)
    assert report.failed == 1
    assert fake.requests == []
    [delivery] = await store.list_deliveries()
    assert delivery.last_error is not None
    assert "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS" in delivery.last_error


async def test_a_missing_secret_is_reported_and_retried(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset secret variable is named in the log and the delivery waits for a retry."""
    fake, url = receiver
    monkeypatch.delenv(SECRET_ENV, raising=False)
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    report = await service.deliverer.deliver_pending(timeline.now)
    assert report.retrying == 1
    assert fake.requests == []
    [delivery] = await service.store.list_deliveries()
    assert delivery.last_error == f"webhook 'hook0': environment variable {SECRET_ENV} is not set"


async def test_a_removed_webhook_fails_its_deliveries(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Deliveries for a webhook no longer in the config fail with a clear message."""
    _, url = receiver
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    await open_alert(sqlite_backend, service, timeline)
    other = await sqlite_backend.service(AlertingConfig())
    report = await other.deliverer.deliver_pending(timeline.now)
    assert report.failed == 1
    [delivery] = await other.store.list_deliveries()
    assert delivery.last_error == "webhook 'hook0' is no longer configured"


async def test_test_event_reaches_the_receiver(
    receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """send_test posts a signed `test` event and reports the receiver's answer."""
    fake, url = receiver
    http = HttpClient(settings())
    try:
        [target] = config_for(url).webhooks
        result = await send_test(http, target)
    finally:
        await http.aclose()
    assert result.ok
    [request] = fake.requests
    assert request.event == "test"
    assert verify_signature(
        secret_env, request.headers["X-Integration-Health-Signature"], request.body
    )


def test_signature_header_format_and_freshness() -> None:
    """The header reads t=<unix>,v1=<hex>; a stale or malformed one is refused."""
    body = body_bytes({"event": "test"})
    header = signature_header("k", body, timestamp=1_764_331_200)
    assert header.startswith("t=1764331200,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert verify_signature("k", header, body, now=1_764_331_200 + 299)
    assert not verify_signature("k", header, body, now=1_764_331_200 + 301)
    assert not verify_signature("k", "v1=abc", body)
    assert not verify_signature("k", "t=abc,v1=00", body)
    assert not verify_signature("k", None, body)


def test_literal_webhook_secrets_are_refused() -> None:
    """A secret written as its value (not a ${VAR} reference) is refused, and not echoed."""
    with pytest.raises(ValueError, match="must be a reference") as caught:
        WebhookTarget(name="x", url="https://hooks.example.com", secret="hunter2-literal")
    assert "hunter2-literal" not in str(caught.value)


def test_config_file_errors_are_one_line(tmp_path: Path) -> None:
    """Bad YAML and bad fields give a ConfigError naming the file and field, not the values."""
    bad = tmp_path / "alerting.yaml"
    bad.write_text("failure_threshold: 0\nwebhooks:\n  - {name: a, url: ftp://x, secret: lit}\n")
    with pytest.raises(ConfigError) as caught:
        load_alerting_config(bad)
    message = str(caught.value)
    assert "failure_threshold" in message
    assert "webhooks[0].url" in message
    assert "webhooks[0].secret" in message
    assert "lit" not in message.replace("literal", "")
    bad.write_text("webhooks: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_alerting_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_alerting_config(tmp_path / "missing.yaml")


def test_config_file_is_read(tmp_path: Path) -> None:
    """A YAML file sets thresholds, webhooks with routing, retries and incident rules."""
    path = tmp_path / "alerting.yaml"
    path.write_text(
        "failure_threshold: 4\nsuccess_threshold: 3\ndegraded_alerts: false\n"
        "webhooks:\n"
        "  - {name: pager, url: 'https://pager.example.com/x', secret: '${PAGER_SECRET}',"
        " severities: [unreachable]}\n"
        "retry: {max_attempts: 5}\n"
        "vendor_incidents: {min_orgs: 8, window_s: 600}\n"
    )
    config = load_alerting_config(path)
    assert (config.failure_threshold, config.success_threshold) == (4, 3)
    assert not config.degraded_alerts
    assert [t.name for t in config.routes(Severity.UNREACHABLE)] == ["pager"]
    assert config.routes(Severity.DEGRADED) == []
    assert config.retry.max_attempts == 5
    assert config.vendor_incidents.min_orgs == 8
    assert load_alerting_config(None) == AlertingConfig()


async def test_stores_open_only_a_file_database(tmp_path: Path) -> None:
    """Alerting on an in-memory SQLite URL is refused with a clear error."""
    with pytest.raises(ConfigError, match="needs a SQLite file"):
        await SQLiteAlertStore.open("sqlite://")
