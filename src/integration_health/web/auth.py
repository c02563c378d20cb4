"""Who is asking: a Supabase user (JWT), the sync system (service key), or the local user.

Three kinds of callers reach the API:

- **users**, with ``Authorization: Bearer <Supabase JWT>``. The token is verified with the
  HS256 secret (``INTEGRATION_HEALTH_JWT_SECRET``) or with the keys published at a JWKS URL
  (``INTEGRATION_HEALTH_JWKS_URL``, RS256/ES256); its expiry, audience and (if configured)
  issuer are checked. The algorithm decides which key is used and each key accepts only its
  own algorithms, so ``alg: none`` and HS/RS key confusion are refused. The user is the
  token's ``sub``.
- **the sync system**, posting sync outcomes with the service key
  (``INTEGRATION_HEALTH_SERVICE_KEY``), compared in constant time.
- **the local user**, when no JWT secret or JWKS URL is configured: embedded single-user mode,
  which serves only loopback clients (and ``serve`` refuses to bind anywhere else).

Every refusal is an :class:`AuthError` whose message never echoes the token or the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

import jwt
from jwt import PyJWKClient

from ..settings import Settings

__all__ = [
    "LEEWAY_S",
    "AuthError",
    "Authenticator",
    "Principal",
    "bearer_token",
    "check_service_key",
    "is_loopback_client",
    "is_loopback_host",
    "service_key_matches",
]

LEEWAY_S: Final = 10
"""Seconds of clock skew tolerated on ``exp``/``nbf``/``iat``."""
VERIFIED_TTL_S: Final = 60.0
"""How long a verified token is trusted without verifying it again (never past its ``exp``)."""
VERIFIED_MAX: Final = 4_096
MAX_TOKEN_BYTES: Final = 8_192
"""Longer bearer tokens are refused before any parsing (a Supabase JWT is well under 2 KB)."""

_HMAC_ALGORITHMS: Final = ("HS256",)
_JWKS_ALGORITHMS: Final = ("RS256", "ES256")
_KEY_TYPES: Final = {"RS256": "RSA", "ES256": "EC"}
"""The JWK key type (``kty``) each accepted JWKS algorithm needs."""


class AuthError(Exception):
    """The caller is not (or not correctly) authenticated."""

    def __init__(self, code: str, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    user_id: UUID | None
    """The JWT's ``sub``; ``None`` for the local user."""
    claims: Mapping[str, Any] = field(default_factory=dict)
    """The verified JWT claims (handed to PostgreSQL as ``request.jwt.claims``)."""
    local: bool = False
    """True in embedded single-user mode: no authentication, every organisation visible."""

    @classmethod
    def local_user(cls) -> Principal:
        """The one user of an unauthenticated, loopback-only server."""
        return cls(user_id=None, local=True)

    @property
    def cache_key(self) -> str:
        """What identifies this caller's view of the data (for response caching)."""
        return "local" if self.local else f"user:{self.user_id}"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_client(host: str | None) -> bool:
    """True when a request's peer address is a loopback address."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Verifies the bearer tokens of API requests (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._jwks: PyJWKClient | None = None
        if settings.jwks_url:
            cache = settings.jwks_cache_s > 0
            self._jwks = PyJWKClient(
                settings.jwks_url,
                cache_jwk_set=cache,
                lifespan=settings.jwks_cache_s if cache else 300,
                timeout=5,
            )
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self._verified: OrderedDict[bytes, tuple[float, dict[str, Any]]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """True when a JWT secret or a JWKS URL is configured."""
        return self._secret is not None or self._jwks is not None

    async def authenticate(self, authorization: str | None, client_host: str | None) -> Principal:
        """The caller of a request, from its ``Authorization`` header and peer address."""
        if not self.enabled:
            if is_loopback_client(client_host):
                return Principal.local_user()
            raise AuthError(
                "forbidden",
                "This server runs without authentication and answers loopback clients only.",
                status=403,
            )
        if not authorization:
            raise AuthError("missing_token", "Sign in: send Authorization: Bearer <token>.")
        token = bearer_token(authorization)
        if token is None:
            raise AuthError("invalid_token", "The Authorization header must be 'Bearer <token>'.")
        claims = await self.verify(token)
        try:
            user_id = UUID(str(claims["sub"]))
        except ValueError:
            raise AuthError("invalid_token", "The token's subject is not a user id.") from None
        return Principal(user_id=user_id, claims=claims)

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises :class:`AuthError` otherwise.

        A token verified in the last minute is not verified again (a dashboard polls with the
        same token every few seconds); its expiry is still checked on every use.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("invalid_token", "The token is too long to be one of ours.")
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=20).digest()
        remembered = self._verified.get(digest)
        now = time.time()
        if remembered is not None:
            until, claims = remembered
            if now < until:
                return claims
            del self._verified[digest]
        claims = await self._verify(token)
        until = min(now + VERIFIED_TTL_S, float(claims["exp"]) + LEEWAY_S)
        self._verified[digest] = (until, claims)
        while len(self._verified) > VERIFIED_MAX:
            self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "The token is not a well-formed JWT.") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm in _HMAC_ALGORITHMS and self._secret is not None:
            key = self._secret
        elif algorithm in _JWKS_ALGORITHMS and self._jwks is not None:
            key = await self._signing_key(token)
        else:
            raise AuthError("invalid_token", "The token's signing algorithm is not accepted.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "The token has expired: sign in again.") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                "invalid_token", "The token is not meant for this service (audience)."
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid_token", "The token was issued by someone else.") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid_token", "The token's signature is invalid.") from None
        except jwt.MissingRequiredClaimError:
            raise AuthError(
                "invalid_token", "The token lacks a required claim (exp, sub, aud or iss)."
            ) from None
        except (jwt.PyJWTError, TypeError, ValueError):
            # TypeError/ValueError: a key of the wrong type for the header's algorithm.
            raise AuthError("invalid_token", "The token is invalid.") from None
        return claims

    async def _signing_key(self, token: str) -> Any:
        assert self._jwks is not None
        try:
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError:
            raise AuthError(
                "auth_unavailable",
                "The signing keys (JWKS) cannot be fetched right now; try again shortly.",
                status=503,
            ) from None
        except jwt.PyJWTError:
            raise AuthError(
                "invalid_token", "The token's signing key is not one this service trusts."
            ) from None
        # The key decides the algorithm, not the token: an RS256 header on an EC key (or the
        # reverse) is refused here rather than handed to a verifier of the wrong kind.
        algorithm = jwt.get_unverified_header(token).get("alg")
        if _KEY_TYPES.get(str(algorithm)) != signing_key.key_type or (
            signing_key.algorithm_name not in (None, algorithm)
        ):
            raise AuthError(
                "invalid_token", "The token's signing key is not one this service trusts."
            )
        return signing_key.key


def check_service_key(
    settings: Settings,
    *,
    authorization: str | None,
    service_key_header: str | None,
    client_host: str | None,
    auth_enabled: bool,
) -> None:
    """Accept the sync system's request, or raise :class:`AuthError`.

    With a configured service key, the request must present it (``X-Service-Key`` or
    ``Authorization: Bearer``). Without one, only an unauthenticated loopback-only server
    (embedded single-user mode) accepts sync outcomes, from loopback clients.
    """
    configured = settings.service_key
    if configured is None:
        if not auth_enabled and is_loopback_client(client_host):
            return
        raise AuthError(
            "invalid_service_key",
            "Sync outcomes need the service key, and this server has none configured "
            "(INTEGRATION_HEALTH_SERVICE_KEY).",
        )
    presented = service_key_header or bearer_token(authorization)
    if presented is None:
        raise AuthError(
            "invalid_service_key",
            "Send the service key as 'Authorization: Bearer <key>' or 'X-Service-Key: <key>'.",
        )
    if not service_key_matches(settings, presented):
        raise AuthError("invalid_service_key", "The service key is not valid.")


def service_key_matches(settings: Settings, presented: str) -> bool:
    """True when ``presented`` is the configured service key (compared in constant time)."""
    if settings.service_key is None:
        return False
    return hmac.compare_digest(
        presented.encode("utf-8"), settings.service_key.get_secret_value().encode("utf-8")
    )
