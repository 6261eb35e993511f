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
        assert problem["schema"]["$ref"].endswith("/Problem")
        assert problem.get("example") or problem["examples"]
    schemas = spec["components"]["schemas"]
    assert {"PipelineConfig", "DiffResponse", "Problem", "ImageInput"} <= set(schemas)
    assert set(spec["paths"]) >= {"/v1/diff", "/v1/capabilities", "/healthz", "/readyz",
                                  "/metrics"}


COMPUTING = [("/v1/diff", "post"), ("/v1/compare", "post"), ("/label-studio/predict", "post"),
             ("/cvat/detect", "post")]


@pytest.mark.parametrize(("path", "method"), COMPUTING)
def test_computing_routes_document_their_overload_refusals(spec, path, method):
    """503 (queue full, wait too long, memory full) with Retry-After, and 413 (payload too
    large, over the memory budget), as problem+json bodies the service really sends."""
    from service.errors import MemoryFull, OverMemoryBudget, QueueFull, WaitTooLong
    from service.problems import problem_body

    responses = spec["paths"][path][method]["responses"]
    busy = responses["503"]
    assert busy["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    examples = busy["content"]["application/problem+json"]["examples"]
    assert {"queue-full", "wait-too-long", "memory-full"} <= set(examples)
    large = responses["413"]["content"]["application/problem+json"]["examples"]
    assert {"payload-too-large", "over-memory-budget"} <= set(large)
    for status, group in ((503, examples), (413, large)):
        for name, example in group.items():
            assert (example["value"]["code"], example["value"]["status"]) == (name, status)
    # the over-budget example names both numbers, as the service's 413 does
    over = large["over-memory-budget"]["value"]
    assert str(over["needed_bytes"]) in over["detail"]
    assert str(over["budget_bytes"]) in over["detail"]
    # each example is the body the error class renders
    for exc in (QueueFull(2), WaitTooLong(75.0, 60.0, 3),
                MemoryFull(1200000000, 2000000000, "host", 2),
                OverMemoryBudget(4320000000, 2000000000, "host")):
        body = problem_body(exc.status, exc.code, exc.detail, title=exc.title, **exc.extra)
        assert {**examples, **large}[exc.code]["value"] == body
