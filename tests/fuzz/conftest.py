"""Fixtures of the bad-input tests: a seeded SQLite world and the app built on it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from integration_health.settings import Settings
from integration_health.store import SQLiteStore
from tests.web.live import HS_SECRET, SERVICE_KEY, World, seed_world


def seeded_sqlite(path: Path, world: World) -> str:
    """A SQLite database at ``path`` holding the two-organisation world; its URL."""
    url = f"sqlite:///{path}"

    async def seed() -> None:
        store = await SQLiteStore.open(url)
        try:
            await seed_world(store, world)
        finally:
            await store.aclose()

    asyncio.run(seed())
    return url


def app_settings(database_url: str, **overrides: object) -> Settings:
    """Settings of the fuzzed app: HS256 users, a service key, short check deadlines."""
    values: dict[str, object] = {
        "database_url": database_url,
        "jwt_secret": HS_SECRET,
        "service_key": SERVICE_KEY,
        "allow_private_networks": True,
        "timeout_s": 2.0,
        "api_cache_ttl_s": 0.0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory, world: World) -> str:
    return seeded_sqlite(tmp_path_factory.mktemp("fuzz") / "world.db", world)
