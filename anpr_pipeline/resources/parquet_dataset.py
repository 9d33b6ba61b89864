"""The analysts' Parquet dataset of events, hive-partitioned by date and camera.

``parquet/events/date=YYYY-MM-DD/camera_id=<id>/<video-ts>.parquet``. As Spark and
pyarrow write hive datasets, the partition columns (``date``, ``camera_id``) live in the
path, not inside the files: ``pyarrow.dataset``, DuckDB (``hive_partitioning=1``) and
``pandas.read_parquet`` on the folder all return them as columns. One file per video per
day, so re-processing a video replaces exactly its files.

Read it with :data:`PARTITION_SCHEMA` (:func:`read_events` does): left to infer the types
from the paths, readers turn a camera id that looks numeric into a number (``0042`` -> 42,
a leading zero lost), and only when every id in the selection looks numeric, so the type
changes with the filter.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from anpr_pipeline.resources.object_store import ObjectStore

EVENTS_PREFIX = "parquet/events/"
_DATE_SEGMENT = re.compile(r"/date=(?P<day>\d{4}-\d{2}-\d{2})/")

EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("captured_at", pa.timestamp("us", tz="UTC")),
        ("first_seen_at", pa.timestamp("us", tz="UTC")),
        ("last_seen_at", pa.timestamp("us", tz="UTC")),
        ("plate_text", pa.string()),
        ("normalized_plate", pa.string()),
        ("region", pa.string()),
        ("confidence", pa.float32()),
        ("char_confidences", pa.list_(pa.float32())),
        ("bbox_x", pa.int32()),
        ("bbox_y", pa.int32()),
        ("bbox_w", pa.int32()),
        ("bbox_h", pa.int32()),
        ("frame_index", pa.int32()),
        ("frames_seen", pa.int32()),
        ("video_key", pa.string()),
        ("crop_key", pa.string()),
        ("detector_version", pa.string()),
        ("reader_version", pa.string()),
    ]
)


# The hive columns, typed: camera ids are text whatever they look like; date is a calendar day.
PARTITION_SCHEMA = pa.schema([("date", pa.date32()), ("camera_id", pa.string())])
# Files hold EVENTS_SCHEMA; the dataset adds the path columns. Explicit so an empty selection
# and files written before a column was added read back with the same columns.
DATASET_SCHEMA = pa.schema([*EVENTS_SCHEMA, *PARTITION_SCHEMA])


def events_partitioning() -> ds.Partitioning:
    """The dataset's hive partitioning with explicit types (never inferred from the paths)."""
    return ds.partitioning(PARTITION_SCHEMA, flavor="hive")


def partition_key_for(camera_id: str, day: date, video_timestamp: str) -> str:
    return f"{EVENTS_PREFIX}date={day.isoformat()}/camera_id={camera_id}/{video_timestamp}.parquet"


def _to_table(rows: Sequence[dict]) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in EVENTS_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=EVENTS_SCHEMA)


def table_bytes(rows: Sequence[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(_to_table(rows), buffer, compression="zstd")
    return buffer.getvalue()


def day_of_key(key: str) -> date | None:
    """The ``date=`` partition of a dataset key, or None for a key outside the layout."""
    match = _DATE_SEGMENT.search(key)
    return date.fromisoformat(match["day"]) if match else None


def days_spanned(start: datetime, end: datetime) -> list[date]:
    """The UTC calendar days from ``start`` to ``end``, both included."""
    days, day = [], start.date()
    while day <= end.date():
        days.append(day)
        day += timedelta(days=1)
    return days


def _rows_by_day(rows: Sequence[dict]) -> dict[date, list[dict]]:
    by_day: dict[date, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["captured_at"].date(), []).append(row)
    return by_day


def video_event_keys(camera_id: str, video_timestamp: str, rows: Sequence[dict]) -> list[str]:
    """The files ``write_video_events`` writes for these rows (one per day with events)."""
    return [partition_key_for(camera_id, day, video_timestamp) for day in sorted(_rows_by_day(rows))]


def write_video_events(
    store: ObjectStore,
    camera_id: str,
    video_timestamp: str,
    rows: Sequence[dict],
    span: tuple[datetime, datetime],
) -> list[str]:
    """Replace this video's Parquet files: one per day its events fall on.

    ``span`` is the video's recording span; files for days in it that no longer have
    events (a re-run that found fewer) are deleted, so re-runs never leave stale rows.
    """
    by_day = _rows_by_day(rows)
    written = []
    for day, day_rows in sorted(by_day.items()):
        key = partition_key_for(camera_id, day, video_timestamp)
        store.put_bytes(
            key,
            table_bytes(sorted(day_rows, key=lambda r: r["captured_at"])),
            "application/vnd.apache.parquet",
        )
        written.append(key)
    stale = [
        partition_key_for(camera_id, day, video_timestamp) for day in days_spanned(*span) if day not in by_day
    ]
    stale_existing = [key for key in stale if store.exists(key)]
    if stale_existing:
        store.delete(stale_existing)
    return written


def rewrite_without(store: ObjectStore, key: str, table: pa.Table, drop: pa.Array) -> tuple[int, bool]:
    """Rewrite the Parquet file ``key`` (read as ``table``) without the rows ``drop`` marks,
    or delete it when none remain; untouched when none is marked. Returns (rows removed,
    file deleted). Used by GDPR erasure and by the archive's superseded rows."""
    removed = int(pc.sum(drop).as_py() or 0)
    if not removed:
        return 0, False
    keep = table.filter(pc.invert(drop))
    if keep.num_rows == 0:
        store.delete([key])
        return removed, True
    out = io.BytesIO()
    pq.write_table(keep, out, compression="zstd")
    store.put_bytes(key, out.getvalue(), "application/vnd.apache.parquet")
    return removed, False


def read_events(store: ObjectStore, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Read the dataset (or only ``keys``) as a DataFrame with ``date`` (datetime.date) and
    ``camera_id`` (str, exactly as in the path) columns."""
    filesystem, base = store.arrow_filesystem()
    base = base.rstrip("/")
    root = f"{base}/{EVENTS_PREFIX.rstrip('/')}"
    options = {"filesystem": filesystem, "format": "parquet", "schema": DATASET_SCHEMA}
    if keys is not None:
        paths = [f"{base}/{key}" for key in keys]
        if not paths:
            return DATASET_SCHEMA.empty_table().to_pandas()
        dataset = ds.dataset(paths, partitioning=events_partitioning(), partition_base_dir=root, **options)
    else:
        try:
            dataset = ds.dataset(root, partitioning=events_partitioning(), **options)
        except FileNotFoundError:
            return DATASET_SCHEMA.empty_table().to_pandas()
    return dataset.to_table().to_pandas()
