"""core.config and core.registry: one validated pipeline model; registering your own steps."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core import (
    DEFAULT_PIPELINE,
    METRICS,
    POST_PROCESSORS,
    PRE_PROCESSORS,
    STRATEGIES,
    ConfigError,
    Finder,
    MetricOutput,
    PipelineConfig,
)
from core.registry import Registry
from core.significance import SIGNIFICANCE_UNIT
from tests.conftest import raw_finder


def errors(**fields) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        PipelineConfig(**fields)
    return info.value.errors()


@pytest.mark.parametrize(("field", "value", "loc", "registry"), [
    ("pre_processor", "sharpen", ("pre_processor",), PRE_PROCESSORS),
    ("strategy", {"name": "guess"}, ("strategy",), STRATEGIES),
    ("metric", "ssim2", ("metric",), METRICS),
    ("post_processor", ["normalize", "blur"], ("post_processor", 1), POST_PROCESSORS),
])
def test_unknown_names_list_the_valid_ones(field, value, loc, registry) -> None:
    (err,) = errors(**{field: value})
    assert err["loc"] == loc
    for name in registry.names():
        assert name in err["msg"]
    # The Python API says the same (pydantic's ValidationError is a ValueError).
    with pytest.raises(ValueError, match="valid: ") as info:
        Finder(**{field: value})
    assert all(name in str(info.value) for name in registry.names())


def test_seed_names_are_all_registered() -> None:
    assert {"identity", "normalize", "highpass_filter", "lowpass_filter"} <= set(
        PRE_PROCESSORS.names())
    assert {"difference", "gradient"} <= set(STRATEGIES.names())
    assert {"mse", "psnr", "ssim", "ms-ssim", "lpips"} <= set(METRICS.names())
    assert "identity" in POST_PROCESSORS.names()
    for net in ("alex", "vgg", "squeeze"):
        assert PipelineConfig(metric={"name": "lpips", "net": net}).metric["net"] == net


@pytest.mark.parametrize(("fields", "loc"), [
    ({"metric": {"name": "ssim", "win_size": 4}}, ("metric", "win_size")),
    ({"metric": {"name": "ssim", "win_size": 101}}, ("metric", "win_size")),
    ({"metric": {"name": "ssim", "sigma": float("nan")}}, ("metric", "sigma")),
    ({"metric": {"name": "lpips", "net": "resnet"}}, ("metric", "net")),
    ({"metric": {"name": "mse", "win_size": 7}}, ("metric", "win_size")),
    ({"strategy": {"name": "gradient", "magnitude": "sometimes"}}, ("strategy", "magnitude")),
    ({"pre_processor": {"name": "highpass_filter", "factor": 2}},
     ("pre_processor", "factor")),
    ({"post_processor": ["normalize", {"name": "smooth", "sigma": -1}]},
     ("post_processor", 1, "sigma")),
    ({"post_processor": {"name": "threshold", "method": "guess"}},
     ("post_processor", 0, "method")),
    ({"regions": {"min_area": 0}}, ("regions", "min_area")),
    ({"regions": {"connectivity": 6}}, ("regions", "connectivity")),
    ({"data_range": 0}, ("data_range",)),
    ({"data_range": float("inf")}, ("data_range",)),
    ({"reduction": "sum"}, ("reduction",)),
    ({"size_policy": "stretch"}, ("size_policy",)),
    ({"colour": "red"}, ("colour",)),
])
def test_bad_parameters_are_refused_with_their_json_path(fields, loc) -> None:
    errs = errors(**fields)
    assert [e["loc"] for e in errs] == [loc]


@pytest.mark.parametrize(("fields", "text"), [
    ({"metric": 5}, "name"), ({"metric": {"win_size": 3}}, "'name'"),
    ({"pre_processor": {"name": "bandpass_filter", "low": 0.5, "high": 0.2}}, "low < high"),
    ({"post_processor": {"name": "clip", "low": 0.9, "high": 0.1, "mode": "value"}},
     "low <= high"),
    ({"strategy": "map", "metric": "ms-ssim"}, "spatial map"),
])
def test_cross_parameter_and_shape_errors_are_explained(fields, text) -> None:
    assert any(text in e["msg"] for e in errors(**fields))


def test_params_as_dicts_and_the_resolved_pipeline() -> None:
    cfg = PipelineConfig(pre_processor={"name": "highpass_filter", "factor": 0.2},
                         strategy="gradient", metric={"name": "ssim", "win_size": 7},
                         post_processor=["abs", {"name": "smooth", "sigma": 1.0}])
    dumped = cfg.model_dump()
    assert dumped["pre_processor"] == {"name": "highpass_filter", "factor": 0.2}
    assert dumped["strategy"] == {"name": "gradient", "magnitude": True}
    assert dumped["metric"] == {"name": "ssim", "win_size": 7, "sigma": 1.5, "k1": 0.01,
                                "k2": 0.03}
    assert dumped["post_processor"] == [{"name": "abs"}, {"name": "smooth", "sigma": 1.0}]
    assert set(dumped) >= {"pre_processor", "strategy", "metric", "post_processor",
                           "reduction", "data_range", "size_policy", "regions"}
    # The dump is JSON and validates back to the same pipeline.
    again = PipelineConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again == cfg and again.model_dump() == dumped
    assert PipelineConfig.model_validate(dumped) == cfg
    # A name and the equivalent dict are the same pipeline.
    assert PipelineConfig(metric="ssim") == PipelineConfig(metric={"name": "ssim"})
    assert PipelineConfig().model_dump() == DEFAULT_PIPELINE.model_dump()


def test_finder_takes_the_same_pipeline_every_way(camera) -> None:
    spec = {"pre_processor": {"name": "lowpass_filter", "factor": 0.5}, "strategy": "gradient",
            "metric": "psnr", "post_processor": [{"name": "smooth", "sigma": 1.0}],
            "data_range": 1.0}
    a, b = camera[:96, :96], np.roll(camera[:96, :96], 2, axis=0)
    expected = Finder(**spec).run(a, b)
    for finder in (Finder(config=spec), Finder(config=PipelineConfig(**spec)),
                   Finder.from_config(spec), Finder.from_config(PipelineConfig(**spec), "cpu"),
                   Finder(config=json.loads(PipelineConfig(**spec).model_dump_json()))):
        assert finder.config == PipelineConfig(**spec)
        np.testing.assert_array_equal(finder.run(a, b), expected)
    # Keyword arguments override the config's fields.
    over = Finder(config=spec, metric="mse", reduction="max")
    assert over.config.metric["name"] == "mse" and over.config.reduction == "max"
    assert over.config.pre_processor == {"name": "lowpass_filter", "factor": 0.5}
    assert "lowpass_filter" in repr(over)


def test_describe_lists_parameters_and_flags() -> None:
    metrics = {d["name"]: d for d in METRICS.describe()}
    assert set(metrics) == set(METRICS.names())
    ssim = metrics["ssim"]
    assert ssim["parameters"]["win_size"]["default"] == 11
    assert ssim["parameters"]["sigma"]["default"] == 1.5
    assert ssim["higher_is_better"] is True and ssim["has_map"] is True
    assert metrics["lpips"]["needs_weights"] is True
    assert set(metrics["lpips"]["parameters"]["net"]["enum"]) == {"alex", "vgg", "squeeze"}
    assert metrics["ms-ssim"]["has_map"] is False
    assert metrics["mse"]["higher_is_better"] is False
    for registry in (PRE_PROCESSORS, STRATEGIES, METRICS, POST_PROCESSORS):
        for d in registry.describe():
            assert d["description"] and isinstance(d["parameters"], dict)
            json.dumps(d)  # JSON-friendly
    assert PRE_PROCESSORS.get("highpass_filter").describe()["parameters"]["factor"][
        "default"] == 0.1


# -- registering your own -------------------------------------------------------------


@pytest.fixture
def custom_steps() -> Iterator[None]:
    """Register a metric, a pre-processor, a strategy and a post-processor; remove them after."""

    @METRICS.register("test-l1", higher_is_better=False, has_map=True)
    def l1(x: torch.Tensor, y: torch.Tensor, data_range: float, want_map: bool, *,
           power: float = 1.0) -> MetricOutput:
        """Mean absolute error raised to ``power`` (a test metric)."""
        err = (x - y).abs().pow(power) / data_range**power
        score = err.flatten(1).mean(1)
        return MetricOutput(score, score, err if want_map else None)

    @PRE_PROCESSORS.register("test-invert")
    def invert(x: torch.Tensor, data_range: float) -> torch.Tensor:
        """data_range - x."""
        return data_range - x

    @STRATEGIES.register("test-ratio", uses_metric=False, needs_grad=False)
    def ratio(ref, cand, metric, *, eps: float = 1e-3):
        """Candidate / reference."""
        return (cand + eps) / (ref + eps), None

    @POST_PROCESSORS.register("test-square")
    def square(m: torch.Tensor) -> torch.Tensor:
        """Square the map."""
        return m * m

    try:
        yield
    finally:
        METRICS.unregister("test-l1")
        PRE_PROCESSORS.unregister("test-invert")
        STRATEGIES.unregister("test-ratio")
        POST_PROCESSORS.unregister("test-square")


def test_a_registered_metric_works_end_to_end(custom_steps, chelsea_pair) -> None:
    ref, cand = chelsea_pair
    r, c = ref / 255.0, cand / 255.0
    finder = raw_finder(strategy="map", metric={"name": "test-l1", "power": 2.0})
    m, score = finder.run(ref, cand, return_metric=True)
    np.testing.assert_allclose(m, ((c - r) ** 2).mean(axis=2), atol=1e-6)
    assert score == pytest.approx(((c - r) ** 2).mean(), rel=1e-5)
    # The gradient strategy differentiates it like any built-in metric.
    grad = raw_finder(strategy={"name": "gradient", "magnitude": False},
                      metric={"name": "test-l1", "power": 2.0}).run(ref, cand)
    np.testing.assert_allclose(grad, (2 * (c - r) / 3).mean(axis=2), atol=1e-5)
    # Validated and described like the built-ins.
    (err,) = errors(metric={"name": "test-l1", "power": "high"})
    assert err["loc"] == ("metric", "power")
    described = {d["name"]: d for d in METRICS.describe()}["test-l1"]
    assert described["parameters"]["power"]["default"] == 1.0
    assert described["description"].startswith("Mean absolute error")
    result = finder.analyze(ref, cand)[0]
    assert result.metrics["test-l1"] == pytest.approx(score)


def test_registered_processors_and_strategies_work(custom_steps, camera) -> None:
    a, b = camera[:64, :64], camera[64:128, :64]
    got = Finder(pre_processor="test-invert", strategy={"name": "test-ratio", "eps": 0.5},
                 post_processor=["test-square"]).run(a, b)
    fa, fb = 1 - a / 255.0, 1 - b / 255.0
    np.testing.assert_allclose(got, ((fb + 0.5) / (fa + 0.5)) ** 2, rtol=1e-5)


def test_unregistered_names_are_gone(custom_steps) -> None:
    METRICS.unregister("test-l1")
    assert "test-l1" not in METRICS
    with pytest.raises(ValidationError, match="unknown metric"):
        PipelineConfig(metric="test-l1")


def test_registry_rules() -> None:
    reg = Registry("widget")

    @reg.register("one")
    def one(x, *, k: int = 1):
        """One."""
        return x

    with pytest.raises(ValueError, match="already registered"):
        reg.register("one")(one)
    with pytest.raises(TypeError, match="needs a default"):
        @reg.register("two")
        def two(x, *, k: int):
            return x
    with pytest.raises(ConfigError, match="unknown widget 'three'; valid: one") as info:
        reg.get("three")
    assert info.value.extra["valid"] == ["one"]
    assert reg.resolve("one") == {"name": "one", "k": 1}
    assert reg.resolve({"name": "one", "k": "2"}) == {"name": "one", "k": 2}
    with pytest.raises(ValidationError):
        reg.resolve({"name": "one", "k": 1, "other": 2})
    with pytest.raises(ConfigError):
        reg.resolve(["one"])


def test_the_default_strategy_is_registered_whatever_is_imported_first() -> None:
    import subprocess
    import sys

    code = "from core import STRATEGIES; print(STRATEGIES.get('significance').name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "significance"


@pytest.mark.parametrize("post, kept", [
    ([], True), (["smooth"], True), (["threshold"], True), (["clip"], True),
    (["normalize"], False), ([{"name": "threshold", "binary": True}], False),
    (["smooth", "normalize"], False)])
def test_a_post_processor_that_rescales_the_map_drops_its_units(post, kept) -> None:
    """normalize (or a binary threshold) leaves no robust sigmas: the regions fall back to
    the 98th percentile and the heatmap to the data range, as for a unitless strategy."""
    cfg = PipelineConfig(post_processor=post)
    assert (cfg.regions.threshold == "hysteresis") is kept
    assert (cfg.render.vmax == 30.0 and cfg.render.label is not None) is kept
    chosen = PipelineConfig(post_processor=post, regions={"threshold": "hysteresis"})
    assert chosen.regions.threshold == "hysteresis"  # a threshold the user chose stays


def test_a_normalized_default_map_still_finds_a_clear_edit(astronaut) -> None:
    cand = astronaut.copy()
    cand[100:160, 300:360] = astronaut[350:410, 100:160]
    result = Finder(device="cpu", post_processor="normalize").analyze(astronaut, cand,
                                                                      metrics=False)[0]
    assert result.regions, result.summary
    r = result.regions[0]
    assert r.x < 360 and r.x + r.width > 300 and r.y < 160 and r.y + r.height > 100


def test_a_metric_named_beside_a_metric_free_strategy_is_its_score(astronaut) -> None:
    """The default strategy uses no metric; naming one still means something: it is the score
    ``analyze`` reports (not silently dropped)."""
    assert Finder(device="cpu").score_names() == ["mse", "psnr"]  # ssim by default: costly
    named = Finder(device="cpu", metric="ssim")
    assert named.score_names() == ["ssim"]
    result = named.analyze(astronaut, astronaut[::-1].copy())[0]
    assert set(result.metrics) == {"ssim"} and result.metrics["ssim"] < 0.9


def test_no_regions_asked_for_is_not_reported_as_no_difference(astronaut) -> None:
    cand = astronaut.copy()
    cand[100:160, 300:360] = 0
    result = Finder(device="cpu", regions={"max_regions": 0}).analyze(astronaut, cand)[0]
    assert result.regions == [] and result.summary == "regions not computed"
    result = Finder(device="cpu").analyze(astronaut, cand, regions=False)[0]
    assert result.summary == "regions not computed"
    assert Finder(device="cpu").analyze(astronaut, cand)[0].summary == "1 significant region"


@pytest.mark.parametrize(("first", "then", "threshold", "vmax"), [
    ("difference", "significance", "hysteresis", 30.0),
    ("significance", "difference", "percentile", None),
])
def test_a_config_rebuilt_with_another_strategy_derives_its_own_defaults(
        first, then, threshold, vmax) -> None:
    """Derived regions and heatmap defaults are not the user's choice: another strategy over
    the same config gets its own (the significance range on a raw difference map drew it
    blank; percentile regions on a significance map reported ten boxes per clean pair)."""
    cfg = PipelineConfig(strategy=first)
    assert set(cfg.model_dump(exclude_unset=True)) == {"strategy"}
    rebuilt = Finder(config=cfg, strategy=then, device="cpu").config
    assert rebuilt.regions.threshold == threshold and rebuilt.render.vmax == vmax
    assert rebuilt == PipelineConfig(strategy=then)
    # what the user did choose is kept
    chosen = PipelineConfig(strategy=first, render={"label": "mine"}, regions={"min_area": 4})
    kept = Finder(config=chosen, strategy=then, device="cpu").config
    assert kept.render.label == "mine" and kept.regions.min_area == 4
    assert kept.regions.threshold == threshold


def test_settings_changed_after_construction_are_carried() -> None:
    """``cfg.regions.max_regions = 3`` on a built config is the user's choice: a Finder made
    from it (and the API client's request) keeps it; the derived values stay derived."""
    cfg = PipelineConfig()
    cfg.regions.max_regions = 3
    cfg.render.colorbar = True
    assert cfg.chosen() == {"regions": {"max_regions": 3}, "render": {"colorbar": True}}
    finder = Finder(config=cfg, device="cpu")
    assert finder.config.regions.max_regions == 3 and finder.config.render.colorbar is True
    assert finder.config.render.vmax == 30.0  # derived again, from the strategy
    assert PipelineConfig().chosen() == {}


def test_one_render_setting_keeps_the_units_other_defaults() -> None:
    """``render={"vmax": 10}`` narrows the fixed range, it does not drop the unit's scale,
    label and lower end; a percentile range replaces the fixed one but keeps the unit."""
    r = PipelineConfig(render={"vmax": 10}).render
    assert (r.vmin, r.vmax, r.scale, r.label) == (3.0, 10.0, "sqrt", SIGNIFICANCE_UNIT)
    r = PipelineConfig(render={"vmax": 2}).render  # below the unit's vmin: no fixed lower end
    assert (r.vmin, r.vmax) == (None, 2.0)
    r = PipelineConfig(render={"percentile": 99}).render
    assert (r.vmin, r.vmax, r.label) == (None, None, SIGNIFICANCE_UNIT)


def test_hysteresis_thresholds_chosen_on_an_uncalibrated_map_are_kept() -> None:
    """``high``/``low`` given for a map without a unit are the user's, in that map's units:
    hysteresis stays (it used to fall back to the percentile silently)."""
    cfg = PipelineConfig(strategy="difference", regions={"high": 0.2, "low": 0.05})
    assert cfg.regions.threshold == "hysteresis" and cfg.regions.high == 0.2
    assert PipelineConfig(strategy="difference").regions.threshold == "percentile"
