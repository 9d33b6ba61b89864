"""200 fuzzed variants of a valid upload through the real sensor and the real process_video job.

Each variant (truncated, bit-flipped, random bytes, wrong extension, …) must either process
or fail its own partition with a specific decode error, within a time bound; none may hang,
crash the sensor, or disturb the other partitions.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetKey, DagsterInstance, SensorResult, build_sensor_context

from anpr_pipeline.definitions import build_definitions
from anpr_pipeline.settings import Settings
from anpr_pipeline.uploads import video_key_for
from anpr_pipeline.vision.synth import make_video

pytestmark = pytest.mark.slow

VARIANTS = 200
PER_RUN_BOUND_S = 60
SPECIFIC = ("Cannot decode uploads/",)
REASONS = (
    "truncated",
    "corrupt",
    "not a video container",
    "no video stream",
    "empty file",
    "no decodable video frames",
    "unsupported video codec",
    "stalled",
)


def mutate(data: bytes, rng: random.Random, kind: str) -> bytes:
    if kind == "truncate":
        return data[: rng.randrange(0, len(data))]
    if kind == "bitflip":
        buf = bytearray(data)
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == "random":
        return rng.randbytes(rng.randint(0, 4096))
    if kind == "zero_block":
        buf = bytearray(data)
        start = rng.randrange(len(buf))
        end = min(len(buf), start + rng.randint(16, 2048))
        buf[start:end] = bytes(end - start)
        return bytes(buf)
    if kind == "head_swap":
        cut = rng.randrange(1, len(data))
        return data[cut:] + data[:cut]
    raise ValueError(kind)


KINDS = ("truncate", "bitflip", "random", "zero_block", "head_swap")


def test_fuzzed_uploads_each_process_or_fail_alone(tmp_path):
    root = tmp_path / "data"
    settings = replace(
        Settings(),
        data_dir=str(root),
        bucket_dir=str(root / "bucket"),
        database_url=f"sqlite:///{root / 'events.db'}",
        reader=os.environ.get("ANPR_READER", "default"),
    )
    defs = build_definitions(settings)
    store = defs.resources["bucket"].get_store()
    defs.resources["events_db"].get_store().init_schema()
    make_video(tmp_path / "seed.mp4", seed=9, width=320, height=240, seconds=1.0, vehicles=1)
    good = (tmp_path / "seed.mp4").read_bytes()
    rng = random.Random(1234)
    base = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    wrong_ext = 0
    for i in range(VARIANTS):
        started = base + timedelta(seconds=i)
        if i % 20 == 19:  # wrong extension: must be reported by the sensor, never processed
            store.put_bytes(video_key_for("cam-fuzz", started, "webm"), good)
            wrong_ext += 1
            continue
        store.put_bytes(video_key_for("cam-fuzz", started), mutate(good, rng, KINDS[i % len(KINDS)]))
    # A valid upload among them must come through untouched.
    store.put_bytes(video_key_for("cam-good", base), good)
    time.sleep(6)  # let the uploads settle (sensor SETTLE_SECONDS)

    with DagsterInstance.ephemeral() as instance:
        sensor = defs.resolve_sensor_def("upload_sensor")
        resources = {"bucket": defs.resources["bucket"]}
        # A local bucket's uploads are taken when a second look sees the same size.
        first = sensor(build_sensor_context(instance=instance, resources=resources))
        assert isinstance(first, SensorResult) and not first.run_requests
        result = sensor(build_sensor_context(instance=instance, cursor=first.cursor, resources=resources))
        assert isinstance(result, SensorResult)
        requested = {r.partition_key: r for r in result.run_requests}
        # Zero-byte variants wait as "still being written"; everything else is requested.
        assert len(requested) >= VARIANTS - wrong_ext - 20
        assert "cam-good/20261128T000000Z" in requested
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        job = defs.resolve_job_def("process_video")
        outcomes = {"processed": 0, "failed": 0}
        slowest = 0.0
        for key in sorted(requested):
            t0 = time.monotonic()
            run = job.execute_in_process(
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
            )
            elapsed = time.monotonic() - t0
            slowest = max(slowest, elapsed)
            assert elapsed < PER_RUN_BOUND_S, f"{key} took {elapsed:.1f} s"
            if run.success:
                outcomes["processed"] += 1
                continue
            outcomes["failed"] += 1
            failures = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
            assert failures, f"{key} failed without a step failure"
            message = failures[0].event_specific_data.error.message
            assert any(s in message for s in SPECIFIC) and any(r in message for r in REASONS), (key, message)
            assert failures[0].step_key in {"video", "frames_and_detections"}, (key, failures[0].step_key)
        assert "cam-good/20261128T000000Z" in instance.get_materialized_partitions(AssetKey("plate_events"))
    print(f"fuzz: {outcomes}, slowest run {slowest:.1f} s")
    assert outcomes["failed"] > 0 and outcomes["processed"] > 0
