"""A fake Microsoft Entra ID token endpoint (OAuth 2.0 client credentials, v2.0).

``POST /{tenant}/oauth2/v2.0/token`` with an ``application/x-www-form-urlencoded`` body
``grant_type=client_credentials&client_id=…&client_secret=…&scope=<resource>/.default``
(client_secret_post; HTTP Basic client authentication is accepted too) answers, as in
``shared/vendors.md`` §2::

    200 {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "…"}

and refuses the way Entra does — an ``{"error", "error_description": "AADSTSnnnn: …",
"error_codes": [n], "timestamp", "trace_id", "correlation_id", "error_uri"}`` body:

=================================================  ======  ==========================  ========
request                                            status  error                       AADSTS
=================================================  ======  ==========================  ========
not a form body / no ``grant_type`` / no scope     400     invalid_request             900144
``grant_type`` other than client_credentials       400     unsupported_grant_type      70003
unknown tenant (path segment)                      400     invalid_request             90002
unknown ``client_id``                              400     unauthorized_client         700016
no secret                                          401     invalid_client              7000218
wrong secret                                       401     invalid_client              7000215
expired secret (:attr:`EntraFake.expired`)         401     invalid_client              7000222
scope without ``/.default``                        400     invalid_scope               1002012
scope of a resource this fake does not serve       400     invalid_resource            500011
=================================================  ======  ==========================  ========

(AADSTS codes of 7000215/7000222/700016 are verified; the statuses and the other codes are
the usual ones but unverified, as vendors.md notes.)

Subclasses (the Business Central and Dataverse fakes) add their API routes on the same server
and authorise requests with :meth:`EntraFake.bearer`. :attr:`VendorFake.scenario` drives the
*API*; the token endpoint follows :attr:`EntraFake.token_scenario` (``ok``, ``slow``,
``hang``, ``reset``, ``server_error`` — 503 with ``Retry-After`` —, ``rate_limited`` — 429
with ``Retry-After`` —, ``garbage``), except for these credential scenarios, which act on
both: ``bad_credentials`` (the secret is refused, AADSTS7000215, and issued tokens are
refused by the API), ``expired_secret`` (AADSTS7000222), ``unknown_app`` (AADSTS700016),
``unknown_tenant`` (AADSTS90002), ``unknown_resource`` (AADSTS500011).

Test hooks: :meth:`EntraFake.revoke_tokens` (every issued token becomes invalid),
:attr:`EntraFake.token_lifetime_s` (``expires_in`` of new tokens).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS, VendorFake

__all__ = ["ENTRA_SCENARIOS", "EntraFake", "IssuedToken"]

ENTRA_SCENARIOS = frozenset({"expired_secret", "unknown_app", "unknown_tenant", "unknown_resource"})
"""Credential scenarios every Entra-based fake understands (besides ``bad_credentials``)."""

TOKEN_SCENARIOS = frozenset(
    {"ok", "slow", "hang", "reset", "server_error", "rate_limited", "garbage"}
)


@dataclass(frozen=True)
class IssuedToken:
    """What the fake remembers about an access token it issued."""

    tenant: str
    client_id: str
    resource: str
    expires_at: float
    """``time.monotonic()`` when the token stops being accepted."""


class EntraFake(VendorFake):
    """Token endpoint of one tenant with one app; serve with ``LocalServer``."""

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS | ENTRA_SCENARIOS
    RESOURCE_MISSING_SCENARIOS: ClassVar[frozenset[str]] = frozenset({"unknown_resource"})
    """Scenarios in which the scope's resource is refused (AADSTS500011)."""
    token_lifetime_s: int = 3599
    """``expires_in`` of issued tokens (and how long the fake accepts them)."""
    retry_after_s: int = 30
    """``Retry-After`` of the token endpoint's 429/503 answers."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        resources: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.tenants: set[str] = {tenant_id.lower()}
        """Tenant ids (GUIDs or domains) the fake knows."""
        self.apps: dict[str, str] = {client_id: client_secret}
        """Registered apps: client id → current secret."""
        self.expired: set[str] = set()
        """Client ids whose secret has expired."""
        self.resources: set[str] = set(resources or ())
        """Resource URIs a token may be requested for (``<resource>/.default``)."""
        self.issued: dict[str, IssuedToken] = {}
        self.token_scenario = "ok"
        """How the token endpoint misbehaves (see the module docstring)."""
        self.token_forms: list[dict[str, str]] = []
        """Form fields of every token request, secrets replaced by ``"<secret>"``."""
        self.app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)

    # -- test hooks ---------------------------------------------------------------------------

    def set_token_scenario(self, scenario: str) -> None:
        """Switch how the token endpoint behaves (the API keeps :attr:`scenario`)."""
        if scenario not in TOKEN_SCENARIOS:
            raise ValueError(f"the token endpoint has no scenario {scenario!r}")
        self.token_scenario = scenario

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on."""
        self.issued.clear()

    def known_resources(self, request: web.Request) -> set[str]:
        """Resources a token may be requested for (override to derive them from the request)."""
        return self.resources

    # -- for the API routes of subclasses ------------------------------------------------------

    def bearer(self, request: web.Request) -> IssuedToken | None:
        """The live token of ``Authorization: Bearer …``, or ``None``."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            return None
        issued = self.issued.get(value.strip())
        if issued is None or issued.expires_at <= time.monotonic():
            return None
        if self.scenario in ("bad_credentials", *ENTRA_SCENARIOS):
            return None
        return issued

    # -- the token endpoint --------------------------------------------------------------------

    def _error(
        self, status: int, error: str, code: int, description: str, *, tenant: str = ""
    ) -> web.Response:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return web.json_response(
            {
                "error": error,
                "error_description": (
                    f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\n"
                    f"Correlation ID: {correlation}\r\nTimestamp: {now}"
                ),
                "error_codes": [code],
                "timestamp": now,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"https://login.microsoftonline.com/error?code={code}",
            },
            status=status,
        )

    async def _token_misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        scenario = self.token_scenario
        if scenario == "slow":
            await asyncio.sleep(self.slow_ms / 1000)
        elif scenario == "hang":
            await asyncio.Event().wait()
        elif scenario == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(text="never delivered")
        elif scenario == "server_error":
            return web.json_response(
                {"error": "temporarily_unavailable", "error_description": "AADSTS90033: ..."},
                status=503,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        elif scenario == "rate_limited":
            return web.Response(
                status=429,
                headers={"Retry-After": str(self.retry_after_s)},
                text="Too Many Requests",
            )
        elif scenario == "garbage":
            return web.Response(
                text="<html>Sign in to your account</html>", content_type="text/html"
            )
        return None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        answer = await self._token_misbehaviour(request)
        if answer is not None:
            return answer
        tenant = request.match_info["tenant"]
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        form = {k: str(v) for k, v in (await request.post()).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = _basic_credentials(request)
        if basic is not None:
            client_id, secret = basic
        self.token_forms.append(
            {k: ("<secret>" if k == "client_secret" else v) for k, v in form.items()}
        )
        grant = form.get("grant_type")
        if not grant:
            return self._error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant != "client_credentials":
            return self._error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        if tenant.lower() not in self.tenants or self.scenario == "unknown_tenant":
            return self._error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        if client_id not in self.apps or self.scenario == "unknown_app":
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant.",
            )
        if not secret:
            return self._error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        if client_id in self.expired or self.scenario == "expired_secret":
            return self._error(
                401,
                "invalid_client",
                7000222,
                f"The provided client secret keys for app '{client_id}' are expired. Visit the "
                "Azure portal to create new keys for your app.",
            )
        if not secrets.compare_digest(secret, self.apps[client_id]) or (
            self.scenario == "bad_credentials"
        ):
            return self._error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        scope = form.get("scope", "")
        if not scope:
            return self._error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        if not scope.endswith("/.default") or " " in scope:
            return self._error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = scope.removesuffix("/.default").rstrip("/")
        known = {r.rstrip("/").lower() for r in self.known_resources(request)}
        if resource.lower() not in known or self.scenario in self.RESOURCE_MISSING_SCENARIOS:
            return self._error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{tenant}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant.",
            )
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(32)
        self.issued[token] = IssuedToken(
            tenant=tenant.lower(),
            client_id=client_id,
            resource=resource.lower(),
            expires_at=time.monotonic() + self.token_lifetime_s,
        )
        self.token_requests += 1
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_s,
                "ext_expires_in": self.token_lifetime_s,
                "access_token": token,
            }
        )


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """``(client_id, secret)`` from ``Authorization: Basic …`` (client_secret_basic)."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None
