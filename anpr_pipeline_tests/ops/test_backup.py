"""backup + restore_test on both backends: pg_dump -Fc / SQLite backup API to the bucket,
retention of N dumps, restore into a scratch database, and loud failure on a bad backup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from anpr_pipeline.ops.backup import (
    Manifest,
    RestoreTestError,
    backup,
    list_backups,
    restore_test,
)
from anpr_pipeline.ops.jobs import backup_job, restore_test_job
from anpr_pipeline_tests.ops.conftest import event_row
from anpr_pipeline_tests.ops.test_jobs import resources_for


def _fill(backend, n: int = 40) -> None:
    now = datetime.now(UTC)
    rows = [
        event_row(
            now - timedelta(hours=i), plate=f"AB{i:03d}CD", video_key="uploads/cam1/20250101T000000Z.mp4", n=i
        )
        for i in range(n)
    ]
    backend.events.replace_video_events(rows[0]["video_key"], rows)


def test_backup_then_restore_test_jobs_pass_and_keep_n(backend):
    _fill(backend)
    resources = resources_for(backend, backups_keep=2)
    for _ in range(3):
        result = backup_job.execute_in_process(resources=resources)
        assert result.success
        backend.events.replace_video_events("uploads/cam2/20250102T000000Z.mp4", [])  # writes between backups
    manifest = result.output_for_node("backup_op")
    assert manifest["rows"] == 40 and manifest["bytes"] > 0
    # Three backups within a second share a key; write distinct ones to see pruning.
    for i in range(3):
        backup(backend.events, backend.store, keep=2, now=datetime(2025, 1, 1 + i, tzinfo=UTC))
    kept = list_backups(backend.store)
    assert len(kept) == 2 and kept[-1] > kept[0]
    assert not any(o.key.startswith("backups/events-20250101") for o in backend.store.list("backups/"))

    # Live rows change after the backup: the test still passes (it checks the dump, and live rows present).
    backend.events.replace_video_events(
        "uploads/cam3/20250103T000000Z.mp4",
        [event_row(datetime.now(UTC), plate="NEW1", video_key="uploads/cam3/20250103T000000Z.mp4")],
    )
    result = restore_test_job.execute_in_process(resources=resources)
    assert result.success
    report = result.output_for_node("restore_test_op")
    assert report["rows_restored"] == report["rows_backed_up"] == 40
    assert report["sample_rows"] == 40 and report["live_rows_missing"] == 0 and report["sha256_ok"]
    if backend.events.dialect == "postgresql":  # the scratch database was dropped
        with backend.events.engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname LIKE 'anpr_restore_%'")
            )
            assert left.scalar_one() == 0


def test_restore_test_passes_after_a_video_is_re_run(backend):
    # A re-run keeps the event ids and writes new reads: the live rows differ from the
    # backup's for a good reason, and the test must not page anyone for it.
    _fill(backend, 10)
    backup(backend.events, backend.store, keep=3, now=datetime.now(UTC) - timedelta(seconds=1))
    video = "uploads/cam1/20250101T000000Z.mp4"
    now = datetime.now(UTC)
    reread = [
        event_row(now - timedelta(hours=i), plate=f"AB{i:03d}CB", video_key=video, n=i) for i in range(10)
    ]
    backend.events.replace_video_events(video, reread)
    report = restore_test(backend.events, backend.store)
    assert report.live_rows_rewritten == 10 and report.live_rows_compared == 10


def test_restore_test_fails_loudly_on_a_bad_backup(backend):
    _fill(backend, 10)
    manifest, _ = backup(backend.events, backend.store, keep=3)
    # A live row edited after the backup: the sample no longer matches the live table.
    with backend.events.engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET plate_text = 'TAMPERED' WHERE frame_index = 3"))
    with pytest.raises(RestoreTestError, match="differ from the live table"):
        restore_test(backend.events, backend.store)
    # A manifest that disagrees with the dump (e.g. a truncated dump): counts differ.
    bad = Manifest.from_json(backend.store.get_bytes(manifest.key + ".json"))
    bad.rows += 1
    backend.store.put_bytes(manifest.key + ".json", bad.to_json())
    result = restore_test_job.execute_in_process(resources=resources_for(backend), raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("restore_test_op")
    assert "restored 10 rows, the backup held 11" in failure.user_failure_data.description
