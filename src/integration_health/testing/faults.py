"""A misbehaving HTTP(S) server on a real 127.0.0.1 socket, for vendor fault injection.

Real vendors fail in ways a well-behaved framework server cannot imitate: they drop the
connection half-way through an answer, trickle bytes, send gigantic bodies, present broken
certificates or redirect forever. :class:`FaultServer` speaks just enough raw HTTP/1.1 over
:func:`asyncio.start_server` to do each of those on purpose. The first path segment picks the
fault, so a vendor adapter that appends its own path (Xledger posts to ``{base_url}/graphql``)
can be pointed at one with ``base_url=f"{server.url}/reset-body"``:

==================  =====================================================================
first segment       behaviour
==================  =====================================================================
``ok``              200 with a small JSON body (``{"data": {"__typename": "Query"}}``)
``reset-head``      half of the status line and headers, then a TCP RST (``SO_LINGER`` 0)
``reset-body``      complete headers (``Content-Length: 1000``), 100 bytes of body, then RST
``trickle-head``    the status line and headers, one byte per ``trickle_interval_s``
``trickle-body``    complete headers, then the body one byte per ``trickle_interval_s``
``big``             ``big_bytes`` (100 MiB) of body with ``Content-Length``, streamed
``big-stream``      ``big_bytes`` of body without ``Content-Length`` (ends at close)
``gzip-bomb``       ``Content-Encoding: gzip``, ~0.1 % of ``big_bytes`` on the wire (with
                    ``Content-Length``) that decompresses to ``big_bytes`` of zeros
``loop``            302 to the very same URL, forever
anything else       404
==================  =====================================================================

``HEAD`` gets the same headers and no body (the ``reset-*`` and ``trickle-*`` faults still
apply to the headers). Bodies are streamed from one shared chunk, so the server never holds a
large body in memory; :attr:`FaultServer.body_bytes_sent` says how much of it a client
actually took. With ``tls`` set to a :data:`~integration_health.testing.tls_server.TlsScenario`
(``valid``, ``expired``, ``untrusted`` (self-signed), ``wrong_host`` …) the server speaks
HTTPS with that scenario's certificate from :class:`~.tls_server.TestCertificates` (the
private CA's certificate is :attr:`TestCertificates.ca_pem`).

DNS failure needs no server: use a name under ``.invalid`` (RFC 6761 guarantees it never
resolves), e.g. :data:`UNRESOLVABLE_HOST`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
import zlib
from types import TracebackType

from .tls_server import TestCertificates

__all__ = ["FAULTS", "UNRESOLVABLE_HOST", "FaultServer"]

FAULTS = (
    "ok",
    "reset-head",
    "reset-body",
    "trickle-head",
    "trickle-body",
    "big",
    "big-stream",
    "gzip-bomb",
    "loop",
)
"""The first path segments :class:`FaultServer` understands."""

UNRESOLVABLE_HOST = "integration-health-fault.invalid"
"""A host name that never resolves (RFC 6761 reserves ``.invalid``)."""

OK_BODY = b'{"data": {"__typename": "Query"}}'
_CHUNK = bytes(64 * 1024)
_MAX_REQUEST_HEAD = 64 * 1024
_MAX_REQUEST_BODY = 1024 * 1024


class FaultServer:
    """Serves the faults of the module docstring on 127.0.0.1 (in the running event loop).

    ``async with FaultServer() as server:`` starts it on a free port; :attr:`url` is its base
    URL. ``tls`` turns on HTTPS with the certificate of that scenario.
    """

    def __init__(
        self,
        *,
        tls: str | None = None,
        certificates: TestCertificates | None = None,
        host: str = "127.0.0.1",
        big_bytes: int = 100 * 1024 * 1024,
        trickle_interval_s: float = 1.0,
    ) -> None:
        self.tls = tls
        if tls is not None and certificates is None:
            certificates = TestCertificates()
        self.certificates = certificates
        self.host = host
        self.port = 0
        self.big_bytes = big_bytes
        self.trickle_interval_s = trickle_interval_s
        self.requests: list[tuple[str, str]] = []
        """``(method, path)`` of every request read completely."""
        self.connections = 0
        """TCP connections accepted."""
        self.body_bytes_sent = 0
        """Body bytes of ``big``/``big-stream`` answers the kernel accepted (all clients)."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash (``localhost`` with TLS, so names can match)."""
        if self.tls is not None:
            return f"https://localhost:{self.port}"
        return f"http://{self.host}:{self.port}"

    def url_for(self, fault: str, path: str = "") -> str:
        """The URL that triggers ``fault`` (one of :data:`FAULTS`), with ``path`` appended."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        return f"{self.url}/{fault}{path}"

    async def start(self) -> FaultServer:
        """Start listening on a free port."""
        ssl_context = None
        if self.tls is not None:
            assert self.certificates is not None
            ssl_context = self.certificates.server_context(self.tls)
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=ssl_context, backlog=256
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and end every connection still being served."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def __aenter__(self) -> FaultServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- one connection -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            request = await _read_request(reader)
            if request is not None:
                method, path = request
                self.requests.append((method, path))
                await self._answer(method, path, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the client gave up: that is what these faults provoke
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Not re-raised: on Python 3.11, asyncio's stream
            # callback calls task.exception() on a cancelled handler and logs the error.
            _reset(writer)
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _answer(self, method: str, path: str, writer: asyncio.StreamWriter) -> None:
        fault = path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        head_only = method == "HEAD"
        if fault == "ok":
            await _send(writer, _head(200, len(OK_BODY)) + (b"" if head_only else OK_BODY))
        elif fault == "reset-head":
            head = _head(200, len(OK_BODY))
            await _send(writer, head[: len(head) // 2])
            await _reset_soon(writer)
        elif fault == "reset-body":
            await _send(writer, _head(200, 1000) + (b"" if head_only else b"{" + b" " * 99))
            await _reset_soon(writer)
        elif fault == "trickle-head":
            await self._trickle(writer, _head(200, len(OK_BODY)) + OK_BODY)
        elif fault == "trickle-body":
            await _send(writer, _head(200, 1000))
            if not head_only:
                await self._trickle(writer, b"{" + b" " * 999)
        elif fault in ("big", "big-stream"):
            length = self.big_bytes if fault == "big" else None
            await _send(writer, _head(200, length, content_type=b"application/octet-stream"))
            if not head_only:
                await self._stream(writer)
        elif fault == "gzip-bomb":
            # Compressing takes ~0.3 s the first time: not on the loop the clients share.
            body = await asyncio.to_thread(_gzip_zeros, self.big_bytes)
            await _send(writer, _head(200, len(body), content_encoding=b"gzip"))
            if not head_only:
                await _send(writer, body)
                self.body_bytes_sent += len(body)
        elif fault == "loop":
            await _send(writer, _head(302, 0, location=path.encode("latin-1")))
        else:
            await _send(writer, _head(404, 0))

    async def _trickle(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        for index in range(len(data)):
            await _send(writer, data[index : index + 1])
            await asyncio.sleep(self.trickle_interval_s)

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        left = self.big_bytes
        while left > 0:
            piece = _CHUNK if left >= len(_CHUNK) else _CHUNK[:left]
            writer.write(piece)
            await writer.drain()
            left -= len(piece)
            self.body_bytes_sent += len(piece)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    """The method and path of one request (its body is read and dropped), or ``None``."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return None
    if len(head) > _MAX_REQUEST_HEAD:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length > _MAX_REQUEST_BODY:
        return None
    if length:
        await reader.readexactly(length)
    return parts[0].upper(), parts[1]


@functools.lru_cache(maxsize=4)
def _gzip_zeros(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed (about a thousandth of ``size``)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    pieces = [packer.compress(_CHUNK) for _ in range(size // len(_CHUNK))]
    pieces.append(packer.compress(_CHUNK[: size % len(_CHUNK)]))
    pieces.append(packer.flush())
    return b"".join(pieces)


def _head(
    status: int,
    length: int | None,
    *,
    content_type: bytes = b"application/json",
    content_encoding: bytes | None = None,
    location: bytes | None = None,
) -> bytes:
    reason = {200: b"OK", 302: b"Found", 404: b"Not Found"}[status]
    lines = [b"HTTP/1.1 %d %s" % (status, reason), b"Content-Type: " + content_type]
    if content_encoding is not None:
        lines.append(b"Content-Encoding: " + content_encoding)
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    if location is not None:
        lines.append(b"Location: " + location)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _reset_soon(writer: asyncio.StreamWriter) -> None:
    """Let the client read what was sent, then reset the connection mid-answer."""
    await asyncio.sleep(0.05)
    _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST (``SO_LINGER`` on, timeout 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
