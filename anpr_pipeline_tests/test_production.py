"""Production mode against real servers: SeaweedFS S3 bucket, Postgres events DB, S3 IO manager.

Same code as the embedded default; only settings differ.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetKey, DagsterInstance, SensorResult, SkipReason, build_sensor_context

from anpr_pipeline.definitions import build_definitions
from anpr_pipeline.resources.event_store import EventStore
from anpr_pipeline.resources.parquet_dataset import read_events
from anpr_pipeline.sensors import MAX_RUNS_PER_TICK, SETTLE_SECONDS
from anpr_pipeline.settings import Settings
from anpr_pipeline.uploads import video_key_for
from anpr_pipeline.vision.synth import make_video

pytestmark = [pytest.mark.s3, pytest.mark.postgres]

STARTED = datetime(2026, 11, 28, 7, 45, tzinfo=UTC)
CAMERA = "cam-prod"


def prod_settings(s3_server, bucket: str, database_url: str, tmp_path) -> Settings:
    return replace(
        Settings(),
        data_dir=str(tmp_path),
        bucket_kind="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=s3_server.region,
        database_url=database_url,
    )


def s3_endpoint(prod) -> str:
    return prod["s3"].endpoint_url


def tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("upload_sensor")
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"bucket": defs.resources["bucket"]}
    )
    return sensor(context)


@pytest.fixture
def prod(s3_env, fresh_postgres_url, tmp_path):
    bucket = s3_env.new_bucket("anpr-prod")
    settings = prod_settings(s3_env, bucket, fresh_postgres_url, tmp_path)
    defs = build_definitions(settings)
    events = EventStore(fresh_postgres_url)
    events.init_schema()
    return {
        "defs": defs,
        "store": defs.resources["bucket"].get_store(),
        "events": events,
        "tmp": tmp_path,
        "s3": s3_env,
        "bucket": bucket,
    }


def test_s3_upload_becomes_partition_run_and_events_in_postgres_and_parquet(prod):
    defs, store, events = prod["defs"], prod["store"], prod["events"]
    truth = make_video(prod["tmp"] / "v.mp4", seed=21, seconds=5.0, vehicles=2)
    key = video_key_for(CAMERA, STARTED)
    store.put_file(key, prod["tmp"] / "v.mp4")
    with DagsterInstance.ephemeral() as instance:
        # Just written: the sensor lets it settle first, then requests it.
        waiting = tick(defs, instance)
        assert not waiting.run_requests and "still being written" in waiting.skip_reason.skip_message
        time.sleep(SETTLE_SECONDS)
        result = tick(defs, instance, cursor=waiting.cursor)
        assert isinstance(result, SensorResult), result
        (request,) = result.run_requests
        assert request.partition_key == f"{CAMERA}/20261128T074500Z"
        instance.add_dynamic_partitions("videos", [request.partition_key])
        job = defs.resolve_job_def("process_video")
        run = job.execute_in_process(
            partition_key=request.partition_key, instance=instance, tags=request.tags
        )
        assert run.success
        stored = events.events_for_video(key)
        assert stored, "no events stored in Postgres"
        expected = {v["plate"] for v in truth["vehicles"]}
        assert {e["normalized_plate"] for e in stored} & expected, (stored, expected)
        parquet = read_events(store)
        assert set(parquet["event_id"]) == {str(e["event_id"]) for e in stored}
        # Crops are readable by presigned URL, as an operator's browser would fetch them.
        with urllib.request.urlopen(store.url(stored[0]["crop_key"], expires_s=60), timeout=10) as response:
            assert response.read(3) == b"\xff\xd8\xff"  # JPEG magic
        # The UI's per-video events table shows crop thumbnails through presigned URLs.
        record = instance.get_latest_materialization_event(AssetKey("plate_events"))
        table = record.asset_materialization.metadata["events_table"].value
        assert f"![crop]({s3_endpoint(prod)}" in table
        # Re-running the partition leaves row counts unchanged.
        count = events.count()
        assert job.execute_in_process(partition_key=request.partition_key, instance=instance).success
        assert events.count() == count
        assert len(read_events(store)) == len(parquet)


def test_sensor_on_s3_reports_bad_keys_and_processes_none(prod):
    store = prod["store"]
    for i in range(1000):
        store.put_bytes(f"uploads/cam-1/clip-{i:04d}.mp4", b"x")
    store.put_bytes("uploads/cam-1/20261128T074500Z.webm", b"x")
    with DagsterInstance.ephemeral() as instance:
        result = tick(prod["defs"], instance)
    assert isinstance(result, SensorResult)
    assert not result.run_requests and not result.dynamic_partitions_requests
    assert "1001 upload key(s) break the naming contract" in result.skip_reason.skip_message


def test_sensor_skips_while_bucket_unreachable_then_resumes(prod, tmp_path):
    store = prod["store"]
    make_video(tmp_path / "tiny.mp4", seed=3, width=320, height=240, seconds=1.0, vehicles=1)
    store.put_file(video_key_for(CAMERA, STARTED), tmp_path / "tiny.mp4")
    time.sleep(SETTLE_SECONDS)
    down = build_definitions(
        replace(
            prod_settings(prod["s3"], prod["bucket"], "sqlite://", tmp_path),
            s3_endpoint_url="http://127.0.0.1:9",
        )
    )
    with DagsterInstance.ephemeral() as instance:
        skipped = tick(down, instance)
        message = (
            skipped.skip_message if isinstance(skipped, SkipReason) else skipped.skip_reason.skip_message
        )
        assert "unreachable" in message.lower()
        assert "127.0.0.1:9" in message
        resumed = tick(prod["defs"], instance)
    assert isinstance(resumed, SensorResult)
    assert [r.partition_key for r in resumed.run_requests] == [f"{CAMERA}/20261128T074500Z"]


def test_sensor_handles_ten_thousand_objects_in_one_listing(prod):
    from concurrent.futures import ThreadPoolExecutor

    store = prod["store"]
    keys = [
        video_key_for(f"cam-{i % 50:02d}", STARTED.replace(hour=0) + timedelta(seconds=i))
        for i in range(10_000)
    ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: store.put_bytes(key, b"v"), keys))
    time.sleep(SETTLE_SECONDS)
    with DagsterInstance.ephemeral() as instance:
        first = tick(prod["defs"], instance)
        # The daemon registers the requested partitions before the next tick.
        (request,) = first.dynamic_partitions_requests
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        second = tick(prod["defs"], instance, cursor=first.cursor)
    # At most MAX_RUNS_PER_TICK per tick (oldest first); the rest wait their turn, nothing repeats.
    batch = {r.partition_key for r in first.run_requests}
    after = {r.partition_key for r in second.run_requests}
    expected = {key.removeprefix("uploads/").rsplit(".", 1)[0] for key in keys}
    assert len(batch) == len(after) == MAX_RUNS_PER_TICK
    assert not batch & after and (batch | after) <= expected
