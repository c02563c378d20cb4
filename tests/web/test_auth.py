"""Authentication and organisation isolation, against the app on a real 127.0.0.1 socket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest

from integration_health.errors import ConfigError
from integration_health.settings import Settings
from integration_health.web import create_app
from integration_health.web.server import ensure_bind_allowed

from .live import (
    HS_SECRET,
    Keys,
    LiveServer,
    World,
    alg_none_token,
    bearer,
    claims_for,
    hs_token,
    jwks_server,
)


def health_path(org: uuid.UUID) -> str:
    return f"/api/orgs/{org}/health"


def get(server: LiveServer, path: str, token: str | None = None) -> httpx.Response:
    headers = bearer(token) if token else {}
    return httpx.get(server.url + path, headers=headers, timeout=10)


def assert_refused(response: httpx.Response, code: str = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


# -- HS256 --------------------------------------------------------------------------------------


def test_no_token_is_401(hs_server: LiveServer, world: World) -> None:
    """A request without a token is refused with 401 and a Bearer challenge."""
    assert_refused(get(hs_server, health_path(world.org_a)), "missing_token")


def test_not_a_bearer_header_is_401(hs_server: LiveServer, world: World) -> None:
    """An Authorization header that is not 'Bearer <token>' is refused."""
    response = httpx.get(
        hs_server.url + health_path(world.org_a), headers={"Authorization": "Basic abc"}
    )
    assert_refused(response)


def test_valid_token_of_a_member_is_accepted(hs_server: LiveServer, world: World) -> None:
    """A member's valid HS256 token reads their organisation's health."""
    response = get(hs_server, health_path(world.org_a), hs_token(claims_for(world.user_a)))
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Alpha AS"


def test_expired_token_is_401(hs_server: LiveServer, world: World) -> None:
    """A token past its expiry (beyond the leeway) is refused as expired."""
    token = hs_token(claims_for(world.user_a, expires_in=-120))
    assert_refused(get(hs_server, health_path(world.org_a), token), "token_expired")


def test_wrong_audience_is_401(hs_server: LiveServer, world: World) -> None:
    """A token for another audience (e.g. anon) is refused."""
    token = hs_token(claims_for(world.user_a, aud="anon"))
    response = get(hs_server, health_path(world.org_a), token)
    assert_refused(response)
    assert "audience" in response.json()["error"]["message"]


def test_wrong_signature_is_401(hs_server: LiveServer, world: World) -> None:
    """A token signed with another secret is refused."""
    token = hs_token(claims_for(world.user_a), secret="another-secret-of-at-least-32-bytes!!")
    response = get(hs_server, health_path(world.org_a), token)
    assert_refused(response)
    assert "signature" in response.json()["error"]["message"]


def test_alg_none_is_401(hs_server: LiveServer, world: World) -> None:
    """An unsigned token (alg none) is refused."""
    assert_refused(
        get(hs_server, health_path(world.org_a), alg_none_token(claims_for(world.user_a)))
    )


def test_garbage_token_is_401(hs_server: LiveServer, world: World) -> None:
    """A bearer value that is not a JWT is refused, and the value is not echoed."""
    response = get(hs_server, health_path(world.org_a), "not-a-jwt-SECRETISH")
    assert_refused(response)
    assert "SECRETISH" not in response.text


def test_token_without_subject_is_401(hs_server: LiveServer, world: World) -> None:
    """A token with no sub (such as the anon key) is refused."""
    claims = claims_for(world.user_a)
    del claims["sub"]
    assert_refused(get(hs_server, health_path(world.org_a), hs_token(claims)))


def test_rs256_token_on_an_hs256_only_server_is_401(
    hs_server: LiveServer, world: World, keys: Keys
) -> None:
    """An RS256 token is refused where only the HS256 secret is configured."""
    token = jwt.encode(claims_for(world.user_a), keys.rsa, algorithm="RS256")
    assert_refused(get(hs_server, health_path(world.org_a), token))


# -- isolation between organisations --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/orgs/{b}/health",
        "/api/orgs/{b}/events",
        "/api/orgs/{b}/integrations/{b_int}/health/history",
        "/api/orgs/{a}/integrations/{b_int}/health/history",
    ],
)
def test_member_of_a_asking_for_b_gets_404_and_no_data(
    hs_server: LiveServer, world: World, path: str
) -> None:
    """A member of org A asking for org B's data gets 404 with nothing of B in the answer."""
    url = path.format(a=world.org_a, b=world.org_b, b_int=world.b_secret)
    response = get(hs_server, url, hs_token(claims_for(world.user_a)))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    assert world.B_NAME not in response.text
    assert world.B_INTEGRATION not in response.text


def test_member_of_a_cannot_run_checks_of_b(hs_server: LiveServer, world: World) -> None:
    """Run-now for another organisation answers 404 (and runs nothing)."""
    response = httpx.post(
        f"{hs_server.url}/api/orgs/{world.org_b}/health/checks",
        headers=bearer(hs_token(claims_for(world.user_a))),
    )
    assert response.status_code == 404


def test_unknown_org_and_foreign_org_answer_alike(hs_server: LiveServer, world: World) -> None:
    """An org that exists but is not yours answers exactly like one that does not exist."""
    token = hs_token(claims_for(world.user_a))
    foreign = get(hs_server, health_path(world.org_b), token)
    missing_org = uuid.uuid4()
    missing = get(hs_server, health_path(missing_org), token)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["message"].replace(str(world.org_b), "X") == missing.json()[
        "error"
    ]["message"].replace(str(missing_org), "X")


def test_org_list_shows_only_your_organisations(hs_server: LiveServer, world: World) -> None:
    """/api/orgs lists the caller's organisations only; a stranger sees none."""
    mine = get(hs_server, "/api/orgs", hs_token(claims_for(world.user_a))).json()
    assert [o["name"] for o in mine["organizations"]] == ["Alpha AS"]
    theirs = get(hs_server, "/api/orgs", hs_token(claims_for(world.stranger))).json()
    assert theirs["organizations"] == []


# -- JWKS (RS256 / ES256) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwks_app_server(sqlite_url: str, keys: Keys) -> Iterator[LiveServer]:
    """The app verifying tokens with keys from a JWKS URL only (and an issuer)."""
    with jwks_server(keys) as url:
        settings = Settings(
            database_url=sqlite_url, jwks_url=url, jwt_issuer="https://auth.example.test"
        )
        with LiveServer(create_app(settings)) as server:
            yield server


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "rsa-1"), ("ES256", "ec-1")])
def test_jwks_tokens_are_accepted(
    jwks_app_server: LiveServer, world: World, keys: Keys, alg: str, kid: str
) -> None:
    """RS256 and ES256 tokens signed by a key of the JWKS are accepted."""
    key = keys.rsa if alg == "RS256" else keys.ec
    claims = claims_for(world.user_a, iss="https://auth.example.test")
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
    response = get(jwks_app_server, health_path(world.org_a), token)
    assert response.status_code == 200, response.text


def test_jwks_wrong_issuer_is_401(jwks_app_server: LiveServer, world: World, keys: Keys) -> None:
    """A token from another issuer is refused when an issuer is configured."""
    claims = claims_for(world.user_a, iss="https://evil.example.test")
    token = jwt.encode(claims, keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    assert_refused(get(jwks_app_server, health_path(world.org_a), token))


def test_jwks_unknown_key_is_401(jwks_app_server: LiveServer, world: World) -> None:
    """A token signed by a key that is not in the JWKS is refused."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = claims_for(world.user_a, iss="https://auth.example.test")
    token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "rsa-1"})
    assert_refused(get(jwks_app_server, health_path(world.org_a), token))


def test_hs_rs_key_confusion_is_401(jwks_app_server: LiveServer, world: World, keys: Keys) -> None:
    """An HS256 token 'signed' with the public RSA key as HMAC secret is refused."""
    import base64
    import hashlib
    import hmac
    import json

    claims = claims_for(world.user_a, iss="https://auth.example.test")

    def part(value: bytes) -> bytes:
        return base64.urlsafe_b64encode(value).rstrip(b"=")

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = part(json.dumps(claims).encode())
    signature = hmac.new(keys.rsa_public_pem(), header + b"." + payload, hashlib.sha256)
    token = (header + b"." + payload + b"." + part(signature.digest())).decode()
    assert_refused(get(jwks_app_server, health_path(world.org_a), token))


def test_jwks_alg_none_is_401(jwks_app_server: LiveServer, world: World) -> None:
    """alg none is refused by a JWKS-configured server too."""
    claims = claims_for(world.user_a, iss="https://auth.example.test")
    assert_refused(get(jwks_app_server, health_path(world.org_a), alg_none_token(claims)))


# -- unauthenticated (embedded single-user) mode --------------------------------------------------


def test_serving_without_auth_is_refused_off_loopback() -> None:
    """Without a JWT secret or JWKS URL only loopback hosts may be served."""
    plain = Settings(database_url="memory://")
    for host in ("127.0.0.1", "::1", "localhost"):
        ensure_bind_allowed(plain, host)
    with pytest.raises(ConfigError, match="without authentication"):
        ensure_bind_allowed(plain, "0.0.0.0")  # noqa: S104 - the point of the test
    ensure_bind_allowed(Settings(database_url="memory://", jwt_secret=HS_SECRET), "0.0.0.0")  # noqa: S104


def test_unauthenticated_server_reads_on_loopback(sqlite_url: str, world: World) -> None:
    """Without auth configured, a loopback client reads every organisation with no token."""
    with LiveServer(create_app(Settings(database_url=sqlite_url))) as server:
        response = get(server, "/api/orgs")
    assert response.status_code == 200
    assert {o["name"] for o in response.json()["organizations"]} == {"Alpha AS", world.B_NAME}


async def test_unauthenticated_server_refuses_non_loopback_clients(
    sqlite_url: str, world: World
) -> None:
    """Without auth configured, a client from a non-loopback address gets 403 and no data."""
    app = create_app(Settings(database_url=sqlite_url))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://monitor") as client,
    ):
        response = await client.get("/api/orgs")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "Alpha" not in response.text


def test_busy_port_is_a_clear_error() -> None:
    """Binding a port already in use raises a one-line ConfigError naming host and port."""
    import socket

    from integration_health.web.server import bind_socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
