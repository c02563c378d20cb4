"""A fake Fiken API v2 that enforces Fiken's one-request-at-a-time rule per token.

Shapes follow ``shared/vendors.md`` §5: ``GET /api/v2/user`` → ``{"name","email"}``;
``GET /api/v2/companies/{slug}`` → the company object with ``hasApiAccess``; personal tokens
as ``Authorization: Bearer <token>``, anything else 401; a company the user cannot see is 403
(it exists) or 404 (it does not).

**Overlap detection.** Requests in flight are counted per presented token; a request that
arrives while another with the same token is in flight is answered **429** (Fiken's
documented reaction; it has no ``Retry-After``) and counted in :attr:`FikenFake.overlaps`.
:attr:`FikenFake.max_concurrency` is the most requests ever seen in flight for one token —
a test proves an adapter never overlaps by asserting it stays 1. Set
:attr:`FikenFake.delay_ms` so each request stays in flight long enough for overlaps to show.

Scenarios: the common ones plus ``oversized`` and ``no_api_access`` (``hasApiAccess: false``).
``server_error`` is a 503 HTML page with ``Retry-After``; ``rate_limited`` a 429 without one.
Bodies of Fiken's 401/403/404/429 are not documented; the JSON used here is a placeholder.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS, VendorFake

__all__ = ["FikenFake"]

OVERSIZED_BYTES = 2 * 1024 * 1024


class FikenFake(VendorFake):
    """Serve with :class:`~integration_health.testing.LocalServer`; see the module docstring."""

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS | {"oversized", "no_api_access"}
    retry_after_s: int = 30
    """``Retry-After`` sent with the 503 of ``server_error``."""

    def __init__(self, *, token: str, company_slug: str = "fiken-as") -> None:
        super().__init__()
        self.token = token
        self.company_slug = company_slug
        self.companies: dict[str, dict[str, Any]] = {
            company_slug: {
                "name": "Fiken AS",
                "slug": company_slug,
                "organizationNumber": "913312465",
                "vatType": "yearly",
                "hasApiAccess": True,
                "testCompany": False,
                "creationDate": "2018-04-03",
            }
        }
        """Companies the token's user can see, by slug."""
        self.other_companies: set[str] = {"someone-elses-company"}
        """Slugs that exist but belong to other users (403)."""
        self.delay_ms = 0
        """How long each request stays in flight before it is answered."""
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.max_concurrency = 0
        """The most requests ever in flight at once for one token."""
        self.overlaps = 0
        """Requests refused with 429 because another one with the token was in flight."""
        self.request_ids: list[str] = []
        self.app.router.add_get("/api/v2/user", self._user)
        self.app.router.add_get("/api/v2/companies/{slug}", self._company)

    async def _serialised(self, request: web.Request, answer: Any) -> web.StreamResponse:
        """Run ``answer`` as one in-flight request of the presented token (429 on overlap)."""
        token = request.headers.get("Authorization", "")
        self.in_flight[token] += 1
        try:
            self.max_concurrency = max(self.max_concurrency, self.in_flight[token])
            if self.in_flight[token] > 1:
                self.overlaps += 1
                return web.json_response(
                    {"error": "too_many_requests", "message": "Only one request at a time."},
                    status=429,
                )
            if self.delay_ms:
                await asyncio.sleep(self.delay_ms / 1000)
            response: web.StreamResponse = await answer(request)
            return response
        finally:
            self.in_flight[token] -= 1

    async def generic_misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        """The common scenarios, in Fiken's forms."""
        if self.scenario == "server_error":
            return web.Response(
                status=503,
                text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                content_type="text/html",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "rate_limited":
            return web.json_response(
                {"error": "too_many_requests", "message": "Slow down."}, status=429
            )
        if self.scenario == "garbage":
            return web.Response(text="<html><body>Fiken</body></html>", content_type="text/html")
        if self.scenario == "oversized":
            return web.Response(
                body=b'{"name":"' + b"x" * OVERSIZED_BYTES + b'"}',
                content_type="application/json",
            )
        return await super().generic_misbehaviour(request)

    def _authorised(self, request: web.Request) -> bool:
        request_id = request.headers.get("X-Request-ID")
        if request_id:
            self.request_ids.append(request_id)
        return (
            request.headers.get("Authorization") == f"Bearer {self.token}"
            and self.scenario != "bad_credentials"
        )

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.json_response(
            {"error": "unauthorized", "message": "Not authenticated"}, status=401
        )

    async def _user(self, request: web.Request) -> web.StreamResponse:
        async def answer(request: web.Request) -> web.StreamResponse:
            misbehaviour = await self.generic_misbehaviour(request)
            if misbehaviour is not None:
                return misbehaviour
            if not self._authorised(request):
                return self._unauthorised()
            return web.json_response({"name": "Test Testesen", "email": "test@fiken.no"})

        return await self._serialised(request, answer)

    async def _company(self, request: web.Request) -> web.StreamResponse:
        async def answer(request: web.Request) -> web.StreamResponse:
            misbehaviour = await self.generic_misbehaviour(request)
            if misbehaviour is not None:
                return misbehaviour
            if not self._authorised(request):
                return self._unauthorised()
            slug = request.match_info["slug"]
            company = self.companies.get(slug)
            if slug in self.other_companies:
                return web.json_response(
                    {"error": "forbidden", "message": "Not authorized"}, status=403
                )
            if company is None or self.scenario == "not_found":
                return web.json_response({"error": "not_found", "message": "Not found"}, status=404)
            if self.scenario == "no_api_access":
                company = {**company, "hasApiAccess": False}
            return web.json_response(company)

        return await self._serialised(request, answer)
