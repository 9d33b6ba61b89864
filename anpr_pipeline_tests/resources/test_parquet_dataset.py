"""The analysts' Parquet dataset: hive partition columns read back with their real types."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from anpr_pipeline.resources.object_store import LocalObjectStore, ObjectStore
from anpr_pipeline.resources.parquet_dataset import read_events, write_video_events
from anpr_pipeline_tests.factories import event_row

DAY = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
TS = "20261128T090000Z"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "bucket")
    return request.getfixturevalue("s3_store")


def write_camera(store: ObjectStore, camera: str, n_events: int = 2) -> list[str]:
    """One video of ``camera`` with ``n_events`` events on DAY; returns the keys written."""
    video_key = f"uploads/{camera}/{TS}.mp4"
    rows = [
        event_row(DAY + timedelta(minutes=n), camera=camera, video_key=video_key, n=n)
        for n in range(n_events)
    ]
    return write_video_events(store, camera, TS, rows, (DAY, DAY + timedelta(minutes=10)))


def camera_of_each_row(df) -> list[tuple[str, str]]:
    """(camera_id column, camera in the row's video key): they must agree row by row."""
    return [(row.camera_id, row.video_key.split("/")[1]) for row in df.itertuples()]


def test_numeric_looking_camera_ids_stay_strings(store: ObjectStore) -> None:
    # A city whose cameras are all numbered: inferred hive types made these int (0042 -> 42).
    numeric = {camera: write_camera(store, camera) for camera in ("0042", "17")}
    df = read_events(store)
    assert sorted(df["camera_id"]) == ["0042", "0042", "17", "17"]
    assert all(type(c) is str for c in df["camera_id"])

    for camera in ("cam-a", "1e5"):
        write_camera(store, camera)
    df = read_events(store)
    assert sorted(set(df["camera_id"])) == ["0042", "17", "1e5", "cam-a"]
    assert all(col == from_key for col, from_key in camera_of_each_row(df))
    assert set(df["date"]) == {date(2026, 11, 28)}  # a calendar day, not the path's text

    # Reading only some files (as the pipeline does) must not change the column's type.
    subset = read_events(store, keys=numeric["0042"] + numeric["17"])
    assert sorted(set(subset["camera_id"])) == ["0042", "17"]
    assert all(col == from_key for col, from_key in camera_of_each_row(subset))
    only_0042 = read_events(store, keys=numeric["0042"])
    assert list(only_0042["camera_id"]) == ["0042", "0042"]
    assert list(only_0042["date"]) == [date(2026, 11, 28)] * 2


def test_empty_reads_have_the_partition_columns(store: ObjectStore) -> None:
    for df in (read_events(store), read_events(store, keys=[])):
        assert len(df) == 0 and {"camera_id", "date", "event_id"} <= set(df.columns)
