"""JWT edge cases against the app on a real socket: every forged or broken token is a plain 401.

Three servers: HS256 only, JWKS only (RS256/ES256, with an issuer), and both at once. Every
refusal must be 401 with a Bearer challenge and the same body shape
``{"error": {"code", "message"}}`` whose message is one of a few fixed sentences: it never
echoes the token, its claims, its key id, or the JWT library's own error text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from integration_health.settings import Settings
from integration_health.testing import LocalServer
from integration_health.web import create_app
from tests.web.live import HS_SECRET, Keys, LiveServer, World, alg_none_token, claims_for

# The HS512 case signs with the (HS256-sized) test secret on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

ISSUER = "https://auth.example.test"
ATTACKER_ISSUER = "https://evil.example.test"


@dataclass
class Jwks:
    """A JWKS endpoint on 127.0.0.1 that counts its fetches."""

    url: str
    fetches: int = 0


@pytest.fixture(scope="module")
def jwks(keys: Keys) -> Iterator[Jwks]:
    served = Jwks(url="")
    app = web.Application()

    async def serve(request: web.Request) -> web.Response:
        served.fetches += 1
        return web.json_response(keys.jwks())

    app.router.add_get("/jwks.json", serve)
    with LocalServer(app).in_thread() as server:
        served.url = f"{server.url}/jwks.json"
        yield served


@pytest.fixture(scope="module")
def servers(sqlite_url: str, jwks: Jwks) -> Iterator[dict[str, LiveServer]]:
    """The app three times: HS256 only, JWKS only (with an issuer), both."""
    configs = {
        "hs": Settings(database_url=sqlite_url, jwt_secret=HS_SECRET),
        "jwks": Settings(database_url=sqlite_url, jwks_url=jwks.url, jwt_issuer=ISSUER),
        "both": Settings(
            database_url=sqlite_url, jwt_secret=HS_SECRET, jwks_url=jwks.url, jwt_issuer=ISSUER
        ),
    }
    started = {name: LiveServer(create_app(s)).__enter__() for name, s in configs.items()}
    try:
        yield started
    finally:
        for server in started.values():
            server.__exit__(None, None, None)


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def _hs_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """A token HMAC-signed by hand (PyJWT refuses a PEM as HMAC secret, attackers do not)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _unsigned(alg: str, claims: dict[str, Any]) -> str:
    """An unsigned token whose header says ``alg``."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _tamper(token: str, **changes: Any) -> str:
    """The same header and signature around a modified payload."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _rs(keys: Keys, claims: dict[str, Any], kid: str = "rsa-1", **header: Any) -> str:
    return jwt.encode(claims, keys.rsa, algorithm="RS256", headers={"kid": kid, **header})


Token = Callable[[Keys, World], str]


def _user(world: World, **extra: Any) -> dict[str, Any]:
    return claims_for(world.user_a, **{"iss": ISSUER, **extra})


def _no(claim: str) -> Callable[[World], dict[str, Any]]:
    def claims(world: World) -> dict[str, Any]:
        value = _user(world)
        del value[claim]
        return value

    return claims


_OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)

# name -> (server, token factory, expected code)
CASES: dict[str, tuple[str, Token, str]] = {
    "alg none (HS server)": ("hs", lambda k, w: alg_none_token(_user(w)), "invalid_token"),
    "alg none (JWKS server)": ("jwks", lambda k, w: alg_none_token(_user(w)), "invalid_token"),
    "alg None, capitalised": ("both", lambda k, w: _unsigned("None", _user(w)), "invalid_token"),
    "alg NONE, with a signature": (
        "both",
        lambda k, w: _unsigned("NONE", _user(w)) + "c2lnbmF0dXJl",
        "invalid_token",
    ),
    "HS256 signed with the RSA public key PEM (JWKS server)": (
        "jwks",
        lambda k, w: _hs_signed(
            {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, _user(w), k.rsa_public_pem()
        ),
        "invalid_token",
    ),
    "HS256 signed with the RSA public key PEM (both)": (
        "both",
        lambda k, w: _hs_signed(
            {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, _user(w), k.rsa_public_pem()
        ),
        "invalid_token",
    ),
    "HS256 signed with the JWK JSON as secret": (
        "jwks",
        lambda k, w: _hs_signed(
            {"alg": "HS256", "kid": "rsa-1"},
            _user(w),
            json.dumps(k.jwks()["keys"][0]).encode(),
        ),
        "invalid_token",
    ),
    "RS256 token on an HS-only server": ("hs", lambda k, w: _rs(k, _user(w)), "invalid_token"),
    "HS512 (not an accepted algorithm)": (
        "hs",
        lambda k, w: jwt.encode(_user(w), HS_SECRET, algorithm="HS512"),
        "invalid_token",
    ),
    "ES256 header on the RSA key id": (
        "jwks",
        lambda k, w: jwt.encode(_user(w), k.ec, algorithm="ES256", headers={"kid": "rsa-1"}),
        "invalid_token",
    ),
    "RS256 header on the EC key id": (
        "jwks",
        lambda k, w: _rs(k, _user(w), kid="ec-1"),
        "invalid_token",
    ),
    "missing exp": (
        "hs",
        lambda k, w: jwt.encode(_no("exp")(w), HS_SECRET, algorithm="HS256"),
        "invalid_token",
    ),
    "exp not a number": (
        "hs",
        lambda k, w: jwt.encode(_user(w, exp="tomorrow"), HS_SECRET, algorithm="HS256"),
        "invalid_token",
    ),
    "expired": (
        "hs",
        lambda k, w: jwt.encode(_user(w, expires_in=-3600), HS_SECRET, algorithm="HS256"),
        "token_expired",
    ),
    "nbf in the future": (
        "hs",
        lambda k, w: jwt.encode(
            _user(w, nbf=int(time.time()) + 3600), HS_SECRET, algorithm="HS256"
        ),
        "invalid_token",
    ),
    "iat in the future": (
        "hs",
        lambda k, w: jwt.encode(
            _user(w, iat=int(time.time()) + 3600), HS_SECRET, algorithm="HS256"
        ),
        "invalid_token",
    ),
    "wrong audience": (
        "hs",
        lambda k, w: jwt.encode(_user(w, aud="anon"), HS_SECRET, algorithm="HS256"),
        "invalid_token",
    ),
    "missing audience": (
        "hs",
        lambda k, w: jwt.encode(_no("aud")(w), HS_SECRET, algorithm="HS256"),
        "invalid_token",
    ),
    "wrong issuer": ("jwks", lambda k, w: _rs(k, _user(w, iss=ATTACKER_ISSUER)), "invalid_token"),
    "missing issuer": ("jwks", lambda k, w: _rs(k, _no("iss")(w)), "invalid_token"),
    "missing sub": (
        "hs",
        lambda k, w: jwt.encode(_no("sub")(w), HS_SECRET, algorithm="HS256"),
        "invalid_token",
    ),
    "sub not a user id": (
        "hs",
        lambda k, w: jwt.encode(_user(w, sub="admin"), HS_SECRET, algorithm="HS256"),
        "invalid_token",
    ),
    "unknown kid": ("jwks", lambda k, w: _rs(k, _user(w), kid="rotated-away"), "invalid_token"),
    "no kid": (
        "jwks",
        lambda k, w: jwt.encode(_user(w), k.rsa, algorithm="RS256"),
        "invalid_token",
    ),
    "known kid, signed by another key": (
        "jwks",
        lambda k, w: jwt.encode(_user(w), _OTHER_RSA, algorithm="RS256", headers={"kid": "rsa-1"}),
        "invalid_token",
    ),
    "jku header pointing at the attacker's keys": (
        "jwks",
        lambda k, w: jwt.encode(
            _user(w),
            _OTHER_RSA,
            algorithm="RS256",
            headers={"kid": "attacker", "jku": "http://127.0.0.1:9/jwks.json"},
        ),
        "invalid_token",
    ),
    "tampered payload (HS)": (
        "hs",
        lambda k, w: _tamper(
            jwt.encode(claims_for(w.user_b), HS_SECRET, algorithm="HS256"), sub=str(w.user_a)
        ),
        "invalid_token",
    ),
    "tampered payload (RS)": (
        "jwks",
        lambda k, w: _tamper(_rs(k, claims_for(w.user_b, iss=ISSUER)), sub=str(w.user_a)),
        "invalid_token",
    ),
    "signature stripped": (
        "hs",
        lambda k, w: jwt.encode(_user(w), HS_SECRET, algorithm="HS256").rsplit(".", 1)[0] + ".",
        "invalid_token",
    ),
    "header not JSON": ("hs", lambda k, w: "bm90IGpzb24.e30.c2ln", "invalid_token"),
    "header a JSON array": (
        "hs",
        lambda k, w: f"{_b64(b'[1]')}.{_b64(b'{}')}.{_b64(b'x')}",
        "invalid_token",
    ),
    "garbage": ("jwks", lambda k, w: "not-a-jwt-at-all", "invalid_token"),
    "huge token (12 KB)": (
        "hs",
        lambda k, w: jwt.encode(_user(w, pad="x" * 12_000), HS_SECRET, algorithm="HS256"),
        "invalid_token",
    ),
}

FIXED_MESSAGES = {
    "The token has expired: sign in again.",
    "The token is invalid.",
    "The token is not a well-formed JWT.",
    "The token is not meant for this service (audience).",
    "The token is too long to be one of ours.",
    "The token lacks a required claim (exp, sub, aud or iss).",
    "The token was issued by someone else.",
    "The token's signature is invalid.",
    "The token's signing algorithm is not accepted.",
    "The token's signing key is not one this service trusts.",
    "The token's subject is not a user id.",
}
"""Every sentence a refused token may get: fixed texts, none built from the token."""

_LIBRARY_WORDS = (
    "Traceback",
    "jwt.",
    "PyJWT",
    "Signature verification failed",
    "Not enough segments",
    "Invalid header",
    "Unable to find",
    "Expecting value",
    "rotated-away",
    "attacker",
    "127.0.0.1",
)


def _assert_plain_401(response: httpx.Response, token: str, code: str, world: World) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="integration-health"')
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and 0 < len(message) < 120
    for part in token.split("."):
        assert len(part) < 4 or part not in response.text
    for value in (str(world.user_a), str(world.user_b), ATTACKER_ISSUER, ISSUER, *_LIBRARY_WORDS):
        assert value not in response.text, value


@pytest.mark.parametrize("case", list(CASES))
def test_forged_or_broken_tokens_are_a_plain_401(
    servers: dict[str, LiveServer], keys: Keys, world: World, case: str
) -> None:
    """Each broken token is refused with 401, a Bearer challenge and a fixed, detail-free body."""
    server, make, code = CASES[case]
    token = make(keys, world)
    response = httpx.get(
        f"{servers[server].url}/api/orgs/{world.org_a}/health",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    _assert_plain_401(response, token, code, world)


@pytest.mark.parametrize("server", ["hs", "jwks", "both"])
def test_the_genuine_token_is_accepted(
    servers: dict[str, LiveServer], keys: Keys, world: World, server: str
) -> None:
    """The control: the same request with a genuine token is 200 (so the 401s above mean it)."""
    token = (
        jwt.encode(_user(world), HS_SECRET, algorithm="HS256")
        if server == "hs"
        else _rs(keys, _user(world))
    )
    response = httpx.get(
        f"{servers[server].url}/api/orgs/{world.org_a}/health",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_refusals_share_a_few_fixed_messages(
    servers: dict[str, LiveServer], keys: Keys, world: World
) -> None:
    """However many ways a token is broken, the answers use a handful of fixed sentences."""
    messages: set[str] = set()
    for server, make, _ in CASES.values():
        response = httpx.get(
            f"{servers[server].url}/api/orgs/{world.org_a}/health",
            headers={"Authorization": f"Bearer {make(keys, world)}"},
            timeout=10,
        )
        messages.add(response.json()["error"]["message"])
    assert messages == FIXED_MESSAGES, messages ^ FIXED_MESSAGES


def test_unknown_key_ids_do_not_refetch_the_jwks_every_time(
    servers: dict[str, LiveServer], keys: Keys, world: World, jwks: Jwks
) -> None:
    """A flood of tokens with random key ids costs at most one extra JWKS fetch, not one each."""
    url = f"{servers['jwks'].url}/api/orgs/{world.org_a}/health"
    genuine = _rs(keys, _user(world))
    assert httpx.get(url, headers={"Authorization": f"Bearer {genuine}"}).status_code == 200
    before = jwks.fetches
    for _ in range(20):
        forged = _rs(keys, _user(world, jti=str(uuid.uuid4())), kid=f"kid-{uuid.uuid4()}")
        assert httpx.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert jwks.fetches - before <= 2, jwks.fetches - before


def test_jwks_fetch_failure_is_a_plain_503_without_details(
    sqlite_url: str, keys: Keys, world: World
) -> None:
    """When the JWKS cannot be fetched: 503 auth_unavailable, no URL or library text; not 500.

    (A 401 would tell clients to throw away a good token; the failure is ours, not theirs.)
    """
    app = web.Application()

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal jwks failure detail")

    app.router.add_get("/jwks.json", broken)
    with LocalServer(app).in_thread() as jwks_down:
        settings = Settings(
            database_url=sqlite_url, jwks_url=f"{jwks_down.url}/jwks.json", jwt_issuer=ISSUER
        )
        with LiveServer(create_app(settings)) as server:
            response = httpx.get(
                f"{server.url}/api/orgs/{world.org_a}/health",
                headers={"Authorization": f"Bearer {_rs(keys, _user(world))}"},
                timeout=15,
            )
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "auth_unavailable"
    for leak in ("127.0.0.1", "jwks.json", "internal jwks failure detail", "HTTP Error"):
        assert leak not in response.text


def test_oversized_authorization_header_is_refused_before_the_app(
    servers: dict[str, LiveServer], world: World
) -> None:
    """A 100 KB header is refused by the HTTP layer (4xx or closed), never a 2xx or a 5xx."""
    url = f"{servers['hs'].url}/api/orgs/{world.org_a}/health"
    try:
        response = httpx.get(url, headers={"Authorization": "Bearer " + "a" * 100_000}, timeout=10)
    except httpx.HTTPError:
        return  # the server closed the connection: refused
    assert 400 <= response.status_code < 500, response.status_code
