"""Operations schedules and alert sensors are in Definitions and tick as expected."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import DefaultScheduleStatus, build_schedule_context

from anpr_pipeline.definitions import defs
from anpr_pipeline.schedules import SCHEDULES

EXPECTED = {
    "retention_daily": ("retention_sweep", "30 2 * * *"),
    "db_maintenance_nightly": ("db_maintenance", "0 4 * * *"),
    "archive_weekly": ("archive", "30 3 * * 0"),
    "backup_nightly": ("backup", "0 1 * * *"),
    "restore_test_monthly": ("restore_test", "0 5 1 * *"),
}


def test_ops_jobs_schedules_and_sensors_are_in_definitions():
    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs()}
    assert {
        "retention_sweep",
        "db_maintenance",
        "backup",
        "restore_test",
        "export_plate",
        "erase_plate",
        "archive",
    } <= jobs
    schedules = {s.name: s for s in repo.schedule_defs}
    for name, (job_name, cron) in EXPECTED.items():
        assert schedules[name].job_name == job_name and schedules[name].cron_schedule == cron
        assert schedules[name].default_status == DefaultScheduleStatus.RUNNING
    # Every schedule, the asset ones included: Dagster's default is STOPPED, and the docs say
    # they all run without anyone switching them on.
    assert {s.name for s in repo.schedule_defs} >= {s.name for s in SCHEDULES}
    for sched in repo.schedule_defs:
        assert sched.default_status == DefaultScheduleStatus.RUNNING, sched.name
    sensors = {s.name for s in repo.sensor_defs}
    assert {"run_failure_alert", "backlog_alert", "worker_stall_alert", "erase_run_scrubber"} <= sensors


def test_schedule_ticks_request_one_keyed_run():
    moment = datetime(2025, 3, 1, 2, 30, tzinfo=UTC)
    for sched in [s for s in SCHEDULES if s.name in EXPECTED]:
        [request] = sched.evaluate_tick(build_schedule_context(scheduled_execution_time=moment)).run_requests
        assert request.run_key == f"{sched.name}:2025-03-01T02:30Z"
        assert request.tags["anpr/schedule"] == sched.name


def test_ops_secrets_are_env_references_not_values(monkeypatch):
    from anpr_pipeline.definitions import build_definitions
    from anpr_pipeline.settings import load_settings

    monkeypatch.setenv("ANPR_GDPR_SALT", "s3cret-salt")
    monkeypatch.setenv("ANPR_STALL_MINUTES", "7")
    resource = build_definitions(load_settings()).resources["ops_settings"]
    assert "s3cret-salt" not in repr(resource) and resource.stall_minutes == 7
