"""Synthetic plates, crops, scenes and videos: formats, determinism, geometry of the ground truth."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from anpr_pipeline.vision import synth
from anpr_pipeline.vision.plates import matching_formats, normalize
from anpr_pipeline.vision.types import Box


@pytest.mark.parametrize("region", synth.REGIONS)
def test_plate_texts_match_the_region_formats(region: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        text = synth.random_plate_text(region, rng)
        norm = normalize(text)
        assert norm.isalnum() and norm.isupper() or norm.isdigit()
        assert matching_formats(norm, [region]), f"{text!r} fits no {region} format of vision.plates"
        assert any(f.fits(text) for f in synth.DISPLAY_FORMATS[region]), text


def test_every_display_format_is_a_known_plate_format() -> None:
    for region, formats in synth.DISPLAY_FORMATS.items():
        for fmt in formats:
            sample = "".join("A" if c == "L" else "1" if c == "D" else c for c in fmt.template)
            assert matching_formats(normalize(sample), [region]), f"{region} {fmt.template}"


def test_unknown_region_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown plate region"):
        synth.random_plate_text("xx", np.random.default_rng(0))


@pytest.mark.parametrize(
    ("region", "text", "aspect"),
    [
        ("us", "ABC 1234", 2.0),
        ("eu", "AB-123-CD", 520 / 112),
        ("br", "ABC-1234", 400 / 130),
        ("br", "ABC1D23", 400 / 130),
    ],
)
def test_render_plate_has_the_real_aspect_and_is_deterministic(region: str, text: str, aspect: float) -> None:
    a = synth.render_plate(text, region, np.random.default_rng(5), two_row=False)
    b = synth.render_plate(text, region, np.random.default_rng(5), two_row=False)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert a.shape[1] / a.shape[0] == pytest.approx(aspect, rel=0.02)
    assert np.array_equal(a, b)
    assert a.std() > 30  # characters on a plate, not a flat image


def test_every_plate_font_renders_every_plate_character() -> None:
    """A font missing a glyph would draw an empty box or .notdef into training plates."""
    for font, _ in synth.EXTENDED_CHAR_FONTS:
        for ch in synth.LETTERS + synth.DIGITS:
            glyph = synth._glyph(font, ch)
            assert glyph.shape[0] > 80 and glyph.max() > 0.9, (font, ch)
        assert not np.array_equal(synth._glyph(font, "0"), synth._glyph(font, "O")), font


def test_extended_fonts_draw_other_typefaces_and_leave_the_default_as_it_was() -> None:
    def fonts_used(fonts: synth.FontChoices) -> set[str]:
        rng = np.random.default_rng(0)
        return {synth._char_style(rng, (0, 0, 0), fonts, serif=True).font for _ in range(400)}

    assert fonts_used(synth.CHAR_FONTS) == {f for f, _ in synth.CHAR_FONTS}
    extended = fonts_used(synth.EXTENDED_CHAR_FONTS)
    assert extended == {f for f, _ in synth.EXTENDED_CHAR_FONTS}
    default = synth.render_plate("ABC 1234", "us", np.random.default_rng(5), two_row=False)
    explicit = synth.render_plate_rgba("ABC 1234", "us", np.random.default_rng(5), fonts=synth.CHAR_FONTS)
    assert np.array_equal(default, synth._over(explicit, (40, 40, 42)))


def test_eu_two_row_plate_is_squarish() -> None:
    img = synth.render_plate("AB 123", "eu", np.random.default_rng(1), two_row=True)
    assert 1.2 < img.shape[1] / img.shape[0] < 1.6


def test_plate_crop_samples_are_deterministic_and_labelled() -> None:
    first = list(synth.plate_crop_samples(6, seed=3))
    second = list(synth.plate_crop_samples(6, seed=3))
    assert len(first) == 6
    for (ca, ta, ra), (cb, tb, rb) in zip(first, second, strict=True):
        assert np.array_equal(ca, cb) and ta == tb and ra == rb
        assert ca.dtype == np.uint8 and ca.ndim == 3 and ca.shape[2] == 3
        assert ca.shape[0] >= 8 and ca.shape[1] >= 30
        assert ta == normalize(ta) and matching_formats(ta, [ra])
    assert {r for _, _, r in synth.plate_crop_samples(6, seed=4, regions=("br",))} == {"br"}


def test_plate_crop_samples_can_be_sharded_with_start() -> None:
    whole = list(synth.plate_crop_samples(5, seed=9))
    tail = list(synth.plate_crop_samples(2, seed=9, start=3))
    for (ca, ta, _), (cb, tb, _) in zip(whole[3:], tail, strict=True):
        assert np.array_equal(ca, cb) and ta == tb


def test_plate_crop_box_lies_on_the_plate() -> None:
    rng = np.random.default_rng(11)
    for _ in range(6):
        crop, _, _, box = synth.plate_crop_sample(rng, min_width=80, max_width=120)
        inside = box.clip(crop.shape[1], crop.shape[0])
        # Tight crops may cut the plate's edges, never most of it.
        assert inside.area >= 0.7 * box.area
        assert 60 <= box.w <= 170


def test_vehicle_window_holds_the_plate() -> None:
    plate = synth.render_plate_rgba("AB-123-CD", "eu", np.random.default_rng(0), two_row=False)
    full = synth.make_vehicle(plate, "eu", np.random.default_rng(1), width=400)
    part = synth.make_vehicle(plate, "eu", np.random.default_rng(1), width=400, context=(0.5, 1.0))
    assert part.sprite.shape[0] < full.sprite.shape[0] and part.sprite.shape[1] < full.sprite.shape[1]
    for veh in (full, part):
        x0, y0, x1, y1 = veh.plate_box
        assert 0 <= x0 < x1 <= veh.sprite.shape[1] and 0 <= y0 < y1 <= veh.sprite.shape[0]
        assert x1 - x0 == pytest.approx(400 * synth.PLATE_TO_CAR["eu"], rel=0.05)
        assert veh.sprite[int((y0 + y1) / 2), int((x0 + x1) / 2), 3] == 255  # opaque plate


def test_render_scene_boxes_are_inside_the_image() -> None:
    total = 0
    for seed in range(2):
        img, plates = synth.render_scene(np.random.default_rng(seed), 480, 360, n_plates=3)
        assert img.shape == (360, 480, 3) and img.dtype == np.uint8
        assert plates, "at least one vehicle fits"
        for box, text, region in plates:
            assert isinstance(box, Box)
            assert box.x >= 0 and box.y >= 0 and box.x + box.w <= 480 and box.y + box.h <= 360
            assert box.w >= 10 and box.h >= 4
            assert matching_formats(text, [region])
        total += len(plates)
    assert total >= 4
    again, plates_again = synth.render_scene(np.random.default_rng(0), 480, 360, n_plates=3)
    first, plates_first = synth.render_scene(np.random.default_rng(0), 480, 360, n_plates=3)
    assert np.array_equal(again, first) and plates_again == plates_first


def test_render_scene_over_a_given_background() -> None:
    bg = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    img, plates = synth.render_scene(np.random.default_rng(1), 320, 240, n_plates=2, background=bg)
    assert img.shape == (240, 320, 3)
    assert all(b.x + b.w <= 320 and b.y + b.h <= 240 for b, _, _ in plates)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("synth") / "cam.mp4"
    truth = synth.make_video(path, seed=42, width=640, height=360, fps=10, seconds=4.0, vehicles=3)
    return path, truth


def test_make_video_is_a_decodable_h264_file_of_the_right_shape(small_video: tuple[Path, dict]) -> None:
    path, truth = small_video
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 40 == truth["frames"]
    assert frames[0].shape == (360, 640, 3)
    assert (truth["video"], truth["fps"], truth["width"], truth["height"]) == ("cam.mp4", 10, 640, 360)
    # The plate box holds a plate: light background with dark characters (high contrast).
    for vehicle in truth["vehicles"]:
        mid = sorted(vehicle["boxes"])[len(vehicle["boxes"]) // 2]
        x, y, w, h = vehicle["boxes"][mid]
        assert frames[mid][y : y + h, x : x + w].std() > 25


def test_make_video_ground_truth_is_consistent(small_video: tuple[Path, dict]) -> None:
    _, truth = small_video
    assert len(truth["vehicles"]) == 3
    for v in truth["vehicles"]:
        assert set(v) >= {"plate", "text", "region", "first_frame", "last_frame", "boxes"}
        assert v["plate"] == normalize(v["text"]) and matching_formats(v["plate"], [v["region"]])
        frames = sorted(v["boxes"])
        assert (v["first_frame"], v["last_frame"]) == (frames[0], frames[-1])
        assert len(frames) >= 8, "each plate is visible for a good part of its pass"
        for fi, (x, y, w, h) in v["boxes"].items():
            assert 0 <= fi < truth["frames"]
            assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 360
        widths = [b[2] for b in v["boxes"].values()]
        assert 50 <= np.median(widths) <= 120  # ~100-220 px at 1280 wide, scaled to 640


def test_make_video_ground_truth_is_deterministic_per_seed(
    small_video: tuple[Path, dict], tmp_path: Path
) -> None:
    _, truth = small_video
    again = synth.make_video(
        tmp_path / "cam.mp4", seed=42, width=640, height=360, fps=10, seconds=4.0, vehicles=3
    )
    assert again == truth
    other = synth.make_video(
        tmp_path / "other.mp4", seed=43, width=640, height=360, fps=10, seconds=4.0, vehicles=3
    )
    assert [v["plate"] for v in other["vehicles"]] != [v["plate"] for v in truth["vehicles"]]


def test_ground_truth_json_round_trip(small_video: tuple[Path, dict], tmp_path: Path) -> None:
    _, truth = small_video
    path = synth.write_ground_truth(tmp_path / "cam.json", truth)
    assert synth.read_ground_truth(path) == truth
