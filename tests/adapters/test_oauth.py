"""The shared OAuth client-credentials helper against real local token endpoints."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from integration_health import ErrorCode, HealthStatus, Settings
from integration_health.adapters._http import HttpResponse
from integration_health.adapters._oauth import (
    ClientCredentials,
    OAuthClient,
    TokenRequestFailed,
    _failure,
)
from integration_health.checks import CheckContext
from integration_health.testing import LocalServer
from integration_health.testing.vendors.entra import EntraFake

TENANT = "contoso.onmicrosoft.com"
CLIENT = "11111111-2222-3333-4444-555555555555"
SECRET = "s3cret-Value-oauth-9d8c"
RESOURCE = "https://api.example.test"


@dataclass
class Canned:
    """A token endpoint that answers whatever the test sets, and records what it got."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"access_token": "tok-1", "expires_in": 3600})
    headers: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/api", self._api)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.seen.append((dict(request.headers), form))
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, headers=self.headers)
        return web.json_response(self.body, status=self.status, headers=self.headers)

    async def _api(self, request: web.Request) -> web.Response:
        return web.Response(text="api")


@pytest.fixture
async def context() -> AsyncIterator[CheckContext]:
    context = CheckContext(Settings(allow_private_networks=True))
    yield context
    await context.aclose()


@pytest.fixture
async def entra() -> AsyncIterator[tuple[EntraFake, str]]:
    fake = EntraFake(tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET, resources={RESOURCE})
    async with LocalServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
async def canned() -> AsyncIterator[tuple[Canned, str]]:
    endpoint = Canned()
    async with LocalServer(endpoint.app()) as server:
        yield endpoint, server.url


def entra_credentials(url: str, **overrides: Any) -> ClientCredentials:
    fields: dict[str, Any] = {
        "authority_url": url,
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "scope": f"{RESOURCE}/.default",
        **overrides,
    }
    return ClientCredentials.entra(**fields)


def canned_credentials(url: str, **overrides: Any) -> ClientCredentials:
    fields: dict[str, Any] = {
        "token_url": f"{url}/token",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "provider": "Acme ID",
        **overrides,
    }
    return ClientCredentials(**fields)


# -- ClientCredentials ----------------------------------------------------------------------------


def test_repr_and_cache_key_never_show_the_secret() -> None:
    """Neither repr() nor the cache key contains the secret or extra headers."""
    credentials = ClientCredentials(
        token_url="https://id.example/token",
        client_id=CLIENT,
        client_secret=SECRET,
        headers={"Ocp-Apim-Subscription-Key": "sub-key-123"},
    )
    assert SECRET not in repr(credentials) and "sub-key-123" not in repr(credentials)
    assert SECRET not in credentials.cache_key


def test_cache_key_separates_credentials() -> None:
    """Another secret, scope, extra field or header gives another cache key."""
    base = ClientCredentials(token_url="https://id/t", client_id="c", client_secret="s")
    variants = [
        ClientCredentials(token_url="https://id/t", client_id="c", client_secret="s2"),
        ClientCredentials(token_url="https://id/t", client_id="c", client_secret="s", scope="x"),
        ClientCredentials(
            token_url="https://id/t", client_id="c", client_secret="s", extra_form={"a": "1"}
        ),
        ClientCredentials(
            token_url="https://id/t", client_id="c", client_secret="s", headers={"k": "v"}
        ),
    ]
    assert len({base.cache_key, *(v.cache_key for v in variants)}) == 5
    assert base.cache_key == ClientCredentials("https://id/t", "c", "s").cache_key


def test_entra_token_url_quotes_the_tenant() -> None:
    """ClientCredentials.entra builds {authority}/{tenant}/oauth2/v2.0/token."""
    credentials = ClientCredentials.entra(
        authority_url="https://login.example/",
        tenant_id="contoso.onmicrosoft.com",
        client_id="c",
        client_secret="s",
        scope="https://r/.default",
    )
    assert credentials.token_url == (
        "https://login.example/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert credentials.provider == "Entra ID"


# -- fetching and caching -------------------------------------------------------------------------


async def test_entra_form_and_token(entra: tuple[EntraFake, str], context: CheckContext) -> None:
    """Entra's form has grant_type, client_id, client_secret and scope; the token is cached."""
    fake, url = entra
    oauth = OAuthClient(context)
    credentials = entra_credentials(url)
    token = await oauth.token(credentials)
    assert token.value in fake.issued
    assert fake.token_forms == [
        {
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": "<secret>",
            "scope": f"{RESOURCE}/.default",
        }
    ]
    assert (await oauth.token(credentials)).value == token.value
    assert oauth.is_cached(credentials)
    assert fake.token_requests == 1


async def test_fifty_concurrent_token_calls_make_one_request(
    entra: tuple[EntraFake, str], context: CheckContext
) -> None:
    """Fifty concurrent token() calls on one credential share a single token request."""
    fake, url = entra
    oauth = OAuthClient(context)
    tokens = await asyncio.gather(*(oauth.token(entra_credentials(url)) for _ in range(50)))
    assert len({t.value for t in tokens}) == 1
    assert fake.token_requests == 1


async def test_basic_client_authentication(
    canned: tuple[Canned, str], context: CheckContext
) -> None:
    """client_auth='basic' sends Basic base64(id:secret) and keeps them out of the form."""
    endpoint, url = canned
    credentials = canned_credentials(
        url,
        client_auth="basic",
        headers={"Ocp-Apim-Subscription-Key": "sub"},
        extra_form={"tenant_id": "42"},
        scope="api:read",
    )
    await OAuthClient(context).token(credentials)
    [(headers, form)] = endpoint.seen
    expected = base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert headers["Ocp-Apim-Subscription-Key"] == "sub"
    assert form == {"grant_type": "client_credentials", "scope": "api:read", "tenant_id": "42"}


async def test_basic_authentication_is_accepted_by_entra(
    entra: tuple[EntraFake, str], context: CheckContext
) -> None:
    """Entra accepts client_secret_basic too (the fake checks the decoded pair)."""
    fake, url = entra
    credentials = entra_credentials(url)
    basic = ClientCredentials(
        token_url=credentials.token_url,
        client_id=CLIENT,
        client_secret=SECRET,
        scope=credentials.scope,
        client_auth="basic",
    )
    assert (await OAuthClient(context).token(basic)).value in fake.issued


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [(1200, 1200), ("3599", 3599), (None, 777), ("soon", 777), (-5, 777), (True, 777)],
)
async def test_expires_in_forms(
    canned: tuple[Canned, str],
    context: CheckContext,
    expires_in: Any,
    lifetime: float,
) -> None:
    """expires_in may be a number or a numeric string; anything else uses the default."""
    endpoint, url = canned
    endpoint.body = {"access_token": "tok", "token_type": "Bearer"}
    if expires_in is not None:
        endpoint.body["expires_in"] = expires_in
    credentials = canned_credentials(url, default_expires_in_s=777)
    token = await OAuthClient(context).fetch(credentials)
    assert token.expires_at - time.monotonic() == pytest.approx(lifetime, abs=2)
    assert token.extra["token_type"] == "Bearer"


async def test_pace_is_entered_around_each_token_request(
    canned: tuple[Canned, str], context: CheckContext
) -> None:
    """The pace hook wraps token requests (and only when a request is actually made)."""
    _endpoint, url = canned
    entered: list[int] = []

    @asynccontextmanager
    async def pace() -> AsyncIterator[None]:
        entered.append(1)
        yield

    oauth = OAuthClient(context)
    credentials = canned_credentials(url)
    await oauth.token(credentials, pace=pace)
    await oauth.token(credentials, pace=pace)
    assert entered == [1]


# -- refusals -------------------------------------------------------------------------------------


def entra_body(error: str, code: int, text: str) -> dict[str, Any]:
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: t\r\nCorrelation ID: c",
        "error_codes": [code],
        "trace_id": "trace-1",
        "correlation_id": "corr-1",
    }


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "phrase"),
    [
        (401, entra_body("invalid_client", 7000215, "Invalid client secret provided."), {},
         ErrorCode.AUTH, "Client secret rejected by Acme ID (AADSTS7000215)"),
        (401, entra_body("invalid_client", 7000222, "Keys expired."), {},
         ErrorCode.AUTH, "Client secret expired (AADSTS7000222)"),
        (400, entra_body("unauthorized_client", 700016, "App not found."), {},
         ErrorCode.AUTH, f"Application {CLIENT} was not found in the tenant (AADSTS700016)"),
        (400, {"error": "invalid_request", "error_description": "AADSTS90002: No tenant 'x'."},
         {}, ErrorCode.NOT_FOUND, "Acme ID does not know the tenant (AADSTS90002)"),
        (400, entra_body("invalid_resource", 500011, "Resource principal not found."), {},
         ErrorCode.NOT_FOUND, "AADSTS500011"),
        (400, {"error": "invalid_client"}, {}, ErrorCode.AUTH,
         "Acme ID rejected the client credentials (invalid_client)"),
        (400, {"error": "unauthorized_client"}, {}, ErrorCode.AUTH, "(unauthorized_client)"),
        (400, {"error": "invalid_grant"}, {}, ErrorCode.AUTH, "(invalid_grant)"),
        (400, {"error": "invalid_scope", "error_description": "bad scope"}, {},
         ErrorCode.CONFIG_INVALID, "(invalid_scope)"),
        (400, {"error": "unsupported_grant_type"}, {}, ErrorCode.CONFIG_INVALID,
         "(unsupported_grant_type)"),
        (400, {"error": "invalid_request"}, {}, ErrorCode.CONFIG_INVALID, "(invalid_request)"),
        (400, {"error": "invalid_tenant"}, {}, ErrorCode.NOT_FOUND, "(invalid_tenant)"),
        (503, {"error": "temporarily_unavailable"}, {"Retry-After": "12"},
         ErrorCode.SERVER_ERROR, "(temporarily_unavailable)"),
        (429, "", {"Retry-After": "7"}, ErrorCode.RATE_LIMITED, "It asks us to wait 7 s."),
        (500, "<html>oops</html>", {}, ErrorCode.SERVER_ERROR, "(HTTP 500)"),
        (404, "<html>nope</html>", {}, ErrorCode.NOT_FOUND, "does not exist (HTTP 404)"),
        (401, "", {}, ErrorCode.AUTH, "rejected the token request (HTTP 401)"),
        (403, {"message": "Access denied due to invalid subscription key."}, {}, ErrorCode.AUTH,
         'Acme ID says: "Access denied due to invalid subscription key."'),
        (418, "teapot", {}, ErrorCode.BAD_RESPONSE, "Unexpected HTTP 418"),
        (200, {"token_type": "Bearer"}, {}, ErrorCode.BAD_RESPONSE, "without an access_token"),
        (200, "<html>login page</html>", {}, ErrorCode.BAD_RESPONSE, "without an access_token"),
        (200, ["not", "an", "object"], {}, ErrorCode.BAD_RESPONSE, "without an access_token"),
    ],
)  # fmt: skip
async def test_refusals_map_to_error_codes(
    canned: tuple[Canned, str],
    context: CheckContext,
    status: int,
    body: Any,
    headers: dict[str, str],
    code: ErrorCode,
    phrase: str,
) -> None:
    """Each kind of token-endpoint refusal maps to its error code and a what-to-do sentence."""
    endpoint, url = canned
    endpoint.status, endpoint.body, endpoint.headers = status, body, headers
    with pytest.raises(TokenRequestFailed) as raised:
        await OAuthClient(context).token(canned_credentials(url, scope="api/.default"))
    failure = raised.value
    assert failure.code is code
    assert phrase in failure.message
    assert failure.details["stage"] == "token"
    assert failure.details["http_status"] == status
    assert SECRET not in failure.message and SECRET not in json.dumps(failure.details)
    if "Retry-After" in headers:
        assert failure.details["retry_after_s"] == float(headers["Retry-After"])
    if isinstance(body, dict) and "error_codes" in body:
        assert failure.details["aadsts"] == body["error_codes"][0]
        assert failure.details["trace_id"] == "trace-1"


async def test_redirects_are_not_followed(
    canned: tuple[Canned, str], context: CheckContext
) -> None:
    """A 302 from the token endpoint is bad_response: a form POST is never replayed elsewhere."""
    endpoint, url = canned
    endpoint.status, endpoint.body, endpoint.headers = 302, "", {"Location": f"{url}/api"}
    with pytest.raises(TokenRequestFailed) as raised:
        await OAuthClient(context).token(canned_credentials(url))
    assert raised.value.code is ErrorCode.BAD_RESPONSE


async def test_failures_are_not_cached(canned: tuple[Canned, str], context: CheckContext) -> None:
    """After a refused token request the next call asks again (and may succeed)."""
    endpoint, url = canned
    endpoint.status, endpoint.body = 401, {"error": "invalid_client"}
    oauth = OAuthClient(context)
    with pytest.raises(TokenRequestFailed):
        await oauth.token(canned_credentials(url))
    endpoint.status, endpoint.body = 200, {"access_token": "fresh", "expires_in": 60 * 60}
    assert (await oauth.token(canned_credentials(url))).value == "fresh"
    assert len(endpoint.seen) == 2


def test_long_provider_messages_are_cut() -> None:
    """The provider's error_description is kept to its first line, at most 300 characters."""
    response = HttpResponse(
        status=400,
        headers={},
        body=json.dumps({"error": "weird", "error_description": "x" * 1000 + "\nsecond"}).encode(),
        url="https://id/token",
        elapsed_ms=1.0,
    )
    failure = _failure(ClientCredentials("https://id/token", "c", "s"), response)
    assert failure.code is ErrorCode.AUTH
    assert failure.details["provider_message"] == "x" * 300
    assert "second" not in failure.message


def test_rate_limited_failure_is_a_degraded_result() -> None:
    """to_result gives degraded for rate_limited, unreachable otherwise, details merged."""
    limited = TokenRequestFailed(ErrorCode.RATE_LIMITED, "slow down", details={"retry_after_s": 3})
    result = limited.to_result(12.0, {"environment": "Production"})
    assert (result.status, result.error_code) == (HealthStatus.DEGRADED, ErrorCode.RATE_LIMITED)
    assert result.details == {"environment": "Production", "retry_after_s": 3}
    refused = TokenRequestFailed(ErrorCode.AUTH, "no").to_result(1.0)
    assert (refused.status, refused.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)


# -- send(): renew once ---------------------------------------------------------------------------


class _Api:
    """Counts calls and answers 401 to the tokens listed in ``refused``."""

    def __init__(self, context: CheckContext, url: str) -> None:
        self.context, self.url = context, url
        self.refused: set[str] = set()
        self.calls: list[str] = []

    async def __call__(self, token: Any) -> HttpResponse:
        self.calls.append(token.value)
        response = await self.context.http.request("GET", f"{self.url}/api")
        if token.value in self.refused:
            response.status = 401
        return response


async def test_send_renews_a_refused_cached_token_once(
    entra: tuple[EntraFake, str], context: CheckContext
) -> None:
    """A cached token answered with 401 is replaced once; the retry uses the new token."""
    fake, url = entra
    oauth = OAuthClient(context)
    credentials = entra_credentials(url)
    api = _Api(context, url)
    first = await oauth.send(credentials, api)
    assert (first.response.status, first.token_renewed) == (404, False)
    api.refused.add(api.calls[0])
    second = await oauth.send(credentials, api)
    assert second.token_renewed is True
    assert api.calls[1] == api.calls[0] != api.calls[2]
    assert fake.token_requests == 2


async def test_send_never_retries_a_fresh_token(
    entra: tuple[EntraFake, str], context: CheckContext
) -> None:
    """A token fetched in this very call that gets 401 is the verdict: no second fetch."""
    fake, url = entra

    class AlwaysRefused(_Api):
        async def __call__(self, token: Any) -> HttpResponse:
            self.refused.add(token.value)
            return await super().__call__(token)

    api = AlwaysRefused(context, url)
    answer = await OAuthClient(context).send(entra_credentials(url), api)
    assert (answer.response.status, answer.token_renewed) == (401, False)
    assert len(api.calls) == 1
    assert fake.token_requests == 1


async def test_invalidate_keeps_a_newer_token(
    entra: tuple[EntraFake, str], context: CheckContext
) -> None:
    """Invalidating with a stale token leaves a newer cached token alone."""
    _fake, url = entra
    oauth = OAuthClient(context)
    credentials = entra_credentials(url)
    old = await oauth.token(credentials)
    oauth.invalidate(credentials)
    new = await oauth.token(credentials)
    assert new.value != old.value
    oauth.invalidate(credentials, old)
    assert oauth.is_cached(credentials)
    oauth.invalidate(credentials, new)
    assert not oauth.is_cached(credentials)


@pytest.mark.parametrize(
    ("scope", "code", "aadsts"),
    [
        ("https://other.example.test/.default", ErrorCode.NOT_FOUND, 500011),
        (RESOURCE, ErrorCode.CONFIG_INVALID, 1002012),
        (None, ErrorCode.CONFIG_INVALID, 900144),
    ],
)
async def test_entra_fake_refuses_wrong_scopes(
    entra: tuple[EntraFake, str],
    context: CheckContext,
    scope: str | None,
    code: ErrorCode,
    aadsts: int,
) -> None:
    """A scope of another resource, without /.default, or missing is refused as Entra does."""
    fake, url = entra
    credentials = entra_credentials(url)
    wrong = ClientCredentials(
        token_url=credentials.token_url,
        client_id=CLIENT,
        client_secret=SECRET,
        scope=scope,
        provider="Entra ID",
    )
    with pytest.raises(TokenRequestFailed) as raised:
        await OAuthClient(context).token(wrong)
    assert raised.value.code is code
    assert raised.value.details["aadsts"] == aadsts
    assert fake.token_requests == 0
