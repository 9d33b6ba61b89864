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


@pytest.fixture(scope="module")
def synth_scenes() -> list[tuple[np.ndarray, list[Box]]]:
    """Rendered traffic scenes (vision/synth) with plates 10-20 % of the frame width."""
    from anpr_pipeline.vision import synth

    scenes = [
        synth.render_scene(np.random.default_rng(s), 960, 540, n_plates=2, min_plate_width=0.1)
        for s in range(6)
    ]
    return [(img, [box for box, _, _ in plates]) for img, plates in scenes]


def test_finds_plates_in_synthetic_scenes(detector: PlateDetector, synth_scenes) -> None:
    results = detector.detect([img for img, _ in synth_scenes])
    assert len(results) == len(synth_scenes)
    found = total = 0
    for (_, boxes), dets in zip(synth_scenes, results, strict=True):
        for box in boxes:
            total += 1
            found += any(d.box.iou(box) >= 0.5 for d in dets)
        assert all(0.0 <= d.score <= 1.0 for d in dets)
    # Measured: classical 7/11, cascade 9-10/11 (misses: small plates in shadow, and boxes
    # fitted to the text row only, IoU just under 0.5).
    assert found >= 0.6 * total, f"found {found} of {total} plates"


def test_finds_drawn_plates(detector: PlateDetector) -> None:
    """Plain light rectangles with dark text on a textured background: every detector finds most."""
    scenes = [_scene(seed) for seed in range(6)]
    results = detector.detect([img for img, _ in scenes])
    found = sum(
        any(d.box.iou(box) >= 0.5 for d in dets)
        for (_, boxes), dets in zip(scenes, results, strict=True)
        for box in boxes
    )
    # Measured: classical and cascade 11-12, cascade-hq 8 (its tighter text bands undersize
    # these tall plates whose text fills only ~1/3 of the height).
    assert found >= 8, f"found {found} of 12 drawn plates"


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


def test_unshipped_platenet_says_how_to_get_its_weights() -> None:
    from anpr_pipeline.vision.detector import PLATENET_WEIGHTS, WEIGHTS_DIR

    if (WEIGHTS_DIR / PLATENET_WEIGHTS).exists():
        pytest.skip("PlateNet weights are installed here")
    with pytest.raises(FileNotFoundError, match="anpr train detector --model platenet"):
        build_detector("platenet")


def test_box_variants_cover_the_box_and_its_shifts() -> None:
    from anpr_pipeline.vision.detector import box_variants, weighted_box

    box = Box(100, 50, 100, 40)
    variants = box_variants(box)
    assert len(variants) == 81 and box in variants
    assert min(v.x for v in variants) == 90 and max(v.x + v.w for v in variants) == 210
    assert weighted_box([Box(0, 0, 10, 10), Box(10, 10, 10, 10)], np.array([1.0, 1.0])) == Box(5, 5, 10, 10)


def test_refinement_tightens_loose_boxes_on_rendered_plates(synth_scenes) -> None:
    """A box grown well beyond its plate is pulled back towards the plate by the verifier."""
    from anpr_pipeline.vision.detector import CascadeDetector
    from anpr_pipeline.vision.types import Detection

    det = CascadeDetector(device="cpu")
    before, after = [], []
    for img, boxes in synth_scenes:
        loose = [
            Detection(
                Box(b.x - b.w // 8, b.y - b.h // 4, b.w + b.w // 4, b.h + b.h // 2).clip(*img.shape[1::-1]),
                0.9,
            )
            for b in boxes
        ]
        refined = det._refine([img], [loose])[0]
        before += [d.box.iou(b) for d, b in zip(loose, boxes, strict=True)]
        after += [d.box.iou(b) for d, b in zip(refined, boxes, strict=True)]
    assert np.mean(after) > np.mean(before) + 0.05, (np.mean(before), np.mean(after))


def test_clahe_pass_finds_locally_faded_plates(synth_scenes) -> None:
    """Plates whose surroundings keep only 30 % of their contrast (shade, grime, a faded
    plate on a sunlit frame): the equalised second pass proposes them where the plain one
    cannot, and keeps every box the plain pass found."""
    from dataclasses import replace

    from anpr_pipeline.vision.detector import PROPOSAL_PARAMS, CascadeDetector, ClassicalDetector

    faded = []
    for img, boxes in synth_scenes:
        img = img.copy()
        for b in boxes:
            region = np.s_[
                max(b.y - b.h // 2, 0) : b.y + b.h + b.h // 2, max(b.x - b.w // 3, 0) : b.x + b.w + b.w // 3
            ]
            patch = img[region].astype(np.float32)
            img[region] = np.clip(patch.mean() + 0.3 * (patch - patch.mean()), 0, 255).astype(np.uint8)
        faded.append((img, boxes))

    def found(params) -> int:
        results = CascadeDetector(device="cpu", proposals=params).detect([img for img, _ in faded])
        return sum(
            any(d.box.iou(b) >= 0.5 for d in dets)
            for (_, boxes), dets in zip(faded, results, strict=True)
            for b in boxes
        )

    plain_params = replace(PROPOSAL_PARAMS, clahe=False)
    assert PROPOSAL_PARAMS.clahe  # the shipped cascade uses the second pass; cascade-fast does not
    assert "+clahe" in build_detector("default", device="cpu").version
    assert "clahe" not in build_detector("cascade-fast", device="cpu").version
    with_clahe, plain = found(PROPOSAL_PARAMS), found(plain_params)
    # Measured on these 11 plates: plain 6, with the CLAHE pass 8.
    assert with_clahe >= plain + 2 and with_clahe >= 7, (plain, with_clahe)
    img = faded[0][0]
    plain_boxes = {d.box for d in ClassicalDetector(plain_params).detect_one(img)}
    assert plain_boxes <= {d.box for d in ClassicalDetector(PROPOSAL_PARAMS).detect_one(img)}
