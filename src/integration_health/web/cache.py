"""A short-lived cache of API answers, per caller and organisation.

The dashboard polls every few seconds and an organisation may have thousands of
integrations: reusing an answer for about a second (``INTEGRATION_HEALTH_API_CACHE_TTL_S``)
keeps the API fast under many viewers without showing stale data for long. Entries are keyed
by the caller (:attr:`~integration_health.web.auth.Principal.cache_key`), so one user never
receives an answer computed for another. Concurrent misses of one key share one computation
(no stampede when an entry expires under load). Every write this process makes for an
organisation (a "check now" run, a sync outcome, a scheduler pass) drops that organisation's
entries, and an answer computed while such a write happened is not kept.

Answers keep their gzip form too (made once, on first use or while filling), so a large
answer is compressed once per fill rather than once per request. A hit in the last fifth of
an answer's life starts its successor in the background (refresh ahead): under steady
traffic no caller waits for a refill, and no answer served is older than the TTL.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from uuid import UUID

__all__ = ["CachedAnswer", "ResponseCache"]

Key = tuple[UUID, str, str]

Compute = Callable[[], Awaitable["bytes | CachedAnswer"]]
"""What makes an answer: its body, or the answer itself."""

REFRESH_AHEAD = 0.2
"""A hit in the last fifth of an answer's TTL recomputes it in the background."""

GZIP_MIN_BYTES = 1_400
"""Smaller answers are not worth compressing (they fit one packet)."""


class CachedAnswer:
    """A serialised answer, its entity tag and (lazily) its gzip form."""

    __slots__ = ("_gzipped", "body", "etag")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
        self._gzipped: bytes | None = None

    @property
    def compressible(self) -> bool:
        """True when sending it gzipped saves something."""
        return len(self.body) >= GZIP_MIN_BYTES

    def gzipped(self) -> bytes:
        """The body compressed with gzip (computed once)."""
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=1, mtime=0)
        return self._gzipped

    @classmethod
    def prepared(cls, body: bytes) -> CachedAnswer:
        """An answer with its gzip form made now (call it in a worker thread for a large
        body, so no request waits on the event loop for the compression)."""
        answer = cls(body)
        if answer.compressible:
            answer.gzipped()
        return answer


def _answer(made: bytes | CachedAnswer) -> CachedAnswer:
    return made if isinstance(made, CachedAnswer) else CachedAnswer(made)


class ResponseCache:
    """A bounded TTL cache keyed by (organisation, caller, what)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 2_048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Key, tuple[float, CachedAnswer]] = OrderedDict()
        self._pending: dict[Key, asyncio.Future[CachedAnswer]] = {}
        self._generation = 0

    def get(self, org_id: UUID, caller: str, what: str) -> CachedAnswer | None:
        """The answer if it is still fresh."""
        key = (org_id, caller, what)
        found = self._entries.get(key)
        if found is None:
            return None
        expires, answer = found
        if expires <= self._clock():
            del self._entries[key]
            return None
        return answer

    async def get_or_compute(
        self, org_id: UUID, caller: str, what: str, compute: Compute
    ) -> CachedAnswer:
        """The fresh answer, or ``compute()``'s — shared by every concurrent caller of the key.

        ``compute`` returns the body, or a :class:`CachedAnswer` (e.g. one
        :meth:`~CachedAnswer.prepared` in a worker thread). Whatever it raises reaches every
        caller waiting for it; nothing is cached.
        """
        if self.ttl_s <= 0:
            return _answer(await compute())
        key = (org_id, caller, what)
        found = self._entries.get(key)
        if found is not None:
            expires, answer = found
            left = expires - self._clock()
            if left > 0:
                # Refresh ahead: the last part of an answer's life starts its successor in
                # the background, so under steady traffic no caller waits for a refill.
                if left < self.ttl_s * REFRESH_AHEAD and key not in self._pending:
                    self._start(key, compute)
                return answer
            del self._entries[key]
        pending = self._pending.get(key) or self._start(key, compute)
        # One caller giving up (a closed connection) must not cancel the others' answer.
        return await asyncio.shield(pending)

    def _start(self, key: Key, compute: Compute) -> asyncio.Future[CachedAnswer]:
        pending = asyncio.ensure_future(self._fill(key, compute))
        self._pending[key] = pending
        pending.add_done_callback(lambda done: self._settle(key, done))
        return pending

    async def _fill(self, key: Key, compute: Compute) -> CachedAnswer:
        generation = self._generation
        answer = _answer(await compute())
        if generation == self._generation:  # no write since we started reading
            self._entries[key] = (self._clock() + self.ttl_s, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return answer

    def _settle(self, key: Key, done: asyncio.Future[CachedAnswer]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved, even when every waiter went away

    def invalidate(self, org_id: UUID | None = None) -> None:
        """Forget the answers of one organisation (``None``: of all)."""
        self._generation += 1
        if org_id is None:
            self._entries.clear()
            self._pending.clear()
            return
        for key in [k for k in self._entries if k[0] == org_id]:
            del self._entries[key]
        for key in [k for k in self._pending if k[0] == org_id]:
            del self._pending[key]
