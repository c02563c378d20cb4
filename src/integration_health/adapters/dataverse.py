"""Dynamics 365 Customer Engagement / Dataverse Web API, with an Entra ID app.

Credentials: Entra client credentials (``POST {authority_url}/{tenant_id}/oauth2/v2.0/token``,
scope ``{environment_url}/.default``), through the shared
:mod:`~integration_health.adapters._oauth` helper; the token (≈ 1 h) is cached per credential.

Probe (the canonical "who am I"; it proves the environment URL, the token's audience and the
app's *application user* in that environment)::

    GET {environment_url}/api/data/v9.2/WhoAmI
    Authorization: Bearer …   Accept: application/json   OData-MaxVersion: 4.0

Request cost per check: **1** Web API call, plus **1** token request about once an hour. A
cached token refused with 401 is dropped and the call repeated **once** with a fresh one.
Dataverse's service protection limits (6 000 requests, 20 minutes of execution time and 52
concurrent requests per user per web server in a 5-minute window) are shared with the
customer's real integration when it uses the same app; one call per 15 minutes is negligible.

==============================================================  ===========  ==============
observation                                                      status       error_code
==============================================================  ===========  ==============
200 ``WhoAmIResponse`` with ``UserId``                           healthy      —
Entra: AADSTS7000215 / 7000222 / 700016, ``invalid_client`` …    unreachable  auth
Entra: AADSTS90002 (tenant), AADSTS500011 (no such environment   unreachable  not_found
resource in the tenant)
401 again after a fresh token                                    unreachable  auth
403 (no application user / no security role)                     unreachable  auth
404                                                              unreachable  not_found
429 (``Retry-After`` kept as ``retry_after_s``)                  degraded     rate_limited
5xx (``Retry-After`` kept as ``retry_after_s``)                  unreachable  server_error
answer without the expected JSON, another status                 unreachable  bad_response
==============================================================  ===========  ==============

``details`` carries ``http_status``, ``phases``, ``user_id``, ``organization_id`` and
``business_unit_id`` of the application user, ``vendor_code`` (Dataverse's hex code, e.g.
``0x80072322`` for the request-count limit) and ``request_id`` (``x-ms-service-request-id``),
``token_renewed`` when a refused cached token was replaced, and ``stage="token"`` plus
Entra's ``aadsts``/``trace_id`` when the token request failed.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal
from uuid import UUID

from pydantic import SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure
from ._http import HttpClient, HttpResponse, http_base_url
from ._oauth import ClientCredentials, OAuthClient, TokenRequestFailed
from ._results import parse_retry_after, result_for_exception, vendor_failure
from ._tokens import Token

__all__ = ["ADAPTER", "DataverseCheck", "DataverseConfig"]

API_PATH = "/api/data/v9.2/WhoAmI"
VENDOR_MESSAGE_MAX = 200
NO_APP_USER_CODES = frozenset({"0x80072560"})
"""Dataverse's "The user is not a member of the organization" (no application user)."""

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,252}")
_API_SUFFIX = re.compile(r"/api/data(/v\d+(\.\d+)?)?/?$", re.IGNORECASE)


class DataverseConfig(IntegrationConfigBase):
    """A Dataverse environment reached by an Entra app with an application user."""

    integration_type: Literal["dataverse"] = "dataverse"
    environment_url: str
    """The environment's URL, e.g. ``https://contoso.crm4.dynamics.com`` (a trailing
    ``/api/data/v9.2`` is tolerated and dropped). Also the token's audience."""
    tenant_id: str
    """The customer's Entra tenant: its GUID or a domain such as ``contoso.onmicrosoft.com``."""
    client_id: str
    """The Entra app (client) id of the application user."""
    client_secret: SecretStr
    """The app's client secret (a ``${VAR}`` or ``${file:…}`` reference)."""
    authority_url: str = "https://login.microsoftonline.com"
    """Entra's authority; the token comes from ``{authority_url}/{tenant_id}/oauth2/v2.0/token``."""

    @field_validator("environment_url", "authority_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return http_base_url(value, api_suffix=_API_SUFFIX)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        value = value.strip()
        if "${" not in value and not _TENANT.fullmatch(value):
            raise ValueError("must be the tenant's GUID or domain (letters, digits, '.' and '-')")
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value


def _vendor_error(response: HttpResponse) -> tuple[str | None, str]:
    """Dataverse's ``{"error": {"code", "message"}}``: ``(code, message excerpt)``."""
    try:
        body = response.json()
    except ProbeFailure:
        return None, ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code")
    message = error.get("message")
    return (
        code[:100] if isinstance(code, str) and code else None,
        message.strip()[:VENDOR_MESSAGE_MAX] if isinstance(message, str) else "",
    )


class DataverseCheck:
    """Cached Entra token, then ``WhoAmI``."""

    integration_type = "dataverse"

    def __init__(self, context: CheckContext) -> None:
        self._context = context
        self._oauth = OAuthClient(context)

    @property
    def _http(self) -> HttpClient:
        return self._context.http

    async def check(self, org_id: UUID, config: DataverseConfig) -> HealthResult:
        """One ``WhoAmI`` with the cached token (see the module docstring)."""
        details: dict[str, Any] = {}
        started = time.monotonic()
        try:
            answer = await self._oauth.send(
                self._credentials(config), lambda token: self._who_am_i(config, token)
            )
        except TokenRequestFailed as failure:
            return failure.to_result((time.monotonic() - started) * 1000, details)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            return result_for_exception(exc, started, details)
        response = answer.response
        if answer.token_renewed:
            details["token_renewed"] = True
        details.update(http_status=response.status, phases=response.phases)
        request_id = response.headers.get("x-ms-service-request-id")
        if request_id:
            details["request_id"] = request_id[:100]
        latency = (time.monotonic() - started) * 1000
        if response.status == 200:
            return self._judge_who_am_i(response, latency, details)
        return self._judge_error(config, response, latency, details)

    async def warm_up(self, org_id: UUID, config: DataverseConfig) -> None:
        """Fetch the Entra token ahead of a slot (a no-op while the cached one is fresh)."""
        await self._oauth.token(self._credentials(config))

    def _credentials(self, config: DataverseConfig) -> ClientCredentials:
        return ClientCredentials.entra(
            authority_url=config.authority_url,
            tenant_id=config.tenant_id,
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            scope=f"{config.environment_url}/.default",
        )

    async def _who_am_i(self, config: DataverseConfig, token: Token) -> HttpResponse:
        return await self._http.request(
            "GET",
            f"{config.environment_url}{API_PATH}",
            headers={
                "Authorization": f"Bearer {token.value}",
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
            },
        )

    def _judge_who_am_i(
        self, response: HttpResponse, latency: float, details: dict[str, Any]
    ) -> HealthResult:
        try:
            body = response.json()
        except ProbeFailure:
            body = None
        user = body.get("UserId") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user:
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                "Dataverse answered WhoAmI without a UserId: is environment_url a Dataverse "
                "environment?",
                latency,
                details=details,
            )
        assert isinstance(body, dict)
        details["user_id"] = user[:100]
        for field, key in (
            ("OrganizationId", "organization_id"),
            ("BusinessUnitId", "business_unit_id"),
        ):
            if isinstance(body.get(field), str):
                details[key] = body[field][:100]
        return HealthResult.healthy(latency, details=details)

    def _judge_error(
        self,
        config: DataverseConfig,
        response: HttpResponse,
        latency: float,
        details: dict[str, Any],
    ) -> HealthResult:
        status = response.status
        code, message = _vendor_error(response)
        if code:
            details["vendor_code"] = code
        said = f' Dataverse says: "{message}".' if message else ""
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None and (status == 429 or status >= 500):
            details["retry_after_s"] = retry_after
        if status == 401:
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                "Dataverse refused a fresh Entra token (HTTP 401): check that environment_url "
                "and tenant_id name the same environment and tenant.",
                latency,
                details=details,
            )
        if status == 403:
            what = (
                f"App {config.client_id} has no application user in this environment"
                if code in NO_APP_USER_CODES
                else f"Dataverse denied app {config.client_id} access"
            )
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"{what} (HTTP 403{', ' + code if code else ''}): create an application user "
                "for it with a security role in the Power Platform admin center.",
                latency,
                details=details,
            )
        if status == 404:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"{config.environment_url} does not serve the Dataverse Web API v9.2 "
                f"(HTTP 404): check environment_url.{said}",
                latency,
                details=details,
            )
        return vendor_failure(response, latency, details=details, what="Dataverse", said=said)


ADAPTER = Adapter(
    "dataverse",
    DataverseConfig,
    DataverseCheck,
    description="Dynamics 365 CE / Dataverse Web API: cached Entra token, then GET WhoAmI.",
)
