"""Alerting hooked into the real scheduler (after_pass), with real checks of a fake type."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from integration_health import HealthStatus, Settings, metrics
from integration_health.alerting import AlertingService, AlertState, build_after_pass_hook
from integration_health.integrations_file import to_records
from integration_health.scheduling import Scheduler
from integration_health.store import Organization, SQLiteStore
from integration_health.testing import FakeConfig, fake_registry

from .conftest import T0, Receiver, Timeline, config_for, record, seed


class Clock:
    """A settable clock shared by the scheduler and alerting."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def test_scheduler_passes_open_and_deliver_an_alert(
    tmp_path: Path, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Three scheduler passes of a failing check open one alert and the hook delivers it;
    passes of a recovered check resolve it."""
    fake, url = receiver
    db = f"sqlite:///{tmp_path / 'hooked.db'}"
    store = await SQLiteStore.open(db)
    registry, _, _ = fake_registry(settings=Settings(timeout_s=1.0, concurrency=10))
    org = uuid.uuid4()
    item = FakeConfig(integration_id=uuid.uuid4(), org_id=org, name="ERP", outcome="unreachable")
    await store.import_definitions([Organization(org, "Acme")], [], to_records([item]))
    clock = Clock(T0)
    alerting = await AlertingService.open(
        db, config_for(url), settings=Settings(allow_private_networks=True), clock=clock
    )
    scheduler = Scheduler(
        store, registry, clock=clock, after_pass=[build_after_pass_hook(alerting)]
    )
    try:
        async with registry:
            for _ in range(3):
                report = await scheduler.run_pass()
                assert report.written == 1
                clock.at += timedelta(hours=6)  # past any backoff: due again
            [alert] = await alerting.store.list_alerts(org)
            assert alert.state is AlertState.OPEN
            sent = await alerting.drain()
            assert sent is not None
            assert sent.delivered == 1
            recovered = item.model_copy(update={"outcome": "healthy"})
            await store.import_definitions([], [], to_records([recovered]))
            for _ in range(2):
                await scheduler.run_pass()
                clock.at += timedelta(hours=6)
            [alert] = await alerting.store.list_alerts(org)
            assert alert.state is AlertState.RESOLVED
    finally:
        await alerting.aclose()  # waits for the background delivery
        await store.aclose()
    assert fake.events() == ["alert.opened", "alert.resolved"]


async def test_run_loop_evaluates_and_delivers_until_stopped(
    tmp_path: Path, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """`AlertingService.run` (the `alerts run` command) evaluates and delivers each round and
    returns once asked to stop; the deliveries metric counts the outcome."""
    fake, url = receiver
    db = f"sqlite:///{tmp_path / 'loop.db'}"
    store = await SQLiteStore.open(db)
    items = await seed(store, orgs=2)
    timeline = Timeline()
    for _ in range(3):
        await record(store, items, HealthStatus.UNREACHABLE, timeline.next())
    before = delivered_total()
    alerting = await AlertingService.open(
        db, config_for(url), settings=Settings(allow_private_networks=True)
    )
    stop = asyncio.Event()
    try:
        loop = asyncio.create_task(alerting.run(stop, tick_s=0.05))
        for _ in range(200):
            if len(fake.requests) == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(loop, timeout=5)
    finally:
        await alerting.aclose()
        await store.aclose()
    assert fake.events() == ["alert.opened", "alert.opened"]
    assert delivered_total() == before + 2


def delivered_total() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "integration_health_alert_deliveries_total", {"outcome": "delivered"}
    )
    return value or 0.0
