"""The web layer's pure parts: answer cache, run-now limiter, advice, token memory."""

from __future__ import annotations

import asyncio
import gzip
import uuid

import pytest

from integration_health.model import ErrorCode, HealthStatus
from integration_health.settings import Settings
from integration_health.web.advice import ADVICE, advice_for
from integration_health.web.auth import Authenticator, AuthError, bearer_token, is_loopback_host
from integration_health.web.cache import ResponseCache
from integration_health.web.ratelimit import RunNowLimiter

from .live import HS_SECRET, Clock, claims_for, hs_token

ORG = uuid.uuid4()


async def test_concurrent_misses_share_one_computation() -> None:
    """Fifty requests missing the same key at once compute the answer once."""
    cache = ResponseCache(1.0)
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b'{"n": 1}'

    answers = await asyncio.gather(
        *(cache.get_or_compute(ORG, "user:a", "health", compute) for _ in range(50))
    )
    assert calls == 1
    assert {a.body for a in answers} == {b'{"n": 1}'}


async def test_answers_expire_and_are_per_caller() -> None:
    """An answer is reused within its TTL, for the same caller only, and recomputed after."""
    clock = Clock()
    cache = ResponseCache(1.0, clock=clock)
    bodies = iter([b"1", b"2", b"3"])

    async def compute() -> bytes:
        return next(bodies)

    assert (await cache.get_or_compute(ORG, "user:a", "h", compute)).body == b"1"
    assert (await cache.get_or_compute(ORG, "user:a", "h", compute)).body == b"1"
    assert (await cache.get_or_compute(ORG, "user:b", "h", compute)).body == b"2"
    clock.now += 1.5
    assert (await cache.get_or_compute(ORG, "user:a", "h", compute)).body == b"3"


async def test_a_write_during_computation_keeps_the_answer_out_of_the_cache() -> None:
    """An answer computed while the organisation was written to is returned but not kept."""
    cache = ResponseCache(10.0)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> bytes:
        started.set()
        await release.wait()
        return b"old"

    task = asyncio.create_task(cache.get_or_compute(ORG, "u", "h", slow))
    await started.wait()
    cache.invalidate(ORG)
    release.set()
    assert (await task).body == b"old"
    assert cache.get(ORG, "u", "h") is None


async def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    """A failing computation raises for each waiting caller and leaves nothing cached."""
    cache = ResponseCache(10.0)

    async def failing() -> bytes:
        await asyncio.sleep(0.01)
        raise LookupError("nope")

    results = await asyncio.gather(
        *(cache.get_or_compute(ORG, "u", "h", failing) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, LookupError) for r in results)
    assert cache.get(ORG, "u", "h") is None


async def test_ttl_zero_disables_the_cache_and_gzip_round_trips() -> None:
    """With TTL 0 every request computes; a cached answer's gzip form decompresses to it."""
    cache = ResponseCache(0)
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        return b"x" * 5_000

    first = await cache.get_or_compute(ORG, "u", "h", compute)
    await cache.get_or_compute(ORG, "u", "h", compute)
    assert calls == 2
    assert first.compressible and gzip.decompress(first.gzipped()) == first.body
    assert first.etag.startswith('"') and first.etag.endswith('"')


def test_run_now_limiter_window_per_org() -> None:
    """A second run within the window is refused with the whole seconds left; another org and
    the same org after the window are allowed."""
    clock = Clock()
    limiter = RunNowLimiter(60, clock=clock)
    other = uuid.uuid4()
    assert limiter.acquire(ORG) is None
    clock.now += 20.2
    assert limiter.acquire(ORG) == 40
    assert limiter.acquire(other) is None
    clock.now += 40
    assert limiter.acquire(ORG) is None


def test_every_error_code_has_advice() -> None:
    """Each error code has plain-language advice; slow-but-working gets its own."""
    assert set(ADVICE) == set(ErrorCode)
    assert advice_for(HealthStatus.HEALTHY, None) is None
    slow = advice_for(HealthStatus.DEGRADED, None)
    assert slow is not None and "slower" in slow
    assert advice_for(HealthStatus.UNREACHABLE, ErrorCode.AUTH) == ADVICE[ErrorCode.AUTH]


def test_header_and_host_parsing() -> None:
    """Bearer values are extracted strictly; loopback hosts are recognised."""
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert is_loopback_host("127.0.0.5") and is_loopback_host("[::1]")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("example.com")  # noqa: S104


async def test_a_remembered_token_still_expires() -> None:
    """A token verified once is not trusted past its expiry."""
    auth = Authenticator(Settings(database_url="memory://", jwt_secret=HS_SECRET))
    user = uuid.uuid4()
    token = hs_token(claims_for(user, expires_in=1 - 10))  # expires within the leeway
    principal = await auth.authenticate(f"Bearer {token}", "127.0.0.1")
    assert principal.user_id == user
    await asyncio.sleep(1.1)
    with pytest.raises(AuthError) as refused:
        await auth.authenticate(f"Bearer {token}", "127.0.0.1")
    assert refused.value.code == "token_expired"
