"""The service's public names, pinned: each module's ``__all__`` (a change here is a
change of API, made on purpose), and the layering rules: no import cycle inside
``service``, no module importing another's ``_private`` name, every exported name real."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"

PUBLIC = {
    "service.apidocs": {
        'CAPABILITIES_RESPONSES', 'COMPARE_REQUEST', 'COMPARE_RESPONSES', 'DESCRIPTION',
        'DIFF_REQUEST', 'DIFF_RESPONSES', 'HEALTH_RESPONSES', 'METRICS_RESPONSES',
        'READY_RESPONSES', 'install', 'problem_responses', 'request_schema'
    },
    "service.app": {'COMPUTING_PATHS', 'ServiceState', 'create_app'},
    "service.client": {
        'AsyncClient', 'CandidateResult', 'Client', 'ClientRequestError', 'CompareResult',
        'DiffResult', 'Improvement', 'ServerError', 'ServiceBusyError', 'ServiceConnectionError',
        'ServiceError', 'decode_map'
    },
    "service.cvat": {
        'DETECT_EXAMPLE', 'DetectRequest', 'LABEL', 'detections', 'handler', 'init_context'
    },
    "service.budget": {
        'FACTORS', 'ImageHeader', 'MemoryBudget', 'Reservation', 'current_reservation',
        'factor_for', 'memory_limit', 'peek_header', 'use_pipeline'
    },
    "service.drain": {'DrainMiddleware'},
    "service.gate": {'ADMISSION_KEY', 'AdmissionGate', 'taken_place'},
    "service.jsonbody": {'Base64', 'dumps'},
    "service.looplag": {'INTERVAL_S', 'watch_loop_lag'},
    "service.deps": {'SettingsDep', 'StateDep', 'get_settings', 'get_state'},
    "service.encoding": {
        'COMPARE_MEDIA_TYPES', 'FIGURE_FORMAT', 'JSON', 'MEDIA_TYPES', 'NPY', 'PNG',
        'comparison_bytes', 'encode', 'map_payload', 'negotiate', 'regions_json'
    },
    "service.errors": {
        'ClientDisconnected', 'DeadlineExceeded', 'FetchFailed', 'LabelStudioAuthFailed',
        'MalformedJson', 'MemoryFull', 'NotAcceptable', 'NotAnImage', 'NotFound', 'NotReady',
        'OutOfMemory', 'OverMemoryBudget', 'PayloadTooLarge', 'QueueFull', 'ServiceProblem',
        'TITLES', 'Unauthorized', 'UnsupportedMediaType', 'UrlRefused', 'ValidationProblem',
        'WaitTooLong'
    },
    "service.forms": {
        'FileField', 'JSON', 'MULTIPART', 'MultipartForm', 'PART_LIMIT', 'TextField', 'Upload',
        'media_type', 'parse_config', 'parse_json_model', 'read_json', 'read_multipart',
        'require_media'
    },
    "service.images": {'ImageLoader', 'Source'},
    "service.label_studio": {
        'DEFAULT_LABEL', 'LabelStudioAuth', 'LabelStudioFiles', 'MAX_TASKS', 'PredictRequest',
        'SetupRequest', 'Target', 'encode_rle', 'failed_prediction', 'jwt_claims', 'mask_to_rle',
        'model_version', 'parse_label_config', 'prediction', 'presign_url', 'resolve_task_url',
        'task_url'
    },
    "service.label_studio.auth": {'LabelStudioAuth', 'jwt_claims'},
    "service.label_studio.config": {'DEFAULT_LABEL', 'KINDS', 'Target', 'parse_label_config'},
    "service.label_studio.files": {'ACCEPT', 'LabelStudioFiles'},
    "service.label_studio.protocol": {
        'LabelStudioTask', 'MAX_TASKS', 'PredictRequest', 'REQUEST_FAILURES', 'SetupRequest',
        'failed_prediction', 'model_version', 'prediction'
    },
    "service.label_studio.rle": {'encode_rle', 'mask_to_rle'},
    "service.label_studio.urls": {
        'CLOUD_SCHEMES', 'presign_url', 'public_url', 'resolve_task_url', 'same_origin',
        'task_field_problem', 'task_url'
    },
    "service.lifecycle": {'Exchange', 'Work', 'respond', 'server_timing'},
    "service.middleware": {'ApiKeyMiddleware', 'BodyLimitMiddleware'},
    "service.openapi": {'main', 'render'},
    "service.problems": {
        'FieldError', 'PROBLEM_MEDIA_TYPE', 'Problem', 'TYPE_PREFIX', 'field_errors',
        'install_handlers', 'pointer', 'problem_body', 'problem_response', 'render',
        'validation_error'
    },
    "service.prometheus": {'CONTENT_TYPE_LATEST', 'Metrics', 'MetricsMiddleware'},
    "service.routes.compare": {'CompareJob', 'default_labels', 'router'},
    "service.routes.cvat": {'compute', 'router'},
    "service.routes.diff": {'compute', 'router'},
    "service.routes.label_studio": {'compute', 'router'},
    "service.routes.operations": {'describe', 'memory', 'router'},
    "service.routes.page": {'PAGE_FILES', 'PAGE_PATHS', 'PageFiles', 'STATIC', 'router'},
    "service.schemas": {
        'COMPARE_FORM', 'CandidateOut', 'CompareRequest', 'CompareResponse', 'DIFF_FORM',
        'DiffRequest', 'DiffResponse', 'EXAMPLE_CONFIG', 'ImageInput', 'ImprovementOut', 'Label',
        'MAX_CANDIDATES', 'MapPayload', 'RegionOut', 'Scale', 'TINY_PNG_B64'
    },
    "service.scores": {'METRICS_DOC', 'MetricsOption', 'parse_metrics'},
    "service.server": {'DrainingServer', 'serve'},
    "service.settings": {'Settings', 'setting_errors'},
    "service.state": {'ServiceState'},
    "service.urlfetch": {'Fetcher', 'UrlPolicy', 'address_allowed', 'refusal', 'sniff_image'},
    "service.warmup": {'Warmup', 'warmup_pair'},
    "service.workers": {'Admission', 'WorkerPool', 'cancel_check', 'lower_priority',
                        'resolve_devices'},
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_module_exports_exactly_its_pinned_names(name):
    module = importlib.import_module(name)
    assert set(module.__all__) == PUBLIC[name]
    assert len(module.__all__) == len(set(module.__all__))
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_every_service_module_is_pinned():
    found = {_module_name(p) for p in SERVICE.rglob("*.py")}
    found -= {"service", "service.__main__", "service.routes"}
    assert found == set(PUBLIC)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in ``path``, with relative
    imports resolved; ``from . import x`` counts as importing the submodule ``x``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [alias.name for alias in node.names]
            submodules = [n for n in names if (SERVICE.parent / base.replace(".", "/")
                                               / n).with_suffix(".py").exists()
                          or (SERVICE.parent / base.replace(".", "/") / n).is_dir()]
            out.append((base, [n for n in names if n not in submodules]))
            out += [(f"{base}.{n}", []) for n in submodules]
    return out


def test_no_import_cycle_and_no_private_imports_in_service():
    graph: dict[str, set[str]] = {}
    private = []
    for path in SERVICE.rglob("*.py"):
        name = _module_name(path)
        graph[name] = set()
        for target, names in _imports(path):
            if target.startswith("service"):
                graph[name].add(target)
            private += [f"{name} imports {target}.{n}" for n in names
                        if n.startswith("_") and n != "__version__"]
    assert not private

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack, node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            # a package importing its own submodules is how packages re-export
            if not nxt.startswith(node + "."):
                visit(nxt, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for node in sorted(graph):
        visit(node, [], done)
