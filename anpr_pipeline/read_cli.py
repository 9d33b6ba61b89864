"""`anpr read PHOTO|VIDEO|FOLDER ...`: the plates in photos and clips, read like the pipeline.

For a quick answer to "what does the system read here?": a camera's still, a frame grab
attached to a complaint, a photo to check a watchlist hit against, or a clip from a new
camera before it is connected. Photos go through the same detector and reader as the
pipeline (:func:`~anpr_pipeline.vision.recognize.read_plates`, the path `anpr eval`
measures); a video goes through the pipeline's own per-video code (sampling, static gate,
detection, reading, tracking, the event rules of ``plate_events``) and gives the events the
pipeline would store, without the deployment's bucket, database or Dagster (its crops go to
a temporary folder). Both are configured by the
same ``ANPR_*`` settings (detector, reader, device, plate regions, text-row re-read,
``ANPR_MIN_READ_CONFIDENCE``, ``ANPR_SAMPLE_FPS``); the flags override some for one call.

Prints one line per plate or event; ``--json`` writes every file's result; ``--annotate DIR`` writes each photo with its boxes and reads drawn on it.
Only plates the pipeline would report are listed
(:func:`~anpr_pipeline.vision.recognize.reported_plates`); ``--all`` adds every other
detector box with whatever was read there. Photos are read as
viewers show them (EXIF orientation applied), so boxes match the annotated copies.

A folder stands for the images and videos directly inside it. A file that is missing, not
an image, a corrupt or truncated photo or video, or a photo the detector or reader fails on
is reported and skipped; the rest are still read, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anpr_pipeline.cli_args import out_dir_problem, out_path_problem
from anpr_pipeline.vision.types import Detection, PlateRead

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".ts", ".webm", ".m4v"}
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


@dataclass
class VideoResult:
    file: str
    duration_s: float = 0.0
    sampled_frames: int = 0
    events: list[dict] = field(default_factory=list)
    error: str | None = None


def resolve_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[PhotoResult | VideoResult]]:
    """(the files to read, the inputs that cannot be read): each input file, or the image and
    video files directly inside each input folder (sorted). A missing input or a folder with
    no image or video file is a problem, reported like a file that cannot be read, so the
    other inputs are still read; found here, before any model is loaded."""
    paths: list[Path] = []
    problems: list[PhotoResult | VideoResult] = []
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
            except OSError as exc:
                problems.append(PhotoResult(str(path), error=f"{path}: {exc.strerror or exc}"))
                continue
            if not found:
                problems.append(
                    PhotoResult(
                        str(path), error=f"{path}: no image or video files ({', '.join(sorted(suffixes))})"
                    )
                )
            paths.extend(found)
        elif not path.exists():
            result_type = VideoResult if is_video(path) else PhotoResult
            problems.append(result_type(str(path), error=f"{path}: no such file"))
        else:
            paths.append(path)
    return paths, problems


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def damaged_image_problem(path: Path) -> str | None:
    """Why the image file at ``path`` is damaged (truncated, corrupt data), or None.

    OpenCV decodes what it can of a truncated JPEG and fills the rest grey without an
    error, so a half-copied upload would be read as a photo with no plate. Pillow raises
    instead; it only checks here (OpenCV still decodes, so pixels and boxes are unchanged).
    A JPEG is checked at 1/8 scale: all of its data is still read, at a fraction of the cost.
    A format Pillow does not know is left to OpenCV."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, ValueError):
        # A format Pillow does not know, or one past Pillow's safety limits (a 200 MP phone
        # photo, a PNG with a large metadata chunk): not damage, left to OpenCV.
        return None
    except (OSError, SyntaxError) as exc:  # Pillow's "truncated" / "broken PNG file"
        return f"damaged image file ({exc})"
    return None


def load_photo(path: Path) -> np.ndarray:
    """RGB uint8, EXIF orientation applied; a clear error for a missing, non-image or
    damaged (e.g. truncated) file."""
    import cv2

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image OpenCV can decode (corrupt or unsupported format)")
    if problem := damaged_image_problem(path):
        raise ValueError(f"{path}: {problem}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def plate_rows(
    pairs: Sequence[tuple[Detection, PlateRead | None]],
    min_confidence: float,
    include_all: bool,
    require_format: bool = False,
    regions: Sequence[str] | None = None,
) -> list[dict]:
    """The reported plates (:func:`~anpr_pipeline.vision.recognize.reported_plates`; with
    ``require_format`` only reads fitting a format of ``regions``; with ``include_all``
    every other box too), surest first."""
    from anpr_pipeline.vision.recognize import fitting_formats, reported_plates

    candidates = fitting_formats(pairs, regions) if require_format else pairs
    reported_ids = {id(det) for det, _ in reported_plates(candidates, min_confidence)}
    rows = []
    for det, read in pairs:
        reported = read is not None and id(det) in reported_ids
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
    paths: Sequence[Path],
    detector,
    reader,
    min_confidence: float,
    include_all: bool = False,
    require_format: bool = False,
) -> Iterator[tuple[PhotoResult, np.ndarray | None]]:
    """Each photo's result (and its pixels, for annotation), in order, chunk by chunk.
    ``require_format``: report only reads fitting a format of the reader's regions. A photo
    the detector or reader fails on is that photo's error; the others are still read."""
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
        per_image = iter(_read_each(images, detector, reader))
        for result, image in loaded:
            if image is not None:
                pairs = next(per_image)
                if isinstance(pairs, Exception):
                    reason = (str(pairs).strip().splitlines() or [""])[-1]  # OpenCV's last line names it
                    result.error = f"{result.file}: reading failed ({type(pairs).__name__}: {reason})"
                    yield result, None
                    continue
                result.plates = plate_rows(
                    pairs, min_confidence, include_all, require_format, getattr(reader, "regions", None)
                )
            yield result, image


def _read_each(images: Sequence[np.ndarray], detector, reader) -> list[list | Exception]:
    """``read_plates`` over ``images`` in one batch; if that raises, photo by photo, so a
    photo the models fail on (an odd size, a model error) yields its exception in its place
    instead of losing the batch and the report."""
    from anpr_pipeline.vision.recognize import read_plates

    if not images:
        return []
    try:
        return read_plates(images, detector, reader)
    except Exception as exc:  # noqa: BLE001 - whatever the models raise: found below, photo by photo
        if len(images) == 1:
            return [exc]
    return [_read_one(image, detector, reader) for image in images]


def _read_one(image: np.ndarray, detector, reader) -> list | Exception:
    from anpr_pipeline.vision.recognize import read_plates

    try:
        return read_plates([image], detector, reader)[0]
    except Exception as exc:  # noqa: BLE001 - reported as this photo's error
        return exc


def read_video(
    path: Path, detector, reader, pipeline, detector_batch: int = 8, reader_batch: int = 32
) -> VideoResult:
    """The events the pipeline would store for this clip (``pipeline``: a ``PipelineConfig``),
    each with its time span in the clip.

    Crops go where the pipeline puts them, as JPEG through its uploader, here into a
    temporary local bucket, and are read back from there: the reads, and so the events, are
    those of an upload of this clip, and a long clip's crops sit on disk, not in memory.
    """
    import tempfile

    import pandas as pd

    from anpr_pipeline.assets.events import event_tracks, frame_reads
    from anpr_pipeline.assets.reads import with_reads
    from anpr_pipeline.resources.object_store import LocalObjectStore
    from anpr_pipeline.vision.decode import iter_frames, probe
    from anpr_pipeline.vision.tracker import track_reads
    from anpr_pipeline.vision.video_pipeline import detect_and_read

    info = probe(path)
    with tempfile.TemporaryDirectory(prefix="anpr-read-") as scratch:
        clip = detect_and_read(
            iter_frames(path, sample_fps=pipeline.sample_fps),
            detector,
            reader,
            LocalObjectStore(Path(scratch)),
            crop_prefix="crops/",
            detector_batch=detector_batch,
            reader_batch=reader_batch,
            static_threshold=pipeline.static_frame_threshold,
            crop_padding=pipeline.crop_padding,
        )
    frame_size = (info.width, info.height)
    table = with_reads(pd.DataFrame(clip.detections), clip.reads, frame_size, pipeline.crop_padding)
    tracks = track_reads(frame_reads(table)) if len(table) else []
    regions = getattr(reader, "regions", None)
    events = [_event(t) for t in event_tracks(tracks, pipeline, frame_size, regions)]
    return VideoResult(
        str(path),
        duration_s=round(info.duration_s, 3),
        sampled_frames=len(clip.records),
        events=sorted(events, key=lambda e: e["first_seen_s"]),
    )


def _event(track) -> dict:
    best = track.best
    return {
        "plate": track.text,
        "confidence": round(float(track.confidence), 4),
        "region": track.region,
        "frames_seen": track.frames_seen,
        "first_seen_s": round(track.first_pts_s, 3),
        "last_seen_s": round(track.last_pts_s, 3),
        "best_frame_s": round(best.pts_s, 3),
        "box": {"x": best.box.x, "y": best.box.y, "w": best.box.w, "h": best.box.h},
    }


def annotate(image: np.ndarray, plates: Sequence[dict]) -> np.ndarray:
    """A BGR copy of ``image`` with each plate's box and read drawn (green: reported)."""
    import cv2

    from anpr_pipeline.vision.draw import draw_labelled_box, line_thickness

    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    thickness = line_thickness(image)
    for row in plates:
        b = row["box"]
        colour = (0, 200, 0) if row["reported"] else (0, 160, 255)
        label = f"{row['plate'] or '?'} {row['confidence'] or 0:.2f}"
        draw_labelled_box(out, (b["x"], b["y"], b["w"], b["h"]), label, colour, thickness)
    return out


def _line(result: PhotoResult | VideoResult) -> list[str]:
    if result.error:
        return [f"ERROR {result.error}"]
    if isinstance(result, VideoResult):
        if not result.events:
            return [f"{result.file}: no plate events ({result.sampled_frames} frames sampled)"]
        return [
            f"{result.file} @{e['first_seen_s']:.1f}-{e['last_seen_s']:.1f}s: {e['plate']:10s} "
            f"conf {e['confidence']:.2f}  region {e['region'] or '-':3s} frames {e['frames_seen']}"
            for e in result.events
        ]
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


@dataclass(frozen=True)
class ReadSetup:
    """What one ``anpr read`` call reads with: settings, overridden by its flags."""

    detector: Any
    reader: Any
    pipeline: Any  # PipelineConfig: the video event rules
    min_read_confidence: float
    detector_batch: int
    reader_batch: int


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="anpr read",
        description="Read the plates in photos and videos with the pipeline's detector and reader.",
    )
    ap.add_argument("inputs", nargs="+", help="image or video files, or folders of them")
    ap.add_argument("--json", dest="out", help="write every file's result here ('-' for stdout)")
    ap.add_argument("--annotate", metavar="DIR", help="write each photo with its boxes and reads drawn here")
    ap.add_argument("--all", action="store_true", help="photos: also list boxes whose read is not reported")
    ap.add_argument("--detector", help="default: ANPR_DETECTOR")
    ap.add_argument("--reader", help="default: ANPR_READER")
    ap.add_argument("--device", help="auto | cpu | cuda (default: ANPR_DEVICE)")
    ap.add_argument("--regions", help="plate regions, e.g. br or us,eu (default: ANPR_PLATE_REGIONS, any)")
    ap.add_argument(
        "--min-read-confidence",
        type=float,
        help="reads less sure are not reported (default: ANPR_MIN_READ_CONFIDENCE)",
    )
    ap.add_argument(
        "--require-format",
        action="store_true",
        default=None,
        help="report only reads that fit a plate format of the regions (default: ANPR_REQUIRE_PLATE_FORMAT)",
    )
    ap.add_argument(
        "--sample-fps", type=float, help="video frames read per second (default: ANPR_SAMPLE_FPS)"
    )
    return ap


def check_model_flags(
    args: argparse.Namespace, ap: argparse.ArgumentParser, allow_no_reader: bool = False
) -> None:
    """``--detector`` / ``--reader`` / ``--device`` / ``--min-read-confidence`` checked like
    their ``ANPR_*`` settings, as one argparse error line (exit 2), before any model loads.
    Flags the parser lacks or left unset (None) are skipped; ``allow_no_reader``: ``--reader
    none`` (detection only, ``anpr eval``) is allowed."""
    from anpr_pipeline.settings import confidence_problem, detector_problem, device_problem, reader_problem

    checks = [
        ("detector", detector_problem),
        ("reader", lambda v: None if v == "none" and allow_no_reader else reader_problem(v)),
        ("device", device_problem),
    ]
    for name, problem_of in checks:
        value = getattr(args, name, None)
        problem = None if value is None else problem_of(value)
        if problem:
            ap.error(f"--{name}: {problem}")
    confidence = getattr(args, "min_read_confidence", None)
    if confidence is not None and confidence_problem(confidence):
        ap.error(f"--min-read-confidence {confidence_problem(confidence)}")


def resolve_device_or_exit(device: str, ap: argparse.ArgumentParser) -> str:
    """``device`` resolved (``auto`` -> cuda or cpu); ``cuda`` without a usable GPU is one
    argparse error line, not a traceback."""
    from anpr_pipeline.vision.device import resolve_device

    try:
        return resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        ap.error(str(exc))
        raise  # unreachable: ap.error exits


def _check_flags(args: argparse.Namespace, ap: argparse.ArgumentParser):
    """The settings with this call's flags applied, and its regions; a bad flag is an
    argparse error (one line, exit 2) before any input is looked at or model loaded."""
    from anpr_pipeline.settings import PLATE_REGIONS, load_settings, parse_regions

    check_model_flags(args, ap)
    settings = load_settings()
    regions = parse_regions(args.regions if args.regions is not None else settings.plate_regions)
    unknown = sorted(set(regions or []) - set(PLATE_REGIONS))
    if unknown:
        ap.error(
            f"--regions: unknown region(s) {', '.join(unknown)}; expected some of {', '.join(PLATE_REGIONS)}"
        )
    if args.sample_fps is not None and not 0 < args.sample_fps <= 120:
        ap.error(f"--sample-fps {args.sample_fps}: expected 0 < fps <= 120")
    if args.out and args.out != "-" and (problem := out_path_problem(Path(args.out))):
        ap.error(f"--json {args.out}: {problem}")
    if args.annotate and (problem := out_dir_problem(Path(args.annotate))):
        ap.error(f"--annotate {args.annotate}: {problem}")
    overrides = {
        "min_read_confidence": args.min_read_confidence,
        "sample_fps": args.sample_fps,
        "detector": args.detector,
        "reader": args.reader,
        "device": args.device,
        "require_plate_format": args.require_format,
    }
    if overrides["device"] is not None:
        overrides["device"] = overrides["device"].lower()
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None}), regions


def _setup(args: argparse.Namespace, ap: argparse.ArgumentParser) -> ReadSetup:
    from anpr_pipeline.resources.pipeline_config import PipelineConfig
    from anpr_pipeline.vision.detector import build_detector
    from anpr_pipeline.vision.reader import build_reader

    settings, regions = _check_flags(args, ap)
    device = resolve_device_or_exit(settings.device, ap)
    return ReadSetup(
        detector=build_detector(settings.detector, device=device),
        reader=build_reader(
            settings.reader,
            device=device,
            models_dir=settings.models_dir or None,
            regions=regions,
            text_row=settings.reader_text_row,
        ),
        pipeline=PipelineConfig.from_settings(settings),
        min_read_confidence=settings.min_read_confidence,
        detector_batch=settings.detector_batch_size,
        reader_batch=settings.reader_batch_size,
    )


def _read_all(
    paths: Sequence[Path], setup: ReadSetup, include_all: bool, annotate_dir: Path | None
) -> Iterator:
    """Each file's result, videos first; annotated photos written as they are read."""
    from anpr_pipeline.vision.decode import VideoDecodeError

    for path in (p for p in paths if is_video(p)):
        try:
            yield read_video(
                path, setup.detector, setup.reader, setup.pipeline, setup.detector_batch, setup.reader_batch
            )
        except VideoDecodeError as exc:
            yield VideoResult(str(path), error=str(exc))
    photos = [p for p in paths if not is_video(p)]
    for n, (result, image) in enumerate(
        read_photos(
            photos,
            setup.detector,
            setup.reader,
            setup.min_read_confidence,
            include_all,
            setup.pipeline.require_plate_format,
        ),
        1,
    ):
        if annotate_dir and image is not None:
            import cv2

            # Numbered, so photos of the same name from different folders never overwrite.
            name = f"{n:04d}_{Path(result.file).stem}_anpr.jpg"
            cv2.imwrite(str(annotate_dir / name), annotate(image, result.plates))
        yield result


def main(argv: list[str] | None = None) -> int:
    """`anpr read PHOTO|VIDEO|FOLDER ... [--json OUT] [--annotate DIR] [--all] [--detector ...]`."""
    ap = _parser()
    args = ap.parse_args(argv)
    _check_flags(args, ap)  # bad flags fail before the inputs are looked at
    paths, problems = resolve_inputs(args.inputs)
    if not paths:  # nothing to read: say why, without loading the models
        for problem in problems:
            print(f"anpr read: {problem.error}", file=sys.stderr)
        return 2
    setup = _setup(args, ap)
    annotate_dir = Path(args.annotate) if args.annotate else None
    if annotate_dir:
        annotate_dir.mkdir(parents=True, exist_ok=True)

    results = []
    for result in itertools.chain(problems, _read_all(paths, setup, args.all, annotate_dir)):
        results.append(result)
        if args.out != "-":
            print("\n".join(_line(result)))
    report = {
        "detector": setup.detector.version,
        "reader": setup.reader.version,
        "min_read_confidence": setup.min_read_confidence,
        "require_format": setup.pipeline.require_plate_format,
        "photos": [r.__dict__ for r in results if isinstance(r, PhotoResult)],
        "videos": [r.__dict__ for r in results if isinstance(r, VideoResult)],
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
