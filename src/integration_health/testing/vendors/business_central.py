"""A fake Dynamics 365 Business Central API v2.0, with its Entra ID token endpoint.

One server plays both hosts (point ``authority_url`` and ``base_url`` at it):

- ``POST /{tenant}/oauth2/v2.0/token`` — :class:`~.entra.EntraFake` (client credentials; the
  only resource served is ``https://api.businesscentral.dynamics.com``);
- ``GET /v2.0/{tenant}/{environment}/api/v2.0/companies`` (``$top``, ``$select``) and
  ``…/companies({id})`` — company objects as in ``shared/vendors.md`` §2.

Requests are checked as Business Central does: a Bearer token issued by this fake, for the
BC resource and the tenant in the path, of an app registered in BC
(:attr:`BusinessCentralFake.registered_apps`), else **401**
``{"error": {"code": "Authentication_InvalidCredentials", "message": "The server has rejected
the client credentials.  CorrelationId:  …"}}`` [V body]. Unknown environment → 404
``EnvironmentNotFound``, unknown company → 404 ``BadRequest_NotFound`` (codes unverified;
vendors.md).

Scenarios (the API's; the token endpoint has :attr:`~.entra.EntraFake.token_scenario`): the
common ones — ``not_found`` makes the environment unknown, ``rate_limited`` is 429
``Application_TooManyRequests`` (``Retry-After`` only when
:attr:`BusinessCentralFake.rate_limit_retry_after_s` is set, since BC does not document it),
``server_error`` is 503 with ``Retry-After`` (documented for 502/503) —, the Entra credential
scenarios, and ``oversized`` (a 2 MiB answer), ``tenant_unavailable`` (503
``Internal_TenantUnavailable``), ``app_not_registered`` (valid token, app missing in BC: 401).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from aiohttp import web

from .entra import EntraFake

__all__ = ["BC_RESOURCE", "BusinessCentralFake"]

BC_RESOURCE = "https://api.businesscentral.dynamics.com"
OVERSIZED_BYTES = 2 * 1024 * 1024


class BusinessCentralFake(EntraFake):
    """Entra token endpoint + Business Central companies API; see the module docstring."""

    SCENARIOS: ClassVar[frozenset[str]] = EntraFake.SCENARIOS | {
        "oversized",
        "tenant_unavailable",
        "app_not_registered",
    }
    rate_limit_retry_after_s: int | None = None
    """``Retry-After`` of the 429 answer (none by default, as BC documents none)."""
    company_not_found_code = "BadRequest_NotFound"
    """OData code of the 404 for an unknown company id."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        environments: set[str] | None = None,
        companies: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            resources={BC_RESOURCE},
        )
        self.tenant_id = tenant_id.lower()
        self.environments: set[str] = set(environments or {"Production"})
        """Environment names (case-insensitive, as in BC)."""
        self.companies: dict[str, str] = (
            {"824820a2-508c-ed11-aada-000d3a298ab3": "CRONUS AS"}
            if companies is None
            else dict(companies)
        )
        """Companies of every environment: id → name."""
        self.registered_apps: set[str] = {client_id}
        """Client ids registered and enabled on BC's "Microsoft Entra Applications" page."""
        self.api_queries: list[dict[str, str]] = []
        """Query parameters of every API request, in order."""
        self.app.router.add_get("/v2.0/{tenant}/{environment}/api/v2.0/{entity}", self._api)

    # -- answers ------------------------------------------------------------------------------

    def _odata_error(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(
            {"error": {"code": code, "message": f"{message}  CorrelationId:  {uuid.uuid4()}."}},
            status=status,
            headers=headers,
        )

    def _company(self, company_id: str, fields: set[str] | None) -> dict[str, Any]:
        company: dict[str, Any] = {
            "@odata.etag": 'W/"JzQ0OzEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4Ow=="',
            "id": company_id,
            "systemVersion": "24.0.16410.18040",
            "timestamp": 12345,
            "name": self.companies[company_id],
            "displayName": self.companies[company_id],
            "businessProfileId": "",
            "systemCreatedAt": "2023-01-01T00:00:00Z",
            "systemCreatedBy": "00000000-0000-0000-0000-000000000001",
            "systemModifiedAt": "2023-01-01T00:00:00Z",
            "systemModifiedBy": "00000000-0000-0000-0000-000000000001",
        }
        if fields:
            company = {k: v for k, v in company.items() if k in fields or k == "@odata.etag"}
        return company

    async def _misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        if self.scenario == "server_error":
            return self._odata_error(
                503,
                "Unavailable",
                "The service is temporarily unavailable.",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "rate_limited":
            headers = {}
            if self.rate_limit_retry_after_s is not None:
                headers["Retry-After"] = str(self.rate_limit_retry_after_s)
            return self._odata_error(
                429,
                "Application_TooManyRequests",
                "Too many requests reached. Actual (6001). Maximum (6000).",
                headers=headers,
            )
        if self.scenario == "garbage":
            return web.Response(
                text="<html><body>Business Central is being updated</body></html>",
                content_type="text/html",
            )
        if self.scenario == "oversized":
            return web.Response(
                body=b'{"value":"' + b"x" * OVERSIZED_BYTES + b'"}',
                content_type="application/json",
            )
        return await self.generic_misbehaviour(request)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.api_queries.append(dict(request.query))
        answer = await self._misbehaviour(request)
        if answer is not None:
            return answer
        tenant = request.match_info["tenant"].lower()
        token = self.bearer(request)
        if (
            token is None
            or token.resource != BC_RESOURCE
            or token.tenant != tenant
            or token.client_id not in self.registered_apps
            or self.scenario == "app_not_registered"
        ):
            return web.json_response(
                {
                    "error": {
                        "code": "Authentication_InvalidCredentials",
                        "message": "The server has rejected the client credentials.  "
                        f"CorrelationId:  {uuid.uuid4()}.",
                    }
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
            )
        if self.scenario == "tenant_unavailable" or tenant != self.tenant_id:
            return self._odata_error(
                503,
                "Internal_TenantUnavailable",
                f"The tenant '{tenant}' is not accessible.",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        environment = request.match_info["environment"]
        known = {e.lower() for e in self.environments}
        if environment.lower() not in known or self.scenario == "not_found":
            return self._odata_error(
                404,
                "EnvironmentNotFound",
                f"Environment '{environment}' does not exist.",
            )
        base = f"{request.url.origin()}/v2.0/{tenant}/{environment}/api/v2.0"
        select = request.query.get("$select")
        fields = {f.strip() for f in select.split(",")} if select else None
        entity = request.match_info["entity"]
        if entity == "companies":
            ids = list(self.companies)
            top = request.query.get("$top")
            if top is not None:
                if not top.isdigit():
                    return self._odata_error(400, "BadRequest", f"Invalid value '{top}' for $top.")
                ids = ids[: int(top)]
            context = f"{base}/$metadata#companies" + (f"({select})" if select else "")
            return web.json_response(
                {
                    "@odata.context": context,
                    "value": [self._company(cid, fields) for cid in ids],
                }
            )
        if entity.startswith("companies(") and entity.endswith(")"):
            company_id = entity.removeprefix("companies(").removesuffix(")").lower()
            if company_id not in self.companies:
                return self._odata_error(
                    404,
                    self.company_not_found_code,
                    "The specified resource was not found.",
                )
            context = f"{base}/$metadata#companies" + (f"({select})" if select else "")
            return web.json_response(
                {"@odata.context": f"{context}/$entity", **self._company(company_id, fields)}
            )
        return self._odata_error(
            404, "BadRequest_NotFound", f"Resource not found for the segment '{entity}'."
        )
