"""service.jsonbody: the spliced JSON reads back exactly as json.dumps of the base64 text."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from service.jsonbody import Base64, dumps


def _reference(body) -> bytes:
    def text(o):
        return base64.b64encode(o.view.tobytes()).decode("ascii")
    return json.dumps(body, allow_nan=False, separators=(",", ":"), default=text).encode()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, (3 << 18) // 4 + 1, 700_001])
def test_maps_of_any_length_round_trip(n):
    rng = np.random.default_rng(n)
    a, b = rng.random(n, dtype=np.float32), rng.random(7, dtype=np.float32)
    body = {"map": {"data": Base64(a)}, "label": "x\"\\y\u00e9", "more": [{"data": Base64(b)}],
            "n": 1.5}
    out = dumps(body)
    assert out == _reference(body)
    back = json.loads(out)
    assert np.array_equal(np.frombuffer(base64.b64decode(back["map"]["data"]), np.float32), a)


def test_a_string_that_looks_like_the_placeholder_does_not_corrupt_the_body():
    body = {"label": "\x1fdf-base64\x1f", "map": {"data": Base64(np.arange(5, dtype="<f4"))}}
    assert json.loads(dumps(body)) == json.loads(_reference(body))


def test_non_finite_and_unknown_values_are_refused_as_json_dumps_does():
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    with pytest.raises(TypeError, match="set"):
        dumps({"x": {1, 2}})
