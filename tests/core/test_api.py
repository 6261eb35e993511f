"""The public surface of core, pinned, and the layering rule: the library imports neither
the service nor the command line, and its modules form no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import core

CORE = Path(core.__file__).parent


def test_core_all_is_pinned() -> None:
    assert sorted(core.__all__) == [
        "CandidateResult", "ChecksumError", "Comparison", "ConfigError", "DEFAULT_PIPELINE",
        "DeviceError", "DifferenceFinderError", "Finder", "ImageDecodeError", "Improvement",
        "InputError", "METRICS", "MODEL_CACHE", "MetricError", "MetricOutput",
        "POST_PROCESSORS", "PRE_PROCESSORS", "PairResult", "PairingError", "PipelineConfig",
        "Region", "RegionsConfig", "STRATEGIES", "ShapeMismatchError", "WeightsFetchError",
        "WeightsMissingError", "__version__", "compare", "find_regions",
    ]
    for name in core.__all__:
        assert hasattr(core, name), name


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never executed)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def module_imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports at run time (relative imports
    resolved in core)."""
    names: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = f"core.{node.module}" if node.level else node.module
            names.add(base if node.module else "core")
    return names


def test_core_imports_neither_service_nor_cli() -> None:
    for path in CORE.glob("*.py"):
        bad = {n for n in module_imports(path) if n.split(".")[0] in ("service", "cli")}
        assert not bad, f"{path.name} imports {bad}"


def test_core_modules_import_no_cycle() -> None:
    graph = {f"core.{p.stem}": {n for n in module_imports(p) if n.startswith("core.")}
             for p in CORE.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, " -> ".join([*trail, node])
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_no_private_name_is_imported_across_modules() -> None:
    root = CORE.parent
    for package in ("core", "cli", "difference_finder"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    private = [a.name for a in node.names
                               if a.name.startswith("_") and not a.name.startswith("__")]
                    assert not private, f"{path.name} imports {private} from {node.module}"
