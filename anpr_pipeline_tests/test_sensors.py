"""The upload sensor: pure scan logic, and the real sensor on a real local bucket."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from anpr_pipeline.resources.object_store import ObjectInfo, ObjectStoreResource
from anpr_pipeline.sensors import EMPTY_UPLOAD_SECONDS, UploadCursor, scan_uploads, upload_sensor

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
    assert scan.cursor.reported == ["uploads/cam-1/not-a-time.mp4"]
    # 30 s later cam-1 is a partition, and cam-3's upload has grown from 0 to 100 bytes:
    # it waits one more tick.
    objects[-1] = info("uploads/cam-3/20261128T102000Z.mp4", age_s=0.5, size=100)
    known = {"cam-1/20261128T100000Z"}
    later = scan_uploads(objects, scan.cursor, NOW + timedelta(seconds=30), known)
    assert [u.partition_key for u in later.ready] == ["cam-2/20261128T101000Z"]
    assert later.bad == [] and later.cursor.bad_keys_total == 1  # reported once, not every tick
    last = scan_uploads(
        objects, later.cursor, NOW + timedelta(seconds=60), known | {"cam-2/20261128T101000Z"}
    )
    assert [u.partition_key for u in last.ready] == ["cam-3/20261128T102000Z"] and not last.waiting


def test_growing_file_waits_until_its_size_is_stable():
    key = "uploads/cam-1/20261128T100000Z.mp4"
    first = scan_uploads([info(key, age_s=30, size=10)], UploadCursor(pending={key: 5}), NOW)
    assert first.ready == [] and first.waiting == {key: 10}
    second = scan_uploads([info(key, age_s=40, size=10)], first.cursor, NOW)
    assert [u.key for u in second.ready] == [key]


def test_a_local_folder_upload_is_taken_when_a_second_look_sees_the_same_size():
    # Written in place, its writer stalled for longer than the settle time.
    key = "uploads/cam-1/20261128T100000Z.mp4"
    first = scan_uploads([info(key, age_s=60, size=10)], UploadCursor(), NOW, confirm_size=True)
    assert first.ready == [] and first.waiting == {key: 10}
    grown = scan_uploads([info(key, age_s=5, size=50)], first.cursor, NOW, confirm_size=True)
    assert grown.ready == [] and grown.waiting == {key: 50}
    same = scan_uploads([info(key, age_s=35, size=50)], grown.cursor, NOW, confirm_size=True)
    assert [u.key for u in same.ready] == [key]
    # S3 objects appear whole: the settle time alone is enough.
    assert [u.key for u in scan_uploads([info(key, age_s=60, size=10)], UploadCursor(), NOW).ready] == [key]


def test_an_upload_stamped_before_ones_already_handled_is_not_passed_over():
    # An S3 multipart upload is stamped when it started and listed when it completes;
    # `rsync -a` keeps a file's own time: both appear after newer uploads were handled.
    newer = info("uploads/cam-1/20261128T115900Z.mp4", age_s=30)
    first = scan_uploads([newer], UploadCursor(), NOW)
    assert [u.key for u in first.ready] == [newer.key]
    late = info("uploads/cam-2/20261128T100000Z.mp4", age_s=2 * 3600)
    second = scan_uploads(
        [newer, late], first.cursor, NOW + timedelta(seconds=30), {"cam-1/20261128T115900Z"}
    )
    assert [u.key for u in second.ready] == [late.key]


def test_an_upload_left_empty_is_reported_once_as_failed():
    empty = info("uploads/cam-1/20261128T100000Z.mp4", age_s=EMPTY_UPLOAD_SECONDS + 60, size=0)
    other = info("uploads/cam-2/20261128T100000Z.mp4", age_s=60)
    scan = scan_uploads([empty, other], UploadCursor(), NOW)
    assert [u.key for u in scan.ready] == [other.key] and not scan.waiting
    (message,) = scan.bad
    assert empty.key in message and "empty (0 bytes)" in message
    again = scan_uploads([empty, other], scan.cursor, NOW, {"cam-2/20261128T100000Z"})
    assert again.bad == [] and again.ready == [] and again.cursor.reported == [empty.key]
    # Uploaded again (now with data): read as any upload.
    fixed = info(empty.key, age_s=30, size=100)
    assert [u.key for u in scan_uploads([fixed], again.cursor, NOW).ready] == [empty.key]


def test_two_uploads_of_one_partition_give_one_video():
    mp4, mov = (
        info("uploads/cam-1/20261128T100000Z.mp4"),
        info("uploads/cam-1/20261128T100000Z.mov", age_s=50),
    )
    scan = scan_uploads([mov, mp4], UploadCursor(), NOW)
    assert [u.key for u in scan.ready] == [mp4.key]
    assert scan.duplicates == [f"{mov.key} ignored: {mp4.key} is the upload of its partition"]


def test_cursor_survives_garbage_and_round_trips():
    assert UploadCursor.load("not json") == UploadCursor()
    assert UploadCursor.load("[1, 2]") == UploadCursor()
    cursor = UploadCursor(bad_keys_total=3, pending={"k": 5}, reported=["uploads/x.mp4"])
    assert UploadCursor.load(cursor.dump()) == cursor
    # A cursor of the earlier (LastModified mark) version keeps what still applies.
    earlier = '{"bad_keys_total": 2, "last_key": "k", "last_modified": "2026-11-28T10:00:00.000000", "pending": {"a": 1}}'
    assert UploadCursor.load(earlier) == UploadCursor(bad_keys_total=2, pending={"a": 1})


def _write(root, key: str, data: bytes, age_s: float = 60) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def _apply(instance: DagsterInstance, result: SensorResult) -> SensorResult:
    """Register the partitions a tick asked for, as the daemon does."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _tick(instance: DagsterInstance, bucket: ObjectStoreResource, cursor: str | None = None):
    """One tick of the real sensor, its requested partitions registered as the daemon does."""
    result = upload_sensor(
        build_sensor_context(instance=instance, cursor=cursor, resources={"bucket": bucket})
    )
    return _apply(instance, result) if isinstance(result, SensorResult) else result


def _settled_tick(instance: DagsterInstance, bucket: ObjectStoreResource, cursor: str | None = None):
    """Two ticks: a local bucket's uploads are taken when a second look sees the same size."""
    first = _tick(instance, bucket, cursor)
    assert not first.run_requests and "still being written" in first.skip_reason.skip_message
    return _tick(instance, bucket, first.cursor)


def test_real_sensor_adds_partitions_and_reports_bad_keys(tmp_path):
    bucket = ObjectStoreResource(kind="local", bucket_dir=str(tmp_path / "bucket"))
    root = tmp_path / "bucket"
    _write(root, "uploads/cam-1/20261128T100000Z.mp4", b"x" * 100)
    _write(root, "uploads/cam-2/20261128T100500Z.mov", b"x" * 100)
    for i in range(1000):
        _write(root, f"uploads/cam-1/bad-{i:04d}.mp4", b"x")
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, resources={"bucket": bucket})
        first = upload_sensor(context)
        assert not first.run_requests and "2 upload(s) still being written" in first.skip_reason.skip_message
        assert json.loads(first.cursor)["bad_keys_total"] == 1000  # reported at once
        result = _tick(instance, bucket, first.cursor)
        assert isinstance(result, SensorResult)
        assert sorted(r.partition_key for r in result.run_requests) == [
            "cam-1/20261128T100000Z",
            "cam-2/20261128T100500Z",
        ]
        assert all(r.run_key.startswith(f"{r.partition_key}@") for r in result.run_requests)
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
        first = _settled_tick(instance, bucket)
        assert [r.partition_key for r in first.run_requests] == ["cam-1/20261128T100000Z"]
        # Retention deletes the first upload; a new one arrives, and one copied in with
        # `rsync -a` keeps its file time of yesterday.
        (root / "uploads/cam-1/20261128T100000Z.mp4").unlink()
        _write(root, "uploads/cam-1/20261128T110000Z.mp4", b"x" * 100, age_s=30)
        _write(root, "uploads/cam-2/20261127T090000Z.mp4", b"x" * 100, age_s=26 * 3600)
        second = _settled_tick(instance, bucket, first.cursor)
        assert sorted(r.partition_key for r in second.run_requests) == [
            "cam-1/20261128T110000Z",
            "cam-2/20261127T090000Z",
        ]
        # With no cursor at all (deleted), nothing handled is requested again.
        third = upload_sensor(build_sensor_context(instance=instance, resources={"bucket": bucket}))
    assert isinstance(third, SensorResult) and not third.run_requests


def test_partition_deleted_while_its_upload_stays_is_run_again(tmp_path):
    # An operator deletes a video partition (its run failed) and leaves the upload: the sensor
    # registers it again, and its new run must not reuse the first run's key, which the
    # daemon would skip as already requested.
    bucket = ObjectStoreResource(kind="local", bucket_dir=str(tmp_path / "bucket"))
    _write(tmp_path / "bucket", "uploads/cam-1/20261128T100000Z.mp4", b"x" * 100, age_s=120)
    with DagsterInstance.ephemeral() as instance:
        first = _settled_tick(instance, bucket)
        instance.delete_dynamic_partition("videos", "cam-1/20261128T100000Z")
        second = _tick(instance, bucket, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["cam-1/20261128T100000Z"]
        assert second.run_requests[0].run_key != first.run_requests[0].run_key
        assert instance.has_dynamic_partition("videos", "cam-1/20261128T100000Z")


def test_a_video_replaced_after_its_run_failed_runs_again(tmp_path):
    """A camera re-sends a video whose first transfer broke (same key, new content): while
    the partition has no events the sensor runs it again, once; a processed video's upload
    being touched again does not."""
    from dagster import AssetMaterialization

    bucket = ObjectStoreResource(kind="local", bucket_dir=str(tmp_path / "bucket"))
    root = tmp_path / "bucket"
    _write(root, "uploads/cam-1/20261128T100000Z.mp4", b"x" * 50, age_s=300)  # truncated
    _write(root, "uploads/cam-2/20261128T100000Z.mp4", b"x" * 100, age_s=300)
    with DagsterInstance.ephemeral() as instance:
        first = _settled_tick(instance, bucket)
        assert sorted(r.partition_key for r in first.run_requests) == [
            "cam-1/20261128T100000Z",
            "cam-2/20261128T100000Z",
        ]
        # cam-2 was processed; cam-1's run failed (no events). Nothing changed: nothing asked.
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key="plate_events", partition="cam-2/20261128T100000Z")
        )
        quiet = _tick(instance, bucket, first.cursor)
        assert not quiet.run_requests
        # Both uploads are replaced; only the one without events runs again.
        _write(root, "uploads/cam-1/20261128T100000Z.mp4", b"x" * 100, age_s=60)
        _write(root, "uploads/cam-2/20261128T100000Z.mp4", b"y" * 120, age_s=60)
        again = _settled_tick(instance, bucket, quiet.cursor)
        assert [r.partition_key for r in again.run_requests] == ["cam-1/20261128T100000Z"]
        assert again.run_requests[0].run_key != first.run_requests[0].run_key
        assert not again.dynamic_partitions_requests  # the partition exists already
        # Once asked for, the new version is the known one: not asked again.
        assert not _tick(instance, bucket, again.cursor).run_requests
