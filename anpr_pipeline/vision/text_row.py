"""Find a plate's character row(s) inside a detector box, from connected components.

Detector boxes on US plates are often the plate *with its holder*, or its text row merged
with a light or bumper hardware beside it: the verifier scores such boxes as plates, and
a reader given them squeezes small characters (plus frame text) into its 32-pixel input.
Characters, unlike holders, are a row of similar-height blobs with regular gaps. This
module finds that row (or two stacked rows, for two-row plates) by binarising the crop in
both polarities and chaining connected components, and returns the plate box implied by
it, so a loose box can be tightened before the crop is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

import cv2
import numpy as np

from anpr_pipeline.vision.types import Box

# Work height: crops are resized so that character blobs are a few dozen pixels tall.
WORK_HEIGHT = 96


@dataclass(frozen=True)
class TextRowParams:
    # Character heights tried, in pixels of the WORK_HEIGHT-high working image. Each is
    # searched on its own (blobs within ``height_band`` of it, lines longer than a glyph
    # of that size removed), since rims and holder edges only separate from the glyphs
    # once the glyph size is known.
    char_heights: tuple[int, ...] = (16, 22, 30, 40, 54, 72)
    height_band: float = 1.3
    min_chars: int = 4  # a plate row has at least this many characters...
    min_blobs: int = 3  # ...in at least this many separate blobs (touching glyphs merge)
    max_aspect: float = 2.8  # blob width / height: up to ~3 touching glyphs; wider is a bar
    min_fill: float = 0.12  # blob pixels / blob box
    max_height_ratio: float = 1.35  # blobs of one row have similar heights
    max_misalign: float = 0.2  # tops and bottoms of neighbouring glyphs, in character heights
    max_gap: float = 1.4  # gap between neighbours, in character heights
    pad_x: float = 0.45  # plate margin beside the row, in character heights
    pad_y: float = 0.45  # plate margin above and below the row, in character heights


DEFAULT_PARAMS = TextRowParams()


@dataclass(frozen=True)
class _Blob:
    x: int
    y: int
    w: int
    h: int

    @property
    def glyphs(self) -> int:
        """How many characters the blob probably holds (touching glyphs merge into one)."""
        return max(1, round(self.w / (0.65 * self.h)))


def _without_long_lines(binary: np.ndarray, char_h: int) -> np.ndarray:
    """Remove strokes longer than any glyph of height ``char_h`` (plate rims, holder edges,
    bumper lines): glyphs touching the rim would otherwise merge with it and be lost."""
    long_h = cv2.getStructuringElement(cv2.MORPH_RECT, (int(2.2 * char_h), 1))
    long_v = cv2.getStructuringElement(cv2.MORPH_RECT, (1, int(1.35 * char_h)))
    lines = cv2.bitwise_or(
        cv2.morphologyEx(binary, cv2.MORPH_OPEN, long_h), cv2.morphologyEx(binary, cv2.MORPH_OPEN, long_v)
    )
    return cv2.subtract(binary, lines)


def _blobs(binary: np.ndarray, char_h: int, p: TextRowParams) -> list[_Blob]:
    """Character-shaped connected components about ``char_h`` pixels tall."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if not char_h / p.height_band <= bh <= char_h * p.height_band:
            continue
        if bw > p.max_aspect * bh or bw < 0.08 * bh:
            continue
        if area < p.min_fill * bw * bh:
            continue
        out.append(_Blob(x, y, bw, bh))
    return out


def _fits(b: _Blob, row: list[_Blob], p: TextRowParams) -> bool:
    """Whether ``b`` continues ``row``: a height like the row's, and the top and bottom
    lines of its nearest neighbour in the row (nearest, so that slanted rows still chain)
    within ``max_gap`` character heights of it."""
    others = [m for m in row if m is not b]
    if not others:
        return True
    ref_h = median(m.h for m in others)
    if max(b.h, ref_h) / min(b.h, ref_h) > p.max_height_ratio:
        return False

    def gap(m: _Blob) -> int:
        return max(m.x - (b.x + b.w), b.x - (m.x + m.w), 0)

    near = min(others, key=gap)
    tol = p.max_misalign * ref_h
    aligned = abs(b.y - near.y) <= tol and abs(b.y + b.h - near.y - near.h) <= tol
    return aligned and gap(near) <= p.max_gap * ref_h


def _overlaps(b: _Blob, row: list[_Blob]) -> bool:
    """Glyphs sit side by side; blobs stacked over each other are not a row."""
    return any(min(b.x + b.w, m.x + m.w) - max(b.x, m.x) > 0.3 * min(b.w, m.w) for m in row if m is not b)


def _trim_thin_ends(row: list[_Blob], p: TextRowParams) -> list[_Blob]:
    """Drop thin blobs set apart at either end: the rim or holder edge beside the text
    (a "1" or "I" sits at the row's usual spacing and stays)."""
    while len(row) > p.min_blobs:
        gaps = [row[i + 1].x - (row[i].x + row[i].w) for i in range(len(row) - 1)]
        ch, typical = median(m.h for m in row), max(1.0, median(gaps))
        if row[0].w < 0.3 * row[0].h and gaps[0] > max(0.4 * ch, 2 * typical):
            row = row[1:]
        elif row[-1].w < 0.3 * row[-1].h and gaps[-1] > max(0.4 * ch, 2 * typical):
            row = row[:-1]
        else:
            return row
    return row


def _rows(blobs: list[_Blob], p: TextRowParams) -> list[list[_Blob]]:
    """Chains of blobs with similar heights, aligned tops and bottoms and small gaps, grown
    from the tallest blobs outwards until nothing more joins, then pruned against the
    whole row (a blob that joined early may not fit the finished row)."""
    taken: set[int] = set()
    rows: list[list[_Blob]] = []
    for seed in sorted(range(len(blobs)), key=lambda i: -blobs[i].h):
        if seed in taken:
            continue
        members = {seed}
        grown = True
        while grown:
            row = [blobs[i] for i in members]
            new = {
                i
                for i, b in enumerate(blobs)
                if i not in members and i not in taken and _fits(b, row, p) and not _overlaps(b, row)
            }
            members |= new
            grown = bool(new)
        taken |= members
        row = sorted((blobs[i] for i in members), key=lambda b: b.x)
        row = [b for b in row if _fits(b, row, p)] or row
        rows.append(_trim_thin_ends(row, p))
    return rows


def _row_box(row: list[_Blob]) -> tuple[float, float, float, float, float]:
    x0, y0 = min(b.x for b in row), min(b.y for b in row)
    x1, y1 = max(b.x + b.w for b in row), max(b.y + b.h for b in row)
    return x0, y0, x1, y1, float(median(b.h for b in row))


def _best_row(
    families: list[list[list[_Blob]]], width: int, height: int, p: TextRowParams
) -> tuple[float, ...] | None:
    """The row most like a plate's main text: many tall characters near the middle.

    ``families``: the rows found for one (polarity, character height) each; a second row
    (two-row plates) is only taken from the best row's own family.
    """

    def score(row: list[_Blob]) -> float:
        x0, y0, x1, y1, ch = _row_box(row)
        off_centre = abs((x0 + x1) / 2 - width / 2) / width + abs((y0 + y1) / 2 - height / 2) / height
        return sum(b.glyphs for b in row) * ch * ch * (1.0 - 0.5 * off_centre)

    candidates = [
        (r, f)
        for f in families
        for r in f
        if sum(b.glyphs for b in r) >= p.min_chars and len(r) >= p.min_blobs
    ]
    if not candidates:
        return None
    best, family = max(candidates, key=lambda c: score(c[0]))
    x0, y0, x1, y1, ch = _row_box(best)
    # A second row of similar characters directly above or below: a two-row plate.
    for other in family:
        if other is best:
            continue
        ox0, oy0, ox1, oy1, och = _row_box(other)
        overlap = min(x1, ox1) - max(x0, ox0)
        vgap = max(oy0 - y1, y0 - oy1)
        if overlap > 0.4 * min(x1 - x0, ox1 - ox0) and vgap < 0.8 * ch and 0.6 < och / ch < 1.6:
            x0, y0, x1, y1 = min(x0, ox0), min(y0, oy0), max(x1, ox1), max(y1, oy1)
            break
    return x0, y0, x1, y1, ch


def find_text_box(crop: np.ndarray, params: TextRowParams = DEFAULT_PARAMS) -> Box | None:
    """The plate box implied by the character row(s) in ``crop`` (crop coordinates), or None.

    ``crop`` is RGB or grey. None when no row of ``min_chars`` character blobs is found.
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    h, w = gray.shape
    if h < 12 or w < 24:
        return None
    scale = WORK_HEIGHT / h
    work = cv2.resize(gray, (max(24, round(w * scale)), WORK_HEIGHT), interpolation=cv2.INTER_AREA)
    work = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(work)
    block = 2 * (WORK_HEIGHT // 4) + 1
    families: list[list[list[_Blob]]] = []
    for mode in (cv2.THRESH_BINARY_INV, cv2.THRESH_BINARY):  # dark text, then light text
        binary = cv2.adaptiveThreshold(work, 255, cv2.ADAPTIVE_THRESH_MEAN_C, mode, block, 8)
        for char_h in params.char_heights:
            blobs = _blobs(_without_long_lines(binary, char_h), char_h, params)
            families.append(_rows(blobs, params))
    found = _best_row(families, work.shape[1], WORK_HEIGHT, params)
    if found is None:
        return None
    x0, y0, x1, y1, ch = found
    x0, x1 = x0 - params.pad_x * ch, x1 + params.pad_x * ch
    y0, y1 = y0 - params.pad_y * ch, y1 + params.pad_y * ch
    box = Box(round(x0 / scale), round(y0 / scale), round((x1 - x0) / scale), round((y1 - y0) / scale))
    return box.clip(w, h)
