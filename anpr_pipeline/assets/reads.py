"""``plate_reads``: OCR every detected crop in batches (text, per-character confidence, format)."""

import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from anpr_pipeline.assets.common import mask_plate
from anpr_pipeline.checks import READS_CONFIDENCE, check_read_confidence
from anpr_pipeline.deploy_tags import GPU_OP_TAGS
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.models import ModelsResource
from anpr_pipeline.resources.object_store import ObjectStore, ObjectStoreResource
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.settings import parse_regions
from anpr_pipeline.vision.plates import FORMATS
from anpr_pipeline.vision.reader import with_regions
from anpr_pipeline.vision.recognize import plate_box
from anpr_pipeline.vision.types import Box, PlateRead
from anpr_pipeline.vision.video_pipeline import read_crops, rgb_from_jpeg

READ_COLUMNS = ["plate_text", "normalized_plate", "read_confidence", "char_confidences", "region"]


def load_crop(store: ObjectStore, key: str) -> np.ndarray:
    return rgb_from_jpeg(store.get_bytes(key))


def with_reads(
    detections: pd.DataFrame, reads: list[PlateRead], frame_size: tuple[int, int], crop_padding: float
) -> pd.DataFrame:
    """The ``plate_reads`` table: each detection row with its read (``READ_COLUMNS``).

    Where the reader found the plate inside a loose crop (the text-row re-read), the row's
    box becomes that plate box (``recognize.plate_box``): what events and analysts get is the
    plate, not the plate with its holder. ``frame_size``: (width, height) of the frames the
    crops were cut from, padded by ``crop_padding``.
    """
    df = detections.copy()
    if df.empty:
        return df.reindex(columns=list(detections.columns) + READ_COLUMNS)
    width, height = frame_size
    boxes = [
        plate_box(Box(int(row.x), int(row.y), int(row.w), int(row.h)), read, width, height, crop_padding)
        for row, read in zip(df.itertuples(index=False), reads, strict=True)
    ]
    df[["x", "y", "w", "h"]] = [[b.x, b.y, b.w, b.h] for b in boxes]
    df["plate_text"] = [r.text for r in reads]
    df["normalized_plate"] = [r.normalized for r in reads]
    df["read_confidence"] = [float(r.confidence) for r in reads]
    df["char_confidences"] = [list(r.char_confidences) for r in reads]
    df["region"] = [r.region for r in reads]
    return df


def video_regions(video_region: str | None, default: list[str] | None) -> list[str] | None:
    """The plate regions to read a video with: its upload sidecar's ``region`` when it is
    one the reader has formats for (us, eu, br), else the deployment's ANPR_PLATE_REGIONS."""
    return [video_region] if video_region in FORMATS else default


@asset(
    ins={"plate_detections": AssetIn(), "video": AssetIn()},
    partitions_def=videos_partitions,
    group_name="vision",
    kinds={"pandas", "pytorch"},
    owners=["team:traffic-ops"],
    check_specs=[READS_CONFIDENCE],
    pool="gpu",
    op_tags={"anpr/stage": "read", **GPU_OP_TAGS},  # GPU node pool on Kubernetes
    description="Plate text read from each detection's crop: raw and normalised text, confidence, "
    "per-character confidences and the matched regional format.",
)
def plate_reads(
    context: AssetExecutionContext,
    plate_detections: pd.DataFrame,
    video: dict,
    bucket: ObjectStoreResource,
    models: ModelsResource,
    pipeline: PipelineConfig,
):
    store = bucket.get_store()
    regions = video_regions(video.get("region"), parse_regions(models.plate_regions))
    reader = with_regions(models.get_reader(), regions)
    keys = list(plate_detections["crop_key"])
    started = time.perf_counter()
    # Shared with `anpr bench` (vision/video_pipeline.py): crops are read in reader batches.
    reads = read_crops(keys, lambda key: load_crop(store, key), reader, models.reader_batch_size)
    seconds = time.perf_counter() - started
    df = with_reads(plate_detections, reads, (video["width"], video["height"]), pipeline.crop_padding)
    df["reader_version"] = reader.version  # carried to plate_events with the reads
    yield Output(
        df,
        metadata={
            "reads": len(df),
            "reader_version": reader.version,
            "plate_regions": ", ".join(regions) if regions else "any",
            "crops_per_second": round(len(df) / seconds, 2) if seconds > 0 and len(df) else 0.0,
            "distinct_texts": int(df["normalized_plate"].nunique()) if len(df) else 0,
            "preview": MetadataValue.md(
                df[["sample_index", "normalized_plate", "read_confidence", "region"]]
                .head(15)
                .assign(
                    normalized_plate=lambda d: [
                        mask_plate(p, pipeline.show_plates_in_ui) for p in d.normalized_plate
                    ]
                )
                .to_markdown(index=False)
            )
            if len(df)
            else MetadataValue.md("_no reads_"),
        },
    )
    yield check_read_confidence(
        list(df["read_confidence"]), pipeline.min_read_confidence, pipeline.low_confidence_share_max
    )
