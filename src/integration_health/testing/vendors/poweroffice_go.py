"""A fake PowerOffice Go API v2 behind an Azure API Management–style gateway.

Shapes follow ``shared/vendors.md`` §6:

- ``POST /OAuth/Token`` with ``Authorization: Basic base64(applicationKey:clientKey)``,
  ``Ocp-Apim-Subscription-Key`` and the form ``grant_type=client_credentials`` →
  ``{"access_token", "token_type": "Bearer", "expires_in": 1200}``; wrong keys → 400
  ``{"error": "invalid_client"}``; another grant → 400 ``unsupported_grant_type``;
- ``GET /v2/ClientIntegrationInformation`` with ``Authorization: Bearer …`` and the
  subscription key → ``{"ClientId", "ClientName", "ActiveClientSubscriptions",
  "ValidPrivileges", "InvalidPrivileges"}``; a missing/unknown token → 401
  ``application/problem+json``.

The gateway comes first, as in APIM: a missing or unknown subscription key → 401
``{"statusCode": 401, "message": "Access denied due to missing subscription key. …"}`` (or
"invalid subscription key"); and **10 requests per second per subscription key** — counted
over a sliding one-second window across every client key and both paths — beyond which it
answers **429** ``{"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1
seconds."}`` with ``Retry-After: 1``. :attr:`PowerOfficeFake.throttled` counts those 429s and
:meth:`PowerOfficeFake.max_in_window` reports the densest second seen per key. (Error bodies
are APIM defaults and unverified.)

Several client keys may be registered (:meth:`PowerOfficeFake.add_client`), each with its own
client name and privileges, so one fake serves many integrations sharing a subscription key.

Scenarios: the common ones — ``bad_credentials`` (keys refused at the token endpoint, tokens
refused by the API), ``not_found`` (404 from the gateway: no such API at this base URL),
``rate_limited`` (the 429 above), ``server_error`` (503 ProblemDetail with ``Retry-After``) —
plus ``invalid_privileges`` (every client reports ``InvalidPrivileges``) and ``oversized``.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS, VendorFake

__all__ = ["PowerOfficeClient", "PowerOfficeFake"]

OVERSIZED_BYTES = 2 * 1024 * 1024
PROBLEM_JSON = "application/problem+json"


@dataclass
class PowerOfficeClient:
    """A customer (client) that activated the integration."""

    name: str
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    subscriptions: list[str] = field(default_factory=lambda: ["Accounting", "Invoicing"])
    valid_privileges: list[str] = field(default_factory=lambda: ["Customer_Full", "Voucher_Full"])
    invalid_privileges: list[str] = field(default_factory=list)


class PowerOfficeFake(VendorFake):
    """Serve with :class:`~integration_health.testing.LocalServer`; see the module docstring."""

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS | {"invalid_privileges", "oversized"}
    rate_limit: int = 10
    """Requests per second per subscription key."""
    token_lifetime_s: int = 1_200
    retry_after_s: int = 30
    """``Retry-After`` of the 503 answer."""

    def __init__(
        self,
        *,
        application_key: str,
        client_key: str,
        subscription_key: str,
        client_name: str = "Acme AS",
    ) -> None:
        super().__init__()
        self.application_key = application_key
        self.subscription_keys: set[str] = {subscription_key}
        self.clients: dict[str, PowerOfficeClient] = {}
        """Client keys → the client they open."""
        self.add_client(client_key, client_name)
        self.tokens: dict[str, tuple[str, float]] = {}
        """Issued access tokens → (client key, monotonic expiry)."""
        self.throttled = 0
        """How many requests the gateway answered 429."""
        self.arrivals: dict[str, deque[float]] = defaultdict(deque)
        self.arrival_log: dict[str, list[float]] = defaultdict(list)
        """Monotonic arrival times of every request let through, per subscription key."""
        self.token_forms: list[dict[str, str]] = []
        """Form fields of every token request."""
        self._densest: dict[str, int] = defaultdict(int)
        self.app.router.add_post("/OAuth/Token", self._token)
        self.app.router.add_get("/v2/ClientIntegrationInformation", self._information)

    # -- test hooks ---------------------------------------------------------------------------

    def add_client(self, client_key: str, name: str) -> PowerOfficeClient:
        """Register another client key (a customer that activated the integration)."""
        client = PowerOfficeClient(name=name)
        self.clients[client_key] = client
        return client

    def revoke_tokens(self) -> None:
        """Every issued access token is refused from now on."""
        self.tokens.clear()

    def max_in_window(self, subscription_key: str) -> int:
        """The most requests seen with ``subscription_key`` within one second."""
        return self._densest[subscription_key]

    # -- the gateway ---------------------------------------------------------------------------

    def _apim(self, status: int, message: str, **headers: str) -> web.Response:
        return web.json_response(
            {"statusCode": status, "message": message}, status=status, headers=headers
        )

    def _gateway(self, request: web.Request) -> web.Response | None:
        """APIM's checks: subscription key, then the per-key rate limit."""
        key = request.headers.get("Ocp-Apim-Subscription-Key")
        if not key:
            return self._apim(
                401,
                "Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API.",
            )
        if key not in self.subscription_keys:
            return self._apim(
                401,
                "Access denied due to invalid subscription key. Make sure to provide a valid "
                "key for an active subscription.",
            )
        now = time.monotonic()
        window = self.arrivals[key]
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.rate_limit or self.scenario == "rate_limited":
            self.throttled += 1
            return self._apim(
                429, "Rate limit is exceeded. Try again in 1 seconds.", **{"Retry-After": "1"}
            )
        window.append(now)
        self.arrival_log[key].append(now)
        self._densest[key] = max(self._densest[key], len(window))
        if self.scenario == "not_found":
            return self._apim(404, "Resource not found")
        return None

    async def _misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        if self.scenario == "server_error":
            return web.json_response(
                {"title": "Service Unavailable", "status": 503, "traceId": str(uuid.uuid4())},
                status=503,
                content_type=PROBLEM_JSON,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "garbage":
            return web.Response(
                text="<html><body>PowerOffice Go is being upgraded</body></html>",
                content_type="text/html",
            )
        if self.scenario == "oversized":
            return web.Response(
                body=b'{"ClientId":"' + b"x" * OVERSIZED_BYTES + b'"}',
                content_type="application/json",
            )
        return await self.generic_misbehaviour(request)

    # -- routes --------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        refused = self._gateway(request)
        if refused is not None:
            return refused
        if self.scenario in ("server_error", "hang", "reset"):
            answer = await self._misbehaviour(request)
            if answer is not None:
                return answer
        form = await request.post()
        self.token_forms.append({k: str(v) for k, v in form.items()})
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        pair = _basic(request)
        if (
            pair is None
            or pair[0] != self.application_key
            or pair[1] not in self.clients
            or self.scenario == "bad_credentials"
        ):
            return web.json_response({"error": "invalid_client"}, status=400)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = (pair[1], time.monotonic() + self.token_lifetime_s)
        self.token_requests += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}
        )

    async def _information(self, request: web.Request) -> web.StreamResponse:
        refused = self._gateway(request)
        if refused is not None:
            return refused
        answer = await self._misbehaviour(request)
        if answer is not None:
            return answer
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        issued = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if issued is None or issued[1] <= time.monotonic() or self.scenario == "bad_credentials":
            return web.json_response(
                {
                    "type": "https://tools.ietf.org/html/rfc7235#section-3.1",
                    "title": "Unauthorized",
                    "status": 401,
                    "traceId": str(uuid.uuid4()),
                },
                status=401,
                content_type=PROBLEM_JSON,
            )
        client = self.clients[issued[0]]
        invalid = list(client.invalid_privileges)
        if self.scenario == "invalid_privileges" and not invalid:
            invalid = ["Payroll_Full", "Bank_Full"]
        body: dict[str, Any] = {
            "ClientId": client.client_id,
            "ClientName": client.name,
            "ActiveClientSubscriptions": client.subscriptions,
            "ValidPrivileges": client.valid_privileges,
            "InvalidPrivileges": invalid,
        }
        return web.json_response(body)


def _basic(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
