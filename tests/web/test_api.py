"""Every API endpoint, on SQLite, against the app on a real 127.0.0.1 socket."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from integration_health import ErrorCode, HealthResult
from integration_health.settings import Settings
from integration_health.store import ResultWrite, SQLiteStore, TypeMode
from integration_health.testing import HttpEndpointFake
from integration_health.web import create_app

from .live import SERVICE_KEY, T0, LiveServer, World, seed_world


def make_server(tmp_path: Path, base_url: str, **overrides: object) -> tuple[LiveServer, World]:
    """A fresh seeded database and an unauthenticated (loopback) app with the service key."""
    world = World()
    url = f"sqlite:///{tmp_path / 'api.db'}"

    async def seed() -> None:
        store = await SQLiteStore.open(url)
        try:
            await seed_world(store, world, base_url)
        finally:
            await store.aclose()

    asyncio.run(seed())
    settings = Settings(
        database_url=url,
        service_key=SERVICE_KEY,
        allow_private_networks=True,
        **overrides,  # type: ignore[arg-type]
    )
    return LiveServer(create_app(settings)), world


@pytest.fixture
def api(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> Iterator[tuple[httpx.Client, World]]:
    """A client of a fresh app whose org A integrations point at the fake endpoint."""
    server, world = make_server(tmp_path, endpoint_in_thread[1])
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, world


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, World]]:
    """A client of one app shared by the tests that only read."""
    server, world = make_server(tmp_path_factory.mktemp("reader"), "http://127.0.0.1:9")
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, world


def _store_at(server: LiveServer, change: Callable[[SQLiteStore], Awaitable[None]]) -> None:
    """Apply ``change`` to the server's database through a store of its own."""

    async def run() -> None:
        store = await SQLiteStore.open(server.app.state.integration_health.settings.database_url)
        try:
            await change(store)
        finally:
            await store.aclose()

    asyncio.run(run())


def fields_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    return [f["field"] for f in body["fields"]]


# -- GET /api/orgs/{org}/health --------------------------------------------------------------------


def test_health_lists_every_integration_with_status_summary_and_worst(
    reader: tuple[httpx.Client, World],
) -> None:
    """The health document has every integration (never-checked ones with status null), the
    counts per status and the worst status overall."""
    client, world = reader
    body = client.get(f"/api/orgs/{world.org_a}/health").json()
    assert body["org_id"] == str(world.org_a)
    assert body["name"] == "Alpha AS"
    assert body["status"] == "unreachable"
    assert body["summary"] == {
        "healthy": 1,
        "degraded": 0,
        "unreachable": 1,
        "not_checked": 1,
        "total": 3,
    }
    by_name = {i["name"]: i for i in body["integrations"]}
    assert set(by_name) == {"Alpha webhook", "Alpha export", "Alpha newcomer"}
    down = by_name["Alpha export"]
    assert down["status"] == "unreachable"
    assert down["integration_type"] == "http"
    assert down["error"] == "HTTP 503 from the vendor"
    assert down["error_code"] == "server_error"
    assert down["consecutive_failures"] == 2
    assert down["advice"] and "status page" in down["advice"]
    assert down["next_check_at"] is not None
    assert by_name["Alpha webhook"]["latency_ms"] == 104
    newcomer = by_name["Alpha newcomer"]
    assert newcomer["status"] is None and newcomer["checked_at"] is None
    assert body["paused_types"] == []
    assert world.B_INTEGRATION not in str(body)


def test_health_shows_paused_integration_types(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """An integration type paused for rate limiting is listed with its end and reason."""
    server, world = make_server(tmp_path, endpoint_in_thread[1])
    until = T0.replace(year=T0.year + 1)

    async def pause(store: SQLiteStore) -> None:
        mode = TypeMode("http", until, "rate limited 5 times in 15 min", T0)
        await store.set_type_mode(mode, integration_type="http")

    _store_at(server, pause)
    with server:
        body = httpx.get(f"{server.url}/api/orgs/{world.org_a}/health").json()
    assert body["paused_types"] == [
        {
            "integration_type": "http",
            "passive_until": until.isoformat(),
            "reason": "rate limited 5 times in 15 min",
            "switched_at": T0.isoformat(),
        }
    ]


def test_unknown_org_is_404_with_the_error_shape(reader: tuple[httpx.Client, World]) -> None:
    """An unknown organisation answers 404 {"error": {"code", "message"}}."""
    client, _ = reader
    response = client.get(f"/api/orgs/{uuid.uuid4()}/health")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["code"] == "not_found"


def test_health_answers_304_to_a_matching_etag(reader: tuple[httpx.Client, World]) -> None:
    """A repeated request with If-None-Match gets 304 and no body."""
    client, world = reader
    first = client.get(f"/api/orgs/{world.org_a}/health")
    etag = first.headers["ETag"]
    again = client.get(f"/api/orgs/{world.org_a}/health", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_openapi_documents_the_304_of_the_cached_reads() -> None:
    """Health and history answer 304 to a matching ETag: the schema says so."""
    paths = create_app(Settings(database_url="memory://")).openapi()["paths"]
    for path in (
        "/api/orgs/{org_id}/health",
        "/api/orgs/{org_id}/integrations/{integration_id}/health/history",
    ):
        assert "304" in paths[path]["get"]["responses"], path


# -- history and events ----------------------------------------------------------------------------


def test_history_is_newest_first_and_limited(reader: tuple[httpx.Client, World]) -> None:
    """History returns the newest results first, at most `limit` (default 96)."""
    client, world = reader
    path = f"/api/orgs/{world.org_a}/integrations/{world.a_down}/health/history"
    body = client.get(path).json()
    assert body["limit"] == 96
    assert body["name"] == "Alpha export"
    times = [h["checked_at"] for h in body["history"]]
    assert len(times) == 5 and times == sorted(times, reverse=True)
    assert [h["status"] for h in body["history"]][:2] == ["unreachable", "unreachable"]
    two = client.get(path, params={"limit": 2}).json()["history"]
    assert len(two) == 2 and two[0]["checked_at"] == times[0]


@pytest.mark.parametrize("limit", ["0", "97", "-1", "many"])
def test_history_limit_out_of_range_is_422_naming_the_field(
    reader: tuple[httpx.Client, World], limit: str
) -> None:
    """A limit outside 1..96 is a 422 naming query.limit, not a 500."""
    client, world = reader
    path = f"/api/orgs/{world.org_a}/integrations/{world.a_down}/health/history"
    assert fields_of(client.get(path, params={"limit": limit})) == ["query.limit"]


def test_malformed_ids_are_422_naming_the_field(reader: tuple[httpx.Client, World]) -> None:
    """A path id that is not a UUID is a 422 naming it."""
    client, world = reader
    response = client.get(f"/api/orgs/{world.org_a}/integrations/not-a-uuid/health/history")
    assert fields_of(response) == ["path.integration_id"]
    assert fields_of(client.get("/api/orgs/42/health")) == ["path.org_id"]


def test_history_of_an_integration_never_checked_is_empty(
    reader: tuple[httpx.Client, World],
) -> None:
    """An integration without results has an empty history, not a 404."""
    client, world = reader
    path = f"/api/orgs/{world.org_a}/integrations/{world.a_new}/health/history"
    assert client.get(path).json()["history"] == []


def test_events_list_status_transitions_newest_first(reader: tuple[httpx.Client, World]) -> None:
    """Events are the status changes of the org (first result, then healthy → unreachable)."""
    client, world = reader
    events = client.get(f"/api/orgs/{world.org_a}/events").json()["events"]
    down = [e for e in events if e["integration_id"] == str(world.a_down)]
    assert [(e["from_status"], e["to_status"]) for e in down] == [
        ("healthy", "unreachable"),
        (None, "healthy"),
    ]
    only = client.get(
        f"/api/orgs/{world.org_a}/events",
        params={"integration_id": str(world.a_ok), "limit": 1},
    ).json()["events"]
    assert len(only) == 1 and only[0]["integration_id"] == str(world.a_ok)
    assert fields_of(client.get(f"/api/orgs/{world.org_a}/events", params={"limit": 0})) == [
        "query.limit"
    ]


# -- run now ---------------------------------------------------------------------------------------


def test_run_now_checks_stores_and_is_rate_limited(
    api: tuple[httpx.Client, World], endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """POST …/health/checks runs every active check, returns and stores the results; asking
    again within the window answers 429 with Retry-After."""
    client, world = api
    fake, _ = endpoint_in_thread
    response = client.post(f"/api/orgs/{world.org_a}/health/checks")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checked"] == 3
    by_id = {r["integration_id"]: r for r in body["results"]}
    assert by_id[str(world.a_ok)]["status"] == "healthy"
    assert by_id[str(world.a_down)]["status"] == "unreachable"
    assert by_id[str(world.a_down)]["error_code"] == "server_error"
    assert fake.count("/ok") >= 2
    health = client.get(f"/api/orgs/{world.org_a}/health").json()
    assert health["summary"]["not_checked"] == 0

    again = client.post(f"/api/orgs/{world.org_a}/health/checks")
    assert again.status_code == 429
    assert again.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(again.headers["Retry-After"]) <= 60
    other = client.post(f"/api/orgs/{world.org_b}/health/checks")
    assert other.status_code == 200  # the window is per organisation


def test_run_now_leaves_alone_an_integration_whose_vendor_sent_retry_after(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """An integration whose last answer carried a Retry-After that has not passed is not
    probed by "check now": it is listed under ``held`` with the time it ends; the others run.
    Once a later answer carries none (a sync outcome, say), it is probed again."""
    fake, base_url = endpoint_in_thread
    server, world = make_server(tmp_path, base_url, run_now_interval_s=0)
    checked_at = datetime.now(UTC).replace(microsecond=0)
    limited = HealthResult.degraded(
        ErrorCode.RATE_LIMITED, "HTTP 429 from the vendor", 30, details={"retry_after_s": 3600}
    )

    def answered(result: HealthResult, at: datetime) -> Callable[[SQLiteStore], Awaitable[None]]:
        async def write(store: SQLiteStore) -> None:
            result_at = result.model_copy(update={"checked_at": at})
            await store.record_results(
                [ResultWrite(world.org_a, world.a_ok, "http", result_at, at + timedelta(hours=1))]
            )

        return write

    _store_at(server, answered(limited, checked_at))
    until = (checked_at + timedelta(hours=1)).isoformat()
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(f"/api/orgs/{world.org_a}/health/checks")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["checked"] == 2
        assert {r["integration_id"] for r in body["results"]} == {
            str(world.a_down),
            str(world.a_new),
        }
        assert body["held"] == [
            {
                "integration_id": str(world.a_ok),
                "integration_type": "http",
                "name": "Alpha webhook",
                "reason": "retry_after",
                "until": until,
                "message": f"not probed: the vendor asked to wait (Retry-After) until {until}",
            }
        ]
        assert fake.count("/ok") == 1  # the newcomer only: the webhook (also /ok) was held
        assert fake.count("/status/503") == 1

        _store_at(server, answered(HealthResult.healthy(5), datetime.now(UTC)))
        again = client.post(f"/api/orgs/{world.org_a}/health/checks").json()
        assert again["held"] == [] and again["checked"] == 3
        assert fake.count("/ok") == 3


def test_run_now_probes_nothing_of_a_paused_type(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """While its type is paused for rate limiting, no integration of it is probed by "check
    now"; each is listed as held until the pause ends. Other organisations' integrations are
    not listed."""
    fake, base_url = endpoint_in_thread
    server, world = make_server(tmp_path, base_url)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)

    async def pause(store: SQLiteStore) -> None:
        mode = TypeMode("http", until, "rate limited 5 times in 15 min", T0)
        await store.set_type_mode(mode, integration_type="http")

    _store_at(server, pause)
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        body = client.post(f"/api/orgs/{world.org_a}/health/checks").json()
    assert body["checked"] == 0 and body["results"] == []
    assert {h["integration_id"] for h in body["held"]} == {
        str(world.a_ok),
        str(world.a_down),
        str(world.a_new),
    }
    assert {h["reason"] for h in body["held"]} == {"paused"}
    assert {h["until"] for h in body["held"]} == {until.isoformat()}
    assert "kept rate-limiting" in body["held"][0]["message"]
    assert fake.count("/ok") == 0 and fake.count("/status/503") == 0


# -- sync outcomes ---------------------------------------------------------------------------------


def outcome_path(world: World, integration: uuid.UUID | None = None) -> str:
    return f"/api/orgs/{world.org_a}/integrations/{integration or world.a_ok}/sync-outcomes"


def test_sync_outcome_needs_the_service_key(api: tuple[httpx.Client, World]) -> None:
    """Without the service key, or with a wrong one, a sync outcome is refused with 401."""
    client, world = api
    payload = {"ok": False, "error": "boom"}
    missing = client.post(outcome_path(world), json=payload)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_service_key"
    wrong = client.post(
        outcome_path(world), json=payload, headers={"X-Service-Key": SERVICE_KEY + "x"}
    )
    assert wrong.status_code == 401
    assert SERVICE_KEY not in wrong.text
    assert client.get(f"/api/orgs/{world.org_a}/health").json()["status"] == "unreachable"


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {SERVICE_KEY}"}, {"X-Service-Key": SERVICE_KEY}],
    ids=["bearer", "x-service-key"],
)
def test_sync_outcome_with_the_key_updates_the_status(
    api: tuple[httpx.Client, World], headers: dict[str, str]
) -> None:
    """A failed sync reported with the service key makes the integration unreachable at once
    (the cached health answer is dropped), with the code inferred from the error."""
    client, world = api
    before = client.get(f"/api/orgs/{world.org_a}/health").json()
    assert {i["name"]: i["status"] for i in before["integrations"]}["Alpha webhook"] == "healthy"
    response = client.post(
        outcome_path(world),
        json={"ok": False, "error": "HTTP 401 Unauthorized from vendor", "duration_ms": 850},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "unreachable"
    assert response.json()["error_code"] == "auth"
    after = client.get(f"/api/orgs/{world.org_a}/health").json()
    webhook = {i["name"]: i for i in after["integrations"]}["Alpha webhook"]
    assert webhook["status"] == "unreachable"
    assert webhook["source"] == "passive"
    assert webhook["latency_ms"] == 850


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"error": "no ok"}, "body.ok"),
        ({"ok": True, "duration_ms": -5}, "body.duration_ms"),
        ({"ok": "perhaps"}, "body.ok"),
        ({"ok": False, "error_code": "exploded"}, "body.error_code"),
        ({"ok": True, "surprise": 1}, "body.surprise"),
    ],
)
def test_sync_outcome_validation_is_422_naming_the_field(
    reader: tuple[httpx.Client, World], payload: dict[str, object], field: str
) -> None:
    """An invalid sync outcome is a 422 naming the field, never a 500."""
    client, world = reader
    response = client.post(
        outcome_path(world), json=payload, headers={"X-Service-Key": SERVICE_KEY}
    )
    assert fields_of(response) == [field]


def test_sync_outcome_body_that_is_not_json_is_422(reader: tuple[httpx.Client, World]) -> None:
    """A body that is not JSON is a 422, not a 500."""
    client, world = reader
    response = client.post(
        outcome_path(world),
        content=b"{not json",
        headers={"X-Service-Key": SERVICE_KEY, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"].startswith("body")


def test_sync_outcome_for_unknown_or_foreign_integration_is_404(
    reader: tuple[httpx.Client, World],
) -> None:
    """An integration that does not exist, or belongs to another org, answers 404."""
    client, world = reader
    headers = {"X-Service-Key": SERVICE_KEY}
    for integration in (uuid.uuid4(), world.b_secret):
        response = client.post(outcome_path(world, integration), json={"ok": True}, headers=headers)
        assert response.status_code == 404


def test_oversized_declared_body_is_413(reader: tuple[httpx.Client, World]) -> None:
    """A body declared larger than the limit is refused with 413 before it is read."""
    client, world = reader
    big = b'{"ok": false, "error": "' + b"x" * 70_000 + b'"}'
    response = client.post(
        outcome_path(world),
        content=big,
        headers={"X-Service-Key": SERVICE_KEY, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_oversized_streamed_body_is_413(reader: tuple[httpx.Client, World]) -> None:
    """A chunked body (no Content-Length) that grows past the limit is refused with 413."""
    client, world = reader
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    chunk = b"x" * 16_384
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {outcome_path(world)} HTTP/1.1\r\nHost: {host}\r\n"
                f"X-Service-Key: {SERVICE_KEY}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        answer = b""
        for _ in range(16):  # up to 256 KiB, stopping as soon as the server answers
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.settimeout(0.05)
            try:
                answer = sock.recv(65_536)
            except TimeoutError:
                continue
            break
        sock.settimeout(10)
        while answer and (data := sock.recv(65_536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer


# -- the rest of the surface -----------------------------------------------------------------------


def test_unknown_route_and_wrong_method_use_the_error_shape(
    reader: tuple[httpx.Client, World],
) -> None:
    """404 and 405 from routing have the same JSON error shape."""
    client, world = reader
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.delete(f"/api/orgs/{world.org_a}/health")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_openapi_describes_the_contract_paths(reader: tuple[httpx.Client, World]) -> None:
    """/openapi.json lists every contract path with its methods."""
    client, _ = reader
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/api/orgs/{org_id}/health"]
    assert "get" in paths["/api/orgs/{org_id}/integrations/{integration_id}/health/history"]
    assert "post" in paths["/api/orgs/{org_id}/health/checks"]
    assert "post" in paths["/api/orgs/{org_id}/integrations/{integration_id}/sync-outcomes"]
    assert "get" in paths["/api/orgs/{org_id}/events"]
    assert "get" in paths["/healthz"]
    assert "get" in paths["/metrics"]
