"""archive on both backends: old videos move to archive/ (S3: colder storage class) only after
the copy is verified; whole old months of events go to the archive Parquet dataset, verified,
then their Postgres partition is dropped; recent data is untouched."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from anpr_pipeline.ops.archive import ArchiveError, _remove_month
from anpr_pipeline.ops.gdpr import find_plate
from anpr_pipeline.ops.jobs import archive_job
from anpr_pipeline.resources.event_store import partition_name
from anpr_pipeline.resources.object_store import S3ObjectStore
from anpr_pipeline_tests.ops.conftest import event_row, store_video
from anpr_pipeline_tests.ops.test_jobs import resources_for

STORAGE_CLASS = "STANDARD_IA"


def _old_month(now: datetime):
    m = (now.month - 1 - 10) % 12 + 1
    y = now.year + (now.month - 1 - 10) // 12
    return datetime(y, m, 1, tzinfo=UTC)


def test_archive_job_moves_old_videos_and_months(backend):
    now = datetime.now(UTC).replace(microsecond=0)
    old_video = store_video(backend, [event_row(now - timedelta(days=20), "VID20", camera="camA")])
    backend.store.put_bytes(old_video.rsplit(".", 1)[0] + ".json", b'{"region": "eu"}')
    new_video = store_video(backend, [event_row(now - timedelta(days=2), "VID02", camera="camB")])
    month = _old_month(now)
    old_key = "uploads/camC/" + month.strftime("%Y%m%dT%H%M%SZ") + ".mp4"
    old_rows = [
        event_row(month + timedelta(days=d, hours=3), f"OLD{d:02d}", "camC", old_key, n=d) for d in (2, 9, 27)
    ]
    backend.events.replace_video_events(old_key, old_rows)
    backend.events.ensure_month_partitions()
    resources = resources_for(
        backend,
        archive_videos_after_days=14,
        archive_events_after_days=180,
        s3_archive_storage_class=STORAGE_CLASS,
    )

    dry = archive_job.execute_in_process(
        run_config={"ops": {"archive_op": {"config": {"dry_run": True}}}}, resources=resources
    ).output_for_node("archive_op")
    assert dry["videos_planned"] == 2 and dry["event_months"] == [{"month": f"{month:%Y-%m}", "rows": 3}]
    assert backend.store.exists(old_video)

    result = archive_job.execute_in_process(resources=resources)
    assert result.success
    summary = result.output_for_node("archive_op")
    assert summary["videos_moved"] == 2 and summary["events_archived"] == 3
    assert not backend.store.exists(old_video) and backend.store.exists(new_video)
    assert backend.store.get_bytes("archive/" + old_video) == b"\x00video"
    assert backend.store.exists("archive/" + old_video.rsplit(".", 1)[0] + ".json")
    if isinstance(backend.store, S3ObjectStore):
        assert backend.store.storage_class("archive/" + old_video) == STORAGE_CLASS

    [archived] = summary["event_months"]
    table = pq.read_table(io.BytesIO(backend.store.get_bytes(archived["key"])))
    assert sorted(table.column("event_id").to_pylist()) == sorted(r["event_id"] for r in old_rows)
    assert set(table.column("camera_id").to_pylist()) == {"camC"}
    assert backend.events.events_for_video(old_key) == []
    assert [e["normalized_plate"] for e in backend.events.search("VID02")] == ["VID02"]
    if backend.events.dialect == "postgresql":
        assert archived["dropped_partition"] == partition_name(month.date())
        assert partition_name(month.date()) not in backend.events.partitions()
    # GDPR requests still reach archived events.
    assert list(find_plate("OLD09", backend.events, backend.store).parquet) == [archived["key"]]

    # A second run finds nothing left to do.
    again = archive_job.execute_in_process(resources=resources).output_for_node("archive_op")
    assert again["videos_moved"] == 0 and again["event_months"] == []


def test_month_that_changed_during_archive_is_kept(local_backend):
    month = datetime(2024, 3, 1, tzinfo=UTC)
    rows = [event_row(month + timedelta(days=1), "KEEP1", video_key="uploads/c/20240301T000000Z.mp4")]
    local_backend.events.replace_video_events(rows[0]["video_key"], rows)
    with pytest.raises(ArchiveError, match="changed during the archive"):
        _remove_month(local_backend.events, month.date(), expected=2)
    assert len(local_backend.events.search("KEEP1")) == 1
