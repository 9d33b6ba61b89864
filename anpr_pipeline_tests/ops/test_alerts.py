"""Alert sensors evaluated with Dagster's real contexts against a real instance, posting to a
real local HTTP webhook (which fails at first, to show the retries)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    DagsterEventType,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    job,
    op,
)

from anpr_pipeline.ops.alert_sensors import backlog_alert, run_failure_alert, worker_stall_alert
from anpr_pipeline.ops.alerts import backlog_level, is_stalled, post_webhook
from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline_tests.ops.conftest import enqueue_run
from anpr_pipeline_tests.servers import free_port


class Webhook:
    """A local HTTP endpoint that records JSON posts; the first `fail_first` get HTTP 503."""

    def __init__(self, fail_first: int = 0):
        self.received: list[dict] = []
        self.attempts = 0
        self.arrived = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                if hook.attempts <= fail_first:
                    self.send_response(503)
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


def test_run_failure_alert_logs_and_posts_with_retries(webhook):
    with instance_for_test() as instance:
        result = broken_video_job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={"anpr/video_key": "uploads/cam1/20250101T000000Z.mp4"},
        )
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"ops_settings": OpsSettings(alert_webhook_url=webhook.url)},
        ).for_run_failure()
        run_failure_alert(context)
    [payload] = webhook.wait()
    assert webhook.attempts == 3  # two 503s, then delivered
    assert payload["name"] == "run_failure" and payload["severity"] == "critical"
    assert payload["details"]["run_id"] == result.run_id and payload["details"]["failed_steps"] == [
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


def test_webhook_unreachable_never_raises():
    assert (
        post_webhook(
            f"http://127.0.0.1:{free_port()}/hook", {"x": 1}, retries=2, timeout_s=0.5, backoff_s=0.01
        )
        is False
    )


def test_erase_run_scrubber_deletes_the_run_that_named_the_plate(local_backend):
    from anpr_pipeline.ops.alert_sensors import erase_run_scrubber
    from anpr_pipeline.ops.jobs import erase_plate_job
    from anpr_pipeline_tests.ops.test_jobs import resources_for

    with instance_for_test() as instance:
        runs = {}
        for dry in (True, False):
            result = erase_plate_job.execute_in_process(
                run_config={"ops": {"erase_plate_op": {"config": {"plate": "AB123CD", "dry_run": dry}}}},
                instance=instance,
                resources=resources_for(local_backend, gdpr_salt="s"),
            )
            runs[dry] = result.run_id
            success = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_SUCCESS)
            erase_run_scrubber(
                build_run_status_sensor_context(
                    sensor_name="erase_run_scrubber",
                    dagster_event=success,
                    dagster_instance=instance,
                    dagster_run=instance.get_run_by_id(result.run_id),
                )
            )
        assert instance.get_run_by_id(runs[False]) is None  # the real erasure left no plate in run storage
        assert instance.get_run_by_id(runs[True]) is not None  # the dry run is kept as a preview
