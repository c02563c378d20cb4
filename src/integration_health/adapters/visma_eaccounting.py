"""Visma eAccounting (Bookkeeping & Invoicing; Spiris in Sweden), REST API v2.

Auth: Visma's identity server (``identity.vismaonline.com``) with the **refresh-token grant**
of a server-side authorization-code integration (scopes ``ea:api offline_access`` and a read
scope). Access tokens live one hour and are cached; refresh tokens are single use and rotate
on every refresh — see :mod:`~integration_health.adapters._visma_connect` for how the newest
one is kept (in memory, and in ``refresh_token_file`` if set). Give the monitor its own
authorisation: refreshing the sync system's token would cancel the sync system's copy.

Probe (cheapest known): ``GET /v2/companysettings`` — the company the authorising user
connected (name, organisation number); it proves token, scope and company in one request.

Request cost per check: **1** while the access token is cached; **+1** refresh about once an
hour; **+1** refresh and repeat when a cached access token is refused (401).

Rate limit: 600 requests per minute per client and endpoint; a 429 carries
``{"ErrorCode": 4010, "DeveloperErrorMessage": "… Try again in 55 seconds.", …}``, whose
seconds become ``retry_after_s`` (a ``Retry-After`` header wins if Visma sends one).

==============================================================  ===========  ==============
observation                                                      status       error_code
==============================================================  ===========  ==============
``companysettings`` 200 with a company object                    healthy      —
refresh refused: ``invalid_grant`` (token spent/revoked),        unreachable  auth
``invalid_client``, 400/401/403
refresh 429                                                      degraded     rate_limited
refresh 5xx / 404 (token URL)                                    unreachable  server_error /
                                                                              not_found
``companysettings`` 401 with a fresh token, or 403               unreachable  auth
``companysettings`` 404 (``base_url`` is not the API)            unreachable  not_found
429 (``Try again in N seconds`` → ``retry_after_s``)             degraded     rate_limited
5xx (``Retry-After`` kept)                                       unreachable  server_error
rotated refresh token could not be saved to the file             degraded     config_invalid
not a company object, or another status                          unreachable  bad_response
==============================================================  ===========  ==============

``details`` carries ``http_status``, ``phases``, ``company_name``, Visma's ``error_id`` /
``vendor_code`` / ``vendor_message`` on failures, ``token_renewed`` and, for token failures,
``stage="token"`` and ``oauth_error``.
"""

from __future__ import annotations

import time
from pathlib import PurePath
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult, HealthStatus
from ..transport_errors import ProbeFailure
from ._http import HttpResponse
from ._oauth import TokenRequestFailed
from ._results import parse_retry_after, result_for_exception, vendor_failure
from ._tokens import Token
from ._visma_connect import (
    RefreshTokenClient,
    RefreshTokenGrant,
    http_base_url,
    retry_after_in_text,
    visma_error,
)

__all__ = ["ADAPTER", "VismaEAccountingCheck", "VismaEAccountingConfig"]


class VismaEAccountingConfig(IntegrationConfigBase):
    """A Visma eAccounting company reached through the monitor's own refresh token."""

    integration_type: Literal["visma_eaccounting"] = "visma_eaccounting"
    client_id: str = Field(min_length=1, max_length=200)
    """The integration's client id from the Visma Developer Portal."""
    client_secret: SecretStr
    """Its client secret (a ``${VAR}`` reference)."""
    refresh_token: SecretStr
    """A refresh token from authorising the monitor (scopes ``ea:api offline_access`` and a
    read scope), as a reference. Single use: the adapter keeps its rotated successors."""
    refresh_token_file: str | None = None
    """Absolute path of a file (mode 0600) where the newest refresh token is kept across
    restarts; without it a restart needs a new authorisation once the first token is spent."""
    base_url: str = "https://eaccountingapi.vismaonline.com"
    """The API host; the probe is ``{base_url}/v2/companysettings``. Sandbox:
    ``https://eaccountingapi-sandbox.test.vismaonline.com``."""
    token_url: str = "https://identity.vismaonline.com/connect/token"  # noqa: S105 - a URL
    """The token endpoint. Sandbox:
    ``https://identity-sandbox.test.vismaonline.com/connect/token``."""

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_base_url(value, api_suffix="/v2")

    @field_validator("refresh_token_file")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.startswith("${"):
            return value  # resolved at check time, then validated again
        if not PurePath(value).is_absolute() or "\x00" in value:
            raise ValueError("must be an absolute file path")
        return value


class VismaEAccountingCheck:
    """Reads ``companysettings`` with a cached access token."""

    integration_type = "visma_eaccounting"

    def __init__(self, context: CheckContext) -> None:
        self._context = context
        self._grants = RefreshTokenClient(lambda: context.http, lambda: context.tokens)

    @staticmethod
    def _grant(config: VismaEAccountingConfig) -> RefreshTokenGrant:
        return RefreshTokenGrant(
            token_url=config.token_url,
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            refresh_token=config.refresh_token.get_secret_value(),
            store_path=config.refresh_token_file,
            provider="Visma",
        )

    async def warm_up(self, org_id: UUID, config: VismaEAccountingConfig) -> None:
        """Refresh the access token before a slot if none is cached (errors surface later)."""
        await self._grants.token(self._grant(config))

    async def check(self, org_id: UUID, config: VismaEAccountingConfig) -> HealthResult:
        """One ``GET /v2/companysettings`` (see the module docstring for the rest)."""
        details: dict[str, Any] = {}
        started = time.monotonic()
        grant = self._grant(config)

        async def read(token: Token) -> HttpResponse:
            return await self._context.http.request(
                "GET",
                f"{config.base_url}/v2/companysettings",
                headers={"Authorization": f"Bearer {token.value}", "Accept": "application/json"},
            )

        try:
            sent = await self._grants.send(grant, read)
        except TokenRequestFailed as failure:
            return failure.to_result((time.monotonic() - started) * 1000, details)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            return result_for_exception(exc, started, details)
        latency = (time.monotonic() - started) * 1000
        response = sent.response
        details.update(http_status=response.status, phases=response.phases)
        if sent.token_renewed:
            details["token_renewed"] = True
        result = self._judge(response, latency, details)
        store_error = self._grants.store_errors.get(grant.grant_key)
        if store_error is not None and result.status is HealthStatus.HEALTHY:
            return HealthResult.degraded(
                ErrorCode.CONFIG_INVALID,
                f"The rotated refresh token could not be saved to {config.refresh_token_file} "
                f"({store_error}): the API works now, but after a restart the monitor will need "
                "a new authorisation. Fix the file's directory or permissions.",
                latency,
                details={**result.details, "refresh_token_file_error": store_error},
            )
        return result

    def _judge(
        self, response: HttpResponse, latency: float, details: dict[str, Any]
    ) -> HealthResult:
        status = response.status
        if status == 200:
            try:
                company = response.json()
            except ProbeFailure as failure:
                return HealthResult.unreachable(
                    failure.code, failure.message, latency, details=details
                )
            if not isinstance(company, dict) or not isinstance(company.get("Name"), str):
                return HealthResult.unreachable(
                    ErrorCode.BAD_RESPONSE,
                    "Visma eAccounting answered without company settings (no Name): is base_url "
                    "the eAccounting API?",
                    latency,
                    details=details,
                )
            details["company_name"] = company["Name"][:200]
            return HealthResult.healthy(latency, details=details)
        vendor, info = visma_error(response)
        details.update(info)
        if status in (401, 403):
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"Visma eAccounting refused the access token (HTTP {status}): the authorisation "
                "was revoked or lacks the ea:api scope or access to the company; authorise the "
                f"monitor again and update refresh_token.{vendor}",
                latency,
                details=details,
            )
        if status == 404:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                "Visma eAccounting has no /v2/companysettings at base_url (HTTP 404): check "
                f"base_url.{vendor}",
                latency,
                details=details,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None:
                retry_after = retry_after_in_text(str(info.get("vendor_message", "")))
            hint = f" Visma asks us to wait {retry_after:g} s." if retry_after is not None else ""
            if retry_after is not None:
                details["retry_after_s"] = retry_after
            return HealthResult.degraded(
                ErrorCode.RATE_LIMITED,
                "Visma eAccounting is rate limiting this client (HTTP 429; 600 requests per "
                f"minute per client and endpoint, shared with the sync).{hint} Probes back off "
                "automatically.",
                latency,
                details=details,
            )
        return vendor_failure(
            response, latency, details=details, what="Visma eAccounting", said=vendor
        )


ADAPTER = Adapter(
    "visma_eaccounting",
    VismaEAccountingConfig,
    VismaEAccountingCheck,
    description="Visma eAccounting API v2: rotating refresh-token grant, GET /v2/companysettings.",
)
