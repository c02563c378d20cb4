"""Fiken (Norway), REST API v2 with a personal API token — one request at a time per token.

Fiken allows **one concurrent request per user** (concurrent requests may get HTTP 429, and
abusers may be banned). Every call this adapter makes therefore holds the token's slot in
the registry's :class:`~integration_health.adapters._limits.CredentialLimits`
(``concurrency=1``, keyed by a hash of the token), so checks of any number of integrations
sharing a token queue instead of overlapping. Time spent waiting for the slot is reported as
``details.queued_ms`` and is not part of ``latency_ms``; it still counts against the check's
deadline.

Probe (cheapest known): ``GET /api/v2/companies/{company_slug}`` — one request proves the
token (401 otherwise), the company, and whether the company's API module is active
(``hasApiAccess``). Only when the company is refused (403/404) does the adapter spend a second
request, ``GET /api/v2/user``, to tell "the token is fine, the company is not visible to it"
(``not_found``) from "the token is not accepted" (``auth``).

Request cost per check: **1** normally; **2** when the company is refused.

============================================================  ===========  ==============
observation                                                    status       error_code
============================================================  ===========  ==============
company 200 with ``hasApiAccess: true``                        healthy      —
company 200 with ``hasApiAccess: false`` (no API module)       degraded     auth
401 (token revoked or mistyped)                                unreachable  auth
403/404 for the company and ``/user`` 200                      unreachable  not_found
403/404 for the company and ``/user`` 401/403                  unreachable  auth
429 (another request with the token was in flight)             degraded     rate_limited
5xx (``Retry-After`` kept as ``retry_after_s`` if sent)        unreachable  server_error
not a company object, or another status                        unreachable  bad_response
============================================================  ===========  ==============

``details`` carries ``http_status``, ``phases``, ``queued_ms``, the ``request_id`` sent as
``X-Request-ID`` (Fiken's recommendation), and ``company_name``/``test_company``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ._http import HttpClient, HttpResponse, http_base_url
from ._results import parse_retry_after, result_for_exception, vendor_failure
from ._tokens import credential_key

__all__ = ["ADAPTER", "FikenCheck", "FikenConfig"]


class FikenConfig(IntegrationConfigBase):
    """A Fiken company reached with a personal API token."""

    integration_type: Literal["fiken"] = "fiken"
    api_token: SecretStr
    """Personal API token (sent as ``Authorization: Bearer …``; a ``${VAR}`` reference).
    Fiken's personal tokens never expire but can be revoked in Fiken."""
    company_slug: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """The company's slug, as in ``https://fiken.no/foretak/<slug>`` (e.g. ``fiken-as``)."""
    base_url: str = "https://api.fiken.no"
    """Where the API lives; the adapter calls ``{base_url}/api/v2/…``."""

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        return http_base_url(value, api_suffix="/api/v2")


class FikenCheck:
    """Reads the company (one request), serialised per token."""

    integration_type = "fiken"

    def __init__(self, context: CheckContext) -> None:
        self._context = context

    @property
    def _http(self) -> HttpClient:
        return self._context.http

    async def check(self, org_id: UUID, config: FikenConfig) -> HealthResult:
        """Wait for the token's turn, then probe (see the module docstring)."""
        details: dict[str, Any] = {}
        queued = time.monotonic()
        key = credential_key("fiken", config.api_token.get_secret_value())
        async with self._context.limits.slot(key, concurrency=1):
            started = time.monotonic()
            details["queued_ms"] = round((started - queued) * 1000, 2)
            try:
                return await self._probe(config, details, started)
            except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
                return result_for_exception(exc, started, details)

    async def _get(self, config: FikenConfig, path: str) -> tuple[HttpResponse, str]:
        request_id = str(uuid.uuid4())
        response = await self._http.request(
            "GET",
            f"{config.base_url}/api/v2{path}",
            headers={
                "Authorization": f"Bearer {config.api_token.get_secret_value()}",
                "Accept": "application/json",
                "X-Request-ID": request_id,
            },
        )
        return response, request_id

    async def _probe(
        self, config: FikenConfig, details: dict[str, Any], started: float
    ) -> HealthResult:
        response, request_id = await self._get(config, f"/companies/{config.company_slug}")
        details.update(http_status=response.status, phases=response.phases, request_id=request_id)
        if response.status in (403, 404):
            return await self._company_refused(config, response.status, details, started)
        latency = (time.monotonic() - started) * 1000
        if response.status != 200:
            return self._error(response, latency, details)
        company = response.json()
        if not isinstance(company, dict) or not isinstance(company.get("hasApiAccess"), bool):
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                "Fiken answered without a company object (no hasApiAccess): is base_url the "
                "Fiken API?",
                latency,
                details=details,
            )
        if isinstance(company.get("name"), str):
            details["company_name"] = company["name"][:200]
        if isinstance(company.get("testCompany"), bool):
            details["test_company"] = company["testCompany"]
        if not company["hasApiAccess"]:
            return HealthResult.degraded(
                ErrorCode.AUTH,
                f"Fiken company '{config.company_slug}' has no API access (hasApiAccess=false): "
                "the company must activate Fiken's API module before integrations can use it.",
                latency,
                details=details,
            )
        return HealthResult.healthy(latency, details=details)

    async def _company_refused(
        self,
        config: FikenConfig,
        refused: int,
        details: dict[str, Any],
        started: float,
    ) -> HealthResult:
        """The company was refused: ask who the token belongs to, to name the real problem."""
        response, _ = await self._get(config, "/user")
        latency = (time.monotonic() - started) * 1000
        details["user_http_status"] = response.status
        if response.status == 200:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"Fiken has no company '{config.company_slug}' visible to this token (HTTP "
                f"{refused}); the token itself is valid. Check company_slug, or give the token's "
                "user access to the company.",
                latency,
                details=details,
            )
        if response.status in (401, 403):
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"Fiken rejected the API token (HTTP {response.status}): it was revoked or "
                "mistyped. Create a new personal API token in Fiken and update the reference.",
                latency,
                details=details,
            )
        return self._error(response, latency, details)

    def _error(
        self, response: HttpResponse, latency: float, details: dict[str, Any]
    ) -> HealthResult:
        status = response.status
        if status == 401:
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                "Fiken rejected the API token (HTTP 401): it was revoked or mistyped. Create a "
                "new personal API token in Fiken and update the reference.",
                latency,
                details=details,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            hint = ""
            if retry_after is not None:
                details["retry_after_s"] = retry_after
                hint = f" It asks us to wait {retry_after:g} s."
            return HealthResult.degraded(
                ErrorCode.RATE_LIMITED,
                "Fiken is rate limiting this token (HTTP 429). Fiken allows one request at a "
                "time per token: another client using the same token (e.g. the sync) was "
                f"probably busy.{hint} Probes back off automatically.",
                latency,
                details=details,
            )
        return vendor_failure(response, latency, details=details, what="Fiken")


ADAPTER = Adapter(
    "fiken",
    FikenConfig,
    FikenCheck,
    description="Fiken API v2: GET /companies/{slug} (hasApiAccess), one request at a time per "
    "token.",
)
