"""Xledger (Norwegian ERP), GraphQL API with a static API token.

Probe (``probe: auth``, the default; cheapest known credential check)::

    POST {base_url}/graphql
    Authorization: token <api_token>        (the word "token", not "Bearer")
    {"query": "query { __typename }"}       → 200 {"data": {"__typename": "Query"}}

It proves the host, the GraphQL endpoint and that Xledger accepts the token (a token is bound
to one entity, so an accepted token also means its entity exists).

**Request cost.** Xledger bills GraphQL requests beyond a monthly allowance (UK terms: 5 000
requests a month included, then £0.01 a request; whether a ``__typename``-only query is
billed is unverified, so it is counted as one billable request). Every check costs **1**
request, so this type's ``min_check_interval_s`` is **1 800 s** (30 minutes: at most 1 440
requests a month per integration) and its default ``check_interval_s`` is **3 600 s**
(720 a month, about 14 % of the allowance). ``probe: network`` sends an unauthenticated
``HEAD {base_url}/graphql`` instead: any HTTP answer below 500 proves the host is up
(credentials are *not* checked; assumed unbilled, unverified) — for accounts that cannot
spare the requests.

Rate limits arrive inside **HTTP 200** answers, as GraphQL ``errors[].code``:

==========================================================  ===========  ==============
observation                                                  status       error_code
==========================================================  ===========  ==============
200 ``{"data": {"__typename": …}}``                          healthy      —
``BAD_REQUEST.BURST_RATE_LIMIT_REACHED``                     degraded     rate_limited
``BAD_REQUEST.CONCURRENCY_LIMIT_REACHED``                    degraded     rate_limited
``BAD_REQUEST.INSUFFICIENT_CREDITS`` (``extensions.resetAt``
→ ``retry_after_s``, capped at 31 days; ``reset_at`` kept)   degraded     rate_limited
any other ``BAD_REQUEST.*LIMIT*`` code                       degraded     rate_limited
error about the API token, auth-like code; HTTP 401/403      unreachable  auth
HTTP 404 (no GraphQL endpoint at ``base_url``)               unreachable  not_found
HTTP 429 (``Retry-After`` kept)                              degraded     rate_limited
HTTP 5xx (``Retry-After`` kept)                              unreachable  server_error
other GraphQL errors, no ``data``, not JSON, other status    unreachable  bad_response
``probe: network``: any HTTP status below 500                healthy      —
==========================================================  ===========  ==============

``details`` carries ``http_status``, ``phases``, ``probe``, ``vendor_code`` (the GraphQL error
code), ``reset_at`` (credits), and ``credentials_checked: false`` in network mode.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self
from uuid import UUID

from pydantic import SecretStr, field_validator, model_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure
from ._http import HttpClient, HttpResponse, http_base_url
from ._results import parse_retry_after, result_for_exception, result_for_http_status

__all__ = ["ADAPTER", "XledgerCheck", "XledgerConfig"]

PROBE_QUERY = "query { __typename }"
MIN_INTERVAL_S = 1_800
DEFAULT_INTERVAL_S = 3_600
MAX_CREDIT_WAIT_S = 31 * 24 * 3600
VENDOR_MESSAGE_MAX = 200

BURST = "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
CONCURRENCY = "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"
CREDITS = "BAD_REQUEST.INSUFFICIENT_CREDITS"

_AUTH_CODES = frozenset(
    {"UNAUTHENTICATED", "UNAUTHORIZED", "FORBIDDEN", "AUTH_NOT_AUTHENTICATED", "ACCESS_DENIED"}
)
_TOKEN_WORDS = re.compile(
    r"\bapi[ _-]?token\b|\b(?:invalid|expired|revoked|missing|unknown|bad)\b[^.]{0,30}\btoken\b"
    r"|\bunauthori[sz]ed\b|\bunauthenticated\b|\bnot authenticated\b",
    re.IGNORECASE,
)
"""Messages about the token ("Bad format for API Token…"), not e.g. "Unexpected token"."""

_LIMIT_SENTENCES = {
    BURST: (
        "Xledger's burst rate limit was reached ({code}): too many requests with this token in "
        "a short time. Probes back off automatically."
    ),
    CONCURRENCY: (
        "Xledger's concurrency limit was reached ({code}): other requests with this token were "
        "running at the same time. Probes back off automatically."
    ),
}


class XledgerConfig(IntegrationConfigBase):
    """An Xledger entity reached with a GraphQL API token."""

    integration_type: Literal["xledger"] = "xledger"
    min_check_interval_s: ClassVar[int] = MIN_INTERVAL_S
    """Every probe is a billable request: at most one per 30 minutes."""

    check_interval_s: int = DEFAULT_INTERVAL_S
    """Seconds between two probes; at least 1 800 (each probe is billable), default 3 600."""
    api_token: SecretStr | None = None
    """The GraphQL API token (a ``${VAR}`` reference); required unless ``probe`` is network."""
    base_url: str = "https://www.xledger.net"
    """The Xledger host; the adapter posts to ``{base_url}/graphql``. Demo:
    ``https://demo.xledger.net``."""
    probe: Literal["auth", "network"] = "auth"
    """``auth``: ``query { __typename }`` with the token (1 billable request); ``network``: an
    unauthenticated ``HEAD`` that only proves the host answers."""

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        return http_base_url(value, api_suffix="/graphql")

    @model_validator(mode="after")
    def _token_for_auth_probe(self) -> Self:
        if self.probe == "auth" and self.api_token is None:
            raise ValueError("api_token is required unless probe is 'network'")
        return self


def _error_code(error: dict[str, Any]) -> str:
    code = error.get("code")
    if not isinstance(code, str):
        extensions = error.get("extensions")
        code = extensions.get("code") if isinstance(extensions, dict) else None
    return code.strip() if isinstance(code, str) else ""


def _reset_in_s(error: dict[str, Any], now: datetime) -> tuple[float | None, str | None]:
    """Seconds until ``extensions.resetAt`` (ISO 8601 or epoch seconds/ms), and its text."""
    extensions = error.get("extensions")
    raw = extensions.get("resetAt") if isinstance(extensions, dict) else None
    if raw is None:
        raw = error.get("resetAt")
    when: datetime | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = raw / 1000 if raw > 1e11 else raw
        try:
            when = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            when = None
    elif isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw.strip())
        except ValueError:
            when = None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    if when is None:
        return None, None
    wait = min(max((when - now).total_seconds(), 0.0), MAX_CREDIT_WAIT_S)
    return wait, when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class XledgerCheck:
    """Posts ``query { __typename }`` with the token (or HEADs the endpoint in network mode)."""

    integration_type = "xledger"

    def __init__(self, context: CheckContext) -> None:
        self._context = context

    @property
    def _http(self) -> HttpClient:
        return self._context.http

    async def check(self, org_id: UUID, config: XledgerConfig) -> HealthResult:
        """One request (see the module docstring for what it costs and how it is judged)."""
        details: dict[str, Any] = {"probe": config.probe}
        started = time.monotonic()
        try:
            response = await self._send(config)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            return result_for_exception(exc, started, details)
        details.update(http_status=response.status, phases=response.phases)
        latency = response.elapsed_ms
        if config.probe == "network":
            return self._judge_network(response, latency, details)
        return self._judge_graphql(config, response, latency, details)

    async def _send(self, config: XledgerConfig) -> HttpResponse:
        url = f"{config.base_url}/graphql"
        if config.probe == "network":
            return await self._http.request("HEAD", url, read_body=False)
        assert config.api_token is not None
        return await self._http.request(
            "POST",
            url,
            json={"query": PROBE_QUERY},
            headers={
                "Authorization": f"token {config.api_token.get_secret_value()}",
                "Accept": "application/json",
            },
        )

    def _judge_network(
        self, response: HttpResponse, latency: float, details: dict[str, Any]
    ) -> HealthResult:
        details["credentials_checked"] = False
        if response.status < 500:
            return HealthResult.healthy(latency, details=details)
        return self._http_failure(response, latency, details)

    def _http_failure(
        self, response: HttpResponse, latency: float, details: dict[str, Any]
    ) -> HealthResult:
        if response.status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                details["retry_after_s"] = retry_after
        return result_for_http_status(response, latency, details=details, what="Xledger")

    def _judge_graphql(
        self,
        config: XledgerConfig,
        response: HttpResponse,
        latency: float,
        details: dict[str, Any],
    ) -> HealthResult:
        status = response.status
        if status in (401, 403):
            return self._auth(status, latency, details)
        if status == 404:
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"{config.base_url}/graphql does not exist (HTTP 404): check base_url "
                "(https://www.xledger.net, or https://demo.xledger.net for demo tokens).",
                latency,
                details=details,
            )
        if status == 429 or status >= 500:
            return self._http_failure(response, latency, details)
        try:
            body = response.json()
        except ProbeFailure:
            body = None
        if not isinstance(body, dict):
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                f"Xledger answered HTTP {status} without a GraphQL JSON body: is base_url the "
                "Xledger host?",
                latency,
                details=details,
            )
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        limited = self._rate_limit(errors, latency, details)
        if limited is not None:
            return limited
        for error in errors:
            code = _error_code(error)
            message = error.get("message") if isinstance(error.get("message"), str) else ""
            assert isinstance(message, str)
            if code.upper() in _AUTH_CODES or _TOKEN_WORDS.search(message):
                if code:
                    details["vendor_code"] = code[:100]
                return self._auth(status, latency, details)
        data = body.get("data")
        if status == 200 and isinstance(data, dict) and isinstance(data.get("__typename"), str):
            return HealthResult.healthy(latency, details=details)
        if errors:
            first = errors[0]
            code = _error_code(first)
            if code:
                details["vendor_code"] = code[:100]
            message = first.get("message") if isinstance(first.get("message"), str) else ""
            said = f': "{str(message).strip()[:VENDOR_MESSAGE_MAX]}"' if message else ""
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                f"Xledger answered the probe with an error (HTTP {status}){said}.",
                latency,
                details=details,
            )
        return HealthResult.unreachable(
            ErrorCode.BAD_RESPONSE,
            f"Xledger answered HTTP {status} without data.__typename: is base_url the Xledger "
            "GraphQL host?",
            latency,
            details=details,
        )

    def _rate_limit(
        self, errors: list[dict[str, Any]], latency: float, details: dict[str, Any]
    ) -> HealthResult | None:
        for error in errors:
            code = _error_code(error)
            upper = code.upper()
            if upper == CREDITS:
                details["vendor_code"] = code
                wait, reset_at = _reset_in_s(error, datetime.now(UTC))
                until = ""
                if wait is not None and reset_at is not None:
                    details.update(retry_after_s=wait, reset_at=reset_at)
                    until = f" until {reset_at}"
                return HealthResult.degraded(
                    ErrorCode.RATE_LIMITED,
                    f"The Xledger account has used up its API credits ({code}){until}: buy "
                    "more credits or wait for the reset; probes pause meanwhile.",
                    latency,
                    details=details,
                )
            if upper.startswith("BAD_REQUEST.") and "LIMIT" in upper:
                details["vendor_code"] = code
                sentence = _LIMIT_SENTENCES.get(
                    upper,
                    "Xledger is rate limiting this token ({code}). Probes back off automatically.",
                )
                return HealthResult.degraded(
                    ErrorCode.RATE_LIMITED, sentence.format(code=code), latency, details=details
                )
        return None

    def _auth(self, status: int, latency: float, details: dict[str, Any]) -> HealthResult:
        return HealthResult.unreachable(
            ErrorCode.AUTH,
            f"Xledger rejected the API token (HTTP {status}): create a new token in Xledger "
            "(Administration → System Access → GraphQL → API tokens) for this entity and "
            "update the reference; demo tokens work only at demo.xledger.net.",
            latency,
            details=details,
        )


ADAPTER = Adapter(
    "xledger",
    XledgerConfig,
    XledgerCheck,
    description="Xledger GraphQL: query { __typename } with the API token (billable; ≥ 30 min).",
)
