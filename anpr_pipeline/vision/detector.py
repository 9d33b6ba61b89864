"""Plate detectors behind one factory, :func:`build_detector`.

Implementations (pick by name; ``"default"`` is the one that measures best on
``../shared/data/real_dev`` and still works on the synthetic demo videos — see
``anpr_pipeline/weights/MODELS.md`` for the numbers):

- ``"classical"``: a contour/morphology candidate finder (OpenCV). A plate is a
  light (or dark) rectangle of wide aspect holding a row of high-contrast vertical
  strokes; blackhat/gradient + a horizontal close turns such a row into one blob,
  contours give candidates, geometry and a text-density score filter them. No
  weights, a few milliseconds per 1280x720 frame.
- ``"cascade"`` (the default): the classical finder in proposal mode (several box fits per
  blob, a half-resolution pass, a low score bar) and a small CNN, the PlateVerifier
  (vision/verifier.py, ``weights/plate_verifier_v2.pt``), that keeps the boxes that are
  whole, well-fitted plates. Better recall than "classical" on close-up photos and ~4x
  better precision; ~50 ms CPU per 1280x720 frame.
- ``"platenet"``: a tiny segmentation net (vision/plate_net.py). Trained and measured,
  not shipped: it did not transfer from dashcam frames to close-up photos (MODELS.md).

Every detector returns boxes in the coordinates of the image it was given.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from anpr_pipeline.vision.types import Box, Detection, PlateDetector

# Working width of the classical finder: plates in traffic frames are >= ~60 px wide
# at 1280 px, so half resolution keeps strokes >= 2 px while making it ~4x cheaper.
_CLASSICAL_WORK_WIDTH = 640


@dataclass(frozen=True)
class ClassicalParams:
    """Geometry limits in working-image pixels (after resizing to ``work_width``)."""

    work_width: int = _CLASSICAL_WORK_WIDTH
    min_width: int = 24
    max_width_frac: float = 0.95  # of the image width (close-up photos: the plate may fill it)
    min_aspect: float = 1.3  # two-line plates (EU square, moto) are ~1.3-2
    max_aspect: float = 7.5
    min_fill: float = 0.35  # contour area / bounding-box area
    min_score: float = 0.35
    max_detections: int = 12
    pyramid: bool = False  # a second pass at half resolution finds plates too big for the kernels
    fit: str = (
        "band"  # how a blob becomes a plate box: "band" (stroke profile) | "grow" (grey-level rim) | "both"
    )
    nms_iou: float = 0.3
    # A second pass over a local-contrast-equalised (CLAHE) copy, kept only in regions the
    # plain pass left empty: finds faded or shaded plates whose strokes are too faint for
    # the Otsu threshold of the plain pass.
    clahe: bool = False


CLAHE_NEW_REGION_IOU = 0.1


def _equalised(gray: np.ndarray) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)


def nms(dets: list[Detection], iou_threshold: float = 0.3) -> list[Detection]:
    """Greedy non-maximum suppression by score (highest first)."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: d.score, reverse=True):
        if all(d.box.iou(k.box) < iou_threshold for k in kept):
            kept.append(d)
    return kept


def _text_density_score(gray: np.ndarray, x: int, y: int, w: int, h: int) -> float:
    """How plate-like the region looks: a row of several vertical strokes.

    Counts sign changes of the binarised middle band (characters give 2 per
    stroke: 10-30 transitions for a 5-8 char plate) and the share of the box
    that is "ink" (plates sit around 15-50 %). Returns 0..1.
    """
    roi = gray[y : y + h, x : x + w]
    if roi.size == 0 or h < 6 or w < 12:
        return 0.0
    _, binary = cv2.threshold(roi, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    band = binary[h // 4 : h - h // 4] > 0
    if band.size == 0:
        return 0.0
    transitions = np.count_nonzero(band[:, 1:] != band[:, :-1], axis=1)
    per_row = float(np.median(transitions))
    ink = float(band.mean())
    ink = min(ink, 1.0 - ink)  # dark-on-light or light-on-dark both fine
    # Stroke count score peaks for 8..30 transitions across the plate.
    stroke = float(np.clip((per_row - 4.0) / 8.0, 0.0, 1.0)) * float(
        np.clip((48.0 - per_row) / 18.0, 0.0, 1.0)
    )
    ink_score = float(np.clip((ink - 0.08) / 0.12, 0.0, 1.0))
    contrast = float(np.clip((float(roi.std()) - 15.0) / 35.0, 0.0, 1.0))
    return stroke * (0.5 + 0.5 * ink_score) * (0.4 + 0.6 * contrast)


def _grow_to_plate(gray: np.ndarray, blob: Box, dark_text: bool) -> Box:
    """Grow a character-row blob out to the plate's rim.

    The closed gradient hugs the characters, but labels (and readers) want the whole
    plate. The plate background has the "paper" grey level of the blob; rows above and
    below (and columns to the sides) that are still mostly that grey belong to the plate.
    """
    h_img, w_img = gray.shape
    roi = gray[blob.y : blob.y + blob.h, blob.x : blob.x + blob.w]
    thr, _ = cv2.threshold(roi, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    paper = roi[roi > thr] if dark_text else roi[roi <= thr]
    if paper.size == 0:
        return blob
    bg, tol = float(np.median(paper)), max(18.0, 2.0 * float(paper.std()))

    def plate_like(strip: np.ndarray) -> bool:
        return strip.size > 0 and float(np.mean(np.abs(strip.astype(np.float32) - bg) < tol)) >= 0.55

    x0, x1, y0, y1 = blob.x, blob.x + blob.w, blob.y, blob.y + blob.h
    max_dy, max_dx = blob.h, max(2, blob.w // 8)
    while y0 > 0 and blob.y - y0 < max_dy and plate_like(gray[y0 - 1, x0:x1]):
        y0 -= 1
    while y1 < h_img and y1 - (blob.y + blob.h) < max_dy and plate_like(gray[y1, x0:x1]):
        y1 += 1
    while x0 > 0 and blob.x - x0 < max_dx and plate_like(gray[y0:y1, x0 - 1]):
        x0 -= 1
    while x1 < w_img and x1 - (blob.x + blob.w) < max_dx and plate_like(gray[y0:y1, x1]):
        x1 += 1
    # A small margin for the rim itself (a dark frame line or a shadow edge).
    mx, my = max(1, (x1 - x0) // 40), max(1, (y1 - y0) // 12)
    return Box(x0 - mx, y0 - my, x1 - x0 + 2 * mx, y1 - y0 + 2 * my).clip(w_img, h_img)


def _runs(active: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D mask, bridging gaps of up to ``max_gap``."""
    idx = np.flatnonzero(active)
    if idx.size == 0:
        return []
    runs, start, prev = [], int(idx[0]), int(idx[0])
    for i in idx[1:]:
        if i - prev > max_gap + 1:
            runs.append((start, prev + 1))
            start = int(i)
        prev = int(i)
    runs.append((start, prev + 1))
    return runs


def _fit_text_band(grad: np.ndarray, blob: Box) -> Box | None:
    """Fit the plate box from the stroke-energy profiles inside a candidate blob.

    The closed blob often swallows a bumper edge or a light next to the plate. Rows with
    strong vertical strokes give the character band; inside it, the longest dense run of
    columns (gaps up to ~one character bridged) gives the plate's text extent. The plate
    is then the band grown to 1.5x its height (the rim above and below the characters:
    ~1.25x for EU, ~2x for US layouts) and by a few percent sideways.
    """
    h_img, w_img = grad.shape
    pad = blob.h // 2
    y0, y1 = max(0, blob.y - pad), min(h_img, blob.y + blob.h + pad)
    roi = grad[y0:y1, blob.x : blob.x + blob.w].astype(np.float32)
    if roi.size == 0:
        return None
    rows = roi.mean(axis=1)
    band_runs = _runs(rows >= 0.45 * rows.max(), max_gap=1)
    ry0, ry1 = max(band_runs, key=lambda r: rows[r[0] : r[1]].sum())
    band_h = ry1 - ry0
    if band_h < 4:
        return None
    cols = roi[ry0:ry1].mean(axis=0)
    k = max(1, band_h // 3)
    cols = np.convolve(cols, np.ones(k) / k, mode="same")
    col_runs = _runs(cols >= 0.3 * cols.max(), max_gap=max(2, int(0.6 * band_h)))
    cx0, cx1 = max(col_runs, key=lambda r: cols[r[0] : r[1]].sum())
    text_w = cx1 - cx0
    if text_w < 1.2 * band_h:
        return None
    ph, mx = 1.5 * band_h, 0.06 * text_w
    cy = y0 + (ry0 + ry1) / 2.0
    return Box(round(blob.x + cx0 - mx), round(cy - ph / 2), round(text_w + 2 * mx), round(ph)).clip(
        w_img, h_img
    )


def _candidates(gray: np.ndarray, p: ClassicalParams) -> list[Detection]:
    h_img, w_img = gray.shape
    found: list[Detection] = []
    # Dark text on light plates (blackhat) and light text on dark plates (tophat).
    for op in (cv2.MORPH_BLACKHAT, cv2.MORPH_TOPHAT):
        hat = cv2.morphologyEx(gray, op, cv2.getStructuringElement(cv2.MORPH_RECT, (15, 5)))
        # Vertical strokes: horizontal gradient of the hat image.
        grad = np.abs(cv2.Sobel(hat, cv2.CV_32F, 1, 0, ksize=3))
        grad = cv2.normalize(grad, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        grad = cv2.GaussianBlur(grad, (5, 5), 0)
        for kw in (13, 21):  # two close widths: small/far and large/near plates
            closed = cv2.morphologyEx(
                grad, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (kw, 3))
            )
            _, mask = cv2.threshold(closed, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            mask = cv2.erode(mask, None, iterations=1)
            mask = cv2.dilate(mask, None, iterations=2)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                if w < p.min_width or w > p.max_width_frac * w_img or h < 6:
                    continue
                aspect = w / h
                if not p.min_aspect <= aspect <= p.max_aspect:
                    continue
                if cv2.contourArea(c) / float(w * h) < p.min_fill:
                    continue
                for fit in ("band", "grow") if p.fit == "both" else (p.fit,):
                    if fit == "band":
                        b = _fit_text_band(grad, Box(x, y, w, h))
                        if b is None or not p.min_aspect <= b.w / max(b.h, 1) <= p.max_aspect:
                            continue
                    else:
                        b = _grow_to_plate(gray, Box(x, y, w, h), dark_text=op == cv2.MORPH_BLACKHAT)
                    score = _text_density_score(gray, b.x, b.y, b.w, b.h)
                    if score >= p.min_score:
                        found.append(Detection(b, score))
    return found


class ClassicalDetector:
    """Contour/morphology plate finder; no weights, CPU only, a few ms per frame."""

    def __init__(self, params: ClassicalParams | None = None) -> None:
        self.params = params or ClassicalParams()
        self.version = "classical-morph-2" + ("+clahe" if self.params.clahe else "")

    def detect_one(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        scale = min(1.0, self.params.work_width / float(w))
        small = (  # at least 1 px each way: a 1 x 2000 strip would round to 0 rows
            cv2.resize(
                image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
            if scale < 1
            else image
        )
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        found = self._candidates_with_pyramid(gray)
        if self.params.clahe:
            # Only where the plain pass proposed nothing: where both find a plate, the plain
            # fits are tighter (equalisation also lifts holder and bumper edges).
            found += [
                d
                for d in self._candidates_with_pyramid(_equalised(gray))
                if all(d.box.iou(p.box) < CLAHE_NEW_REGION_IOU for p in found)
            ]
        dets = nms(found, self.params.nms_iou)[: self.params.max_detections]
        inv = 1.0 / scale
        return [
            Detection(
                Box(
                    round(d.box.x * inv), round(d.box.y * inv), round(d.box.w * inv), round(d.box.h * inv)
                ).clip(w, h),
                round(d.score, 4),
            )
            for d in dets
        ]

    def _candidates_with_pyramid(self, gray: np.ndarray) -> list[Detection]:
        found = _candidates(gray, self.params)
        if self.params.pyramid and gray.shape[1] >= 2 * self.params.min_width * 4:
            half_size = (gray.shape[1] // 2, max(1, gray.shape[0] // 2))
            half = cv2.resize(gray, half_size, interpolation=cv2.INTER_AREA)
            fx, fy = gray.shape[1] / half.shape[1], gray.shape[0] / half.shape[0]
            for d in _candidates(half, self.params):
                b = Box(round(d.box.x * fx), round(d.box.y * fy), round(d.box.w * fx), round(d.box.h * fy))
                found.append(Detection(b, d.score))
        return found

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect_one(img) for img in images]


WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
PLATENET_WEIGHTS = "plate_net_v1.pt"


class NetDetector:
    """PlateNet (vision/plate_net.py): a tiny segmentation net, boxes from its plate map.

    Frames are letterboxed to ``max_side`` (reduced input keeps video real-time on a CPU);
    boxes are mapped back to the caller's full-resolution coordinates.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        max_side: int = 640,
        threshold: float = 0.5,
        min_score: float = 0.6,
        aspect: tuple[float, float] = (0.0, 1e9),
        model=None,
    ) -> None:
        import torch

        from anpr_pipeline.vision.plate_net import PlateNet

        path = Path(weights) if weights else WEIGHTS_DIR / PLATENET_WEIGHTS
        if model is None:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model = PlateNet()
            model.load_state_dict(ckpt["state_dict"])
        self.model = model.eval().to(device)
        self.device, self.batch_size = device, batch_size
        self.max_side, self.threshold, self.min_score, self.aspect = max_side, threshold, min_score, aspect
        self.version = f"platenet-{path.stem}@{max_side}"

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        import torch

        from anpr_pipeline.vision.plate_net import boxes_from_map, letterbox, to_tensor

        out: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            boxed = [letterbox(img, self.max_side) for img in chunk]
            # Letterboxed sizes differ between images of different shapes: group equal ones.
            probs: list[np.ndarray | None] = [None] * len(chunk)
            by_shape: dict[tuple[int, int], list[int]] = {}
            for i, (arr, _) in enumerate(boxed):
                by_shape.setdefault(arr.shape[:2], []).append(i)
            with torch.inference_mode():
                for idx in by_shape.values():
                    x = to_tensor([boxed[i][0] for i in idx]).to(self.device)
                    p = torch.sigmoid(self.model(x))[:, 0].float().cpu().numpy()
                    for k, i in enumerate(idx):
                        probs[i] = p[k]
            for img, (_, scale), prob in zip(chunk, boxed, probs, strict=True):
                h, w = img.shape[:2]
                dets = [
                    Detection(
                        Box(round(x / scale), round(y / scale), round(bw / scale), round(bh / scale)).clip(
                            w, h
                        ),
                        round(score, 4),
                    )
                    for x, y, bw, bh, score in boxes_from_map(
                        prob, self.threshold, self.min_score, aspect=self.aspect
                    )
                ]
                out.append(sorted((d for d in dets if d.box.area > 0), key=lambda d: -d.score))
        return out


# Proposal settings for the cascade: every box fit of every blob, a low text-score bar,
# near-duplicates only merged; the verifier does the selecting.
# The half-resolution pass adds proposals for plates too large for the closing kernels
# (close-up photos), which the verifier can then accept.
# The CLAHE pass was chosen on the Romanian valid frames (recall 0.695 -> 0.710, precision
# 0.929 -> 0.894; the synthetic demo videos unchanged), never on real_dev.
PROPOSAL_PARAMS = ClassicalParams(
    fit="both", min_score=0.1, nms_iou=0.85, max_detections=100, pyramid=True, clahe=True
)
VERIFIER_WEIGHTS = "plate_verifier_v2.pt"


# Box refinement: each kept box's edges are moved by these fractions of its width (left,
# right) and height (top, bottom), 3**4 = 81 variants, scored by the verifier; the box
# becomes the score-weighted mean of the REFINE_TOP best. The verifier was trained to
# reject poorly fitted boxes, so its score peaks around the plate rim; averaging the best
# variants is steadier than taking the single best. Chosen on the Romanian valid frames
# (share of boxes at IoU >= 0.7: 0.47 -> 0.67), never on real_dev.
REFINE_X = (-0.1, 0.0, 0.1)
REFINE_Y = (-0.15, 0.0, 0.15)
REFINE_TOP = 10


def box_variants(box: Box) -> list[Box]:
    """The 81 edge-shifted variants of ``box`` searched by the refinement."""
    out = []
    for left, right, top, bottom in itertools.product(REFINE_X, REFINE_X, REFINE_Y, REFINE_Y):
        x0, x1 = box.x - left * box.w, box.x + box.w + right * box.w
        y0, y1 = box.y - top * box.h, box.y + box.h + bottom * box.h
        out.append(Box(round(x0), round(y0), round(x1 - x0), round(y1 - y0)))
    return out


def weighted_box(boxes: Sequence[Box], weights: np.ndarray) -> Box:
    corners = np.array([[b.x, b.y, b.x + b.w, b.y + b.h] for b in boxes], dtype=np.float64)
    x0, y0, x1, y1 = (corners * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-9)
    return Box(round(x0), round(y0), round(x1 - x0), round(y1 - y0))


class CascadeDetector:
    """Classical proposals (many box fits per blob) scored by the PlateVerifier CNN.

    Final score = verifier probability; boxes under ``min_score`` are dropped and
    overlapping boxes are reduced to the best-scored one (NMS), so the verifier also picks
    the best-fitting box among a blob's alternatives. With ``refine`` each kept box is then
    re-fitted by a local search scored by the same verifier (see ``box_variants``).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        min_score: float = 0.5,
        proposals: ClassicalParams = PROPOSAL_PARAMS,
        model=None,
        refine: bool = False,
    ) -> None:
        import torch

        from anpr_pipeline.vision.verifier import PlateVerifier

        path = Path(weights) if weights else WEIGHTS_DIR / VERIFIER_WEIGHTS
        if model is None:
            model = PlateVerifier()
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        self.model = model.eval().to(device)
        self.device, self.min_score, self.refine = device, min_score, refine
        self.proposer = ClassicalDetector(proposals)
        self.version = f"cascade-{self.proposer.version}+{path.stem}" + ("+refine81" if refine else "")

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        from anpr_pipeline.vision.verifier import box_patch, score_patches

        props = [self.proposer.detect_one(image) for image in images]
        # One verifier pass over every proposal of the batch (per-call overhead dominates
        # for a dozen 32x96 patches).
        patches = [box_patch(image, d.box) for image, ps in zip(images, props, strict=True) for d in ps]
        scores = iter(score_patches(self.model, patches, self.device))
        out = []
        for ps in props:
            dets = [Detection(d.box, round(float(next(scores)), 4)) for d in ps]
            out.append(nms([d for d in dets if d.score >= self.min_score], 0.3))
        return self._refine(images, out) if self.refine else out

    def _refine(
        self, images: Sequence[np.ndarray], per_image: list[list[Detection]]
    ) -> list[list[Detection]]:
        """Re-fit every kept box (one verifier pass over all variants of the batch)."""
        from anpr_pipeline.vision.verifier import box_patch, score_patches

        variants = [
            [v.clip(image.shape[1], image.shape[0]) for v in box_variants(d.box)]
            for image, dets in zip(images, per_image, strict=True)
            for d in dets
        ]
        owners = [image for image, dets in zip(images, per_image, strict=True) for _ in dets]
        patches = [box_patch(image, v) for image, vs in zip(owners, variants, strict=True) for v in vs]
        if not patches:
            return per_image
        scores = score_patches(self.model, patches, self.device).reshape(len(variants), -1)
        refined: list[list[Detection]] = []
        k = 0
        for image, dets in zip(images, per_image, strict=True):
            row = []
            for d in dets:
                best = np.argsort(-scores[k])[:REFINE_TOP]
                box = weighted_box([variants[k][i] for i in best], scores[k][best])
                row.append(Detection(box.clip(image.shape[1], image.shape[0]), d.score))
                k += 1
            refined.append(row)
        return refined


DETECTORS = ("classical", "platenet", "cascade", "cascade-fast", "cascade-hq", "cascade-refine")
DEFAULT_DETECTOR = "cascade"


def build_detector(name: str = "default", device: str = "auto", batch_size: int = 8) -> PlateDetector:
    """Return the plate detector called ``name`` ("default" = the measured best).

    ``device`` and ``batch_size`` apply to the neural detectors; the classical one is
    CPU-only and per-image, so it ignores them.
    """
    key = DEFAULT_DETECTOR if name == "default" else name
    if key == "classical":
        return ClassicalDetector()
    if key in {"cascade", "cascade-fast", "cascade-hq", "cascade-refine"}:
        from anpr_pipeline.vision.device import resolve_device

        # "cascade-hq" proposes at 960 px instead of 640: small/far plates (< ~90 px wide in
        # a 1280 px frame) are found more often, at ~2x the cost; for photos, not video.
        params = replace(PROPOSAL_PARAMS, work_width=960) if key == "cascade-hq" else PROPOSAL_PARAMS
        # "cascade-fast" skips the CLAHE proposal pass: ~1.4x the detector throughput on
        # video, for CPU-bound cameras, at the cost of faded/shaded plates.
        if key == "cascade-fast":
            params = replace(params, clahe=False)
        # "cascade-refine" re-fits each kept box (box_variants): tighter boxes, ~3x the cost.
        det = CascadeDetector(device=resolve_device(device), proposals=params, refine=key == "cascade-refine")
        if key == "cascade-hq":
            det.version += "@960"
        return det
    if key == "platenet":
        from anpr_pipeline.vision.device import resolve_device

        if not (WEIGHTS_DIR / PLATENET_WEIGHTS).exists():
            # Measured and not shipped (weights/MODELS.md): usable once trained here.
            raise FileNotFoundError(
                f"detector 'platenet' has no weights: {PLATENET_WEIGHTS} is not shipped (weights/MODELS.md); "
                f"train it with `anpr train detector --model platenet` and copy the result to {WEIGHTS_DIR}"
            )
        return NetDetector(device=resolve_device(device), batch_size=batch_size)
    raise ValueError(f"unknown detector {name!r}; choose one of {('default', *DETECTORS)}")
