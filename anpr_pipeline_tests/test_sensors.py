"""The upload sensor: pure scan logic, and the real sensor on a real local bucket."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from anpr_pipeline.resources.object_store import ObjectInfo, ObjectStoreResource
from anpr_pipeline.sensors import UploadCursor, scan_uploads, upload_sensor

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def info(key: str, age_s: float = 60, size: int = 100) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, last_modified=NOW - timedelta(seconds=age_s), etag=None)


def test_scan_separates_ready_bad_and_still_writing():
    objects = [
        info("uploads/cam-1/20261128T100000Z.mp4", age_s=120),
        info("uploads/cam-1/20261128T100000Z.json", age_s=119),
        info("uploads/cam-1/not-a-time.mp4", age_s=110),
        info("uploads/cam-2/20261128T101000Z.mp4", age_s=1),  # just written: wait
        info("uploads/cam-3/20261128T102000Z.mp4", age_s=0.5, size=0),
    ]
    scan = scan_uploads(objects, UploadCursor(), NOW)
    assert [u.partition_key for u in scan.ready] == ["cam-1/20261128T100000Z"]
    assert len(scan.bad) == 1 and "not-a-time" in scan.bad[0]
    assert set(scan.waiting) == {"uploads/cam-2/20261128T101000Z.mp4", "uploads/cam-3/20261128T102000Z.mp4"}
    # The cursor stops before the first waiting upload so it is looked at again.
    assert scan.cursor.last_key == "uploads/cam-1/not-a-time.mp4"
    # 30 s later cam-3's upload has grown from 0 to 100 bytes: it waits one more tick.
    objects[-1] = info("uploads/cam-3/20261128T102000Z.mp4", age_s=0.5, size=100)
    later = scan_uploads(objects, scan.cursor, NOW + timedelta(seconds=30))
    assert [u.partition_key for u in later.ready] == ["cam-2/20261128T101000Z"]
    assert later.bad == []  # reported once, not every tick
    last = scan_uploads(objects, later.cursor, NOW + timedelta(seconds=60))
    assert [u.partition_key for u in last.ready] == ["cam-3/20261128T102000Z"]
    assert last.cursor.last_key == "uploads/cam-3/20261128T102000Z.mp4" and not last.waiting


def test_growing_file_waits_until_its_size_is_stable():
    key = "uploads/cam-1/20261128T100000Z.mp4"
    first = scan_uploads([info(key, age_s=30, size=10)], UploadCursor(pending={key: 5}), NOW)
    assert first.ready == [] and first.waiting == {key: 10}
    second = scan_uploads([info(key, age_s=40, size=10)], first.cursor, NOW)
    assert [u.key for u in second.ready] == [key]


def test_cursor_survives_garbage_and_round_trips():
    assert UploadCursor.load("not json") == UploadCursor()
    cursor = UploadCursor(last_modified="2026-11-28T10:00:00.000000", last_key="k", bad_keys_total=3)
    assert UploadCursor.load(cursor.dump()) == cursor


def _write(root, key: str, data: bytes, age_s: float = 60) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_real_sensor_adds_partitions_and_reports_bad_keys(tmp_path):
    bucket = ObjectStoreResource(kind="local", bucket_dir=str(tmp_path / "bucket"))
    root = tmp_path / "bucket"
    _write(root, "uploads/cam-1/20261128T100000Z.mp4", b"x" * 100)
    _write(root, "uploads/cam-2/20261128T100500Z.mov", b"x" * 100)
    for i in range(1000):
        _write(root, f"uploads/cam-1/bad-{i:04d}.mp4", b"x")
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, resources={"bucket": bucket})
        result = upload_sensor(context)
        assert isinstance(result, SensorResult)
        assert sorted(r.partition_key for r in result.run_requests) == [
            "cam-1/20261128T100000Z",
            "cam-2/20261128T100500Z",
        ]
        assert all(r.run_key == r.partition_key for r in result.run_requests)
        assert result.run_requests[0].tags["anpr/camera"] in {"cam-1", "cam-2"}
        (request,) = result.dynamic_partitions_requests
        assert sorted(request.partition_keys) == ["cam-1/20261128T100000Z", "cam-2/20261128T100500Z"]
        assert json.loads(result.cursor)["bad_keys_total"] == 1000
        # Next tick from the stored cursor: nothing new, nothing re-reported.
        again = upload_sensor(
            build_sensor_context(instance=instance, cursor=result.cursor, resources={"bucket": bucket})
        )
        assert isinstance(again, SensorResult) and not again.run_requests
        assert again.skip_reason is not None and "No new uploads" in again.skip_reason.skip_message


def test_real_sensor_skips_with_reason_when_bucket_is_unreachable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the bucket folder should be")
    bucket = ObjectStoreResource(kind="local", bucket_dir=str(blocker))
    with DagsterInstance.ephemeral() as instance:
        result = upload_sensor(build_sensor_context(instance=instance, resources={"bucket": bucket}))
    reason = result.skip_message if isinstance(result, SkipReason) else result.skip_reason.skip_message
    assert "unreachable" in reason.lower() or "bucket" in reason.lower()


def test_cursor_object_deleted_does_not_lose_or_repeat_uploads(tmp_path):
    bucket = ObjectStoreResource(kind="local", bucket_dir=str(tmp_path / "bucket"))
    root = tmp_path / "bucket"
    _write(root, "uploads/cam-1/20261128T100000Z.mp4", b"x" * 100, age_s=120)
    with DagsterInstance.ephemeral() as instance:
        first = upload_sensor(build_sensor_context(instance=instance, resources={"bucket": bucket}))
        assert json.loads(first.cursor)["last_key"] == "uploads/cam-1/20261128T100000Z.mp4"
        # Retention deletes the very object the cursor names; a new upload arrives.
        (root / "uploads/cam-1/20261128T100000Z.mp4").unlink()
        _write(root, "uploads/cam-1/20261128T110000Z.mp4", b"x" * 100, age_s=30)
        second = upload_sensor(
            build_sensor_context(instance=instance, cursor=first.cursor, resources={"bucket": bucket})
        )
    assert [r.partition_key for r in second.run_requests] == ["cam-1/20261128T110000Z"]
