"""Rate limits of the write endpoints: "check now" and sync-outcome intake.

- **Check now** (``POST /api/orgs/{org}/health/checks``): each run probes every integration of
  the organisation, and some vendors charge per call or allow one request at a time, so a run
  is refused (429 with ``Retry-After``) when the previous one of the same organisation started
  less than ``INTEGRATION_HEALTH_RUN_NOW_INTERVAL_S`` (default 60 s) ago
  (:class:`RunNowLimiter`).
- **Sync outcomes** (``POST /api/orgs/{org}/integrations/{id}/sync-outcomes``): each outcome
  is a store write. A token bucket per organisation and one per service key
  (:class:`SyncOutcomeLimiter`) bound what one tenant — or one leaked key — can write; past
  the burst, 429 with ``Retry-After``. :class:`WriteRateLimit` applies it in front of the app,
  and only to requests presenting the *valid* service key: a wrong key is answered 401 by the
  endpoint and cannot use up anyone's budget.

The windows are per process: behind several API processes, each keeps its own.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import Settings
from .auth import bearer_token, service_key_matches
from .errors import error_response

__all__ = [
    "SYNC_OUTCOMES_PER_KEY",
    "SYNC_OUTCOMES_PER_ORG",
    "Rate",
    "RunNowLimiter",
    "SyncOutcomeLimiter",
    "WriteRateLimit",
]

Clock = Callable[[], float]


class RunNowLimiter:
    """At most one run per organisation per ``interval_s``."""

    def __init__(self, interval_s: float, *, clock: Clock = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[UUID, float] = {}

    def acquire(self, org_id: UUID) -> int | None:
        """Start a run now (``None``), or the whole seconds to wait before the next one."""
        now = self._clock()
        self._forget_before(now - self.interval_s)
        last = self._last.get(org_id)
        if last is not None:
            return max(1, math.ceil(last + self.interval_s - now))
        self._last[org_id] = now
        return None

    def _forget_before(self, cutoff: float) -> None:
        for org_id in [o for o, at in self._last.items() if at <= cutoff]:
            del self._last[org_id]


@dataclass(frozen=True)
class Rate:
    """``per_s`` requests per second on average, with bursts of up to ``burst``."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_s <= 0 or self.burst < 1:
            raise ValueError("a rate needs per_s > 0 and burst >= 1")


SYNC_OUTCOMES_PER_ORG: Final = Rate(per_s=10.0, burst=100)
"""Default: one organisation's outcomes (every integration synced every few seconds fits)."""
SYNC_OUTCOMES_PER_KEY: Final = Rate(per_s=50.0, burst=500)
"""Default: everything one service key sends, all organisations together."""


class _Buckets:
    """Token buckets keyed by string; idle full buckets are forgotten."""

    def __init__(self, rate: Rate, clock: Clock, max_keys: int = 100_000) -> None:
        self.rate = rate
        self._clock = clock
        self._max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def peek(self, key: str) -> float:
        """Seconds until ``key`` has a token (0 when it has one now)."""
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate.per_s

    def take(self, key: str) -> None:
        now = self._clock()
        self._state[key] = (self._tokens(key, now) - 1, now)
        if len(self._state) > self._max_keys:
            self._forget(now)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._state.get(key, (float(self.rate.burst), now))
        return min(float(self.rate.burst), tokens + (now - at) * self.rate.per_s)

    def _forget(self, now: float) -> None:
        full = [k for k in self._state if self._tokens(k, now) >= self.rate.burst]
        for key in full:
            del self._state[key]


class SyncOutcomeLimiter:
    """Sync outcomes: a bucket per organisation and one per service key; both must allow."""

    def __init__(
        self,
        per_org: Rate = SYNC_OUTCOMES_PER_ORG,
        per_key: Rate = SYNC_OUTCOMES_PER_KEY,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._orgs = _Buckets(per_org, clock)
        self._keys = _Buckets(per_key, clock)

    def acquire(self, org_id: UUID, key_id: str) -> int | None:
        """Accept one outcome now (``None``), or the whole seconds to wait before retrying.

        A refused request takes nothing from either bucket.
        """
        wait = max(self._orgs.peek(str(org_id)), self._keys.peek(key_id))
        if wait > 0:
            return max(1, math.ceil(wait))
        self._orgs.take(str(org_id))
        self._keys.take(key_id)
        return None


_SYNC_OUTCOMES = re.compile(
    r"^/api/orgs/(?P<org>[0-9A-Fa-f-]{32,36})/integrations/[^/]+/sync-outcomes/?$"
)


def _key_id(presented: str) -> str:
    """What identifies a service key in memory (a digest: the key itself is never kept)."""
    return hashlib.blake2b(presented.encode("utf-8"), digest_size=16).hexdigest()


class WriteRateLimit:
    """ASGI middleware: 429 with ``Retry-After`` for sync outcomes past their rate limits.

    Install with ``app.add_middleware(WriteRateLimit, settings=settings)``.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        *,
        limiter: SyncOutcomeLimiter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter or SyncOutcomeLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _SYNC_OUTCOMES.match(scope["path"])
            key_id = self._valid_key_id(scope) if match else None
            if match and key_id is not None:
                try:
                    org_id = UUID(match["org"])
                except ValueError:
                    org_id = None  # the endpoint answers 422
                wait_s = self.limiter.acquire(org_id, key_id) if org_id else None
                if wait_s is not None:
                    await self._refuse(wait_s)(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _valid_key_id(self, scope: Scope) -> str | None:
        """The id of the presented service key if it is valid, ``"local"`` in embedded mode."""
        headers = {k.lower(): v for k, v in scope.get("headers") or ()}
        presented_header = headers.get(b"x-service-key")
        authorization = headers.get(b"authorization")
        presented = (
            presented_header.decode("latin-1")
            if presented_header is not None
            else bearer_token(authorization.decode("latin-1") if authorization else None)
        )
        if self.settings.service_key is None:
            return "local"  # embedded loopback mode: the endpoint itself decides who may write
        if presented is None or not service_key_matches(self.settings, presented):
            return None
        return _key_id(presented)

    @staticmethod
    def _refuse(wait_s: int) -> ASGIApp:
        return error_response(
            429,
            "rate_limited",
            f"Too many sync outcomes; try again in {wait_s} s.",
            headers={"Retry-After": str(wait_s)},
        )
