"""The pipeline model: one pydantic model that the Python API, the CLI and
the HTTP API all take. It validates names against the registries (an unknown
name lists the valid ones) and parameters against each function's signature,
and dumps to the fully resolved pipeline (every default filled in).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .images import SizePolicy
from .metrics import METRICS
from .numeric import Reduction
from .postprocess import POST_PROCESSORS
from .preprocess import PRE_PROCESSORS
from .regions import RegionsConfig
from .registry import Registry
from .render import RenderConfig
from .strategies import STRATEGIES

__all__ = ["DEFAULT_PIPELINE", "PipelineConfig", "Step"]

#: A processor/strategy/metric: its name, or ``{"name": ..., **parameters}``.
Step = str | dict[str, Any]

_STEP_DOC = 'a name, or an object {"name": ..., **parameters}'


def _resolve(registry: Registry, value: Any, index: int | None = None) -> dict[str, Any]:
    try:
        return registry.resolve(value)
    except ConfigError as exc:
        kind = "unknown_name" if "unknown" in exc.message else "invalid_step"
        if index is None:
            raise PydanticCustomError(kind, exc.message) from None
        raise _at(index, [{"type": kind, "msg": exc.message, "loc": (), "input": value}]) from None
    except ValidationError as exc:
        if index is None:
            raise
        raise _at(index, exc.errors()) from None


def _at(index: int, errors: list[Any]) -> ValidationError:
    """Re-raise errors of the list item ``index`` with the index in their location."""
    return ValidationError.from_exception_data("PipelineConfig", [
        {"type": PydanticCustomError(e["type"], e["msg"].replace("{", "{{").replace("}", "}}")),
         "loc": (index, *e["loc"]), "input": e["input"]}
        for e in errors
    ])


_REGISTRIES: dict[str, Registry] = {
    "pre_processor": PRE_PROCESSORS, "strategy": STRATEGIES, "metric": METRICS}


class PipelineConfig(BaseModel):
    """A whole difference-finding pipeline.

    pre_processor -> strategy (using metric) -> channel reduction ->
    post_processor(s) -> regions.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    pre_processor: Annotated[Step, Field(description=_STEP_DOC)] = "identity"
    # Defaults chosen on the tuning half of benchmarks/quality.py's split by
    # benchmarks/tune_significance.py: the calibrated significance map with hysteresis regions
    # beats "difference > smooth 2 > 98th percentile" on pixel AP (0.66 vs 0.45), edits found
    # (54% vs 52%), box recall and false regions (0.2 vs 9.7 per nuisance-only pair).
    strategy: Annotated[Step, Field(description=_STEP_DOC)] = "significance"
    metric: Annotated[Step, Field(description=_STEP_DOC)] = "ssim"
    post_processor: Annotated[Step | list[Step], Field(
        description=_STEP_DOC + ", or a list of them applied in order")] = Field(
        default_factory=list)
    reduction: Reduction = Field(
        "mean", description="how colour channels are combined into one map; 'none' keeps them")
    data_range: Annotated[float, Field(gt=0, description="value span of float inputs")] = 1.0
    size_policy: SizePolicy = Field(
        "error", description="what to do when sizes differ: error, or resize/crop/pad")
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    render: RenderConfig = Field(default_factory=RenderConfig,
                                 description="how PNG heatmaps of the map are drawn")

    @field_validator("pre_processor", "strategy", "metric", mode="before")
    @classmethod
    def _step(cls, v: Any, info: ValidationInfo) -> dict[str, Any]:
        return _resolve(_REGISTRIES[info.field_name], v)

    @field_validator("post_processor", mode="before")
    @classmethod
    def _post(cls, v: Any) -> list[dict[str, Any]]:
        steps = v if isinstance(v, list) else [v]
        if len(steps) > 16:
            raise PydanticCustomError("too_long", "at most 16 post-processors may be chained")
        return [_resolve(POST_PROCESSORS, s, i) for i, s in enumerate(steps)]

    @model_validator(mode="after")
    def _compatible(self) -> PipelineConfig:
        strategy = STRATEGIES.get(self.strategy["name"])
        metric = METRICS.get(self.metric["name"])
        if strategy.meta.get("needs_map") and not metric.meta.get("has_map"):
            with_map = [e.name for e in METRICS if e.meta.get("has_map")]
            raise ValueError(
                f"strategy {self.strategy['name']!r} needs a metric with a spatial map; "
                f"{self.metric['name']!r} has none (use one of: {', '.join(with_map)})"
            )
        return self

    def _unit_meta(self) -> dict[str, Any]:
        """The strategy's unit meta (unit, vmin, vmax, scale), or {} when it has none or a
        post-processor changes the map's units (``normalize``, a binary ``threshold``)."""
        for step in self.post_processors:
            keeps = POST_PROCESSORS.get(step["name"]).meta.get("keeps_units", True)
            params = {k: v for k, v in step.items() if k != "name"}
            if not (keeps(params) if callable(keeps) else keeps):
                return {}
        return STRATEGIES.get(self.strategy["name"]).meta

    @model_validator(mode="after")
    def _regions_units(self) -> PipelineConfig:
        """Hysteresis thresholds are in calibrated units: for a map without a unit (registry
        meta of the strategy and the post-processors) the regions default to the 98th
        percentile unless a threshold or hysteresis thresholds (``high``, ``low``, in the
        map's own units) were chosen."""
        meta = self._unit_meta()
        chosen = self.regions.model_fields_set & {"threshold", "high", "low"}
        if "unit" not in meta and not chosen and self.regions.threshold == "hysteresis":
            self._derive("regions", {"threshold": "percentile"})
        return self

    @model_validator(mode="after")
    def _render_units(self) -> PipelineConfig:
        """A map in fixed units (registry meta vmin/vmax/scale/unit, kept by every
        post-processor) sets each of the heatmap's range ends, scale and colorbar label that
        the render settings do not choose (``vmax=10`` alone keeps the unit's vmin, scale
        and label; a percentile or symmetric range replaces the fixed one)."""
        meta = self._unit_meta()
        given = self.render.model_fields_set
        if "vmax" not in meta:
            return self
        update: dict[str, Any] = {}
        if not given & {"percentile", "symmetric"}:  # each end not chosen: the unit's
            vmin = self.render.vmin if "vmin" in given else meta["vmin"]
            vmax = self.render.vmax if "vmax" in given else meta["vmax"]
            if vmin is None or vmax is None or vmin < vmax:
                update.update({k: v for k, v in (("vmin", vmin), ("vmax", vmax))
                               if k not in given})
        if "scale" in meta and "scale" not in given:
            update["scale"] = meta["scale"]
        if "unit" in meta and "label" not in given:
            update["label"] = meta["unit"]
        self._derive("render", update)
        return self

    def _derive(self, name: str, update: dict[str, Any]) -> None:
        """Fill in derived values of the sub-model ``name`` without marking them as the
        user's: ``model_dump(exclude_unset=True)`` keeps only what was chosen, so a config
        rebuilt with another strategy derives its own regions and heatmap range anew."""
        sub = getattr(self, name)
        derived = sub.model_copy(update=update)
        object.__setattr__(derived, "__pydantic_fields_set__", set(sub.model_fields_set))
        given = set(self.model_fields_set)
        setattr(self, name, derived)
        object.__setattr__(self, "__pydantic_fields_set__", given)

    def resolved(self, **dump: Any) -> dict[str, Any]:
        """The pipeline as it runs, every default filled in (what answers echo): without
        ``metric`` when nothing uses it (a metric-free strategy, the metric not named), so
        an echoed config posted back gives the same answer (a present metric is a named
        one: its score would be computed). ``dump``: model_dump's options."""
        unused = not self.uses_metric and "metric" not in self.model_fields_set
        return self.model_dump(exclude={"metric"} if unused else None, **dump)

    def chosen(self, **dump: Any) -> dict[str, Any]:
        """What was chosen, not defaulted or derived: ``model_dump(exclude_unset=True)``, with
        the regions and render settings each by what was set on them (also after
        construction, ``cfg.regions.max_regions = 3``). ``dump``: model_dump's options."""
        out = self.model_dump(exclude_unset=True, **dump)
        for name in ("regions", "render"):
            given = getattr(self, name).model_dump(exclude_unset=True, **dump)
            if given:
                out[name] = given
            else:
                out.pop(name, None)
        return out

    @property
    def post_processors(self) -> list[dict[str, Any]]:
        pp = self.post_processor
        return pp if isinstance(pp, list) else [pp]

    @property
    def uses_metric(self) -> bool:
        """Whether the strategy computes with its metric (gradient, map); a metric-free one
        (significance, difference) scores with it only when it is named."""
        return bool(STRATEGIES.get(self.strategy["name"]).meta.get("uses_metric"))

    @property
    def uses_lpips(self) -> bool:
        return bool(METRICS.get(self.metric["name"]).meta.get("needs_weights"))


DEFAULT_PIPELINE = PipelineConfig()
