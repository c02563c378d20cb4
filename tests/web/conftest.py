"""Fixtures of the web tests: a seeded SQLite world, signing keys, live servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_health.settings import Settings
from integration_health.store import SQLiteStore
from integration_health.web import create_app

from .live import HS_SECRET, SERVICE_KEY, Keys, LiveServer, World, postgres_world, seed_world


@pytest.fixture(scope="session")
def keys() -> Keys:
    """An RSA and an EC key pair (generated once)."""
    return Keys()


def _seed_sqlite(path: Path, world: World) -> str:
    url = f"sqlite:///{path}"

    async def seed() -> None:
        store = await SQLiteStore.open(url)
        try:
            await seed_world(store, world)
        finally:
            await store.aclose()

    asyncio.run(seed())
    return url


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory, world: World) -> str:
    """A SQLite database holding the two-organisation world."""
    return _seed_sqlite(tmp_path_factory.mktemp("web") / "world.db", world)


@pytest.fixture(scope="module")
def hs_server(sqlite_url: str) -> Iterator[LiveServer]:
    """The app on SQLite, users signed in with HS256 JWTs, the service key configured."""
    settings = Settings(
        database_url=sqlite_url,
        jwt_secret=HS_SECRET,
        service_key=SERVICE_KEY,
        allow_private_networks=True,
    )
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture
def pg_world() -> Iterator[tuple[str, World]]:
    """A fresh PostgreSQL database holding the two-organisation world."""
    with postgres_world() as url_and_world:
        yield url_and_world
