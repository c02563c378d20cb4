"""Adapters: one module per integration type.

Every public module here that defines a module-level ``ADAPTER`` is picked up by
:func:`integration_health.checks.builtin_adapters`; shared machinery lives in the private
``_*.py`` modules (HTTP client with SSRF guard, result mapping).
"""
