"""Tripletex (Norway), REST API v2: a session token made from two tokens, then "who am I".

Tripletex issues a *consumer token* per integration and the customer creates an *employee
token* (possibly an accountant's). The two are exchanged for a *session token*
(``PUT /v2/token/session/:create?consumerToken=…&employeeToken=…&expirationDate=…``, no
auth), which is sent as HTTP Basic ``0:<sessionToken>`` — or ``<companyId>:<sessionToken>`` to
act in an accountant's client company.

Probe (cheapest known): ``GET /v2/token/session/>whoAmI?fields=companyId,employeeId`` with
the cached session. It proves the session (hence both tokens) and, with ``company_id`` set,
that the employee may log in to that client company.

Request cost per check:

- **1** (``>whoAmI``) while the session is cached — the normal case;
- **+1** (``:create``) about once a day: the session is created with ``expirationDate`` two
  days ahead and cached until the start of the next day in Norway, then renewed; a session
  the vendor rejects early (HTTP 401) is dropped and renewed once within the same check;
- **+1** (``GET /v2/company/>withLoginAccess``) only when Tripletex refuses the configured
  client company (HTTP 403), to tell "not one of your clients" from "no rights".

==============================================================  ===========  ==============
observation                                                      status       error_code
==============================================================  ===========  ==============
``>whoAmI`` 200 with ``companyId`` (and it is ``company_id``)    healthy      —
``:create`` 401/403/404/422 (consumer/employee token wrong)      unreachable  auth
``>whoAmI`` 401 again after a fresh session                      unreachable  auth
``>whoAmI`` 403 without ``company_id``                           unreachable  auth
``>whoAmI`` 403, ``company_id`` not in ``>withLoginAccess``      unreachable  not_found
``>whoAmI`` 403, ``company_id`` listed (employee lacks rights)   unreachable  auth
``>whoAmI`` 200 for another company than ``company_id``          unreachable  not_found
``>whoAmI`` 404 (``base_url`` is not the Tripletex API)          unreachable  not_found
429 (``Retry-After`` kept as ``retry_after_s``)                  degraded     rate_limited
5xx (``Retry-After`` kept)                                       unreachable  server_error
answer without the expected JSON, or another status              unreachable  bad_response
==============================================================  ===========  ==============

``details`` carries ``http_status``, ``phases``, Tripletex's ``request_id``
(``x-tlx-request-id``), ``company_id``/``employee_id`` and ``session_renewed`` when the session
was renewed during the check.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure
from ._http import HttpClient, HttpResponse, http_base_url
from ._results import result_for_exception, vendor_failure
from ._tokens import Token, TokenCache, credential_key

__all__ = ["ADAPTER", "TripletexCheck", "TripletexConfig"]

SESSION_DAYS_AHEAD = 2
"""``expirationDate`` is today (UTC) plus this many days."""
NORWAY_MAX_UTC_OFFSET = timedelta(hours=2)
"""Norway is UTC+1 or UTC+2: a date starts in Norway at most two hours before it does in UTC."""
VENDOR_MESSAGE_MAX = 200


class TripletexConfig(IntegrationConfigBase):
    """A Tripletex company reached with a consumer token and an employee token."""

    integration_type: Literal["tripletex"] = "tripletex"
    consumer_token: SecretStr
    """The integration's consumer token, issued by Tripletex (a ``${VAR}`` reference)."""
    employee_token: SecretStr
    """The customer's employee token (or an accountant's), created in Tripletex."""
    company_id: int | None = Field(default=None, gt=0)
    """An accountant's client company to act in (Basic user ``<company_id>``); unset = the
    employee's own company (Basic user ``0``)."""
    base_url: str = "https://tripletex.no"
    """Where the API lives; the adapter calls ``{base_url}/v2/…``. Test environment:
    ``https://api-test.tripletex.tech``."""

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        return http_base_url(value, api_suffix="/v2")


class _Rejected(Exception):
    """The vendor answered a request with something other than success."""

    def __init__(self, stage: str, response: HttpResponse) -> None:
        super().__init__(f"{stage}: HTTP {response.status}")
        self.stage = stage
        self.response = response


def _vendor_message(response: HttpResponse) -> tuple[str, dict[str, Any]]:
    """Tripletex's ``ApiError`` message (as `` Tripletex says: "…".``) and its ids."""
    info: dict[str, Any] = {}
    request_id = response.headers.get("x-tlx-request-id")
    message = ""
    try:
        body = response.json()
    except ProbeFailure:
        body = None
    if isinstance(body, dict):
        request_id = request_id or body.get("requestId")
        if body.get("code") is not None:
            info["vendor_code"] = body.get("code")
        text = body.get("message")
        if isinstance(text, str) and text.strip():
            message = f' Tripletex says: "{text.strip()[:VENDOR_MESSAGE_MAX]}".'
        validation = body.get("validationMessages")
        if isinstance(validation, list) and validation:
            fields = [v.get("field") for v in validation if isinstance(v, dict) and v.get("field")]
            if fields:
                info["invalid_fields"] = [str(f)[:50] for f in fields[:5]]
    if request_id:
        info["request_id"] = str(request_id)[:100]
    return message, info


def _session_valid_for_s(expiration: datetime, now: datetime) -> float:
    """Seconds the session stays valid, assuming it ends when ``expiration`` begins in Norway."""
    return (expiration - NORWAY_MAX_UTC_OFFSET - now).total_seconds()


class TripletexCheck:
    """Creates (and caches) a session, then asks Tripletex who we are."""

    integration_type = "tripletex"

    def __init__(self, context: CheckContext) -> None:
        self._context = context

    @property
    def _http(self) -> HttpClient:
        return self._context.http

    @property
    def _tokens(self) -> TokenCache:
        return self._context.tokens

    async def check(self, org_id: UUID, config: TripletexConfig) -> HealthResult:
        """One ``>whoAmI`` with the cached session (see the module docstring for the rest)."""
        details: dict[str, Any] = {}
        started = time.monotonic()
        try:
            return await self._probe(config, details, started)
        except _Rejected as rejected:
            latency = (time.monotonic() - started) * 1000
            return self._rejected(config, rejected, latency, details)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            return result_for_exception(exc, started, details)

    async def warm_up(self, org_id: UUID, config: TripletexConfig) -> None:
        """Create the session before a slot if none is cached (failures surface in the check)."""
        await self._tokens.get(self._key(config), lambda: self._create_session(config))

    # -- the probe ------------------------------------------------------------------------------

    @staticmethod
    def _key(config: TripletexConfig) -> str:
        return credential_key(
            "tripletex",
            config.base_url,
            config.consumer_token.get_secret_value(),
            config.employee_token.get_secret_value(),
        )

    async def _probe(
        self, config: TripletexConfig, details: dict[str, Any], started: float
    ) -> HealthResult:
        key = self._key(config)
        was_cached = self._tokens.peek(key) is not None
        session = await self._tokens.get(key, lambda: self._create_session(config))
        response = await self._who_am_i(config, session.value)
        if response.status == 401 and was_cached:
            # Expired or revoked before we expected: renew once, then judge.
            self._tokens.invalidate(key)
            session = await self._tokens.get(key, lambda: self._create_session(config))
            details["session_renewed"] = True
            response = await self._who_am_i(config, session.value)
        details.update(http_status=response.status, phases=response.phases)
        if response.status == 403 and config.company_id is not None:
            return await self._client_company_refused(config, session.value, details, started)
        if response.status != 200:
            raise _Rejected("whoAmI", response)
        value = response.json()
        value = value.get("value") if isinstance(value, dict) else None
        company = value.get("companyId") if isinstance(value, dict) else None
        if not isinstance(company, int):
            raise ProbeFailure(
                ErrorCode.BAD_RESPONSE,
                "Tripletex answered >whoAmI without a companyId: is base_url the Tripletex API?",
                details=details,
            )
        assert isinstance(value, dict)
        details["company_id"] = company
        if isinstance(value.get("employeeId"), int):
            details["employee_id"] = value["employeeId"]
        request_id = response.headers.get("x-tlx-request-id")
        if request_id:
            details["request_id"] = request_id[:100]
        latency = (time.monotonic() - started) * 1000
        if config.company_id is not None and company != config.company_id:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"Tripletex answered for company {company}, not the configured client company "
                f"{config.company_id}: check company_id.",
                latency,
                details=details,
            )
        return HealthResult.healthy(latency, details=details)

    async def _create_session(self, config: TripletexConfig) -> Token:
        now = datetime.now(UTC)
        expiration_date = now.date() + timedelta(days=SESSION_DAYS_AHEAD)
        response = await self._http.request(
            "PUT",
            f"{config.base_url}/v2/token/session/:create",
            params={
                "consumerToken": config.consumer_token.get_secret_value(),
                "employeeToken": config.employee_token.get_secret_value(),
                "expirationDate": expiration_date.isoformat(),
            },
            headers={"Accept": "application/json"},
        )
        if response.status != 200:
            raise _Rejected("session", response)
        body = response.json()
        value = body.get("value") if isinstance(body, dict) else None
        token = value.get("token") if isinstance(value, dict) else None
        if not isinstance(token, str) or not token:
            raise ProbeFailure(
                ErrorCode.BAD_RESPONSE,
                "Tripletex created no session token (the answer has no value.token): "
                "is base_url the Tripletex API?",
            )
        expires_at = datetime(
            expiration_date.year, expiration_date.month, expiration_date.day, tzinfo=UTC
        )
        return Token.lasting(token, _session_valid_for_s(expires_at, now))

    def _basic(self, user: int, session: str) -> dict[str, str]:
        credentials = base64.b64encode(f"{user}:{session}".encode()).decode("ascii")
        return {"Authorization": f"Basic {credentials}", "Accept": "application/json"}

    async def _who_am_i(self, config: TripletexConfig, session: str) -> HttpResponse:
        return await self._http.request(
            "GET",
            f"{config.base_url}/v2/token/session/%3EwhoAmI",
            params={"fields": "companyId,employeeId"},
            headers=self._basic(config.company_id or 0, session),
        )

    async def _client_company_refused(
        self,
        config: TripletexConfig,
        session: str,
        details: dict[str, Any],
        started: float,
    ) -> HealthResult:
        """``>whoAmI`` as the client company gave 403: is it one of the employee's clients?"""
        refused = details.get("http_status")
        response = await self._http.request(
            "GET",
            f"{config.base_url}/v2/company/%3EwithLoginAccess",
            params={"fields": "id,name", "count": "1000"},
            headers=self._basic(0, session),
        )
        latency = (time.monotonic() - started) * 1000
        if response.status != 200:
            raise _Rejected("withLoginAccess", response)
        body = response.json()
        values = body.get("values") if isinstance(body, dict) else None
        if not isinstance(values, list):
            raise ProbeFailure(
                ErrorCode.BAD_RESPONSE,
                "Tripletex listed the client companies in an unexpected form.",
                details=details,
            )
        ids = {item.get("id") for item in values if isinstance(item, dict)}
        details.update(http_status=refused, client_companies=len(ids))
        if config.company_id in ids:
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"Tripletex refused access to client company {config.company_id} although the "
                "employee token lists it (HTTP 403): give the employee access rights in that "
                "company.",
                latency,
                details=details,
            )
        return HealthResult.unreachable(
            ErrorCode.NOT_FOUND,
            f"Company {config.company_id} is not among the client companies this employee "
            "token can log in to: correct company_id, or ask the accountant to grant access.",
            latency,
            details=details,
        )

    # -- mapping answers to results -------------------------------------------------------------

    def _rejected(
        self,
        config: TripletexConfig,
        rejected: _Rejected,
        latency: float,
        details: dict[str, Any],
    ) -> HealthResult:
        response = rejected.response
        vendor, info = _vendor_message(response)
        details.update(info, http_status=response.status, phases=response.phases)
        status = response.status
        if rejected.stage == "session":
            details["stage"] = "session"
            if status == 404 and not info.get("request_id"):
                return HealthResult.unreachable(
                    ErrorCode.NOT_FOUND,
                    f"{config.base_url}/v2 does not look like the Tripletex API (HTTP 404 "
                    "without a Tripletex error body): check base_url.",
                    latency,
                    details=details,
                )
            if status in (401, 403, 404, 422):
                return HealthResult.unreachable(
                    ErrorCode.AUTH,
                    f"Tripletex refused to create a session (HTTP {status}): the consumer token "
                    "or the employee token is wrong, expired or revoked. Create a new employee "
                    f"token in Tripletex and update the reference.{vendor}",
                    latency,
                    details=details,
                )
        elif status in (401, 403):
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                f"Tripletex rejected a fresh session token (HTTP {status}): the employee token "
                f"may have been revoked or lost its rights; create a new one.{vendor}",
                latency,
                details=details,
            )
        elif status == 404:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"{config.base_url}/v2 does not look like the Tripletex API (HTTP 404 for "
                f">whoAmI): check base_url.{vendor}",
                latency,
                details=details,
            )
        return vendor_failure(
            response, latency, details=details, what="Tripletex", said=vendor, stage=rejected.stage
        )


ADAPTER = Adapter(
    "tripletex",
    TripletexConfig,
    TripletexCheck,
    description="Tripletex API v2: cached session token, then GET /v2/token/session/>whoAmI.",
)
