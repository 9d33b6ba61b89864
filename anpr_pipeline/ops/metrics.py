"""Prometheus exporter: ``anpr metrics serve [--port 9108] [--addr 0.0.0.0]``.

A custom collector reads the Dagster instance (run storage + event log) and the events
database at scrape time, so the numbers are right however many run workers or pods did
the work (nothing is counted in-process).

| metric | type | meaning |
|---|---|---|
| ``anpr_jobs_processed_total{job}`` | counter | runs of the job that succeeded |
| ``anpr_jobs_failed_total{job}`` | counter | runs of the job that failed |
| ``anpr_queue_size`` | gauge | runs queued, not yet started (all jobs) |
| ``anpr_runs_in_progress`` | gauge | runs starting or started |
| ``anpr_events_processed_total`` | counter | plate events emitted by ``plate_events`` materializations since the exporter started (sum of their ``events`` metadata; a re-run counts again) |
| ``anpr_events_failed_total`` | counter | failed ``process_video`` runs that Dagster does not retry (videos whose events were not produced by that run) |
| ``anpr_events_stored`` | gauge | rows now in the events table (drops with retention, hence a gauge) |
| ``anpr_stage_duration_seconds{stage}`` | histogram | per-step wall time of ``process_video`` runs finished since the exporter started (Dagster step stats) |
| ``anpr_metrics_source_up{source}`` | gauge | 1 when the instance / events DB could be read this scrape |

Counters never go down: the job counters start from the run storage's counts when the
exporter first reads it and then add the runs that finish, so runs deleted later (the
erase scrubber deletes runs naming an erased plate, an operator in the UI) do not lower
them; events and stage durations are counted from the exporter's start (Prometheus reads
a restart as a counter reset), not replayed from history. Finished runs and
materializations are read incrementally (cursors kept in the exporter), so a scrape costs
only what is new. Each source is read in a worker thread for at most ``SOURCE_TIMEOUT_S``:
a database that does not answer gives ``anpr_metrics_source_up{source} 0`` within the
Prometheus scrape timeout instead of a scrape that hangs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)

DEFAULT_JOBS = (
    "process_video",
    "retention_sweep",
    "archive",
    "db_maintenance",
    "backup",
    "restore_test",
    "export_plate",
    "erase_plate",
)
STAGE_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
VIDEO_JOB = "process_video"
EVENTS_ASSET = "plate_events"
# Under Prometheus' default 10 s scrape timeout, with both sources waited for.
SOURCE_TIMEOUT_S = 3.0
FINISHED = ("SUCCESS", "FAILURE")
WILL_RETRY_TAG = "dagster/will_retry"


class SourceBusy(RuntimeError):
    """The source's previous read has not finished (it did not answer within the deadline)."""


class _Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # last = +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        for i, le in enumerate(self.buckets):
            if value <= le:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for le, n in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            running += n
            out.append((le, running))
        return out


class AnprCollector(Collector):
    def __init__(
        self,
        instance: Any,
        events_store: Any | None = None,
        jobs: Sequence[str] = DEFAULT_JOBS,
        buckets: Sequence[float] = STAGE_BUCKETS,
        timeout_s: float = SOURCE_TIMEOUT_S,
    ):
        self.instance = instance
        self.events_store = events_store
        self.jobs = tuple(jobs)
        self.buckets = tuple(buckets)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # scrapes may overlap
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="anpr-metrics")
        self._pending: dict[str, Future] = {}
        self._baselined = False
        self._job_counts: dict[tuple[str, str], int] = {}
        self._video_failures = 0
        self._events_total = 0
        self._mat_cursor: str | None = None
        self._stages: dict[str, _Histogram] = {}
        self._runs_after: datetime | None = None
        self._runs_seen: set[str] = set()

    def _bounded(self, source: str, read: Any) -> Any:
        """``read()`` in a worker, waited for at most ``timeout_s``. A read that overruns goes
        on in the background (its state updates land for a later scrape); until it ends, the
        source is reported down rather than read twice at once."""
        pending = self._pending.get(source)
        if pending is not None and not pending.done():
            raise SourceBusy(f"{source}: the previous read has not finished")
        future = self._pool.submit(read)
        self._pending[source] = future
        return future.result(timeout=self.timeout_s)

    # -- incremental readers (run in the worker) --------------------------------------------

    def _baseline(self) -> None:
        """Counts so far and cursors at their newest entry: later reads add only what is new."""
        from dagster import AssetKey, DagsterRunStatus, RunsFilter

        count = self.instance.get_runs_count
        for job in self.jobs:
            for status in FINISHED:
                runs = RunsFilter(job_name=job, statuses=[DagsterRunStatus(status)])
                self._job_counts[(job, status)] = count(runs)
        retried = count(
            RunsFilter(job_name=VIDEO_JOB, statuses=[DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "true"})
        )
        self._video_failures = self._job_counts.get((VIDEO_JOB, "FAILURE"), 0) - retried
        newest = self.instance.get_run_records(
            RunsFilter(statuses=[DagsterRunStatus(s) for s in FINISHED]),
            order_by="update_timestamp",
            ascending=False,
            limit=1,
        )
        if newest:
            self._runs_after = newest[0].update_timestamp.astimezone(UTC)
        latest = self.instance.fetch_materializations(AssetKey(EVENTS_ASSET), limit=1, ascending=False)
        if latest.records:
            self._mat_cursor = latest.cursor
        self._baselined = True

    def _read_materializations(self) -> None:
        from dagster import AssetKey

        result = self.instance.fetch_materializations(
            AssetKey(EVENTS_ASSET), limit=1000, cursor=self._mat_cursor, ascending=True
        )
        for record in result.records:
            value = (
                record.asset_materialization.metadata.get("events") if record.asset_materialization else None
            )
            self._events_total += int(getattr(value, "value", 0) or 0)
        if result.records:
            self._mat_cursor = result.cursor  # more than 1000: the rest next scrape

    def _read_finished_runs(self) -> None:
        from dagster import DagsterRunStatus, RunsFilter

        records = self.instance.get_run_records(
            RunsFilter(statuses=[DagsterRunStatus(s) for s in FINISHED], updated_after=self._runs_after),
            order_by="update_timestamp",
            ascending=True,
            limit=1000,
        )
        for record in records:
            run = record.dagster_run
            # updated_after is a strict bound; runs updated at the same instant are kept in _runs_seen.
            self._runs_after = record.update_timestamp.astimezone(UTC)
            if run.run_id in self._runs_seen:
                continue
            self._runs_seen.add(run.run_id)
            if run.job_name not in self.jobs:
                continue
            key = (run.job_name, run.status.value)
            self._job_counts[key] = self._job_counts.get(key, 0) + 1
            if run.job_name != VIDEO_JOB:
                continue
            if run.status == DagsterRunStatus.FAILURE and run.tags.get(WILL_RETRY_TAG) != "true":
                self._video_failures += 1
            for step in self.instance.get_run_step_stats(run.run_id):
                if step.start_time is not None and step.end_time is not None:
                    hist = self._stages.setdefault(step.step_key, _Histogram(self.buckets))
                    hist.observe(max(0.0, step.end_time - step.start_time))
        if len(self._runs_seen) > 100_000:
            self._runs_seen.clear()  # bounded memory; the time cursor protects from recounting

    def _read_instance(self) -> tuple[int, int]:
        from dagster import DagsterRunStatus, RunsFilter

        if not self._baselined:
            self._baseline()
        self._read_materializations()
        self._read_finished_runs()
        count = self.instance.get_runs_count
        queued = count(RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
        running = count(RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]))
        return queued, running

    # -- collect ------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "anpr_metrics_source_up", "1 when the source could be read this scrape", labels=["source"]
        )
        try:
            queued, running = self._bounded("dagster", self._read_instance)
        except Exception as exc:  # down, slow or still busy: a scrape must still answer
            log.warning("metrics: cannot read the Dagster instance: %s", exc or type(exc).__name__)
            up.add_metric(["dagster"], 0)
        else:
            up.add_metric(["dagster"], 1)
            processed = CounterMetricFamily(
                "anpr_jobs_processed", "Runs that succeeded, per job", labels=["job"]
            )
            failed = CounterMetricFamily("anpr_jobs_failed", "Runs that failed, per job", labels=["job"])
            for job in self.jobs:
                processed.add_metric([job], self._job_counts.get((job, "SUCCESS"), 0))
                failed.add_metric([job], self._job_counts.get((job, "FAILURE"), 0))
            yield processed
            yield failed
            yield GaugeMetricFamily("anpr_queue_size", "Runs queued, not yet started", value=queued)
            yield GaugeMetricFamily("anpr_runs_in_progress", "Runs starting or started", value=running)
            yield CounterMetricFamily(
                "anpr_events_failed",
                "Failed process_video runs Dagster does not retry (videos without events from them)",
                value=self._video_failures,
            )
            yield CounterMetricFamily(
                "anpr_events_processed", "Plate events emitted by plate_events runs", value=self._events_total
            )
            hist = HistogramMetricFamily(
                "anpr_stage_duration_seconds", "Step wall time of process_video runs", labels=["stage"]
            )
            for stage, h in sorted(self._stages.items()):
                hist.add_metric([stage], h.cumulative(), sum_value=h.total)
            yield hist
        if self.events_store is not None:
            try:
                stored = self._bounded("events_db", self.events_store.count)
            except Exception as exc:
                log.warning("metrics: cannot read the events database: %s", exc or type(exc).__name__)
                up.add_metric(["events_db"], 0)
            else:
                up.add_metric(["events_db"], 1)
                yield GaugeMetricFamily("anpr_events_stored", "Rows in the events table", value=stored)
        yield up


def build_registry(
    instance: Any,
    events_store: Any | None = None,
    jobs: Sequence[str] = DEFAULT_JOBS,
    bucket_store: Any | None = None,
) -> CollectorRegistry:
    from anpr_pipeline.ops.capacity_metrics import CapacityCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(AnprCollector(instance, events_store, jobs))
    # Dashboard capacity gauges: active cameras, DB sizes, bucket bytes by class.
    registry.register(CapacityCollector(events_store, bucket_store))
    return registry


def serve(
    instance: Any, events_store: Any | None, port: int, addr: str = "0.0.0.0", bucket_store: Any | None = None
):
    """Start the HTTP exporter in a background thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(
        port, addr=addr, registry=build_registry(instance, events_store, bucket_store=bucket_store)
    )


def main(argv: list[str]) -> int:
    import argparse
    import errno
    import time

    parser = argparse.ArgumentParser(
        prog="anpr metrics", description="Prometheus metrics for the ANPR pipeline."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    srv = sub.add_parser(
        "serve", help="serve /metrics over HTTP (reads $DAGSTER_HOME's instance + events DB)"
    )
    srv.add_argument("--port", type=int, default=9108)
    srv.add_argument("--addr", default="0.0.0.0")
    args = parser.parse_args(argv)

    import sys

    from dagster import DagsterInstance
    from dagster._core.errors import DagsterHomeNotSetError, DagsterInvariantViolationError

    from anpr_pipeline.resources.event_store import EventStore, EventStoreError
    from anpr_pipeline.settings import load_settings

    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: expected 0..65535")
    try:
        instance = DagsterInstance.get()
    except DagsterHomeNotSetError:
        print(
            "anpr metrics: DAGSTER_HOME is not set: set it to the Dagster instance folder "
            "(the one holding dagster.yaml) whose runs to export",
            file=sys.stderr,
        )
        return 2
    except DagsterInvariantViolationError as exc:  # DAGSTER_HOME missing, not a folder, relative
        print(f"anpr metrics: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except Exception as exc:  # its storage unreachable (dagster-postgres retries, then gives up)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"anpr metrics: cannot open the Dagster instance of $DAGSTER_HOME: {first}", file=sys.stderr)
        return 2
    try:
        # One quick attempt per scrape: a scrape must answer within Prometheus' timeout.
        events_store = EventStore(load_settings().database_url, retries=0, connect_timeout_s=2)
    except EventStoreError as exc:  # a malformed ANPR_DATABASE_URL
        print(f"anpr metrics: {exc}", file=sys.stderr)
        return 2
    from anpr_pipeline.ops.capacity_metrics import bucket_from_settings

    try:
        server, _thread = serve(
            instance, events_store, args.port, args.addr, bucket_store=bucket_from_settings()
        )
    except OSError as exc:  # port in use, address not on this host, port < 1024 without rights
        reason = "port in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        print(f"anpr metrics: cannot listen on {args.addr}:{args.port}: {reason}", file=sys.stderr)
        return 2
    print(f"anpr metrics: serving http://{args.addr}:{args.port}/metrics", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0
