"""Fixtures for the operations tests: both backends (local + SQLite, S3 + Postgres) and a
small factory for event rows, crops and Parquet files that follow the name contract."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from anpr_pipeline.resources.event_store import EventStore
from anpr_pipeline.resources.object_store import ObjectStore
from anpr_pipeline.resources.parquet_dataset import write_video_events
from anpr_pipeline.uploads import TIMESTAMP_FORMAT
from anpr_pipeline_tests.factories import event_row  # noqa: F401  (re-exported for the ops tests)


@dataclass
class Backend:
    name: str
    store: ObjectStore
    events: EventStore
    database_url: str
    bucket_kwargs: dict  # ObjectStoreResource fields for this bucket


@pytest.fixture
def local_backend(tmp_path) -> Iterator[Backend]:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    events = EventStore(url)
    events.init_schema()
    from anpr_pipeline.resources.object_store import LocalObjectStore

    yield Backend(
        "local+sqlite",
        LocalObjectStore(tmp_path / "bucket"),
        events,
        url,
        {"kind": "local", "bucket_dir": str(tmp_path / "bucket")},
    )
    events.dispose()


@pytest.fixture
def s3_backend(s3_server, fresh_postgres_url, monkeypatch) -> Iterator[Backend]:
    bucket = s3_server.new_bucket()
    for key, value in s3_server.env(bucket).items():
        monkeypatch.setenv(key, value)
    events = EventStore(fresh_postgres_url)
    events.init_schema()
    yield Backend(
        "s3+postgres",
        s3_server.store(bucket),
        events,
        fresh_postgres_url,
        {
            "kind": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": s3_server.endpoint_url,
            "s3_region": s3_server.region,
        },
    )
    events.dispose()


@pytest.fixture(params=["local+sqlite", "s3+postgres"])
def backend(request) -> Backend:
    return request.getfixturevalue("local_backend" if request.param == "local+sqlite" else "s3_backend")


def store_video(backend: Backend, rows: list[dict], video: bytes = b"\x00video") -> str:
    """Write a video's upload, crops, events rows and Parquet files, like process_video does."""
    video_key = rows[0]["video_key"]
    camera = rows[0]["camera_id"]
    ts = video_key.rsplit("/", 1)[-1].split(".")[0]
    backend.store.put_bytes(video_key, video)
    for row in rows:
        backend.store.put_bytes(row["crop_key"], b"\xff\xd8jpeg-" + row["normalized_plate"].encode())
    backend.events.replace_video_events(video_key, rows)
    start = datetime.strptime(ts, TIMESTAMP_FORMAT).replace(tzinfo=rows[0]["captured_at"].tzinfo)
    write_video_events(backend.store, camera, ts, rows, (start, max(r["captured_at"] for r in rows)))
    return video_key


def enqueue_run(instance, job_name: str = "process_video") -> str:
    """A run in QUEUED status, as the QueuedRunCoordinator leaves it (RUN_ENQUEUED event)."""
    from dagster import DagsterEvent, DagsterEventType, DagsterRun, DagsterRunStatus
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.utils import make_new_run_id

    run_id = make_new_run_id()
    # Queued runs must say where their code lives (the daemon launches them from there).
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("anpr_pipeline"), "__repository__"), job_name
    )
    instance.add_run(
        DagsterRun(
            job_name=job_name, run_id=run_id, status=DagsterRunStatus.NOT_STARTED, remote_job_origin=origin
        )
    )
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_ENQUEUED.value, job_name=job_name), run_id=run_id
    )
    return run_id


@pytest.fixture(params=["sqlite", "postgres"])
def dagster_instance(request):
    """A Dagster instance on SQLite (embedded default) or on dagster-postgres (production),
    each on its own fresh storage."""
    from dagster import instance_for_test

    if request.param == "sqlite":
        with instance_for_test() as instance:
            yield instance
        return
    url = request.getfixturevalue("fresh_postgres_url").replace(
        "postgresql+psycopg://", "postgresql+psycopg2://"
    )
    storage = {"storage": {"postgres": {"postgres_url": url}}}
    with instance_for_test(overrides=storage) as instance:
        yield instance
