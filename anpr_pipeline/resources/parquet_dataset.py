"""The analysts' Parquet dataset of events, hive-partitioned by date and camera.

``parquet/events/date=YYYY-MM-DD/camera_id=<id>/<video-ts>.parquet``. As Spark and
pyarrow write hive datasets, the partition columns (``date``, ``camera_id``) live in the
path, not inside the files: ``pyarrow.dataset``, DuckDB (``hive_partitioning=1``) and
``pandas.read_parquet`` on the folder all return them as columns. One file per video per
day, so re-processing a video replaces exactly its files.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anpr_pipeline.resources.object_store import ObjectStore

EVENTS_PREFIX = "parquet/events/"

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


def partition_key_for(camera_id: str, day: date, video_timestamp: str) -> str:
    return f"{EVENTS_PREFIX}date={day.isoformat()}/camera_id={camera_id}/{video_timestamp}.parquet"


def _to_table(rows: Sequence[dict]) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in EVENTS_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=EVENTS_SCHEMA)


def table_bytes(rows: Sequence[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(_to_table(rows), buffer, compression="zstd")
    return buffer.getvalue()


def _days_spanned(start: datetime, end: datetime) -> list[date]:
    days, day = [], start.date()
    while day <= end.date():
        days.append(day)
        day += timedelta(days=1)
    return days


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
    by_day: dict[date, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["captured_at"].date(), []).append(row)
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
        partition_key_for(camera_id, day, video_timestamp)
        for day in _days_spanned(*span)
        if day not in by_day
    ]
    stale_existing = [key for key in stale if store.exists(key)]
    if stale_existing:
        store.delete(stale_existing)
    return written


def read_events(store: ObjectStore, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Read the dataset (or only ``keys``) back as a DataFrame with date/camera_id columns."""
    import pyarrow.dataset as ds

    filesystem, base = store.arrow_filesystem()
    root = f"{base.rstrip('/')}/{EVENTS_PREFIX.rstrip('/')}"
    if keys is not None:
        paths = [f"{base.rstrip('/')}/{key}" for key in keys]
        if not paths:
            return _to_table([]).to_pandas()
        dataset = ds.dataset(
            paths, filesystem=filesystem, format="parquet", partitioning="hive", partition_base_dir=root
        )
    else:
        try:
            dataset = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive")
        except FileNotFoundError:
            return _to_table([]).to_pandas()
    return dataset.to_table().to_pandas()
