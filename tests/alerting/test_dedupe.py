"""Exactly one alert and one delivery per transition, however many engines run at once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from integration_health import HealthStatus
from integration_health.alerting import Alert, AlertingService, AlertState, Severity
from integration_health.errors import StoreError

from .conftest import (
    SQL_KINDS,
    Backend,
    Receiver,
    Timeline,
    config_for,
    open_backend,
    record,
    seed,
)

H, U = HealthStatus.HEALTHY, HealthStatus.UNREACHABLE


@pytest.fixture(params=SQL_KINDS)
async def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """SQLite and PostgreSQL (alert stores each get their own connection or pool)."""
    b = await open_backend(request.param, tmp_path, request)
    yield b
    await b.aclose()


async def both(first: AlertingService, second: AlertingService, at: Any) -> None:
    """Both engines evaluate and deliver at the same time, three rounds."""
    for _ in range(3):
        await asyncio.gather(first.run_once(at), second.run_once(at))


async def test_two_engines_make_one_alert_and_one_delivery_per_transition(
    sql_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Two engines on independent connections, evaluating and delivering concurrently, open
    each alert once, send each notification once, and resolve each once."""
    fake, url = receiver
    items = await seed(sql_backend.main, orgs=20, per_org=2, integration_type="http")
    config = config_for(url, batch_size=5, vendor_incidents={"enabled": False})
    first = await sql_backend.service(config)
    second = await sql_backend.service(config)
    assert first.store is not second.store
    timeline = Timeline()
    for _ in range(3):
        await record(sql_backend.main, items, U, timeline.next())
    await both(first, second, timeline.now)

    alerts = await first.store.list_alerts(limit=1000)
    assert len(alerts) == 40
    assert Counter(a.integration_id for a in alerts) == Counter(i.integration_id for i in items)
    deliveries = await first.store.list_deliveries(limit=1000)
    assert len(deliveries) == 40
    assert len(fake.requests) == 40
    keys = Counter(r.headers["Idempotency-Key"] for r in fake.requests)
    assert set(keys.values()) == {1}
    for delivery in deliveries:
        assert len(await first.store.list_attempts(delivery.id)) == 1

    for _ in range(2):
        await record(sql_backend.main, items, H, timeline.next())
    await both(first, second, timeline.now + timedelta(seconds=1))
    assert all(a.state is AlertState.RESOLVED for a in await second.store.list_alerts(limit=1000))
    assert Counter(fake.events()) == {"alert.opened": 40, "alert.resolved": 40}


async def test_two_engines_open_one_vendor_incident(
    sql_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Concurrent engines open a vendor incident once and notify it once."""
    fake, url = receiver
    items = await seed(sql_backend.main, orgs=10, integration_type="xledger")
    config = config_for(url, batch_size=3)
    first = await sql_backend.service(config)
    second = await sql_backend.service(config)
    timeline = Timeline()
    for _ in range(3):
        await record(sql_backend.main, items, U, timeline.next())
        await both(first, second, timeline.now)
    assert len(await first.store.list_incidents()) == 1
    assert fake.events() == ["incident.opened"]


async def test_the_database_refuses_a_second_open_alert(
    sql_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """The unique index holds even against a writer that skips the engine's locks."""
    _, url = receiver
    [item] = await seed(sql_backend.main)
    service = await sql_backend.service(config_for(url))
    timeline = Timeline()
    for _ in range(3):
        await record(sql_backend.main, [item], U, timeline.next())
    await service.engine.evaluate(timeline.now)
    [existing] = await service.store.list_alerts()
    duplicate = Alert(
        id=uuid.uuid4(),
        org_id=item.org_id,
        integration_id=item.integration_id,
        integration_type=item.integration_type,
        integration_name=item.name,
        severity=Severity.UNREACHABLE,
        state=AlertState.OPEN,
        opened_at=timeline.now,
        first_failure_at=timeline.now,
        consecutive_failures=3,
        error_code=None,
        error=None,
    )
    with pytest.raises(StoreError):
        async with service.store.transaction() as tx:
            await tx.insert_alert(duplicate)
    assert [a.id for a in await service.store.list_alerts()] == [existing.id]
