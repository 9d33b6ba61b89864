"""archive on both backends: old videos move to archive/ (S3: colder storage class) only after
the copy is verified; whole old months of events go to the archive Parquet dataset, verified,
then their Postgres partition is dropped; recent data is untouched."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster import Failure, instance_for_test

from anpr_pipeline.assets.common import find_upload
from anpr_pipeline.ops import archive as archive_module
from anpr_pipeline.ops.archive import ArchiveError, _remove_month, plan_video_archive
from anpr_pipeline.ops.gdpr import find_plate
from anpr_pipeline.ops.jobs import archive_job
from anpr_pipeline.resources.event_store import EventStore, partition_name
from anpr_pipeline.resources.object_store import ObjectInfo, S3ObjectStore
from anpr_pipeline_tests.ops.conftest import event_row, store_video
from anpr_pipeline_tests.ops.test_jobs import mark_processed, resources_for

STORAGE_CLASS = "STANDARD_IA"


def _old_month(now: datetime):
    m = (now.month - 1 - 10) % 12 + 1
    y = now.year + (now.month - 1 - 10) // 12
    return datetime(y, m, 1, tzinfo=UTC)


@pytest.fixture
def instance():
    with instance_for_test() as instance:
        yield instance


def test_archive_job_moves_old_videos_and_months(backend, instance):
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
    # Recorded 20 days ago but uploaded just now (camera back from an outage): still queued.
    late_video = "uploads/camL/" + (now - timedelta(days=20)).strftime("%Y%m%dT%H%M%SZ") + ".mp4"
    backend.store.put_bytes(late_video, b"\x00late")
    resources = resources_for(
        backend,
        archive_videos_after_days=14,
        archive_events_after_days=180,
        s3_archive_storage_class=STORAGE_CLASS,
    )
    mark_processed(instance, old_video, new_video)

    dry = archive_job.execute_in_process(
        run_config={"ops": {"archive_op": {"config": {"dry_run": True}}}},
        resources=resources,
        instance=instance,
    ).output_for_node("archive_op")
    assert dry["videos_planned"] == 2 and dry["event_months"] == [{"month": f"{month:%Y-%m}", "rows": 3}]
    assert dry["videos_unprocessed_kept"] == 1
    assert backend.store.exists(old_video)

    result = archive_job.execute_in_process(resources=resources, instance=instance)
    assert result.success
    summary = result.output_for_node("archive_op")
    assert summary["videos_moved"] == 2 and summary["events_archived"] == 3
    assert not backend.store.exists(old_video) and backend.store.exists(new_video)
    assert backend.store.exists(late_video) and summary["videos_unprocessed_kept"] == 1
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

    # Re-processing an archived video says where it is and how to bring it back.
    old_pk = old_video.split("/", 1)[1].rsplit(".", 1)[0]
    with pytest.raises(Failure) as failure:
        find_upload(backend.store, old_pk)
    archived_on = backend.store.info("archive/" + old_video).last_modified
    assert failure.value.description == (
        f"The upload of partition {old_pk!r} was archived on {archived_on:%Y-%m-%d %H:%M} UTC "
        f"(archive/{old_video}); copy it back to {old_video} (and its sidecar archive/"
        f"{old_video[:-4]}.json to {old_video[:-4]}.json) to re-process."
    )
    with pytest.raises(Failure, match="deleted by retention or never uploaded"):
        find_upload(backend.store, "camZ/20240101T000000Z")

    # A second run finds nothing left to do.
    again = archive_job.execute_in_process(resources=resources, instance=instance).output_for_node(
        "archive_op"
    )
    assert again["videos_moved"] == 0 and again["event_months"] == []


def test_only_processed_or_abandoned_uploads_are_archived():
    now = datetime(2024, 6, 1, tzinfo=UTC)
    recorded = "20240501T000000Z"  # a month ago: past the 14-day period by name
    fresh, stale = now - timedelta(days=1), now - timedelta(days=15)  # LastModified
    queued = ObjectInfo(f"uploads/camL/{recorded}.mp4", 1, fresh)
    queued_sidecar = ObjectInfo(f"uploads/camL/{recorded}.json", 1, fresh)
    done = ObjectInfo(f"uploads/camP/{recorded}.mp4", 1, fresh)
    abandoned = ObjectInfo(f"uploads/camX/{recorded}.mp4", 1, stale)
    recent = ObjectInfo("uploads/camR/20240530T000000Z.mp4", 1, stale)
    objects = [queued, queued_sidecar, done, abandoned, recent]
    move, waiting = plan_video_archive(now, objects, 14, {f"camP/{recorded}"})
    assert [o.key for o in move] == [done.key, abandoned.key] and waiting == 2
    move, waiting = plan_video_archive(now, objects, 14, {f"camP/{recorded}", f"camL/{recorded}"})
    assert [o.key for o in move] == [queued.key, queued_sidecar.key, done.key, abandoned.key] and waiting == 0
    assert plan_video_archive(now, objects, 0, set()) == ([], 0)


def test_a_month_that_fails_does_not_stop_the_others(local_backend):
    months = [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)]
    for month in months:
        key = "uploads/camM/" + month.strftime("%Y%m%dT%H%M%SZ") + ".mp4"
        rows = [event_row(month + timedelta(days=3), f"M{month.month:02d}", "camM", key)]
        local_backend.events.replace_video_events(key, rows)
    # A bucket error that is not an ArchiveError: January's folder cannot be created.
    local_backend.store.put_bytes("archive/events/month=2024-01", b"not a folder")
    result = archive_job.execute_in_process(
        resources=resources_for(local_backend, archive_events_after_days=180), raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("archive_op").user_failure_data
    assert failure.description.startswith("archive incomplete: 0 video(s), 1 month(s) not archived")
    [error] = failure.metadata["events_failed"].value
    assert error.startswith("2024-01: ")
    assert [m["month"] for m in failure.metadata["event_months"].value] == ["2024-02"]
    assert [e["normalized_plate"] for e in local_backend.events.search("M01")] == ["M01"]  # kept
    assert local_backend.events.search("M02") == []
    assert [o.key for o in local_backend.store.list("archive/events/month=2024-02/")]


def _archived_rows(store, month: str) -> list[tuple[str, str]]:
    """(event_id, plate) of every row in the month's archive parts."""
    rows = []
    for info in store.list(f"archive/events/month={month}/"):
        table = pq.read_table(io.BytesIO(store.get_bytes(info.key)), columns=["event_id", "normalized_plate"])
        rows += zip(
            table.column("event_id").to_pylist(), table.column("normalized_plate").to_pylist(), strict=True
        )
    return sorted(rows)


def test_a_video_re_run_after_its_month_was_archived_replaces_its_rows(backend):
    # Partitions can outlive the archive age (ANPR_RETENTION_VIDEOS_DAYS=0): a backfill then
    # puts a video's events back in the database, and the next archive run must not keep
    # both versions of them. Another video of the month keeps its rows.
    t = datetime(2024, 3, 10, 12, tzinfo=UTC)
    rerun, other = "uploads/cam1/20240310T120000Z.mp4", "uploads/cam2/20240311T080000Z.mp4"
    backend.events.replace_video_events(rerun, [event_row(t, "OLD1", video_key=rerun, n=i) for i in range(3)])
    backend.events.replace_video_events(other, [event_row(t + timedelta(days=1), "KEEP2", "cam2", other)])
    archive_module.archive_month(backend.events, backend.store, t.date().replace(day=1))
    reread = [event_row(t, "NEW1", video_key=rerun, n=i) for i in range(2)]  # the re-run reads two
    backend.events.replace_video_events(rerun, reread)
    result = archive_module.archive_month(backend.events, backend.store, t.date().replace(day=1))
    assert result.superseded_rows == 3
    archived = _archived_rows(backend.store, "2024-03")
    assert [plate for _, plate in archived].count("OLD1") == 0
    assert sorted(plate for _, plate in archived) == ["KEEP2", "NEW1", "NEW1"]
    assert len({event_id for event_id, _ in archived}) == 3  # no event twice


def test_month_that_changed_during_archive_is_kept(local_backend):
    month = datetime(2024, 3, 1, tzinfo=UTC)
    rows = [event_row(month + timedelta(days=1), "KEEP1", video_key="uploads/c/20240301T000000Z.mp4")]
    local_backend.events.replace_video_events(rows[0]["video_key"], rows)
    with pytest.raises(ArchiveError, match="changed during the archive"):
        _remove_month(local_backend.events, month.date(), expected_rows=2, expected_digest="")
    assert len(local_backend.events.search("KEEP1")) == 1


def write_after_the_export(monkeypatch, write) -> None:
    """Run `write()` once the archive's export has read the month (its transaction still
    open), as a concurrent upload or re-run landing between the export and the final check
    would."""
    export_batches = archive_module._batches

    def batches_then_write(conn, month):
        yield from export_batches(conn, month)
        write()

    monkeypatch.setattr(archive_module, "_batches", batches_then_write)


def test_a_month_that_changed_leaves_no_part_behind(local_backend, monkeypatch):
    """An event arriving while its month is exported: the month is kept in the database and
    the part just written is removed, so the next run archives each event exactly once."""
    month = datetime(2024, 4, 1, tzinfo=UTC)
    key = "uploads/camR/20240401T000000Z.mp4"
    rows = [event_row(month + timedelta(days=d), f"APR{d:02d}", "camR", key, n=d) for d in (1, 2)]
    local_backend.events.replace_video_events(key, rows)
    late_key = "uploads/camR/20240420T000000Z.mp4"
    late = [event_row(month + timedelta(days=19), "LATE01", "camR", late_key)]
    write_after_the_export(monkeypatch, lambda: local_backend.events.replace_video_events(late_key, late))
    with pytest.raises(ArchiveError, match="changed during the archive"):
        archive_module.archive_month(local_backend.events, local_backend.store, month.date())
    assert list(local_backend.store.list("archive/events/")) == []
    assert len(local_backend.events.search("APR01")) == 1

    monkeypatch.undo()
    done = archive_module.archive_month(local_backend.events, local_backend.store, month.date())
    assert done.rows == 3
    [part] = local_backend.store.list("archive/events/")
    ids = pq.read_table(io.BytesIO(local_backend.store.get_bytes(part.key))).column("event_id").to_pylist()
    assert sorted(ids) == sorted(r["event_id"] for r in rows + late)


def test_a_row_replaced_during_the_archive_is_not_dropped(backend, monkeypatch):
    """Same count, other event ids (an event gone, another new): the new row never reached
    the part, so the month must not be dropped."""
    month = datetime(2024, 5, 1, tzinfo=UTC)
    key = "uploads/camS/20240501T000000Z.mp4"
    rows = [event_row(month + timedelta(days=d), f"MAY{d:02d}", "camS", key, n=d) for d in (1, 2)]
    backend.events.replace_video_events(key, rows)
    rerun = [rows[0], event_row(month + timedelta(days=3), "MAY03", "camS", key, n=3)]
    # MAY02 gone, MAY03 new: still two rows.
    write_after_the_export(monkeypatch, lambda: backend.events.replace_video_events(key, rerun))
    with pytest.raises(ArchiveError, match=r"\(2 rows now, 2 archived, other rows\)"):
        archive_module.archive_month(backend.events, backend.store, month.date())
    assert [e["normalized_plate"] for e in backend.events.search("MAY03")] == ["MAY03"]
    assert list(backend.store.list("archive/events/")) == []


def test_a_video_re_run_during_the_archive_is_not_dropped(backend, monkeypatch):
    """A re-run writes the same event ids (video + track) as new rows with new reads: the
    month holds other rows than the part, so it must stay."""
    month = datetime(2024, 6, 1, tzinfo=UTC)
    key = "uploads/camT/20240601T000000Z.mp4"
    rows = [event_row(month + timedelta(days=d), f"OLD{d:02d}", "camT", key, n=d) for d in (1, 2)]
    backend.events.replace_video_events(key, rows)
    rerun = [dict(r, plate_text=f"NEW{i}", normalized_plate=f"NEW{i}") for i, r in enumerate(rows)]
    write_after_the_export(monkeypatch, lambda: backend.events.replace_video_events(key, rerun))
    with pytest.raises(ArchiveError, match=r"\(2 rows now, 2 archived, other rows\)"):
        archive_module.archive_month(backend.events, backend.store, month.date())
    assert [e["normalized_plate"] for e in backend.events.search("NEW1")] == ["NEW1"]
    assert list(backend.store.list("archive/events/")) == []


def test_postgres_export_digests_the_rows_it_writes(s3_backend, monkeypatch):
    """Postgres: the month digest and the exported rows come from one snapshot, so an event
    committed between the two reads is neither in the part nor in the digest: the final check
    sees a changed month and keeps it, rather than the export failing on its own reads."""
    month = datetime(2024, 8, 1, tzinfo=UTC)
    key = "uploads/camV/20240801T000000Z.mp4"
    s3_backend.events.replace_video_events(key, [event_row(month + timedelta(days=1), "AUG01", "camV", key)])
    late_key = "uploads/camV/20240820T000000Z.mp4"
    late = [event_row(month + timedelta(days=19), "LATE02", "camV", late_key)]
    real_digest, calls = archive_module.month_digest, []

    def digest_then_write(conn, m):
        digest = real_digest(conn, m)
        calls.append(m)
        if len(calls) == 1:  # the export's digest; the second call is the check, under the lock
            s3_backend.events.replace_video_events(late_key, late)
        return digest

    monkeypatch.setattr(archive_module, "month_digest", digest_then_write)
    with pytest.raises(ArchiveError, match=r"changed during the archive \(2 rows now, 1 archived\)"):
        archive_module.archive_month(s3_backend.events, s3_backend.store, month.date())
    assert list(s3_backend.store.list("archive/events/")) == []
    assert [e["normalized_plate"] for e in s3_backend.events.search("LATE02")] == ["LATE02"]


def test_an_event_written_during_the_final_check_waits_and_is_kept(backend):
    """The row check and the DELETE are one write transaction (SQLite too): a writer that
    arrives during the check waits for the drop instead of slipping in before it."""
    month = datetime(2024, 7, 1, tzinfo=UTC)
    key = "uploads/camU/20240701T000000Z.mp4"
    backend.events.replace_video_events(key, [event_row(month + timedelta(days=1), "JUL01", "camU", key)])
    late_key = "uploads/camU/20240720T000000Z.mp4"
    late = [event_row(month + timedelta(days=19), "LATE01", "camU", late_key)]
    other_writer = EventStore(backend.database_url)
    wrote, checks = threading.Event(), []
    writer = threading.Thread(
        target=lambda: (other_writer.replace_video_events(late_key, late), wrote.set()), daemon=True
    )

    def start_the_writer_during_the_check(conn, cursor, statement, *args):
        reads_the_month = statement.lstrip().upper().startswith("SELECT") and "captured_at <" in statement
        # The part is in the bucket: this read of the month is the final check.
        if reads_the_month and not checks and list(backend.store.list("archive/events/")):
            checks.append(statement)
            writer.start()
            wrote.wait(2)  # it commits here unless the check holds the write lock

    sa.event.listen(backend.events.engine, "before_cursor_execute", start_the_writer_during_the_check)
    try:
        done = archive_module.archive_month(backend.events, backend.store, month.date())
    finally:
        sa.event.remove(backend.events.engine, "before_cursor_execute", start_the_writer_during_the_check)
    writer.join(60)
    other_writer.dispose()
    assert len(checks) == 1 and done.rows == 1 and wrote.is_set()
    assert [e["normalized_plate"] for e in backend.events.search("LATE01")] == ["LATE01"]
