"""Labelled-box CSVs (``file,x,y,w,h[,plate][,split]``): the one reader for eval and training.

Such files come from labelling tools and spreadsheets as often as from scripts, so the
reader accepts what those write (a UTF-8 byte-order mark, CRLF line ends, header names in
any case or padded with spaces, coordinates written as ``12.0``) and rejects what would
silently mislabel: a missing column, a coordinate that is not a number, a box with no
area, and (:func:`fit_to_image`, once the image's size is known) a box mostly outside its
image. Errors name the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("file", "x", "y", "w", "h")


class LabelsError(ValueError):
    """A labels CSV that cannot be read as boxes; the message names file and line."""


@dataclass(frozen=True)
class LabelRow:
    file: str  # as written (relative to the CSV unless absolute)
    x: int
    y: int
    w: int
    h: int
    plate: str  # as written; "" where the CSV has no plate column or an empty cell
    split: str  # "" where the CSV has no split column
    line: int  # 1-based line in the CSV, for messages

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


def _coordinate(value: str | None, name: str, where: str) -> int:
    try:
        return int(round(float((value or "").strip())))
    except (ValueError, OverflowError):  # OverflowError: inf
        raise LabelsError(f"{where}: {name}={value!r} is not a number") from None


def read_label_rows(csv_path: str | Path) -> list[LabelRow]:
    """Every row of a labels CSV, validated; raises :class:`LabelsError` on the first bad one."""
    path = Path(csv_path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [name.strip().lower() for name in next(reader, [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise LabelsError(
                f"{path}: missing column(s) {', '.join(missing)}; expected a header like "
                f"file,x,y,w,h,plate (found: {','.join(header) or 'an empty file'})"
            )
        rows: list[LabelRow] = []
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue  # blank line
            cells = dict(zip(header, values, strict=False))
            where = f"{path}:{line}"
            if len(values) < len(header) and any(c not in cells for c in REQUIRED_COLUMNS):
                raise LabelsError(f"{where}: the row has {len(values)} of the header's {len(header)} columns")
            if not (cells.get("file") or "").strip():
                raise LabelsError(f"{where}: empty file name")
            x, y, w, h = (_coordinate(cells.get(c), c, where) for c in "xywh")
            if w <= 0 or h <= 0:
                raise LabelsError(f"{where}: box {x},{y},{w},{h} has no area (w and h must be > 0)")
            rows.append(
                LabelRow(
                    file=cells["file"].strip(),
                    x=x,
                    y=y,
                    w=w,
                    h=h,
                    plate=(cells.get("plate") or "").strip(),
                    split=(cells.get("split") or "").strip(),
                    line=line,
                )
            )
    return rows


# A box at least this share inside its image is clipped to it (a plate at the picture's
# edge, boxed a little beyond it); less is a wrong coordinate, not a plate.
MIN_INSIDE_SHARE = 0.5


def fit_to_image(row: LabelRow, width: int, height: int, csv_path: str | Path) -> LabelRow:
    """``row`` with its box clipped to a ``width`` x ``height`` image; a LabelsError naming
    the line when less than ``MIN_INSIDE_SHARE`` of the box is inside (it would crop
    nothing, or mostly nothing, and fail or mislead inside OpenCV)."""
    x0, y0 = max(row.x, 0), max(row.y, 0)
    x1, y1 = min(row.x + row.w, width), min(row.y + row.h, height)
    inside = max(x1 - x0, 0) * max(y1 - y0, 0)
    if inside < MIN_INSIDE_SHARE * row.w * row.h:
        where = "outside" if inside == 0 else "mostly outside"
        raise LabelsError(
            f"{csv_path}:{row.line}: box {row.x},{row.y},{row.w},{row.h} is {where} "
            f"the {width}x{height} image {row.file}"
        )
    return dataclasses.replace(row, x=x0, y=y0, w=x1 - x0, h=y1 - y0)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of the stored pixels (EXIF orientation not applied, as labels use
    them) from the file's header, or None when Pillow cannot tell (unknown format)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None  # unknown format or past Pillow's limits: the caller asks OpenCV
