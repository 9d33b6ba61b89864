"""Character-row finder (vision/text_row.py) and the reader's re-read of loose crops."""

from __future__ import annotations

import numpy as np
import pytest

from anpr_pipeline.vision import synth
from anpr_pipeline.vision.reader import _extends, _only_lost, _widened, build_reader, text_row_box
from anpr_pipeline.vision.text_row import find_text_box
from anpr_pipeline.vision.types import Box, PlateRead
from anpr_pipeline_tests.factories import car_with_plate, loose_box


def _loose_crop(seed: int, region: str, grow: tuple[float, float]) -> tuple[np.ndarray, Box, str]:
    """A rendered plate on a car, cut with ``grow`` x the plate's width/height of car around
    it on each side (the way a detector box that includes the holder cuts it)."""
    rgb, plate, text = car_with_plate(seed, region)
    box = loose_box(plate, grow, rgb.shape[1], rgb.shape[0])
    crop = np.ascontiguousarray(box.crop(rgb))
    return crop, plate.shifted(-box.x, -box.y), text


def test_row_of_a_plate_boxed_with_its_holder_is_found_inside_the_plate() -> None:
    hits = 0
    for seed in range(10):
        crop, plate, _ = _loose_crop(seed, ("us", "eu", "br")[seed % 3], grow=(0.25, 0.45))
        found = find_text_box(crop)
        if found is not None and found.iou(plate) >= 0.5 and found.area < 0.7 * crop.shape[0] * crop.shape[1]:
            hits += 1
    assert hits >= 8


def test_two_row_plate_keeps_both_rows() -> None:
    rng = np.random.default_rng(3)
    kept = 0
    for _ in range(6):
        crop = synth.render_plate("AB123CD", "eu", rng, two_row=True, dirt=0.0)
        found = find_text_box(crop)
        kept += found is not None and found.h >= 0.6 * crop.shape[0]
    assert kept >= 5


@pytest.mark.parametrize(
    "crop",
    [
        np.full((40, 120, 3), 128, np.uint8),
        np.random.default_rng(0).integers(0, 255, (40, 120, 3), dtype=np.uint8),
        np.zeros((6, 10, 3), np.uint8),
    ],
    ids=["flat", "noise", "tiny"],
)
def test_no_character_row_means_no_box(crop: np.ndarray) -> None:
    assert find_text_box(crop) is None
    assert text_row_box(crop) is None


def test_reader_rereads_loose_crops_at_their_text_row() -> None:
    """Loose boxes (plate + holder) read far better with the re-read; reads of the same
    crops without it are the baseline, so the test fails if the re-read stops helping."""
    cases = [_loose_crop(100 + i, ("us", "eu", "br")[i % 3], grow=(0.3, 0.6)) for i in range(15)]
    crops = [c for c, _, _ in cases]
    truth = [t for _, _, t in cases]
    with_row = build_reader("crnn", device="cpu").read(crops)
    without = build_reader("crnn", device="cpu", text_row=False).read(crops)
    right_with = sum(r.normalized == t for r, t in zip(with_row, truth, strict=True))
    right_without = sum(r.normalized == t for r, t in zip(without, truth, strict=True))
    print(f"loose crops read right: {right_with}/15 with the text-row re-read, {right_without}/15 without")
    assert right_with >= right_without + 3
    assert right_with >= 9
    # A re-read says where in the crop it found the plate; a read of the crop as given does not.
    assert all(r.box is None for r in without)
    located = [(r.box, plate) for r, (_, plate, _) in zip(with_row, cases, strict=True) if r.box is not None]
    assert len(located) >= right_with - right_without
    fits = sum(box.iou(plate) >= 0.5 for box, plate in located)
    print(f"re-read boxes on the plate (IoU >= 0.5): {fits}/{len(located)}; the loose boxes: IoU ~0.28")
    assert fits >= 0.8 * len(located)


def _read(text: str) -> PlateRead:
    return PlateRead(text, text, 0.9, (0.9,) * len(text))


def test_a_re_read_that_only_lost_glyphs_does_not_replace_the_original() -> None:
    """The guard both re-reads (text row and bands) share: a shorter read that is the
    original with glyphs cut away (at an end or in the middle) never wins."""
    assert _only_lost(_read("TGL04"), _read("ATGL04"))
    assert _only_lost(_read("ATGL0"), _read("ATGL04"))
    assert _only_lost(_read("CW7377"), _read("CWJ7377"))  # a middle glyph cut
    assert not _only_lost(_read("8P62983"), _read("BP0983"))  # a different read: may win
    assert not _only_lost(_read("TML1U76"), _read("LTXL1076"))  # frame text dropped, a new read
    assert not _only_lost(_read("ABC1234"), _read("ABC1234"))  # same length


def test_a_wider_read_that_adds_end_characters_extends_the_row_read() -> None:
    assert _extends(_read("RNL2197"), _read("NL2197"))  # a glyph before the row
    assert _extends(_read("KZ54910"), _read("KZ5491"))  # ... or after it
    assert not _extends(_read("XYZNL2197"), _read("NL2197"))  # three more: not one glyph
    assert not _extends(_read("RNL2198"), _read("NL2197"))  # a different read
    assert not _extends(_read("NL2197"), _read("NL2197"))  # nothing added
    assert _widened(Box(20, 10, 100, 40), (60, 200, 3)) == Box(0, 10, 140, 40)  # clipped at the crop


def test_a_row_box_that_cut_off_the_first_glyph_is_widened_back() -> None:
    """The row finder misses a leading glyph (here: the row box starts inside the first
    character); the widened re-read reads the whole plate and wins."""
    reader = build_reader("crnn", device="cpu")
    recovered = 0
    for seed in range(6):
        crop, plate, text = _loose_crop(200 + seed, "us", grow=(0.3, 0.6))
        row = find_text_box(crop)
        assert row is not None
        cut = round(0.45 * row.h)  # about one glyph width
        clipped = Box(row.x + cut, row.y, row.w - cut, row.h)
        ((read, box),) = reader._row_rereads([crop], [clipped])
        recovered += read.normalized == text and box.w > clipped.w
    assert recovered >= 4
