"""A fake Visma identity server (Visma Connect / identity.vismaonline.com) for both Visma APIs.

``POST /connect/token`` (form-encoded, as Visma requires) understands the two grants the
adapters use (``shared/vendors.md`` §7):

- ``client_credentials`` (Visma.net service integrations): ``client_id``/``client_secret`` in
  the form or HTTP Basic, ``scope``, and ``tenant_id`` of a tenant that approved the client;
- ``refresh_token`` (eAccounting): the client authenticates with HTTP Basic (or the form);
  each refresh token works **once** — the answer carries its successor and the old one is
  dead, as at Visma.

Success: ``{"access_token", "expires_in": 3600, "token_type": "Bearer", "scope"}`` (+
``refresh_token`` for the refresh grant). Refusals use the OAuth error form
(``{"error": "invalid_client" | "invalid_grant" | "invalid_scope" | "invalid_request" |
"unsupported_grant_type"}``, HTTP 400) — standard for Visma's IdentityServer, exact texts
unverified.

The vendor API fakes (:mod:`.visma_eaccounting`, :mod:`.visma_net`) subclass this one, so one
server on 127.0.0.1 plays identity server and API (``token_url = {url}/connect/token``) and
shares the scenario and :attr:`~.VendorFake.token_requests`. The token endpoint follows the
``slow``/``hang``/``reset`` scenarios and ``bad_credentials``; other scenarios affect the API.
:attr:`VismaConnectFake.token_scenario` (``"rate_limited"``/``"server_error"``) makes the
token endpoint itself misbehave.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from dataclasses import dataclass, field
from typing import ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS, VendorFake

__all__ = ["IssuedToken", "VismaConnectFake"]


@dataclass
class IssuedToken:
    """An access token the fake issued."""

    client_id: str
    scopes: frozenset[str]
    tenant_id: str | None = None
    expires_at: float = field(default_factory=lambda: time.monotonic() + 3600)


class VismaConnectFake(VendorFake):
    """The token endpoint alone; API fakes add their routes (see the module docstring)."""

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS | {"oversized"}
    token_lifetime_s: int = 3600
    retry_after_s: int = 30
    """``Retry-After`` of 429/503 answers."""

    def __init__(
        self,
        *,
        client_id: str = "monitor-client",
        client_secret: str,
        refresh_token: str | None = None,
        tenants: set[str] | None = None,
        scopes: frozenset[str] = frozenset({"ea:api", "offline_access", "ea:sales_readonly"}),
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_tokens: set[str] = {refresh_token} if refresh_token else set()
        """Refresh tokens that are still valid (each one works once)."""
        self.spent_refresh_tokens: set[str] = set()
        self.tenants: set[str] = set(tenants or ())
        """Tenants that approved the client (client-credentials grant)."""
        self.scopes = scopes
        """Scopes the client may get."""
        self.access_tokens: dict[str, IssuedToken] = {}
        self.token_scenario: str | None = None
        """``"rate_limited"`` or ``"server_error"``: the token endpoint misbehaves."""
        self.app.router.add_post("/connect/token", self._token)

    # -- test hooks -------------------------------------------------------------------------

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working (the API answers 401)."""
        self.access_tokens.clear()

    def revoke(self) -> None:
        """The authorisation is withdrawn: access and refresh tokens all stop working."""
        self.access_tokens.clear()
        self.spent_refresh_tokens |= self.refresh_tokens
        self.refresh_tokens.clear()
        self.tenants.clear()

    def access_of(self, request: web.Request) -> IssuedToken | None:
        """The issued token behind ``Authorization: Bearer …``, if it is valid now."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or self.scenario == "bad_credentials":
            return None
        issued = self.access_tokens.get(value.strip())
        if issued is None or issued.expires_at <= time.monotonic():
            return None
        return issued

    # -- the token endpoint -----------------------------------------------------------------

    @staticmethod
    def _oauth_error(error: str, description: str | None = None, status: int = 400) -> web.Response:
        body = {"error": error}
        if description:
            body["error_description"] = description
        return web.json_response(body, status=status)

    def _client(self, request: web.Request, form: dict[str, str]) -> tuple[str, str] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                pair = base64.b64decode(encoded, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, sep, secret = pair.partition(":")
            return (client_id, secret) if sep else None
        if "client_id" in form:
            return form["client_id"], form.get("client_secret", "")
        return None

    def _issue(self, client_id: str, scopes: frozenset[str], tenant: str | None) -> str:
        value = "eyJ" + secrets.token_urlsafe(24)
        self.access_tokens[value] = IssuedToken(
            client_id, scopes, tenant, time.monotonic() + self.token_lifetime_s
        )
        self.token_requests += 1
        return value

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if self.scenario in ("slow", "hang", "reset"):
            answer = await self.generic_misbehaviour(request)
            if answer is not None:
                return answer
        if self.token_scenario == "rate_limited":
            return web.json_response(
                {"error": "too_many_requests"},
                status=429,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.token_scenario == "server_error":
            return web.Response(
                status=503,
                text="Service Unavailable",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if request.content_type != "application/x-www-form-urlencoded":
            return self._oauth_error("invalid_request", "Content-Type must be form-urlencoded")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        client = self._client(request, form)
        if (
            client is None
            or client != (self.client_id, self.client_secret)
            or (self.scenario == "bad_credentials" and form.get("grant_type") != "refresh_token")
        ):
            return self._oauth_error("invalid_client", status=400)
        grant = form.get("grant_type")
        if grant == "client_credentials":
            return self._client_credentials(form)
        if grant == "refresh_token":
            return self._refresh(form)
        return self._oauth_error("unsupported_grant_type")

    def _client_credentials(self, form: dict[str, str]) -> web.Response:
        tenant = form.get("tenant_id")
        if not tenant:
            return self._oauth_error("invalid_request", "tenant_id is missing")
        requested = frozenset(form.get("scope", "").split())
        if not requested or not requested <= self.scopes:
            return self._oauth_error("invalid_scope")
        if tenant not in self.tenants:
            return self._oauth_error("invalid_grant", "The client is not approved for this tenant.")
        token = self._issue(self.client_id, requested, tenant)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": self.token_lifetime_s,
                "token_type": "Bearer",
                "scope": " ".join(sorted(requested)),
            }
        )

    def _refresh(self, form: dict[str, str]) -> web.Response:
        presented = form.get("refresh_token", "")
        if self.scenario == "bad_credentials" or presented not in self.refresh_tokens:
            return self._oauth_error("invalid_grant")
        self.refresh_tokens.discard(presented)
        self.spent_refresh_tokens.add(presented)
        successor = secrets.token_urlsafe(32)
        self.refresh_tokens.add(successor)
        token = self._issue(self.client_id, self.scopes, None)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": self.token_lifetime_s,
                "token_type": "Bearer",
                "refresh_token": successor,
                "scope": " ".join(sorted(self.scopes)),
            }
        )
