"""Fake vendor APIs: one module per vendor, each a real HTTP server on 127.0.0.1.

Every fake subclasses :class:`VendorFake` and reproduces its vendor's request/response shapes
(see ``shared/vendors.md`` in the project docs); set :attr:`VendorFake.scenario` to switch
behaviour while it runs.
"""

from ._base import COMMON_SCENARIOS, VendorFake

__all__ = ["COMMON_SCENARIOS", "VendorFake"]
