"""Webhook signatures: HMAC-SHA256 over ``<t>.<body>``, the scheme Stripe made familiar.

Every request carries::

    X-Integration-Health-Signature: t=1764331200,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e7…

where ``t`` is the Unix time of sending and ``v1`` the hex HMAC-SHA256 of
``f"{t}.".encode() + body`` under the shared secret. A receiver recomputes it over the raw
body, compares in constant time, and rejects old timestamps (replays)::

    from integration_health.alerting import verify_signature

    if not verify_signature(secret, request.headers[SIGNATURE_HEADER], raw_body):
        return 401

During a secret rotation a receiver may accept either secret; the sender signs with the one
configured.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SIGNATURE_HEADER", "sign", "signature_header", "verify_signature"]

SIGNATURE_HEADER = "X-Integration-Health-Signature"
"""The header that carries ``t=<unix>,v1=<hex>``."""

DEFAULT_TOLERANCE_S = 300
"""A signature older (or newer) than this is refused by :func:`verify_signature`."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body`` (``timestamp``: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={sign(secret, t, body)}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True if ``header`` is a valid, fresh signature of ``body`` under ``secret``."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if not value.isdigit():
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
