"""PowerOffice Go (Norway), API v2, with the integration's application/client/subscription keys.

Credentials: OAuth 2.0 client credentials at ``POST {base_url}/OAuth/Token`` with
``Authorization: Basic base64(application_key:client_key)``, ``Ocp-Apim-Subscription-Key``
and the form ``grant_type=client_credentials`` (through the shared
:mod:`~integration_health.adapters._oauth` helper). Tokens live 20 minutes and are cached per
credential.

Probe (purpose-built, needs no privilege, proves the keys and the client)::

    GET {base_url}/v2/ClientIntegrationInformation
    Authorization: Bearer …   Ocp-Apim-Subscription-Key: …
    → {"ClientId", "ClientName", "ActiveClientSubscriptions",
       "ValidPrivileges", "InvalidPrivileges"}

``base_url`` is ``https://goapi.poweroffice.net`` (production) or
``https://goapi.poweroffice.net/Demo`` (demo; keys cannot be mixed between the two).

**Request cost and pacing.** A check makes **1** API call plus **1** token request whenever
the cached token has expired — at this type's floor and default interval of **1 800 s** that
is every check, so **2 requests per check**, 4 per hour per client. PowerOffice watches for
unnecessary polling, and its limit of **10 requests per second per subscription key** is shared
by *every* client using that key (all customers of the integration, and the real sync
traffic). Every request of the monitor is therefore paced through
``context.limits.rate(...)`` keyed on the subscription key (never the client key), at most
:data:`REQUESTS_PER_SECOND` (5) evenly spaced — half the vendor's limit, leaving the rest to
the sync system. A check waiting for its turn spends its own deadline (the wait is reported
as ``details.queued_ms`` and not counted as vendor latency).

==================================================================  ===========  ============
observation                                                          status       error_code
==================================================================  ===========  ============
200, ``InvalidPrivileges`` empty                                     healthy      —
200, ``InvalidPrivileges`` non-empty (the error lists them)          degraded     auth
token refused (``invalid_client``, 400/401: wrong application or
client key, integration deactivated; missing/invalid subscription
key)                                                                 unreachable  auth
401 again after a fresh token; 403                                   unreachable  auth
404 (no PowerOffice API at ``base_url``)                             unreachable  not_found
429 (``Retry-After``, else "Try again in N seconds", kept)           degraded     rate_limited
5xx (``Retry-After`` kept)                                           unreachable  server_error
answer without the expected JSON, another status                     unreachable  bad_response
==================================================================  ===========  ============

``details`` carries ``http_status``, ``phases``, ``queued_ms``, ``client_id``, ``client_name``,
``active_subscriptions``, ``invalid_privileges``, ``token_renewed`` and, for token
failures, ``stage="token"`` with ``oauth_error``/``provider_message``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure, classify_exception
from ._http import HttpClient, HttpResponse, http_base_url
from ._oauth import ClientCredentials, OAuthClient, Pace, TokenRequestFailed
from ._results import parse_retry_after, vendor_failure
from ._tokens import Token, credential_key

__all__ = ["ADAPTER", "REQUESTS_PER_SECOND", "PowerOfficeGoCheck", "PowerOfficeGoConfig"]

REQUESTS_PER_SECOND = 5
"""The monitor's share of PowerOffice's 10 requests/second per subscription key."""
INTERVAL_S = 1_800
TOKEN_LIFETIME_S = 1_200.0
VENDOR_MESSAGE_MAX = 200
MAX_LISTED = 20

_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)


class PowerOfficeGoConfig(IntegrationConfigBase):
    """One PowerOffice Go client (customer) reached by the integration's keys."""

    integration_type: Literal["poweroffice_go"] = "poweroffice_go"
    min_check_interval_s: ClassVar[int] = INTERVAL_S
    """PowerOffice watches polling and shares 10 req/s across all clients: 30 minutes."""

    check_interval_s: int = INTERVAL_S
    """Seconds between two probes; at least 1 800 (30 minutes)."""
    application_key: SecretStr
    """The integration's application key (OAuth client id), from PowerOffice."""
    client_key: SecretStr
    """The client key the customer created when activating the integration (OAuth secret)."""
    subscription_key: SecretStr
    """The developer-portal subscription key (``Ocp-Apim-Subscription-Key``), shared by all
    clients of the integration."""
    base_url: str = "https://goapi.poweroffice.net"
    """``https://goapi.poweroffice.net`` or, for demo keys, ``https://goapi.poweroffice.net/Demo``;
    the token comes from ``{base_url}/OAuth/Token``, the API is ``{base_url}/v2``."""

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        return http_base_url(value, api_suffix="/v2")


def _names(value: Any) -> list[str]:
    """Privilege names from a list of strings (or of objects with a name)."""
    if not isinstance(value, list):
        return []
    names = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("Name") or item.get("name") or item.get("Privilege")
        if isinstance(item, str | int) and str(item).strip():
            names.append(str(item).strip()[:100])
    return names


def _vendor_message(response: HttpResponse) -> str:
    """The ``message`` (APIM) or ``detail``/``title`` (ProblemDetail) of an error answer."""
    try:
        body = response.json()
    except ProbeFailure:
        return ""
    if not isinstance(body, dict):
        return ""
    for key in ("message", "detail", "title"):
        text = body.get(key)
        if isinstance(text, str) and text.strip():
            return text.strip()[:VENDOR_MESSAGE_MAX]
    return ""


class PowerOfficeGoCheck:
    """Cached token, then ``ClientIntegrationInformation``, paced per subscription key."""

    integration_type = "poweroffice_go"

    def __init__(self, context: CheckContext) -> None:
        self._context = context
        self._oauth = OAuthClient(context)

    @property
    def _http(self) -> HttpClient:
        return self._context.http

    def _pace(self, config: PowerOfficeGoConfig) -> AbstractAsyncContextManager[None]:
        """One turn of the subscription key's shared request budget."""
        key = credential_key(
            "poweroffice-subscription", config.base_url, config.subscription_key.get_secret_value()
        )
        return self._context.limits.rate(key, max_rate=1, period=1 / REQUESTS_PER_SECOND)

    def _credentials(self, config: PowerOfficeGoConfig) -> ClientCredentials:
        return ClientCredentials(
            token_url=f"{config.base_url}/OAuth/Token",
            client_id=config.application_key.get_secret_value(),
            client_secret=config.client_key.get_secret_value(),
            client_auth="basic",
            headers={"Ocp-Apim-Subscription-Key": config.subscription_key.get_secret_value()},
            provider="PowerOffice",
            default_expires_in_s=TOKEN_LIFETIME_S,
        )

    async def warm_up(self, org_id: UUID, config: PowerOfficeGoConfig) -> None:
        """Fetch the token ahead of a slot (a no-op while the cached one is fresh)."""
        await self._oauth.token(self._credentials(config), pace=lambda: self._pace(config))

    async def check(self, org_id: UUID, config: PowerOfficeGoConfig) -> HealthResult:
        """One ``ClientIntegrationInformation`` with the cached token (see the module docstring).

        Time spent waiting for a turn of the shared request budget is reported as
        ``details.queued_ms`` and left out of ``latency_ms``, so pacing never looks like a
        slow vendor.
        """
        details: dict[str, Any] = {}
        started = time.monotonic()
        queued = [0.0]

        @asynccontextmanager
        async def pace() -> AsyncIterator[None]:
            asked = time.monotonic()
            async with self._pace(config):
                queued[0] += time.monotonic() - asked
                yield

        def latency() -> float:
            waited = queued[0] * 1000
            if waited >= 1:
                details["queued_ms"] = round(waited)
            return max(0.0, (time.monotonic() - started) * 1000 - waited)

        try:
            answer = await self._oauth.send(
                self._credentials(config),
                lambda token: self._information(config, token, pace),
                pace=pace,
            )
        except TokenRequestFailed as failure:
            return self._token_refused(config, failure, latency(), details)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            code, message = classify_exception(exc)
            if isinstance(exc, ProbeFailure):
                details.update(exc.details)
            return HealthResult.unreachable(code, message, latency(), details=details)
        response = answer.response
        if answer.token_renewed:
            details["token_renewed"] = True
        details.update(http_status=response.status, phases=response.phases)
        if response.status == 200:
            return self._judge_information(response, latency(), details)
        return self._judge_error(config, response, latency(), details)

    async def _information(
        self, config: PowerOfficeGoConfig, token: Token, pace: Pace
    ) -> HttpResponse:
        async with pace():
            return await self._http.request(
                "GET",
                f"{config.base_url}/v2/ClientIntegrationInformation",
                headers={
                    "Authorization": f"Bearer {token.value}",
                    "Ocp-Apim-Subscription-Key": config.subscription_key.get_secret_value(),
                    "Accept": "application/json",
                },
            )

    def _token_refused(
        self,
        config: PowerOfficeGoConfig,
        failure: TokenRequestFailed,
        latency: float,
        details: dict[str, Any],
    ) -> HealthResult:
        said = failure.details.get("provider_message")
        said_text = f' PowerOffice says: "{said}".' if isinstance(said, str) and said else ""
        if failure.code is ErrorCode.AUTH:
            if isinstance(said, str) and "subscription key" in said.lower():
                message = (
                    "PowerOffice refused the subscription key at the token endpoint: check "
                    "subscription_key in the developer portal (demo and production keys "
                    f"differ).{said_text}"
                )
            else:
                reason = failure.details.get("oauth_error") or (
                    f"HTTP {failure.details.get('http_status')}"
                )
                message = (
                    f"PowerOffice refused the application key or client key ({reason}): check "
                    "both keys, and that the customer has not deactivated the integration in "
                    "PowerOffice Go (a new client key is needed then)."
                )
            failure = TokenRequestFailed(ErrorCode.AUTH, message, details=failure.details)
        elif failure.code is ErrorCode.NOT_FOUND:
            failure = TokenRequestFailed(
                ErrorCode.NOT_FOUND,
                f"{config.base_url}/OAuth/Token does not exist (HTTP 404): check base_url "
                "(https://goapi.poweroffice.net, or https://goapi.poweroffice.net/Demo for demo "
                "keys).",
                details=failure.details,
            )
        return failure.to_result(latency, details)

    def _judge_information(
        self, response: HttpResponse, latency: float, details: dict[str, Any]
    ) -> HealthResult:
        try:
            body = response.json()
        except ProbeFailure:
            body = None
        if not isinstance(body, dict) or not body.get("ClientId"):
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                "PowerOffice answered ClientIntegrationInformation without a ClientId: is "
                "base_url the PowerOffice Go API?",
                latency,
                details=details,
            )
        details["client_id"] = str(body["ClientId"])[:100]
        name = body.get("ClientName")
        if isinstance(name, str):
            details["client_name"] = name[:200]
        subscriptions = _names(body.get("ActiveClientSubscriptions"))
        details["active_subscriptions"] = subscriptions[:MAX_LISTED]
        details["valid_privileges"] = len(_names(body.get("ValidPrivileges")))
        invalid = _names(body.get("InvalidPrivileges"))
        if not invalid:
            return HealthResult.healthy(latency, details=details)
        details["invalid_privileges"] = invalid[:MAX_LISTED]
        listed = ", ".join(invalid[:MAX_LISTED]) + (" …" if len(invalid) > MAX_LISTED else "")
        client = f"Client {name}" if isinstance(name, str) and name else "The client"
        return HealthResult.degraded(
            ErrorCode.AUTH,
            f"{client} lacks {len(invalid)} privilege(s) the integration needs: {listed}. The "
            "customer must grant them to the integration in PowerOffice Go (or subscribe to "
            "the Go modules they belong to); calls that need them will fail until then.",
            latency,
            details=details,
        )

    def _judge_error(
        self,
        config: PowerOfficeGoConfig,
        response: HttpResponse,
        latency: float,
        details: dict[str, Any],
    ) -> HealthResult:
        status = response.status
        message = _vendor_message(response)
        said = f' PowerOffice says: "{message}".' if message else ""
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None and status == 429:
                match = _TRY_AGAIN.search(message)
                retry_after = float(match.group(1)) if match else None
            if retry_after is not None:
                details["retry_after_s"] = retry_after
        if status == 429:
            return HealthResult.degraded(
                ErrorCode.RATE_LIMITED,
                "PowerOffice is throttling the subscription key (HTTP 429; 10 requests per "
                "second shared by all clients): probes back off automatically; if it persists, "
                f"the sync traffic on this key is near the limit.{said}",
                latency,
                details=details,
            )
        if status == 401:
            if "subscription key" in message.lower():
                text = (
                    "PowerOffice refused the subscription key (HTTP 401): check subscription_key "
                    "in the developer portal."
                )
            else:
                text = (
                    "PowerOffice refused a fresh access token (HTTP 401): the client key may have "
                    "been revoked; check that the integration is still active for this client."
                )
            return HealthResult.unreachable(ErrorCode.AUTH, text + said, latency, details=details)
        if status == 403:
            return HealthResult.unreachable(
                ErrorCode.AUTH,
                "PowerOffice denied the integration access (HTTP 403): check the integration's "
                f"activation and privileges for this client.{said}",
                latency,
                details=details,
            )
        if status == 404:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"{config.base_url}/v2 has no ClientIntegrationInformation (HTTP 404): check "
                "base_url (https://goapi.poweroffice.net, or …/Demo for demo keys).",
                latency,
                details=details,
            )
        return vendor_failure(response, latency, details=details, what="PowerOffice", said=said)


ADAPTER = Adapter(
    "poweroffice_go",
    PowerOfficeGoConfig,
    PowerOfficeGoCheck,
    description="PowerOffice Go API v2: cached token, then GET ClientIntegrationInformation.",
)
