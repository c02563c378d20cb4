"""The API on PostgreSQL: reads run as role `authenticated` and row-level security decides."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from integration_health.model import utcnow
from integration_health.settings import Settings
from integration_health.store.postgres import PostgresStore
from integration_health.web import create_app
from integration_health.web.access import RlsView
from integration_health.web.payloads import org_health

from .live import HS_SECRET, LiveServer, World, bearer, claims_for, hs_token, postgres_world

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_server() -> Iterator[tuple[LiveServer, World]]:
    """The app on PostgreSQL with HS256 sign-in (shared by the read-only tests)."""
    with postgres_world() as (url, world):
        settings = Settings(database_url=url, jwt_secret=HS_SECRET)
        with LiveServer(create_app(settings)) as server:
            yield server, world


def get(server: LiveServer, path: str, user: uuid.UUID) -> httpx.Response:
    return httpx.get(server.url + path, headers=bearer(hs_token(claims_for(user))), timeout=10)


def test_member_reads_their_organisation(pg_server: tuple[LiveServer, World]) -> None:
    """A member reads their org's health, history and events through RLS."""
    server, world = pg_server
    health = get(server, f"/api/orgs/{world.org_a}/health", world.user_a)
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["name"] == "Alpha AS"
    assert body["summary"]["total"] == 3 and body["status"] == "unreachable"
    history = get(
        server,
        f"/api/orgs/{world.org_a}/integrations/{world.a_down}/health/history?limit=3",
        world.user_a,
    )
    assert [h["status"] for h in history.json()["history"]] == [
        "unreachable",
        "unreachable",
        "healthy",
    ]
    events = get(server, f"/api/orgs/{world.org_a}/events", world.user_a).json()["events"]
    assert {e["integration_id"] for e in events} == {str(world.a_ok), str(world.a_down)}
    orgs = get(server, "/api/orgs", world.user_a).json()["organizations"]
    assert [o["name"] for o in orgs] == ["Alpha AS"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/orgs/{b}/health",
        "/api/orgs/{b}/events",
        "/api/orgs/{b}/integrations/{b_int}/health/history",
        "/api/orgs/{a}/integrations/{b_int}/health/history",
    ],
)
def test_member_of_a_asking_for_b_gets_404(pg_server: tuple[LiveServer, World], path: str) -> None:
    """On PostgreSQL too, a member of org A asking for org B gets 404 and none of B's data."""
    server, world = pg_server
    response = get(
        server, path.format(a=world.org_a, b=world.org_b, b_int=world.b_secret), world.user_a
    )
    assert response.status_code == 404, response.text
    assert world.B_NAME not in response.text
    assert world.B_INTEGRATION not in response.text


async def test_rls_alone_returns_nothing_of_another_org(pg_world: tuple[str, World]) -> None:
    """With no application-level membership check at all, the RLS view of user A reads
    nothing of org B — while the data is there for the table owner."""
    url, world = pg_world
    store = await PostgresStore.open(url)
    try:
        assert len(await store.list_statuses(world.org_b)) == 1  # the data exists
        async with store.as_user(claims_for(world.user_a)) as reader:
            view = RlsView(reader, store)
            document = await org_health(
                view, world.org_b, organization=None, type_modes=[], now=utcnow()
            )
            history = await view.history(world.b_secret, 96)
            everything = await view.statuses(None)
        assert document["integrations"] == []
        assert document["summary"]["total"] == 0
        assert history == []
        assert {s.org_id for s in everything} == {world.org_a}
    finally:
        await store.aclose()


def test_api_reads_run_as_the_authenticated_role(pg_world: tuple[str, World]) -> None:
    """Revoking SELECT from role `authenticated` breaks the API's reads, though the owner
    still reads: the queries run as `authenticated`, not as the store's own role."""
    url, world = pg_world
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("revoke select on public.integration_health_status from authenticated")
    with LiveServer(create_app(Settings(database_url=url, jwt_secret=HS_SECRET))) as server:
        response = get(server, f"/api/orgs/{world.org_a}/health", world.user_a)
        with psycopg.connect(url) as conn:
            owner_rows = conn.execute("select count(*) from integration_health_status").fetchone()
    assert response.status_code >= 500, response.text
    assert response.json()["error"]["code"] in ("internal", "store_unavailable")
    assert owner_rows == (3,)


def test_api_has_no_membership_filter_of_its_own_on_postgres(pg_world: tuple[str, World]) -> None:
    """With row-level security switched off, user A would see org B: on PostgreSQL the
    isolation shown above comes from RLS, not from application code."""
    url, world = pg_world
    settings = Settings(database_url=url, jwt_secret=HS_SECRET)
    with LiveServer(create_app(settings)) as server:
        before = get(server, f"/api/orgs/{world.org_b}/health", world.user_a)
        with psycopg.connect(url, autocommit=True) as conn:
            for table in ("organizations", "integrations", "integration_health_status"):
                conn.execute(f"alter table public.{table} disable row level security")
        after = get(server, f"/api/orgs/{world.org_b}/health", world.user_a)
    assert before.status_code == 404
    assert after.status_code == 200, after.text
    assert after.json()["integrations"][0]["name"] == world.B_INTEGRATION
