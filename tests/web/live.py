"""Helpers of the web tests: the app on a real 127.0.0.1 socket, JWTs, a two-org world."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from integration_health import HealthResult, HealthStatus
from integration_health.checks import IntegrationRecord
from integration_health.model import ErrorCode
from integration_health.store import Member, Organization, ResultWrite, Store
from integration_health.store.postgres import PostgresStore
from integration_health.testing import LocalServer
from integration_health.web.server import WebServer, bind_socket
from tests.store.conftest import admin_connect, database_url

HS_SECRET = "test-jwt-secret-of-at-least-thirty-two-bytes!"
SERVICE_KEY = "test-service-key-0123456789abcdef"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


class LiveServer:
    """``app`` served by uvicorn on 127.0.0.1 from a thread with its own event loop."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.server = WebServer(app, bind_socket("127.0.0.1", 0))
        self.url = self.server.url
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def __enter__(self) -> LiveServer:
        ready = threading.Event()

        async def main() -> None:
            started = asyncio.Event()
            serving = asyncio.create_task(self.server.serve(started))
            waiter = asyncio.create_task(started.wait())
            await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
            ready.set()
            waiter.cancel()
            await serving

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - reported to the test below
                self._failure = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="live-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if self._failure is not None or not self.server.started:
            raise RuntimeError(f"the app did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        if self._thread is not None:
            self._thread.join(30)


# -- tokens ------------------------------------------------------------------------------------


@dataclass
class Keys:
    """Signing keys of the tests (an RSA and an EC key pair, published as a JWKS)."""

    rsa: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
        ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
        return {"keys": [rsa_jwk, ec_jwk]}

    def rsa_public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def claims_for(
    user: uuid.UUID | str,
    *,
    aud: str = "authenticated",
    expires_in: int = 3600,
    **extra: Any,
) -> dict[str, Any]:
    """Supabase-shaped claims of a signed-in user."""
    now = int(time.time())
    return {
        "sub": str(user),
        "aud": aud,
        "role": "authenticated",
        "iat": now - 10,
        "exp": now + expires_in,
        **extra,
    }


def hs_token(claims: dict[str, Any], secret: str = HS_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def alg_none_token(claims: dict[str, Any]) -> str:
    """An unsigned token (``alg: none``), built by hand."""
    import base64

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def jwks_server(keys: Keys) -> Iterator[str]:
    """A JWKS endpoint on 127.0.0.1; yields its URL."""
    app = web.Application()
    requests = {"count": 0}

    async def serve(request: web.Request) -> web.Response:
        requests["count"] += 1
        return web.json_response(keys.jwks())

    app.router.add_get("/.well-known/jwks.json", serve)
    with LocalServer(app).in_thread() as server:
        yield f"{server.url}/.well-known/jwks.json"


# -- a world of two organisations ----------------------------------------------------------------


@dataclass
class World:
    """Org A (Alpha AS) and org B (Bravo AS), one member each, integrations with results."""

    org_a: uuid.UUID = field(default_factory=uuid.uuid4)
    org_b: uuid.UUID = field(default_factory=uuid.uuid4)
    user_a: uuid.UUID = field(default_factory=uuid.uuid4)
    user_b: uuid.UUID = field(default_factory=uuid.uuid4)
    stranger: uuid.UUID = field(default_factory=uuid.uuid4)
    a_ok: uuid.UUID = field(default_factory=uuid.uuid4)
    a_down: uuid.UUID = field(default_factory=uuid.uuid4)
    a_new: uuid.UUID = field(default_factory=uuid.uuid4)
    b_secret: uuid.UUID = field(default_factory=uuid.uuid4)

    B_NAME = "Bravo AS"
    B_INTEGRATION = "Bravo confidential ledger"


def _record(org: uuid.UUID, integration: uuid.UUID, name: str, url: str) -> IntegrationRecord:
    return IntegrationRecord(
        integration_id=integration,
        org_id=org,
        integration_type="http",
        name=name,
        config={"url": url},
    )


async def seed_world(store: Store, world: World, base_url: str = "http://127.0.0.1:9") -> None:
    """Store the world with a few results per checked integration (history: oldest first)."""
    await store.import_definitions(
        [Organization(world.org_a, "Alpha AS"), Organization(world.org_b, world.B_NAME)],
        [Member(world.org_a, world.user_a, "admin"), Member(world.org_b, world.user_b, "member")],
        [
            _record(world.org_a, world.a_ok, "Alpha webhook", f"{base_url}/ok"),
            _record(world.org_a, world.a_down, "Alpha export", f"{base_url}/status/503"),
            _record(world.org_a, world.a_new, "Alpha newcomer", f"{base_url}/ok"),
            _record(world.org_b, world.b_secret, world.B_INTEGRATION, f"{base_url}/ok"),
        ],
    )
    writes = []
    for i in range(5):
        at = T0 + timedelta(minutes=15 * i)
        writes.append(_write(world.org_a, world.a_ok, HealthResult.healthy(100 + i), at))
        down = (
            HealthResult.healthy(90)
            if i < 3
            else HealthResult.unreachable(ErrorCode.SERVER_ERROR, "HTTP 503 from the vendor", 40)
        )
        writes.append(_write(world.org_a, world.a_down, down, at))
        writes.append(_write(world.org_b, world.b_secret, HealthResult.healthy(7), at))
    await store.record_results(writes)


def _write(
    org: uuid.UUID, integration: uuid.UUID, result: HealthResult, at: datetime
) -> ResultWrite:
    return ResultWrite(
        org_id=org,
        integration_id=integration,
        integration_type="http",
        result=result.model_copy(update={"checked_at": at}),
        next_check_at=at + timedelta(minutes=15),
    )


STATUSES = {s.value for s in HealthStatus}


class Clock:
    """A settable monotonic clock (for the answer cache)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def postgres_world() -> Iterator[tuple[str, World]]:
    """A fresh PostgreSQL database with the schema and the two-organisation world; dropped
    afterwards. Yields its URL and the world."""
    name = f"ih_web_{uuid.uuid4().hex[:16]}"
    with admin_connect() as admin:
        admin.execute(f'create database "{name}"')
    try:
        url = database_url(name)
        world = World()

        async def seed() -> None:
            store = await PostgresStore.open(url)
            try:
                await store.upgrade()
                await seed_world(store, world)
            finally:
                await store.aclose()

        asyncio.run(seed())
        yield url, world
    finally:
        with admin_connect() as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')
