"""``frames`` + ``plate_detections``: decode once, stream sampled frames into the detector.

One multi-asset because decoding is the CPU floor: frames go straight from the decoder to
the detector in batches and are never stored as images (unless ``keep_frames``). Crops are
cut from the full-resolution frame and written to the bucket off the hot path.
"""


import io
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import islice

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetOut, MetadataValue, Output, multi_asset
from PIL import Image

from anpr_pipeline.assets.common import decode_failure, local_copy
from anpr_pipeline.deploy_tags import GPU_OP_TAGS
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.models import ModelsResource
from anpr_pipeline.resources.object_store import AsyncUploader, ObjectStoreResource
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.vision.decode import SampledFrame, VideoDecodeError, iter_frames

FRAME_COLUMNS = ["sample_index", "source_index", "pts_s", "captured_at", "detections", "skipped_static"]
DETECTION_COLUMNS = ["sample_index", "det_index", "pts_s", "captured_at", "x", "y", "w", "h", "score", "crop_key"]


def crop_prefix(camera_id: str, started_at: datetime, timestamp: str) -> str:
    return f"crops/{camera_id}/{started_at.date().isoformat()}/{timestamp}/"


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def batched(items: Iterable[SampledFrame], size: int) -> Iterator[list[SampledFrame]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _is_static(previous: np.ndarray | None, image: np.ndarray, threshold: float) -> tuple[bool, np.ndarray]:
    """Cheap motion gate on a 1/8-scale grey thumbnail."""
    thumb = image[::8, ::8].mean(axis=2, dtype=np.float32)
    if previous is None or threshold <= 0:
        return False, thumb
    return float(np.abs(thumb - previous).mean()) < threshold, thumb


@multi_asset(
    outs={
        "frames": AssetOut(
            description="Manifest of sampled frames: index, true pts time, captured_at (UTC).",
            kinds={"pandas"},
            group_name="vision",
            owners=["team:traffic-ops"],
        ),
        "plate_detections": AssetOut(
            description="Plate boxes per sampled frame; each crop is written once as JPEG to the bucket.",
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
    existing_crops = {info.key for info in store.list(prefix)}  # crops are written once, never rewritten
    frame_rows: list[dict] = []
    det_rows: list[dict] = []
    timings = {"decode_detect_s": 0.0, "detect_s": 0.0}
    t0 = time.perf_counter()
    previous_thumb = None
    with local_copy(store, video["video_key"]) as path, AsyncUploader(store) as uploader:
        try:
            for batch in batched(iter_frames(path, sample_fps=video["sample_fps"]), models.detector_batch_size):
                moving = []
                for frame in batch:
                    static, previous_thumb = _is_static(previous_thumb, frame.image, pipeline.static_frame_threshold)
                    captured_at = started_at + timedelta(seconds=frame.pts_s)
                    frame_rows.append({"sample_index": frame.index, "source_index": frame.source_index,
                                       "pts_s": frame.pts_s, "captured_at": captured_at, "detections": 0,
                                       "skipped_static": static})
                    if not static:
                        moving.append((frame, frame_rows[-1]))
                        if pipeline.keep_frames:
                            uploader.submit(f"{prefix}frames/{frame.source_index:06d}.jpg", jpeg_bytes(frame.image))
                if not moving:
                    continue
                t_det = time.perf_counter()
                results = detector.detect([frame.image for frame, _ in moving])
                timings["detect_s"] += time.perf_counter() - t_det
                for (frame, row), detections in zip(moving, results, strict=True):
                    row["detections"] = len(detections)
                    for n, det in enumerate(detections):
                        key = f"{prefix}{frame.source_index:06d}_{n}.jpg"
                        if key not in existing_crops:
                            crop = det.box.crop(frame.image, pad=pipeline.crop_padding)
                            uploader.submit(key, jpeg_bytes(crop), "image/jpeg")
                        det_rows.append({"sample_index": frame.index, "det_index": n, "pts_s": frame.pts_s,
                                         "captured_at": row["captured_at"], "x": det.box.x, "y": det.box.y,
                                         "w": det.box.w, "h": det.box.h, "score": float(det.score),
                                         "crop_key": key})
        except VideoDecodeError as exc:
            raise decode_failure(exc, video["video_key"]) from exc
    timings["decode_detect_s"] = time.perf_counter() - t0
    frames_df = pd.DataFrame(frame_rows, columns=FRAME_COLUMNS)
    detections_df = pd.DataFrame(det_rows, columns=DETECTION_COLUMNS)
    sampled = len(frames_df)
    yield Output(
        frames_df,
        output_name="frames",
        metadata={
            "sampled_frames": sampled,
            "skipped_static": int(frames_df["skipped_static"].sum()) if sampled else 0,
            "sample_fps": video["sample_fps"],
            "frames_per_second": round(sampled / timings["decode_detect_s"], 2) if timings["decode_detect_s"] else 0.0,
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
            "preview": MetadataValue.md(detections_df.head(10).drop(columns=["captured_at"]).to_markdown(index=False))
            if len(detections_df) else MetadataValue.md("_no plates detected_"),
        },
    )
