"""Test doubles shipped with the package: fake vendor servers and scriptable checks.

Used by the project's own tests, by ``integration-health demo``, and by anyone testing code
that uses the monitor. Every fake vendor is a real HTTP server on 127.0.0.1.
"""

from ._server import LocalServer
from .doubles import (
    BlockingFakeCheck,
    BlockingFakeConfig,
    FakeCall,
    FakeCheck,
    FakeConfig,
    fake_registry,
)
from .http_endpoint import HttpEndpointFake, LoggedRequest

__all__ = [
    "BlockingFakeCheck",
    "BlockingFakeConfig",
    "FakeCall",
    "FakeCheck",
    "FakeConfig",
    "HttpEndpointFake",
    "LocalServer",
    "LoggedRequest",
    "fake_registry",
]
