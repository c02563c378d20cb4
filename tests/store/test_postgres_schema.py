"""The PostgreSQL schema: packaging, migrations, bootstrap and `db upgrade` (real server)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from integration_health.checks import IntegrationRecord
from integration_health.errors import SchemaError, StoreUnavailable
from integration_health.store import Organization, SQLiteStore
from integration_health.store import postgres as postgres_module
from integration_health.store.base import INITIAL_SLOT
from integration_health.store.postgres import PostgresStore, migrations

ROOT = Path(__file__).resolve().parents[2]
SUPABASE_MIGRATIONS = ROOT / "supabase" / "migrations"


def packaged_folder() -> Any:
    return resources.files("integration_health.store.sql").joinpath("postgres")


def test_packaged_migrations_are_identical_to_supabase_migrations() -> None:
    """The package ships byte-for-byte the migrations of supabase/migrations, no more, no less.

    To fix a failure, copy them over:
    cp supabase/migrations/*.sql src/integration_health/store/sql/postgres/migrations/
    """
    canonical = {p.name: p.read_bytes() for p in SUPABASE_MIGRATIONS.glob("*.sql")}
    packaged = {
        entry.name: entry.read_bytes()
        for entry in packaged_folder().joinpath("migrations").iterdir()
        if entry.name.endswith(".sql")
    }
    assert canonical, "supabase/migrations holds no migration"
    assert sorted(packaged) == sorted(canonical)
    for name, text in canonical.items():
        assert packaged[name] == text, f"{name} differs from its packaged copy"


def test_migration_files_follow_the_supabase_cli_pattern() -> None:
    """Every migration is named <14-digit timestamp>_<name>.sql; the bootstrap is not one."""
    names = [p.name for p in SUPABASE_MIGRATIONS.iterdir()]
    assert all(re.fullmatch(r"\d{14}_[a-z0-9_]+\.sql", n) for n in names), names
    assert len({n[:14] for n in names}) == len(names), "two migrations share a version"
    assert not any("bootstrap" in n for n in names)
    assert packaged_folder().joinpath("bootstrap.sql").is_file()
    for path in SUPABASE_MIGRATIONS.iterdir():
        assert "create role" not in path.read_text().lower(), f"{path.name} creates roles"


async def _columns_pg(url: str) -> dict[str, list[tuple[str, bool]]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select table_name, column_name, is_nullable = 'NO' from information_schema.columns "
            "where table_schema = 'public' order by table_name, ordinal_position"
        )
        tables: dict[str, list[tuple[str, bool]]] = {}
        for table, column, not_null in await cur.fetchall():
            tables.setdefault(table, []).append((column, not_null))
        return tables


def _columns_sqlite(path: Path) -> dict[str, list[tuple[str, bool]]]:
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute("select name from sqlite_master where type = 'table'")
            if r[0] not in ("sqlite_sequence", "schema_migrations")
        ]
        return {
            name: [
                (r[1], bool(r[3] or r[5]))  # NOT NULL, or part of the primary key
                for r in conn.execute(f"pragma table_info('{name}')")
            ]
            for name in sorted(names)
        }
    finally:
        conn.close()


@pytest.mark.postgres
async def test_migrations_apply_to_an_empty_database_once(pg_database: str) -> None:
    """On an empty plain PostgreSQL database upgrade bootstraps and migrates, then does nothing."""
    store = await PostgresStore.open(pg_database)
    try:
        with pytest.raises(SchemaError, match="db upgrade"):
            await store.list_statuses()
        applied = await store.upgrade()
        assert applied == [name for name, _ in migrations()]
        assert await store.upgrade() == []
        assert await store.list_statuses() == []
    finally:
        await store.aclose()
    async with await psycopg.AsyncConnection.connect(pg_database) as conn:
        cur = await conn.execute(
            "select version from integration_health.schema_migrations order by version"
        )
        assert [r[0] for r in await cur.fetchall()] == applied
        cur = await conn.execute("select to_regprocedure('auth.uid()') is not null")
        assert await cur.fetchone() == (True,)


@pytest.mark.postgres
async def test_schema_matches_the_sqlite_schema(pg_store: PostgresStore, tmp_path: Path) -> None:
    """Every table has the same columns, in the same order and nullability, as in SQLite;
    PostgreSQL's planning aid (never-checked integrations, kept by triggers) is its own."""
    sqlite = await SQLiteStore.open(f"sqlite:///{tmp_path / 'mirror.db'}")
    await sqlite.aclose()
    expected = _columns_sqlite(tmp_path / "mirror.db")
    url = pg_store._conninfo  # the fixture's database
    found = await _columns_pg(url)
    assert found.pop("integration_health_unchecked") == [("integration_id", True)]
    assert found == expected


@pytest.mark.postgres
async def test_concurrent_upgrades_apply_each_migration_once(pg_database: str) -> None:
    """Two upgrades at once: one applies the migrations, the other waits and finds none."""
    first = await PostgresStore.open(pg_database)
    second = await PostgresStore.open(pg_database)
    try:
        results = await asyncio.gather(first.upgrade(), second.upgrade())
    finally:
        await first.aclose()
        await second.aclose()
    assert sorted(results, key=len) == [[], [name for name, _ in migrations()]]


@pytest.mark.postgres
async def test_unknown_migrations_are_refused(pg_store: PostgresStore) -> None:
    """A database migrated by a newer version is not touched by an older one."""
    async with await psycopg.AsyncConnection.connect(pg_store._conninfo, autocommit=True) as conn:
        await conn.execute(
            "insert into integration_health.schema_migrations (version) values ('29990101000000_x')"
        )
    with pytest.raises(SchemaError, match="29990101000000_x"):
        await pg_store.upgrade()


@pytest.mark.postgres
async def test_migrations_applied_by_the_supabase_cli_are_not_applied_again(
    pg_database: str,
) -> None:
    """Versions in supabase_migrations.schema_migrations count as applied; ours are added there."""
    async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as conn:
        await conn.execute(
            "create schema supabase_migrations; create table "
            "supabase_migrations.schema_migrations (version text primary key, "
            "statements text[], name text)"
        )
    store = await PostgresStore.open(pg_database)
    try:
        applied = await store.upgrade()
        async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as conn:
            cur = await conn.execute(
                "select version || '_' || name from supabase_migrations.schema_migrations "
                "order by version"
            )
            assert [r[0] for r in await cur.fetchall()] == applied
            # as if only the Supabase CLI had applied them
            await conn.execute("truncate integration_health.schema_migrations")
        assert await store.upgrade() == []
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_a_schema_behind_this_version_is_refused_until_upgraded(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database upgraded by an older version (the newest migration missing) is named as
    such, with the missing migration, until `upgrade` applies it; an empty database as having
    no schema; migrations recorded only by the Supabase CLI count as applied."""
    names = [name for name, _ in migrations()]
    store = await PostgresStore.open(pg_database)
    try:
        with pytest.raises(SchemaError, match="has no integration-health schema"):
            await store.require_current_schema()
        older = migrations()[:-1]
        with monkeypatch.context() as patch:  # the version before the newest migration
            patch.setattr(postgres_module, "migrations", lambda: older)
            assert await store.upgrade() == names[:-1]
        assert await store.pending_migrations() == names[-1:]
        with pytest.raises(SchemaError, match=rf"lacks 1 migration\(s\) .*\({names[-1]}\)"):
            await store.require_current_schema()
        # used anyway (as a library), a statement of this version says the same, not a bare
        # "column does not exist"
        org = uuid.uuid4()
        item = IntegrationRecord(uuid.uuid4(), org, "http", "h", {"url": "https://x.test"})
        await store.import_definitions([Organization(org, "Org")], [], [item])
        with pytest.raises(SchemaError, match=r"older than this version .*db upgrade"):
            await store.list_due(INITIAL_SLOT)
        assert await store.upgrade() == names[-1:]
        await store.require_current_schema()
        async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as conn:
            await conn.execute(
                "create schema supabase_migrations; create table "
                "supabase_migrations.schema_migrations (version text primary key, name text)"
            )
            await conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name) "
                "select split_part(version, '_', 1), version "
                "from integration_health.schema_migrations"
            )
            await conn.execute("drop table integration_health.schema_migrations")
        assert await store.pending_migrations() == []  # as if `supabase db push` applied them
    finally:
        await store.aclose()


@pytest.mark.postgres
def test_cli_commands_refuse_a_database_without_the_schema(pg_database: str) -> None:
    """Every command but `db upgrade` says in one line what to run, before doing anything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_HEALTH_")}
    for command in (["scheduler", "--once"], ["integrations", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "integration_health", "--database-url", pg_database, *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().splitlines() == [
            f"error: the database at {pg_database} has no integration-health schema: run "
            "`integration-health db upgrade` first"
        ], done.stderr


@pytest.mark.postgres
async def test_bootstrap_is_skipped_on_a_supabase_database(pg_database: str) -> None:
    """Where an `auth` schema exists (Supabase), upgrade leaves it alone."""
    async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as conn:
        await conn.execute(
            "create schema auth; create function auth.uid() returns uuid language sql stable "
            "as $$ select '00000000-0000-4000-8000-00000000beef'::uuid $$"
        )
    store = await PostgresStore.open(pg_database)
    try:
        await store.upgrade()
    finally:
        await store.aclose()
    async with await psycopg.AsyncConnection.connect(pg_database) as conn:
        cur = await conn.execute("select auth.uid()::text, to_regprocedure('auth.jwt()')")
        assert await cur.fetchone() == ("00000000-0000-4000-8000-00000000beef", None)


@pytest.mark.postgres
def test_cli_db_upgrade_twice(pg_database: str) -> None:
    """`integration-health --database-url postgresql://… db upgrade` applies, then does nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_HEALTH_")}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "integration_health",
                "--database-url",
                pg_database,
                "db",
                "upgrade",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    names = [name for name, _ in migrations()]
    assert f"Applied {len(names)} migration(s)" in first.stdout
    assert names[-1] in " ".join(first.stdout.split())
    second = run()
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout


def test_cli_reports_an_unreachable_database_in_one_line_without_the_password() -> None:
    """A database that does not answer is a one-line error (exit 2) with the password masked."""
    url = "postgresql://health:s3cret-pw@127.0.0.1:9/nowhere?connect_timeout=2"
    proc = subprocess.run(
        [sys.executable, "-m", "integration_health", "--database-url", url, "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert "health:***@127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_open_fails_fast_with_a_masked_url() -> None:
    """Opening a store whose server refuses connections raises StoreUnavailable, password masked."""
    with pytest.raises(StoreUnavailable) as caught:
        await PostgresStore.open("postgresql://u:topsecret@127.0.0.1:9/db", connect_timeout=2)
    assert "topsecret" not in str(caught.value)
    assert "u:***@" in str(caught.value)
