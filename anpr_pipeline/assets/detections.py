"""``frames`` + ``plate_detections``: decode once, stream sampled frames into the detector.

One multi-asset because decoding is the CPU floor: frames go straight from the decoder to
the detector in batches and are never stored as images (unless ``keep_frames``). Crops are
cut from the full-resolution frame and written to the bucket off the hot path.
"""

from datetime import datetime, timedelta

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    MetadataValue,
    Output,
    multi_asset,
)

from anpr_pipeline.assets.common import decode_failure, local_copy, recorded_metadata
from anpr_pipeline.deploy_tags import GPU_OP_TAGS
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.models import ModelsResource
from anpr_pipeline.resources.object_store import ObjectStore, ObjectStoreResource
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.vision.decode import DecodeStats, VideoDecodeError, iter_frames
from anpr_pipeline.vision.video_pipeline import (
    PlateCrop,
    detection_row,
    make_image_uploader,
    process_video_frames,
)

FRAME_COLUMNS = ["sample_index", "source_index", "pts_s", "captured_at", "detections", "skipped_static"]
DETECTION_COLUMNS = [
    "sample_index",
    "det_index",
    "pts_s",
    "captured_at",
    "x",
    "y",
    "w",
    "h",
    "score",
    "crop_key",
    "detector_version",  # carried to plate_events: the version of what found these boxes
]


def crop_prefix(camera_id: str, started_at: datetime, timestamp: str) -> str:
    return f"crops/{camera_id}/{started_at.date().isoformat()}/{timestamp}/"


def previous_crops_prefix(context: AssetExecutionContext) -> str | None:
    """Where this partition's latest ``plate_detections`` put its crops (its metadata)."""
    recorded = recorded_metadata(context, AssetKey("plate_detections"), "crops_prefix")
    return str(recorded[0]) if recorded else None


def stored_crops(store: ObjectStore, prefix: str) -> set[str]:
    """The crop JPEGs under a video's prefix (not its kept ``frames/``)."""
    return {info.key for info in store.list(prefix) if "/" not in info.key[len(prefix) :]}


@multi_asset(
    outs={
        "frames": AssetOut(
            description="Manifest of sampled frames: index, true pts time, captured_at (UTC).",
            kinds={"pandas"},
            group_name="vision",
            owners=["team:traffic-ops"],
        ),
        "plate_detections": AssetOut(
            description="Plate boxes per sampled frame; each crop is written as JPEG to the bucket.",
            kinds={"pandas", "pytorch"},
            group_name="vision",
            owners=["team:traffic-ops"],
        ),
    },
    ins={"video": AssetIn()},
    partitions_def=videos_partitions,
    pool="gpu",
    op_tags={"anpr/stage": "detect", **GPU_OP_TAGS},  # GPU node pool on Kubernetes
)
def frames_and_detections(
    context: AssetExecutionContext,
    video: dict,
    bucket: ObjectStoreResource,
    models: ModelsResource,
    pipeline: PipelineConfig,
):
    store = bucket.get_store()
    detector = models.get_detector()
    started_at = datetime.fromisoformat(video["started_at"])
    prefix = crop_prefix(video["camera_id"], started_at, video["timestamp"])
    # Crops of an earlier run of this partition: a key names a frame and the detector's box
    # index, so after a detector or crop_padding change the same key holds another box.
    earlier_crops = stored_crops(store, prefix)
    det_rows: list[dict] = []

    def on_frame(frame, static: bool) -> None:
        if pipeline.keep_frames and not static:
            uploader.submit_image(f"{prefix}frames/{frame.source_index:06d}.jpg", frame.image)

    def on_crop(crop: PlateCrop) -> None:
        # A reused detection (static frame or object) points at its original's crop and read.
        source_index, det_index = crop.reuse_of or (crop.source_index, crop.det_index)
        key = f"{prefix}{source_index:06d}_{det_index}.jpg"
        if crop.reuse_of is None:  # always (re)written: the new rows must point at this run's crops
            uploader.submit_image(key, crop.image)  # JPEG-encoded in the uploader's threads
        det_rows.append(detection_row(crop, key, started_at + timedelta(seconds=crop.pts_s)))

    # The per-video loop is shared with `anpr bench` (vision/video_pipeline.py).
    decode_stats = DecodeStats()  # damaged packets the decoder skipped, within its budget
    try:
        with local_copy(store, video["video_key"]) as path, make_image_uploader(store) as uploader:
            records, stats = process_video_frames(
                iter_frames(path, sample_fps=video["sample_fps"], stats=decode_stats),
                detector,
                batch_size=models.detector_batch_size,
                static_threshold=pipeline.static_frame_threshold,
                crop_padding=pipeline.crop_padding,
                on_crop=on_crop,
                on_frame=on_frame,
            )
    except VideoDecodeError as exc:
        # Damage past the probe's first frame: the crops this run added (its uploads have
        # finished) would be named by no event, and an erase could not find them.
        orphans = sorted(stored_crops(store, prefix) - earlier_crops)
        if orphans:
            store.delete(orphans)
        raise decode_failure(exc, video["video_key"]) from exc
    # Crops the new rows no longer name (fewer or other detections), deleted only once every
    # upload succeeded (the uploader raises on exit otherwise), so a failed run deletes nothing.
    stale = sorted(earlier_crops - {row["crop_key"] for row in det_rows})
    stale_deleted = store.delete(stale) if stale else 0
    # A sidecar since moved the video to another camera or start time: the earlier run's
    # crops (and kept frames) sit under the old prefix, which no event names any more.
    earlier_prefix = previous_crops_prefix(context)
    if earlier_prefix and earlier_prefix != prefix:
        stale_deleted += store.delete(sorted(info.key for info in store.list(earlier_prefix)))
    timings = {"decode_detect_s": stats.total_s, "detect_s": stats.detect_s}
    if decode_stats.bad_packets:
        context.log.warning(
            f"{video['video_key']}: skipped {decode_stats.bad_packets} undecodable of "
            f"{decode_stats.packets} video packets"
        )
    frame_rows = [
        {
            "sample_index": r.sample_index,
            "source_index": r.source_index,
            "pts_s": r.pts_s,
            "captured_at": started_at + timedelta(seconds=r.pts_s),
            "detections": r.detections,
            "skipped_static": r.skipped_static,
        }
        for r in records
    ]
    frames_df = pd.DataFrame(frame_rows, columns=FRAME_COLUMNS)
    detections_df = pd.DataFrame(
        [{**row, "detector_version": detector.version} for row in det_rows], columns=DETECTION_COLUMNS
    )
    sampled = len(frames_df)
    yield Output(
        frames_df,
        output_name="frames",
        metadata={
            "sampled_frames": sampled,
            "skipped_static": int(frames_df["skipped_static"].sum()) if sampled else 0,
            "sample_fps": video["sample_fps"],
            "bad_packets": decode_stats.bad_packets,  # skipped as undecodable (frames lost)
            "frames_per_second": round(sampled / timings["decode_detect_s"], 2)
            if timings["decode_detect_s"]
            else 0.0,
        },
    )
    yield Output(
        detections_df,
        output_name="plate_detections",
        metadata={
            "detections": len(detections_df),
            "frames_with_plates": int((frames_df["detections"] > 0).sum()) if sampled else 0,
            "detector_version": detector.version,
            "detect_seconds": round(timings["detect_s"], 3),
            "crops_prefix": MetadataValue.path(prefix),
            "stale_crops_deleted": stale_deleted,
            "preview": MetadataValue.md(
                detections_df.head(10).drop(columns=["captured_at"]).to_markdown(index=False)
            )
            if len(detections_df)
            else MetadataValue.md("_no plates detected_"),
        },
    )
