"""Deployment artefacts: the Helm chart renders valid, safe manifests that agree with the code;
the Dockerfile lints clean.

The chart is rendered with its defaults and with each values file in ``helm/loom/ci/`` (one
of them turns every option on). helm comes from ``.tools/bin/helm`` (``scripts/get-helm.sh``
fetches it; CI runs that first) or from PATH; without it these tests fail under ``CI=true``
and are skipped elsewhere. Nothing here needs a cluster, Docker or the network.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from loom.broker.base import namespaced
from loom.daemon.app import ROLES, is_loopback
from loom.daemon.settings import Settings
from loom.wire import WORK_QUEUE
from tests.services import in_ci

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "loom"
DOCKERFILE = REPO / "Dockerfile"
RELEASE_NAMESPACE = "loom-test"
CASES = {"defaults": None} | {p.stem: p for p in sorted((CHART / "ci").glob("*.yaml"))}
"""Values files to render: the chart's defaults, and every file under helm/loom/ci/."""
K8S_VERSIONS = ("1.27.0", "1.37.0")
"""The chart's kubeVersion floor and the newest kubernetes-validate knows."""
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
"""Kinds kubernetes-validate has no schema for; CRD_SCHEMAS below checks their shape."""
CHART_ONLY_VARIABLES = {"LOOM_CONFIG"}
"""LOOM_* variables that are not Settings fields: LOOM_CONFIG names the settings file."""
IMAGE_HTTP_HOST = "0.0.0.0"
"""LOOM_HTTP__HOST in the image (Dockerfile), for pods whose env does not set it."""
UNRESOLVED = "unresolved:"
"""pod_env's value for a required Secret key that no rendered Secret holds."""


def _missing(what: str, how: str) -> None:
    message = f"{what} is not available; {how}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: the deployment tests must run)", pytrace=False)
    pytest.skip(message)


@cache
def _helm_path() -> str | None:
    for candidate in (os.environ.get("LOOM_HELM"), str(REPO / ".tools" / "bin" / "helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("helm")


@pytest.fixture(scope="module")
def helm() -> str:
    path = _helm_path()
    if path is None:
        _missing("helm", "fetch it with: bash scripts/get-helm.sh (into .tools/bin/helm)")
    assert path is not None
    return path


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@cache
def _template(helm: str, case: str, *extra: str) -> str:
    values = CASES[case]
    args = [helm, "template", "loom", str(CHART), "--namespace", RELEASE_NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    done = _run(*args, *extra)
    assert done.returncode == 0, f"helm template ({case}) failed:\n{done.stderr}"
    return done.stdout


def render(helm: str, case: str, *extra: str) -> list[dict[str, Any]]:
    """The manifests the chart renders for ``case`` (plus ``--set`` style ``extra`` args)."""
    return [doc for doc in yaml.safe_load_all(_template(helm, case, *extra)) if doc]


def values(case: str) -> dict[str, Any]:
    """The chart's values for ``case``: values.yaml with the case's file merged over it."""
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    path = CASES[case]
    if path is not None:
        _merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def kind(docs: list[dict[str, Any]], kind_name: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind_name]


def one(docs: list[dict[str, Any]], kind_name: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in kind(docs, kind_name) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind_name} {name or ''}, found {len(found)}"
    return found[0]


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments by role (their app.kubernetes.io/component label)."""
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in kind(docs, "Deployment")
    }


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def secret_data(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Every rendered Secret's data, decoded, by Secret name."""
    return {
        s["metadata"]["name"]: {
            k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()
        }
        for s in kind(docs, "Secret")
    }


def pod_env(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The environment a role's container starts with, resolved from the rendered ConfigMaps
    and Secrets; a required key they do not hold becomes ``UNRESOLVED`` + secret/key."""
    maps = {c["metadata"]["name"]: c.get("data", {}) for c in kind(docs, "ConfigMap")}
    secrets = secret_data(docs)
    env: dict[str, str] = {}
    spec = container(deployment)
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
    for entry in spec.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        if ref["key"] in secrets.get(ref["name"], {}):
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
        elif not ref.get("optional", False):
            # An existing Secret's key, or one the values leave unset (the pod waits for it).
            env[entry["name"]] = f"{UNRESOLVED}{ref['name']}/{ref['key']}"
    return env


def loom_variables(docs: list[dict[str, Any]]) -> set[str]:
    """Every LOOM_* name the chart sets: ConfigMap env, Secret keys, container env."""
    names: set[str] = set()
    for config_map in kind(docs, "ConfigMap"):
        names.update(config_map.get("data", {}))
    for data in secret_data(docs).values():
        names.update(data)
    for deployment in kind(docs, "Deployment"):
        names.update(entry["name"] for entry in container(deployment).get("env", []))
    return {name for name in names if name.startswith("LOOM_")}


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside ``Model | None``; other types unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _model_of(args[0])
    return annotation


def is_settings_field(variable: str) -> bool:
    """True when ``LOOM_A__B`` names field ``a.b`` of Settings (nested models joined by __)."""
    parts = variable.removeprefix("LOOM_").lower().split("__")
    current: Any = Settings
    while parts:
        part = parts.pop(0)
        if typing.get_origin(current) is dict:  # dict[str, Model]: this part is a key
            current = _model_of(typing.get_args(current)[1])
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return False
        field = current.model_fields.get(part)
        if field is None:
            return False
        current = _model_of(field.annotation)
    return True


# -- helm lint, kubernetes-validate -------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_strict(helm: str, case: str) -> None:
    args = [helm, "lint", "--strict", str(CHART), "--namespace", RELEASE_NAMESPACE]
    if CASES[case] is not None:
        args += ["--values", str(CASES[case])]
    done = _run(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout, done.stdout
    assert "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_manifests_validate_strictly(helm: str, case: str, version: str) -> None:
    manifests = _template(helm, case)
    validate = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, "-"]
    done = _run(*validate, stdin=manifests)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))], done.stdout
    # Only the CRD kinds may lack a schema; every core kind must have been checked.
    for line in lines:
        if line.startswith("WARN"):
            assert any(f"kind {crd} " in line for crd in CRD_KINDS), line
    docs = render(helm, case)
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    assert len(passed) == len(core), done.stdout


_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$"}
_METADATA = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {"name": _NAME, "labels": {"type": "object"}},
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _crd(api_version: str, kind_name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind_name},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(required),
        "properties": properties,
    }


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # Subsets of the CRDs' OpenAPI schemas (KEDA 2.x, Prometheus Operator v1): the fields the
    # chart uses, their types, and no others.
    "ScaledObject": _crd(
        "keda.sh/v1alpha1",
        "ScaledObject",
        _object(
            {
                "scaleTargetRef": _object(
                    {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": _NAME},
                    "name",
                ),
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": _object(
                    {
                        "horizontalPodAutoscalerConfig": _object(
                            {
                                "behavior": _object(
                                    {
                                        "scaleDown": _object(
                                            {
                                                # The HPA refuses more than an hour.
                                                "stabilizationWindowSeconds": {
                                                    "type": "integer",
                                                    "minimum": 0,
                                                    "maximum": 3600,
                                                }
                                            },
                                            "stabilizationWindowSeconds",
                                        )
                                    },
                                    "scaleDown",
                                )
                            },
                            "behavior",
                        )
                    },
                    "horizontalPodAutoscalerConfig",
                ),
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "type": {"type": "string"},
                            # KEDA reads trigger metadata as strings only.
                            "metadata": _STRING_MAP,
                            "authenticationRef": _object({"name": _NAME}, "name"),
                        },
                        "type",
                        "metadata",
                    ),
                },
            },
            "scaleTargetRef",
            "triggers",
        ),
    ),
    "TriggerAuthentication": _crd(
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        _object(
            {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "parameter": {"type": "string"},
                            "name": _NAME,
                            "key": {"type": "string"},
                        },
                        "parameter",
                        "name",
                        "key",
                    ),
                }
            },
            "secretTargetRef",
        ),
    ),
    "ServiceMonitor": _crd(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        _object(
            {
                "selector": _object({"matchLabels": _STRING_MAP}, "matchLabels"),
                "namespaceSelector": _object(
                    {"matchNames": {"type": "array", "items": {"type": "string"}}}
                ),
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                            "relabelings": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "sourceLabels": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                        "targetLabel": {"type": "string"},
                                    }
                                ),
                            },
                        },
                        "port",
                    ),
                },
            },
            "selector",
            "endpoints",
        ),
    ),
    "PrometheusRule": _crd(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        _object(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string"},
                                        "keep_firing_for": {"type": "string"},
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                    "additionalProperties": False,
                                },
                            },
                        },
                    },
                }
            },
            "groups",
        ),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_custom_resources_are_well_formed(helm: str, case: str) -> None:
    for doc in render(helm, case):
        if doc["kind"] in CRD_KINDS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])


def test_every_option_renders_every_kind(helm: str) -> None:
    kinds = {doc["kind"] for doc in render(helm, "all-values")}
    core = {"Deployment", "Service", "Ingress", "ConfigMap", "Secret", "ServiceAccount"}
    assert kinds >= core | {"PodDisruptionBudget"} | CRD_KINDS


# -- what the manifests say ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_enabled_role_has_a_deployment_with_probes(helm: str, case: str) -> None:
    chart_values = values(case)
    docs = render(helm, case)
    roles = deployments(docs)
    assert set(roles) == {role for role in ROLES if chart_values[role]["enabled"]}
    for role, deployment in roles.items():
        spec = container(deployment)
        assert spec["args"][0] == role
        env = pod_env(docs, deployment)
        port = int(env["LOOM_HTTP__PORT"])
        assert spec["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            assert spec[probe]["httpGet"] == {"path": path, "port": "http"}, (role, probe)
        pdbs = {p["metadata"]["name"] for p in kind(docs, "PodDisruptionBudget")}
        if chart_values["podDisruptionBudget"]["enabled"]:
            assert deployment["metadata"]["name"] in pdbs


def test_replicas_and_the_single_scheduler_default(helm: str) -> None:
    roles = deployments(render(helm, "defaults"))
    assert roles["scheduler"]["spec"]["replicas"] == 1
    all_roles = deployments(render(helm, "all-values"))
    assert all_roles["gateway"]["spec"]["replicas"] == 3
    # KEDA owns the worker count: the Deployment must not fight it on every upgrade.
    assert "replicas" not in all_roles["worker"]["spec"]


@pytest.mark.parametrize("case", CASES)
def test_grace_period_covers_the_drain(helm: str, case: str) -> None:
    chart_values = values(case)
    docs = render(helm, case)
    for role, deployment in deployments(docs).items():
        timeout = float(pod_env(docs, deployment)["LOOM_SHUTDOWN_TIMEOUT"])
        assert timeout == float(chart_values["shutdownTimeout"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace == math.ceil(timeout) + chart_values["gracePeriodMargin"], role
        assert grace >= timeout + 3, role


@pytest.mark.parametrize("case", CASES)
def test_pods_run_locked_down(helm: str, case: str) -> None:
    for role, deployment in deployments(render(helm, case)).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = container(deployment)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context.get("privileged", False) is False
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        # A read-only root needs a writable /tmp.
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], role


@pytest.mark.parametrize("case", CASES)
def test_non_loopback_pods_always_get_a_token(helm: str, case: str) -> None:
    docs = render(helm, case)
    secrets = secret_data(docs)
    for role, deployment in deployments(docs).items():
        env = pod_env(docs, deployment)
        host = env.get("LOOM_HTTP__HOST", IMAGE_HTTP_HOST)
        if is_loopback(host):
            continue
        (token,) = [e for e in container(deployment)["env"] if e["name"] == "LOOM_API_TOKEN"]
        ref = token["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is False, f"{role}: the token must not be optional"
        if ref["name"] in secrets:  # the chart's own Secret: the token must be in it
            assert secrets[ref["name"]].get("LOOM_API_TOKEN"), role
        else:
            assert ref["name"] == values(case)["secrets"]["existingSecret"]


def test_token_is_generated_or_taken_from_values(helm: str) -> None:
    (generated,) = secret_data(render(helm, "defaults")).values()
    assert generated["LOOM_API_TOKEN"].isalnum()
    assert len(generated["LOOM_API_TOKEN"]) == 48
    (given,) = secret_data(render(helm, "all-values")).values()
    assert given["LOOM_API_TOKEN"] == values("all-values")["secrets"]["apiToken"]


def test_broker_and_state_urls_are_required_not_defaulted(helm: str) -> None:
    """Without URLs a pod must wait (missing required key), not start on memory:// and
    lose signals between roles that cannot see each other."""
    docs = render(helm, "defaults")
    for deployment in kind(docs, "Deployment"):
        env = pod_env(docs, deployment)
        assert env["LOOM_BROKER_URL"].startswith(UNRESOLVED)
        assert env["LOOM_STATE_URL"].startswith(UNRESOLVED)
    docs = render(helm, "all-values")
    for deployment in kind(docs, "Deployment"):
        env = pod_env(docs, deployment)
        assert env["LOOM_BROKER_URL"] == values("all-values")["secrets"]["brokerUrl"]
        assert env["LOOM_STATE_URL"] == values("all-values")["secrets"]["stateUrl"]


def test_existing_secret_is_used_and_none_is_created(helm: str) -> None:
    docs = render(helm, "existing-secret-values")
    name = values("existing-secret-values")["secrets"]["existingSecret"]
    assert not kind(docs, "Secret")
    for deployment in kind(docs, "Deployment"):
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container(deployment)["env"]
            if "valueFrom" in e
        }
        assert refs == {name}
        required = {
            e["name"]
            for e in container(deployment)["env"]
            if "valueFrom" in e and not e["valueFrom"]["secretKeyRef"]["optional"]
        }
        assert required == {"LOOM_API_TOKEN", "LOOM_BROKER_URL", "LOOM_STATE_URL"}
    auth = one(docs, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"][0]["name"] == name


@pytest.mark.parametrize("case", CASES)
def test_keda_scales_workers_on_the_work_queue(helm: str, case: str) -> None:
    chart_values = values(case)
    docs = render(helm, case)
    if not chart_values["keda"]["enabled"]:
        assert not kind(docs, "ScaledObject")
        return
    scaled = one(docs, "ScaledObject")
    worker = deployments(docs)["worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "rabbitmq"]
    meta = trigger["metadata"]
    assert meta["protocol"] == "http"
    assert meta["mode"] == "QueueLength"
    # The queue the workers consume, under the namespace the pods get.
    namespace = pod_env(docs, worker).get("LOOM_NAMESPACE", "")
    assert namespace == chart_values["config"]["namespace"]
    assert meta["queueName"] == namespaced(WORK_QUEUE, namespace)
    assert float(meta["value"]) == float(chart_values["keda"]["queueLength"])
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    secrets = secret_data(docs)
    if ref["name"] in secrets:
        management = secrets[ref["name"]][ref["key"]]
        assert management.startswith(("http://", "https://")), management


KEDA_ON = ("--set", "keda.enabled=true", "--set", "secrets.brokerUrl=amqp://u:p@mq:5672/")


def _prometheus_trigger(docs: list[dict[str, Any]]) -> dict[str, str] | None:
    triggers = one(docs, "ScaledObject")["spec"]["triggers"]
    found = [t["metadata"] for t in triggers if t["type"] == "prometheus"]
    assert len(found) <= 1
    return found[0] if found else None


def test_keda_keeps_a_worker_and_rides_out_dips_by_default(helm: str) -> None:
    """Defaults: at least one worker (replies, the sweep, handed-back sessions), and the
    HPA waits before removing workers; without the Prometheus trigger the notes say what
    the queue trigger cannot see."""
    chart_values = values("defaults")["keda"]
    assert chart_values["minReplicaCount"] == 1
    scaled = one(render(helm, "defaults", *KEDA_ON), "ScaledObject")["spec"]
    assert scaled["minReplicaCount"] == 1
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert _prometheus_trigger(render(helm, "defaults", *KEDA_ON)) is None
    done = _run(helm, "install", "loom", str(CHART), "--dry-run=client", *KEDA_ON,
                "--set", "keda.minReplicaCount=0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "keda.prometheus.serverAddress" in done.stdout
    assert "WARNING: keda.minReplicaCount is 0" in done.stdout
    window = render(helm, "all-values")
    spec = one(window, "ScaledObject")["spec"]
    stabilization = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert stabilization["stabilizationWindowSeconds"] == 600
    done = _run(helm, "template", "loom", str(CHART), *KEDA_ON,
                "--set", "keda.scaleDownStabilizationWindowSeconds=3601")  # fmt: skip
    assert done.returncode != 0


def test_keda_prometheus_trigger_counts_the_release_running_sessions(helm: str) -> None:
    """A notice leaves the queue when its run starts: the second trigger scales on the
    sessions the release's workers hold, as its ServiceMonitor labels them."""
    docs = render(helm, "all-values")
    trigger = _prometheus_trigger(docs)
    assert trigger is not None
    prometheus = values("all-values")["keda"]["prometheus"]
    assert trigger["serverAddress"] == prometheus["serverAddress"]
    assert trigger["threshold"] == str(prometheus["sessionsPerReplica"])
    assert trigger["activationThreshold"] == "0"
    metrics_service = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    (service,) = [
        s for s in kind(docs, "Service")
        if metrics_service.items() <= s["metadata"]["labels"].items()
    ]  # fmt: skip
    assert trigger["query"] == (
        f'sum(loom_active_sessions{{namespace="{RELEASE_NAMESPACE}", '
        f'service="{service["metadata"]["name"]}", component="worker"}})'
    )
    assert "loom_active_sessions" in Path(REPO / "loom" / "metrics.py").read_text()
    # Without sessionsPerReplica: the workers' concurrency (the daemon's default 8).
    address = ("--set", "keda.prometheus.serverAddress=http://prometheus:9090")
    defaults = _prometheus_trigger(render(helm, "defaults", *KEDA_ON, *address))
    assert defaults is not None
    assert defaults["threshold"] == str(Settings().worker.concurrency) == "8"
    concurrency = ("--set", "config.worker.concurrency=12")
    configured = _prometheus_trigger(render(helm, "defaults", *KEDA_ON, *address, *concurrency))
    assert configured is not None
    assert configured["threshold"] == "12"
    query = ("--set", "keda.prometheus.query=sum(my_query)")
    custom = _prometheus_trigger(render(helm, "defaults", *KEDA_ON, *address, *query))
    assert custom is not None
    assert custom["query"] == "sum(my_query)"


def test_default_ingress_publishes_only_the_inbound_routes(helm: str) -> None:
    docs = render(helm, "defaults", "--set", "ingress.enabled=true")
    (rule,) = one(docs, "Ingress")["spec"]["rules"]
    paths = {(p["path"], p["pathType"]) for p in rule["http"]["paths"]}
    assert paths == {
        ("/signals", "Prefix"),
        ("/slack", "Prefix"),
        ("/webhooks", "Prefix"),
        ("/sessions", "Prefix"),
    }
    # Each prefix serves routes of the gateway; none reaches the in-cluster endpoints.
    from loom.daemon.app import Daemon
    from loom.daemon.http import build_app

    slack = {"signing_secret": "not-a-secret", "bot_token": "xoxb-not-a-token"}
    app = build_app(Daemon(settings=Settings(slack=slack)), gateway=True)  # type: ignore[arg-type]
    served = {str(getattr(route, "path", "")) for route in app.routes}
    for path, _ in paths:
        assert any(p == path or p.startswith(path + "/") for p in served), path
    for private in ("/metrics", "/healthz", "/readyz", "/openapi.json"):
        assert private in served
        assert not any(private == p or private.startswith(p + "/") for p, _ in paths), private


@pytest.mark.parametrize(
    ("tag", "label"),
    [
        ("1.2.3@sha256:" + "a" * 64, "1.2.3-sha256-" + "a" * 50),
        ("sha256:abc", "sha256-abc"),
        ("v1+build.7", "v1-build.7"),
        ("1.2.3", "1.2.3"),
    ],
)
def test_version_label_is_a_valid_label_whatever_the_tag(helm: str, tag: str, label: str) -> None:
    docs = render(helm, "defaults", "--set-string", f"image.tag={tag}")
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/version"] == label
    gateway = deployments(docs)["gateway"]
    assert container(gateway)["image"] == f"loom:{tag}"  # the image keeps the tag as given


def test_keda_management_url_is_derived_from_the_broker_url(helm: str) -> None:
    docs = render(helm, "all-values")
    (data,) = secret_data(docs).values()
    assert data["RABBITMQ_MANAGEMENT_URL"] == "http://loom:not-a-real-password@rabbitmq:15672/loom"
    assert "RABBITMQ_MANAGEMENT_URL" not in pod_env(docs, deployments(docs)["worker"])
    url = "https://u:p@mq.example.com/api/"
    explicit = render(
        helm,
        "defaults",
        "--set",
        "keda.enabled=true",
        "--set",
        f"secrets.rabbitmqManagementUrl={url}",
    )
    (data,) = secret_data(explicit).values()
    assert data["RABBITMQ_MANAGEMENT_URL"] == url


def test_keda_without_a_management_url_says_what_to_set(helm: str) -> None:
    done = _run(helm, "template", "loom", str(CHART), "--set", "keda.enabled=true")
    assert done.returncode != 0
    assert "secrets.rabbitmqManagementUrl" in done.stderr


@pytest.mark.parametrize("case", CASES)
def test_every_loom_variable_is_a_setting(helm: str, case: str) -> None:
    variables = loom_variables(render(helm, case))
    assert "LOOM_SHUTDOWN_TIMEOUT" in variables
    assert "LOOM_API_TOKEN" in variables
    unknown = sorted(v for v in variables - CHART_ONLY_VARIABLES if not is_settings_field(v))
    assert not unknown, f"the chart sets variables Settings does not have: {unknown}"


@pytest.mark.parametrize("case", CASES)
def test_settings_load_from_what_the_chart_renders(
    helm: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each role's environment and the mounted settings file make valid Settings."""
    docs = render(helm, case)
    config_file = tmp_path / "loom.toml"
    (config_map,) = [c for c in kind(docs, "ConfigMap") if "loom.toml" in c.get("data", {})]
    config_file.write_text(config_map["data"]["loom.toml"])
    chart_values = values(case)
    for role, deployment in deployments(docs).items():
        for name in list(os.environ):
            if name.startswith("LOOM_"):
                monkeypatch.delenv(name)
        env = pod_env(docs, deployment)
        for name, url in (
            ("LOOM_BROKER_URL", "amqp://loom:x@rabbitmq:5672/"),
            ("LOOM_STATE_URL", "redis://redis:6379/0"),
        ):
            if env[name].startswith(UNRESOLVED):  # from an existing Secret, or still unset
                env[name] = url
        env["LOOM_CONFIG"] = str(config_file)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings()
        assert settings.http.host == "0.0.0.0", role
        assert settings.api_token is not None, role
        assert settings.shutdown_timeout == float(chart_values["shutdownTimeout"])
        assert settings.namespace == chart_values["config"]["namespace"]
        assert not settings.in_process, role
        # The settings file arrives intact: types too (a payload's 3 stays an int).
        jobs = zip(settings.cron, chart_values["cron"], strict=True)
        assert [job.model_dump(include=set(given)) for job, given in jobs] == chart_values["cron"]
        given = chart_values.get("capabilities") or {}
        assert settings.capabilities.model_dump(exclude_unset=True) == given
        if chart_values["heartbeat"]:
            assert settings.heartbeat.interval == chart_values["heartbeat"]["interval"]
            assert [p.name for p in settings.heartbeat.probes] == [
                p["name"] for p in chart_values["heartbeat"]["probes"]
            ]
    if case == "all-values":
        assert settings.worker.concurrency == 32  # the worker's extraEnv wins over config
        assert settings.worker.lease_ttl == 20
        assert settings.session_ttl == 2592000
        assert settings.log.format == "json"
        assert settings.feedback.enabled is False
        assert settings.feedback.max_session_events == 100
        assert settings.webhooks.github_secret is not None  # env and file merge
        assert set(settings.webhooks.mappings) == set(chart_values["webhooks"]["mappings"])
        assert settings.attention_rules
        assert [s["name"] for s in settings.mcp_servers] == ["k8s"]
        assert settings.slack.bot_token is not None


def test_schema_rejects_unknown_values(helm: str) -> None:
    typos = ("gatway.replicas=3", "worker.replicaz=3", "config.worker.concurency=4")
    for typo in (*typos, "keda.queuLength=4", "secrets.apiTokn=x"):
        done = _run(helm, "template", "loom", str(CHART), "--set", typo)
        assert done.returncode != 0, typo
        assert "additional properties" in done.stderr, done.stderr


def test_alerts_and_dashboard_come_from_the_chart_files(helm: str) -> None:
    docs = render(helm, "all-values")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert one(docs, "PrometheusRule")["spec"]["groups"] == alerts["groups"]
    dashboards = [
        c for c in kind(docs, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    (dashboard,) = dashboards
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = dashboard["data"].values()
    assert json.loads(content) == json.loads((CHART / "files" / "dashboard.json").read_text())


def test_metrics_are_scraped_from_every_role(helm: str) -> None:
    docs = render(helm, "all-values")
    monitor = one(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = kind(docs, "Service")
    (service,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    for deployment in deployments(docs).values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()


def test_gateway_service_and_ingress_reach_only_the_gateway(helm: str) -> None:
    docs = render(helm, "all-values")
    gateway = deployments(docs)["gateway"]
    service = one(docs, "Service", gateway["metadata"]["name"])
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    backend = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == service["metadata"]["name"]


def test_install_notes_render(helm: str) -> None:
    for case in CASES:
        args = [helm, "install", "loom", str(CHART), "--dry-run=client", "-n", RELEASE_NAMESPACE]
        if CASES[case] is not None:
            args += ["--values", str(CASES[case])]
        done = _run(*args)
        assert done.returncode == 0, done.stderr
        assert "NOTES:" in done.stdout
        assert "grace period" in done.stdout


# -- the image ---------------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_lints_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        _missing("hadolint", "install the dev extra: uv sync --locked --extra dev")
    assert hadolint is not None
    done = _run(hadolint, str(DOCKERFILE))
    assert done.returncode == 0, done.stdout + done.stderr


def _instructions() -> Iterator[tuple[str, str]]:
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        logical += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if logical.strip():
                word, _, rest = logical.strip().partition(" ")
                yield word.upper(), rest.strip()
            logical = ""


def test_dockerfile_runs_loom_as_a_drainable_unprivileged_process() -> None:
    instructions = list(_instructions())
    last: dict[str, str] = {}
    for word, rest in instructions:
        last[word] = rest
    assert sum(word == "FROM" for word, _ in instructions) >= 2  # multi-stage
    assert any("python:3.11-slim" in rest for word, rest in instructions if word == "ARG")
    assert any("uv sync --locked" in rest for word, rest in instructions if word == "RUN")
    assert json.loads(last["ENTRYPOINT"]) == ["loom"]
    assert json.loads(last["CMD"])[0] in ("run", *ROLES)
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert "/healthz" in last["HEALTHCHECK"]
    user = last["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert f"LOOM_HTTP__HOST={IMAGE_HTTP_HOST}" in last["ENV"]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # allow-list: nothing but what is named below
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for word, rest in _instructions():
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert source in allowed, source
                assert (REPO / source).exists(), source


@pytest.mark.parametrize("key", ["apiToken", "webhookSecret", "slackBotToken", "anthropicApiKey"])
def test_the_chart_refuses_a_blank_secret(helm: str, key: str) -> None:
    """Empty leaves a secret unset; only spaces is a mistake that would reach the pods as a
    blank credential: refused at render time, naming the value."""
    done = _run(helm, "template", "loom", str(CHART), "--set-string", f"secrets.{key}=  ")
    assert done.returncode != 0
    assert f"/secrets/{key}" in done.stderr, done.stderr
    assert (
        _run(helm, "template", "loom", str(CHART), "--set-string", f"secrets.{key}=").returncode
        == 0
    )


def test_the_workers_held_transcripts_budget_is_a_value(helm: str) -> None:
    docs = render(helm, "defaults", "--set", "config.state.holdBytes=67108864")
    for deployment in kind(docs, "Deployment"):
        assert pod_env(docs, deployment)["LOOM_STATE__HOLD_BYTES"] == "67108864"
    assert Settings(state={"hold_bytes": 67108864}).state.hold_bytes == 67108864
    defaults = render(helm, "defaults")
    for deployment in kind(defaults, "Deployment"):
        assert "LOOM_STATE__HOLD_BYTES" not in pod_env(defaults, deployment)
