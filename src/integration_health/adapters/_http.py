"""The HTTP client every HTTP-based adapter shares (aiohttp underneath).

What it adds to a bare ``aiohttp.ClientSession``:

- the SSRF guard: targets that resolve to loopback, private, link-local, carrier-grade NAT
  or metadata addresses are refused (:class:`~integration_health.errors.UnsafeTargetError`)
  unless ``allow_private_networks`` is set; redirects are followed by hand so each hop is
  checked again;
- probe phases (DNS, connect + TLS, time to first byte, total) on a monotonic clock, marked
  by our own resolver and connector through a context variable (aiohttp's tracing signals cost
  ~10 % of a probe's CPU; see docs/benchmarks.md);
- a cap on the body size (an answer whose ``Content-Length`` is above it is refused before a
  byte of it is read; a body without one is read in 64 KiB pieces and abandoned at the cap),
  a recognisable ``User-Agent``, and no timeouts of its own (the runner owns the deadline —
  a server trickling one byte a second is ended there, not by a read timeout here);
- its own verifying TLS context, made for the first HTTPS request (or by the registry's
  warm-up), so the trust store follows ``SSL_CERT_FILE``/``SSL_CERT_DIR`` at that time (how a
  private CA is trusted), not whatever they were when aiohttp was imported — and a monitor of
  plain-HTTP endpoints never pays for loading the system trust store (~50 ms of CPU);
- a fresh connection per probe by default, so a check measures what a new client would see
  (DNS, TCP, TLS), and one integration never rides on another's keep-alive connection.

aiohttp was chosen on measured evidence (docs/benchmarks.md): at 100 requests in flight it
sustained several times httpx's throughput, with no false timeouts and ~1 ms cancellation
overshoot.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import json
import re
import socket
import ssl
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ..errors import UnsafeTargetError
from ..model import ErrorCode
from ..transport_errors import ProbeFailure
from ._network import is_public_address

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

    from ..settings import Settings

__all__ = ["HttpClient", "HttpResponse", "http_base_url", "is_public_address"]


def http_base_url(value: str, *, api_suffix: str | re.Pattern[str] | None = None) -> str:
    """A config URL validator: http(s) (or a ``${…}`` reference), no trailing slash.

    ``api_suffix`` (a path such as ``/v2`` or a pattern) is removed from the end, repeatedly,
    so a pasted API URL gives the base URL — and validating the result again changes nothing
    (``https://x/v2/v2/`` and ``https://x//v2`` both give ``https://x``).
    """
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://", "${")):
        raise ValueError("must be an http:// or https:// URL")
    while api_suffix is not None:
        if isinstance(api_suffix, str):
            shorter = value.removesuffix(api_suffix).rstrip("/")
        else:
            shorter = api_suffix.sub("", value).rstrip("/")
        if shorter == value:
            break
        value = shorter
    return value


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
READ_CHUNK_BYTES = 64 * 1024


_MARKS: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "integration_health_probe_marks", default=None
)
"""Phase timestamps of the request hop running in this task (set by :meth:`HttpClient.request`).

A context variable rather than aiohttp's ``TraceConfig``: tracing makes aiohttp build a params
object and await a signal for every one of ~8 events of every request, whether anyone listens
or not, which cost ~10 % of a fresh-connection probe's CPU. The resolver and connector below
mark the same moments the trace signals did (the request counts as sent when its new
connection is ready, a few tens of microseconds before aiohttp has serialised the headers),
for the price of a dictionary write. aiohttp runs a DNS lookup in a task created from the
requesting task, so the lookup sees (and marks) the dictionary of the request that started it
— as the trace signals did.
"""


def _mark(name: str) -> None:
    """Record ``name`` at the current monotonic time for the running request (first one wins)."""
    marks = _MARKS.get()
    if marks is not None and name not in marks:
        marks[name] = time.monotonic()


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then refuses non-public addresses."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        _mark("dns_start")
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            _mark("dns_end")
            return results
        public = [r for r in results if is_public_address(r["host"])]
        if not public:
            raise UnsafeTargetError(
                f"{host} resolves to a loopback, private, link-local or metadata address; "
                "such targets are refused unless INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS=true"
            )
        _mark("dns_end")
        return public

    async def close(self) -> None:
        await self._inner.close()


class HttpResponse:
    """What a probe request returned.

    ``headers`` is case-insensitive (``headers.get("retry-after")`` finds ``Retry-After``);
    ``url`` (the final URL, after redirects) is made into text when first read.
    """

    __slots__ = ("_url", "body", "elapsed_ms", "headers", "phases", "redirects", "status")

    def __init__(
        self,
        *,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        url: str | URL,
        elapsed_ms: float,
        phases: dict[str, float] | None = None,
        redirects: list[str] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self._url = url
        self.elapsed_ms = elapsed_ms
        self.phases: dict[str, float] = {} if phases is None else phases
        self.redirects: list[str] = [] if redirects is None else redirects

    @property
    def url(self) -> str:
        """The URL that gave this answer."""
        return str(self._url)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.url} {self.elapsed_ms:.1f} ms>"

    def json(self) -> Any:
        """The body parsed as JSON (raises :class:`ProbeFailure` ``bad_response``)."""

        try:
            return json.loads(self.body)
        except ValueError:
            raise ProbeFailure(
                ErrorCode.BAD_RESPONSE,
                f"The answer (HTTP {self.status}) is not valid JSON.",
            ) from None


class _TimedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that marks the probe phases of the request using it.

    ``connect_start``/``connect_end`` bracket the creation of a new connection (DNS, TCP and
    TLS; not marked when a pooled connection is reused) — the moments aiohttp's
    ``on_connection_create_start/end`` signals mark. Time to first byte is counted from
    ``connect_end`` (from the request's start on a reused connection): the request is written
    right after, and one overridden coroutine fewer in every request's path is worth more
    than the few microseconds aiohttp spends serialising the headers in between.
    """

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> ResponseHandler:
        _mark("connect_start")
        protocol = await super()._create_connection(req, traces, timeout)
        _mark("connect_end")
        return protocol


def _phases(marks: Mapping[str, float], started: float, ended: float) -> dict[str, float]:
    """Milliseconds spent resolving, connecting, waiting for the answer, and in all."""
    # Rounded to 0.01 ms as round(seconds * 100_000) / 100: an integer round, cheaper than
    # round(ms, 2), and the same but (at most 0.01 ms apart) on ties.
    phases: dict[str, float] = {}
    sent = started
    if "dns_end" in marks:
        phases["dns_ms"] = round((marks["dns_end"] - marks["dns_start"]) * 100_000) / 100
    if "connect_end" in marks:
        sent = marks["connect_end"]
        phases["connect_ms"] = round((sent - marks["connect_start"]) * 100_000) / 100
    if "headers_received" in marks:
        phases["ttfb_ms"] = round((marks["headers_received"] - sent) * 100_000) / 100
    phases["total_ms"] = round((ended - started) * 100_000) / 100
    return phases


def _too_large(status: int, cap: int, declared: int | None = None) -> ProbeFailure:
    said = f" (it announced {declared:,} bytes)" if declared is not None else ""
    return ProbeFailure(
        ErrorCode.BAD_RESPONSE,
        f"The answer is larger than {cap:,} bytes{said}; not read further.",
        details={"http_status": status},
    )


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, or :class:`ProbeFailure` ``bad_response`` as soon as it passes ``cap``.

    ``StreamReader.read(n)`` returns whatever is buffered (often a single TCP segment), so the
    body is read in a loop until the end of the stream; a connection that breaks off first
    raises ``aiohttp.ClientPayloadError`` (``connection``). At most ``cap`` + 64 KiB is held.
    """
    declared = response.content_length
    if declared is not None and declared > cap:
        raise _too_large(response.status, cap, declared)
    pieces: list[bytes] = []
    size = 0
    while True:
        piece = await response.content.read(min(READ_CHUNK_BYTES, cap + 1 - size))
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > cap:
            raise _too_large(response.status, cap)
        pieces.append(piece)


class HttpClient:
    """Shared HTTP client; one pool per event loop, closed with the registry."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[bool, aiohttp.ClientSession]
        ] = weakref.WeakKeyDictionary()
        self.user_agent = settings.user_agent
        self.max_response_bytes = settings.max_response_bytes
        self.allow_private = settings.allow_private_networks
        self._ssl_context: ssl.SSLContext | None = None
        self._recent: tuple[weakref.ref[asyncio.AbstractEventLoop], aiohttp.ClientSession] | None
        self._recent = None
        """The fresh-connection session last handed out, and its loop."""

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The verifying client context of every HTTPS request (made on first use).

        ``ssl.create_default_context()`` reads ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when it is
        called (aiohttp's own default context is made once, at import).
        """
        if self._ssl_context is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(("http/1.1",))
            self._ssl_context = context
        return self._ssl_context

    def session(self, *, keep_alive: bool = False) -> aiohttp.ClientSession:
        """The session of the running loop (fresh connections unless ``keep_alive``)."""
        loop = asyncio.get_running_loop()
        recent = self._recent
        if not keep_alive and recent is not None and recent[0]() is loop:
            recent_session = recent[1]
            if not recent_session.closed:
                return recent_session  # the common case, without the weak dictionary's lookups
        sessions = self._sessions.setdefault(loop, {})
        session = sessions.get(keep_alive)
        if session is None or session.closed:
            connector = _TimedConnector(
                limit=0,  # the runner bounds concurrency
                force_close=not keep_alive,
                resolver=GuardedResolver(self.allow_private),
                ttl_dns_cache=10,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": self.user_agent},
                auto_decompress=True,
                raise_for_status=False,
            )
            sessions[keep_alive] = session
        if not keep_alive:
            self._recent = (weakref.ref(loop), session)
        return session

    def check_target(self, url: str) -> URL:
        """Parse ``url`` and refuse non-HTTP schemes and non-public IP literals."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise UnsafeTargetError(f"invalid URL {url!r}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UnsafeTargetError(
                f"only http:// and https:// URLs with a host can be probed: {url}"
            )
        host = parsed.host.strip("[]")
        if not self.allow_private:
            try:
                ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                pass  # a name: the resolver checks what it resolves to
            else:
                if not is_public_address(host):
                    raise UnsafeTargetError(
                        f"{host} is a loopback, private, link-local or metadata address; such "
                        "targets are refused unless INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS=true"
                    )
        return parsed

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: Any = None,
        read_body: bool = True,
        follow_redirects: bool = True,
        keep_alive: bool = False,
        max_response_bytes: int | None = None,
    ) -> HttpResponse:
        """Send one request (following up to 5 redirects, each re-checked) and read the answer.

        Transport failures propagate as aiohttp/OS exceptions (the caller classifies them);
        a body above the size cap (by ``Content-Length`` or by what arrived) raises
        :class:`ProbeFailure` ``bad_response``; a body cut off raises ``ClientPayloadError``.
        """
        session = self.session(keep_alive=keep_alive)
        cap = max_response_bytes or self.max_response_bytes
        started = time.monotonic()
        redirects: list[str] = []
        current = url
        current_method = method
        while True:
            target = self.check_target(current)
            marks: dict[str, float] = {}
            token = _MARKS.set(marks)
            try:
                async with session.request(
                    current_method,
                    target,
                    headers=headers,
                    params=params if not redirects else None,
                    json=json,
                    data=data,
                    allow_redirects=False,
                    # Every HTTPS hop verifies with our context (see ssl_context).
                    ssl=self.ssl_context if target.scheme == "https" else True,
                ) as response:
                    marks.setdefault("headers_received", time.monotonic())
                    location = response.headers.get("Location")
                    if follow_redirects and response.status in REDIRECT_STATUSES and location:
                        current = urljoin(str(response.url), location)
                        if len(redirects) >= MAX_REDIRECTS:
                            # Query and fragment left out: they may carry tokens.
                            shown = URL(current).with_query(None).with_fragment(None)
                            raise ProbeFailure(
                                ErrorCode.BAD_RESPONSE,
                                f"More than {MAX_REDIRECTS} redirects (a redirect loop?): "
                                f"the last one pointed to {shown}.",
                                details={"redirects": len(redirects)},
                            )
                        redirects.append(current)
                        if response.status == 303 or (
                            response.status in (301, 302) and current_method == "POST"
                        ):
                            current_method = "GET"
                            json = data = None
                        continue
                    body = b""
                    if read_body and current_method != "HEAD":
                        body = await _read_capped(response, cap)
                    ended = time.monotonic()
                    return HttpResponse(
                        status=response.status,
                        headers=response.headers,
                        body=body,
                        url=response.url,
                        elapsed_ms=(ended - started) * 1000,
                        phases=_phases(marks, started, ended),
                        redirects=redirects,
                    )
            finally:
                _MARKS.reset(token)

    async def aclose(self) -> None:
        """Close every session."""
        for sessions in list(self._sessions.values()):
            for session in sessions.values():
                if not session.closed:
                    await session.close()
        self._sessions.clear()
        self._recent = None
