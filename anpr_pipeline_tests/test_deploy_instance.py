"""deploy/dagster.yaml: valid for Dagster's instance schema and usable against a real Postgres."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_YAML = REPO_ROOT / "deploy" / "dagster.yaml"


def _pg_env(monkeypatch: pytest.MonkeyPatch, sqlalchemy_url: str) -> None:
    url = sa.make_url(sqlalchemy_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", url.database or "")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")


def test_deploy_yaml_validates_against_the_instance_schema() -> None:
    config, custom_class = dagster_instance_config(str(DEPLOY_YAML.parent), DEPLOY_YAML.name)
    assert custom_class is None
    pg = config["storage"]["postgres"]["postgres_db"]
    assert pg["scheme"] == "postgresql+psycopg2" and pg["hostname"] == {"env": "DAGSTER_PG_HOST"}
    # Env-var references are resolved when the storage is built (see the Postgres test below).
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "anpr/camera", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1
    assert config["telemetry"]["enabled"] is False


def test_deploy_yaml_keeps_credentials_out_of_the_file() -> None:
    text = DEPLOY_YAML.read_text()
    for field in ("hostname", "username", "password", "db_name", "port"):
        assert f"{field}:\n        env: DAGSTER_PG_" in text


@pytest.mark.postgres
def test_instance_from_deploy_yaml_on_postgres(
    fresh_postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pg_env(monkeypatch, fresh_postgres_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        run_limits = concurrency.run_queue_config
        assert run_limits.max_concurrent_runs == 16
        assert any(t["key"] == "anpr/camera" for t in run_limits.tag_concurrency_limits)
        # The storage really is usable: a run round-trips through Postgres.
        run = instance.add_run(
            DagsterRun(
                job_name="process_video",
                run_id="deploy-yaml-test",
                status=DagsterRunStatus.NOT_STARTED,
                tags={"anpr/camera": "cam1"},
            )
        )
        assert instance.get_run_by_id(run.run_id).tags["anpr/camera"] == "cam1"
        # The gpu pool gets the default limit without any explicit setup.
        assert instance.event_log_storage.get_pool_limits() is not None
    engine = sa.create_engine(fresh_postgres_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"runs", "event_logs", "jobs", "job_ticks"} <= tables
