"""Generic HTTP(S) endpoint: a webhook receiver, a vendor's status URL, any health endpoint.

Probe: ``HEAD url`` (cheapest: no body), falling back to ``GET`` when the server answers
405 Method Not Allowed or 501 Not Implemented; redirects followed (up to 5, each re-checked by
the SSRF guard). Cost: one request per check.

=================================  ===========  ================
answer                              status       error_code
=================================  ===========  ================
expected status (default 2xx/3xx)   healthy      —
401 / 403                           unreachable  auth
404 / 410                           unreachable  not_found
429 (``Retry-After`` kept)          degraded     rate_limited
5xx                                 unreachable  server_error
anything else                       unreachable  bad_response
=================================  ===========  ================

Transport faults are classified by :func:`~integration_health.transport_errors.classify_exception`
(reset → ``connection``, unresolvable name → ``dns``, expired/self-signed/wrong-host
certificate → ``tls`` with a plain sentence, more than 5 redirects → ``bad_response``, a
server that trickles its headers → ``timeout`` at the runner's deadline). The answer is judged
on its status line and headers alone: the body is never read, so a 100 MB body (or one cut
off or trickled after a good status) costs neither time nor memory and does not change the
verdict. HTTPS trusts the system store, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (a private CA).
See docs/reliability.md, "Vendor faults".
"""

from __future__ import annotations

import time
from typing import Literal
from uuid import UUID

from pydantic import Field, SecretStr, field_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ._results import result_for_exception, result_for_http_status

__all__ = ["ADAPTER", "HttpCheck", "HttpConfig"]


class HttpConfig(IntegrationConfigBase):
    """A plain HTTP(S) endpoint."""

    integration_type: Literal["http"] = "http"
    url: str = Field(min_length=1, max_length=2_048)
    """The URL to probe (``http://`` or ``https://``)."""
    method: Literal["HEAD", "GET"] = "HEAD"
    """``HEAD`` (default; falls back to ``GET`` on 405/501) or ``GET``."""
    expected_status: list[int] | None = None
    """Statuses that mean healthy (default: any 2xx or 3xx)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (values may be ``${VAR}`` references)."""
    bearer_token: SecretStr | None = None
    """Sent as ``Authorization: Bearer …`` (a ``${VAR}`` reference)."""
    follow_redirects: bool = True
    """Follow up to 5 redirects; when false a 3xx answer is judged as it is."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("http", "https") and not value.startswith("${"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("expected_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return value

    @field_validator("expected_status")
    @classmethod
    def _valid_statuses(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one status")
            bad = [v for v in value if not 100 <= v <= 599]
            if bad:
                raise ValueError(f"HTTP statuses are between 100 and 599, got {bad}")
        return value


class HttpCheck:
    """Probes a URL with HEAD (GET fallback)."""

    integration_type = "http"

    def __init__(self, context: CheckContext) -> None:
        self._context = context

    async def check(self, org_id: UUID, config: HttpConfig) -> HealthResult:
        """One request (two on HEAD fallback); the status code decides."""
        headers: dict[str, str] | None = config.headers or None  # None: nothing to merge
        if config.bearer_token is not None:
            token = config.bearer_token.get_secret_value()
            headers = {**config.headers, "Authorization": f"Bearer {token}"}
        details: dict[str, object] = {"method": config.method}
        started = time.monotonic()
        http = self._context.http
        try:
            response = await http.request(
                config.method,
                config.url,
                headers=headers,
                read_body=False,
                follow_redirects=config.follow_redirects,
            )
            if config.method == "HEAD" and response.status in (405, 501):
                first_ms = response.elapsed_ms
                response = await http.request(
                    "GET",
                    config.url,
                    headers=headers,
                    read_body=False,
                    follow_redirects=config.follow_redirects,
                )
                response.elapsed_ms += first_ms
                details.update(method="GET", head_fallback=True)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            return result_for_exception(exc, started, details)
        status = response.status
        details["http_status"] = status
        details["phases"] = response.phases
        if response.redirects:
            details["redirects"] = len(response.redirects)
        latency = response.elapsed_ms
        expected = config.expected_status
        if expected is None:
            if 200 <= status < 400:  # the common answer, without result_for_http_status's copy
                return HealthResult.healthy(latency, details=details)
        elif status in expected:
            return HealthResult.healthy(latency, details=details)
        elif status < 400:
            return HealthResult.unreachable(
                ErrorCode.BAD_RESPONSE,
                f"Unexpected HTTP {status}; expected {', '.join(map(str, expected))}.",
                latency,
                details=details,
            )
        return result_for_http_status(response, latency, details=details, what="The endpoint")


ADAPTER = Adapter(
    "http",
    HttpConfig,
    HttpCheck,
    description="Any HTTP(S) endpoint: HEAD (GET fallback), status code decides.",
)
