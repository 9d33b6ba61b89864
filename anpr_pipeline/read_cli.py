"""`anpr read PHOTO|FOLDER ...`: the plates in photos, read the way the pipeline reads frames.

For a quick answer to "what does the system read here?": a camera's still, a frame grab
attached to a complaint, a photo to check a watchlist hit against. It runs the same
detector and reader as the pipeline (:func:`~anpr_pipeline.vision.recognize.read_plates`,
the path `anpr eval` measures), configured by the same ``ANPR_*`` settings (detector,
reader, device, plate regions, text-row re-read, ``ANPR_MIN_READ_CONFIDENCE``); the flags
override them for one call.

Prints one line per plate (file, plate, confidence, region, box); ``--json`` writes every
image's result; ``--annotate DIR`` writes each photo with its boxes and reads drawn on it.
Only plates the pipeline would report are listed (:func:`~anpr_pipeline.vision.plates.reportable`);
``--all`` adds every other detector box with whatever was read there. Photos are read as
viewers show them (EXIF orientation applied), so boxes match the annotated copies.

A folder stands for the images directly inside it. A file that is missing or is not an
image is reported and skipped; the rest are still read, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anpr_pipeline.vision.types import Detection, PlateRead

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Photos read per detector/reader call: batching pays, but a handful of 12-megapixel
# photos is already a few hundred MB.
CHUNK = 8


@dataclass
class PhotoResult:
    file: str
    width: int = 0
    height: int = 0
    plates: list[dict] = field(default_factory=list)
    error: str | None = None


def photo_paths(inputs: Sequence[str]) -> list[Path]:
    """Each input file, or the image files directly inside each input folder (sorted)."""
    paths: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def load_photo(path: Path) -> np.ndarray:
    """RGB uint8, EXIF orientation applied; a clear error for a missing or non-image file."""
    import cv2

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image OpenCV can decode (corrupt or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def plate_rows(
    pairs: Sequence[tuple[Detection, PlateRead | None]], min_confidence: float, include_all: bool
) -> list[dict]:
    """The reported plates (and with ``include_all`` every other box), surest first."""
    from anpr_pipeline.vision.plates import reportable

    rows = []
    for det, read in pairs:
        reported = read is not None and reportable(
            read.normalized, read.confidence, min_confidence=min_confidence
        )
        if not (reported or include_all):
            continue
        rows.append(
            {
                "plate": read.normalized if read else "",
                "text": read.text if read else "",
                "confidence": round(float(read.confidence), 4) if read else None,
                "char_confidences": [round(float(c), 4) for c in read.char_confidences] if read else [],
                "region": read.region if read else None,
                "box": {"x": det.box.x, "y": det.box.y, "w": det.box.w, "h": det.box.h},
                "detector_score": round(float(det.score), 4),
                "reported": reported,
            }
        )
    return sorted(rows, key=lambda r: (not r["reported"], -(r["confidence"] or 0.0)))


def read_photos(
    paths: Sequence[Path], detector, reader, min_confidence: float, include_all: bool = False
) -> Iterator[tuple[PhotoResult, np.ndarray | None]]:
    """Each photo's result (and its pixels, for annotation), in order, chunk by chunk."""
    from anpr_pipeline.vision.recognize import read_plates

    for start in range(0, len(paths), CHUNK):
        loaded: list[tuple[PhotoResult, np.ndarray | None]] = []
        for path in paths[start : start + CHUNK]:
            try:
                image = load_photo(path)
            except (OSError, ValueError) as exc:
                loaded.append((PhotoResult(str(path), error=str(exc)), None))
                continue
            loaded.append((PhotoResult(str(path), width=image.shape[1], height=image.shape[0]), image))
        images = [image for _, image in loaded if image is not None]
        per_image = iter(read_plates(images, detector, reader) if images else [])
        for result, image in loaded:
            if image is not None:
                result.plates = plate_rows(next(per_image), min_confidence, include_all)
            yield result, image


def annotate(image: np.ndarray, plates: Sequence[dict]) -> np.ndarray:
    """A BGR copy of ``image`` with each plate's box and read drawn (green: reported)."""
    import cv2

    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    thickness = max(2, round(max(image.shape[:2]) / 600))
    for row in plates:
        b = row["box"]
        colour = (0, 200, 0) if row["reported"] else (0, 160, 255)
        cv2.rectangle(out, (b["x"], b["y"]), (b["x"] + b["w"], b["y"] + b["h"]), colour, thickness)
        label = f"{row['plate'] or '?'} {row['confidence'] or 0:.2f}"
        scale = thickness / 3
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        y = max(th + 4, b["y"] - 4)
        cv2.rectangle(out, (b["x"], y - th - 4), (b["x"] + tw + 4, y + 2), colour, -1)
        cv2.putText(out, label, (b["x"] + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return out


def _line(result: PhotoResult) -> list[str]:
    if result.error:
        return [f"ERROR {result.error}"]
    if not result.plates:
        return [f"{result.file}: no plate"]
    lines = []
    for row in result.plates:
        b = row["box"]
        conf = "-" if row["confidence"] is None else f"{row['confidence']:.2f}"
        mark = "" if row["reported"] else "  (not reported)"
        lines.append(
            f"{result.file}: {row['plate'] or '?':10s} conf {conf}  region {row['region'] or '-':3s} "
            f"box {b['x']},{b['y']},{b['w']},{b['h']}{mark}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """`anpr read PHOTO|FOLDER ... [--json OUT] [--annotate DIR] [--all] [--detector ...]`."""
    ap = argparse.ArgumentParser(
        prog="anpr read",
        description="Read the plates in photos with the pipeline's detector and reader.",
    )
    ap.add_argument("inputs", nargs="+", help="image files, or folders of them")
    ap.add_argument("--json", dest="out", help="write every photo's result here ('-' for stdout)")
    ap.add_argument("--annotate", metavar="DIR", help="write each photo with its boxes and reads drawn here")
    ap.add_argument("--all", action="store_true", help="also list detector boxes whose read is not reported")
    ap.add_argument("--detector", help="default: ANPR_DETECTOR")
    ap.add_argument("--reader", help="default: ANPR_READER")
    ap.add_argument("--device", help="auto | cpu | cuda (default: ANPR_DEVICE)")
    ap.add_argument("--regions", help="plate regions, e.g. br or us,eu (default: ANPR_PLATE_REGIONS, any)")
    ap.add_argument(
        "--min-read-confidence",
        type=float,
        help="reads less sure are not reported (default: ANPR_MIN_READ_CONFIDENCE)",
    )
    args = ap.parse_args(argv)

    from anpr_pipeline.settings import PLATE_REGIONS, load_settings, parse_regions
    from anpr_pipeline.vision.detector import build_detector
    from anpr_pipeline.vision.reader import build_reader

    settings = load_settings()
    regions = parse_regions(args.regions if args.regions is not None else settings.plate_regions)
    unknown = sorted(set(regions or []) - set(PLATE_REGIONS))
    if unknown:
        ap.error(
            f"--regions: unknown region(s) {', '.join(unknown)}; expected some of {', '.join(PLATE_REGIONS)}"
        )
    paths = photo_paths(args.inputs)
    device = args.device or settings.device
    detector = build_detector(args.detector or settings.detector, device=device)
    reader = build_reader(
        args.reader or settings.reader,
        device=device,
        models_dir=settings.models_dir or None,
        regions=regions,
        text_row=settings.reader_text_row,
    )
    min_conf = settings.min_read_confidence if args.min_read_confidence is None else args.min_read_confidence
    annotate_dir = Path(args.annotate) if args.annotate else None
    if annotate_dir:
        annotate_dir.mkdir(parents=True, exist_ok=True)

    results = []
    for result, image in read_photos(paths, detector, reader, min_conf, args.all):
        results.append(result)
        if args.out != "-":
            print("\n".join(_line(result)))
        if annotate_dir and image is not None:
            import cv2

            # Numbered, so photos of the same name from different folders never overwrite.
            name = f"{len(results):04d}_{Path(result.file).stem}_anpr.jpg"
            cv2.imwrite(str(annotate_dir / name), annotate(image, result.plates))
    report = {
        "detector": detector.version,
        "reader": reader.version,
        "min_read_confidence": min_conf,
        "photos": [result.__dict__ for result in results],
    }
    if args.out == "-":
        print(json.dumps(report, indent=2))
    elif args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    failed = [r for r in results if r.error]
    if failed:
        print(f"anpr read: {len(failed)} of {len(results)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
