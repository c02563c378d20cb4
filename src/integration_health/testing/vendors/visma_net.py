"""A fake Visma.net ERP API (with Visma Connect's token endpoint on the same port).

``GET /v1/branch`` needs ``Authorization: Bearer <client-credentials token>`` with a
``vismanet_erp_service_api:*`` scope; an ``ipp-company-id`` header must name one of the
tenant's companies, else the IPP fault "No license for this company." (fault 12027, the form
Visma's knowledge base shows; its HTTP status is unverified, 403 here). Every answer carries
``X-RateLimit-Limit/Remaining/Reset/Policy`` (policy ``4-fixed-window``, an hourly budget
per company+client, really counted) and ``Ipp-Request-Id``; an exhausted budget is a 429
with ``Retry-After`` (Visma's current docs) — set :attr:`VismaNetFake.send_retry_after` to
``False`` for the older form with the reset only in ``X-RateLimit-Reset``.

Scenarios: the common ones plus ``oversized``. ``not_found`` answers the no-licence fault,
``rate_limited`` the 429, ``server_error`` a 503 with ``Retry-After``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS
from .visma_connect import VismaConnectFake

__all__ = ["VismaNetFake"]

OVERSIZED_BYTES = 2 * 1024 * 1024
SERVICE_SCOPES = frozenset(
    f"vismanet_erp_service_api:{verb}" for verb in ("create", "read", "update", "delete")
)


class VismaNetFake(VismaConnectFake):
    """Identity server + Visma.net API (serve with ``LocalServer``)."""

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS | {"oversized"}

    def __init__(
        self,
        *,
        client_id: str = "monitor-client",
        client_secret: str,
        tenant_id: str = "af1140c1-52e0-46c7-b684-df894d4b8a5a",
        companies: set[str] | None = None,
    ) -> None:
        super().__init__(
            client_id=client_id,
            client_secret=client_secret,
            tenants={tenant_id},
            scopes=SERVICE_SCOPES,
        )
        self.tenant_id = tenant_id
        self.companies: set[str] = {"1234567"} if companies is None else set(companies)
        """Company ids (``ipp-company-id``) the tenant holds a licence for."""
        self.hourly_limit = 1_000
        self.used: dict[str, int] = {}
        """Requests counted in the current hour, per company+client."""
        self.send_retry_after = True
        self.no_license_status = 403
        self.company_headers: list[str | None] = []
        self.app.router.add_get("/v1/branch", self._branch)

    def _rate_headers(self, remaining: int, reset: int) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.hourly_limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Policy": "4-fixed-window",
            "Ipp-Request-Id": str(uuid.uuid4()),
        }

    def _throttled(self, reset: int) -> web.Response:
        headers = self._rate_headers(0, reset)
        if self.send_retry_after:
            headers["Retry-After"] = str(reset)
        return web.json_response({"message": "Too many requests."}, status=429, headers=headers)

    async def generic_misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        """The common scenarios, in Visma.net's forms."""
        if self.scenario == "server_error":
            return web.json_response(
                {"message": "Service Unavailable"},
                status=503,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "rate_limited":
            return self._throttled(1_800)
        if self.scenario == "garbage":
            return web.Response(
                text="<html><body>Visma.net</body></html>", content_type="text/html"
            )
        if self.scenario == "oversized":
            return web.Response(
                body=b'[{"description":"' + b"x" * OVERSIZED_BYTES + b'"}]',
                content_type="application/json",
            )
        return await super().generic_misbehaviour(request)

    def _no_license(self) -> web.Response:
        body: dict[str, Any] = {
            "ExceptionType": "IPPException",
            "ExceptionMessage": "No license for this company.",
            "ExceptionFaultCode": "12027",
            "ExceptionMessageID": f"12027_{uuid.uuid4()}",
            "ExceptionDetails": "",
        }
        return web.json_response(body, status=self.no_license_status)

    async def _branch(self, request: web.Request) -> web.StreamResponse:
        answer = await self.generic_misbehaviour(request)
        if answer is not None:
            return answer
        issued = self.access_of(request)
        if issued is None or not issued.scopes & SERVICE_SCOPES:
            return web.json_response(
                {"message": "Authorization has been denied for this request."}, status=401
            )
        company = request.headers.get("ipp-company-id")
        self.company_headers.append(company)
        if self.scenario == "not_found" or (company is not None and company not in self.companies):
            return self._no_license()
        now = time.time()
        hour = int(now // 3600)
        reset = max(1, 3600 - int(now % 3600))
        window = f"{hour}:{company}:{issued.client_id}"
        self.used[window] = self.used.get(window, 0) + 1
        remaining = self.hourly_limit - self.used[window]
        if remaining < 0:
            return self._throttled(reset)
        return web.json_response(
            [{"number": "1", "name": "Main branch"}], headers=self._rate_headers(remaining, reset)
        )
