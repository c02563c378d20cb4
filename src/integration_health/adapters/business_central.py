"""Microsoft Dynamics 365 Business Central (online), API v2.0, with an Entra ID app.

Credentials: Entra client credentials (``POST {authority_url}/{tenant_id}/oauth2/v2.0/token``,
scope ``https://api.businesscentral.dynamics.com/.default``), through the shared
:mod:`~integration_health.adapters._oauth` helper; the token (≈ 1 h) is cached per credential.

Probe (cheapest known; one call proves the token, the app's registration in BC, the
environment and a company)::

    GET {base_url}/v2.0/{tenant_id}/{environment}/api/v2.0/companies?$top=1&$select=id,name

or ``…/companies({company_id})?$select=id,name`` when ``company_id`` is configured, with
``Authorization: Bearer …`` and ``Data-Access-Intent: ReadOnly`` (served from a read replica).

Request cost per check: **1** API call, plus **1** token request about once an hour (when the
cached token is within a minute of expiry). A cached token that BC refuses with 401 is dropped
and the call repeated **once** with a fresh token. The calls count against BC's limit of 6 000
requests per 5 minutes per service principal, which the customer's real integration shares:
at the default 15-minute interval the monitor uses 4 of them per hour.

==================================================================  ===========  ============
observation                                                          status       error_code
==================================================================  ===========  ============
200 with a company (the configured one, if set)                      healthy      —
Entra: AADSTS7000215 / 7000222 / 700016, ``invalid_client`` …        unreachable  auth
Entra: AADSTS90002 (tenant not found)                                unreachable  not_found
401 again after a fresh token (``Authentication_InvalidCredentials``:
app not registered/enabled in BC), 403                               unreachable  auth
404 / ``EnvironmentNotFound``; ``Internal_TenantUnavailable``        unreachable  not_found
``Internal_CompanyNotFound``, ``BadRequest_ResourceNotFound``,
``BadRequest_NotFound`` (configured company missing); empty list     unreachable  not_found
429 (``Retry-After`` kept as ``retry_after_s`` when sent)            degraded     rate_limited
5xx (502/503 ``Retry-After`` kept as ``retry_after_s``)              unreachable  server_error
answer without the expected JSON, another status                     unreachable  bad_response
==================================================================  ===========  ============

``details`` carries ``http_status``, ``phases``, ``environment``, ``company_id`` and
``company_name`` (of the company that answered), ``vendor_code`` and ``correlation_id`` of an
OData error, ``token_renewed`` when a refused cached token was replaced, and ``stage="token"``
plus Entra's ``aadsts``/``trace_id`` when the token request failed.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal
from urllib.parse import quote
from uuid import UUID

from pydantic import SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure
from ._http import HttpClient, HttpResponse
from ._oauth import ClientCredentials, OAuthClient, TokenRequestFailed
from ._results import parse_retry_after, result_for_exception, vendor_failure
from ._tokens import Token

__all__ = ["ADAPTER", "BusinessCentralCheck", "BusinessCentralConfig"]

SCOPE = "https://api.businesscentral.dynamics.com/.default"
"""The Business Central API's resource, whatever ``base_url`` points at."""
VENDOR_MESSAGE_MAX = 200

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,252}")
_ENVIRONMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}")
_CORRELATION = re.compile(r"CorrelationId:\s*([0-9a-fA-F-]{36})")

_COMPANY_NOT_FOUND = frozenset(
    {"Internal_CompanyNotFound", "BadRequest_ResourceNotFound", "BadRequest_NotFound"}
)


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://", "${")):
        raise ValueError("must be an http:// or https:// URL")
    return value


class BusinessCentralConfig(IntegrationConfigBase):
    """A Business Central environment (and optionally one company) reached by an Entra app."""

    integration_type: Literal["business_central"] = "business_central"
    tenant_id: str
    """The customer's Entra tenant: its GUID or a domain such as ``contoso.onmicrosoft.com``."""
    environment: str
    """The Business Central environment name, e.g. ``Production`` or ``Sandbox``."""
    client_id: str
    """The Entra app (client) id registered in Business Central."""
    client_secret: SecretStr
    """The app's client secret (a ``${VAR}`` or ``${file:…}`` reference)."""
    company_id: UUID | None = None
    """Check this company (``companies({id})``); unset = any company of the environment."""
    base_url: str = "https://api.businesscentral.dynamics.com"
    """The API host; the probe reads ``{base_url}/v2.0/{tenant_id}/{environment}/api/v2.0/…``."""
    authority_url: str = "https://login.microsoftonline.com"
    """Entra's authority; the token comes from ``{authority_url}/{tenant_id}/oauth2/v2.0/token``."""

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        value = value.strip()
        if "${" not in value and not _TENANT.fullmatch(value):
            raise ValueError("must be the tenant's GUID or domain (letters, digits, '.' and '-')")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        value = value.strip()
        if "${" not in value and not _ENVIRONMENT.fullmatch(value):
            raise ValueError(
                "must be an environment name such as Production (letters, digits, '-' and '_')"
            )
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("base_url", "authority_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return _http_url(value)


def odata_error(response: HttpResponse) -> tuple[str | None, str, dict[str, Any]]:
    """``(code, message excerpt, details)`` of an OData ``{"error": {"code", "message"}}`` body."""
    info: dict[str, Any] = {}
    try:
        body = response.json()
    except ProbeFailure:
        return None, "", info
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, "", info
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    assert isinstance(message, str)
    if code:
        info["vendor_code"] = code[:100]
    match = _CORRELATION.search(message)
    if match:
        info["correlation_id"] = match.group(1)
    message = _CORRELATION.sub("", message).strip().rstrip(".").strip()
    return code, message[:VENDOR_MESSAGE_MAX], info


class BusinessCentralCheck:
    """Cached Entra token, then one read of the companies of the environment."""

    integration_type = "business_central"

    def __init__(self, context: CheckContext) -> None:
        self._context = context
        self._oauth = OAuthClient(context)

    @property
    def _http(self) -> HttpClient:
        return self._context.http

    async def check(self, org_id: UUID, config: BusinessCentralConfig) -> HealthResult:
        """One ``companies`` read with the cached token (see the module docstring)."""
        details: dict[str, Any] = {"environment": config.environment}
        started = time.monotonic()
        try:
            answer = await self._oauth.send(
                self._credentials(config), lambda token: self._companies(config, token)
            )
        except TokenRequestFailed as failure:
            return failure.to_result((time.monotonic() - started) * 1000, details)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            return result_for_exception(exc, started, details)
        response = answer.response
        if answer.token_renewed:
            details["token_renewed"] = True
        details.update(http_status=response.status, phases=response.phases)
        latency = (time.monotonic() - started) * 1000
        if response.status == 200:
            try:
                return self._judge_companies(config, response, latency, details)
            except ProbeFailure as failure:  # not JSON
                return HealthResult.unreachable(
                    failure.code,
                    "Business Central answered HTTP 200 without JSON: is base_url the Business "
                    "Central API?",
                    latency,
                    details=details,
                )
        return self._judge_error(config, response, latency, details)

    async def warm_up(self, org_id: UUID, config: BusinessCentralConfig) -> None:
        """Fetch the Entra token ahead of a slot (a no-op while the cached one is fresh)."""
        await self._oauth.token(self._credentials(config))

    def _credentials(self, config: BusinessCentralConfig) -> ClientCredentials:
        return ClientCredentials.entra(
            authority_url=config.authority_url,
            tenant_id=config.tenant_id,
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            scope=SCOPE,
        )

    async def _companies(self, config: BusinessCentralConfig, token: Token) -> HttpResponse:
        tenant = quote(config.tenant_id, safe="")
        environment = quote(config.environment, safe="")
        url = f"{config.base_url}/v2.0/{tenant}/{environment}/api/v2.0/companies"
        params = {"$select": "id,name"}
        if config.company_id is not None:
            url += f"({config.company_id})"
        else:
            params["$top"] = "1"
        return await self._http.request(
            "GET",
            url,
            params=params,
            headers={
                "Authorization": f"Bearer {token.value}",
                "Accept": "application/json",
                "Data-Access-Intent": "ReadOnly",
            },
        )

    def _judge_companies(
        self,
        config: BusinessCentralConfig,
        response: HttpResponse,
        latency: float,
        details: dict[str, Any],
    ) -> HealthResult:
        body = response.json()
        if config.company_id is None:
            values = body.get("value") if isinstance(body, dict) else None
            if not isinstance(values, list):
                return HealthResult.unreachable(
                    ErrorCode.BAD_RESPONSE,
                    "Business Central answered without a list of companies: is base_url the "
                    "Business Central API?",
                    latency,
                    details=details,
                )
            if not values:
                return HealthResult.unreachable(
                    ErrorCode.NOT_FOUND,
                    f"Environment '{config.environment}' has no company the app can see: create "
                    "a company or give the app access to one.",
                    latency,
                    details=details,
                )
            company = values[0]
        else:
            company = body
        company_id = company.get("id") if isinstance(company, dict) else None
        if not isinstance(company_id, str):
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                "Business Central answered without a company id: is base_url the Business "
                "Central API?",
                latency,
                details=details,
            )
        assert isinstance(company, dict)
        details["company_id"] = company_id[:100]
        if isinstance(company.get("name"), str):
            details["company_name"] = company["name"][:200]
        if config.company_id is not None and company_id.lower() != str(config.company_id):
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                f"Business Central answered with company {company_id[:100]} instead of the "
                f"configured {config.company_id}.",
                latency,
                details=details,
            )
        return HealthResult.healthy(latency, details=details)

    def _judge_error(
        self,
        config: BusinessCentralConfig,
        response: HttpResponse,
        latency: float,
        details: dict[str, Any],
    ) -> HealthResult:
        status = response.status
        code, message, info = odata_error(response)
        details.update(info)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None and (status == 429 or status >= 500):
            details["retry_after_s"] = retry_after
        said = f' Business Central says: "{message}".' if message else ""
        if code == "Internal_TenantUnavailable":
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"Business Central cannot reach tenant {config.tenant_id} "
                "(Internal_TenantUnavailable): check tenant_id and that the tenant has Business "
                "Central environments.",
                latency,
                details=details,
            )
        if code in _COMPANY_NOT_FOUND:
            if config.company_id is not None:
                return HealthResult.unreachable(
                    ErrorCode.NOT_FOUND,
                    f"Company {config.company_id} does not exist in environment "
                    f"'{config.environment}' ({code}): check company_id.",
                    latency,
                    details=details,
                )
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"Business Central found no such resource ({code}): check environment "
                f"'{config.environment}' and tenant_id.{said}",
                latency,
                details=details,
            )
        if status == 404:
            what = f"Environment '{config.environment}'"
            if config.company_id is not None and not code:
                what += f" or company {config.company_id}"
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"{what} was not found for tenant {config.tenant_id} ({code or 'HTTP 404'}): "
                "check the environment name (see the Business Central admin center)"
                + (" and company_id." if "company" in what else "."),
                latency,
                details=details,
            )
        if status == 401:
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"Business Central refused a fresh Entra token ({code or 'HTTP 401'}): register "
                f"app {config.client_id} on the 'Microsoft Entra Applications' page in Business "
                "Central, set it to Enabled and assign permission sets; also check that "
                "API.ReadWrite.All has admin consent.",
                latency,
                details=details,
            )
        if status == 403:
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"Business Central denied the app access (HTTP 403{', ' + code if code else ''}): "
                "assign it permission sets that can read companies.",
                latency,
                details=details,
            )
        return vendor_failure(
            response, latency, details=details, what="Business Central", said=said
        )


ADAPTER = Adapter(
    "business_central",
    BusinessCentralConfig,
    BusinessCentralCheck,
    description="Dynamics 365 Business Central API v2.0: cached Entra token, then GET companies.",
)
