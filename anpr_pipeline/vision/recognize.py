"""Detection + reading of whole images: the one code path the pipeline and `anpr eval` share.

Detectors take whole frames (they downscale internally); crops are always cut from the
full-resolution image, so the reader sees every pixel the camera recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anpr_pipeline.vision.types import Box, Detection, PlateDetector, PlateRead, PlateReader

# Crop margin (fraction of the box size on each side): detector boxes sit on the plate
# rim and are sometimes a few pixels tight; readers cope with a little border much better
# than with a clipped first/last character.
CROP_PAD = 0.06


def crop_detections(
    image: np.ndarray, detections: Sequence[Detection], pad: float = CROP_PAD
) -> list[np.ndarray]:
    """Full-resolution crops of ``detections`` (contiguous copies, safe to keep)."""
    return [np.ascontiguousarray(d.box.crop(image, pad=pad)) for d in detections]


def read_plates(
    images: Sequence[np.ndarray],
    detector: PlateDetector,
    reader: PlateReader | None,
    pad: float = CROP_PAD,
) -> list[list[tuple[Detection, PlateRead | None]]]:
    """Detect plates in each image and read every detection, batched across images.

    Returns, per image, ``(detection, read)`` pairs in the detector's order; ``read`` is
    None when ``reader`` is None (detection-only evaluation).
    """
    per_image = detector.detect(list(images))
    crops: list[np.ndarray] = []
    for image, dets in zip(images, per_image, strict=True):
        crops.extend(crop_detections(image, dets, pad))
    reads: list[PlateRead | None]
    if reader is None or not crops:
        reads = [None] * len(crops)
    else:
        reads = list(reader.read(crops))
    out: list[list[tuple[Detection, PlateRead | None]]] = []
    i = 0
    for image, dets in zip(images, per_image, strict=True):
        height, width = image.shape[:2]
        out.append([located(d, reads[i + k], width, height, pad) for k, d in enumerate(dets)])
        i += len(dets)
    return out


def located(
    detection: Detection, read: PlateRead | None, width: int, height: int, pad: float = CROP_PAD
) -> tuple[Detection, PlateRead | None]:
    """``(detection, read)`` with the detection's box moved to where the reader found the
    plate inside its crop (see :func:`plate_box`)."""
    if read is None or read.box is None:
        return detection, read
    return Detection(plate_box(detection.box, read, width, height, pad), detection.score), read


def plate_box(box: Box, read: PlateRead, width: int, height: int, pad: float) -> Box:
    """Where ``read`` places the plate, in image pixels: ``read.box`` (crop pixels, set when
    the reader re-read a tighter cut, so a box that held the plate with its holder or a
    light becomes the plate) moved to the crop's origin, the box padded by ``pad`` and
    clipped to the width x height image as crops are cut; else ``box`` itself."""
    if read.box is None:
        return box
    origin = box.padded(pad, width, height)
    return read.box.shifted(origin.x, origin.y)


def fitting_formats(
    pairs: Sequence[tuple[Detection, PlateRead | None]], regions: Sequence[str] | None = None
) -> list[tuple[Detection, PlateRead | None]]:
    """The pairs whose read fits a plate format of ``regions`` (None: any region's): what is
    left to report where every plate is known to follow its country's formats
    (``ANPR_REQUIRE_PLATE_FORMAT``). Pairs without a read are kept."""
    from anpr_pipeline.vision.plates import fits_format

    return [(d, r) for d, r in pairs if r is None or fits_format(r.normalized, regions)]


def reported_plates(
    pairs: Sequence[tuple[Detection, PlateRead | None]], min_confidence: float, min_cover: float = 0.5
) -> list[tuple[Detection, PlateRead | None]]:
    """The ``(detection, read)`` pairs of one image that are reported as plates: reads
    :func:`~anpr_pipeline.vision.plates.reportable` (long and sure enough), less those whose
    box lies inside (``min_cover`` of it) a surer reported read's box or on its rim
    (``Box.on_plate``): a state name, slogan or dealer line on a plate read as a plate of
    its own (the photo form of the events' nested-track rule). Without a reader (``read``
    None) every pair is kept.
    """
    from anpr_pipeline.vision.plates import reportable

    if any(read is None for _, read in pairs):
        return list(pairs)
    sure = [(d, r) for d, r in pairs if reportable(r.normalized, r.confidence, min_confidence=min_confidence)]
    return [
        (d, r)
        for d, r in sure
        if not any(r2.confidence > r.confidence and d.box.on_plate(d2.box, min_cover) for d2, r2 in sure)
    ]
