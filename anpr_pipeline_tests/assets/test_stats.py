"""camera_daily_stats: hourly counts from a real events DB, the stats table, the plot, the schedule."""

import base64
import io
import re
import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    SensorResult,
    asset,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.utils import make_new_run_id
from PIL import Image

from anpr_pipeline.assets import stats as stats_module
from anpr_pipeline.assets.events import affected_days, plate_events
from anpr_pipeline.assets.stats import (
    camera_daily_stats,
    camera_daily_stats_schedule,
    plot_hourly,
    stale_daily_stats_sensor,
    stale_days,
)
from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.event_store import EventStore, EventStoreResource
from anpr_pipeline.resources.models import ModelsResource
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline_tests.factories import event_row

DAY = datetime(2026, 11, 20, tzinfo=UTC)
# Stats of days this old are always recounted: the tests' fixed DAY must not age into the
# archive horizon (the default 180 days) as the calendar moves on.
RECOUNT_ALWAYS = OpsSettings(archive_events_after_days=0, retention_events_days=0)


def seed(url: str) -> None:
    store = EventStore(url)
    store.init_schema()
    plan = {  # (camera, hour) -> plates seen in that hour
        ("cam-north", 7): ["AB1", "AB2", "AB1"],
        ("cam-north", 8): ["CD3"],
        ("cam-east", 7): ["EF4", "EF5"],
        ("cam-east", 23): ["GH6"],
    }
    for (camera, hour), plates in plan.items():
        video = f"uploads/{camera}/{DAY:%Y%m%d}T{hour:02d}0000Z.mp4"
        rows = [
            event_row(DAY + timedelta(hours=hour, minutes=n), plate=p, camera=camera, video_key=video, n=n)
            for n, p in enumerate(plates)
        ]
        store.replace_video_events(video, rows)
    # Neighbouring days must not leak in.
    for offset in (timedelta(seconds=-1), timedelta(days=1)):
        video = f"uploads/cam-north/{DAY + offset:%Y%m%dT%H%M%SZ}.mp4"
        store.replace_video_events(
            video, [event_row(DAY + offset, plate="ZZ9", camera="cam-north", video_key=video, n=0)]
        )
    store.dispose()


# (camera, hour, events) rows of camera_hourly_stats for DAY after seed().
SEEDED_STATS = [("cam-east", 7, 2), ("cam-east", 23, 1), ("cam-north", 7, 3), ("cam-north", 8, 1)]


def stored_stats(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT camera_id, hour, events FROM camera_hourly_stats ORDER BY 1, 2"))
        return [tuple(r) for r in rows]


def run_stats(url: str, bucket_dir, ops_settings: OpsSettings = RECOUNT_ALWAYS):
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [camera_daily_stats],
            partition_key="2026-11-20",
            instance=instance,
            resources={
                "events_db": EventStoreResource(database_url=url),
                "bucket": ObjectStoreResource(kind="local", bucket_dir=str(bucket_dir)),
                "ops_settings": ops_settings,
            },
        )
        assert result.success
        (mat,) = result.asset_materializations_for_node("camera_daily_stats")
        return result.output_for_node("camera_daily_stats"), mat.metadata


def check_stats(url: str, tmp_path) -> None:
    seed(url)
    df, metadata = run_stats(url, tmp_path / "bucket")
    got = {(r.camera_id, r.hour): (r.events, r.distinct_plates) for r in df.itertuples()}
    assert got == {
        ("cam-east", 7): (2, 2),
        ("cam-east", 23): (1, 1),
        ("cam-north", 7): (3, 2),
        ("cam-north", 8): (1, 1),
    }
    assert metadata["events"].value == 7 and metadata["cameras"].value == 2
    assert metadata["busiest_hour"].value == "cam-north 07:00 (3)"
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)\)", metadata["plot"].value).group(1))
    assert Image.open(io.BytesIO(png)).size == (900, 380)
    assert (tmp_path / "bucket" / "stats" / "camera_daily" / "2026-11-20.png").read_bytes() == png
    # Re-running replaces the day's rows instead of adding to them.
    run_stats(url, tmp_path / "bucket")
    engine = sa.create_engine(url)
    assert stored_stats(engine) == SEEDED_STATS
    engine.dispose()


def test_camera_daily_stats_sqlite(tmp_path):
    check_stats(f"sqlite:///{tmp_path / 'events.db'}", tmp_path)


@pytest.mark.postgres
def test_camera_daily_stats_postgres(fresh_postgres_url, tmp_path):
    check_stats(fresh_postgres_url, tmp_path)


def test_counts_of_a_day_past_the_archive_horizon_outlive_its_events(tmp_path):
    # Once a month is archived its events leave the table; a backfill of one of its days must
    # keep the stored counts, not recount the empty table over them.
    url = f"sqlite:///{tmp_path / 'events.db'}"
    seed(url)
    archived_after_a_day = OpsSettings(archive_events_after_days=1)  # DAY is always older
    run_stats(url, tmp_path / "bucket", archived_after_a_day)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the archive job moved the day's events out
        conn.execute(sa.text("DELETE FROM events"))
    df, metadata = run_stats(url, tmp_path / "bucket", archived_after_a_day)
    assert metadata["kept_stored_counts"].value is True and metadata["events"].value == 7
    assert sorted(zip(df.camera_id, df.hour, df.events, strict=True)) == SEEDED_STATS
    assert stored_stats(engine) == SEEDED_STATS
    # A deployment that never archives nor expires events recounts: the table is the truth.
    df, metadata = run_stats(url, tmp_path / "bucket", RECOUNT_ALWAYS)
    assert metadata["kept_stored_counts"].value is False and stored_stats(engine) == []
    engine.dispose()


def test_the_day_the_retention_cutoff_falls_in_keeps_its_counts(tmp_path):
    """Retention deletes rows by the minute: the day its cut-off falls in has lost part of its
    events, and a recount would replace its full counts with what is left."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    seed(url)
    store = EventStore(url)
    df, kept = stats_module.refresh_day(store.engine, DAY)
    assert not kept and int(df["events"].sum()) == 7
    with store.engine.begin() as conn:  # the sweep's cut-off at 07:30 on DAY
        conn.execute(sa.text("DELETE FROM events WHERE captured_at < :t"), {"t": "2026-11-20 07:30:00"})
    df, kept = stats_module.refresh_day(store.engine, DAY, keep_before=DAY + timedelta(hours=7, minutes=30))
    assert kept and int(df["events"].sum()) == 7 and stored_stats(store.engine) == SEEDED_STATS
    store.dispose()


def test_per_camera_distinct_plates_count_a_car_seen_in_two_hours_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    store = EventStore(url)
    store.init_schema()
    for hour in (7, 18):  # one commuter, morning and evening
        video = f"uploads/cam1/20261120T{hour:02d}0000Z.mp4"
        row = event_row(
            DAY + timedelta(hours=hour, minutes=5), plate="AB123CD", camera="cam1", video_key=video
        )
        store.replace_video_events(video, [row])
    df, metadata = run_stats(url, tmp_path / "bucket")
    assert list(df["distinct_plates"]) == [1, 1]  # per hour
    assert "| cam1        |        2 |                 1 |" in metadata["per_camera"].value
    store.dispose()


def test_recount_horizon_is_the_earlier_of_archive_and_retention():
    now = datetime(2027, 1, 1, tzinfo=UTC)
    assert stats_module.recount_horizon(now, 180, 365) == now - timedelta(days=180)
    assert stats_module.recount_horizon(now, 0, 30) == now - timedelta(days=30)  # 0 = off
    assert stats_module.recount_horizon(now, 0, 0) is None


def test_plot_handles_an_empty_day_and_many_cameras():
    import pandas as pd

    empty = pd.DataFrame(columns=["day", "camera_id", "hour", "events", "distinct_plates", "mean_confidence"])
    assert Image.open(io.BytesIO(plot_hourly(empty, "empty"))).format == "PNG"
    many = pd.DataFrame(
        [{"camera_id": f"cam-{c}", "hour": h, "events": c + h} for c in range(12) for h in range(24)]
    )
    assert Image.open(io.BytesIO(plot_hourly(many, "many"))).size == (900, 380)


def test_schedule_targets_the_day_that_just_ended():
    from anpr_pipeline.definitions import defs

    schedule = defs.get_schedule_def(camera_daily_stats_schedule.name)
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 1, 15, tzinfo=UTC))
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-20"
    assert schedule.cron_schedule == "15 1 * * *" and schedule.job_name == "camera_daily_stats_job"


# -- late videos: stale_daily_stats_sensor -------------------------------------------------------


def late_video_assets(camera: str, started: datetime, plates: list[str]) -> list[AssetsDefinition]:
    """The real plate_events, fed by upstream assets that hand it one video's probe and reads
    (each plate read on 4 consecutive frames), as the decode/detect/read steps would."""
    ts = f"{started:%Y%m%dT%H%M%SZ}"
    video_info = {
        "video_key": f"uploads/{camera}/{ts}.mp4",
        "camera_id": camera,
        "timestamp": ts,
        "started_at": started.isoformat(),
        "duration_s": 60.0,
        "fps": 25.0,
        "width": 1280,
        "height": 720,
        "region": None,
    }
    reads = pd.DataFrame(
        [
            {
                "sample_index": 50 * n + f,
                "pts_s": 10.0 * n + 0.2 * f,
                "x": 500 + 4 * f,
                "y": 300,
                "w": 160,
                "h": 50,
                "plate_text": plate,
                "normalized_plate": plate,
                "read_confidence": 0.9,
                "char_confidences": [0.9] * len(plate),
                "region": None,
                "score": 0.9,
                "crop_key": f"crops/{camera}/{started.date()}/{ts}/{50 * n + f:06d}_0.jpg",
                "detector_version": "test-det",
                "reader_version": "test-read",
            }
            for n, plate in enumerate(plates)
            for f in range(4)
        ]
    )

    @asset(name="video", partitions_def=videos_partitions)
    def video_probe() -> dict:
        return video_info

    @asset(name="plate_reads", partitions_def=videos_partitions)
    def reads_of_video() -> pd.DataFrame:
        return reads

    return [video_probe, reads_of_video, plate_events]


def stats_resources(url: str, bucket_dir) -> dict:
    return {
        "events_db": EventStoreResource(database_url=url),
        "bucket": ObjectStoreResource(kind="local", bucket_dir=str(bucket_dir)),
        "models": ModelsResource(),
        "pipeline": PipelineConfig(),
        "ops_settings": RECOUNT_ALWAYS,
    }


def materialize_stats(instance: DagsterInstance, resources: dict, day: str) -> int:
    """Materialise one day's stats; returns the events it counted."""
    result = materialize([camera_daily_stats], partition_key=day, instance=instance, resources=resources)
    assert result.success
    (mat,) = result.asset_materializations_for_node("camera_daily_stats")
    return mat.metadata["events"].value


def process_video(instance: DagsterInstance, resources: dict, camera: str, started: datetime, plates):
    partition = f"{camera}/{started:%Y%m%dT%H%M%SZ}"
    instance.add_dynamic_partitions("videos", [partition])
    assets = late_video_assets(camera, started, plates)
    result = materialize(assets, partition_key=partition, instance=instance, resources=resources)
    assert result.success


def tick(instance: DagsterInstance, cursor: str | None) -> SensorResult:
    return stale_daily_stats_sensor(build_sensor_context(instance=instance, cursor=cursor))


def test_a_late_video_recomputes_only_its_days_stats(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    seed(url)
    resources = stats_resources(url, tmp_path / "bucket")
    with instance_for_test() as instance:
        # The schedule has computed the 19th and the 20th; the 18th was never computed.
        assert materialize_stats(instance, resources, "2026-11-20") == 7
        assert materialize_stats(instance, resources, "2026-11-19") == 1  # seed's 23:59:59 event
        first = tick(instance, None)
        assert not first.run_requests and first.skip_reason

        # Days later, cam-late uploads a video of the 20th, and one of the 18th arrives too.
        process_video(instance, resources, "cam-late", DAY + timedelta(hours=14), ["LATE1", "LATE2"])
        process_video(instance, resources, "cam-late", DAY - timedelta(days=2, hours=-9), ["OLD1"])
        record = instance.get_latest_materialization_event(AssetKey("plate_events"))
        assert record.asset_materialization.metadata["affected_days"].value == ["2026-11-18"]

        second = tick(instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["2026-11-20"]
        assert stale_daily_stats_sensor.job_name == "camera_daily_stats_job"
        # Re-evaluating the same tick asks with the same run key: the daemon runs it once.
        assert [r.run_key for r in tick(instance, first.cursor).run_requests] == [
            second.run_requests[0].run_key
        ]
        # Running the request brings the two late events into the day's stats ...
        assert materialize_stats(instance, resources, second.run_requests[0].partition_key) == 9
        # ... and nothing new means nothing asked again.
        third = tick(instance, second.cursor)
        assert not third.run_requests and third.cursor == second.cursor

        # A re-run of the video after the recompute changes the 20th again: asked again.
        process_video(instance, resources, "cam-late", DAY + timedelta(hours=14), ["LATE1"])
        fourth = tick(instance, third.cursor)
        assert [r.partition_key for r in fourth.run_requests] == ["2026-11-20"]
        assert fourth.run_requests[0].run_key != second.run_requests[0].run_key


def test_a_video_written_while_its_day_was_being_counted_is_counted_later(tmp_path, monkeypatch):
    """The late video writes its rows after the stats' count and records its materialization
    before the stats record theirs: the stats missed it, and the sensor must still ask."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    seed(url)
    resources = stats_resources(url, tmp_path / "bucket")
    with instance_for_test() as instance:
        first = tick(instance, None)
        real_refresh = stats_module.refresh_day

        def count_then_a_late_video_finishes(*args, **kwargs):
            counted = real_refresh(*args, **kwargs)
            process_video(instance, resources, "cam-late", DAY + timedelta(hours=14), ["LATE1", "LATE2"])
            return counted

        monkeypatch.setattr(stats_module, "refresh_day", count_then_a_late_video_finishes)
        assert materialize_stats(instance, resources, "2026-11-20") == 7  # the 2 late events missed
        monkeypatch.setattr(stats_module, "refresh_day", real_refresh)
        second = tick(instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["2026-11-20"]
        assert materialize_stats(instance, resources, "2026-11-20") == 9
        assert not tick(instance, second.cursor).run_requests


def test_a_change_during_a_days_first_stats_run_is_asked_for(tmp_path):
    """The day's first stats run counted before a late video wrote its rows, and the sensor
    ticks before that run records its materialization: the day has no stats yet, and the
    change must not be let go."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    seed(url)
    resources = stats_resources(url, tmp_path / "bucket")
    with instance_for_test() as instance:
        first = tick(instance, None)
        stats_run = instance.add_run(
            DagsterRun(
                job_name="camera_daily_stats_job",
                run_id=make_new_run_id(),
                tags={"dagster/partition": "2026-11-20"},
                status=DagsterRunStatus.STARTED,
            )
        )
        process_video(instance, resources, "cam-late", DAY + timedelta(hours=14), ["LATE1"])
        second = tick(instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["2026-11-20"]
        # Without a run under way a day never computed is still left to the schedule.
        instance.report_run_canceled(stats_run)
        process_video(instance, resources, "cam-late", DAY + timedelta(hours=15), ["LATE2"])
        assert not tick(instance, second.cursor).run_requests


def test_stale_days_skips_today_and_days_without_stats(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    seed(url)
    resources = stats_resources(url, tmp_path / "bucket")
    with instance_for_test() as instance:
        process_video(instance, resources, "cam-late", DAY + timedelta(hours=14), ["LATE1"])
        counted = stats_module.newest_plate_events_id(instance)
        materialize_stats(instance, resources, "2026-11-20")
        later = 10**9  # a change newer than any stats materialization
        changes = {"2026-11-20": later, "2026-11-21": later, "2024-12-31": later}
        assert stale_days(instance, changes, today=datetime(2026, 12, 1).date()) == {"2026-11-20": later}
        # On the 20th itself the day is not complete: never asked, even with stats present.
        assert stale_days(instance, changes, today=DAY.date()) == {}
        # A change older than the stats is already counted in them.
        assert stale_days(instance, {"2026-11-20": counted}, today=datetime(2026, 12, 1).date()) == {}


def test_affected_days_cover_the_span_and_the_days_an_earlier_run_wrote():
    # A video across midnight, re-run after a sidecar moved it from the 17th.
    span = (datetime(2026, 11, 20, 23, 59, 50, tzinfo=UTC), datetime(2026, 11, 21, 0, 0, 20, tzinfo=UTC))
    previous = ["parquet/events/date=2026-11-17/camera_id=0042/20261117T100000Z.parquet"]
    assert affected_days(span, previous) == ["2026-11-17", "2026-11-20", "2026-11-21"]
    assert affected_days(span, []) == ["2026-11-20", "2026-11-21"]


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_overlapping_runs_of_one_day_wait_for_each_other(db, tmp_path, request, monkeypatch):
    """The schedule's run and the stale-stats sensor's run of the same day at once: the second
    waits for the first's transaction instead of failing on its primary key."""
    url = (
        f"sqlite:///{tmp_path / 'events.db'}"
        if db == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    seed(url)
    store = EventStore(url)
    stats_module.refresh_day(store.engine, DAY)  # a day computed before, as the sensor finds it
    first_inside, release = threading.Event(), threading.Event()
    count = stats_module.hourly_counts

    def first_run_pauses_after_its_delete(conn, day):
        if not first_inside.is_set():
            first_inside.set()
            assert release.wait(30)
        return count(conn, day)

    monkeypatch.setattr(stats_module, "hourly_counts", first_run_pauses_after_its_delete)
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            stats_module.refresh_day(store.engine, DAY)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    first = threading.Thread(target=refresh)
    first.start()
    assert first_inside.wait(30)
    second = threading.Thread(target=refresh)
    second.start()
    second.join(1.0)
    assert second.is_alive()  # waiting for the first run's transaction
    release.set()
    first.join(60)
    second.join(60)
    assert errors == []
    assert stored_stats(store.engine) == SEEDED_STATS
    store.dispose()
