"""``plate_events``: per-frame reads -> one event per vehicle pass, in the events DB and Parquet.

Writes are idempotent: event ids are uuid5(video key, track id), the DB write replaces the
video's rows in one transaction, and the video's Parquet files are replaced whole.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetObservation,
    MetadataValue,
    Output,
    asset,
)

from anpr_pipeline.assets.common import mask_plate, recorded_metadata
from anpr_pipeline.assets.detections import crop_prefix
from anpr_pipeline.assets.reads import video_regions
from anpr_pipeline.checks import EVENTS_CONSISTENT, check_events
from anpr_pipeline.ops.gdpr import crops_in_spans, frame_of, frame_rate, pass_span, split_erased
from anpr_pipeline.ops.locks import data_lock
from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline.ops.retention import delete_step_outputs
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.event_store import EventStoreResource
from anpr_pipeline.resources.models import ModelsResource
from anpr_pipeline.resources.object_store import ObjectStore, ObjectStoreResource
from anpr_pipeline.resources.parquet_dataset import (
    day_of_key,
    days_spanned,
    video_event_keys,
    write_video_events,
)
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.settings import parse_regions
from anpr_pipeline.uploads import sibling_upload_keys
from anpr_pipeline.vision.plates import fits_format, normalize, reportable
from anpr_pipeline.vision.tracker import (
    FrameRead,
    Track,
    glimpse_of_another,
    inside_another,
    seen_only_at_edge,
    track_reads,
)
from anpr_pipeline.vision.types import Box, PlateRead

# Fixed namespace: event ids must be the same on every re-run and every machine.
EVENT_NAMESPACE = uuid.UUID("6f1c2f8e-54a4-4a8e-9a57-3b1d2c0e7a11")


def frame_reads(reads: pd.DataFrame) -> list[FrameRead]:
    return [
        FrameRead(
            frame_index=int(row.sample_index),
            pts_s=float(row.pts_s),
            box=Box(int(row.x), int(row.y), int(row.w), int(row.h)),
            read=PlateRead(
                text=str(row.plate_text),
                normalized=str(row.normalized_plate),
                confidence=float(row.read_confidence),
                char_confidences=tuple(float(c) for c in row.char_confidences),
                region=None if pd.isna(row.region) else str(row.region),
            ),
            detection_score=float(row.score),
            crop_key=str(row.crop_key),
        )
        for row in reads.itertuples(index=False)
    ]


def event_row(track: Track, video: dict, detector_version: str, reader_version: str) -> dict:
    started_at = datetime.fromisoformat(video["started_at"])
    best = track.best
    return {
        "event_id": str(uuid.uuid5(EVENT_NAMESPACE, f"{video['video_key']}#{track.track_id}")),
        "camera_id": video["camera_id"],
        "captured_at": started_at + timedelta(seconds=best.pts_s),
        "first_seen_at": started_at + timedelta(seconds=track.first_pts_s),
        "last_seen_at": started_at + timedelta(seconds=track.last_pts_s),
        # As read on the best frame (keeps its spacing/dashes) when it agrees with the vote.
        "plate_text": best.read.text if normalize(best.read.text) == track.text else track.text,
        "normalized_plate": track.text,
        "region": track.region or video.get("region"),
        "confidence": float(track.confidence),
        "char_confidences": [float(c) for c in track.char_confidences],
        "bbox_x": best.box.x,
        "bbox_y": best.box.y,
        "bbox_w": best.box.w,
        "bbox_h": best.box.h,
        "frame_index": best.frame_index,
        "frames_seen": track.frames_seen,
        "video_key": video["video_key"],
        "crop_key": best.crop_key,
        "detector_version": detector_version,
        "reader_version": reader_version,
    }


def keep_track(track: Track, pipeline: PipelineConfig, regions: Sequence[str] | None = None) -> bool:
    """Drop what cannot be a plate: too short to be any format, or read too unsure to act on.

    A vehicle passing a camera is sampled several times; a read seen in a single frame is
    kept only when it is confident (the demo's spurious events were all single-frame reads
    below 0.6) and fits a plate format (lone unformatted reads were state names and plate
    fragments: `NORTHCAROLINA` pieces, `7743` of `JTC7743`). With
    ``pipeline.require_plate_format`` every track must fit a format of ``regions`` (the
    video's plate regions; None: any region's).
    """
    if not reportable(track.text, track.confidence, pipeline.min_plate_chars, pipeline.min_read_confidence):
        return False
    if pipeline.require_plate_format and not fits_format(track.text, regions):
        return False
    if track.frames_seen > 1:
        return True
    formatted = track.region is not None or not pipeline.single_frame_needs_format
    return formatted and track.confidence >= pipeline.single_frame_min_confidence


def event_tracks(
    tracks: list[Track],
    pipeline: PipelineConfig,
    frame_size: tuple[int, int],
    regions: Sequence[str] | None = None,
) -> list[Track]:
    """The tracks that become events: those :func:`keep_track` keeps, less plates only ever
    seen cut by the frame edge and text inside another plate's boxes (``PipelineConfig``
    ``drop_edge_tracks`` / ``drop_nested_tracks``), and single-frame glimpses of another
    track (``drop_glimpse_tracks``). ``frame_size``: (width, height);
    ``regions``: the video's plate regions (None: any)."""
    kept = [t for t in tracks if keep_track(t, pipeline, regions)]
    if pipeline.drop_edge_tracks:
        kept = [t for t in kept if not seen_only_at_edge(t, *frame_size)]
    if pipeline.drop_nested_tracks:
        kept = [t for t in kept if inside_another(t, kept) is None]
    if pipeline.drop_glimpse_tracks:
        kept = [t for t in kept if glimpse_of_another(t, kept) is None]
    return kept


def video_span(video: dict) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(video["started_at"])
    # One frame of slack: the last sampled frame's pts can equal the declared duration.
    return start, start + timedelta(
        seconds=float(video["duration_s"]) + 1.0 / max(float(video["fps"] or 1), 1.0)
    )


# SigV4 presigned URLs live at most 7 days: thumbnails in old runs turn into broken links,
# as do crops erased by retention or erase_plate (only the link is in the event log).
THUMBNAIL_URL_SECONDS = 7 * 24 * 3600
# The partition's recent runs' announced Parquet files (one observation per run).
OBSERVATIONS_READ = 50


def crop_cell(key: str, url: str | None) -> str:
    """A thumbnail where the browser can fetch the crop (S3 presigned URL), else its key."""
    return f"![crop]({url})" if url and url.startswith("http") else f"`{key}`"


def events_markdown(
    rows: list[dict], show_plates: bool = False, limit: int = 25, urls: dict[str, str] | None = None
) -> str:
    if not rows:
        return "_no plate events in this video_"
    lines = [
        "| captured_at (UTC) | plate | region | confidence | frames | crop |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows[:limit]:
        lines.append(
            f"| {row['captured_at']:%Y-%m-%d %H:%M:%S} | **{mask_plate(row['normalized_plate'], show_plates)}** | {row['region'] or ''} "
            f"| {row['confidence']:.2f} | {row['frames_seen']} | {crop_cell(row['crop_key'], (urls or {}).get(row['crop_key']))} |"
        )
    if len(rows) > limit:
        lines.append(f"\n… and {len(rows) - limit} more")
    return "\n".join(lines)


def model_versions(plate_reads: pd.DataFrame, models: ModelsResource) -> tuple[str, str]:
    """(detector_version, reader_version) of the models that made these reads, from their
    columns: not the configured ones, which may have changed since (plate_events re-executed
    alone), and without loading a model here. Reads stored before the columns existed fall
    back to the configured models."""
    detector = plate_reads.get("detector_version")
    reader = plate_reads.get("reader_version")
    return (
        str(detector.iloc[0]) if detector is not None else models.get_detector().version,
        str(reader.iloc[0]) if reader is not None else models.get_reader().version,
    )


def previous_parquet_files(context: AssetExecutionContext) -> list[str]:
    """The Parquet files earlier runs of this partition wrote: the latest materialization's
    (its metadata), and those announced by runs that then failed before materializing
    (the observation each run records before it writes)."""
    recorded = recorded_metadata(context, context.asset_key, "parquet_files", OBSERVATIONS_READ)
    return sorted({str(key) for keys in recorded for key in keys})


def delete_erased_crops(
    store: ObjectStore, video: dict, reads: pd.DataFrame, kept: list[dict], erased: list[dict]
) -> int:
    """Delete the crops (and kept frames) the detector stored while an erased plate's vehicle
    was in view, as ``erase_plate`` does, except crops the kept events name. A frame's time
    is its read's (every detection has a row in ``plate_reads``); frames without one (kept
    frames with no detection) are timed by the frame rate the rows imply (a sidecar's fps
    hint can be wrong), else the probe's; with neither they are left."""
    if not erased:
        return 0
    started = datetime.fromisoformat(video["started_at"])
    keep = {r["crop_key"] for r in kept}
    read_times = (
        {
            frame: float(pts)
            for key, pts in zip(reads["crop_key"], reads["pts_s"], strict=True)
            if (frame := frame_of(str(key))) is not None
        }
        if len(reads)
        else {}
    )
    fps = frame_rate([*kept, *erased], started) or (float(video["fps"]) if video.get("fps") else None)

    def seconds_of(frame: int) -> float | None:
        return read_times.get(frame, frame / fps if fps else None)

    prefix = crop_prefix(video["camera_id"], started, video["timestamp"])
    doomed = crops_in_spans(
        (info.key for info in store.list(prefix)),
        seconds_of,
        [pass_span(r, started) for r in erased],
        keep,
        take_untimed=False,
    ) | ({r["crop_key"] for r in erased if r["crop_key"]} - keep)
    return store.delete(sorted(doomed)) if doomed else 0


def affected_days(span: tuple[datetime, datetime], previous_files: Sequence[str]) -> list[str]:
    """UTC days (ISO) whose events this run may have changed: every day of the video's span
    (new events, and events a re-run no longer finds) plus the days an earlier run wrote
    files for (a sidecar since moved the video). ``stale_daily_stats_sensor`` reads them."""
    days = set(days_spanned(*span)) | {d for d in map(day_of_key, previous_files) if d is not None}
    return sorted(d.isoformat() for d in days)


@asset(
    ins={"video": AssetIn(), "plate_reads": AssetIn()},
    partitions_def=videos_partitions,
    group_name="events",
    kinds={"postgres", "parquet"},
    owners=["team:traffic-ops"],
    check_specs=[EVENTS_CONSISTENT],
    description="One event per vehicle pass (tracking + multi-frame text vote), written to the events "
    "database (replacing this video's rows) and to the hive-partitioned Parquet dataset.",
)
def plate_events(
    context: AssetExecutionContext,
    video: dict,
    plate_reads: pd.DataFrame,
    bucket: ObjectStoreResource,
    events_db: EventStoreResource,
    models: ModelsResource,
    pipeline: PipelineConfig,
    ops_settings: OpsSettings,
):
    tracks = track_reads(frame_reads(plate_reads)) if len(plate_reads) else []
    regions = video_regions(video.get("region"), parse_regions(models.plate_regions))
    kept = event_tracks(tracks, pipeline, (video["width"], video["height"]), regions)
    versions = model_versions(plate_reads, models) if kept else ("", "")
    rows = sorted((event_row(t, video, *versions) for t in kept), key=lambda r: r["captured_at"])
    store = events_db.get_store()
    bucket_store = bucket.get_store()
    span = video_span(video)
    previous = previous_parquet_files(context)
    # Shared with other videos' writes; an erase, archive or retention run waits for it, and
    # it for them: an erase in between would miss these rows or be undone by them.
    with data_lock(store, f"plate_events {context.partition_key}", shared=True):
        rows, erased = split_erased(rows, store, ops_settings.gdpr_salt)
        # Rows an earlier run stored from another upload of this partition (.mov beside .mp4,
        # one since deleted) are this video's events too: replaced, not kept beside the new ones.
        written = store.replace_video_events(
            video["video_key"], rows, sibling_upload_keys(video["video_key"])
        )
        # Recorded before the files are written: a run that dies after writing them but before
        # its materialization is still known to the next run, which removes them if the video
        # has moved (a sidecar) by then.
        planned = video_event_keys(video["camera_id"], video["timestamp"], rows)
        context.log_event(
            AssetObservation(
                asset_key=context.asset_key,
                partition=context.partition_key,
                metadata={"parquet_files": MetadataValue.json(planned)},
            )
        )
        parquet_keys = write_video_events(bucket_store, video["camera_id"], video["timestamp"], rows, span)
        # Files an earlier run of this partition wrote under other names (a sidecar since moved
        # the video to another camera or day) would count its events twice.
        superseded = [k for k in previous if k not in parquet_keys and bucket_store.exists(k)]
        if superseded:
            bucket_store.delete(superseded)
        erased_crops = delete_erased_crops(bucket_store, video, plate_reads, rows, erased)
    if erased:
        # The upstream step outputs of this run hold the erased plate's per-frame reads, as
        # those erase_plate deleted did (this asset's own output is written after, without it).
        outputs = delete_step_outputs({context.partition_key}, bucket_store, ops_settings.io_manager_dir)
        context.log.info(
            f"dropped {len(erased)} pass(es) of erased plates, {erased_crops} of their crops "
            f"and {outputs} step output(s) holding their reads"
        )
    stored = store.events_for_video(video["video_key"])
    thumbnails = {
        r["crop_key"]: bucket_store.url(r["crop_key"], expires_s=THUMBNAIL_URL_SECONDS) for r in rows[:25]
    }
    df = pd.DataFrame(rows)
    yield Output(
        df,
        metadata={
            "events": len(rows),
            "tracks": len(tracks),
            "dropped_tracks": len(tracks) - len(kept),
            "rows_written": written,
            "plates": ", ".join(
                mask_plate(r["normalized_plate"], pipeline.show_plates_in_ui) for r in rows[:20]
            ),
            "parquet_files": MetadataValue.json(parquet_keys),
            "affected_days": MetadataValue.json(affected_days(span, previous)),
            "superseded_parquet_files_deleted": len(superseded),
            "erased_plate_passes_dropped": len(erased),
            "events_table": MetadataValue.md(
                events_markdown(rows, pipeline.show_plates_in_ui, urls=thumbnails)
            ),
        },
    )
    yield check_events(stored, span)
