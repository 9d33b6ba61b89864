"""Re-running a video after a detection change: the crops are this run's, and only this run's.

Real detector, real decoding, a real Dagster instance; nothing mocked.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import AssetKey, Definitions, instance_for_test

from anpr_pipeline.assets.detections import stored_crops
from anpr_pipeline.definitions import build_definitions
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.settings import Settings
from anpr_pipeline.uploads import video_key_for
from anpr_pipeline.vision.synth import make_video
from anpr_pipeline.vision.types import Box
from anpr_pipeline.vision.video_pipeline import rgb_from_jpeg
from anpr_pipeline_tests.factories import embedded_settings

STARTED = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
CAMERA = "cam-rerun"
PARTITION = f"{CAMERA}/20261129T070000Z"
PREFIX = f"crops/{CAMERA}/2026-11-29/20261129T070000Z/"


def _defs(settings: Settings, pipeline: PipelineConfig) -> Definitions:
    base = build_definitions(settings)
    return Definitions(assets=base.assets, jobs=base.jobs, resources={**base.resources, "pipeline": pipeline})


def _detect(defs: Definitions, instance):
    result = defs.resolve_job_def("process_video").execute_in_process(
        partition_key=PARTITION,
        instance=instance,
        asset_selection=[AssetKey("video"), AssetKey("frames"), AssetKey("plate_detections")],
    )
    assert result.success
    return defs.load_asset_value(AssetKey("plate_detections"), partition_key=PARTITION, instance=instance)


def test_rerun_after_padding_and_sampling_change_rewrites_and_prunes_crops(tmp_path):
    settings = embedded_settings(tmp_path)
    video_path = tmp_path / "source.mp4"
    info = make_video(video_path, seed=11, seconds=6.0, vehicles=2)
    store = _defs(settings, PipelineConfig()).resources["bucket"].get_store()
    store.put_file(video_key_for(CAMERA, STARTED), video_path)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("videos", [PARTITION])
        first = _detect(_defs(settings, PipelineConfig(sample_fps=5.0, crop_padding=0.08)), instance)
        before = stored_crops(store, PREFIX)
        # Half the sampling rate (fewer detections) and a wider crop.
        second = _detect(_defs(settings, PipelineConfig(sample_fps=2.5, crop_padding=0.3)), instance)
    assert len(second) < len(first)
    after = stored_crops(store, PREFIX)
    assert after == set(second["crop_key"])  # every row's crop exists, no other crop lingers
    assert before - after, "the first run had detections the second one has not: nothing pruned"
    assert before & after, "no key of both runs: the rewrite was not exercised"
    # Each crop is cut with this run's padding (the first row naming a crop is its original).
    for _, row in second.drop_duplicates("crop_key").iterrows():
        expected = Box(int(row.x), int(row.y), int(row.w), int(row.h)).padded(
            0.3, info["width"], info["height"]
        )
        assert rgb_from_jpeg(store.get_bytes(row.crop_key)).shape[:2] == (expected.h, expected.w), (
            row.crop_key
        )
