"""End to end on the embedded default: a synthetic upload becomes events in SQLite and Parquet.

Real detector, real reader, real decoding, a real Dagster instance; nothing mocked.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, instance_for_test

from anpr_pipeline.definitions import build_definitions
from anpr_pipeline.ops.gdpr import erase_plate
from anpr_pipeline.ops.locks import data_lock
from anpr_pipeline.resources.parquet_dataset import read_events
from anpr_pipeline.uploads import video_key_for
from anpr_pipeline.vision.synth import make_video
from anpr_pipeline_tests.factories import embedded_settings

STARTED = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
CAMERA = "cam-e2e"


def _run(defs, instance: DagsterInstance, partition_key: str):
    instance.add_dynamic_partitions("videos", [partition_key])
    return defs.resolve_job_def("process_video").execute_in_process(
        partition_key=partition_key, instance=instance, raise_on_error=False
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    settings = embedded_settings(root)
    defs = build_definitions(settings)
    store = defs.resources["bucket"].get_store()
    events_db = defs.resources["events_db"].get_store()
    events_db.init_schema()
    video_path = root / "source.mp4"
    truth = make_video(video_path, seed=11, seconds=6.0, vehicles=2)
    key = video_key_for(CAMERA, STARTED)
    store.put_file(key, video_path)
    with instance_for_test() as instance:
        first = _run(defs, instance, f"{CAMERA}/20261128T093000Z")
        yield {
            "defs": defs,
            "instance": instance,
            "store": store,
            "events_db": events_db,
            "truth": truth,
            "key": key,
            "first": first,
            "root": root,
        }


def test_partition_materialises_events_matching_ground_truth(pipeline):
    assert pipeline["first"].success
    events = pipeline["events_db"].events_for_video(pipeline["key"])
    expected = sorted(v["plate"] for v in pipeline["truth"]["vehicles"])
    found = sorted(e["normalized_plate"] for e in events)
    matched = sum(1 for plate in expected if plate in found)
    assert matched >= len(expected) - 0, f"expected {expected}, found {found}"
    assert len(events) <= len(expected) + 1, f"spurious events: {found} vs {expected}"
    for event in events:
        assert event["camera_id"] == CAMERA
        assert event["detector_version"] and event["reader_version"]
        assert pipeline["store"].exists(event["crop_key"])
        assert event["crop_key"].startswith(f"crops/{CAMERA}/2026-11-28/20261128T093000Z/")


def test_events_land_in_parquet_with_partition_columns(pipeline):
    df = read_events(pipeline["store"])
    db_ids = {str(e["event_id"]) for e in pipeline["events_db"].events_for_video(pipeline["key"])}
    assert set(df["event_id"]) == db_ids
    assert set(df["camera_id"].astype(str)) == {CAMERA}
    assert set(df["date"].astype(str)) == {"2026-11-28"}


def test_asset_checks_pass_and_metadata_is_recorded(pipeline):
    instance = pipeline["instance"]
    checks = pipeline["first"].get_asset_check_evaluations()
    assert {c.check_name for c in checks} >= {"decodable_and_non_empty", "unique_ids_and_timestamps_in_span"}
    assert all(c.passed for c in checks if c.check_name != "low_confidence_share")
    record = instance.get_latest_materialization_event(AssetKey("plate_events"))
    metadata = record.asset_materialization.metadata
    assert metadata["events"].value == len(pipeline["events_db"].events_for_video(pipeline["key"]))
    assert "events_table" in metadata
    # Plates in Dagster's (unerasable) event log are masked; the DB keeps the full text.
    for event in pipeline["events_db"].events_for_video(pipeline["key"]):
        assert event["normalized_plate"] not in metadata["events_table"].value
        assert event["normalized_plate"] not in metadata["plates"].value


def test_events_carry_the_versions_of_the_models_that_made_their_reads(pipeline):
    """plate_events re-executed alone after the reader setting changed keeps the versions of
    the reads it votes on, not the newly configured reader's."""
    defs, instance, key = pipeline["defs"], pipeline["instance"], pipeline["key"]
    reader = defs.resources["models"].get_reader().version
    detector = defs.resources["models"].get_detector().version
    assert {
        (e["detector_version"], e["reader_version"]) for e in pipeline["events_db"].events_for_video(key)
    } == {(detector, reader)}
    other = build_definitions(replace(embedded_settings(Path(pipeline["root"])), reader="crnn"))
    assert other.resources["models"].reader == "crnn"
    result = other.resolve_job_def("process_video").execute_in_process(
        partition_key=f"{CAMERA}/20261128T093000Z",
        instance=instance,
        asset_selection=[AssetKey("plate_events")],
    )
    assert result.success
    assert {e["reader_version"] for e in pipeline["events_db"].events_for_video(key)} == {reader}


def test_rerunning_the_partition_is_idempotent(pipeline):
    before = pipeline["events_db"].events_for_video(pipeline["key"])
    parquet_before = read_events(pipeline["store"])
    rerun = _run(pipeline["defs"], pipeline["instance"], f"{CAMERA}/20261128T093000Z")
    assert rerun.success
    after = pipeline["events_db"].events_for_video(pipeline["key"])
    assert sorted(str(e["event_id"]) for e in after) == sorted(str(e["event_id"]) for e in before)
    assert pipeline["events_db"].count() == len(before)
    assert len(read_events(pipeline["store"])) == len(parquet_before)


def test_rerun_after_a_sidecar_moved_the_video_replaces_its_parquet_files(pipeline):
    """A sidecar arriving after the first run gives the video another camera id: the re-run
    writes its events under that camera and removes the files of the first run."""
    import json

    store, defs, instance = pipeline["store"], pipeline["defs"], pipeline["instance"]
    key = video_key_for("cam-late", STARTED)
    store.put_file(key, Path(pipeline["root"]) / "source.mp4")
    assert _run(defs, instance, "cam-late/20261128T093000Z").success
    ids = {str(e["event_id"]) for e in pipeline["events_db"].events_for_video(key)}
    first = read_events(store)
    assert ids and set(first.loc[first["camera_id"] == "cam-late", "event_id"]) == ids

    store.put_bytes(key.rsplit(".", 1)[0] + ".json", json.dumps({"camera_id": "cam-fixed"}).encode())
    rerun = _run(defs, instance, "cam-late/20261128T093000Z")
    assert rerun.success
    after = read_events(store)
    mine = after[after["event_id"].isin(ids)]
    assert len(mine) == len(ids) and set(mine["camera_id"]) == {"cam-fixed"}
    (mat,) = rerun.asset_materializations_for_node("plate_events")
    assert mat.metadata["superseded_parquet_files_deleted"].value == 1
    # The crops moved with it: none is left under the old camera, where no event names it
    # and an erase would not look.
    assert not list(store.list("crops/cam-late/"))
    crop_keys = {e["crop_key"] for e in pipeline["events_db"].events_for_video(key)}
    assert crop_keys and all(k.startswith("crops/cam-fixed/") and store.exists(k) for k in crop_keys)


def test_files_of_a_run_that_died_after_writing_them_are_replaced_when_the_video_moves(pipeline, monkeypatch):
    """A run writes its Parquet files and dies before its materialization is recorded; a
    sidecar then moves the video: the next run must still know those files, or analysts
    read every event twice. Each run announces its files (an observation) before writing."""
    import json

    from anpr_pipeline.assets import events as events_module

    store, defs, instance = pipeline["store"], pipeline["defs"], pipeline["instance"]
    key = video_key_for("cam-crash", STARTED)
    store.put_file(key, Path(pipeline["root"]) / "source.mp4")

    def die_after_the_writes(*args, **kwargs):
        raise RuntimeError("worker killed after writing the Parquet files")

    with monkeypatch.context() as patch:
        patch.setattr(events_module, "events_markdown", die_after_the_writes)
        assert not _run(defs, instance, "cam-crash/20261128T093000Z").success
    assert list(store.list("parquet/events/date=2026-11-28/camera_id=cam-crash/"))
    store.put_bytes(key.rsplit(".", 1)[0] + ".json", json.dumps({"camera_id": "cam-crash-fixed"}).encode())
    assert _run(defs, instance, "cam-crash/20261128T093000Z").success
    assert not list(store.list("parquet/events/date=2026-11-28/camera_id=cam-crash/"))
    ids = {str(e["event_id"]) for e in pipeline["events_db"].events_for_video(key)}
    parquet = read_events(store)
    mine = parquet[parquet["event_id"].isin(ids)]
    assert ids and len(mine) == len(ids) and set(mine["camera_id"]) == {"cam-crash-fixed"}


def test_rerun_from_another_upload_of_the_partition_replaces_its_events(pipeline):
    """A .mov and an .mp4 of one recording: the older is processed; once an operator deletes
    it, the re-run reads the other, and its events replace the first run's (not beside them)."""
    import os

    store, defs, instance, events_db = (
        pipeline["store"],
        pipeline["defs"],
        pipeline["instance"],
        pipeline["events_db"],
    )
    source = Path(pipeline["root"]) / "source.mp4"
    mov, mp4 = video_key_for("cam-twice", STARTED, "mov"), video_key_for("cam-twice", STARTED, "mp4")
    store.put_file(mov, source)
    os.utime(Path(store.root) / mov, (1e9, 1e9))  # uploaded first
    store.put_file(mp4, source)
    assert _run(defs, instance, "cam-twice/20261128T093000Z").success
    first = events_db.events_for_video(mov)
    assert first and not events_db.events_for_video(mp4)
    total = events_db.count()
    store.delete([mov])
    assert _run(defs, instance, "cam-twice/20261128T093000Z").success
    assert not events_db.events_for_video(mov)
    assert len(events_db.events_for_video(mp4)) == len(first) and events_db.count() == total


def test_damage_past_the_first_frame_fails_the_partition_and_leaves_no_crops(pipeline):
    """The probe decodes the first frame only; damage further on fails detection half-way,
    after some crops were written: those are taken back, since no event will name them."""
    import numpy as np

    store = pipeline["store"]
    data = np.frombuffer((Path(pipeline["root"]) / "source.mp4").read_bytes(), dtype=np.uint8).copy()
    rng = np.random.default_rng(0)
    start, end = len(data) // 2, len(data) * 9 // 10
    hits = rng.integers(start, end, (end - start) // 50)  # 2 % of the second half's bytes
    data[hits] = rng.integers(0, 256, len(hits), dtype=np.uint8)
    store.put_bytes(video_key_for("cam-late-damage", STARTED), data.tobytes())
    result = _run(pipeline["defs"], pipeline["instance"], "cam-late-damage/20261128T093000Z")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "frames_and_detections"
    assert "packets undecodable" in str(failure.event_specific_data.user_failure_data)
    assert not list(store.list("crops/cam-late-damage/"))


def test_corrupt_video_fails_only_its_own_partition(pipeline):
    store = pipeline["store"]
    good = (Path(pipeline["root"]) / "source.mp4").read_bytes()
    store.put_bytes(video_key_for("cam-bad", STARTED), good[: len(good) // 3])
    store.put_bytes(video_key_for("cam-junk", STARTED), b"\x00garbage" * 1000)
    for camera in ("cam-bad", "cam-junk"):
        result = _run(pipeline["defs"], pipeline["instance"], f"{camera}/20261128T093000Z")
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.event_specific_data.error.message + str(
            failure.event_specific_data.user_failure_data
        )
        assert f"uploads/{camera}/20261128T093000Z.mp4" in message
        assert any(
            word in message for word in ("truncated", "corrupt", "not a video", "no video stream", "Invalid")
        )
    # The good video's events are untouched.
    assert len(pipeline["events_db"].events_for_video(pipeline["key"])) > 0


def test_sidecar_region_restricts_that_videos_reads(pipeline):
    """A camera's upload sidecar saying `"region": "br"` reads its plates with Brazilian
    formats only; other videos keep the deployment's setting (any region here)."""
    import json

    from anpr_pipeline.assets.reads import video_regions

    assert video_regions("br", None) == ["br"]
    assert video_regions("de", ["eu"]) == ["eu"]  # not a region with formats: the default
    assert video_regions(None, None) is None
    store, defs, instance = pipeline["store"], pipeline["defs"], pipeline["instance"]
    key = video_key_for("cam-br", STARTED)
    store.put_file(key, Path(pipeline["root"]) / "source.mp4")
    store.put_bytes(key.rsplit(".", 1)[0] + ".json", json.dumps({"region": "br"}).encode())
    result = _run(defs, instance, "cam-br/20261128T093000Z")
    assert result.success
    reads = defs.load_asset_value(
        AssetKey("plate_reads"), partition_key="cam-br/20261128T093000Z", instance=instance
    )
    other = defs.load_asset_value(
        AssetKey("plate_reads"), partition_key=f"{CAMERA}/20261128T093000Z", instance=instance
    )
    assert len(reads) == len(other) > 0
    assert set(reads["region"].dropna()) <= {"br"}
    # The synthetic plates are of several regions: unrestricted, some read as non-Brazilian.
    assert set(other["region"].dropna()) - {"br"}
    (mat,) = result.asset_materializations_for_node("plate_reads")
    assert mat.metadata["plate_regions"].value == "br"


def test_a_plate_erased_on_request_stays_erased_when_its_video_is_run_again(pipeline):
    """erase_plate, then a backfill of the video: the plate's pass is not stored again (DB,
    Parquet, crops), the other plates are, with the same ids."""
    defs, instance, store, events_db = (pipeline[k] for k in ("defs", "instance", "store", "events_db"))
    started = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    key = video_key_for("cam-erase", started)
    store.put_file(key, Path(pipeline["root"]) / "source.mp4")
    partition = "cam-erase/20261128T100000Z"
    assert _run(defs, instance, partition).success
    first = events_db.events_for_video(key)
    assert len(first) >= 2, [e["normalized_plate"] for e in first]
    gone, kept = first[0], first[1:]
    crop_dir = gone["crop_key"].rsplit("/", 1)[0] + "/"
    crops_first = {info.key for info in store.list(crop_dir)}
    erase_plate(gone["normalized_plate"], events_db, store, defs.resources["ops_settings"].gdpr_salt)

    assert _run(defs, instance, partition).success
    after = events_db.events_for_video(key)
    assert [e["event_id"] for e in after] == [e["event_id"] for e in kept]
    parquet = read_events(store)
    assert gone["normalized_plate"] not in set(parquet["normalized_plate"])
    assert {str(e["event_id"]) for e in kept} <= set(parquet["event_id"])
    crops_after = {info.key for info in store.list(crop_dir)}
    assert not store.exists(gone["crop_key"]) and crops_after < crops_first
    assert all(store.exists(e["crop_key"]) for e in after)
    metadata = instance.get_latest_materialization_event(
        AssetKey("plate_events")
    ).asset_materialization.metadata
    assert metadata["erased_plate_passes_dropped"].value == 1
    # The re-run's per-frame reads (pickled step outputs) held the plate too: gone.
    io_dir = Path(defs.resources["ops_settings"].io_manager_dir)
    assert not (io_dir / "plate_reads" / partition).exists()
    assert (io_dir / "plate_events" / partition).exists()  # written after, without the plate


def test_event_writes_wait_while_an_erase_holds_the_data_lock(pipeline):
    """An erase between a video's database write and its Parquet write would miss one of them."""
    defs, instance, events_db = pipeline["defs"], pipeline["instance"], pipeline["events_db"]
    done = threading.Event()

    def write_events() -> None:
        defs.resolve_job_def("process_video").execute_in_process(
            partition_key=f"{CAMERA}/20261128T093000Z",
            instance=instance,
            asset_selection=[AssetKey("plate_events")],
        )
        done.set()

    writer = threading.Thread(target=write_events, daemon=True)
    with data_lock(events_db, "erase-plate"):
        writer.start()
        assert not done.wait(3.0)
    writer.join(120)
    assert done.is_set()
