"""read_plates' box placement (where the reader found the plate, in image pixels), and
which reads are reported as plates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from anpr_pipeline.assets.reads import with_reads
from anpr_pipeline.vision.plates import normalize
from anpr_pipeline.vision.reader import build_reader
from anpr_pipeline.vision.recognize import CROP_PAD, fitting_formats, located, plate_box, reported_plates
from anpr_pipeline.vision.types import Box, Detection, PlateRead
from anpr_pipeline_tests.factories import car_with_plate, loose_box


def _read(box: Box | None) -> PlateRead:
    return PlateRead("AB123", "AB123", 0.9, (0.9,) * 5, None, box)


def test_plate_box_maps_crop_pixels_through_the_padded_clipped_crop() -> None:
    box = Box(100, 50, 200, 40)  # padded by 0.1: origin (80, 46)
    assert plate_box(box, _read(Box(30, 5, 120, 28)), 640, 480, 0.1) == Box(110, 51, 120, 28)
    near_edge = Box(5, 2, 200, 40)  # the pad is clipped at the image edge: origin (0, 0)
    assert plate_box(near_edge, _read(Box(30, 5, 120, 28)), 640, 480, 0.1) == Box(30, 5, 120, 28)
    assert plate_box(box, _read(None), 640, 480, 0.1) == box


def test_a_box_that_held_the_plate_with_its_holder_becomes_the_plate() -> None:
    """Real reader, rendered cars: the detection cut with its holder moves onto the plate
    when the reader re-reads the plate's character row."""
    reader = build_reader("crnn", device="cpu")
    moved = fitted = 0
    for seed in range(8):
        image, plate, _ = car_with_plate(200 + seed, ("us", "eu", "br")[seed % 3])
        height, width = image.shape[:2]
        detection = Detection(loose_box(plate, (0.3, 0.6), width, height), 0.9)
        assert detection.box.iou(plate) < 0.4
        (read,) = reader.read([detection.box.crop(image, pad=CROP_PAD)])
        placed, same_read = located(detection, read, width, height)
        assert same_read is read and placed.score == detection.score
        if read.box is None:
            assert placed == detection
            continue
        moved += 1
        fitted += placed.box.iou(plate) >= 0.5
    print(f"holder boxes moved onto the plate: {fitted} of {moved} re-read (8 in all)")
    assert moved >= 5 and fitted >= moved - 1


def test_plate_reads_table_takes_the_located_box_and_keeps_the_rest() -> None:
    detections = pd.DataFrame(
        [
            {"sample_index": 0, "det_index": 0, "x": 100, "y": 50, "w": 200, "h": 40, "crop_key": "a"},
            {"sample_index": 1, "det_index": 0, "x": 300, "y": 60, "w": 100, "h": 30, "crop_key": "b"},
        ]
    )
    table = with_reads(detections, [_read(Box(30, 5, 120, 28)), _read(None)], (640, 480), 0.1)
    assert table[["x", "y", "w", "h"]].values.tolist() == [[110, 51, 120, 28], [300, 60, 100, 30]]
    assert list(table["normalized_plate"]) == ["AB123", "AB123"]
    assert detections["x"].tolist() == [100, 300]  # the detections table is not modified
    empty = with_reads(detections.iloc[:0], [], (640, 480), 0.1)
    assert empty.empty and "normalized_plate" in empty.columns
    assert np.issubdtype(table["x"].dtype, np.integer)


def test_only_reads_the_pipeline_would_report_count_as_found_plates() -> None:
    def pair(text: str, confidence: float) -> tuple[Detection, PlateRead]:
        x = 100 * len(pairs)  # side by side: none inside another
        pairs.append(text)
        return Detection(Box(x, 0, 80, 40), 0.9), PlateRead(text, normalize(text), confidence)

    pairs: list[str] = []
    boxes = [pair("ABC123", 0.9), pair("AB1", 0.99), pair("ABC-123", 0.2), pair("SLOGAN", 0.5)]
    kept = reported_plates(boxes, min_confidence=0.3)
    assert [r.text for _, r in kept] == ["ABC123", "SLOGAN"]  # too short and too unsure dropped
    assert [r.text for _, r in reported_plates(boxes, 0.6)] == ["ABC123"]
    no_reader = [(d, None) for d, _ in boxes]
    assert reported_plates(no_reader, 0.3) == no_reader  # --reader none: every box


def _pair(box: tuple[int, int, int, int], text: str, confidence: float) -> tuple[Detection, PlateRead]:
    return Detection(Box(*box), 0.9), PlateRead(text, normalize(text), confidence)


def test_fitting_formats_keeps_reads_of_a_plate_format_and_boxes_without_a_read() -> None:
    plate, badge, gb = (
        _pair((0, 0, 90, 30), "ABC1D23", 0.9),
        _pair((100, 0, 90, 30), "CARBRAXX", 0.99),
        _pair((200, 0, 90, 30), "AB12CDE", 0.9),
    )
    unread = (Detection(Box(300, 0, 90, 30), 0.9), None)
    assert fitting_formats([plate, badge, gb, unread]) == [plate, gb, unread]
    assert fitting_formats([plate, badge, gb, unread], ["br"]) == [plate, unread]


def test_text_inside_a_surer_plate_read_is_not_reported() -> None:
    plate = _pair((100, 100, 200, 60), "ABC1234", 0.98)
    state = _pair((120, 96, 100, 20), "IOWA", 0.7)  # the plate's header line
    unsure_plate_in_sure_frame = _pair((100, 100, 200, 60), "ABC1234", 0.6)
    dealer_frame = _pair((80, 80, 240, 110), "CARBRAXX", 0.99)
    assert reported_plates([plate, state], 0.3) == [plate]
    # Only a surer read holds one back: a confident read of a loose frame box would drop
    # the plate inside it, but not the reverse.
    assert reported_plates([unsure_plate_in_sure_frame, dealer_frame], 0.3) == [dealer_frame]
    assert reported_plates([plate, _pair((80, 80, 240, 110), "CARBRAXX", 0.5)], 0.3) == [
        plate,
        _pair((80, 80, 240, 110), "CARBRAXX", 0.5),
    ]


def test_rim_text_under_a_tightly_boxed_plate_is_not_reported() -> None:
    plate = _pair((844, 572, 206, 68), "FOA8988", 1.0)  # box fitted to the character row
    slogan = _pair((925, 632, 74, 18), "NYN81AY", 0.84)  # mostly below that box, on the rim
    behind = _pair((900, 640, 100, 40), "KLM4455", 0.9)  # a plate of its own just below
    assert reported_plates([plate, slogan], 0.3) == [plate]
    assert reported_plates([plate, behind], 0.3) == [plate, behind]
