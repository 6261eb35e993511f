"""schemathesis against the app's own OpenAPI spec, in process (ASGI): generated requests
for every operation never get a 5xx, and every response conforms to the spec (status
documented, body and content type as declared). Examples are bounded to keep it quick."""

from __future__ import annotations

import warnings

import pytest

schemathesis = pytest.importorskip("schemathesis")

with warnings.catch_warnings():  # starlette's note about httpx in its TestClient
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

# Generated URLs must not wait on DNS or slow hosts for long.
APP = create_app(Settings(devices=["cpu"], cpu_workers=1, url_timeout=1.0,
                          url_connect_timeout=1.0, request_timeout=30.0))


async def _without_lifespan(scope, receive, send):
    """The app with lifespan events acknowledged but not passed on: schemathesis would start
    and stop the app around each operation; the fixture below runs the real one once."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await APP(scope, receive, send)


schema = schemathesis.openapi.from_asgi("/openapi.json", _without_lifespan)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module", autouse=True)
def _running_app():
    """Workers up for the whole module (the app's own lifespan, once)."""
    with TestClient(APP):
        yield


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_spec(case):
    case.call_and_validate(checks=CHECKS)
