"""The API fuzzed from its own OpenAPI schema (schemathesis, in-process over ASGI).

Every operation gets generated requests — valid (positive) and invalid (negative) path,
query, header and body values — with a valid user JWT (for sync outcomes: the service key).
Every answer must be a non-5xx response that the schema documents: status code, content
type, headers and body (schemathesis' default checks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi

from integration_health.settings import Settings
from integration_health.web import create_app
from tests.web.live import SERVICE_KEY, World, bearer, claims_for, hs_token

from .conftest import app_settings
from .strategies import SCALE

MAX_EXAMPLES = 50 * SCALE
"""Examples per operation and generation mode: bounded so the module runs in well under 60 s."""


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every documented operation (read without starting the app).

    Invalid (negative) requests only exist for operations that take parameters or a body.
    """
    document = create_app(Settings(database_url="memory://")).openapi()
    cases = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


CASES = _cases()
OPERATIONS = sorted({(method, path) for method, path, _ in CASES})


@pytest.fixture(scope="module")
def api_schema(sqlite_url: str) -> Iterator[schemathesis.BaseSchema]:
    """The schema served by the app at ``/openapi.json``, bound to that app (ASGI)."""
    app = create_app(app_settings(sqlite_url))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema
    asgi.shutdown_lifespans()


def _headers_for(case: schemathesis.Case, world: World) -> dict[str, str]:
    if case.path.endswith("/sync-outcomes"):
        if case.headers:  # the generated service key header would shadow the real one
            case.headers.pop("x-service-key", None)
        return {"Authorization": f"Bearer {SERVICE_KEY}"}
    return bearer(hs_token(claims_for(world.user_a)))


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_api_conforms_to_its_schema(
    api_schema: schemathesis.BaseSchema, world: World, method: str, path: str, mode: GenerationMode
) -> None:
    """No generated request gets a 5xx, and every answer matches the documented schema."""
    operation = api_schema[path][method]
    known = {"org_id": str(world.org_a), "integration_id": str(world.a_ok)}

    @given(case=operation.as_strategy(mode), own=st.booleans())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case, own: bool) -> None:
        if own and mode is GenerationMode.POSITIVE and case.path_parameters:
            # Half the valid requests address the signed-in user's own organisation.
            case.path_parameters = {
                key: known.get(key, value) for key, value in case.path_parameters.items()
            }
        response = case.call_and_validate(headers=_headers_for(case, world))
        statuses[response.status_code] += 1

    statuses: Counter[int] = Counter()
    run()
    print(method, path, mode.value, dict(statuses))  # the answers seen: pytest -s shows them
    assert not any(status >= 500 for status in statuses)
    if mode is GenerationMode.POSITIVE:
        # Valid requests reach the handlers (not only 404s for random organisations).
        assert 200 in statuses, statuses
    else:
        assert statuses.keys() <= {400, 401, 403, 404, 413, 422}, statuses


def test_every_operation_is_fuzzed() -> None:
    """The fuzzing covers the contract paths (a schema losing them would shrink the test)."""
    paths = {path for _, path in OPERATIONS}
    assert {
        "/api/orgs/{org_id}/health",
        "/api/orgs/{org_id}/integrations/{integration_id}/health/history",
        "/api/orgs/{org_id}/health/checks",
        "/api/orgs/{org_id}/integrations/{integration_id}/sync-outcomes",
        "/healthz",
    } <= paths
