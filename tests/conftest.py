"""Shared fixtures: real local servers, stores, registries with fake checks."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from integration_health import Settings
from integration_health.checks import CheckRegistry
from integration_health.store import MemoryStore, SQLiteStore
from integration_health.testing import (
    BlockingFakeCheck,
    FakeCheck,
    HttpEndpointFake,
    LocalServer,
    fake_registry,
)

pytest_plugins = ["tests.canary_plugin"]  # secret canaries over the whole suite

# Tests reach their fake servers on 127.0.0.1: allow it for every Settings() made in tests,
# except where a test asks for the default explicitly.
os.environ.setdefault("INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS", "true")

_GC_THRESHOLDS = gc.get_threshold()


@pytest.fixture(autouse=True)
def _gc_thresholds_restored() -> Iterator[None]:
    """A server started in the test process raises the collector's thresholds once it has
    started (``settle_heap``, as in production); the next test gets pytest's again."""
    yield
    if gc.get_threshold() != _GC_THRESHOLDS:
        gc.set_threshold(*_GC_THRESHOLDS)


@pytest.fixture
def settings() -> Settings:
    """Settings that let checks reach 127.0.0.1."""
    return Settings(allow_private_networks=True, database_url="memory://")


@pytest.fixture
def fakes(settings: Settings) -> tuple[CheckRegistry, FakeCheck, BlockingFakeCheck]:
    """A registry with the scriptable fake checks and every built-in adapter."""
    return fake_registry(settings=settings)


@pytest.fixture
def registry(fakes: tuple[CheckRegistry, FakeCheck, BlockingFakeCheck]) -> CheckRegistry:
    return fakes[0]


@pytest.fixture
def fake_check(fakes: tuple[CheckRegistry, FakeCheck, BlockingFakeCheck]) -> FakeCheck:
    return fakes[1]


@pytest.fixture
def org_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[HttpEndpointFake, str]]:
    """The fake HTTP endpoint on a real socket: (fake, base URL)."""
    fake = HttpEndpointFake()
    async with LocalServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
def endpoint_in_thread() -> Iterator[tuple[HttpEndpointFake, str]]:
    """The fake HTTP endpoint served from a thread (for subprocess/CLI tests)."""
    fake = HttpEndpointFake()
    with LocalServer(fake.app).in_thread() as server:
        yield fake, server.url


@pytest.fixture
async def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'health.db'}")
    yield store
    await store.aclose()
