"""Retention deletes exactly the expired set: a property test over random ages and clocks,
on both backends (local folder + SQLite, SeaweedFS S3 + Postgres with monthly partitions)."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from anpr_pipeline.ops.retention import (
    delete_events_before,
    expired_partitions,
    month_bounds,
    object_time,
    partition_key_of,
    plan_retention,
    run_retention,
    upload_partition_key,
)
from anpr_pipeline.resources.event_store import EventStore, partition_name
from anpr_pipeline.resources.object_store import ObjectInfo
from anpr_pipeline.settings import Settings
from anpr_pipeline.uploads import TIMESTAMP_FORMAT
from anpr_pipeline_tests.ops.conftest import event_row

# Random cases per backend (fixed seed). Fewer on S3 + Postgres: each case there is ~1 s of real I/O.
CASES = {"local+sqlite": 50, "s3+postgres": 20}


def _policy(rng: random.Random) -> Settings:
    pick = lambda: rng.choice([0, 1, 7, 30, 90, 400])  # noqa: E731 - 0 = keep forever
    return Settings(
        retention_videos_days=pick(),
        retention_crops_days=pick(),
        retention_events_days=pick(),
        retention_parquet_days=pick(),
    )


def _moment(rng: random.Random, now: datetime, days: int) -> datetime:
    """A time around the class cutoff, including the exact edge and one second past it."""
    cutoff = now - timedelta(days=days or 30)
    choice = rng.random()
    if choice < 0.1:
        return cutoff
    if choice < 0.2:
        return cutoff - timedelta(seconds=1)
    return now - timedelta(seconds=rng.randint(0, 3 * (days or 30) * 86400))


def _populate(rng, backend, now, policy) -> dict[str, datetime]:
    """Objects with name-contract times; returns key -> the time that should decide its age."""
    store = backend.store
    times: dict[str, datetime] = {}
    for i in range(5):
        t = _moment(rng, now, policy.retention_videos_days).replace(microsecond=0)
        ts = t.strftime(TIMESTAMP_FORMAT)
        prefix = "archive/uploads" if i == 4 else "uploads"
        times[f"{prefix}/cam{i}/{ts}.mp4"] = t
        if i % 2 == 0:
            times[f"{prefix}/cam{i}/{ts}.json"] = t  # sidecar ages with its video
    for i in range(5):
        t = _moment(rng, now, policy.retention_crops_days).replace(microsecond=0)
        times[f"crops/cam{i}/{t.date().isoformat()}/{t.strftime(TIMESTAMP_FORMAT)}/{i:06d}_0.jpg"] = t
    for i in range(5):
        t = _moment(rng, now, policy.retention_parquet_days)
        day = t.date()
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        times[f"parquet/events/date={day.isoformat()}/camera_id=cam{i}/x{i}.parquet"] = end - timedelta(
            microseconds=1
        )
    for i in range(3):
        month = _moment(rng, now, policy.retention_events_days).date().replace(day=1)
        key = f"archive/events/month={month:%Y-%m}/part-{i:016x}.parquet"
        times[key] = month_bounds(month)[1] - timedelta(microseconds=1)  # the month's newest row
    for key in times:
        store.put_bytes(key, b"x" * rng.randint(1, 50))
    # Names that break the contract: aged by LastModified (the real wall clock, now-ish).
    for key in ("uploads/cam9/not-a-time.mp4", "crops/cam9/junk.jpg", "archive/events/junk.parquet"):
        store.put_bytes(key, b"y")
        times[key] = store.info(key).last_modified
    store.put_bytes("exports/keep-me.zip", b"z")  # outside every retention class
    return times


def _class_days(key: str, policy) -> int:
    if key.startswith("archive/events/"):
        return policy.retention_events_days  # archived events keep the events' period
    klass = "videos" if "uploads/" in key else key.split("/")[0]
    return getattr(policy, f"retention_{klass}_days")


def _waiting(key: str, mtime: datetime, processed: set[str], cutoff: datetime) -> bool:
    """An upload not processed yet that arrived within the period: kept whatever its name says."""
    return key.startswith("uploads/") and upload_partition_key(key) not in processed and mtime >= cutoff


def _expected_deleted(times, mtimes, processed, now, policy) -> set[str]:
    out = set()
    for key, t in times.items():
        days = _class_days(key, policy)
        cutoff = now - timedelta(days=days)
        if days and t < cutoff and not _waiting(key, mtimes[key], processed, cutoff):
            out.add(key)
    return out


def _event_rows(rng, now, policy) -> list[dict]:
    days = policy.retention_events_days
    rows = []
    for n in range(12):
        t = _moment(rng, now, days) - timedelta(microseconds=rng.randint(0, 999_999) if n % 3 else 0)
        rows.append(event_row(t, video_key="uploads/camE/20250101T000000Z.mp4", n=n))
    return rows


def _reset(backend) -> None:
    backend.store.delete([o.key for o in backend.store.list("")])
    with backend.events.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM events"))


def test_retention_deletes_exactly_the_expired_set(backend):
    rng = random.Random(20240501)
    for case in range(CASES[backend.name]):
        now = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
        policy = _policy(rng)
        times = _populate(rng, backend, now, policy)
        mtimes = {o.key: o.last_modified for o in backend.store.list("")}
        # Some uploads have plate_events, some are still queued (video and sidecar alike).
        processed = {pk for key in times if (pk := upload_partition_key(key)) and rng.random() < 0.5}
        rows = _event_rows(rng, now, policy)
        backend.events.replace_video_events(rows[0]["video_key"], rows)
        backend.events.ensure_month_partitions()  # moves rows out of DEFAULT into monthly partitions
        expected = _expected_deleted(times, mtimes, processed, now, policy)
        cutoff = now - timedelta(days=policy.retention_events_days)
        expected_rows_kept = {
            r["event_id"] for r in rows if not policy.retention_events_days or r["captured_at"] >= cutoff
        }
        partitions_before = backend.events.partitions()
        context = f"{backend.name} case {case}: now={now} policy={policy}"

        plan, result = run_retention(now, backend.store, backend.events, policy, processed, dry_run=True)
        assert result is None
        assert plan.expired_keys() == expected, context
        assert plan.events.rows == len(rows) - len(expected_rows_kept), context
        assert len(list(backend.store.list(""))) == len(times) + 1, f"dry run deleted something: {context}"

        plan, result = run_retention(now, backend.store, backend.events, policy, processed)
        remaining = {o.key for o in backend.store.list("")}
        assert remaining == (set(times) - expected) | {"exports/keep-me.zip"}, context
        assert sum(result.deleted.values()) == len(expected), context
        kept_ids = {r["event_id"] for r in backend.events.events_for_video(rows[0]["video_key"])}
        assert kept_ids == expected_rows_kept, context
        assert result.events_deleted == len(rows) - len(expected_rows_kept), context
        assert set(result.video_partitions) == {pk for key in expected if (pk := partition_key_of(key))}, (
            context
        )
        if backend.events.dialect == "postgresql" and policy.retention_events_days:
            # Whole expired months went as partitions, the rest by row deletes.
            assert set(result.partitions_dropped) == set(expired_partitions(partitions_before, cutoff)), (
                context
            )
            assert not set(result.partitions_dropped) & set(backend.events.partitions()), context
        _reset(backend)


def test_partition_drop_only_for_fully_expired_months():
    parts = ["events_default", "events_y2024m01", "events_y2024m02", "events_y2024m03"]
    cutoff = datetime(2024, 3, 1, tzinfo=UTC)
    assert expired_partitions(parts, cutoff) == ["events_y2024m01", "events_y2024m02"]
    assert expired_partitions(parts, cutoff - timedelta(microseconds=1)) == ["events_y2024m01"]


def test_ages_come_from_the_name_contract_and_fall_back_to_mtime():
    mtime = datetime(2030, 1, 1, tzinfo=UTC)
    video = ObjectInfo("uploads/cam1/20240102T030405Z.mp4", 1, mtime)
    assert object_time(video, "videos") == (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "name")
    crop = ObjectInfo("crops/cam1/2024-01-02/20240102T030405Z/000001_0.jpg", 1, mtime)
    assert object_time(crop, "crops")[0] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    parquet = ObjectInfo("parquet/events/date=2024-01-02/camera_id=cam1/x.parquet", 1, mtime)
    assert object_time(parquet, "parquet")[0] == datetime(2024, 1, 3, tzinfo=UTC) - timedelta(microseconds=1)
    assert object_time(ObjectInfo("uploads/cam1/bad.mp4", 1, mtime), "videos") == (mtime, "mtime")
    plan = plan_retention(
        datetime(2024, 2, 15, tzinfo=UTC),
        [video, crop, parquet],
        Settings(retention_videos_days=30, retention_crops_days=0, retention_parquet_days=43),
        processed={"cam1/20240102T030405Z"},
    )
    assert plan.expired_keys() == {video.key, parquet.key}  # crops: 0 = keep forever
    assert plan.video_partitions == ["cam1/20240102T030405Z"]


def test_archived_event_months_expire_with_the_events_period():
    mtime = datetime(2030, 1, 1, tzinfo=UTC)
    jan = ObjectInfo("archive/events/month=2024-01/part-0123456789abcdef.parquet", 10, mtime)
    feb = ObjectInfo("archive/events/month=2024-02/part-0123456789abcdef.parquet", 20, mtime)
    # Aged by the month's last instant (like a Parquet day): it goes when all its rows have.
    assert object_time(feb, "events_archive") == (
        datetime(2024, 3, 1, tzinfo=UTC) - timedelta(microseconds=1),
        "name",
    )
    junk = ObjectInfo("archive/events/month=2024-13/x.parquet", 5, mtime)
    assert object_time(junk, "events_archive") == (mtime, "mtime")
    # 2024-03-01 + 365 days = 2025-03-01: February's last row is just older than the cutoff.
    policy = Settings(retention_events_days=365, retention_parquet_days=0)
    plan = plan_retention(datetime(2025, 3, 1, tzinfo=UTC), [jan, feb], policy, processed=set())
    assert plan.expired_keys() == {jan.key, feb.key}
    summary = plan.summary()
    assert summary["events_archive_days"] == 365 and summary["events_archive_bytes"] == 30
    plan = plan_retention(
        datetime(2025, 3, 1, tzinfo=UTC) - timedelta(microseconds=1), [jan, feb], policy, processed=set()
    )
    assert plan.expired_keys() == {jan.key}
    assert (
        plan_retention(
            datetime(2030, 1, 1, tzinfo=UTC), [jan, feb], Settings(retention_events_days=0), processed=set()
        ).expired_keys()
        == set()
    )  # 0 keeps archived events forever too


def test_late_uploads_wait_for_processing_unless_abandoned():
    now = datetime(2024, 6, 1, tzinfo=UTC)
    recorded = "20240401T000000Z"  # two months ago: past the 30-day period by name
    fresh, stale = now - timedelta(days=2), now - timedelta(days=31)  # LastModified
    queued = ObjectInfo(f"uploads/camL/{recorded}.mp4", 1, fresh)  # back from an outage
    queued_sidecar = ObjectInfo(f"uploads/camL/{recorded}.json", 1, fresh)
    done = ObjectInfo(f"uploads/camP/{recorded}.mp4", 1, fresh)
    abandoned = ObjectInfo(f"uploads/camX/{recorded}.mp4", 1, stale)  # never processed, long gone
    archived = ObjectInfo(f"archive/uploads/camA/{recorded}.mp4", 1, fresh)  # archive copy: new mtime
    plan = plan_retention(
        now,
        [queued, queued_sidecar, done, abandoned, archived],
        Settings(retention_videos_days=30),
        processed={f"camP/{recorded}"},
    )
    assert plan.expired_keys() == {done.key, abandoned.key, archived.key}
    assert plan.video_partitions == [f"camA/{recorded}", f"camP/{recorded}", f"camX/{recorded}"]
    assert plan.classes["videos"].unprocessed_kept == 2
    assert plan.summary()["videos_unprocessed_kept"] == 2
    # Once processed, the same upload goes.
    plan = plan_retention(
        now, [queued, queued_sidecar], Settings(retention_videos_days=30), processed={f"camL/{recorded}"}
    )
    assert plan.expired_keys() == {queued.key, queued_sidecar.key}


def test_sweep_lists_partitions_only_under_the_schema_lock(fresh_postgres_url):
    """An archive run holds the schema lock and drops a month the sweep would also drop: the
    sweep must list partitions after it gets the lock, not query the dropped table."""
    es = EventStore(fresh_postgres_url)
    es.init_schema()
    month = datetime(2024, 3, 1, tzinfo=UTC)
    rows = [event_row(month + timedelta(days=4), "LOCK1", video_key="uploads/camL/20240305T000000Z.mp4")]
    es.replace_video_events(rows[0]["video_key"], rows)
    es.ensure_month_partitions()
    name = partition_name(month.date())
    assert name in es.partitions()
    waiting = sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    try:
        with es.engine.connect() as archive, es.engine.connect() as monitor, ThreadPoolExecutor(1) as pool:
            archive.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('anpr_events_schema'))"))
            sweep = pool.submit(delete_events_before, es, datetime(2024, 5, 1, tzinfo=UTC))
            deadline = time.monotonic() + 30
            while not monitor.execute(waiting).scalar_one():
                assert time.monotonic() < deadline and not sweep.done(), "the sweep never waited for the lock"
                time.sleep(0.05)
            # What archive's _remove_month does with the month, in the same transaction.
            archive.execute(sa.text(f"ALTER TABLE events DETACH PARTITION {name}"))
            archive.execute(sa.text(f"DROP TABLE {name}"))
            archive.commit()
            assert sweep.result(timeout=30) == (0, [])
        assert name not in es.partitions()
    finally:
        es.dispose()
