"""Visma.net ERP (Financials), REST API at ``api.finance.visma.net`` via Visma Connect.

Auth: a Visma Connect *service integration* — client-credentials grant at
``https://connect.visma.com/connect/token`` with ``tenant_id`` (the **customer's** tenant id,
which holds the licence for its companies) and scope ``vismanet_erp_service_api:read``; the
tenant's administrator must have approved the integration. Tokens (1 hour) are cached by the
shared :mod:`~integration_health.adapters._oauth` helper, which also renews a cached token
that the API refuses (401) once per check.

Probe: one cheap authenticated ``GET`` — by default ``/v1/branch?pageNumber=1&pageSize=1``
(a small list every company has; Visma publishes no dedicated ping, so ``probe_path`` can
name another read). With ``company_id`` set, the company is chosen with the
``ipp-company-id`` header.

Request cost per check: **1** while the token is cached; **+1** token request about once an
hour; **+1** token request and repeat when a cached token is refused. Visma.net limits
requests per company+client per hour (policy ``4-fixed-window``, limit not published) and
reports the budget on every answer in ``X-RateLimit-Limit/Remaining/Reset/Policy``; those are
kept in ``details.rate_limit`` so the trend shows how much of the budget the sync uses.

==============================================================  ===========  ==============
observation                                                      status       error_code
==============================================================  ===========  ==============
probe 200 (JSON) or 204                                          healthy      —
token refused (``invalid_client``, ``invalid_grant`` — tenant    unreachable  auth
not approved, 400/401/403)
token ``invalid_scope`` / ``invalid_request``                    unreachable  config_invalid
probe 401 with a fresh token, or 403                             unreachable  auth
"No license for this company" (IPP fault 12027)                  unreachable  not_found
probe 404 (``base_url``/``probe_path`` wrong)                    unreachable  not_found
429 (``retry_after_s`` from ``Retry-After``, else                degraded     rate_limited
``X-RateLimit-Reset``)
5xx (``Retry-After`` kept)                                       unreachable  server_error
another status                                                   unreachable  bad_response
==============================================================  ===========  ==============
"""

from __future__ import annotations

import time
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure
from ._http import HttpResponse
from ._oauth import ClientCredentials, OAuthClient, TokenRequestFailed
from ._results import parse_retry_after, result_for_exception, vendor_failure
from ._tokens import Token
from ._visma_connect import http_base_url, visma_error

__all__ = ["ADAPTER", "VismaNetCheck", "VismaNetConfig"]

NO_LICENSE_FAULT = "12027"
"""Visma.net's IPP fault code for "No license for this company."."""


class VismaNetConfig(IntegrationConfigBase):
    """A Visma.net ERP customer (tenant), optionally one of its companies."""

    integration_type: Literal["visma_net"] = "visma_net"
    client_id: str = Field(min_length=1, max_length=200)
    """The service integration's client id (Visma Developer Portal)."""
    client_secret: SecretStr
    """Its client secret (a ``${VAR}`` reference)."""
    tenant_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")
    """The customer's Visma Connect tenant id (the contract's, not a company's)."""
    company_id: str | None = Field(default=None, max_length=50, pattern=r"^[A-Za-z0-9-]+$")
    """Sent as ``ipp-company-id`` to pick one company of the tenant (optional)."""
    scope: str = Field(default="vismanet_erp_service_api:read", min_length=1, max_length=500)
    """Scopes requested with the token (read-only is enough for the probe)."""
    probe_path: str = Field(default="/v1/branch?pageNumber=1&pageSize=1", max_length=300)
    """The cheap authenticated read used as the probe (path and query under ``base_url``)."""
    base_url: str = "https://api.finance.visma.net"
    """The API host."""
    token_url: str = "https://connect.visma.com/connect/token"  # noqa: S105 - a URL
    """Visma Connect's token endpoint."""

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_base_url(value)

    @field_validator("probe_path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("/") or value.startswith("//") or "://" in value:
            raise ValueError("must be a path starting with '/', e.g. /v1/branch")
        if ".." in value.split("?", 1)[0].split("/"):
            raise ValueError("must not contain '..' segments")
        return value


def _rate_limit(response: HttpResponse) -> dict[str, Any]:
    """``X-RateLimit-*`` headers as numbers (and the policy name)."""
    found: dict[str, Any] = {}
    for header, name in (
        ("x-ratelimit-limit", "limit"),
        ("x-ratelimit-remaining", "remaining"),
        ("x-ratelimit-reset", "reset_s"),
    ):
        value = response.headers.get(header)
        if value is not None:
            try:
                found[name] = int(float(value))
            except ValueError:
                continue
    policy = response.headers.get("x-ratelimit-policy")
    if policy:
        found["policy"] = policy[:50]
    return found


class VismaNetCheck:
    """One cheap authenticated read with a cached Visma Connect token."""

    integration_type = "visma_net"

    def __init__(self, context: CheckContext) -> None:
        self._context = context
        self._oauth = OAuthClient(context)

    @staticmethod
    def _credentials(config: VismaNetConfig) -> ClientCredentials:
        return ClientCredentials(
            token_url=config.token_url,
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            scope=config.scope,
            extra_form={"tenant_id": config.tenant_id},
            provider="Visma Connect",
        )

    async def warm_up(self, org_id: UUID, config: VismaNetConfig) -> None:
        """Fetch the token before a slot if none is cached (failures surface in the check)."""
        await self._oauth.token(self._credentials(config))

    async def check(self, org_id: UUID, config: VismaNetConfig) -> HealthResult:
        """One ``GET {probe_path}`` (see the module docstring for the rest)."""
        details: dict[str, Any] = {}
        started = time.monotonic()
        credentials = self._credentials(config)
        headers = {"Accept": "application/json"}
        if config.company_id:
            headers["ipp-company-id"] = config.company_id

        async def read(token: Token) -> HttpResponse:
            return await self._context.http.request(
                "GET",
                f"{config.base_url}{config.probe_path}",
                headers={**headers, "Authorization": f"Bearer {token.value}"},
            )

        try:
            sent = await self._oauth.send(credentials, read)
        except TokenRequestFailed as failure:
            latency = (time.monotonic() - started) * 1000
            if failure.details.get("oauth_error") == "invalid_grant":
                failure = TokenRequestFailed(
                    ErrorCode.AUTH,
                    f"Visma Connect refused a token for tenant {config.tenant_id} "
                    "(invalid_grant): the tenant's administrator has not approved the "
                    "integration (or removed it), or tenant_id is not the customer's tenant id.",
                    details=failure.details,
                )
            return failure.to_result(latency, details)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            return result_for_exception(exc, started, details)
        latency = (time.monotonic() - started) * 1000
        response = sent.response
        details.update(http_status=response.status, phases=response.phases)
        rate_limit = _rate_limit(response)
        if rate_limit:
            details["rate_limit"] = rate_limit
        request_id = response.headers.get("ipp-request-id")
        if request_id:
            details["request_id"] = request_id[:100]
        if sent.token_renewed:
            details["token_renewed"] = True
        return self._judge(config, response, latency, details, rate_limit)

    def _judge(
        self,
        config: VismaNetConfig,
        response: HttpResponse,
        latency: float,
        details: dict[str, Any],
        rate_limit: dict[str, Any],
    ) -> HealthResult:
        status = response.status
        if status in (200, 204):
            if status == 200:
                try:
                    response.json()
                except ProbeFailure as failure:
                    return HealthResult.unreachable(
                        failure.code, failure.message, latency, details=details
                    )
            return HealthResult.healthy(latency, details=details)
        vendor, info = visma_error(response)
        details.update(info)
        if str(info.get("vendor_code")) == NO_LICENSE_FAULT or "no license for this company" in (
            str(info.get("vendor_message", "")).lower()
        ):
            which = f"company {config.company_id}" if config.company_id else "the tenant"
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"Visma.net has no licensed company for {which} (HTTP {status}): use the "
                "customer's tenant id (the contract's, not a company's) and check company_id."
                f"{vendor}",
                latency,
                details=details,
            )
        if status in (401, 403):
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"Visma.net refused the access token (HTTP {status}): check that the "
                "integration is approved for the tenant and has the ERP read scope."
                f"{vendor}",
                latency,
                details=details,
            )
        if status == 404:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"Visma.net has nothing at {config.probe_path} (HTTP 404): check base_url and "
                f"probe_path.{vendor}",
                latency,
                details=details,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None and "reset_s" in rate_limit:
                retry_after = parse_retry_after(str(rate_limit["reset_s"]))
            hint = ""
            if retry_after is not None:
                details["retry_after_s"] = retry_after
                hint = f" The window resets in {retry_after:g} s."
            return HealthResult.degraded(
                ErrorCode.RATE_LIMITED,
                "Visma.net is rate limiting this company and client (HTTP 429; an hourly "
                f"budget shared with the sync).{hint} Probes back off automatically.",
                latency,
                details=details,
            )
        return vendor_failure(response, latency, details=details, what="Visma.net", said=vendor)


ADAPTER = Adapter(
    "visma_net",
    VismaNetConfig,
    VismaNetCheck,
    description="Visma.net ERP: Visma Connect client credentials (tenant), one cheap GET.",
)
