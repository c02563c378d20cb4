"""What every fake vendor shares: scenarios, a request log, generic misbehaviour."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from aiohttp import web
from aiohttp.typedefs import Handler

from ..http_endpoint import LoggedRequest

__all__ = ["COMMON_SCENARIOS", "VendorFake"]

COMMON_SCENARIOS = frozenset(
    {
        "ok",  # everything works
        "slow",  # answers correctly after slow_ms
        "bad_credentials",  # the vendor's own form of "credentials rejected"
        "not_found",  # unknown tenant / company / environment, in the vendor's form
        "rate_limited",  # the vendor's own rate-limit form (429, errors in a 200 body, …)
        "server_error",  # 5xx
        "garbage",  # 200 with a body that is not what the API returns
        "hang",  # accepts the request and never answers
        "reset",  # closes the connection without answering
    }
)


class VendorFake:
    """Base class of fake vendors.

    Subclasses add their routes to :attr:`app` in ``__init__`` and call
    :meth:`generic_misbehaviour` at the top of each handler (it handles ``slow``, ``hang``,
    ``server_error``, ``reset`` in one place). ``scenario`` may name a vendor-specific
    scenario too (listed in the subclass's ``SCENARIOS``).
    """

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS
    slow_ms: int = 2_500

    def __init__(self) -> None:
        self.scenario = "ok"
        self.requests: list[LoggedRequest] = []
        self.token_requests = 0
        """How many tokens the fake issued (adapters must cache them)."""
        self.app = web.Application(middlewares=[self._log])

    def set_scenario(self, scenario: str) -> None:
        """Switch behaviour (raises on a name the fake does not know)."""
        if scenario not in self.SCENARIOS:
            raise ValueError(f"{type(self).__name__} has no scenario {scenario!r}")
        self.scenario = scenario

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests reached ``path``."""
        return sum(
            1 for r in self.requests if r.path == path and (method is None or r.method == method)
        )

    @web.middleware
    async def _log(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(LoggedRequest(request.method, request.path, dict(request.headers)))
        return await handler(request)

    async def generic_misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        """Handle the scenarios every vendor shares; ``None`` means "answer normally"."""
        if self.scenario == "slow":
            await asyncio.sleep(self.slow_ms / 1000)
            return None
        if self.scenario == "hang":
            await asyncio.Event().wait()
        if self.scenario == "server_error":
            return web.Response(status=503, text="Service Unavailable", content_type="text/html")
        if self.scenario == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(text="never delivered")
        return None
