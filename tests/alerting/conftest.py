"""Fixtures for alerting: a real webhook receiver, stores of every kind, seeding helpers.

PostgreSQL tests create and drop their own uniquely named database (the helpers of
``tests/store/conftest.py``); where no server answers and CI is unset they are skipped.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from integration_health import HealthResult, HealthStatus, Settings
from integration_health.alerting import (
    AlertingConfig,
    AlertingService,
    AlertStore,
    MemoryAlertStore,
    SQLiteAlertStore,
    WebhookTarget,
)
from integration_health.alerting.postgres import PostgresAlertStore
from integration_health.checks import IntegrationRecord
from integration_health.model import ErrorCode
from integration_health.store import MemoryStore, Organization, ResultWrite, SQLiteStore, Store
from integration_health.store.postgres import PostgresStore
from integration_health.testing import LocalServer
from tests.store.conftest import admin_connect, database_url

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SECRET_ENV = "IH_TEST_ALERT_WEBHOOK_SECRET"
SECRET = "s3cr3t-webhook-key-for-tests"

STORE_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SQL_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    path: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return str(self.json["event"])


@dataclass
class Receiver:
    """A webhook receiver: records every POST, answers the scripted statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests.append(Received(dict(request.headers), await request.read(), request.path_qs))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return web.Response(status=status, text="received", headers=headers)

    def events(self) -> list[str]:
        return [r.event for r in self.requests]


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """The webhook secret, in the environment variable the config refers to."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    """A receiver on 127.0.0.1: (receiver, URL of its hook)."""
    fake = Receiver()
    async with LocalServer(fake.app) as server:
        yield fake, f"{server.url}/hook"


@pytest.fixture
def receiver_in_thread() -> Iterator[tuple[Receiver, str]]:
    """A receiver served from a thread (for CLI tests in subprocesses)."""
    fake = Receiver()
    with LocalServer(fake.app).in_thread() as server:
        yield fake, f"{server.url}/hook"


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def config_for(*urls: str, **overrides: Any) -> AlertingConfig:
    """Default thresholds, one webhook per URL (``hook0``, ``hook1``…), no jitter."""
    webhooks = [
        WebhookTarget(name=f"hook{i}", url=url, secret=f"${{{SECRET_ENV}}}", timeout_s=5.0)
        for i, url in enumerate(urls)
    ]
    data: dict[str, Any] = {"webhooks": webhooks, "retry": {"jitter": 0.0}}
    data.update(overrides)
    return AlertingConfig.model_validate(data)


def settings() -> Settings:
    return Settings(allow_private_networks=True, database_url="memory://")


# -- stores ------------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database with a unique name; dropped after the test."""
    name = f"ih_alert_{uuid.uuid4().hex[:16]}"
    with admin_connect() as admin:
        admin.execute(f'create database "{name}"')
    try:
        yield database_url(name)
    finally:
        with admin_connect() as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@dataclass
class Backend:
    """The monitor's store plus a way to open (more) alert stores on the same database."""

    kind: str
    url: str
    main: Store
    opened: list[AlertStore] = field(default_factory=list)
    services: list[AlertingService] = field(default_factory=list)

    async def alert_store(self) -> AlertStore:
        store: AlertStore
        if self.kind == "memory":
            assert isinstance(self.main, MemoryStore)
            store = MemoryAlertStore(self.main)
        elif self.kind == "sqlite":
            store = await SQLiteAlertStore.open(self.url)
        else:
            store = await PostgresAlertStore.open(self.url)
        self.opened.append(store)
        return store

    async def service(self, config: AlertingConfig, **kwargs: Any) -> AlertingService:
        """A service on a new alert store (closed by the fixture)."""
        service = AlertingService(
            await self.alert_store(), config, settings=settings(), owns_store=False, **kwargs
        )
        self.services.append(service)
        return service

    async def aclose(self) -> None:
        for service in self.services:
            await service.aclose()
        for store in self.opened:
            await store.aclose()
        await self.main.aclose()


async def open_backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    if kind == "memory":
        return Backend(kind, "memory://", MemoryStore())
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'alerts.db'}"
        return Backend(kind, url, await SQLiteStore.open(url))
    url = request.getfixturevalue("pg_url")
    main = await PostgresStore.open(url)
    await main.upgrade()
    return Backend(kind, url, main)


@pytest.fixture(params=STORE_KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each kind of database, schema applied, empty."""
    b = await open_backend(request.param, tmp_path, request)
    yield b
    await b.aclose()


@pytest.fixture
async def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The embedded SQLite database only."""
    b = await open_backend("sqlite", tmp_path, request)
    yield b
    await b.aclose()


# -- seeding -------------------------------------------------------------------------------------


async def seed(
    store: Store, *, orgs: int = 1, per_org: int = 1, integration_type: str = "http"
) -> list[IntegrationRecord]:
    """``orgs`` organisations with ``per_org`` integrations of one type each."""
    organizations = [Organization(uuid.uuid4(), f"Org {i}") for i in range(orgs)]
    records = [
        IntegrationRecord(
            integration_id=uuid.uuid4(),
            org_id=org.id,
            integration_type=integration_type,
            name=f"{integration_type} {o}-{i}",
            config={"url": "https://example.com/health", "api_token": "${SOME_TOKEN}"},
        )
        for o, org in enumerate(organizations)
        for i in range(per_org)
    ]
    await store.import_definitions(organizations, [], records)
    return records


_ERRORS = {
    HealthStatus.UNREACHABLE: (ErrorCode.SERVER_ERROR, "The vendor answered HTTP 503."),
    HealthStatus.DEGRADED: (ErrorCode.RATE_LIMITED, "Rate limited (HTTP 429)."),
    HealthStatus.HEALTHY: (None, None),
}


async def record(
    store: Store, records: Sequence[IntegrationRecord], status: HealthStatus, at: datetime
) -> None:
    """One result of ``status`` at ``at`` for each integration."""
    code, error = _ERRORS[status]
    await store.record_results(
        [
            ResultWrite(
                org_id=r.org_id,
                integration_id=r.integration_id,
                integration_type=r.integration_type,
                result=HealthResult(
                    status=status, latency_ms=12, checked_at=at, error=error, error_code=code
                ),
            )
            for r in records
        ]
    )


class Timeline:
    """Results every 15 minutes from T0; ``now`` is the time of the latest one."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def next(self) -> datetime:
        self.now += timedelta(minutes=15)
        return self.now
