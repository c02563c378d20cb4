"""A fake Dataverse Web API (``WhoAmI``) with its Entra ID token endpoint.

One server plays the Entra authority and the environment (point ``authority_url`` and
``environment_url`` at it). The environment's URL — the token's resource — is the server's
own origin (``http://127.0.0.1:<port>``), as for a real environment whose scope is
``https://org.crm4.dynamics.com/.default``.

``GET /api/data/v9.2/WhoAmI`` answers ``{"@odata.context": …, "BusinessUnitId", "UserId",
"OrganizationId"}`` (shapes from ``shared/vendors.md`` §3a) to a Bearer token issued by this
fake for this environment and tenant. It refuses like Dataverse: a missing, foreign or revoked
token → **401** with an empty body and ``WWW-Authenticate: Bearer authorization_uri=…``; an
app without an application user (:attr:`DataverseFake.application_users`) → **403**
``{"error": {"code": "0x80072560", "message": "The user is not a member of the
organization."}}``.

Scenarios: the common ones — ``not_found`` makes Entra refuse the environment as a resource
(AADSTS500011, what a wrong environment URL gives), ``rate_limited`` is **429** with
``Retry-After: 37`` and code ``0x80072322``, ``server_error`` is 503 ``0x80040216`` with
``Retry-After`` (unverified) —, the Entra credential scenarios, and ``oversized`` (2 MiB),
``no_app_user`` (403), ``org_not_found`` (404 from the environment).
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from aiohttp import web

from .entra import EntraFake

__all__ = ["DataverseFake"]

OVERSIZED_BYTES = 2 * 1024 * 1024


class DataverseFake(EntraFake):
    """Entra token endpoint + Dataverse ``WhoAmI``; see the module docstring."""

    SCENARIOS: ClassVar[frozenset[str]] = EntraFake.SCENARIOS | {
        "oversized",
        "no_app_user",
        "org_not_found",
    }
    RESOURCE_MISSING_SCENARIOS: ClassVar[frozenset[str]] = frozenset(
        {"unknown_resource", "not_found"}
    )
    throttle_retry_after_s: int = 37
    """``Retry-After`` of the 429 answer."""

    def __init__(self, *, tenant_id: str, client_id: str, client_secret: str) -> None:
        super().__init__(tenant_id=tenant_id, client_id=client_id, client_secret=client_secret)
        self.tenant_id = tenant_id.lower()
        self.application_users: dict[str, str] = {client_id: str(uuid.uuid4())}
        """Application users of the environment: client id → systemuserid."""
        self.organization_id = str(uuid.uuid4())
        self.business_unit_id = str(uuid.uuid4())
        self.app.router.add_get("/api/data/v9.2/WhoAmI", self._who_am_i)

    def known_resources(self, request: web.Request) -> set[str]:
        """The environment is this server: its origin is the only resource."""
        return {str(request.url.origin())}

    def _api_error(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(
            {"error": {"code": code, "message": message}}, status=status, headers=headers
        )

    async def _misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        if self.scenario == "rate_limited":
            return self._api_error(
                429,
                "0x80072322",
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                headers={"Retry-After": str(self.throttle_retry_after_s)},
            )
        if self.scenario == "server_error":
            return self._api_error(
                503,
                "0x80040216",
                "An unexpected error occurred.",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "garbage":
            return web.Response(
                text="<html><body>Your environment is being updated</body></html>",
                content_type="text/html",
            )
        if self.scenario == "oversized":
            return web.Response(
                body=b'{"UserId":"' + b"x" * OVERSIZED_BYTES + b'"}',
                content_type="application/json",
            )
        if self.scenario == "org_not_found":
            return self._api_error(
                404, "0x80060888", "Resource not found for the segment 'WhoAmI'."
            )
        return await self.generic_misbehaviour(request)

    async def _who_am_i(self, request: web.Request) -> web.StreamResponse:
        answer = await self._misbehaviour(request)
        if answer is not None:
            return answer
        token = self.bearer(request)
        origin = str(request.url.origin()).lower()
        if token is None or token.resource != origin or token.tenant != self.tenant_id:
            return web.Response(
                status=401,
                headers={
                    "WWW-Authenticate": "Bearer authorization_uri="
                    f"https://login.microsoftonline.com/{self.tenant_id}/oauth2/authorize, "
                    f"resource_id={origin}"
                },
            )
        user = self.application_users.get(token.client_id)
        if user is None or self.scenario == "no_app_user":
            return self._api_error(
                403, "0x80072560", "The user is not a member of the organization."
            )
        return web.json_response(
            {
                "@odata.context": f"{origin}/api/data/v9.2/"
                "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.business_unit_id,
                "UserId": user,
                "OrganizationId": self.organization_id,
            },
            headers={"x-ms-service-request-id": str(uuid.uuid4())},
        )
