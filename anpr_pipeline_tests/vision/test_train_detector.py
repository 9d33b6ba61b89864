"""`anpr train detector` runs end to end on a tiny labelled folder and its weights load."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from anpr_pipeline.vision.detector import CascadeDetector
from anpr_pipeline.vision.train_detector import main
from anpr_pipeline_tests.factories import write_labels_csv
from anpr_pipeline_tests.vision.test_detector import _scene


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rows = []
    for seed in range(4):
        img, boxes = _scene(seed, 640, 480)
        cv2.imwrite(str(root / f"{seed}.jpg"), img[:, :, ::-1])
        split = "valid" if seed == 3 else "train"
        rows += [[f"{seed}.jpg", b.x, b.y, b.w, b.h, split] for b in boxes]
    return write_labels_csv(root / "labels.csv", rows, last_column="split")


def test_train_verifier_smoke(tmp_path: Path) -> None:
    labels = _folder(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", str(labels), "--no-crops", "--minutes", "0.03"]
    assert main(argv) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["patches"] > report["positives"] > 0
    assert report["valid"][str(labels)]["boxes"] == 2
    detector = CascadeDetector(out / "plate_verifier.pt")
    assert detector.detect([np.zeros((120, 160, 3), np.uint8)]) == [[]]
