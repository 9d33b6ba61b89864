"""`anpr train reader`: reads any file,x,y,w,h,plate CSV, trains, writes loadable weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from anpr_pipeline.vision import crnn, plates
from anpr_pipeline.vision.labels import LabelsError
from anpr_pipeline.vision.reader import DEFAULT_CRNN, WEIGHTS_DIR, build_reader
from anpr_pipeline.vision.train_reader import (
    FRAMED_SEED_BASE,
    Sample,
    TrainConfig,
    _draw,
    augment,
    cached_synthetic_samples,
    is_holdout,
    load_samples,
    main,
    pseudo_label,
    synthetic_framed_samples,
)
from anpr_pipeline_tests.factories import write_labels_csv


def _write_plates(folder: Path, n: int = 12) -> Path:
    """A user's own labelled folder: plates pasted into larger photos, boxes in labels.csv."""
    from anpr_pipeline.vision import synth

    rng = np.random.default_rng(3)
    (folder / "cam1").mkdir(parents=True)
    rows = []
    for i in range(n):
        text = synth.random_plate_text("br", rng)
        plate = synth.render_plate(text, "br", rng)
        plate = cv2.resize(plate, (120, 40))
        photo = np.full((100, 200, 3), 90, np.uint8)
        photo[30:70, 40:160] = plate
        cv2.imwrite(str(folder / "cam1" / f"{i}.jpg"), photo[:, :, ::-1])
        rows.append([f"cam1/{i}.jpg", 40, 30, 120, 40, text])
    write_labels_csv(folder / "labels.csv", rows)
    return folder


def test_load_samples_keeps_context_around_the_box(tmp_path) -> None:
    samples = load_samples(_write_plates(tmp_path / "data"))
    assert len(samples) == 12
    s = samples[0]
    x, y, w, h = s.box
    assert (w, h) == (120, 40) and x > 0 and y > 0  # margin kept for outward crop jitter
    assert s.group == "cam1" and s.text.isalnum()


def test_load_samples_refuses_a_box_off_its_image_naming_the_line(tmp_path) -> None:
    data = _write_plates(tmp_path / "data", n=2)
    labels = data / "labels.csv"
    labels.write_text(labels.read_text().replace("cam1/1.jpg,40,30", "cam1/1.jpg,5000,30"))
    with pytest.raises(
        LabelsError, match="labels.csv:3: box 5000,30,120,40 is outside the 200x100 image cam1/1.jpg"
    ):
        load_samples(data)
    # A box a little over the edge is clipped to it, as the plate it still mostly holds.
    labels.write_text(labels.read_text().replace("cam1/1.jpg,5000,30", "cam1/1.jpg,100,30"))
    assert [s.box[2:] for s in load_samples(data)] == [(120, 40), (100, 40)]


def test_augment_gives_model_sized_inputs_for_one_and_two_row_crops(tmp_path) -> None:
    cfg = crnn.CRNNConfig()
    rng = np.random.default_rng(0)
    s = load_samples(_write_plates(tmp_path / "data", n=1))[0]
    for strength in (0.0, 1.0):
        x = augment(s, cfg, rng, strength)
        assert x.shape == (cfg.height, cfg.width) and x.dtype == np.float32
        assert -1.0 <= x.min() and x.max() <= 1.0
    square = np.zeros((50, 70), np.uint8)
    assert crnn.is_two_row(square.shape, cfg)
    assert crnn.layout(square, cfg).shape == (cfg.height, cfg.width)


def test_synthetic_cache_is_keyed_by_the_font_set(tmp_path) -> None:
    cache = tmp_path / "synth.npz"
    dejavu = cached_synthetic_samples(3, 1, cache, "dejavu")
    extended = cached_synthetic_samples(3, 1, cache, "extended")  # not the DejaVu plates again
    assert [s.text for s in extended] == [s.text for s in dejavu]  # same texts, other typefaces
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(dejavu, extended, strict=True))
    reloaded = cached_synthetic_samples(3, 1, cache, "extended")
    assert all(np.array_equal(a.image, b.image) for a, b in zip(extended, reloaded, strict=True))


def test_write_holdout_lists_exactly_the_crops_training_holds_out(tmp_path) -> None:
    data = _write_plates(tmp_path / "mine", n=12)
    out = tmp_path / "heldout.csv"
    assert main(["--data", str(data), "--holdout", "0.3", "--write-holdout", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    labelled = list(csv.DictReader((data / "labels.csv").open()))
    expected = [r for r in labelled if is_holdout(plates.normalize(r["plate"]), 0.3)]
    assert 0 < len(rows) == len(expected) < len(labelled)
    assert [r["plate"] for r in rows] == [r["plate"] for r in expected]
    assert all(Path(r["file"]).is_absolute() and Path(r["file"]).is_file() for r in rows)
    held = load_samples(out)  # the written CSV is a labels CSV eval-crops and training read
    assert sorted(s.text for s in held) == sorted(plates.normalize(r["plate"]) for r in expected)


def test_holdout_split_is_by_plate_text() -> None:
    assert is_holdout("ABC1234", 0.1) == is_holdout("ABC1234", 0.1)
    share = np.mean([is_holdout(f"P{i:05d}", 0.1) for i in range(2000)])
    assert 0.07 < share < 0.13


def test_framed_samples_are_loose_boxes_around_a_plate_from_unseen_scenes() -> None:
    """--synthetic-framed: each plate cut as a holder box and a lights box, the box being the
    whole (loose) crop; scene seeds never those `anpr eval-boxes` scores."""
    from anpr_pipeline.vision import synth

    samples = synthetic_framed_samples(2, seed=0)
    assert FRAMED_SEED_BASE > 8000 + 60
    assert {s.group for s in samples} == {"framed-holder", "framed-lights"}
    texts = {s.text for s in samples}
    tight = synth.framed_plate_crops(2, FRAMED_SEED_BASE)["tight"]
    assert texts == {synth.normalize(text) for _, text in tight}
    for s, (crop, _) in zip([s for s in samples if s.group == "framed-holder"], tight, strict=True):
        assert s.box == (0, 0, s.image.shape[1], s.image.shape[0])
        assert s.image.shape[0] > crop.shape[0]  # the holder box is taller than the plate


def _write_unlabelled_eu_plates(folder: Path, n: int = 6) -> tuple[Path, list[str]]:
    """Photos holding a clean single-row EU plate each, boxed in a CSV with no text column."""
    from anpr_pipeline.vision import synth

    rng = np.random.default_rng(11)
    folder.mkdir(parents=True)
    rows, truth = [], []
    for i in range(n):
        text = synth.random_plate_text("eu", rng)
        plate = cv2.resize(synth.render_plate(text, "eu", rng, two_row=False, dirt=0.0), (260, 56))
        photo = np.full((140, 340, 3), 70, np.uint8)
        photo[40:96, 40:300] = plate
        cv2.imwrite(str(folder / f"{i}.png"), photo[:, :, ::-1])
        rows.append(f"{i}.png,40,40,260,56")
        truth.append(plates.normalize(text))
    (folder / "boxes.csv").write_text("file,x,y,w,h\n" + "\n".join(rows) + "\n")
    return folder / "boxes.csv", truth


def test_pseudo_labels_are_confident_reads_of_one_model_or_an_ensemble(tmp_path) -> None:
    """--pseudo: text-less boxes labelled by the reader where every view agrees and fits a
    format; --pseudo-model A,B labels with the ensemble the default reader is."""
    from anpr_pipeline.vision.reader import DEFAULT_READER_WEIGHTS, WEIGHTS_DIR

    boxes, truth = _write_unlabelled_eu_plates(tmp_path / "unlabelled")
    crnn_only = pseudo_label(boxes, WEIGHTS_DIR / DEFAULT_READER_WEIGHTS[0])
    ensemble = pseudo_label(boxes, [WEIGHTS_DIR / w for w in DEFAULT_READER_WEIGHTS])
    for labelled in (crnn_only, ensemble):
        assert len(labelled) >= len(truth) // 2  # clean plates: most are kept
        assert {s.text for s in labelled} <= set(truth)  # ... and every kept label is right
        assert all(s.group == "pseudo-unlabelled" for s in labelled)
    strict = pseudo_label(boxes, [WEIGHTS_DIR / w for w in DEFAULT_READER_WEIGHTS], min_confidence=1.01)
    assert strict == []  # nothing is ever that sure: the confidence gate is applied
    # A detection set's split column: only its train rows are labelled. The one train row is
    # a plate the CRNN labels, so the other (valid) rows are what the split leaves out.
    lines = boxes.read_text().splitlines()
    train_row = truth.index(crnn_only[0].text)
    split = tmp_path / "unlabelled" / "split.csv"
    split.write_text(
        "\n".join(
            [lines[0] + ",split"]
            + [f"{r},{'train' if i == train_row else 'valid'}" for i, r in enumerate(lines[1:])]
        )
    )
    only_train = pseudo_label(split, WEIGHTS_DIR / DEFAULT_READER_WEIGHTS[0])
    assert [s.text for s in only_train] == [truth[train_row]] and len(crnn_only) > 1


def test_batches_mix_real_synthetic_and_framed_in_the_configured_shares() -> None:
    def pool(group: str) -> list[Sample]:
        return [Sample(np.zeros((8, 24, 3), np.uint8), (0, 0, 24, 8), "AB123", group)] * 5

    tc = TrainConfig(batch_size=40, synthetic_weight=0.25, framed_weight=0.1)
    rng = np.random.default_rng(0)
    batch = _draw(pool("real"), pool("synth"), tc, rng, pool("framed"))
    counts = {g: sum(s.group == g for s in batch) for g in ("real", "synth", "framed")}
    assert counts == {"real": 27, "synth": 9, "framed": 4}  # framed 10 %, synthetic 25 % of the rest
    assert {s.group for s in _draw(pool("real"), pool("synth"), tc, rng)} == {"real", "synth"}


def _train_cli(tmp_path: Path, minutes: float, *extra: str) -> tuple[Path, dict]:
    """`anpr train reader` on a small generated folder; -> (run folder, summary.json)."""
    data = _write_plates(tmp_path / "data")
    out = tmp_path / "run"
    args = ["--out", str(out), "--data", str(data), "--minutes", str(minutes), "--holdout", "0.2"]
    assert main([*args, "--batch-size", "4", "--eval-every", "1", *extra]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_train_reader_cli_writes_weights_the_reader_loads(tmp_path) -> None:
    out, summary = _train_cli(tmp_path, 0.05)
    assert summary["steps"] >= 1
    reader = build_reader(f"crnn:{out / 'best.pt'}", device="cpu")
    reads = reader.read([np.zeros((40, 120, 3), np.uint8)])
    assert len(reads) == 1 and reader.version.startswith("crnn-best")


def test_input_size_sets_the_model_input_the_reader_then_uses(tmp_path) -> None:
    """--input-size 48x192 trains a 48-high model (48 CTC steps); the reader preprocesses
    for each checkpoint's own size, so it reads alone and beside a 32 x 128 model."""
    out, summary = _train_cli(tmp_path, 0.05, "--input-size", "48x192")
    assert (summary["model_config"]["height"], summary["model_config"]["width"]) == (48, 192)
    crop = np.full((40, 120, 3), 200, np.uint8)
    reader = build_reader(f"crnn:{out / 'best.pt'},{WEIGHTS_DIR / DEFAULT_CRNN}", device="cpu")
    steps = [reader.frame_probs([crop], m)[0].shape for m in range(len(reader.models))]
    assert steps == [(48, 37), (32, 37)]
    (read,) = reader.read([crop])
    assert isinstance(read.normalized, str)


@pytest.mark.parametrize("size", ["48", "40x192", "48x190", "axb"])
def test_input_size_refuses_sizes_the_network_cannot_pool(tmp_path, size: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "run"), "--input-size", size])
    assert exit_info.value.code == 2
    assert f"--input-size {size!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "argument --batch-size: '0': expected a positive integer"),
        (["--batch-size", "-3"], "argument --batch-size: '-3': expected a positive integer"),
        (["--minutes", "0"], "argument --minutes: '0': expected a number above 0"),
        (["--threads", "0"], "argument --threads: '0': expected a positive integer"),
        (["--holdout", "1.5"], "--holdout 1.5: expected a share from 0 to below 1"),
        (["--holdout", "-0.1"], "--holdout -0.1: expected a share from 0 to below 1"),
    ],
)
def test_train_reader_rejects_bad_numbers_in_one_line(
    tmp_path, capsys, flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "run"), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_easyocr_g2_backbone_starts_from_english_g2_and_fine_tunes(tmp_path) -> None:
    """--backbone easyocr-g2 copies english_g2's weights (its plate-alphabet output rows) and
    trains on from there; the reader loads the result like any other checkpoint."""
    import torch

    from anpr_pipeline.vision.reader import easyocr_models_dir

    g2 = Path(easyocr_models_dir(None)) / "english_g2.pth"
    cfg = crnn.CRNNConfig(backbone="easyocr-g2")
    model = crnn.build_model(cfg)
    crnn.init_from_easyocr_g2(model, cfg, g2)
    source = torch.load(str(g2), map_location="cpu", weights_only=True)
    head = model.net.Prediction.weight
    assert head.shape[0] == 1 + len(cfg.alphabet)
    for i, ch in enumerate(cfg.alphabet, start=1):
        row = 1 + crnn.easyocr_g2_characters().index(ch)
        assert torch.equal(head[i], source["module.Prediction.weight"][row]), ch
    assert torch.equal(
        model.net.FeatureExtraction.ConvNet[0].weight, source["module.FeatureExtraction.ConvNet.0.weight"]
    )
    assert model(torch.zeros(2, 1, cfg.height, cfg.width)).shape == (2, cfg.width // 4 - 1, 37)

    out, summary = _train_cli(tmp_path, 0.1, "--backbone", "easyocr-g2")
    assert summary["steps"] >= 1 and summary["model_config"]["backbone"] == "easyocr-g2"
    reader = build_reader(f"crnn:{out / 'best.pt'}", device="cpu")
    (read,) = reader.read([np.zeros((40, 120, 3), np.uint8)])
    assert isinstance(read.normalized, str)


def test_load_samples_uses_stored_pixels_like_the_labels(tmp_path):
    """Labels give boxes in stored pixels (as `anpr eval` reads them); a photo with an EXIF
    rotation must not be turned before cropping (the box fell off the turned image)."""
    import cv2
    import numpy as np
    from PIL import Image

    img = np.full((300, 800, 3), 90, np.uint8)  # stored 800 x 300, shown upright 300 x 800
    cv2.rectangle(img, (600, 120), (760, 170), (255, 255, 255), -1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(tmp_path / "upright.jpg", exif=exif.tobytes(), quality=95)
    (tmp_path / "labels.csv").write_text("file,x,y,w,h,plate\nupright.jpg,600,120,160,50,ABC1234\n")
    (sample,) = load_samples(tmp_path / "labels.csv")
    x, y, w, h = sample.box
    assert (w, h) == (160, 50) and sample.text == "ABC1234"
    plate = sample.image[y : y + h, x : x + w]
    assert plate.mean() > 240  # the white plate, not the grey around it
