"""`anpr read`: rendered street scenes read by the shipped detector and reader."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from anpr_pipeline.cli import main as anpr
from anpr_pipeline.vision.synth import render_scene
from anpr_pipeline.vision.types import Box

EXIF_ORIENTATION = 0x0112


def _scene(seed: int) -> tuple[np.ndarray, dict[str, Box]]:
    img, plates = render_scene(
        np.random.default_rng(seed), 1280, 720, n_plates=2, min_plate_width=0.1, max_plate_width=0.2
    )
    return img, {text: box for box, text, _ in plates}


def _found(photo: dict, truth: dict[str, Box]) -> set[str]:
    """Truth plates reported with their text and a box on the plate (IoU >= 0.5)."""
    return {
        p["plate"]
        for p in photo["plates"]
        if p["reported"] and p["plate"] in truth and Box(**p["box"]).iou(truth[p["plate"]]) >= 0.5
    }


def test_read_a_folder_reports_plates_annotates_and_skips_a_broken_file(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    truths = {}
    for seed in (11, 12):
        img, truths[f"scene{seed}"] = _scene(seed)
        cv2.imwrite(str(photos / f"scene{seed}.png"), img[:, :, ::-1])
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("not an image name: skipped")
    out, annotated = tmp_path / "read.json", tmp_path / "annotated"

    assert anpr(["read", str(photos), "--json", str(out), "--annotate", str(annotated)]) == 1

    report = json.loads(out.read_text())
    by_name = {Path(p["file"]).stem: p for p in report["photos"]}
    assert sorted(by_name) == ["broken", "scene11", "scene12"]
    assert "not an image" in by_name["broken"]["error"] and by_name["broken"]["plates"] == []
    for name in ("scene11", "scene12"):
        photo = by_name[name]
        assert photo["error"] is None and (photo["width"], photo["height"]) == (1280, 720)
        assert _found(photo, truths[name]) == set(truths[name]), photo["plates"]
    assert report["reader"].startswith("crnn-") and report["min_read_confidence"] == 0.3
    # One annotated copy per readable photo, with boxes drawn on it.
    drawn = sorted(annotated.iterdir())
    assert [p.name for p in drawn] == ["0002_scene11_anpr.jpg", "0003_scene12_anpr.jpg"]
    original = cv2.imread(str(photos / "scene11.png")).astype(int)
    assert np.abs(cv2.imread(str(drawn[0])).astype(int) - original).max() > 100


def test_undamaged_photos_past_pillows_limits_are_read(tmp_path, monkeypatch) -> None:
    """The damage check must not refuse what is whole: a photo over Pillow's pixel limit (a
    200 MP phone photo; the limit is lowered here instead of writing one), a PNG with a
    metadata chunk over Pillow's text limit."""
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    from anpr_pipeline.read_cli import damaged_image_problem, load_photo

    img, _ = _scene(11)
    jpeg = tmp_path / "phone.jpg"
    cv2.imwrite(str(jpeg), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    assert damaged_image_problem(jpeg) is None and load_photo(jpeg).shape == img.shape
    monkeypatch.undo()

    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", "x" * 2_000_000, zip=True)
    png = tmp_path / "xmp.png"
    PILImage.fromarray(img).save(png, pnginfo=info)
    assert damaged_image_problem(png) is None and load_photo(png).shape == img.shape

    half = tmp_path / "half.jpg"
    half.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    assert "truncated" in (damaged_image_problem(half) or "")


def test_read_reports_a_truncated_photo_as_its_error_and_reads_the_rest(tmp_path: Path) -> None:
    # OpenCV decodes half a JPEG without complaint (the rest grey): "no plate", exit 0.
    img, truth = _scene(11)
    whole = tmp_path / "whole.jpg"
    cv2.imwrite(str(whole), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = whole.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(tmp_path / "half.jpg")) is not None  # what OpenCV alone accepts
    out = tmp_path / "read.json"

    assert anpr(["read", str(tmp_path / "half.jpg"), str(whole), "--json", str(out)]) == 1

    by_name = {Path(p["file"]).name: p for p in json.loads(out.read_text())["photos"]}
    assert "truncated" in by_name["half.jpg"]["error"] and by_name["half.jpg"]["plates"] == []
    assert by_name["whole.jpg"]["error"] is None
    assert _found(by_name["whole.jpg"], truth) == set(truth)


def test_read_a_one_pixel_strip_is_read_like_any_photo(tmp_path: Path) -> None:
    # The detector's downscale rounded a 1 x 2000 strip to 0 rows: OpenCV raised, the batch
    # and its JSON were lost.
    img, truth = _scene(12)
    cv2.imwrite(str(tmp_path / "a_scene.png"), img[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "b_strip.png"), np.full((1, 2000, 3), 128, np.uint8))
    out = tmp_path / "read.json"
    assert anpr(["read", str(tmp_path), "--json", str(out)]) == 0
    by_name = {Path(p["file"]).name: p for p in json.loads(out.read_text())["photos"]}
    assert by_name["b_strip.png"]["error"] is None and by_name["b_strip.png"]["plates"] == []
    assert _found(by_name["a_scene.png"], truth) == set(truth)


class _FailsOnGreyPhotos:
    """The classical detector, failing (as a model can: CUDA out of memory, an odd input)
    on flat grey photos: the fault to isolate, injected into the real detector."""

    def __init__(self) -> None:
        from anpr_pipeline.vision.detector import build_detector

        self.inner = build_detector("classical")
        self.version = self.inner.version

    def detect(self, images: list[np.ndarray]) -> list:
        if any(image.std() == 0 for image in images):
            raise RuntimeError("CUDA out of memory\nTried to allocate 2.00 GiB")
        return self.inner.detect(images)


def test_a_photo_the_models_fail_on_is_its_error_and_the_rest_are_read(tmp_path: Path) -> None:
    from anpr_pipeline.read_cli import read_photos
    from anpr_pipeline.vision.reader import build_reader

    img, truth = _scene(11)
    paths = [tmp_path / "a.png", tmp_path / "grey.png", tmp_path / "c.png"]
    cv2.imwrite(str(paths[0]), img[:, :, ::-1])
    cv2.imwrite(str(paths[1]), np.full((720, 1280, 3), 128, np.uint8))
    cv2.imwrite(str(paths[2]), img[:, :, ::-1])
    results = list(read_photos(paths, _FailsOnGreyPhotos(), build_reader("default"), 0.3))

    assert [Path(r.file).name for r, _ in results] == ["a.png", "grey.png", "c.png"]
    (good, good_image), (failed, failed_image), (again, _) = results
    assert failed.error == f"{paths[1]}: reading failed (RuntimeError: Tried to allocate 2.00 GiB)"
    assert failed.plates == [] and failed_image is None
    assert good.error is None and good_image is not None
    assert _found(good.__dict__, truth) == _found(again.__dict__, truth) == set(truth)


def test_read_applies_exif_orientation_like_a_photo_viewer(tmp_path: Path, capsys) -> None:
    img, truth = _scene(13)
    # Stored sideways with "rotate 90° clockwise to view": the upright scene on screen.
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(img))).save(path, quality=95, exif=exif)

    assert anpr(["read", str(path), "--json", "-", "--all"]) == 0
    photo = json.loads(capsys.readouterr().out)["photos"][0]
    assert (photo["width"], photo["height"]) == (1280, 720)
    assert _found(photo, truth) == set(truth), photo["plates"]


def test_read_with_required_format_reports_only_format_fitting_reads(tmp_path: Path, capsys) -> None:
    from anpr_pipeline.vision.plates import fits_format

    img, truth = _scene(18)  # two plates and a shop sign the reader reads as letters
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), img[:, :, ::-1])

    def reported(*flags: str) -> list[str]:
        assert anpr(["read", str(path), "--json", "-", *flags]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["require_format"] is ("--require-format" in flags)
        photo = report["photos"][0]
        assert _found(photo, truth) == set(truth), photo["plates"]  # rendered plates follow formats
        return [p["plate"] for p in photo["plates"] if p["reported"]]

    assert not all(fits_format(plate) for plate in reported())
    assert sorted(reported("--require-format")) == sorted(truth)


def test_read_a_video_gives_the_events_the_pipeline_would_store(tmp_path: Path) -> None:
    from anpr_pipeline.vision.synth import make_video

    truth = make_video(tmp_path / "clip.mp4", seed=7, width=960, height=540, seconds=5, vehicles=2)
    (tmp_path / "cut.mp4").write_bytes((tmp_path / "clip.mp4").read_bytes()[:5000])
    out = tmp_path / "read.json"

    assert anpr(["read", str(tmp_path / "clip.mp4"), str(tmp_path / "cut.mp4"), "--json", str(out)]) == 1

    clip, cut = json.loads(out.read_text())["videos"]
    assert clip["error"] is None and clip["duration_s"] == 5.0 and clip["sampled_frames"] == 25
    events = {e["plate"]: e for e in clip["events"]}
    for vehicle in truth["vehicles"]:
        event = events[vehicle["plate"]]  # one event per vehicle, seen in several frames
        assert event["frames_seen"] >= 3
        fps = truth["fps"]
        assert vehicle["first_frame"] / fps - 0.5 <= event["first_seen_s"] <= event["last_seen_s"]
        assert event["last_seen_s"] <= vehicle["last_frame"] / fps + 0.5
    assert "cut.mp4" in cut["error"] and cut["events"] == []


def test_read_rejects_bad_input_clearly(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert anpr(["read", str(empty)]) == 2
    assert "no image or video files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        anpr(["read", str(empty), "--regions", "us,mars"])
    assert exit_info.value.code == 2
    assert "unknown region(s) mars" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        anpr(["read", str(empty), "--sample-fps", "0"])
    assert "--sample-fps 0.0: expected 0 < fps <= 120" in capsys.readouterr().err
    # Output paths are checked before anything is read, not after.
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    for flags, message in (
        (["--json", str(empty)], f"--json {empty}: is a directory"),
        (["--annotate", str(notes)], f"--annotate {notes}: is a file, not a folder"),
    ):
        with pytest.raises(SystemExit):
            anpr(["read", str(empty), *flags])
        assert message in capsys.readouterr().err


def test_read_names_a_weights_file_that_is_not_one(tmp_path: Path, capsys) -> None:
    photo = tmp_path / "scene.png"
    cv2.imwrite(str(photo), _scene(11)[0][:, :, ::-1])
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    assert anpr(["read", str(photo), "--reader", f"crnn:{notes}"]) == 2
    err = capsys.readouterr().err
    assert f"anpr read: {notes}: not a plate reader weights file" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--reader", "bogus"], "--reader: unknown reader 'bogus'"),
        (["--reader", "crnn:"], "--reader: reader 'crnn:': name the weight files"),
        (["--detector", "cascade-typo"], "--detector: unknown detector 'cascade-typo'"),
        (["--device", "tpu"], "--device: unknown device 'tpu'"),
        (["--min-read-confidence", "7"], "--min-read-confidence 7.0: expected a number from 0 to 1"),
    ],
)
def test_read_rejects_bad_model_flags_in_one_line(tmp_path: Path, capsys, flags, message) -> None:
    photo = tmp_path / "scene.png"
    cv2.imwrite(str(photo), _scene(11)[0][:, :, ::-1])
    with pytest.raises(SystemExit) as exit_info:
        anpr(["read", str(photo), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"anpr read: error: {message}" in err and "Traceback" not in err


def test_read_reports_an_empty_folder_like_a_missing_file_and_reads_the_rest(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    img, truth = _scene(12)
    photo = tmp_path / "scene.png"
    cv2.imwrite(str(photo), img[:, :, ::-1])
    out = tmp_path / "read.json"

    assert anpr(["read", str(empty), str(photo), "--json", str(out)]) == 1

    report = json.loads(out.read_text())
    by_file = {p["file"]: p for p in report["photos"]}
    assert "no image or video files" in by_file[str(empty)]["error"]
    assert by_file[str(photo)]["error"] is None and _found(by_file[str(photo)], truth) == set(truth)
    captured = capsys.readouterr()
    assert f"ERROR {empty}: no image or video files" in captured.out
    assert "1 of 2 file(s) could not be read" in captured.err


def test_read_with_nothing_readable_says_why_without_loading_models(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    def no_models(*args, **kwargs):
        raise AssertionError("models built although there is nothing to read")

    monkeypatch.setattr("anpr_pipeline.vision.detector.build_detector", no_models)
    monkeypatch.setattr("anpr_pipeline.vision.reader.build_reader", no_models)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert anpr(["read", str(empty), str(tmp_path / "missing.jpg")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"anpr read: {empty}: no image or video files (")
    assert err[1] == f"anpr read: {tmp_path / 'missing.jpg'}: no such file"
