"""Fake HTTP servers for the benchmarks, each running in a process of its own.

A benchmark measures the *client*: the server must not share its interpreter (GIL, event
loop, CPU accounting) with it. :class:`ServerProcess` starts ``python _servers.py serve …``,
reads the port it listens on, and reports how much CPU the server used, so a table can show
whether the server (not the client) was the bottleneck.

Kinds of server:

=========  ===================================================================================
``aiohttp``  an ``aiohttp.web`` application answering 200 ``ok`` to any method and path
             (keep-alive unless the client sends ``Connection: close``)
``raw``      a minimal HTTP/1.1 responder on a bare ``asyncio.Protocol``: 200 with an empty
             body to every request, far cheaper than any framework, so that throughput
             benchmarks measure the client and not the server
``hang``     accepts connections, reads requests and never answers
=========  ===================================================================================

``workers > 1`` starts that many server processes sharing the port (``SO_REUSEPORT``).

Run ``python bench/_servers.py serve --kind raw`` to try a server by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import select
import signal
import subprocess
import sys
from types import TracebackType

__all__ = ["ServerProcess", "markdown_table", "percentile", "raise_fd_limit"]

KINDS = ("aiohttp", "raw", "hang")

_OK_KEEP_ALIVE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
_OK_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
)


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft file-descriptor limit to the hard one; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        target = max(soft, 65_536) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if soft != target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux only)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime field 14, stime field 15 (1-based).
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A fake server in its own process(es); use as a context manager.

    >>> with ServerProcess("raw") as server:  # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(
        self,
        kind: str = "aiohttp",
        *,
        workers: int = 1,
        host: str = "127.0.0.1",
        delay_ms: float = 0.0,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if delay_ms < 0 or (delay_ms and kind != "raw"):
            raise ValueError("delay_ms must be at least 0, and only the raw server takes one")
        self.kind = kind
        self.delay_ms = delay_ms
        self.workers = workers
        self.host = host
        self.port = 0
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def cpu_seconds(self) -> float | None:
        """CPU seconds the server processes have used so far (``None`` off Linux)."""
        total = 0.0
        for proc in self._procs:
            used = process_cpu_seconds(proc.pid)
            if used is None:
                return None
            total += used
        return total

    def _spawn(self, port: int) -> int:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "serve",
            "--kind",
            self.kind,
            "--host",
            self.host,
            "--port",
            str(port),
        ]
        if self.workers > 1:
            command.append("--reuse-port")
        if self.delay_ms:
            command += ["--delay-ms", str(self.delay_ms)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE)  # noqa: S603 - our own script
        self._procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the {self.kind} server did not start (got {line!r})")
        return int(line.split()[1])

    def start(self) -> ServerProcess:
        """Start the server process(es) and wait until they listen."""
        self.port = self._spawn(0)
        for _ in range(self.workers - 1):
            self._spawn(self.port)
        return self

    def stop(self) -> None:
        """Stop every server process."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values`` by the nearest-rank method (0.0 if empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def markdown_table(headers: list[str], rows: list[list[str]], *, left: int = 1) -> str:
    """A Markdown table padded to read well in a terminal; the first ``left`` columns are text."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            (":" + "-" * (w + 1)) if i < left else ("-" * (w + 1) + ":")
            for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# -- the server side (runs in the child process) ---------------------------------------------


class _OkProtocol(asyncio.Protocol):
    """200 with an empty body to every request head; requests are assumed to have no body.

    With ``delay_s``, each answer leaves that long after its request arrived, as from a
    vendor whose API takes that long (the server's CPU per request stays the same)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._delay_s = delay_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].lower()
            self._buffer = self._buffer[end + 4 :]
            close = b"connection: close" in head
            if self._delay_s:
                asyncio.get_running_loop().call_later(self._delay_s, self._answer, close)
            else:
                self._answer(close)
            if close:
                return

    def _answer(self, close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the client gave up first
        if close:
            transport.write(_OK_CLOSE)
            transport.close()
        else:
            transport.write(_OK_KEEP_ALIVE)

    def eof_received(self) -> bool | None:
        if self._transport is not None:
            self._transport.close()
        return None


class _HangProtocol(asyncio.Protocol):
    """Reads whatever arrives and never answers; closes when the client does."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        self._transport.close()
        return None


async def _serve(kind: str, host: str, port: int, reuse_port: bool, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if kind == "aiohttp":
        from aiohttp import web  # noqa: PLC0415 - only this kind needs it

        async def ok(_request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=4096, reuse_port=reuse_port or None)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        bound = server.sockets[0].getsockname()[1]
        print(f"LISTENING {bound}", flush=True)
        await stop.wait()
        await runner.cleanup()
        return

    def factory() -> asyncio.Protocol:
        return _OkProtocol(delay_s) if kind == "raw" else _HangProtocol()

    raw = await loop.create_server(factory, host, port, backlog=4096, reuse_port=reuse_port or None)
    print(f"LISTENING {raw.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    raw.close()


def main(argv: list[str] | None = None) -> None:
    """``serve``: run one server process until SIGTERM (used by :class:`ServerProcess`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one server process until SIGTERM/Ctrl-C")
    serve.add_argument("--kind", choices=KINDS, default="aiohttp")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--reuse-port", action="store_true", help="share the port (SO_REUSEPORT)")
    serve.add_argument(
        "--delay-ms", type=float, default=0.0, help="raw: answer this long after each request"
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(_serve(args.kind, args.host, args.port, args.reuse_port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
