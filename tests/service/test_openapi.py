"""The committed OpenAPI document matches the app, and documents what the API does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.openapi import render

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(render())


def test_committed_spec_is_current(spec):
    committed = json.loads(SPEC.read_text()) if SPEC.exists() else None
    if committed != spec:
        pytest.fail(f"{SPEC.relative_to(SPEC.parents[1])} is out of date with the app; "
                    "regenerate it with `make openapi` and commit it")


def test_both_request_forms_and_all_response_types(spec):
    op = spec["paths"]["/v1/diff"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert content["multipart/form-data"]["schema"]["required"] == ["reference", "candidate"]
    assert content["application/json"]["schema"]["$ref"].endswith("/DiffRequest")
    for form in content.values():
        assert form["examples"]
    ok = op["responses"]["200"]["content"]
    assert set(ok) == {"application/json", "image/png", "application/x-npy"}
    assert all("example" in c or "examples" in c for c in ok.values())
    for status in ("400", "401", "406", "413", "415", "422", "503", "504"):
        problem = op["responses"][status]["content"]["application/problem+json"]
        assert problem["schema"]["$ref"].endswith("/Problem") and problem["example"]
    schemas = spec["components"]["schemas"]
    assert {"PipelineConfig", "DiffResponse", "Problem", "ImageInput"} <= set(schemas)
    assert set(spec["paths"]) >= {"/v1/diff", "/v1/capabilities", "/healthz", "/readyz",
                                  "/metrics"}
