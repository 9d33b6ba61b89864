"""The maintenance jobs carry the run tag the instances limit to one run at a time, and the
limit in both dagster.yaml files is on that very tag, as a real instance reads it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, build_schedule_context
from dagster._core.instance.config import dagster_instance_config
from dagster._utils.tags import TagConcurrencyLimitsCounter

from anpr_pipeline.ops.jobs import MAINTENANCE_TAG, OPS_JOBS
from anpr_pipeline.schedules import SCHEDULES

# The asset job's schedule (camera_daily_stats) is built late, with the definitions: not ours.
OPS_SCHEDULES = [s for s in SCHEDULES if getattr(s, "job_name", None)]
REPO = Path(__file__).resolve().parents[2]
INSTANCE_YAMLS = [REPO / "dagster.yaml", REPO / "deploy" / "dagster.yaml"]
SERIALISED = {"retention_sweep", "db_maintenance", "archive", "backup", "restore_test"}
NOT_HELD = {"export_plate", "erase_plate"}  # GDPR requests never wait behind maintenance


def _job(name: str):
    return next(j for j in OPS_JOBS if j.name == name)


def _scheduled_run_tags(schedule) -> dict[str, str]:
    """The tags of the run a tick launches: the job's run tags, then the request's on top
    (dagster._scheduler.scheduler builds them in this order)."""
    moment = datetime(2025, 3, 2, 4, 0, tzinfo=UTC)
    [request] = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=moment)).run_requests
    return {**_job(schedule.job_name).run_tags, **request.tags}


def test_every_ops_job_is_either_serialised_or_deliberately_not():
    assert {j.name for j in OPS_JOBS} == SERIALISED | NOT_HELD


def test_serialised_jobs_carry_the_maintenance_tag_and_gdpr_jobs_do_not():
    for name in SERIALISED:
        assert _job(name).run_tags.get(MAINTENANCE_TAG) == "true", name
    for name in NOT_HELD:
        assert MAINTENANCE_TAG not in _job(name).run_tags, name


def test_scheduled_maintenance_runs_keep_the_tag():
    scheduled = [s for s in OPS_SCHEDULES if s.job_name in SERIALISED]
    assert {s.job_name for s in scheduled} == SERIALISED
    for schedule in scheduled:
        assert _scheduled_run_tags(schedule)[MAINTENANCE_TAG] == "true", schedule.name


@pytest.mark.parametrize("path", INSTANCE_YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_instance_yaml_limits_the_maintenance_tag_to_one_run(path: Path):
    limits = yaml.safe_load(path.read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    # No `value`: one run across all values of the tag, not one per value.
    assert {"key": MAINTENANCE_TAG, "limit": 1} in limits
    config, _ = dagster_instance_config(str(path.parent), path.name)  # Dagster's schema accepts it
    assert {"key": MAINTENANCE_TAG, "limit": 1} in config["concurrency"]["runs"]["tag_concurrency_limits"]


@pytest.fixture
def embedded_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An instance from the repository's dagster.yaml, as `make demo` sets it up."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        yield instance


def test_run_queue_holds_a_second_maintenance_run_but_not_gdpr_or_video(embedded_instance):
    queue = embedded_instance.get_concurrency_config().run_queue_config
    assert {"key": MAINTENANCE_TAG, "limit": 1} in queue.tag_concurrency_limits
    in_progress = DagsterRun(job_name="archive", run_id="archive-1", tags=dict(_job("archive").run_tags))
    # The run queue daemon's own decision, from the instance's limits and the in-progress run.
    counter = TagConcurrencyLimitsCounter(queue.tag_concurrency_limits, [in_progress])
    nightly = next(s for s in OPS_SCHEDULES if s.job_name == "db_maintenance")
    assert counter.is_blocked(DagsterRun(job_name="db_maintenance", tags=_scheduled_run_tags(nightly)))
    for name in NOT_HELD:
        assert not counter.is_blocked(DagsterRun(job_name=name, tags=dict(_job(name).run_tags))), name
    video = DagsterRun(job_name="process_video", tags={"anpr/kind": "process_video", "anpr/camera": "cam1"})
    assert not counter.is_blocked(video)
