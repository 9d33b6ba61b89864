"""Test data factories shared across the suite."""

from __future__ import annotations

import csv
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from anpr_pipeline.uploads import TIMESTAMP_FORMAT


def event_row(captured_at: datetime, plate: str = "AB123CD", camera: str = "cam1",
              video_key: str | None = None, n: int = 0) -> dict:
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
        "bbox_x": 10, "bbox_y": 20, "bbox_w": 100, "bbox_h": 30,
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
