"""OAuth 2.0 client credentials, shared by every adapter whose vendor hands out access tokens.

Entra ID (Business Central, Dataverse), PowerOffice Go and Visma Connect all issue tokens with
the client-credentials grant (RFC 6749 §4.4). This module does that exchange once, for all of
them, through the shared :class:`~integration_health.adapters._http.HttpClient` (SSRF guard,
size cap, User-Agent) and the registry's :class:`~integration_health.adapters._tokens.TokenCache`
(one token per credential, refreshed before expiry, one fetch in flight):

.. code-block:: python

    oauth = OAuthClient(context)          # in the check's __init__ (a CheckContext)
    credentials = ClientCredentials.entra(
        authority_url=config.authority_url,   # token URL: {authority}/{tenant}/oauth2/v2.0/token
        tenant_id=config.tenant_id,
        client_id=config.client_id,
        client_secret=config.client_secret.get_secret_value(),
        scope="https://api.businesscentral.dynamics.com/.default",
    )
    # or, for any other provider:
    # ClientCredentials(token_url=..., client_id=..., client_secret=..., scope=...,
    #                   client_auth="basic", extra_form={...}, headers={...}, provider="Visma")
    try:
        answer = await oauth.send(credentials, lambda token: context.http.request(
            "GET", url, headers={"Authorization": f"Bearer {token.value}"}))
    except TokenRequestFailed as failure:
        return failure.to_result(latency_ms, details)
    answer.response        # the API's answer (judge it yourself)
    answer.token_renewed   # True when a cached token got 401 and was replaced once

The public surface is four names (and the ``Pace`` type of the optional ``pace=`` hook):

- :class:`ClientCredentials` — what to send: token URL, client id and secret, optional
  ``scope``, extra form fields (``tenant_id`` for Visma.net), extra headers (PowerOffice's
  ``Ocp-Apim-Subscription-Key``), and whether the client authenticates in the form body
  (``client_auth="post"``, Entra's way) or with HTTP Basic (``"basic"``, PowerOffice's way).
- :class:`OAuthClient` — :meth:`~OAuthClient.token` (cached), :meth:`~OAuthClient.send`
  (call an API with the token; on HTTP 401 with a *cached* token, drop it and retry exactly
  once with a fresh one, so a revoked credential ends as ``auth`` instead of looping) and
  :meth:`~OAuthClient.invalidate`.
- :class:`Authorized` — what :meth:`~OAuthClient.send` returns.
- :class:`TokenRequestFailed` — a :class:`~integration_health.transport_errors.ProbeFailure`
  raised when the token endpoint refuses or fails; :meth:`~TokenRequestFailed.to_result`
  turns it into a result (``degraded`` for ``rate_limited``, else ``unreachable``).

How token-endpoint answers are judged (first match wins):

======================================================  ==============  ======================
answer of the token endpoint                            error_code      note
======================================================  ==============  ======================
200 with ``access_token``                               —               cached ``expires_in``
200 without a usable ``access_token`` / not JSON        bad_response
known ``AADSTS`` code (``error_codes`` or description)  see table       sentence says the fix
HTTP 429                                                rate_limited    ``retry_after_s`` kept
``invalid_client``, ``unauthorized_client``,            auth
``invalid_grant``, ``access_denied``
``invalid_scope``, ``unsupported_grant_type``,          config_invalid
``invalid_request``
``invalid_resource``, ``invalid_tenant``                not_found
``temporarily_unavailable``, ``server_error``           server_error
HTTP 5xx                                                server_error    ``retry_after_s`` kept
HTTP 404                                                not_found       wrong token URL/tenant
HTTP 400 / 401 / 403 without a known error              auth
anything else                                           bad_response
======================================================  ==============  ======================

Known Entra codes: AADSTS7000215 (invalid secret), 7000222 (expired secret), 700016 (app not
found in tenant), 7000112 (app disabled), 7000229 (no service principal), 65001 (consent
missing), 53003 (blocked by Conditional Access) → ``auth``; 90002 (tenant not found), 900023
(invalid tenant id), 500011 (resource/scope not in tenant) → ``not_found``; 70011 (invalid
scope) → ``config_invalid``.

``details`` of a failure carry ``stage="token"``, ``http_status``, ``oauth_error``,
``aadsts`` (the numeric code), ``provider_message`` (the first line of
``error_description``, shortened), Entra's ``trace_id``/``correlation_id``, and
``retry_after_s`` when the endpoint sent ``Retry-After``. Secrets never enter messages: the
redactor of the runner scrubs them anyway.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import quote

from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure
from ._http import HttpClient, HttpResponse
from ._results import parse_retry_after
from ._tokens import Token, TokenCache, credential_key

__all__ = ["Authorized", "ClientCredentials", "OAuthClient", "Pace", "TokenRequestFailed"]

Pace = Callable[[], AbstractAsyncContextManager[Any]]
"""A factory of async context managers entered around each token request (rate limiting)."""

PROVIDER_MESSAGE_MAX = 300
"""Longest excerpt of the provider's ``error_description`` kept in details and messages."""

_AADSTS_IN_TEXT = re.compile(r"\bAADSTS(\d{4,8})\b")


@dataclass(frozen=True)
class ClientCredentials:
    """One client-credentials token request: where to send it and what to send.

    ``client_secret`` and ``headers`` never appear in ``repr``; the cache key is a hash of
    every field that changes the token (:attr:`cache_key`), never the secret itself.
    """

    token_url: str
    """The token endpoint, e.g. ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token``."""
    client_id: str
    """The client (application) id."""
    client_secret: str = field(repr=False)
    """The client secret (the resolved value, not a reference)."""
    scope: str | None = None
    """``scope`` form field (Entra: ``<resource>/.default``); omitted when ``None``."""
    client_auth: Literal["post", "basic"] = "post"
    """``post``: ``client_id``/``client_secret`` in the form (Entra); ``basic``:
    ``Authorization: Basic base64(client_id:client_secret)`` (PowerOffice), form holds only
    ``grant_type`` (+ ``scope`` and extras)."""
    extra_form: Mapping[str, str] = field(default_factory=dict)
    """More form fields, e.g. Visma.net's ``tenant_id``."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """More request headers, e.g. PowerOffice's ``Ocp-Apim-Subscription-Key``."""
    provider: str = "The identity provider"
    """Who issues the tokens, as named in error sentences (``"Entra ID"``, ``"PowerOffice"``)."""
    default_expires_in_s: float = 3600.0
    """Lifetime assumed when the answer has no usable ``expires_in``."""

    @classmethod
    def entra(
        cls,
        *,
        authority_url: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        scope: str,
    ) -> ClientCredentials:
        """Entra ID (v2.0 endpoint): ``{authority_url}/{tenant_id}/oauth2/v2.0/token``."""
        tenant = quote(tenant_id.strip(), safe="")
        return cls(
            token_url=f"{authority_url.rstrip('/')}/{tenant}/oauth2/v2.0/token",
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            provider="Entra ID",
            default_expires_in_s=3599.0,
        )

    @property
    def cache_key(self) -> str:
        """The :class:`TokenCache` key of this credential (a hash; secret-free)."""
        return credential_key(
            "oauth-client-credentials",
            self.token_url,
            self.client_id,
            self.client_secret,
            self.scope or "",
            self.client_auth,
            sorted(self.extra_form.items()),
            sorted(self.headers.items()),
        )

    def form(self) -> dict[str, str]:
        """The form body of the token request."""
        form = {"grant_type": "client_credentials"}
        if self.client_auth == "post":
            form.update(client_id=self.client_id, client_secret=self.client_secret)
        if self.scope is not None:
            form["scope"] = self.scope
        form.update(self.extra_form)
        return form

    def request_headers(self) -> dict[str, str]:
        """The headers of the token request."""
        headers = {"Accept": "application/json", **self.headers}
        if self.client_auth == "basic":
            pair = f"{self.client_id}:{self.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers


class TokenRequestFailed(ProbeFailure):
    """The token endpoint refused the credentials or failed; ``code`` says how."""

    def to_result(
        self, latency_ms: float, details: Mapping[str, Any] | None = None
    ) -> HealthResult:
        """The result: ``degraded`` for ``rate_limited``, ``unreachable`` otherwise."""
        merged = {**(details or {}), **self.details}
        if self.code is ErrorCode.RATE_LIMITED:
            return HealthResult.degraded(self.code, self.message, latency_ms, details=merged)
        return HealthResult.unreachable(self.code, self.message, latency_ms, details=merged)


class Authorized(NamedTuple):
    """The API's answer to a call made with a token (see :meth:`OAuthClient.send`)."""

    response: HttpResponse
    """The answer of the last attempt."""
    token_renewed: bool
    """True when a cached token was refused (401) and the call was repeated with a new one."""


class _Resources(Protocol):
    """What :class:`OAuthClient` needs from a check context."""

    @property
    def http(self) -> HttpClient: ...

    @property
    def tokens(self) -> TokenCache: ...


class OAuthClient:
    """Fetches, caches and renews client-credentials tokens for the checks of a registry.

    Build it from the check's :class:`~integration_health.checks.CheckContext`; it reads
    ``context.http`` and ``context.tokens`` on every call, so it follows the registry when it
    reopens its HTTP pool.
    """

    def __init__(self, context: _Resources) -> None:
        self._context = context

    async def token(self, credentials: ClientCredentials, *, pace: Pace | None = None) -> Token:
        """A valid token for ``credentials``: the cached one, or a fresh one (single flight).

        ``pace``, if given, is entered around the token request (e.g.
        ``lambda: context.limits.rate(key, max_rate=…)`` where the vendor limits requests per
        key). Raises :class:`TokenRequestFailed` when the endpoint refuses, and transport
        errors (aiohttp/OS exceptions, :class:`ProbeFailure` for oversized answers) as they
        come.
        """
        return await self._context.tokens.get(
            credentials.cache_key, lambda: self._paced_fetch(credentials, pace)
        )

    async def _paced_fetch(self, credentials: ClientCredentials, pace: Pace | None) -> Token:
        if pace is None:
            return await self.fetch(credentials)
        async with pace():
            return await self.fetch(credentials)

    def is_cached(self, credentials: ClientCredentials) -> bool:
        """True when a fresh token of ``credentials`` is in the cache."""
        return self._context.tokens.peek(credentials.cache_key) is not None

    def invalidate(self, credentials: ClientCredentials, token: Token | None = None) -> None:
        """Drop the cached token (only if it is still ``token``, when one is given).

        Passing the rejected token keeps concurrent checks from throwing away the fresh token
        another check has just fetched.
        """
        key = credentials.cache_key
        current = self._context.tokens.peek(key)
        if token is None or current is None or current.value == token.value:
            self._context.tokens.invalidate(key)

    async def send(
        self,
        credentials: ClientCredentials,
        request: Callable[[Token], Awaitable[HttpResponse]],
        *,
        pace: Pace | None = None,
    ) -> Authorized:
        """Call an API with a token; on HTTP 401 with a cached token, renew it and retry once.

        A token fetched during this call is never retried: its 401 is the vendor's verdict.
        ``pace`` applies to token requests only (see :meth:`token`); pace ``request`` itself.
        """
        was_cached = self.is_cached(credentials)
        token = await self.token(credentials, pace=pace)
        response = await request(token)
        if response.status != 401 or not was_cached:
            return Authorized(response, token_renewed=False)
        self.invalidate(credentials, token)
        token = await self.token(credentials, pace=pace)
        return Authorized(await request(token), token_renewed=True)

    async def fetch(self, credentials: ClientCredentials) -> Token:
        """One token request, uncached (use :meth:`token` unless you mean it)."""
        response = await self._context.http.request(
            "POST",
            credentials.token_url,
            data=credentials.form(),
            headers=credentials.request_headers(),
            follow_redirects=False,
        )
        if response.status != 200:
            raise _failure(credentials, response)
        body = _json_object(response)
        value = body.get("access_token") if body is not None else None
        if not isinstance(value, str) or not value.strip():
            raise TokenRequestFailed(
                ErrorCode.BAD_RESPONSE,
                f"{credentials.provider} answered the token request (HTTP 200) without an "
                "access_token: check the token URL.",
                details={"stage": "token", "http_status": 200},
            )
        assert body is not None
        lifetime = _seconds(body.get("expires_in"))
        if lifetime is None:
            lifetime = credentials.default_expires_in_s
        token_type = body.get("token_type")
        return Token.lasting(
            value.strip(),
            lifetime,
            token_type=token_type if isinstance(token_type, str) else "Bearer",
        )


# -- judging failed token requests --------------------------------------------------------------

_AADSTS: dict[int, tuple[ErrorCode, str]] = {
    7000215: (
        ErrorCode.AUTH,
        "Client secret rejected by {provider} (AADSTS7000215): renew it in the app "
        "registration (Certificates & secrets) and update the secret reference; use the "
        "secret's value, not its id.",
    ),
    7000222: (
        ErrorCode.AUTH,
        "Client secret expired (AADSTS7000222): create a new one in the app registration "
        "(Certificates & secrets) and update the secret reference.",
    ),
    700016: (
        ErrorCode.AUTH,
        "Application {client_id} was not found in the tenant (AADSTS700016): check client_id "
        "and tenant_id, and that an administrator of that tenant has consented to the app.",
    ),
    7000112: (
        ErrorCode.AUTH,
        "Application {client_id} is disabled in the tenant (AADSTS7000112): an administrator "
        "must enable its enterprise application again.",
    ),
    7000229: (
        ErrorCode.AUTH,
        "Application {client_id} has no service principal in the tenant (AADSTS7000229): an "
        "administrator of that tenant must consent to the app.",
    ),
    65001: (
        ErrorCode.AUTH,
        "Admin consent for application {client_id} is missing (AADSTS65001): an "
        "administrator must grant consent to its API permissions.",
    ),
    53003: (
        ErrorCode.AUTH,
        "A Conditional Access policy blocks application {client_id} (AADSTS53003): ask the "
        "tenant's administrator to exempt the monitoring app.",
    ),
    90002: (
        ErrorCode.NOT_FOUND,
        "{provider} does not know the tenant (AADSTS90002): check tenant_id (a GUID or a "
        "domain like contoso.onmicrosoft.com) and authority_url.",
    ),
    900023: (
        ErrorCode.NOT_FOUND,
        "The tenant id is not valid (AADSTS900023): use the tenant's GUID or its domain, "
        "e.g. contoso.onmicrosoft.com.",
    ),
    500011: (
        ErrorCode.NOT_FOUND,
        "The resource of scope {scope} does not exist in the tenant (AADSTS500011): check the "
        "environment URL and that the service is provisioned for this tenant.",
    ),
    70011: (
        ErrorCode.CONFIG_INVALID,
        "{provider} refused the scope {scope} as invalid (AADSTS70011): check the configured "
        "URL the scope is built from.",
    ),
}

_OAUTH_ERRORS: dict[str, tuple[ErrorCode, str]] = {
    "invalid_client": (
        ErrorCode.AUTH,
        "{provider} rejected the client credentials (invalid_client): check the client id "
        "and secret, or renew the secret.",
    ),
    "unauthorized_client": (
        ErrorCode.AUTH,
        "{provider} does not let client {client_id} use client credentials "
        "(unauthorized_client): check the app registration and its activation.",
    ),
    "invalid_grant": (
        ErrorCode.AUTH,
        "{provider} refused the grant (invalid_grant): the credentials are invalid, expired "
        "or revoked; renew them.",
    ),
    "access_denied": (
        ErrorCode.AUTH,
        "{provider} denied access (access_denied): check the app's permissions.",
    ),
    "invalid_scope": (
        ErrorCode.CONFIG_INVALID,
        "{provider} refused the scope {scope} (invalid_scope): check the configured URL or scope.",
    ),
    "unsupported_grant_type": (
        ErrorCode.CONFIG_INVALID,
        "{provider} does not accept client credentials at this token URL "
        "(unsupported_grant_type): check the token URL.",
    ),
    "invalid_request": (
        ErrorCode.CONFIG_INVALID,
        "{provider} refused the token request as invalid (invalid_request): check the "
        "configuration.",
    ),
    "invalid_resource": (
        ErrorCode.NOT_FOUND,
        "{provider} does not know the resource of scope {scope} (invalid_resource): check the "
        "configured URL.",
    ),
    "invalid_tenant": (
        ErrorCode.NOT_FOUND,
        "{provider} does not know the tenant (invalid_tenant): check the tenant id.",
    ),
    "temporarily_unavailable": (
        ErrorCode.SERVER_ERROR,
        "{provider} cannot issue tokens right now (temporarily_unavailable); usually on the "
        "provider's side.",
    ),
    "server_error": (
        ErrorCode.SERVER_ERROR,
        "{provider} failed to issue a token (server_error); usually on the provider's side.",
    ),
}


def _json_object(response: HttpResponse) -> dict[str, Any] | None:
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _seconds(value: Any) -> float | None:
    """``expires_in`` as seconds (Entra v1 sends a string), or ``None`` if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return seconds if 0 < seconds < 10 * 365 * 86400 else None


def _aadsts(body: Mapping[str, Any], description: str) -> int | None:
    codes = body.get("error_codes")
    if isinstance(codes, list):
        for code in codes:
            if isinstance(code, int) and not isinstance(code, bool):
                return code
    match = _AADSTS_IN_TEXT.search(description)
    return int(match.group(1)) if match else None


def _failure(credentials: ClientCredentials, response: HttpResponse) -> TokenRequestFailed:
    """The :class:`TokenRequestFailed` for a non-200 answer of the token endpoint."""
    status = response.status
    details: dict[str, Any] = {"stage": "token", "http_status": status}
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is not None:
        details["retry_after_s"] = retry_after
    body = _json_object(response) or {}
    error = body.get("error")
    error = error.strip() if isinstance(error, str) else ""
    raw_description = body.get("error_description") or body.get("message") or ""
    description = raw_description.strip() if isinstance(raw_description, str) else ""
    first_line = description.splitlines()[0].strip() if description else ""
    first_line = first_line[:PROVIDER_MESSAGE_MAX]
    if error:
        details["oauth_error"] = error[:100]
    if first_line:
        details["provider_message"] = first_line
    for name in ("trace_id", "correlation_id"):
        if isinstance(body.get(name), str):
            details[name] = body[name][:100]
    aadsts = _aadsts(body, description)
    if aadsts is not None:
        details["aadsts"] = aadsts
    fill = {
        "provider": credentials.provider,
        "client_id": credentials.client_id,
        "scope": credentials.scope or "(none)",
    }
    said = f' {credentials.provider} says: "{first_line}".' if first_line else ""

    known = _AADSTS.get(aadsts) if aadsts is not None else None
    if known is not None:
        code, template = known
        return TokenRequestFailed(code, template.format(**fill), details=details)
    if status == 429:
        hint = f" It asks us to wait {retry_after:g} s." if retry_after is not None else ""
        return TokenRequestFailed(
            ErrorCode.RATE_LIMITED,
            f"{credentials.provider} is rate limiting token requests (HTTP 429).{hint} "
            "Probes back off automatically.",
            details=details,
        )
    known = _OAUTH_ERRORS.get(error)
    if known is not None:
        code, template = known
        return TokenRequestFailed(code, template.format(**fill) + said, details=details)
    if status >= 500:
        return TokenRequestFailed(
            ErrorCode.SERVER_ERROR,
            f"{credentials.provider} failed to issue a token (HTTP {status}); usually on the "
            f"provider's side.{said}",
            details=details,
        )
    if status == 404:
        return TokenRequestFailed(
            ErrorCode.NOT_FOUND,
            f"The token endpoint of {credentials.provider} does not exist (HTTP 404): check "
            f"the configured URL and tenant.{said}",
            details=details,
        )
    if status in (400, 401, 403):
        return TokenRequestFailed(
            ErrorCode.AUTH,
            f"{credentials.provider} rejected the token request (HTTP {status}): check the "
            f"client id and secret.{said}",
            details=details,
        )
    return TokenRequestFailed(
        ErrorCode.BAD_RESPONSE,
        f"Unexpected HTTP {status} from the token endpoint of {credentials.provider}.{said}",
        details=details,
    )
