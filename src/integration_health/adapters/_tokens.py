"""Access tokens cached per credential: refreshed before expiry, one fetch in flight at a time.

Vendor APIs hand out tokens (OAuth client credentials, Tripletex session tokens, PowerOffice
20-minute tokens…). Minting one per probe doubles the cost of every check and can itself trip
rate limits, so every adapter gets its tokens through the registry's :class:`TokenCache`:

- a token is reused until ``refresh_margin_s`` before it expires;
- concurrent probes needing the same credential's token share one fetch (single flight);
- the cache key is a hash of the credential (:func:`credential_key`), never the secret itself;
- :meth:`TokenCache.invalidate` drops a token the vendor rejected, so the next probe fetches
  a fresh one;
- :meth:`TokenCache.expiring` lists what warm-up should refresh before a slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Token", "TokenCache", "credential_key"]


def credential_key(*parts: object) -> str:
    """A stable, non-reversible key for a credential (e.g. token URL, client id, secret)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True)
class Token:
    """A token and when it stops being valid (``time.monotonic()`` seconds)."""

    value: str = field(repr=False)
    expires_at: float
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def lasting(cls, value: str, seconds: float, **extra: Any) -> Token:
        """A token valid for ``seconds`` from now."""
        return cls(value, time.monotonic() + max(0.0, seconds), extra)


class TokenCache:
    """Per-credential token cache shared by every check of a registry."""

    def __init__(
        self,
        *,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._tokens: dict[str, Token] = {}
        self._inflight: dict[str, asyncio.Future[Token]] = {}
        self.fetches = 0
        """How many tokens were fetched (for tests and metrics)."""
        self.fetch_counts: dict[str, int] = {}

    def _fresh(self, token: Token | None) -> bool:
        return token is not None and token.expires_at - self.refresh_margin_s > self._clock()

    async def get(self, key: str, fetch: Callable[[], Awaitable[Token]]) -> Token:
        """The cached token for ``key``, fetching it (once, for all waiters) when needed.

        A failed fetch raises to every waiter and caches nothing.
        """
        token = self._tokens.get(key)
        if self._fresh(token):
            assert token is not None
            return token
        inflight = self._inflight.get(key)
        if inflight is not None and not inflight.done():
            return await asyncio.shield(inflight)
        future: asyncio.Future[Token] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            token = await fetch()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved here; waiters get it through shield
            raise
        else:
            self._tokens[key] = token
            self.fetches += 1
            self.fetch_counts[key] = self.fetch_counts.get(key, 0) + 1
            future.set_result(token)
            return token
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    def invalidate(self, key: str) -> None:
        """Forget the token of ``key`` (the vendor rejected it)."""
        self._tokens.pop(key, None)

    def peek(self, key: str) -> Token | None:
        """The cached token of ``key`` if it is still fresh."""
        token = self._tokens.get(key)
        return token if self._fresh(token) else None

    def expiring(self, within_s: float) -> list[str]:
        """Keys whose token expires within ``within_s`` seconds (for warm-up)."""
        limit = self._clock() + within_s + self.refresh_margin_s
        return [key for key, token in self._tokens.items() if token.expires_at <= limit]
