"""Retention deletes exactly the expired set: a property test over random ages and clocks,
on both backends (local folder + SQLite, SeaweedFS S3 + Postgres with monthly partitions)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from anpr_pipeline.ops.retention import (
    expired_partitions,
    object_time,
    partition_key_of,
    plan_retention,
    run_retention,
)
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
    for key in times:
        store.put_bytes(key, b"x" * rng.randint(1, 50))
    # Names that break the contract: aged by LastModified (the real wall clock, now-ish).
    for key in ("uploads/cam9/not-a-time.mp4", "crops/cam9/junk.jpg"):
        store.put_bytes(key, b"y")
        times[key] = store.info(key).last_modified
    store.put_bytes("exports/keep-me.zip", b"z")  # outside every retention class
    return times


def _expected_deleted(times, now, policy) -> set[str]:
    out = set()
    for key, t in times.items():
        klass = "videos" if "uploads/" in key else key.split("/")[0]
        days = getattr(policy, f"retention_{klass}_days")
        if days and t < now - timedelta(days=days):
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
        rows = _event_rows(rng, now, policy)
        backend.events.replace_video_events(rows[0]["video_key"], rows)
        backend.events.ensure_month_partitions()  # moves rows out of DEFAULT into monthly partitions
        expected = _expected_deleted(times, now, policy)
        cutoff = now - timedelta(days=policy.retention_events_days)
        expected_rows_kept = {
            r["event_id"] for r in rows if not policy.retention_events_days or r["captured_at"] >= cutoff
        }
        partitions_before = backend.events.partitions()
        context = f"{backend.name} case {case}: now={now} policy={policy}"

        plan, result = run_retention(now, backend.store, backend.events, policy, dry_run=True)
        assert result is None
        assert plan.expired_keys() == expected, context
        assert plan.events.rows == len(rows) - len(expected_rows_kept), context
        assert len(list(backend.store.list(""))) == len(times) + 1, f"dry run deleted something: {context}"

        plan, result = run_retention(now, backend.store, backend.events, policy)
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
    )
    assert plan.expired_keys() == {video.key, parquet.key}  # crops: 0 = keep forever
    assert plan.video_partitions == ["cam1/20240102T030405Z"]
