"""/healthz (liveness and readiness) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from integration_health import metrics
from integration_health.checks import CheckRegistry
from integration_health.model import utcnow
from integration_health.scheduling import Scheduler, SchedulerOptions
from integration_health.settings import Settings
from integration_health.store import SQLiteStore
from integration_health.testing import fake_registry
from integration_health.web import create_app

from .live import LiveServer, World, seed_world


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process (its lifespan running), through the ASGI transport."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://monitor") as client,
    ):
        yield client


def settings_for(store: SQLiteStore) -> Settings:
    return Settings(database_url=store.url, allow_private_networks=True)


async def test_healthz_ok_when_the_store_answers(sqlite_store: SQLiteStore) -> None:
    """With a reachable store and no scheduler, /healthz is 200 and reports the store only."""
    async with client_of(create_app(settings_for(sqlite_store), store=sqlite_store)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"store"}
    assert body["checks"]["store"]["ok"] is True


async def test_healthz_503_when_the_store_is_gone(sqlite_store: SQLiteStore) -> None:
    """When the store stops answering, /healthz is 503 with the store's error."""
    async with client_of(create_app(settings_for(sqlite_store), store=sqlite_store)) as client:
        await sqlite_store.aclose()
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "failing"
    assert response.json()["checks"]["store"]["ok"] is False


async def test_healthz_follows_the_scheduler_heartbeat(
    sqlite_store: SQLiteStore, registry: CheckRegistry
) -> None:
    """A fresh scheduler heartbeat is 200; once its last pass is older than allowed, 503."""
    now = [utcnow()]
    gate = asyncio.Event()
    gate.set()

    async def held_at_the_gate(report: object) -> None:
        await gate.wait()

    scheduler = Scheduler(
        sqlite_store,
        registry,
        options=SchedulerOptions(tick_s=0.2),
        clock=lambda: now[0],
        after_pass=[held_at_the_gate],
    )
    app = create_app(settings_for(sqlite_store), store=sqlite_store, scheduler=scheduler)
    async with client_of(app) as client:
        for _ in range(100):
            if scheduler.last_pass_at is not None:
                break
            await asyncio.sleep(0.02)
        fresh = await client.get("/healthz")
        gate.clear()  # the next pass never completes…
        await asyncio.sleep(0.5)
        now[0] += timedelta(minutes=10)  # …while time goes on
        stale = await client.get("/healthz")
        gate.set()
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["checks"]["scheduler"]["ok"] is True
    assert stale.status_code == 503
    assert stale.json()["checks"]["scheduler"]["ok"] is False
    assert stale.json()["checks"]["scheduler"]["age_s"] >= 600


async def test_scheduler_in_the_app_stops_with_it(sqlite_store: SQLiteStore) -> None:
    """SchedulerOptions make the app run a scheduler in its lifespan and stop it on shutdown."""
    registry, _, _ = fake_registry(settings=settings_for(sqlite_store))
    app = create_app(
        settings_for(sqlite_store),
        store=sqlite_store,
        registry=registry,
        scheduler=SchedulerOptions(tick_s=0.5),
    )
    state = app.state.integration_health
    async with client_of(app) as client:
        assert state.scheduler is not None
        task = state.scheduler_task
        assert task is not None and not task.done()
        assert (await client.get("/healthz")).status_code == 200
    assert task.done() and not task.cancelled()


def test_metrics_parse_and_hold_the_series(tmp_path: Path) -> None:
    """/metrics parses as Prometheus text and holds latency by type, checks by error code,
    status counts per type and status, scheduler drift, rate-limit switches — and every other
    series of integration_health.metrics (alert deliveries included)."""
    world = World()
    url = f"sqlite:///{tmp_path / 'metrics.db'}"

    async def seed() -> None:
        store = await SQLiteStore.open(url)
        try:
            await seed_world(store, world)
        finally:
            await store.aclose()

    asyncio.run(seed())
    settings = Settings(database_url=url, allow_private_networks=True, run_now_interval_s=0)
    with LiveServer(create_app(settings)) as server:
        assert httpx.post(f"{server.url}/api/orgs/{world.org_a}/health/checks").status_code == 200
        response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    latency = families["integration_health_check_latency_seconds"]
    assert latency.type == "histogram"
    assert any(s.labels.get("integration_type") == "http" for s in latency.samples)
    checks = families["integration_health_checks"]
    codes = {s.labels["error_code"] for s in checks.samples if s.name.endswith("_total")}
    assert "connection" in codes  # the seeded URLs point at a closed port
    statuses = {
        (s.labels["integration_type"], s.labels["status"]): s.value
        for s in families["integration_health_integrations"].samples
    }
    assert statuses[("http", "unreachable")] == 3  # org A's, checked now (closed port)
    assert statuses[("http", "healthy")] == 1  # org B's seeded result
    assert statuses[("http", "not_checked")] == 0
    assert "integration_health_scheduler_drift_seconds" in families
    assert "integration_health_rate_limit_switches" in families
    assert "integration_health_type_paused" in families
    assert "integration_health_alert_deliveries" in families  # defined by alerting
    defined = {m.name for m in metrics.REGISTRY.collect()}
    assert defined <= set(families), defined - set(families)
