"""Schedules for the operations jobs (UTC). Running by default: storage stays bounded and the
database healthy without anyone remembering to switch them on.

| schedule | when (UTC) | job |
|---|---|---|
| retention_daily | 02:30 every day | retention_sweep |
| archive_weekly | 03:30 Sunday | archive |
| db_maintenance_nightly | 04:00 every day | db_maintenance (after retention freed rows) |
| backup_nightly | 01:00 every day | backup |
| restore_test_monthly | 05:00 on the 1st | restore_test |
| camera_daily_stats_schedule | 01:15 every day | camera_daily_stats_job (yesterday's partition; defined with its asset in assets/stats.py) |

Each tick's run key is the scheduled time, so a daemon restart never runs a tick twice.
"""

from collections.abc import Callable
from datetime import datetime

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from anpr_pipeline.assets.stats import camera_daily_stats_schedule
from anpr_pipeline.ops import jobs as ops_jobs


def _ops_schedule(name: str, cron: str, job: JobDefinition, description: str) -> ScheduleDefinition:
    def evaluate(context: ScheduleEvaluationContext) -> RunRequest:
        moment: datetime = context.scheduled_execution_time
        stamp = moment.strftime("%Y-%m-%dT%H:%MZ") if moment else "manual"
        return RunRequest(run_key=f"{name}:{stamp}", tags={"anpr/kind": "ops", "anpr/schedule": name})

    evaluate.__name__ = name
    fn: Callable = schedule(
        cron_schedule=cron,
        job=job,
        name=name,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=description,
    )(evaluate)
    return fn


retention_daily = _ops_schedule(
    "retention_daily",
    "30 2 * * *",
    ops_jobs.retention_sweep_job,
    "Daily retention sweep (videos, crops, events, Parquet, partitions).",
)
db_maintenance_nightly = _ops_schedule(
    "db_maintenance_nightly",
    "0 4 * * *",
    ops_jobs.db_maintenance_job,
    "Nightly VACUUM (ANALYZE), partitions ahead, size metadata.",
)
backup_nightly = _ops_schedule(
    "backup_nightly",
    "0 1 * * *",
    ops_jobs.backup_job,
    "Nightly events-database backup to the bucket (keeps ANPR_BACKUPS_KEEP).",
)
archive_weekly = _ops_schedule(
    "archive_weekly",
    "30 3 * * 0",
    ops_jobs.archive_job,
    "Weekly archive of old videos (colder storage) and old event months (Parquet).",
)
restore_test_monthly = _ops_schedule(
    "restore_test_monthly",
    "0 5 1 * *",
    ops_jobs.restore_test_job,
    "Monthly restore of the newest backup into a scratch database.",
)

SCHEDULES = [
    retention_daily,
    archive_weekly,
    db_maintenance_nightly,
    backup_nightly,
    restore_test_monthly,
    camera_daily_stats_schedule,
]
