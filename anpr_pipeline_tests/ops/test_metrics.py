"""The exporter serves real numbers read from a Dagster instance and the events DB: runs
executed through Dagster (a small stand-in for process_video with the real asset key and
metadata contract), queued runs, and rows in the events table — scraped over HTTP."""

from __future__ import annotations

import socket
import time
import urllib.request
from datetime import UTC, datetime

from dagster import (
    MaterializeResult,
    asset,
    define_asset_job,
    job,
    op,
)
from prometheus_client.parser import text_string_to_metric_families

from anpr_pipeline import cli
from anpr_pipeline.ops.metrics import serve
from anpr_pipeline_tests.ops.conftest import enqueue_run, event_row
from anpr_pipeline_tests.servers import free_port


@asset(name="plate_events")
def _plate_events() -> MaterializeResult:
    return MaterializeResult(metadata={"events": 3})


@op
def _video():
    raise RuntimeError("corrupt video")


@job(name="process_video")
def _failing_video_job():
    _video()


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_exporter_scrape_reports_runs_events_queue_and_stage_durations(local_backend, dagster_instance):
    from dagster import Definitions

    video_job = define_asset_job("process_video", selection=["plate_events"])
    defs = Definitions(assets=[_plate_events], jobs=[video_job])
    rows = [
        event_row(datetime.now(UTC), n=i, video_key="uploads/cam1/20250101T000000Z.mp4") for i in range(4)
    ]
    local_backend.events.replace_video_events(rows[0]["video_key"], rows)
    instance = dagster_instance
    job_def = defs.resolve_job_def("process_video")
    assert job_def.execute_in_process(instance=instance).success  # before the exporter started
    for _ in range(3):
        enqueue_run(instance)
    port = free_port()
    server, thread = serve(instance, local_backend.events, port, addr="127.0.0.1")
    try:
        m = _scrape(port)  # the first read: job counters start from the run storage's counts
        assert m[("anpr_jobs_processed_total", (("job", "process_video"),))] == 1
        assert m[("anpr_events_processed_total", ())] == 0  # counted from the exporter's start
        assert m[("anpr_queue_size", ())] == 3
        assert m[("anpr_events_stored", ())] == 4
        assert m[("anpr_metrics_source_up", (("source", "dagster"),))] == 1
        assert m[("anpr_metrics_source_up", (("source", "events_db"),))] == 1

        for _ in range(2):
            assert job_def.execute_in_process(instance=instance).success
        failed = _failing_video_job.execute_in_process(instance=instance, raise_on_error=False)
        retried = _failing_video_job.execute_in_process(instance=instance, raise_on_error=False)
        instance.add_run_tags(retried.run_id, {"dagster/will_retry": "true"})  # as the retry daemon marks it
        m = _scrape(port)
        assert m[("anpr_jobs_processed_total", (("job", "process_video"),))] == 3
        assert m[("anpr_jobs_failed_total", (("job", "process_video"),))] == 2
        assert m[("anpr_jobs_failed_total", (("job", "retention_sweep"),))] == 0
        assert m[("anpr_events_processed_total", ())] == 6  # 2 materializations x 3 events
        assert m[("anpr_events_failed_total", ())] == 1  # the run Dagster retries is not a lost video
        assert m[("anpr_stage_duration_seconds_count", (("stage", "plate_events"),))] == 2
        assert m[("anpr_stage_duration_seconds_count", (("stage", "_video"),))] == 2

        # Counters never go down: runs deleted later (the erase scrubber, an operator) stay counted.
        instance.delete_run(failed.run_id)
        assert job_def.execute_in_process(instance=instance).success
        m = _scrape(port)
        assert m[("anpr_jobs_processed_total", (("job", "process_video"),))] == 4
        assert m[("anpr_jobs_failed_total", (("job", "process_video"),))] == 2
        assert m[("anpr_events_processed_total", ())] == 9
        assert m[("anpr_stage_duration_seconds_count", (("stage", "plate_events"),))] == 3
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_a_database_that_does_not_answer_is_reported_down_within_the_deadline(dagster_instance):
    """A server that accepts connections and never answers (a hung host, a dead proxy): the
    scrape still answers, quickly, with the events DB reported down."""
    from anpr_pipeline.ops.metrics import AnprCollector
    from anpr_pipeline.resources.event_store import EventStore

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = f"postgresql+psycopg://anpr@127.0.0.1:{silent.getsockname()[1]}/events"
        # Without the deadline a scrape would wait for the 10 s connect timeout.
        collector = AnprCollector(
            dagster_instance, EventStore(url, retries=0, connect_timeout_s=10), timeout_s=2
        )
        for _ in range(2):  # the second scrape finds the first read still waiting: down at once
            started = time.monotonic()
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in collector.collect()
                for s in family.samples
            }
            assert time.monotonic() - started < 7  # each source waited for 2 s at most
            assert samples[("anpr_metrics_source_up", (("source", "events_db"),))] == 0
    finally:
        silent.close()


def test_metrics_cli_has_serve_subcommand(capsys):
    try:
        cli.main(["metrics", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "serve" in capsys.readouterr().out


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("anpr metrics: ") and "Traceback" not in err, err
    assert len([line for line in lines if line.startswith("anpr metrics: ")]) == 1, err
    return lines[-1]


def test_metrics_serve_without_dagster_home_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    assert cli.main(["metrics", "serve", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "DAGSTER_HOME is not set" in _one_error_line(err) and err.count("\n") == 1
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "missing"))
    assert cli.main(["metrics", "serve", "--port", str(free_port())]) == 2
    assert "is not a directory or does not exist" in _one_error_line(capsys.readouterr().err)


def test_metrics_serve_on_a_busy_port_is_one_line(monkeypatch, tmp_path, capsys):
    import socket

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path / "data"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["metrics", "serve", "--port", str(port), "--addr", "127.0.0.1"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: port in use" in _one_error_line(capsys.readouterr().err)
