"""The webhook secret (and a secret URL) never appear in payloads, logs or stored rows."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from integration_health import HealthStatus
from integration_health.alerting import AlertingConfig, WebhookTarget

from .conftest import Backend, Receiver, Timeline, closed_port_url, record, seed

H, U = HealthStatus.HEALTHY, HealthStatus.UNREACHABLE


async def test_canaries_never_leak(
    sqlite_backend: Backend,
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """Through failures, retries, refusals, an incident and recovery, neither the signing
    secret nor the token in a secret webhook URL reaches a body, header, log line or row."""
    caplog.set_level(logging.DEBUG)
    fake, url = receiver
    fake.statuses = [500, 503]
    secret = f"canary-secret-{uuid.uuid4().hex}"
    url_token = f"canary-url-{uuid.uuid4().hex}"
    down_token = f"canary-down-{uuid.uuid4().hex}"
    monkeypatch.setenv("IH_CANARY_SECRET", secret)
    monkeypatch.setenv("IH_CANARY_URL", f"{url}?token={url_token}")
    monkeypatch.setenv("IH_CANARY_DOWN_URL", f"{closed_port_url()}/{down_token}")
    config = AlertingConfig(
        webhooks=(
            WebhookTarget(name="up", url="${IH_CANARY_URL}", secret="${IH_CANARY_SECRET}"),
            WebhookTarget(name="down", url="${IH_CANARY_DOWN_URL}", secret="${IH_CANARY_SECRET}"),
        ),
        retry={"jitter": 0.0, "max_attempts": 3},
    )
    service = await sqlite_backend.service(config)
    xledger = await seed(sqlite_backend.main, orgs=6, integration_type="xledger")
    [lone] = await seed(sqlite_backend.main, integration_type="http")
    timeline = Timeline()
    for statuses in [U, U, U, U, H, H, H]:
        await record(sqlite_backend.main, [*xledger, lone], statuses, timeline.next())
        await service.run_once(timeline.now)
        for seconds in (30, 90, 400):
            await service.deliverer.deliver_pending(timeline.now + timedelta(seconds=seconds))

    assert len(fake.requests) >= 4  # incident and alert notifications, some retried
    stored = await service.store.list_deliveries(limit=1000)
    assert {d.target for d in stored} == {"up", "down"}
    assert any(d.last_error and "connection" in d.last_error for d in stored)
    await service.aclose()

    canaries = [secret, url_token, down_token]
    sent = [r.body.decode() + repr(r.headers) for r in fake.requests]
    path = Path(sqlite_backend.url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        dump = "\n".join(conn.iterdump())
    assert "alert_delivery_attempts" in dump
    for canary in canaries:
        assert canary not in caplog.text
        assert all(canary not in text for text in sent)
        assert canary not in dump
    # The receiver was reached through the secret URL: the canaries were in play.
    assert all(r.path == f"/hook?token={url_token}" for r in fake.requests)
