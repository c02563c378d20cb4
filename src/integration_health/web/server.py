"""Serving the app with uvicorn: binding, refusing unsafe binds, stopping gracefully.

``serve`` and ``demo`` run :class:`WebServer` inside their own event loop (so the store,
the scheduler and the fake vendors share it). SIGTERM or Ctrl-C stops accepting requests,
lets the ones in flight finish, runs the app's shutdown (the scheduler's pass in progress
finishes and is written) and returns normally — the process then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from .._heap import settle_heap
from ..errors import ConfigError
from ..settings import Settings
from .auth import is_loopback_host

__all__ = ["WebServer", "bind_socket", "ensure_bind_allowed", "url_for"]


def ensure_bind_allowed(settings: Settings, host: str) -> None:
    """Refuse to serve without authentication anywhere but on loopback."""
    if settings.jwt_secret is None and not settings.jwks_url and not is_loopback_host(host):
        raise ConfigError(
            f"refusing to serve on {host} without authentication: anyone who can reach it "
            "would see every organization. Set INTEGRATION_HEALTH_JWT_SECRET (or "
            "INTEGRATION_HEALTH_JWKS_URL), or serve on 127.0.0.1."
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def url_for(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn, but a handled SIGTERM/SIGINT ends ``serve()`` normally (exit code 0)
    instead of being re-raised after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        handled = (signal.SIGINT, signal.SIGTERM)
        for sig in handled:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)


async def _freeze_heap_once_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Once the app has started, move everything allocated so far (modules, the app, its
    routes and models, the store's pools) out of the garbage collector's sight.

    Those objects live as long as the process; without this every full collection walks them
    all again, and one took up to 150 ms on a loaded machine: requests arriving meanwhile wait.
    The collector's thresholds are raised too (:func:`integration_health._heap.settle_heap`).
    """
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn sets a flag
        await asyncio.sleep(0.02)
    if server.started:
        settle_heap()


class WebServer:
    """One app served on one socket, in the running event loop."""

    def __init__(self, app: FastAPI, sock: socket.socket, *, access_log: bool = False) -> None:
        self.sock = sock
        self.url = url_for(sock)
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,  # keep the CLI's logging set-up
            access_log=access_log,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        self._server = _Server(config)

    async def serve(self, started: asyncio.Event | None = None) -> None:
        """Serve until stopped (a signal, or :meth:`stop`); set ``started`` once listening."""
        task = asyncio.create_task(self._server.serve(sockets=[self.sock]))
        if started is not None:
            while not self._server.started and not task.done():  # noqa: ASYNC110 - uvicorn sets a flag, not an event
                await asyncio.sleep(0.02)
            if self._server.started:
                started.set()
        freezer = asyncio.create_task(_freeze_heap_once_started(self._server, task))
        try:
            await task
        except SystemExit as exc:  # uvicorn exits when the app's start-up fails
            raise ConfigError("the web application failed to start (see the log above)") from exc
        finally:
            freezer.cancel()

    @property
    def started(self) -> bool:
        """True once the app's start-up finished and the socket accepts requests."""
        return bool(self._server.started)

    def stop(self) -> None:
        """Ask the server to stop gracefully."""
        self._server.should_exit = True
