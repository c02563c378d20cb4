"""A fake Xledger GraphQL endpoint (``POST /graphql``), shapes from ``shared/vendors.md`` §1.

It checks requests as Xledger does: ``Authorization: token <api token>`` (anything else —
``Bearer``, no header — gets the verified "Bad format for API Token" error; an unknown token
gets "API Token is invalid or expired", an unverified wording), a JSON body with a ``query``
string (else HTTP 400 ``{"errors": [{"message": "Must provide query string."}]}``). Like
Xledger, auth errors and rate limits come back as **HTTP 200** with ``errors[]`` (set
:attr:`XledgerFake.auth_error_status` to 401 to test the other possibility).

Queries: ``__typename`` → ``{"data": {"__typename": "Query"}}``;
``entities(first: …)`` → one entity; anything else → a GraphQL validation error.
``HEAD``/``GET /graphql`` (the network-level probe) answer 405 ``Allow: POST`` (unverified).
Every ``POST`` with a valid token counts in :attr:`XledgerFake.billable_requests`.

Scenarios: the common ones — ``bad_credentials`` (the token is refused with the "Bad format"
message), ``not_found``
(HTTP 404: no GraphQL endpoint at this base URL), ``rate_limited``
(``BAD_REQUEST.BURST_RATE_LIMIT_REACHED`` in a 200), ``server_error`` (503 with
``Retry-After``), ``garbage`` (an HTML page) — plus ``concurrency_limited``
(``BAD_REQUEST.CONCURRENCY_LIMIT_REACHED``), ``out_of_credits``
(``BAD_REQUEST.INSUFFICIENT_CREDITS`` with ``extensions.resetAt`` =
:attr:`XledgerFake.credits_reset_at`), ``forbidden`` (``FORBIDDEN`` "Access denied") and
``oversized`` (a 2 MiB answer).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS, VendorFake

__all__ = ["BAD_FORMAT_MESSAGE", "XledgerFake"]

BAD_FORMAT_MESSAGE = (
    'Bad format for API Token. Expected header: "Authorization: token <your-token>"'
)
OVERSIZED_BYTES = 2 * 1024 * 1024


class XledgerFake(VendorFake):
    """Serve with :class:`~integration_health.testing.LocalServer`; see the module docstring."""

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS | {
        "concurrency_limited",
        "out_of_credits",
        "forbidden",
        "oversized",
    }
    retry_after_s: int = 30
    """``Retry-After`` of the 503 answer."""

    def __init__(self, *, token: str) -> None:
        super().__init__()
        self.token = token
        self.auth_error_status = 200
        """HTTP status of token errors (Xledger's is unverified: 200 by default, or 401)."""
        self.credits_reset_at: Any = (datetime.now(UTC) + timedelta(minutes=20)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        """``extensions.resetAt`` of ``out_of_credits`` (any JSON value)."""
        self.billable_requests = 0
        """POSTs with a valid token that reached the GraphQL engine."""
        self.queries: list[str] = []
        self.app.router.add_route("*", "/graphql", self._graphql)

    @staticmethod
    def _errors(*errors: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response({"errors": list(errors)}, status=status)

    async def _misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        if self.scenario == "not_found":
            return web.Response(status=404, text="<h1>Not Found</h1>", content_type="text/html")
        if self.scenario == "server_error":
            return web.Response(
                status=503,
                text="Service Unavailable",
                content_type="text/html",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "garbage":
            return web.Response(
                text="<html><body>Xledger is down for maintenance</body></html>",
                content_type="text/html",
            )
        if self.scenario == "oversized":
            return web.Response(
                body=b'{"data":{"__typename":"' + b"x" * OVERSIZED_BYTES + b'"}}',
                content_type="application/json",
            )
        return await self.generic_misbehaviour(request)

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        answer = await self._misbehaviour(request)
        if answer is not None:
            return answer
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "token" or not token.strip() or self.scenario == "bad_credentials":
            return self._errors({"message": BAD_FORMAT_MESSAGE}, status=self.auth_error_status)
        if token.strip() != self.token:
            return self._errors(
                {"message": "API Token is invalid or expired"}, status=self.auth_error_status
            )
        if request.content_type != "application/json":
            return self._errors({"message": "Must provide query string."}, status=400)
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._errors({"message": "Body is not valid JSON."}, status=400)
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            return self._errors({"message": "Must provide query string."}, status=400)
        self.billable_requests += 1
        self.queries.append(query)
        if self.scenario == "rate_limited":
            return self._errors(
                {"message": "Too many requests", "code": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"}
            )
        if self.scenario == "concurrency_limited":
            return self._errors(
                {"message": "Too many requests", "code": "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"}
            )
        if self.scenario == "out_of_credits":
            return self._errors(
                {
                    "message": "Not enough credits",
                    "code": "BAD_REQUEST.INSUFFICIENT_CREDITS",
                    "extensions": {"resetAt": self.credits_reset_at},
                }
            )
        if self.scenario == "forbidden":
            return web.json_response(
                {"data": None, "errors": [{"message": "Access denied", "code": "FORBIDDEN"}]}
            )
        if "entities" in query:
            return web.json_response({"data": {"entities": {"edges": [{"node": {"dbId": 12345}}]}}})
        if "__typename" in query:
            return web.json_response({"data": {"__typename": "Query"}})
        return self._errors(
            {"message": "Validation error: the query does not match the schema."}, status=200
        )
