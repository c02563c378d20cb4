"""The `store` fixture: every store implementation, for the shared contract suite.

PostgreSQL fixtures: each test gets its own freshly created, uniquely named database (empty,
or cloned from a template database upgraded once per session), dropped afterwards, on the
server at ``INTEGRATION_HEALTH_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, a role allowed to create databases and,
for the bootstrap, roles). Where no server answers, PostgreSQL tests are skipped — unless
``CI`` is set, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from integration_health.store import MemoryStore, SQLiteStore, Store
from integration_health.store.postgres import PostgresStore

STORE_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

PG_ADMIN_URL = os.environ.get(
    "INTEGRATION_HEALTH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str) -> str:
    """The admin URL pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}"))


def admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the admin database (skips or fails if none answers)."""
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL does not answer at {PG_ADMIN_URL} and CI is set: {exc}")
        pytest.skip(f"PostgreSQL does not answer at {PG_ADMIN_URL}")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The URL of a new, empty database with a unique name; dropped after the test."""
    name = f"ih_test_{uuid.uuid4().hex[:16]}"
    with admin_connect() as admin:
        admin.execute(f'create database "{name}"')
    try:
        yield database_url(name)
    finally:
        with admin_connect() as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


async def _upgrade(url: str) -> None:
    store = await PostgresStore.open(url)
    try:
        await store.upgrade()
    finally:
        await store.aclose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a database upgraded once per test session, to clone fresh databases from."""
    name = f"ih_template_{uuid.uuid4().hex[:16]}"
    with admin_connect() as admin:
        admin.execute(f'create database "{name}"')
    try:
        # In a thread of its own: this may be set up while a test's event loop is running.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _upgrade(database_url(name))).result()
        yield name
    finally:
        with admin_connect() as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def pg_migrated(pg_template: str) -> Iterator[str]:
    """The URL of a new, uniquely named database holding the current schema; dropped after."""
    name = f"ih_test_{uuid.uuid4().hex[:16]}"
    with admin_connect() as admin:
        admin.execute(f'create database "{name}" template "{pg_template}"')
    try:
        yield database_url(name)
    finally:
        with admin_connect() as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
async def pg_store(pg_migrated: str) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on a fresh database with the schema applied."""
    store = await PostgresStore.open(pg_migrated)
    yield store
    await store.aclose()


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, upgraded, empty store of each kind."""
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        sqlite = await SQLiteStore.open(f"sqlite:///{tmp_path / 'contract.db'}")
        yield sqlite
        await sqlite.aclose()
    elif kind == "postgres":
        postgres = await PostgresStore.open(request.getfixturevalue("pg_migrated"))
        yield postgres
        await postgres.aclose()
    else:  # pragma: no cover - new kinds must be added here
        raise AssertionError(kind)
