"""The plate detectors find plates in synthetic scenes and nothing in blank images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anpr_pipeline.vision.detector import build_detector
from anpr_pipeline.vision.types import Box, PlateDetector


def _scene(seed: int, width: int = 1280, height: int = 720) -> tuple[np.ndarray, list[Box]]:
    """A textured background with two 'cars', each with a light plate holding dark text."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(100, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    boxes = []
    for i in range(2):
        cx, cy = 120 + i * (width // 2), int(rng.integers(200, height - 220))
        cv2.rectangle(img, (cx, cy), (cx + 300, cy + 180), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        pw = int(rng.integers(90, 160))
        ph = int(pw / rng.uniform(2.0, 4.5))
        px, py = cx + (300 - pw) // 2, cy + 180 - ph - 15
        cv2.rectangle(img, (px, py), (px + pw, py + ph), (235, 235, 230), -1)
        text = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVXYZ0123456789"), 7))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
        fs = min(0.7 * ph / th, (pw - 10) / tw)
        thick = max(1, round(fs * 2))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, thick)
        org = (px + (pw - tw) // 2, py + (ph + th) // 2)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, fs, (20, 20, 20), thick, cv2.LINE_AA)
        boxes.append(Box(px, py, pw, ph))
    return img, boxes


@pytest.fixture(scope="module", params=["classical", "default", "cascade-hq"])
def detector(request: pytest.FixtureRequest) -> PlateDetector:
    return build_detector(request.param, device="cpu")


def test_detector_has_version(detector: PlateDetector) -> None:
    assert isinstance(detector, PlateDetector)
    assert detector.version


def test_finds_plates_in_synthetic_scenes(detector: PlateDetector) -> None:
    scenes = [_scene(seed) for seed in range(6)]
    results = detector.detect([img for img, _ in scenes])
    assert len(results) == len(scenes)
    found = total = 0
    for (_, boxes), dets in zip(scenes, results, strict=True):
        for box in boxes:
            total += 1
            found += any(d.box.iou(box) >= 0.5 for d in dets)
        assert all(0.0 <= d.score <= 1.0 for d in dets)
    assert found >= total - 1, f"found {found} of {total} plates"


def test_no_detections_on_blank_images(detector: PlateDetector) -> None:
    blank = [np.full((720, 1280, 3), 128, np.uint8), np.zeros((480, 640, 3), np.uint8)]
    assert detector.detect(blank) == [[], []]


def test_default_detector_finds_plates_in_synthetic_video_frames(tmp_path) -> None:
    """The demo's frames (vision/synth.make_video): the default detector must find their plates."""
    from anpr_pipeline.vision import synth
    from anpr_pipeline.vision.decode import iter_frames

    truth = synth.make_video(tmp_path / "v.mp4", seed=3, width=640, height=360, seconds=2.0, vehicles=2)
    frames = [f for f in iter_frames(tmp_path / "v.mp4") if f.source_index % 5 == 0]
    results = build_detector("default", device="cpu").detect([f.image for f in frames])
    found = total = 0
    for frame, dets in zip(frames, results, strict=True):
        for vehicle in truth["vehicles"]:
            box = vehicle["boxes"].get(frame.source_index)
            if box is not None:
                total += 1
                found += any(d.box.iou(Box(*box)) >= 0.5 for d in dets)
    assert total > 0
    assert found >= 0.8 * total, f"found {found} of {total} plates in video frames"


def test_unknown_detector_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("no-such-detector")
