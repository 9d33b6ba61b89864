"""`anpr eval` and `anpr eval-crops`: accuracy measured on labelled real photos.

``anpr eval LABELS_CSV --json OUT`` runs the pipeline's own detection + reading path
(:func:`anpr_pipeline.vision.recognize.read_plates`) over every image named in a
``file,x,y,w,h,plate`` CSV (paths relative to the CSV, one row per plate) and reports,
overall and per group (the image's parent folder name, e.g. us/eu/br):

- ``detection_recall``: share of labelled plates with a predicted box at IoU >= 0.5. The
  predicted boxes are the plates the pipeline reports
  (:func:`~anpr_pipeline.vision.recognize.reported_plates`): detections whose read is long
  and sure enough to become an event (at least 4 characters, confidence at least
  ``ANPR_MIN_READ_CONFIDENCE``) and not inside a surer reported read's box, each box where
  the reader placed the plate (the detector's box, or where the reader re-read a crop at
  its character row, the plate that row implies:
  :func:`~anpr_pipeline.vision.recognize.located`); ``--reader none`` scores every
  detector box;
- ``detection_precision``: share of predicted boxes that hit a labelled plate at IoU >= 0.5
  (an unlabelled real plate in the photo counts against it: a lower bound);
- ``detector_recall``, ``detector_precision``: the same over every detector box (placed),
  before the reader drops what it cannot read as a plate;
- ``plate_accuracy``: share of labelled plates whose read equals the label exactly, after
  normalisation (upper case, accents folded, A-Z0-9 only: ``plates.normalize``). The read of a labelled plate is the read of the
  predicted box with the best IoU to it ("" when no box overlaps it);
- ``char_accuracy``: mean of 1 - edit_distance(read, label) / max(len(read), len(label));
- ``watchlist_match``: share of labelled plates whose read a fuzzy watchlist entry of the
  true plate would match (``plates.fuzzy_match``: one edit after folding O/0-style
  look-alikes): the plates an operator's fuzzy alert still catches when the read is wrong;
- ``seconds_per_image``: detection + reading wall time per image (image decoding excluded);
- ``misses``: every labelled plate not read exactly, with what was read and the IoU (a
  plate labelled without text: only when not detected);
- ``unlabelled_reports``: every predicted box on no labelled plate (file, read,
  confidence, box): what costs precision, for a person to sort into unlabelled plates and
  text read as a plate;
- ``operating_points``: the same photos scored at several read-confidence thresholds, so a
  city can choose ``ANPR_MIN_READ_CONFIDENCE`` by the wrong reads it will accept (a wrong
  plate costs an operator more than a missed one): per threshold, the share of labelled
  plates (with text) read right, read wrong and not reported, wrong reads as a share of
  reads, and reported boxes on no labelled plate per image.

``--regions`` says which plate formats the reader may assume, like a deployment's
``ANPR_PLATE_REGIONS``: ``all`` (default: the country is unknown), a list such as
``br`` or ``us,eu``, or ``group``: each image's group, when it names a region (``us``,
``eu``, ``br``; also as the last ``_`` part, e.g. ``openalpr_train-detector_br``), as a
city configures its cameras' country.

``anpr eval-crops CROPS_CSV --json OUT`` does the same for reading alone, on crops.

``anpr eval-boxes --json OUT`` reads synthetic plates cut three ways, as a detector boxes
them: tight, with their holder, and merged with lights beside them. No real labelled set
has loose boxes to tune on, and real_dev is for measuring only.

The metric definitions live here, not in the vision code they measure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anpr_pipeline.cli_args import out_dir_problem, out_path_problem, positive_int
from anpr_pipeline.vision.labels import LabelRow, LabelsError, fit_to_image, image_size, read_label_rows

# The pipeline's own normalisation (accents folded: TÜ-AB 123 -> TUAB123), so a label
# means the same plate here as in an event or a watchlist entry.
from anpr_pipeline.vision.plates import MIN_READ_CONFIDENCE, fuzzy_match, normalize
from anpr_pipeline.vision.recognize import reported_plates
from anpr_pipeline.vision.types import Box, Detection, PlateDetector, PlateReader

IOU_THRESHOLD = 0.5
# Per-group tallies behind every summary: reported boxes ("dets") and every detector box
# ("boxes"), each with how many hit a labelled plate.
COUNTS = ("images", "seconds", "dets", "true_dets", "boxes", "true_boxes")
# Read-confidence thresholds the operating-point table always includes (plus the one the
# evaluation runs at).
OPERATING_THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


# --------------------------------------------------------------------------- metrics


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(read: str, label: str) -> float:
    """1 - normalised edit distance, in 0..1 (1 = exact)."""
    read, label = normalize(read), normalize(label)
    longest = max(len(read), len(label))
    return 1.0 if longest == 0 else 1.0 - edit_distance(read, label) / longest


# --------------------------------------------------------------------------- labels


# Two labelled boxes in one image overlapping this much are one plate labelled twice.
SAME_PLATE_IOU = 0.9


@dataclass(frozen=True)
class LabelledPlate:
    file: str  # as written in the CSV (relative to it): the image's first spelling there
    box: Box
    plate: str  # normalised
    line: int = 0  # in the CSV, for messages

    @property
    def group(self) -> str:
        return Path(self.file).parent.name or "."


def load_labels(csv_path: str | Path) -> list[LabelledPlate]:
    """Rows of a ``file,x,y,w,h,plate`` CSV (``plate`` may be absent: detection only).

    An image is known by its resolved path: ``us/x.jpg`` and ``./us/x.jpg`` are one photo,
    and all its rows take the first spelling, so it is scored (and named) once.

    Raises :class:`~anpr_pipeline.vision.labels.LabelsError` for a malformed CSV or one
    plate labelled twice (see :func:`_check_one_label_per_plate`), and FileNotFoundError
    naming every image that is missing, before any work (an unreadable one fails when it is
    loaded, named the same way).
    """
    rows = read_label_rows(csv_path)
    if not rows:
        raise LabelsError(f"{csv_path}: no labelled boxes")
    root = Path(csv_path).resolve().parent
    missing = sorted({r.file for r in rows if not (root / r.file).is_file()})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{csv_path}: {len(missing)} image(s) not found (paths are relative to the CSV): {shown}"
        )
    rows = [_fitted(csv_path, root, r) for r in rows]
    spelling: dict[Path, str] = {}
    labels = [
        LabelledPlate(
            spelling.setdefault((root / r.file).resolve(), r.file), Box(*r.box), normalize(r.plate), r.line
        )
        for r in rows
    ]
    _check_one_label_per_plate(csv_path, labels)
    return labels


def _fitted(csv_path: str | Path, root: Path, row: LabelRow) -> LabelRow:
    """``row`` with its box clipped to its image; a box mostly off it is a LabelsError
    naming the line (see :func:`~anpr_pipeline.vision.labels.fit_to_image`)."""
    size = image_size(root / row.file)
    if size is None:  # not a format Pillow reads: OpenCV decodes it (slower, but rare)
        size = load_rgb(root / row.file).shape[1::-1]
    return fit_to_image(row, size[0], size[1], csv_path)


def _check_one_label_per_plate(csv_path: str | Path, labels: Sequence[LabelledPlate]) -> None:
    """A LabelsError naming both CSV lines where one image has two boxes at IoU >=
    ``SAME_PLATE_IOU``: a duplicated row would count the plate twice (its read weighs
    double, its miss shows twice), and two texts for one plate make one of them a miss
    whatever is read. The CSV is fixed rather than guessed at: which row is right is for
    the person who labelled it."""
    by_file: dict[str, list[LabelledPlate]] = defaultdict(list)
    for lab in labels:
        for other in by_file[lab.file]:
            if other.box.iou(lab.box) >= SAME_PLATE_IOU:
                what = (
                    "the same plate twice"
                    if other.plate == lab.plate
                    else f"one plate with two texts ({other.plate or 'none'!r} and {lab.plate or 'none'!r})"
                )
                raise LabelsError(
                    f"{csv_path}: lines {other.line} and {lab.line} label {what} in {lab.file} "
                    f"(boxes at IoU >= {SAME_PLATE_IOU}); keep one row"
                )
        by_file[lab.file].append(lab)


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (EXIF orientation ignored: labels use stored pixels).
    A truncated or corrupt file is an error naming it, not a partly grey photo scored as
    one with nothing found."""
    import cv2

    from anpr_pipeline.read_cli import damaged_image_problem

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise FileNotFoundError(f"{path}: missing or not an image")
    if problem := damaged_image_problem(Path(path)):
        raise FileNotFoundError(f"{path}: {problem}")  # reported like a missing image
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- summaries


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _summary(plates: list[dict], counts: dict) -> dict:
    """Metrics of ``plates`` (scored rows) with ``counts`` (images, seconds, reported and
    detector boxes and how many of each hit a labelled plate)."""
    n, n_images, seconds = len(plates), counts["images"], counts["seconds"]
    with_text = [p for p in plates if p["plate"]]
    read = [p for p in with_text if p.get("read") is not None]
    return {
        "images": n_images,
        "plates": n,
        "detections": counts["dets"],
        "detection_recall": _ratio(sum(p["detected"] for p in plates), n),
        "detection_precision": _ratio(counts["true_dets"], counts["dets"]),
        "detector_boxes": counts["boxes"],
        "detector_recall": _ratio(sum(p["boxed"] for p in plates), n),
        "detector_precision": _ratio(counts["true_boxes"], counts["boxes"]),
        "plate_accuracy": _ratio(sum(p["exact"] for p in read), len(read)) if read else None,
        "char_accuracy": _ratio(sum(p["char_accuracy"] for p in read), len(read)) if read else None,
        "watchlist_match": _ratio(sum(p["watchlist_match"] for p in read), len(read)) if read else None,
        "seconds_per_image": round(seconds / n_images, 4) if n_images else None,
    }


def group_region(group: str) -> str | None:
    """The plate region a group name stands for (``us``, ``..._br``), or None."""
    from anpr_pipeline.vision.plates import FORMATS

    for name in (group, group.rsplit("_", 1)[-1]):
        if name in FORMATS:
            return name
    return None


def _regions_for(mode: str | None, group: str) -> list[str] | None:
    """Reader regions for images of ``group`` under ``--regions mode``."""
    if mode in (None, "", "all"):
        return None
    if mode == "group":
        region = group_region(group)
        return [region] if region else None
    return [r.strip() for r in mode.split(",") if r.strip()]


def _group_reader(reader: PlateReader | None, mode: str | None, group: str) -> PlateReader | None:
    """``reader`` restricted to the regions ``--regions mode`` gives ``group`` (a copy)."""
    from anpr_pipeline.vision.reader import with_regions

    return None if reader is None else with_regions(reader, _regions_for(mode, group))


def evaluate(
    labels_csv: str | Path,
    detector: PlateDetector,
    reader: PlateReader | None,
    limit: int | None = None,
    batch_size: int = 4,
    regions: str | None = None,
    min_read_confidence: float = MIN_READ_CONFIDENCE,
    require_format: bool = False,
) -> dict:
    """Run detection (+ reading) on the labelled images; the report described above.
    ``require_format``: report only reads fitting a format of the image's regions, as the
    pipeline does with ``ANPR_REQUIRE_PLATE_FORMAT``."""
    from anpr_pipeline.vision.recognize import fitting_formats, read_plates

    root = Path(labels_csv).resolve().parent
    labels = load_labels(labels_csv)
    by_file: dict[str, list[LabelledPlate]] = defaultdict(list)
    for lab in labels:
        by_file[lab.file].append(lab)
    files = sorted(by_file)[:limit] if limit else sorted(by_file)
    # Batches never mix groups, so each batch is read with its group's regions.
    files_by_group: dict[str, list[str]] = defaultdict(list)
    for f in files:
        files_by_group[by_file[f][0].group].append(f)
    chunks = [
        (group, group_files[i : i + batch_size])
        for group, group_files in sorted(files_by_group.items())
        for i in range(0, len(group_files), batch_size)
    ]

    plates_out: list[dict] = []
    per_group: dict[str, dict] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    scored_photos: list[tuple[list[LabelledPlate], list]] = []
    unlabelled: list[dict] = []
    for group, chunk in chunks:
        images = [load_rgb(root / f) for f in chunk]
        t0 = time.perf_counter()
        results = read_plates(images, detector, _group_reader(reader, regions, group))
        elapsed = time.perf_counter() - t0
        for f, boxes in zip(chunk, results, strict=True):
            labs = by_file[f]
            candidates = fitting_formats(boxes, _regions_for(regions, group)) if require_format else boxes
            reported = reported_plates(candidates, min_read_confidence)
            g = per_group[labs[0].group]
            g["images"] += 1
            g["seconds"] += elapsed / len(chunk)
            g["dets"] += len(reported)
            g["true_dets"] += _hits(reported, labs)
            g["boxes"] += len(boxes)
            g["true_boxes"] += _hits(boxes, labs)
            plates_out.extend(_score_plate(lab, reported, boxes, reader is not None) for lab in labs)
            scored_photos.append((labs, candidates))
            unlabelled.extend(_unlabelled_reports(f, labs, reported))

    groups = sorted(per_group)
    report = {
        "labels": str(labels_csv),
        "detector": detector.version,
        "reader": reader.version if reader is not None else None,
        "regions": regions or "all",
        "iou_threshold": IOU_THRESHOLD,
        "min_read_confidence": min_read_confidence if reader is not None else None,
        "require_format": require_format,
        "overall": _summary(plates_out, {k: sum(per_group[g][k] for g in groups) for k in COUNTS}),
        "groups": {g: _summary([p for p in plates_out if p["group"] == g], per_group[g]) for g in groups},
        "misses": [{k: p[k] for k in MISS_FIELDS} for p in plates_out if not p["exact"]],
        # What costs precision: reported boxes on no labelled plate (unlabelled plates, car
        # and shop text read as plates), for a person to look at.
        "unlabelled_reports": unlabelled,
    }
    if reader is not None:
        thresholds = sorted({*OPERATING_THRESHOLDS, min_read_confidence})
        report["operating_points"] = operating_points(scored_photos, thresholds, count_spurious=True)
    return report


def operating_points(
    photos: Sequence[tuple[Sequence[LabelledPlate], Sequence]],
    thresholds: Sequence[float],
    count_spurious: bool = False,
) -> list[dict]:
    """Scores at each read-confidence threshold. ``photos``: each image's labelled plates
    and its ``(detection, read)`` pairs; at each threshold the pairs are reported as the
    pipeline would (:func:`~anpr_pipeline.vision.recognize.reported_plates`) and each labelled plate takes the read of the reported
    box with the best IoU, as in ``plate_accuracy``. ``count_spurious``: also reported boxes
    on no labelled plate, per image."""
    points = []
    # Plates labelled without text (detection only) have no right read: like plate_accuracy,
    # these rates are over the plates with text. Their boxes still hold no spurious report.
    n = sum(bool(lab.plate) for labs, _ in photos for lab in labs)
    for threshold in thresholds:
        right = wrong = spurious = 0
        for labs, pairs in photos:
            reported = reported_plates(pairs, threshold)
            for lab in (lab for lab in labs if lab.plate):
                read = _score_plate(lab, reported, pairs, with_reader=True)["read"]
                right += bool(read) and read == lab.plate
                wrong += bool(read) and read != lab.plate
            spurious += len(reported) - _hits(reported, labs)
        point = {
            "min_read_confidence": threshold,
            "read_right": _ratio(right, n),
            "read_wrong": _ratio(wrong, n),
            "not_reported": _ratio(n - right - wrong, n),
            "wrong_share_of_reads": _ratio(wrong, right + wrong),
        }
        if count_spurious:
            point["spurious_per_image"] = _ratio(spurious, len(photos))
        points.append(point)
    return points


# What a miss row in the report carries (a plate row less its ``exact`` flag).
MISS_FIELDS = (
    "file",
    "group",
    "plate",
    "read",
    "iou",
    "detected",
    "boxed",
    "char_accuracy",
    "box",
    "read_box",
)


def _unlabelled_reports(file: str, labels: Sequence[LabelledPlate], reported: Sequence) -> list[dict]:
    """The reported ``(detection, read)`` boxes of one image that hit no labelled plate."""
    return [
        {
            "file": file,
            "group": labels[0].group,
            "read": read.normalized if read is not None else None,
            "confidence": round(read.confidence, 4) if read is not None else None,
            "box": _xywh(det.box),
        }
        for det, read in reported
        if not any(_hit(det, lab) for lab in labels)
    ]


def _xywh(box: Box) -> list[int]:
    return [box.x, box.y, box.w, box.h]


def write_error_images(report: dict, labels_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """Each photo of ``report`` (from :func:`evaluate`) with a miss or an unlabelled report,
    drawn for a person to look at: labelled plates in blue (the label), the read matched to
    them in red, boxes reported on no labelled plate in orange. Named ``NNNN_<path with
    separators as _>.jpg``, numbered in file order. Returns the files written."""
    import cv2

    from anpr_pipeline.vision.draw import draw_labelled_box, line_thickness

    root = Path(labels_csv).resolve().parent
    by_file: dict[str, list[tuple[list[int], str, tuple[int, int, int], bool]]] = defaultdict(list)
    for miss in report["misses"]:
        by_file[miss["file"]].append((miss["box"], f"label {miss['plate']}", (255, 120, 0), False))
        if miss.get("read_box"):
            by_file[miss["file"]].append((miss["read_box"], f"read {miss['read'] or '?'}", (0, 0, 230), True))
    for extra in report["unlabelled_reports"]:
        label = f"{extra['read'] or '?'} {extra['confidence'] or 0:.2f}"
        by_file[extra["file"]].append((extra["box"], label, (0, 160, 255), True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n, (file, boxes) in enumerate(sorted(by_file.items()), 1):
        image = load_rgb(root / file)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        thickness = line_thickness(image)
        for box, label, colour, above in boxes:
            draw_labelled_box(bgr, box, label, colour, thickness, above)
        # Numbered (as `anpr read --annotate`): flattened paths collide (a b.jpg, a_b.jpg).
        flat = re.sub(r"[^\w.-]+", "_", str(Path(file).with_suffix("")))
        path = out / f"{n:04d}_{flat}.jpg"
        cv2.imwrite(str(path), bgr)
        written.append(path)
    return written


def _hits(boxes: Sequence, labels: Sequence[LabelledPlate]) -> int:
    """How many of ``(detection, read)`` boxes hit some labelled plate."""
    return sum(any(_hit(d, lab) for lab in labels) for d, _ in boxes)


def _hit(detection: Detection, lab: LabelledPlate) -> bool:
    return detection.box.iou(lab.box) >= IOU_THRESHOLD


def _score_plate(lab: LabelledPlate, reported: Sequence, boxes: Sequence, with_reader: bool) -> dict:
    """Match one labelled plate to the reported box with the best IoU (``boxed``: some
    detector box, reported or not, hits it)."""
    best_iou, best_read, best_box = 0.0, None, None
    for det, read in reported:
        iou = det.box.iou(lab.box)
        if iou > best_iou:
            best_iou, best_read, best_box = iou, read, det.box
    text = (best_read.normalized if best_read is not None else "") if with_reader else None
    row = {
        "file": lab.file,
        "group": lab.group,
        "plate": lab.plate,
        "iou": round(best_iou, 3),
        "detected": best_iou >= IOU_THRESHOLD,
        "boxed": any(_hit(d, lab) for d, _ in boxes),
        "read": text,
        "box": _xywh(lab.box),
        "read_box": _xywh(best_box) if best_box is not None else None,
    }
    if with_reader and lab.plate:
        row["exact"] = text == lab.plate
        row["char_accuracy"] = round(char_accuracy(text or "", lab.plate), 4)
        row["watchlist_match"] = bool(text) and fuzzy_match(lab.plate, text)
    else:  # detection only (no reader, or no text labelled): a "miss" is a plate not found
        row["exact"] = row["detected"]
        row["char_accuracy"] = None
        row["watchlist_match"] = None
    return row


def evaluate_crops(
    crops_csv: str | Path, reader: PlateReader, limit: int | None = None, regions: str | None = None
) -> dict:
    """Recognition only: read each labelled crop (the CSV box, usually the whole image)."""
    root = Path(crops_csv).resolve().parent
    labels = load_labels(crops_csv)
    untexted = sum(not lab.plate for lab in labels)
    if untexted:  # an empty read would match an empty label: scored as right
        raise LabelsError(
            f"{crops_csv}: {untexted} of {len(labels)} crops have no plate text (column plate); "
            "eval-crops scores reading, so every crop needs its plate"
        )
    labels = labels[:limit] if limit else labels
    crops = [lab.box.crop(load_rgb(root / lab.file)) for lab in labels]
    reads_by_index: dict[int, object] = {}
    t0 = time.perf_counter()
    for g in sorted({lab.group for lab in labels}):
        idx = [i for i, lab in enumerate(labels) if lab.group == g]
        group_reader = _group_reader(reader, regions, g)
        reads_by_index.update(zip(idx, group_reader.read([crops[i] for i in idx]), strict=True))
    elapsed = time.perf_counter() - t0
    reads = [reads_by_index[i] for i in range(len(labels))]
    rows = [
        {
            "file": lab.file,
            "group": lab.group,
            "plate": lab.plate,
            "read": r.normalized,
            "confidence": round(float(r.confidence), 4),
            "exact": r.normalized == lab.plate,
            "char_accuracy": round(char_accuracy(r.normalized, lab.plate), 4),
            "watchlist_match": bool(r.normalized) and fuzzy_match(lab.plate, r.normalized),
        }
        for lab, r in zip(labels, reads, strict=True)
    ]

    def summary(sel: list[dict]) -> dict:
        return {
            "crops": len(sel),
            "plate_accuracy": _ratio(sum(r["exact"] for r in sel), len(sel)),
            "char_accuracy": _ratio(sum(r["char_accuracy"] for r in sel), len(sel)),
            "watchlist_match": _ratio(sum(r["watchlist_match"] for r in sel), len(sel)),
            "seconds_per_crop": round(elapsed / len(rows), 4) if rows else None,
        }

    groups = sorted({r["group"] for r in rows})
    # Each crop is a photo of one plate, read over its whole box.
    as_photos = [([lab], [(Detection(lab.box, 1.0), read)]) for lab, read in zip(labels, reads, strict=True)]
    return {
        "labels": str(crops_csv),
        "reader": reader.version,
        "regions": regions or "all",
        "overall": summary(rows),
        "groups": {g: summary([r for r in rows if r["group"] == g]) for g in groups},
        "misses": [{k: v for k, v in r.items() if k != "exact"} for r in rows if not r["exact"]],
        "operating_points": operating_points(as_photos, OPERATING_THRESHOLDS),
    }


# --------------------------------------------------------------------------- box framings


def evaluate_box_framings(reader: PlateReader, scenes: int = 60, seed: int = 8000) -> dict:
    """Reading accuracy per box framing on :func:`framed_plate_crops`."""
    framings = {}
    from anpr_pipeline.vision.synth import framed_plate_crops

    for name, cases in framed_plate_crops(scenes, seed).items():
        reads = [r.normalized for r in reader.read([crop for crop, _ in cases])]
        texts = [text for _, text in cases]
        exact = [read == text for read, text in zip(reads, texts, strict=True)]
        chars = [char_accuracy(read, text) for read, text in zip(reads, texts, strict=True)]
        framings[name] = {
            "plates": len(cases),
            "exact": int(sum(exact)),
            "plate_accuracy": _ratio(sum(exact), len(cases)),
            "char_accuracy": _ratio(sum(chars), len(cases)),
        }
    return {"reader": reader.version, "scenes": scenes, "seed": seed, "framings": framings}


# --------------------------------------------------------------------------- CLI

REGIONS_HELP = (
    "plate formats the reader may assume: all (default), a list like br or us,eu, "
    "or group (each image's folder names its region, as a camera's configured country)"
)


def add_text_row_flag(ap: argparse.ArgumentParser) -> None:
    """``--no-text-row``: read crops only as given (``args.text_row`` False), the way
    ``ANPR_READER_TEXT_ROW=false`` configures the pipeline."""
    ap.add_argument(
        "--no-text-row",
        dest="text_row",
        action="store_false",
        help="read crops only as given (no re-read of the character row or of bands of the crop)",
    )


def _reader_from(args: argparse.Namespace) -> PlateReader:
    from anpr_pipeline.vision.reader import build_reader

    return build_reader(args.reader, device=args.device, text_row=args.text_row)


def regions_arg(value: str, ap: argparse.ArgumentParser) -> str:
    """``--regions`` lower-cased and checked like ``anpr read --regions``: ``all``, ``group``
    or a comma list of known regions (``br``, ``us,eu``); anything else is an argparse error,
    not a measurement without the format prior that silently differs from the one asked for."""
    from anpr_pipeline.settings import PLATE_REGIONS, parse_regions

    mode = value.strip().lower()
    if mode in {"all", "group"}:
        return mode
    regions = parse_regions(mode)
    if not regions:
        ap.error(f"--regions {value!r}: expected all, group or a comma list of {', '.join(PLATE_REGIONS)}")
    unknown = sorted(set(regions or []) - set(PLATE_REGIONS))
    if unknown:
        ap.error(
            f"--regions: unknown region(s) {', '.join(unknown)}; "
            f"expected all, group or some of {', '.join(PLATE_REGIONS)}"
        )
    return ",".join(regions or [])


def _check_args(args: argparse.Namespace, ap: argparse.ArgumentParser, allow_no_reader: bool = False) -> None:
    """Bad ``--detector/--reader/--device/--min-read-confidence/--regions`` values: one
    argparse error line (exit 2) before any model is loaded; ``args.device`` resolved
    (``cuda`` without a usable GPU is such an error too)."""
    from anpr_pipeline.read_cli import check_model_flags, resolve_device_or_exit

    check_model_flags(args, ap, allow_no_reader=allow_no_reader)
    if getattr(args, "out", None) and (problem := out_path_problem(Path(args.out))):
        ap.error(f"--json {args.out}: {problem}")
    if getattr(args, "annotate", None) and (problem := out_dir_problem(Path(args.annotate))):
        ap.error(f"--annotate {args.annotate}: {problem}")
    if getattr(args, "regions", None) is not None:
        args.regions = regions_arg(args.regions, ap)
    args.device = resolve_device_or_exit(args.device.lower(), ap)


def _table(report: dict, columns: Sequence[str]) -> str:
    rows = [("overall", report["overall"])] + sorted(report["groups"].items())
    cells = [[name, *("-" if s.get(c) is None else str(s[c]) for c in columns)] for name, s in rows]
    return _aligned([["group", *columns], *cells])


def _operating_table(points: Sequence[dict]) -> str:
    """The operating points as aligned text, one threshold per row."""
    head = list(points[0])
    return _aligned([head, *([str(p[c]) for c in head] for p in points)])


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as left-aligned text columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def _write(report: dict, out: str | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")


def _set_threads(threads: int | None) -> None:
    if threads:
        import cv2
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def main(argv: list[str] | None = None) -> int:
    """`anpr eval LABELS_CSV --json OUT [--detector NAME --reader NAME|none --limit N]`."""
    ap = argparse.ArgumentParser(prog="anpr eval", description=__doc__.split("\n\n")[1])
    ap.add_argument("labels_csv", help="file,x,y,w,h,plate CSV; image paths relative to it")
    ap.add_argument("--json", dest="out", help="write the full report (with misses) here")
    ap.add_argument("--detector", default="default")
    ap.add_argument("--reader", default="default", help='reader name, or "none" for detection only')
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--limit", type=positive_int, default=None, help="first N images only")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch/OpenCV CPU threads")
    ap.add_argument("--regions", default="all", help=REGIONS_HELP)
    ap.add_argument(
        "--min-read-confidence",
        type=float,
        default=None,
        help="reads less sure than this are not reported as plates (default ANPR_MIN_READ_CONFIDENCE)",
    )
    ap.add_argument(
        "--require-format",
        action="store_true",
        help="report only reads that fit a plate format of the regions (default ANPR_REQUIRE_PLATE_FORMAT)",
    )
    ap.add_argument(
        "--annotate",
        metavar="DIR",
        help="write each photo with a miss or a box on no labelled plate, with labels and reads drawn, here",
    )
    add_text_row_flag(ap)
    args = ap.parse_args(argv)
    _check_args(args, ap, allow_no_reader=True)
    _set_threads(args.threads)

    from anpr_pipeline.settings import load_settings
    from anpr_pipeline.vision.detector import build_detector

    settings = load_settings()  # a bad ANPR_* value fails before the models load
    detector = build_detector(args.detector, device=args.device)
    reader = None
    if args.reader != "none":
        reader = _reader_from(args)
    min_conf = args.min_read_confidence
    if min_conf is None:
        min_conf = settings.min_read_confidence
    report = evaluate(
        args.labels_csv,
        detector,
        reader,
        limit=args.limit,
        regions=args.regions,
        min_read_confidence=min_conf,
        require_format=args.require_format or settings.require_plate_format,
    )
    _write(report, args.out)
    if args.annotate:
        written = write_error_images(report, args.labels_csv, args.annotate)
        print(f"{len(written)} annotated photos in {args.annotate}")
    cols = [
        "images",
        "plates",
        "detection_recall",
        "detection_precision",
        "plate_accuracy",
        "char_accuracy",
        "watchlist_match",
    ]
    if reader is not None:
        cols[4:4] = ["detector_recall", "detector_precision"]
    strict = "  (only reads that fit a format)" if report["require_format"] else ""
    print(f"detector {report['detector']}  reader {report['reader']}  regions {report['regions']}{strict}")
    print(_table(report, [*cols, "seconds_per_image"]))
    if "operating_points" in report:
        print("by read-confidence threshold (labelled plates; spurious: reported boxes on none):")
        print(_operating_table(report["operating_points"]))
    print(
        f"{len(report['misses'])} misses, {len(report['unlabelled_reports'])} reported boxes on no labelled plate"
        + (f"; full report: {args.out}" if args.out else "")
    )
    return 0


def main_crops(argv: list[str] | None = None) -> int:
    """`anpr eval-crops CROPS_CSV --json OUT [--reader NAME --limit N]`."""
    ap = argparse.ArgumentParser(
        prog="anpr eval-crops", description="Reading accuracy on labelled plate crops."
    )
    ap.add_argument("crops_csv", help="file,x,y,w,h,plate CSV; crop paths relative to it")
    ap.add_argument("--json", dest="out", help="write the full report (with misses) here")
    ap.add_argument("--reader", default="default")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--limit", type=positive_int, default=None, help="first N crops only")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch/OpenCV CPU threads")
    ap.add_argument("--regions", default="all", help=REGIONS_HELP)
    add_text_row_flag(ap)
    args = ap.parse_args(argv)
    _check_args(args, ap)
    _set_threads(args.threads)

    reader = _reader_from(args)
    report = evaluate_crops(args.crops_csv, reader, limit=args.limit, regions=args.regions)
    _write(report, args.out)
    print(f"reader {report['reader']}  regions {report['regions']}")
    print(_table(report, ["crops", "plate_accuracy", "char_accuracy", "watchlist_match", "seconds_per_crop"]))
    print("by read-confidence threshold:")
    print(_operating_table(report["operating_points"]))
    print(f"{len(report['misses'])} misses" + (f"; full report: {args.out}" if args.out else ""))
    return 0


def main_boxes(argv: list[str] | None = None) -> int:
    """`anpr eval-boxes --json OUT [--scenes N --seed S --reader NAME --no-text-row]`."""
    ap = argparse.ArgumentParser(
        prog="anpr eval-boxes",
        description="Reading accuracy on synthetic plates cut with tight, plate+holder and "
        "plate+lights boxes (a tuning set for loose detector boxes; never real photos).",
    )
    ap.add_argument("--json", dest="out", help="write the report here")
    ap.add_argument("--scenes", type=positive_int, default=60, help="rendered scenes (about 2 plates each)")
    ap.add_argument("--seed", type=int, default=8000)
    ap.add_argument("--reader", default="default")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch/OpenCV CPU threads")
    add_text_row_flag(ap)
    args = ap.parse_args(argv)
    _check_args(args, ap)
    _set_threads(args.threads)

    reader = _reader_from(args)
    report = evaluate_box_framings(reader, args.scenes, args.seed)
    _write(report, args.out)
    print(f"reader {report['reader']}  scenes {args.scenes}  seed {args.seed}")
    for name, f in report["framings"].items():
        print(f"{name:8s} {f['exact']}/{f['plates']} exact  char {f['char_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
