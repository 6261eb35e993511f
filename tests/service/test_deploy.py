"""Deployment files: the Dockerfile (hadolint), compose.yaml (compose-spec schema) and the
Kubernetes manifests (the Kubernetes JSON schemas bundled with kubernetes-validate).

No Docker engine or cluster runs here, so these check what can be checked offline: the
linters and schemas, and the properties the service relies on (probes on /healthz and
/readyz, a GPU per replica, non-root, the install path shared with the Makefile).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} not installed: run `sh scripts/install.sh .venv/bin/python test`"
    return path


def _settings_env_names() -> set[str]:
    from service.settings import Settings

    return {"DF_" + name.upper() for name in Settings.model_fields}


# --- Dockerfile ---------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions((DOCKER / "Dockerfile").read_text())


def _hadolint(path: Path) -> list[dict]:
    proc = subprocess.run([_tool("hadolint"), "--no-color", "--failure-threshold", "style",
                           "-f", "json", str(path)], capture_output=True, text=True, timeout=60)
    return json.loads(proc.stdout or "[]")


def test_hadolint_finds_nothing():
    findings = _hadolint(DOCKER / "Dockerfile")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}"
                                     for f in findings)


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The linter really runs: an untagged base and a root user are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\nUSER root\n")
    codes = {f["code"] for f in _hadolint(bad)}
    assert {"DL3006", "DL3008", "DL3002"} <= codes


def test_dockerfile_installs_like_the_makefile(dockerfile):
    """Dependencies first (from pyproject alone), then the code, both via scripts/install.sh."""
    makefile = (ROOT / "Makefile").read_text()
    assert "sh scripts/install.sh $(BIN)/python" in makefile
    runs = [(i, args) for i, (ins, args) in enumerate(dockerfile) if ins == "RUN"]
    copies = [(i, args) for i, (ins, args) in enumerate(dockerfile) if ins == "COPY"]
    deps = [i for i, a in runs if re.search(r"DF_DEPS_ONLY=1 sh scripts/install\.sh python\b", a)]
    full = [i for i, a in runs if re.fullmatch(r"sh scripts/install\.sh python", a)]
    assert len(deps) == 1 and len(full) == 1
    code = [i for i, a in copies if a.split()[0] in ("core/", "service/")]
    deps_inputs = [i for i, a in copies
                   if a.split()[0] in ("pyproject.toml", "scripts/install.sh")]
    assert len(code) == 2 and len(deps_inputs) == 2
    assert max(deps_inputs) < deps[0] < min(code) < full[0]


def test_dockerfile_runtime_properties(dockerfile):
    from core.weights import BACKBONES

    text = (DOCKER / "Dockerfile").read_text()
    args = {a.split("=")[0]: a.partition("=")[2] for ins, a in dockerfile if ins == "ARG"}
    assert args["VARIANT"] == "cuda"
    assert "cuda" in args["CUDA_BASE"] and args["CUDA_BASE"].startswith("pytorch/pytorch:")
    froms = [a for ins, a in dockerfile if ins == "FROM"]
    assert "${CUDA_BASE} AS base-cuda" in froms and "${CPU_BASE} AS base-cpu" in froms
    assert froms[-1].startswith("base-${VARIANT}")
    assert set(args["LPIPS_NETS"].split(",")) == set(BACKBONES)

    users = [a for ins, a in dockerfile if ins == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    fetch = [a for ins, a in dockerfile if ins == "RUN" and "weights fetch" in a]
    assert len(fetch) == 1 and "difference-finder weights fetch --nets \"$LPIPS_NETS\"" in fetch[0]
    assert "weights list --verify" in fetch[0]
    env = " ".join(a for ins, a in dockerfile if ins == "ENV")
    assert "TORCH_HOME=/opt/torch" in env
    [health] = [a for ins, a in dockerfile if ins == "HEALTHCHECK"]
    assert "http://127.0.0.1:8000/healthz" in health
    [cmd] = [a for ins, a in dockerfile if ins == "CMD"]
    assert json.loads(cmd)[:2] == ["difference-finder", "serve"]
    assert json.loads(cmd)[json.loads(cmd).index("--port") + 1] == "8000"
    assert "EXPOSE 8000" in text


def test_dockerignore_lets_every_copied_path_through(dockerfile):
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for ins, a in dockerfile:
        if ins == "COPY" and not a.startswith("--from"):
            *sources, _dest = a.split()
            for src in sources:
                assert src.rstrip("/") in allowed, f"{src} is excluded by .dockerignore"
                assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"


def _fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """A 'python' that runs real Python for scripts but records pip calls instead."""
    log = tmp_path / "pip.log"
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-m" ]; then echo "$*" >> {log}; '
        f'case "$*" in *" -r "*) cat "${{6}}" >> {log};; esac; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    return fake, log


def test_install_script_dependency_only_mode(tmp_path):
    """DF_DEPS_ONLY=1 installs pyproject's dependencies (and extras) without the package."""
    import tomllib

    fake, log = _fake_python(tmp_path)
    env = {**os.environ, "DF_DEPS_ONLY": "1"}
    subprocess.run(["sh", "scripts/install.sh", str(fake), "test"], cwd=ROOT, env=env,
                   check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert lines[0] == "-m pip install --quiet --upgrade pip"
    assert lines[1].startswith("-m pip install --quiet -r ")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert lines[2:] == project["dependencies"] + project["optional-dependencies"]["test"]

    log.unlink()
    subprocess.run(["sh", "scripts/install.sh", str(fake)], cwd=ROOT, check=True, timeout=60)
    assert log.read_text().splitlines()[1] == "-m pip install --quiet -e ."


# --- compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_matches_the_compose_spec_schema():
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(DOCKER / "compose.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_service(compose):
    [svc] = compose["services"].values()
    assert (DOCKER / svc["build"]["context"]).resolve() == ROOT
    assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    [gpu] = svc["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert svc["restart"] in ("always", "unless-stopped")
    assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    assert svc["healthcheck"]["start_period"]
    env = svc["environment"]
    torch_home = env["TORCH_HOME"]
    assert torch_home == "/opt/torch"  # where the image put the weights
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert mounts[torch_home] in compose["volumes"]  # a named volume, seeded from the image
    assert svc["ports"] == ["${DF_PORT:-8000}:8000"]
    names = {k for k in env if k.startswith("DF_")}
    assert {"DF_DEVICES", "DF_QUEUE_SIZE", "DF_PRELOAD", "DF_API_KEYS"} <= names
    assert names <= _settings_env_names(), names - _settings_env_names()
    for key, value in env.items():  # every setting comes from the environment
        if key.startswith("DF_"):
            assert value.startswith(f"${{{key}:-"), key


# --- Kubernetes ---------------------------------------------------------------------------


def _manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_manifests_match_the_kubernetes_schemas():
    import kubernetes_validate

    docs = _manifests()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(docs)
    for kind, doc in docs.items():
        version = kubernetes_validate.validate(doc, "1.30", strict=True)
        assert version == "1.30", kind


def test_schema_check_rejects_mistakes():
    import kubernetes_validate

    bad = _manifests()["Deployment"]
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(bad, "1.30", strict=True)


def test_deployment_probes_gpu_and_wiring():
    docs = _manifests()
    dep, svc, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = dep["spec"]["template"]
    [c] = pod["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == 8000
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", 8000)
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] and sec["runAsUser"] == 10001  # the image's USER

    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in ("http", 8000)

    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "df_queue_depth"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 1 <= hpa["spec"]["maxReplicas"]
    # the grace period covers the service's own shutdown delay and timeout, and the delay
    # outlasts the readiness probe's failures (endpoints drop the pod before it stops
    # accepting)
    config = docs["ConfigMap"]["data"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(
        config["DF_SHUTDOWN_TIMEOUT"]) + float(config["DF_SHUTDOWN_DELAY"])
    ready = next(c for c in pod["spec"]["containers"])["readinessProbe"]
    assert float(config["DF_SHUTDOWN_DELAY"]) > (ready.get("periodSeconds", 10)
                                                 * ready.get("failureThreshold", 3))


def test_configmap_names_real_settings_and_kustomization_lists_all():
    config = _manifests()["ConfigMap"]["data"]
    assert set(config) <= _settings_env_names(), set(config) - _settings_env_names()
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_queue_depth_metric_is_exported_by_the_service():
    """The HPA's metric name is one the service really exposes on /metrics."""
    from service.prometheus import Metrics

    names = {m.name for m in Metrics().registry.collect()}
    assert "df_queue_depth" in names
