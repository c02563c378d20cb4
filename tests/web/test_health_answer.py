"""The fast health answer: lean reads under RLS, events as the user, refresh-ahead caching,
and a frozen start-up heap."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from integration_health._heap import GC_THRESHOLDS
from integration_health.settings import Settings
from integration_health.store import SQLiteStore
from integration_health.store.postgres import PostgresStore
from integration_health.web import create_app
from integration_health.web.cache import REFRESH_AHEAD, ResponseCache

from .live import HS_SECRET, Clock, LiveServer, World, bearer, claims_for, hs_token

ORG = uuid.uuid4()


async def test_a_hit_near_expiry_refreshes_in_the_background() -> None:
    """In the last part of its TTL an answer is still served at once, while one background
    computation (not one per hit) makes its successor; later hits get the new answer."""
    clock = Clock()
    cache = ResponseCache(1.0, clock=clock)
    bodies = iter([b"1", b"2", b"3"])
    release = asyncio.Event()
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()
        return next(bodies)

    assert (await cache.get_or_compute(ORG, "u", "h", compute)).body == b"1"
    clock.now += 0.5  # fresh, not yet near expiry: no refresh
    assert (await cache.get_or_compute(ORG, "u", "h", compute)).body == b"1"
    await asyncio.sleep(0)
    assert calls == 1
    clock.now += 1.0 - REFRESH_AHEAD / 2 - 0.5  # inside the refresh-ahead window
    hits = [await cache.get_or_compute(ORG, "u", "h", compute) for _ in range(5)]
    assert {a.body for a in hits} == {b"1"}  # nobody waited for the refill
    await asyncio.sleep(0)
    assert calls == 2  # one background computation for all five hits
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert (await cache.get_or_compute(ORG, "u", "h", compute)).body == b"2"
    assert calls == 2


async def test_a_write_during_a_background_refresh_keeps_its_answer_out() -> None:
    """A background refresh that overlaps a write to the organisation is not kept."""
    clock = Clock()
    cache = ResponseCache(1.0, clock=clock)
    release = asyncio.Event()
    bodies = iter([b"old", b"during-write", b"new"])

    async def compute() -> bytes:
        body = next(bodies)
        if body == b"during-write":
            await release.wait()
        return body

    await cache.get_or_compute(ORG, "u", "h", compute)
    clock.now += 0.95
    assert (await cache.get_or_compute(ORG, "u", "h", compute)).body == b"old"
    await asyncio.sleep(0)
    cache.invalidate(ORG)
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert cache.get(ORG, "u", "h") is None
    assert (await cache.get_or_compute(ORG, "u", "h", compute)).body == b"new"


def test_the_server_freezes_its_start_up_heap(tmp_path: Path) -> None:
    """Once serving, the objects allocated at start-up are moved out of the collector's
    reach (``gc.freeze``), so full collections under load stay short, and the collector's
    thresholds are raised (``settle_heap``)."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0

    async def make_store() -> SQLiteStore:
        return await SQLiteStore.open(f"sqlite:///{tmp_path}/freeze.db")

    store = asyncio.run(make_store())
    try:
        with LiveServer(create_app(Settings(database_url=store.url), store=store)) as server:
            assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
            deadline = time.monotonic() + 10
            while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            frozen = gc.get_freeze_count()
            raised = gc.get_threshold()
    finally:
        gc.unfreeze()  # the thresholds are restored by the autouse fixture (tests/conftest.py)
        asyncio.run(store.aclose())
    assert frozen > 10_000
    assert raised == GC_THRESHOLDS


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_lean_reads_as_a_user_see_only_their_organisations(
    pg_world: tuple[str, World],
) -> None:
    """Read as user A, the health rows and events of org B are empty — RLS decides, while
    the data is there for the table owner — and org A's are complete."""
    url, world = pg_world
    store = await PostgresStore.open(url)
    try:
        assert len(await store.list_health_rows(world.org_b)) == 1
        assert await store.list_events(world.org_b) != []
        async with store.as_user(claims_for(world.user_a)) as reader:
            foreign_rows = await reader.list_health_rows(world.org_b)
            foreign_events = await reader.list_events(world.org_b)
            own_rows = await reader.list_health_rows(world.org_a)
            own_events = await reader.list_events(world.org_a, integration_id=world.a_down)
    finally:
        await store.aclose()
    assert foreign_rows == [] and foreign_events == []
    assert {r.integration_id for r in own_rows} == {
        str(world.a_ok),
        str(world.a_down),
        str(world.a_new),
    }
    assert own_events and {e.integration_id for e in own_events} == {world.a_down}


@pytest.mark.postgres
def test_health_and_events_endpoints_read_as_the_authenticated_role(
    pg_world: tuple[str, World],
) -> None:
    """Revoking SELECT on the events from role ``authenticated`` breaks ``/events`` but not
    ``/health``; revoking it on the status table breaks ``/health``: both endpoints read as
    the user, so row-level security applies to them."""
    url, world = pg_world
    token = bearer(hs_token(claims_for(world.user_a)))
    settings = Settings(database_url=url, jwt_secret=HS_SECRET, api_cache_ttl_s=0)
    with LiveServer(create_app(settings)) as server:
        health = f"{server.url}/api/orgs/{world.org_a}/health"
        events = f"{server.url}/api/orgs/{world.org_a}/events"
        assert httpx.get(events, headers=token, timeout=10).status_code == 200
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("revoke select on public.integration_health_events from authenticated")
        no_events = httpx.get(events, headers=token, timeout=10)
        still_health = httpx.get(health, headers=token, timeout=10)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("revoke select on public.integration_health_status from authenticated")
        no_health = httpx.get(health, headers=token, timeout=10)
    assert no_events.status_code >= 500, no_events.text
    assert still_health.status_code == 200, still_health.text
    assert still_health.json()["summary"]["total"] == 3
    assert no_health.status_code >= 500, no_health.text
