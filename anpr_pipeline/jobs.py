"""Jobs. ``process_video`` runs the per-video asset chain for one video partition."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

PER_VIDEO_ASSETS = AssetSelection.assets("video", "frames", "plate_detections", "plate_reads", "plate_events")

process_video_job = define_asset_job(
    name="process_video",
    selection=PER_VIDEO_ASSETS,
    description="Probe, decode, detect, read and track one uploaded video into plate events.",
    tags={"anpr/kind": "process_video"},
)
