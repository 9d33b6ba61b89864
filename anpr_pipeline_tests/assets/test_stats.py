"""camera_daily_stats: hourly counts from a real events DB, the stats table, the plot, the schedule."""

import base64
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, build_schedule_context, materialize
from PIL import Image

from anpr_pipeline.assets.stats import camera_daily_stats, camera_daily_stats_schedule, plot_hourly
from anpr_pipeline.resources.event_store import EventStore, EventStoreResource
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline_tests.factories import event_row

DAY = datetime(2026, 11, 20, tzinfo=UTC)


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


def run_stats(url: str, bucket_dir):
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [camera_daily_stats],
            partition_key="2026-11-20",
            instance=instance,
            resources={
                "events_db": EventStoreResource(database_url=url),
                "bucket": ObjectStoreResource(kind="local", bucket_dir=str(bucket_dir)),
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
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT camera_id, hour, events FROM camera_hourly_stats ORDER BY 1, 2")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("cam-east", 7, 2),
        ("cam-east", 23, 1),
        ("cam-north", 7, 3),
        ("cam-north", 8, 1),
    ]


def test_camera_daily_stats_sqlite(tmp_path):
    check_stats(f"sqlite:///{tmp_path / 'events.db'}", tmp_path)


@pytest.mark.postgres
def test_camera_daily_stats_postgres(fresh_postgres_url, tmp_path):
    check_stats(fresh_postgres_url, tmp_path)


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
