"""``camera_daily_stats``: events per camera per hour for one UTC day, as a table and a plot.

Daily-partitioned (not per video): it reads the events database, so it is correct however
the day's videos were processed, re-runs included. The counts are written to the
``camera_hourly_stats`` table in the events DB (replaced per day, one transaction) for SQL
users and dashboards; the UI gets a per-camera summary and a PNG plot of plates per hour.
The plot is drawn with PIL (already a dependency) rather than adding matplotlib.

The schedule computes each day once, the night after. Events that reach the database later
(a camera uploading a day late, a backfill, a re-run) would leave that day's stats stale:
``stale_daily_stats_sensor`` watches ``plate_events`` materializations and recomputes the
days they touched whose stats were materialised before them.

The counts outlive the events: once a month is archived (``ANPR_ARCHIVE_EVENTS_AFTER_DAYS``)
or its events expire (``ANPR_RETENTION_EVENTS_DAYS``), the table no longer holds them, so a
day that old which already has counts keeps them when re-materialised (a backfill) rather
than being recounted from what is left.
"""

import base64
import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EventLogRecord,
    MetadataValue,
    Output,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
    sensor,
)
from PIL import Image, ImageDraw, ImageFont

from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline.resources.event_store import EventStoreResource, camera_hourly_stats, events
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline.resources.parquet_dataset import day_of_key
from anpr_pipeline.uploads import UploadNameError, parse_partition_key

daily_partitions = DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")
PLATE_EVENTS = AssetKey("plate_events")
PARTITION_TAG = "dagster/partition"
# Metadata of a stats materialization: the newest plate_events materialization (storage id)
# recorded before the day was counted. Every video it covers had written its rows by then.
COUNTED_THROUGH = "counted_through_storage_id"

STATS_COLUMNS = ["day", "camera_id", "hour", "events", "distinct_plates", "mean_confidence"]


def _hour_expr(dialect: str):
    if dialect == "postgresql":
        return sa.cast(sa.extract("hour", sa.func.timezone("UTC", events.c.captured_at)), sa.Integer)
    # SQLite stores UTC wall time as text (see UTCDateTime).
    return sa.cast(sa.func.strftime("%H", events.c.captured_at), sa.Integer)


def _day_start(day: datetime) -> datetime:
    return day.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=UTC)


def _on_day(day: datetime) -> sa.ColumnElement[bool]:
    """Events captured on the UTC day of ``day``."""
    start = _day_start(day)
    return sa.and_(events.c.captured_at >= start, events.c.captured_at < start + timedelta(days=1))


def hourly_counts(conn: sa.Connection, day: datetime) -> pd.DataFrame:
    """Events, distinct plates and mean confidence per (camera, hour) for one UTC day."""
    hour = _hour_expr(conn.dialect.name).label("hour")
    stmt = (
        sa.select(
            events.c.camera_id,
            hour,
            sa.func.count().label("events"),
            sa.func.count(sa.distinct(events.c.normalized_plate)).label("distinct_plates"),
            sa.func.avg(events.c.confidence).label("mean_confidence"),
        )
        .where(_on_day(day))
        .group_by(events.c.camera_id, hour)
        .order_by(events.c.camera_id, hour)
    )
    df = pd.DataFrame(
        [dict(r._mapping) for r in conn.execute(stmt)],
        columns=["camera_id", "hour", "events", "distinct_plates", "mean_confidence"],
    )
    df.insert(0, "day", _day_start(day).date())
    return df.astype({"hour": int, "events": int, "distinct_plates": int, "mean_confidence": float})[
        STATS_COLUMNS
    ]


def distinct_plates_by_camera(engine: sa.Engine, day: datetime) -> pd.DataFrame:
    """Distinct plates per camera over the whole UTC day: not the sum of the hours' counts,
    which counts a car seen in two hours twice."""
    stmt = (
        sa.select(events.c.camera_id, sa.func.count(sa.distinct(events.c.normalized_plate)).label("plates"))
        .where(_on_day(day))
        .group_by(events.c.camera_id)
    )
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    return pd.DataFrame(rows, columns=["camera_id", "plates"]).astype({"plates": int})


def per_camera_summary(df: pd.DataFrame, distinct: pd.DataFrame | None) -> pd.DataFrame:
    """Events per camera for the day, busiest first, with its distinct plates when known
    (``distinct`` is None for counts kept past the horizon: their events are gone)."""
    summary = df.groupby("camera_id")[["events"]].sum().reset_index()
    if distinct is not None:
        summary = summary.merge(
            distinct.rename(columns={"plates": "distinct_plates"}), on="camera_id", how="left"
        ).fillna({"distinct_plates": 0})
        summary["distinct_plates"] = summary["distinct_plates"].astype(int)
    return summary.sort_values(["events", "camera_id"], ascending=[False, True]).reset_index(drop=True)


def newest_plate_events_id(instance: DagsterInstance) -> int:
    """Storage id of the newest plate_events materialization (0: none yet)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=PLATE_EVENTS), limit=1, ascending=False
    ).records
    return records[0].storage_id if records else 0


def recount_horizon(
    now: datetime, archive_events_after_days: int, retention_events_days: int
) -> datetime | None:
    """Days that began before this may have events archived or deleted (None: never)."""
    ages = [days for days in (archive_events_after_days, retention_events_days) if days > 0]
    return now - timedelta(days=min(ages)) if ages else None


def refresh_day(
    engine: sa.Engine, day: datetime, keep_before: datetime | None = None
) -> tuple[pd.DataFrame, bool]:
    """Count one day's events and replace its rows of ``camera_hourly_stats``, in one
    transaction; returns the counts and whether they are the stored ones, kept.

    A day that began before ``keep_before`` and has counts keeps them: its events (all, or
    those before the cut-off, as retention deletes by the minute) may since have left the
    table (archive, retention), and a recount would wipe the only aggregate.

    Two runs of the same day (the schedule and ``stale_daily_stats_sensor``, or a backfill)
    can overlap. Serialised per day, the later one waits and then writes counts at least as
    new as the earlier one's; unserialised, it failed on the primary key the earlier one had
    just inserted (Postgres), or wrote counts read before the earlier one's. On Postgres a
    per-day advisory lock does it; on SQLite the DELETE first takes the write lock.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"camera_hourly_stats:{day.date().isoformat()}"},
            )
        if keep_before is not None and day < keep_before:
            stored = stored_counts(conn, day)
            if len(stored):
                return stored, True
        conn.execute(sa.delete(camera_hourly_stats).where(camera_hourly_stats.c.day == day.date()))
        df = hourly_counts(conn, day)
        now = datetime.now(UTC)
        rows = [
            {
                **row,
                "mean_confidence": None if pd.isna(row["mean_confidence"]) else float(row["mean_confidence"]),
                "computed_at": now,
            }
            for row in df.to_dict("records")
        ]
        if rows:
            conn.execute(sa.insert(camera_hourly_stats), rows)
    return df, False


def stored_counts(conn: sa.Connection, day: datetime) -> pd.DataFrame:
    """The day's rows of ``camera_hourly_stats``, in the shape ``hourly_counts`` returns."""
    stmt = (
        sa.select(*(camera_hourly_stats.c[name] for name in STATS_COLUMNS))
        .where(camera_hourly_stats.c.day == day.date())
        .order_by(camera_hourly_stats.c.camera_id, camera_hourly_stats.c.hour)
    )
    df = pd.DataFrame([dict(r._mapping) for r in conn.execute(stmt)], columns=STATS_COLUMNS)
    return df.astype({"hour": int, "events": int, "distinct_plates": int, "mean_confidence": float})


# -- the plot ------------------------------------------------------------------------------------

_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
MAX_LINES = 8  # more cameras than this: the busiest are drawn, the rest summed as "other"


def _font(size: int):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "fonts" / "DejaVuSansCondensed.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default()


def plot_hourly(df: pd.DataFrame, title: str, width: int = 900, height: int = 380) -> bytes:
    """PNG: plates per hour, one line per camera (busiest first) and the total as bars."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(11)
    left, right, top, bottom = 56, width - 170, 34, height - 36
    pivot = (
        df.pivot_table(index="hour", columns="camera_id", values="events", aggfunc="sum")
        .reindex(range(24), fill_value=0)
        .fillna(0)
    )
    order = list(pivot.sum().sort_values(ascending=False).index)
    if len(order) > MAX_LINES:
        pivot["other"] = pivot[order[MAX_LINES:]].sum(axis=1)
        order = order[:MAX_LINES] + ["other"]
    total = pivot[order].sum(axis=1) if order else pd.Series(0, index=range(24))
    peak = max(1, int(total.max()))
    step = max(1, round(peak / 5))
    draw.text((left, 8), title, fill="black", font=font)

    def xy(hour: float, value: float) -> tuple[float, float]:
        return (left + (right - left) * (hour + 0.5) / 24, bottom - (bottom - top) * value / peak)

    for tick in range(0, peak + 1, step):  # y grid + labels
        _, y = xy(0, tick)
        draw.line([(left, y), (right, y)], fill=(230, 230, 230))
        draw.text((8, y - 7), str(tick), fill="black", font=small)
    bar = (right - left) / 24 * 0.8
    for hour in range(24):  # total as pale bars, hour labels
        x, y = xy(hour, float(total[hour]))
        draw.rectangle([x - bar / 2, y, x + bar / 2, bottom], fill=(220, 228, 240))
        if hour % 2 == 0:
            draw.text((x - 6, bottom + 6), f"{hour:02d}", fill="black", font=small)
    for n, camera in enumerate(order):  # one line per camera
        color = _PALETTE[n % len(_PALETTE)]
        points = [xy(hour, float(pivot[camera][hour])) for hour in range(24)]
        draw.line(points, fill=color, width=2)
        ly = top + 18 * n
        draw.rectangle([right + 14, ly + 3, right + 26, ly + 13], fill=color)
        draw.text((right + 32, ly), str(camera)[:18], fill="black", font=small)
    draw.text((right + 14, top + 18 * len(order) + 4), "bars: all cameras", fill=(90, 90, 90), font=small)
    draw.line([(left, bottom), (right, bottom)], fill="black")
    draw.line([(left, top), (left, bottom)], fill="black")
    draw.text((left + (right - left) // 2 - 40, height - 18), "hour (UTC)", fill="black", font=small)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@asset(
    partitions_def=daily_partitions,
    deps=[AssetDep("plate_events", partition_mapping=AllPartitionMapping())],
    group_name="analytics",
    kinds={"sql", "pandas"},
    owners=["team:traffic-ops"],
    description="Plate events per camera per hour for one UTC day (events, distinct plates, mean "
    "confidence), in the events DB table `camera_hourly_stats`, with a plot of plates per hour.",
)
def camera_daily_stats(
    context: AssetExecutionContext,
    events_db: EventStoreResource,
    bucket: ObjectStoreResource,
    ops_settings: OpsSettings,
) -> Output[pd.DataFrame]:
    day = datetime.fromisoformat(context.partition_key).replace(tzinfo=UTC)
    engine = events_db.get_store().engine
    # Read before counting: a video that writes its rows after the count but records its
    # materialization before this one's is newer than this id, so the sensor sees it.
    counted_through = newest_plate_events_id(context.instance)
    horizon = recount_horizon(
        datetime.now(UTC), ops_settings.archive_events_after_days, ops_settings.retention_events_days
    )
    df, kept = refresh_day(engine, day, keep_before=horizon)
    if kept:
        context.log.info(
            f"{context.partition_key} is older than the events archive/retention horizon: "
            "its stored counts are kept, not recounted from the events left in the table"
        )
    written = 0 if kept else len(df)
    png = plot_hourly(df, f"Plates per hour, {context.partition_key} (UTC)")
    plot_key = f"stats/camera_daily/{context.partition_key}.png"
    bucket.get_store().put_bytes(plot_key, png, "image/png")
    per_camera = per_camera_summary(df, None if kept else distinct_plates_by_camera(engine, day))
    busiest = df.loc[df["events"].idxmax()] if len(df) else None
    return Output(
        df,
        metadata={
            "events": int(df["events"].sum()),
            "cameras": int(df["camera_id"].nunique()),
            "rows_written": written,
            "kept_stored_counts": kept,
            COUNTED_THROUGH: counted_through,
            "busiest_hour": f"{busiest['camera_id']} {int(busiest['hour']):02d}:00 ({int(busiest['events'])})"
            if busiest is not None
            else "none",
            "per_camera": MetadataValue.md(
                per_camera.to_markdown(index=False) if len(per_camera) else "_no events_"
            ),
            "plot": MetadataValue.md(
                f"![plates per hour](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "plot_path": MetadataValue.path(bucket.get_store().uri(plot_key)),
        },
    )


camera_daily_stats_job = define_asset_job(
    name="camera_daily_stats_job",
    selection=[camera_daily_stats],
    description="Recompute one day's per-camera hourly counts and plot.",
    tags={"anpr/kind": "stats"},
)
# Runs at 01:15 UTC for the day that just ended (late uploads of the evening are mostly in).
camera_daily_stats_schedule = build_schedule_from_partitioned_job(
    camera_daily_stats_job,
    hour_of_day=1,
    minute_of_hour=15,
    name="camera_daily_stats_schedule",
    default_status=DefaultScheduleStatus.RUNNING,  # Dagster's default is STOPPED; see schedules.py
)


# -- late events: recompute days whose stats predate them --------------------------------------------

# plate_events materializations read per tick: a long history (first tick, or the sensor
# switched on late) is caught up over several ticks instead of one slow one.
STALE_STATS_PAGE = 1000


def days_of_materialization(record: EventLogRecord) -> set[str]:
    """UTC days (ISO) whose events one plate_events materialization may have changed."""
    materialization = record.asset_materialization
    if materialization is None:
        return set()
    metadata = materialization.metadata
    if "affected_days" in metadata:
        return {str(day) for day in metadata["affected_days"].value}
    # Recorded before plate_events wrote affected_days: its Parquet files' days and the start day.
    files = metadata["parquet_files"].value if "parquet_files" in metadata else []
    days = {day.isoformat() for day in map(day_of_key, (str(f) for f in files)) if day is not None}
    try:
        days.add(parse_partition_key(materialization.partition or "")[1].date().isoformat())
    except UploadNameError:
        pass  # not a video partition key: the files' days are all there is
    return days


def newest_change_by_day(records: Sequence[EventLogRecord]) -> dict[str, int]:
    """Day -> storage id of the newest of ``records`` that touched it."""
    newest: dict[str, int] = {}
    for record in records:
        for day in days_of_materialization(record):
            newest[day] = max(newest.get(day, 0), record.storage_id)
    return newest


def stale_days(instance: DagsterInstance, changes: dict[str, int], today: date) -> dict[str, int]:
    """The days of ``changes`` whose stats were counted before their latest change.

    Never-materialised days are left to the schedule (or a backfill) unless their first
    stats run is under way, and today is not
    complete yet (its partition does not exist before midnight UTC). Storage ids order the
    event log, so comparing them needs no clocks.
    """
    start = daily_partitions.start.date().isoformat()
    candidates = {day: sid for day, sid in changes.items() if start <= day < today.isoformat()}
    if not candidates:
        return {}
    computed = instance.get_latest_storage_id_by_partition(
        camera_daily_stats.key, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(candidates)
    )
    counted = counted_through(instance, {computed[day] for day in candidates if day in computed})
    # A day's first stats run still in progress may have counted before this change; it
    # records its materialization after this tick, which must not let the change go.
    in_progress = days_being_computed(instance, [day for day in candidates if day not in computed])
    return {
        day: sid
        for day, sid in candidates.items()
        if (day in computed and counted.get(computed[day], computed[day]) < sid) or day in in_progress
    }


ACTIVE_RUN_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def days_being_computed(instance: DagsterInstance, days: Sequence[str]) -> set[str]:
    """Those of ``days`` with a run queued or in progress: date partition keys are the stats'
    only (videos are keyed camera/time), whichever job or backfill launched it."""
    if not days:
        return set()
    runs = instance.get_runs(RunsFilter(statuses=ACTIVE_RUN_STATUSES, tags={PARTITION_TAG: list(days)}))
    return {run.tags[PARTITION_TAG] for run in runs if run.tags.get(PARTITION_TAG) in days}


def counted_through(instance: DagsterInstance, stats_ids: set[int]) -> dict[int, int]:
    """Stats materialization storage id -> the newest plate_events materialization it counted
    (its metadata). Comparing a change with the stats' own storage id missed a video whose rows
    came after the count and whose materialization came before the stats'. Materializations
    without the metadata (older ones) are left out: their own storage id stands."""
    if not stats_ids:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=camera_daily_stats.key, storage_ids=sorted(stats_ids)),
        limit=len(stats_ids),
    ).records
    out = {}
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if COUNTED_THROUGH in metadata:
            out[record.storage_id] = int(metadata[COUNTED_THROUGH].value)
    return out


@sensor(
    job=camera_daily_stats_job,
    minimum_interval_seconds=300,  # late videos are not urgent; a backfill's changes coalesce
    default_status=DefaultSensorStatus.RUNNING,  # Dagster's default is STOPPED
    description="Recompute camera_daily_stats for past days that plate_events changed after the "
    "day's stats were materialised (late uploads, backfills, re-runs).",
)
def stale_daily_stats_sensor(context: SensorEvaluationContext) -> SensorResult:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=PLATE_EVENTS, after_storage_id=after),
        limit=STALE_STATS_PAGE,
        ascending=True,
    ).records
    if not records:
        return SensorResult(
            skip_reason=SkipReason("no new plate_events materializations"), cursor=context.cursor
        )
    stale = stale_days(context.instance, newest_change_by_day(records), datetime.now(UTC).date())
    requests = [
        # The key names the change it answers: a re-evaluated tick never asks twice, a later
        # change to the same day asks again.
        RunRequest(run_key=f"stale-stats:{day}:{sid}", partition_key=day, tags={"anpr/reason": "late-events"})
        for day, sid in sorted(stale.items())
    ]
    skip = None if requests else SkipReason(f"{len(records)} plate_events materializations, no stale days")
    return SensorResult(run_requests=requests, skip_reason=skip, cursor=str(records[-1].storage_id))
