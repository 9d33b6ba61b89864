"""Test data factories shared across the suite."""

from __future__ import annotations

import csv
import os
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from anpr_pipeline.settings import Settings
from anpr_pipeline.uploads import TIMESTAMP_FORMAT


def event_row(
    captured_at: datetime,
    plate: str = "AB123CD",
    camera: str = "cam1",
    video_key: str | None = None,
    n: int = 0,
) -> dict:
    started = captured_at.replace(microsecond=0)
    video_key = video_key or f"uploads/{camera}/{started.strftime(TIMESTAMP_FORMAT)}.mp4"
    ts = video_key.rsplit("/", 1)[-1].split(".")[0]
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{video_key}#{n}")),
        "camera_id": camera,
        "captured_at": captured_at,
        "first_seen_at": captured_at - timedelta(seconds=1),
        "last_seen_at": captured_at + timedelta(seconds=1),
        "plate_text": plate,
        "normalized_plate": plate,
        "region": "eu",
        "confidence": 0.9,
        "char_confidences": [0.9] * len(plate),
        "bbox_x": 10,
        "bbox_y": 20,
        "bbox_w": 100,
        "bbox_h": 30,
        "frame_index": n,
        "frames_seen": 3,
        "video_key": video_key,
        "crop_key": f"crops/{camera}/{started.date().isoformat()}/{ts}/{n:06d}_0.jpg",
        "detector_version": "test-det",
        "reader_version": "test-read",
    }


def write_labels_csv(path: Path, rows: list[list], last_column: str = "plate") -> Path:
    """A ``file,x,y,w,h,<last_column>`` CSV (the format `anpr eval` and the trainers read)."""
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "x", "y", "w", "h", last_column], *rows])
    return path


def car_with_plate(seed: int, region: str):
    """A rendered plate on a rendered car (grey background): ``(rgb, plate box, text)``."""
    import numpy as np

    from anpr_pipeline.vision import synth
    from anpr_pipeline.vision.types import Box

    rng = np.random.default_rng(seed)
    text = synth.random_plate_text(region, rng)
    plate = synth.render_plate_rgba(text, region, rng, two_row=False, dirt=0.0)
    vehicle = synth.make_vehicle(plate, region, rng, width=640, context=(0.6, 1.2))
    x0, y0, x1, y1 = vehicle.plate_box
    rgb = np.ascontiguousarray(synth._over(vehicle.sprite, (90, 90, 90)))
    return rgb, Box(round(x0), round(y0), round(x1 - x0), round(y1 - y0)), synth.normalize(text)


def loose_box(plate, grow: tuple[float, float], width: int, height: int):
    """``plate`` grown by ``grow`` x its width/height on each side (a detector box that took
    the plate with its holder), clipped to the image."""
    from anpr_pipeline.vision.types import Box

    gx, gy = grow
    box = Box(
        round(plate.x - gx * plate.w),
        round(plate.y - gy * plate.h),
        round(plate.w * (1 + 2 * gx)),
        round(plate.h * (1 + 2 * gy)),
    )
    return box.clip(width, height)


def embedded_settings(root: Path) -> Settings:
    """The embedded default (local bucket, SQLite) under ``root``, with the detector and
    reader a CI job may choose through ANPR_DETECTOR / ANPR_READER."""
    return replace(
        Settings(),
        data_dir=str(root),
        bucket_dir=str(root / "bucket"),
        database_url=f"sqlite:///{root / 'events.db'}",
        reader=os.environ.get("ANPR_READER", "default"),
        detector=os.environ.get("ANPR_DETECTOR", "default"),
    )
