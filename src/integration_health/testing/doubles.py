"""Test doubles: a scriptable check, for testing the runner, stores and your own code.

``FakeConfig`` says what the check should do (``outcome``, ``delay_s``); ``FakeCheck`` does it
and records every call. ``BlockingFakeCheck`` is the same as a plain (blocking) function.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, cast
from uuid import UUID

from pydantic import SecretStr

from ..checks import Adapter, CheckRegistry, builtin_adapters
from ..config import IntegrationConfigBase
from ..model import ErrorCode, HealthResult
from ..settings import Settings

__all__ = [
    "BlockingFakeCheck",
    "BlockingFakeConfig",
    "FakeCall",
    "FakeCheck",
    "FakeConfig",
    "fake_registry",
]

Outcome = Literal[
    "healthy", "degraded", "unreachable", "raise", "swallow_cancel", "hang", "return_garbage"
]


class FakeConfig(IntegrationConfigBase):
    """Config of the ``fake`` type: what the check will do."""

    integration_type: Literal["fake"] = "fake"
    outcome: Outcome = "healthy"
    """What the check does after ``delay_s``."""
    delay_s: float = 0.0
    """How long the check takes before its outcome."""
    latency_ms: int | None = None
    """The latency the check reports (default: the time it took)."""
    message: str = "scripted failure"
    """The error text of failing outcomes (and of the raised exception)."""
    secret: SecretStr | None = None
    """A secret the check leaks into its error text, to test redaction."""


class BlockingFakeConfig(FakeConfig):
    """Config of the ``fake_blocking`` type: the check blocks its thread."""

    integration_type: Literal["fake_blocking"] = "fake_blocking"  # type: ignore[assignment]


@dataclass(frozen=True)
class FakeCall:
    """One call of a fake check."""

    org_id: UUID
    integration_id: UUID
    started: float
    """``time.monotonic()`` when the call started."""


class FakeCheck:
    """Does what its config says, and records the call."""

    integration_type = "fake"

    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.finished_after_cancel = 0
        self._lock = threading.Lock()

    def _record(self, org_id: UUID, config: FakeConfig) -> float:
        started = time.monotonic()
        with self._lock:
            self.calls.append(FakeCall(org_id, config.integration_id, started))
        return started

    @staticmethod
    def _result(config: FakeConfig, started: float) -> HealthResult:
        latency = config.latency_ms
        if latency is None:
            latency = round((time.monotonic() - started) * 1000)
        text = config.message
        if config.secret is not None:
            text = f"{text} (token {config.secret.get_secret_value()})"
        if config.outcome == "degraded":
            return HealthResult.degraded(ErrorCode.RATE_LIMITED, text, latency)
        if config.outcome == "unreachable":
            return HealthResult.unreachable(
                ErrorCode.SERVER_ERROR, text, latency, details={"echo": text}
            )
        if config.outcome == "raise":
            raise RuntimeError(text)
        return HealthResult.healthy(latency)

    async def check(self, org_id: UUID, config: FakeConfig) -> HealthResult:
        started = self._record(org_id, config)
        if config.outcome == "swallow_cancel":
            deadline = started + config.delay_s
            while time.monotonic() < deadline:
                try:
                    await asyncio.sleep(deadline - time.monotonic())
                except asyncio.CancelledError:
                    continue  # misbehave: ignore cancellation
            self.finished_after_cancel += 1
            return HealthResult.healthy(1)
        if config.outcome == "hang":
            await asyncio.Event().wait()
        if config.delay_s:
            await asyncio.sleep(config.delay_s)
        if config.outcome == "return_garbage":
            return "not a result"  # type: ignore[return-value]
        return self._result(config, started)


class BlockingFakeCheck(FakeCheck):
    """A check written as a plain function that blocks its thread (e.g. a sync SDK)."""

    integration_type = "fake_blocking"

    def check(self, org_id: UUID, config: FakeConfig) -> HealthResult:  # type: ignore[override]
        started = self._record(org_id, config)
        time.sleep(config.delay_s)  # blocks the thread, which the runner never joins
        return self._result(config, started)


def fake_registry(
    *, settings: Settings | None = None, with_builtins: bool = True
) -> tuple[CheckRegistry, FakeCheck, BlockingFakeCheck]:
    """A registry with the ``fake`` and ``fake_blocking`` types (plus the built-ins)."""
    fake = FakeCheck()
    blocking = BlockingFakeCheck()
    adapters = builtin_adapters() if with_builtins else []
    registry = CheckRegistry(
        [
            *adapters,
            Adapter("fake", FakeConfig, lambda _ctx: fake),
            # A plain-function check does not match the async protocol on purpose.
            Adapter("fake_blocking", BlockingFakeConfig, lambda _ctx: cast("Any", blocking)),
        ],
        settings=settings,
    )
    return registry, fake, blocking
