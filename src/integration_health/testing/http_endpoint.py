"""A fake HTTP endpoint with one path per failure mode, for the generic ``http`` adapter.

=============================  ==================================================
path                           behaviour
=============================  ==================================================
``/ok``                        200 to HEAD and GET
``/slow?ms=2500``              200 after ``ms`` milliseconds
``/hang``                      accepts the request, never answers
``/status/{code}``             answers ``code`` (``?retry_after=30`` adds the header)
``/head-not-allowed``          405 to HEAD, 200 to GET
``/not-implemented-head``      501 to HEAD, 200 to GET
``/redirect/{n}``              ``n`` redirects, then 200
``/loop``                      redirects to itself forever
``/redirect-to?url=…``         one redirect to ``url``
``/auth``                      200 with ``Authorization: Bearer <token>``, else 401
``/big?mb=100``                GET streams ``mb`` MiB
``/trickle``                   GET sends one byte per second
``/reset``                     closes the connection without answering
``/health``                    answers :attr:`HttpEndpointFake.health_status` (switchable)
=============================  ==================================================

Every request is logged in :attr:`HttpEndpointFake.requests` (method, path, headers).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["HttpEndpointFake", "LoggedRequest"]


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class HttpEndpointFake:
    """The aiohttp application; serve it with :class:`~integration_health.testing.LocalServer`."""

    def __init__(self, *, token: str = "fake-token") -> None:
        self.token = token
        self.requests: list[LoggedRequest] = []
        self.health_status = 200
        self.health_delay_ms = 0
        self.app = web.Application(middlewares=[self._log])
        self.app.router.add_route("*", "/ok", self._ok)
        self.app.router.add_route("*", "/slow", self._slow)
        self.app.router.add_route("*", "/hang", self._hang)
        self.app.router.add_route("*", "/status/{code}", self._status)
        self.app.router.add_route("*", "/head-not-allowed", self._head_405)
        self.app.router.add_route("*", "/not-implemented-head", self._head_501)
        self.app.router.add_route("*", "/redirect/{n}", self._redirect)
        self.app.router.add_route("*", "/loop", self._loop)
        self.app.router.add_route("*", "/redirect-to", self._redirect_to)
        self.app.router.add_route("*", "/auth", self._auth)
        self.app.router.add_route("*", "/big", self._big)
        self.app.router.add_route("*", "/trickle", self._trickle)
        self.app.router.add_route("*", "/reset", self._reset)
        self.app.router.add_route("*", "/health", self._health)

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests reached ``path`` (optionally with ``method``)."""
        return sum(
            1 for r in self.requests if r.path == path and (method is None or r.method == method)
        )

    @web.middleware
    async def _log(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(LoggedRequest(request.method, request.path, dict(request.headers)))
        return await handler(request)

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "2500")) / 1000)
        return web.Response(text="slow but ok")

    async def _hang(self, request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=code, headers=headers, text=f"status {code}")

    async def _head_405(self, request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=405, headers={"Allow": "GET"})
        return web.Response(text="GET works")

    async def _head_501(self, request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=501)
        return web.Response(text="GET works")

    async def _redirect(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n <= 0:
            return web.Response(text="arrived")
        raise web.HTTPFound(f"/redirect/{n - 1}")

    async def _loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def _redirect_to(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def _auth(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="invalid token")
        return web.Response(text="welcome")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        size = int(float(request.query.get("mb", "100")) * 1024 * 1024)
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * 65_536
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 3600
        await response.prepare(request)
        for _ in range(3600):
            await response.write(b"x")
            await asyncio.sleep(1)
        return response

    async def _reset(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(text="never delivered")

    async def _health(self, request: web.Request) -> web.Response:
        if self.health_delay_ms:
            await asyncio.sleep(self.health_delay_ms / 1000)
        return web.Response(status=self.health_status, text=f"status {self.health_status}")
