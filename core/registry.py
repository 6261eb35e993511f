"""Name -> function registries for processors, strategies and metrics.

A registered function's keyword-only parameters (with their type hints and
defaults) become a pydantic model, so adding a metric is one decorated
function and its parameters are validated, documented and listed for free.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .errors import ConfigError

__all__ = ["Entry", "Registry"]

_PARAMS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Entry:
    """One registered function with its parameter model and metadata."""

    name: str
    func: Callable[..., Any]
    params: type[BaseModel]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.func) or ""

    def __call__(self, *args: Any, **params: Any) -> Any:
        return self.func(*args, **params)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description: name, summary, parameters with defaults."""
        schema = self.params.model_json_schema()
        return {
            "name": self.name,
            "description": self.doc.split("\n\n")[0].replace("\n", " "),
            "parameters": schema.get("properties", {}),
            **{k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))},
        }


def _params_model(name: str, func: Callable[..., Any]) -> type[BaseModel]:
    """Build a pydantic model from the keyword-only parameters of ``func``."""
    hints = typing.get_type_hints(func, include_extras=True)
    fields: dict[str, Any] = {}
    for p in inspect.signature(func).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"{name}: keyword-only parameter {p.name!r} needs a default")
        fields[p.name] = (hints.get(p.name, Any), p.default)
    model_name = "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
    return create_model(f"{model_name}Params", __config__=_PARAMS_CONFIG, **fields)


class Registry:
    """A named collection of functions of one kind (``"metric"``, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, **meta: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register ``func`` under ``name``; keyword-only args are its parameters."""

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, func, _params_model(name, func), dict(meta))
            return func

        return decorate

    def unregister(self, name: str) -> None:
        """Remove an entry (mainly for tests and plugins that replace one)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self._entries)
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid: {valid}", valid=self.names()
            ) from None

    def resolve(self, spec: str | dict[str, Any]) -> dict[str, Any]:
        """Validate ``spec`` (a name or ``{"name": ..., **params}``) into a full dict.

        Raises ``ConfigError`` for an unknown name and pydantic's
        ``ValidationError`` (with the parameter's location) for bad values.
        """
        if isinstance(spec, str):
            spec = {"name": spec}
        elif not isinstance(spec, dict):
            raise ConfigError(f"a {self.kind} is a name or an object with a 'name' field")
        spec = dict(spec)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"a {self.kind} object needs a 'name' string")
        entry = self.get(name)
        resolved = {"name": name, **entry.params.model_validate(spec).model_dump()}
        check = entry.meta.get("check")
        if check is not None:
            check(resolved)  # cross-parameter rules; raises ConfigError
        return resolved

    def describe(self) -> list[dict[str, Any]]:
        return [e.describe() for e in self]


# Re-exported so callers can catch one thing for bad parameter values.
ParamsError = ValidationError
