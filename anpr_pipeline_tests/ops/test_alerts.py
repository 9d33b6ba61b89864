"""Alert sensors evaluated with Dagster's real contexts against a real instance, posting to a
real local HTTP webhook (which fails at first, to show the retries)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    DagsterEventType,
    DagsterRun,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    job,
    op,
)

from anpr_pipeline.ops.alert_sensors import (
    backlog_alert,
    queued_video_runs,
    run_failure_alert,
    worker_stall_alert,
)
from anpr_pipeline.ops.alerts import RETRY_AFTER_CAP_S, backlog_level, is_stalled, post_webhook, retry_after_s
from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline_tests.ops.conftest import enqueue_run
from anpr_pipeline_tests.servers import free_port


class Webhook:
    """A local HTTP endpoint that records JSON posts; the first `fail_first` get HTTP `status`
    (503 unless told) with `headers`."""

    def __init__(self, fail_first: int = 0, status: int = 503, headers: dict[str, str] | None = None):
        self.received: list[dict] = []
        self.attempts = 0
        self.arrived = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                if hook.attempts <= fail_first:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    return
                hook.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                hook.arrived.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int = 1) -> list[dict]:
        for _ in range(100):  # bounded: the sender retries with sub-second backoff
            if len(self.received) >= count:
                break
            self.arrived.wait(0.2)
            self.arrived.clear()
        return self.received

    def close(self):
        self.server.shutdown()


@pytest.fixture
def webhook():
    hook = Webhook(fail_first=2)
    yield hook
    hook.close()


@op
def decode_step():
    raise RuntimeError("no video stream")


@job(name="process_video")
def broken_video_job():
    decode_step()


def fail_and_alert(instance, webhook, tags: dict[str, str]) -> tuple[DagsterRun, list[dict]]:
    """Fail a run on `instance`, evaluate run_failure_alert on it; (the run, posted payloads)."""
    result = broken_video_job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)
    run = instance.get_run_by_id(result.run_id)  # as the sensor daemon reads it, after the failure
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    run_failure_alert(
        build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"ops_settings": OpsSettings(alert_webhook_url=webhook.url)},
        ).for_run_failure()
    )
    return run, webhook.wait()


def test_run_failure_alert_logs_and_posts_with_retries(webhook):
    with instance_for_test() as instance:
        run, payloads = fail_and_alert(
            instance, webhook, {"anpr/video_key": "uploads/cam1/20250101T000000Z.mp4"}
        )
    [payload] = payloads
    assert webhook.attempts == 3  # two 503s, then delivered
    assert payload["name"] == "run_failure" and payload["severity"] == "critical"
    assert payload["details"]["run_id"] == run.run_id and payload["details"]["failed_steps"] == [
        "decode_step"
    ]
    assert payload["details"]["video_key"] == "uploads/cam1/20250101T000000Z.mp4"


def test_backlog_alert_transitions_warn_critical_resolved(webhook, dagster_instance):
    webhook.attempts = 2  # deliver at once
    settings = OpsSettings(alert_webhook_url=webhook.url, backlog_warn=2, backlog_critical=4)
    instance = dagster_instance

    def tick(cursor):
        return backlog_alert(
            build_sensor_context(instance=instance, cursor=cursor, resources={"ops_settings": settings})
        )

    result = tick(None)
    assert "0 queued runs (ok" in result.skip_reason.skip_message and not webhook.received
    runs = [enqueue_run(instance) for _ in range(3)]
    result = tick(result.cursor)
    assert webhook.wait(1)[-1]["severity"] == "warning"
    result = tick(result.cursor)  # same state: no repeat
    runs += [enqueue_run(instance) for _ in range(2)]
    result = tick(result.cursor)
    assert webhook.wait(2)[-1]["severity"] == "critical" and webhook.received[-1]["details"]["queued"] == 5
    for run_id in runs:
        instance.delete_run(run_id)
    result = tick(result.cursor)
    assert [p["severity"] for p in webhook.wait(3)] == ["warning", "critical", "resolved"]
    assert json.loads(result.cursor) == {"state": "ok"}


def test_backlog_thresholds_are_100_and_500_by_default():
    settings = OpsSettings()
    levels = [
        backlog_level(n, settings.backlog_warn, settings.backlog_critical) for n in (100, 101, 500, 501)
    ]
    assert levels == ["ok", "warning", "warning", "critical"]


def test_worker_stall_alert_fires_when_queue_waits_and_nothing_finishes(webhook, dagster_instance):
    webhook.attempts = 2
    instance = dagster_instance
    enqueue_run(instance)
    ctx = build_sensor_context(
        instance=instance,
        resources={"ops_settings": OpsSettings(alert_webhook_url=webhook.url, stall_minutes=0)},
    )
    result = worker_stall_alert(ctx)
    assert json.loads(result.cursor) == {"state": "stalled"}
    assert webhook.wait()[0]["name"] == "worker_stall"
    # Default 10-minute window: a queue that just formed is not a stall.
    ctx = build_sensor_context(
        instance=instance,
        cursor=result.cursor,
        resources={"ops_settings": OpsSettings(alert_webhook_url=webhook.url)},
    )
    assert json.loads(worker_stall_alert(ctx).cursor) == {"state": "ok"}
    assert webhook.wait(2)[-1]["severity"] == "resolved"


def test_is_stalled_over_clocks():
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    ten = timedelta(minutes=10)
    assert is_stalled(5, now - timedelta(minutes=11), now - timedelta(minutes=30), now, ten)
    assert is_stalled(5, now - timedelta(minutes=11), None, now, ten)
    assert not is_stalled(5, now - timedelta(minutes=11), now - timedelta(minutes=2), now, ten)
    assert not is_stalled(
        5, now - timedelta(minutes=3), now - timedelta(hours=8), now, ten
    )  # queue just formed
    assert not is_stalled(0, None, None, now, ten)
    # A video run that started within the window is progress (a camera's backlog runs one
    # long video at a time); one started long ago and still going is not.
    hour_ago = now - timedelta(hours=1)
    assert not is_stalled(5, hour_ago, hour_ago, now, ten, last_started_at=now - timedelta(minutes=4))
    assert is_stalled(5, hour_ago, hour_ago, now, ten, last_started_at=now - timedelta(minutes=40))


def test_webhook_unreachable_never_raises():
    assert (
        post_webhook(
            f"http://127.0.0.1:{free_port()}/hook", {"x": 1}, retries=2, timeout_s=0.5, backoff_s=0.01
        )
        is False
    )


def test_erase_run_scrubber_deletes_the_runs_that_named_the_plate(local_backend):
    from anpr_pipeline.ops.alert_sensors import erase_run_scrubber
    from anpr_pipeline.ops.jobs import erase_plate_job, export_plate_job
    from anpr_pipeline_tests.ops.test_jobs import resources_for

    resources = resources_for(local_backend, gdpr_salt="s")

    def run(job, op_name: str, config: dict) -> str:
        result = job.execute_in_process(
            run_config={"ops": {op_name: {"config": config}}}, instance=instance, resources=resources
        )
        if job is erase_plate_job:
            success = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_SUCCESS)
            erase_run_scrubber(
                build_run_status_sensor_context(
                    sensor_name="erase_run_scrubber",
                    dagster_event=success,
                    dagster_instance=instance,
                    dagster_run=instance.get_run_by_id(result.run_id),
                )
            )
        return result.run_id

    with instance_for_test() as instance:
        export = run(export_plate_job, "export_plate_op", {"plate": "ab 123 cd"})
        other_export = run(export_plate_job, "export_plate_op", {"plate": "ZZ999ZZ"})
        dry = run(erase_plate_job, "erase_plate_op", {"plate": "AB123CD", "dry_run": True})
        assert instance.get_run_by_id(dry) is not None  # the dry run is kept as a preview ...
        erased = run(erase_plate_job, "erase_plate_op", {"plate": "AB123CD", "dry_run": False})
        # ... until the real erasure: then no run naming the plate stays in run storage.
        assert [instance.get_run_by_id(r) for r in (erased, dry, export)] == [None, None, None]
        assert instance.get_run_by_id(other_export) is not None  # another plate's request stays


# -- webhook: 408/429 are "later", not "never" -------------------------------------------


def test_webhook_retries_429_after_its_retry_after():
    hook = Webhook(fail_first=1, status=429, headers={"Retry-After": "1"})
    try:
        started = time.monotonic()
        assert post_webhook(hook.url, {"x": 1}, backoff_s=0.01) is True
        waited = time.monotonic() - started
    finally:
        hook.close()
    assert hook.attempts == 2 and hook.received == [{"x": 1}]
    assert waited >= 0.9  # the server's Retry-After, not the 10 ms backoff


def test_webhook_retry_after_is_capped_so_delivery_stays_bounded():
    hook = Webhook(fail_first=2, status=429, headers={"Retry-After": "3600"})
    try:
        started = time.monotonic()
        assert post_webhook(hook.url, {"x": 1}, backoff_s=0.01, max_wait_s=0.2) is True
        waited = time.monotonic() - started
    finally:
        hook.close()
    assert hook.attempts == 3 and waited < 3


def test_webhook_retries_408_request_timeout():
    hook = Webhook(fail_first=1, status=408)
    try:
        assert post_webhook(hook.url, {"x": 1}, backoff_s=0.01) is True
    finally:
        hook.close()
    assert hook.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_webhook_other_4xx_are_not_retried(status):
    hook = Webhook(fail_first=5, status=status)
    try:
        assert post_webhook(hook.url, {"x": 1}, backoff_s=0.01) is False
    finally:
        hook.close()
    assert hook.attempts == 1


def test_retry_after_takes_seconds_only_and_caps_them():
    assert retry_after_s("2") == 2.0 and retry_after_s(" 0.5 ") == 0.5
    assert retry_after_s("3600") == RETRY_AFTER_CAP_S and retry_after_s("3600", cap=1) == 1
    # HTTP-date form, garbage, negatives, absent: the sender's own backoff applies.
    for value in ("Wed, 21 Oct 2015 07:28:00 GMT", "soon", "-1", "nan", "", None):
        assert retry_after_s(value) is None


# -- run failures that Dagster's run retries will re-launch ------------------------------


def test_run_failure_alert_warns_when_the_run_will_be_retried(webhook):
    webhook.attempts = 2
    retries = {"run_retries": {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": True}}
    with instance_for_test(overrides=retries) as instance:
        run, payloads = fail_and_alert(
            instance, webhook, {"dagster/retry_number": "1", "anpr/video_key": "uploads/cam1/x.mp4"}
        )
    payload = payloads[-1]
    assert run.tags["dagster/will_retry"] == "true"  # set by Dagster itself when it stored the failure
    assert payload["severity"] == "warning"
    assert "(attempt 2 of 3; will be retried)" in payload["summary"]
    assert payload["details"]["will_retry"] is True and payload["details"]["attempt"] == 2
    # The fields alert receivers already use are all still there.
    assert {"run_id", "job", "failed_steps", "partition", "video_key"} <= set(payload["details"])
    assert payload["details"]["failed_steps"] == ["decode_step"]


def test_run_failure_alert_is_critical_when_no_retry_follows(webhook):
    webhook.attempts = 2
    # deploy/dagster.yaml: a step failure (bad data) is not retried, only crashed workers are.
    retries = {"run_retries": {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}}
    with instance_for_test(overrides=retries) as instance:
        run, payloads = fail_and_alert(instance, webhook, {"dagster/retry_number": "2"})
    payload = payloads[-1]
    assert run.tags["dagster/will_retry"] == "false"
    assert payload["severity"] == "critical" and "(attempt 3; no more retries)" in payload["summary"]
    assert payload["details"]["will_retry"] is False


def test_retry_tag_names_are_dagsters():
    from dagster._core.storage.tags import MAX_RETRIES_TAG, RETRY_NUMBER_TAG, WILL_RETRY_TAG

    from anpr_pipeline.ops import alert_sensors

    assert alert_sensors.WILL_RETRY_TAG == WILL_RETRY_TAG
    assert alert_sensors.RETRY_NUMBER_TAG == RETRY_NUMBER_TAG
    assert alert_sensors.MAX_RETRIES_TAG == MAX_RETRIES_TAG


# -- backlog hysteresis -----------------------------------------------------------------


def _levels(queue_sizes: list[int], warn: int, critical: int) -> list[str]:
    level, levels = "ok", []
    for queued in queue_sizes:
        level = backlog_level(queued, warn, critical, level)
        levels.append(level)
    return levels


def test_backlog_level_holds_until_the_queue_is_down_to_80_percent():
    sizes = [100, 101, 99, 101, 81, 80, 101, 501, 450, 401, 400, 81, 80]
    assert _levels(sizes, 100, 500) == [
        "ok",
        "warning",
        "warning",  # 99: still above 80 % of 100
        "warning",
        "warning",
        "ok",  # 80: down to 80 %
        "warning",
        "critical",
        "critical",  # 450: still above 80 % of 500
        "critical",
        "warning",  # 400: critical clears, warning still holds
        "warning",
        "ok",
    ]
    assert _levels([501, 10], 100, 500) == ["critical", "ok"]  # a drained queue clears both at once
    assert _levels([1, 0], 0, 10) == ["warning", "ok"]  # a zero threshold can still clear


def test_backlog_alert_does_not_flap_around_the_threshold(webhook):
    webhook.attempts = 2
    settings = OpsSettings(alert_webhook_url=webhook.url, backlog_warn=10, backlog_critical=50)
    with instance_for_test() as instance:
        runs: list[str] = []

        def tick(cursor: str | None, queued: int):
            while len(runs) < queued:
                runs.append(enqueue_run(instance))
            while len(runs) > queued:
                instance.delete_run(runs.pop())
            result = backlog_alert(
                build_sensor_context(instance=instance, cursor=cursor, resources={"ops_settings": settings})
            )
            return result.cursor, json.loads(result.cursor)["state"]

        cursor, states = None, []
        for queued in (10, 11, 9, 11, 9, 8):
            cursor, state = tick(cursor, queued)
            states.append(state)
    assert states == ["ok", "warning", "warning", "warning", "warning", "ok"]
    assert [p["severity"] for p in webhook.wait(2)] == ["warning", "resolved"]
    time.sleep(0.3)  # nothing else is on its way
    assert len(webhook.received) == 2


# -- worker stall: video runs only -------------------------------------------------------


def test_worker_stall_ignores_queued_runs_of_other_jobs(dagster_instance):
    instance = dagster_instance
    enqueue_run(instance, job_name="db_maintenance")  # held behind another maintenance run, say
    ctx = build_sensor_context(instance=instance, resources={"ops_settings": OpsSettings(stall_minutes=0)})
    result = worker_stall_alert(ctx)
    assert json.loads(result.cursor) == {"state": "ok"}
    assert "0 queued process_video runs" in result.skip_reason.skip_message
    # The oldest queued run is the oldest *video* run, not the maintenance run queued before it.
    video_run = enqueue_run(instance)
    count, oldest = queued_video_runs(instance)
    created = instance.get_run_record_by_id(video_run).create_timestamp
    assert count == 1 and oldest == created.astimezone(UTC)
