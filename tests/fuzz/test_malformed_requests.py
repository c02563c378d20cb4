"""Oversized and malformed requests against the app on a real 127.0.0.1 socket (uvicorn).

Each is refused with a 4xx and the one error shape ``{"error": {"code", "message"}}`` —
never a 5xx, a traceback, or an echo of what was sent.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from integration_health.web import create_app
from tests.web.live import SERVICE_KEY, LiveServer, World, bearer, claims_for, hs_token

from .conftest import app_settings

MAX_BODY = 4_096
SECRETISH = "sk_live_bodyecho0001"
"""Sent in bodies and URLs: no answer may contain it."""


@pytest.fixture(scope="module")
def server(sqlite_url: str) -> Iterator[LiveServer]:
    app = create_app(app_settings(sqlite_url, max_body_bytes=MAX_BODY))
    with LiveServer(app) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def user(world: World) -> dict[str, str]:
    return bearer(hs_token(claims_for(world.user_a)))


def _outcomes_path(world: World) -> str:
    return f"/api/orgs/{world.org_a}/integrations/{world.a_ok}/sync-outcomes"


SERVICE = {"Authorization": f"Bearer {SERVICE_KEY}"}


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The answer is ``status`` with the JSON error shape (and ``code``, if given)."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    assert SECRETISH not in response.text
    assert "Traceback" not in response.text
    return error


def test_a_body_over_the_limit_is_refused_with_413(client: httpx.Client, world: World) -> None:
    """A declared Content-Length over max_body_bytes answers 413 before the body is read."""
    body = json.dumps({"ok": False, "error": SECRETISH * 400}).encode()
    assert len(body) > MAX_BODY
    response = client.post(_outcomes_path(world), content=body, headers=SERVICE)
    error = error_of(response, 413, "payload_too_large")
    assert f"{MAX_BODY:,}" in error["message"]


def test_a_chunked_body_over_the_limit_is_refused_with_413(
    client: httpx.Client, world: World
) -> None:
    """Without Content-Length (chunked), the body is counted as it streams: same 413."""

    def chunks() -> Iterator[bytes]:
        yield b'{"ok": false, "error": "'
        for _ in range(20):
            yield SECRETISH.encode() * 50
        yield b'"}'

    response = client.post(
        _outcomes_path(world),
        content=chunks(),
        headers={**SERVICE, "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    error_of(response, 413, "payload_too_large")


def test_a_body_just_under_the_limit_is_accepted(client: httpx.Client, world: World) -> None:
    """The limit is not off by much: a valid body near it is read and answered."""
    response = client.post(
        _outcomes_path(world), json={"ok": True, "error": "x" * 1_000}, headers=SERVICE
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"ok": tru', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"ok": "maybe"}', "application/json"),
        (b'{"ok": true, "duration_ms": 1e999}', "application/json"),
        (b'{"ok": true, "unknown": "' + SECRETISH.encode() + b'"}', "application/json"),
        (b'{"ok": true, "error": "' + SECRETISH.encode() * 110 + b'"}', "application/json"),
        (b"ok=true", "application/x-www-form-urlencoded"),
        (b'{"ok": true}', "text/plain"),
        (b"", "application/json"),
    ],
    ids=[
        "truncated",
        "array",
        "wrong type",
        "infinite number",
        "unknown field",
        "error too long",
        "form",
        "text/plain",
        "empty",
    ],
)
def test_malformed_or_mistyped_bodies_answer_422(
    client: httpx.Client, world: World, body: bytes, content_type: str
) -> None:
    """Bad JSON, wrong shapes and wrong content types answer 422 naming the body field."""
    response = client.post(
        _outcomes_path(world), content=body, headers={**SERVICE, "content-type": content_type}
    )
    error = error_of(response, 422, "validation_error")
    assert error["fields"], error
    assert all(f["field"].startswith("body") for f in error["fields"]), error


def test_a_body_that_is_not_utf8_answers_400(client: httpx.Client, world: World) -> None:
    """Bytes that are not UTF-8 JSON answer 400 with a message saying what is expected."""
    response = client.post(
        _outcomes_path(world),
        content=b'{"ok": "\xff\xfe"}',
        headers={**SERVICE, "content-type": "application/json"},
    )
    error = error_of(response, 400, "bad_request")
    assert "JSON" in error["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/orgs/not-a-uuid/health",
        "/api/orgs/7d3f0000-0000-4000-8000-00000000000g/health",
        "/api/orgs/%00%ff/health",
        "/api/orgs/" + "9" * 5_000 + "/health",
    ],
    ids=["word", "bad hex", "control bytes", "very long"],
)
def test_invalid_uuids_in_paths_answer_422_naming_the_field(
    client: httpx.Client, user: dict[str, str], path: str
) -> None:
    """An org_id that is not a UUID answers 422 naming ``path.org_id`` (and not echoing it)."""
    error = error_of(client.get(path, headers=user), 422, "validation_error")
    assert [f["field"] for f in error["fields"]] == ["path.org_id"]
    assert "9999999999" not in json.dumps(error)


def test_an_invalid_integration_id_is_named(
    client: httpx.Client, world: World, user: dict[str, str]
) -> None:
    """Both path parameters are checked; the wrong one is named."""
    response = client.get(
        f"/api/orgs/{world.org_a}/integrations/{SECRETISH}/health/history", headers=user
    )
    error = error_of(response, 422, "validation_error")
    assert [f["field"] for f in error["fields"]] == ["path.integration_id"]


@pytest.mark.parametrize("limit", ["0", "97", "-1", "ten", "1e3", "9" * 400])
def test_out_of_range_query_values_answer_422(
    client: httpx.Client, world: World, user: dict[str, str], limit: str
) -> None:
    """``limit`` outside 1..96, or not a number, answers 422 naming ``query.limit``."""
    path = f"/api/orgs/{world.org_a}/integrations/{world.a_ok}/health/history"
    error = error_of(client.get(path, params={"limit": limit}, headers=user), 422)
    assert [f["field"] for f in error["fields"]] == ["query.limit"]


def test_a_huge_url_is_refused_without_a_5xx(client: httpx.Client, user: dict[str, str]) -> None:
    """A 60 kB URL (an unknown path) answers 404 in the error shape."""
    error_of(client.get("/api/" + "a" * 60_000, headers=user), 404, "not_found")


def _raw_request(server: LiveServer, request: bytes) -> bytes:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65_536):
            received += chunk
    return received


def test_huge_headers_answer_431(server: LiveServer) -> None:
    """A 200 kB header block answers 431 in the error shape, and the server lives on."""
    request = (
        b"GET /api/orgs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + b"".join(f"X-Fill-{i}: {'v' * 1_000}\r\n".encode() for i in range(200))
        + b"\r\n"
    )
    answer = _raw_request(server, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), head[:200]
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    after = _raw_request(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert after.startswith(b"HTTP/1.1 200"), after[:200]


def test_a_huge_bearer_token_answers_401(client: httpx.Client, world: World) -> None:
    """A 16 kB bearer token is refused before any parsing, without echoing it."""
    response = client.get(
        f"/api/orgs/{world.org_a}/health", headers={"Authorization": "Bearer " + "a" * 16_000}
    )
    error = error_of(response, 401)
    assert "aaaaaaaa" not in json.dumps(error)


@pytest.mark.parametrize("value", [b"abc", b"-5", b"1e9", b" 12"])
def test_an_invalid_content_length_is_refused(server: LiveServer, value: bytes) -> None:
    """A Content-Length that is not a number is refused with a 4xx (server or app)."""
    answer = _raw_request(
        server,
        b"POST /api/orgs/x/health/checks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: " + value + b"\r\n\r\n",
    )
    if answer:  # the HTTP parser may also just close the connection
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:300]


def test_a_wrong_method_answers_405_in_the_error_shape(
    client: httpx.Client, world: World, user: dict[str, str]
) -> None:
    """DELETE on a read-only resource answers 405 with the error shape and ``Allow``."""
    response = client.delete(f"/api/orgs/{world.org_a}/health", headers=user)
    error_of(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]
