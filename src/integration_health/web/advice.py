"""Plain-language advice for each way a check can fail: what happened, what to do.

Shown next to the vendor's own error text in the API (``advice``) and on the dashboard.
"""

from __future__ import annotations

from typing import Final

from ..model import ErrorCode, HealthStatus

__all__ = ["ADVICE", "advice_for"]

ADVICE: Final[dict[ErrorCode, str]] = {
    ErrorCode.TIMEOUT: (
        "No answer in time. The vendor may be down or overloaded: check its status page. "
        "If it lasts, check the network path (firewall, proxy) from the monitor to the vendor."
    ),
    ErrorCode.CONNECTION: (
        "The connection was refused or dropped. Check the address and port, that the service "
        "is running, and that firewalls let the monitor through."
    ),
    ErrorCode.DNS: (
        "The host name does not resolve. Check the URL for typos; the domain may have moved "
        "or expired."
    ),
    ErrorCode.TLS: (
        "The secure connection failed: the certificate is invalid, expired or for another "
        "host. Renew or fix the certificate, or correct the host name."
    ),
    ErrorCode.AUTH: (
        "The vendor rejected the credentials. Create a new API key or client secret in the "
        "vendor's portal, update the secret the integration refers to, and check that the "
        "account still has API access."
    ),
    ErrorCode.NOT_FOUND: (
        "The tenant, company or environment was not found (or this account cannot see it). "
        "Check the ids in the integration's configuration."
    ),
    ErrorCode.RATE_LIMITED: (
        "The vendor asked us to slow down. Checks back off by themselves; if it lasts, check "
        "less often or ask the vendor for a higher limit."
    ),
    ErrorCode.SERVER_ERROR: (
        "The vendor's service answered with an error. This is usually on their side and "
        "temporary: check their status page. Nothing to change here."
    ),
    ErrorCode.BAD_RESPONSE: (
        "The answer was not what this API returns. The address may point at another service "
        "(a login page, a proxy): check the base URL."
    ),
    ErrorCode.CONFIG_INVALID: (
        "The integration's configuration is invalid or a secret is missing. Fix the entry in "
        "the integrations file and import it again; check that the secrets it refers to are "
        "set for the monitor."
    ),
    ErrorCode.INTERNAL: (
        "The check itself failed (a bug in the monitor). Report it with the error text."
    ),
}

_SLOW: Final = (
    "It works, but answers slower than the threshold. Watch the trend; if it stays slow, "
    "contact the vendor."
)


def advice_for(status: HealthStatus | None, error_code: ErrorCode | None) -> str | None:
    """What to do about a status, or ``None`` when nothing needs doing."""
    if error_code is not None:
        return ADVICE.get(error_code)
    if status is HealthStatus.DEGRADED:
        return _SLOW
    return None
