"""Alert sensors (run failure, backlog of queued runs, worker stall) and the erase-run scrubber.

A failed run that Dagster's run retries will re-launch alerts as a warning; only the final
failure is critical. All three log through the sensor's logger (visible on the sensor's tick in the UI and in the
daemon log) and post to ``ANPR_ALERT_WEBHOOK_URL`` when set, in the background (see
`anpr_pipeline.ops.alerts`). Backlog and stall keep their last state in the cursor and
alert only when it changes, including a "resolved" message.
"""

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunsFilter,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from anpr_pipeline.ops.alerts import Alert, backlog_level, is_stalled, send_alert
from anpr_pipeline.ops.jobs import erase_plate_job
from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline.vision.plates import normalize

VIDEO_JOB = "process_video"
# Dagster's own run tags (dagster._core.storage.tags): on a failed run, when run retries are
# enabled, "dagster/will_retry" = "true"/"false" says whether the daemon re-launches it; each
# re-launched run carries "dagster/retry_number" = 1, 2, …; "dagster/max_retries" overrides
# the instance's max_retries for one run.
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
MAX_RETRIES_TAG = "dagster/max_retries"


def _int_tag(tags: Mapping[str, str], key: str) -> int | None:
    value = tags.get(key, "")
    return int(value) if value.isdigit() else None


def failure_severity(tags: Mapping[str, str], max_retries: int) -> tuple[str, str, int]:
    """(severity, note, attempt) of a failed run from its tags.

    "warning" while Dagster will re-launch the run (an operator need not act yet), else
    "critical". `attempt` counts from 1 (the original run); the note says which attempt of
    how many failed and whether another follows.
    """
    attempt = (_int_tag(tags, RETRY_NUMBER_TAG) or 0) + 1
    if tags.get(WILL_RETRY_TAG, "").lower() == "true":
        allowed = (_int_tag(tags, MAX_RETRIES_TAG) or max_retries) + 1
        return "warning", f"attempt {attempt} of {allowed}; will be retried", attempt
    if attempt > 1:
        return "critical", f"attempt {attempt}; no more retries", attempt
    return "critical", "", attempt


@run_failure_sensor(
    name="run_failure_alert",
    default_status=DefaultSensorStatus.RUNNING,
    description="Logs every failed run and posts it to the alert webhook (if configured): "
    "a warning while run retries will re-launch it, critical on the final failure.",
)
def run_failure_alert(context: RunFailureSensorContext, ops_settings: OpsSettings):
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
    severity, note, attempt = failure_severity(run.tags, context.instance.run_retries_max_retries)
    alert = Alert(
        "run_failure",
        severity,
        f"run {run.run_id[:8]} of {run.job_name} failed{f' ({note})' if note else ''}: {message}",
        {
            "run_id": run.run_id,
            "job": run.job_name,
            "failed_steps": steps,
            "partition": run.tags.get("dagster/partition"),
            "video_key": run.tags.get("anpr/video_key"),
            "will_retry": severity == "warning",
            "attempt": attempt,
        },
    )
    send_alert(alert, ops_settings.alert_webhook_url, context.log)


def _cursor_state(context: SensorEvaluationContext) -> str:
    return json.loads(context.cursor)["state"] if context.cursor else "ok"


def _transition(
    context: SensorEvaluationContext, name: str, state: str, alert: Alert | None, webhook: str, reason: str
) -> SensorResult:
    if state != _cursor_state(context):
        if alert is None:  # back to normal
            alert = Alert(name, "resolved", reason)
        send_alert(alert, webhook, context.log)
    return SensorResult(skip_reason=SkipReason(reason), cursor=json.dumps({"state": state}))


@sensor(
    name="backlog_alert",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Warns when queued runs exceed ANPR_BACKLOG_WARN (100), critical above "
    "ANPR_BACKLOG_CRITICAL (500); a level clears once the queue is down to 80 % of its threshold.",
)
def backlog_alert(context: SensorEvaluationContext, ops_settings: OpsSettings):
    queued = context.instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
    level = backlog_level(
        queued, ops_settings.backlog_warn, ops_settings.backlog_critical, _cursor_state(context)
    )
    reason = (
        f"{queued} queued runs ({level}; warn > {ops_settings.backlog_warn}, "
        f"critical > {ops_settings.backlog_critical})"
    )
    alert = None if level == "ok" else Alert("backlog", level, reason, {"queued": queued})
    return _transition(context, "backlog", level, alert, ops_settings.alert_webhook_url, reason)


def _ts(value: float | datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)


def queued_video_runs(instance: DagsterInstance) -> tuple[int, datetime | None]:
    """How many process_video runs are queued, and when the oldest of them was created.

    Only video runs: a stall means video workers stopped finishing video runs, so a queued
    maintenance run (held by its tag limit behind another) says nothing about them.
    """
    queued_filter = RunsFilter(job_name=VIDEO_JOB, statuses=[DagsterRunStatus.QUEUED])
    queued = instance.get_runs_count(queued_filter)
    oldest = instance.get_run_records(queued_filter, limit=1, order_by="create_timestamp", ascending=True)
    return queued, _ts(oldest[0].create_timestamp) if oldest else None


@sensor(
    name="worker_stall_alert",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Alerts when process_video runs are queued but none finished for 10 minutes.",
)
def worker_stall_alert(context: SensorEvaluationContext, ops_settings: OpsSettings):
    instance = context.instance
    queued, oldest_at = queued_video_runs(instance)
    finished = instance.get_run_records(
        RunsFilter(job_name=VIDEO_JOB, statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]),
        limit=1,
        order_by="update_timestamp",
        ascending=False,
    )
    last_at = _ts(finished[0].end_time or finished[0].update_timestamp) if finished else None
    running = instance.get_run_records(
        RunsFilter(job_name=VIDEO_JOB, statuses=[DagsterRunStatus.STARTED]),
        limit=1,
        order_by="update_timestamp",
        ascending=False,
    )
    started_at = _ts(running[0].start_time or running[0].update_timestamp) if running else None
    window = timedelta(minutes=ops_settings.stall_minutes)
    stalled = is_stalled(queued, oldest_at, last_at, datetime.now(UTC), window, started_at)
    reason = (
        f"{queued} queued {VIDEO_JOB} runs; last one finished "
        f"{last_at.isoformat() if last_at else 'never'}, last started "
        f"{started_at.isoformat() if started_at else 'none running'}; stall window {window}"
    )
    alert = (
        Alert("worker_stall", "critical", "workers stalled: " + reason, {"queued": queued})
        if stalled
        else None
    )
    return _transition(
        context, "worker_stall", "stalled" if stalled else "ok", alert, ops_settings.alert_webhook_url, reason
    )


ALERT_SENSORS = [run_failure_alert, backlog_alert, worker_stall_alert]


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    name="erase_run_scrubber",
    monitored_jobs=[erase_plate_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Deletes each successful erase_plate run, and the finished erase_plate (dry runs, "
    "failures) and export_plate runs of the same plate: their run config holds the plate in clear. "
    "The salted audit record under audit/gdpr/ is the trace that remains.",
)
def erase_run_scrubber(context: RunStatusSensorContext):
    run = context.dagster_run
    config = _plate_config(run, "erase_plate_op")
    if config.get("dry_run"):
        return  # a dry run erased nothing; keep it as the operator's preview
    plate = normalize(str(config.get("plate", "")))
    naming = [
        other.run_id
        for job_name, op_name in (("erase_plate", "erase_plate_op"), ("export_plate", "export_plate_op"))
        for other in context.instance.get_runs(
            filters=RunsFilter(job_name=job_name, statuses=list(_FINISHED))
        )
        if plate
        and other.run_id != run.run_id
        and normalize(str(_plate_config(other, op_name).get("plate", ""))) == plate
    ]
    for run_id in [run.run_id, *naming]:
        context.instance.delete_run(run_id)
    context.log.info(
        f"deleted erase_plate run {run.run_id} and {len(naming)} earlier erase/export run(s) of the "
        "same plate (their config named the erased plate)"
    )


_FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def _plate_config(run: DagsterRun, op_name: str) -> Mapping:
    return run.run_config.get("ops", {}).get(op_name, {}).get("config", {})


OPS_SENSORS = [*ALERT_SENSORS, erase_run_scrubber]
