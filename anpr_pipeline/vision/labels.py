"""Labelled-box CSVs (``file,x,y,w,h[,plate][,split]``): the one reader for eval and training.

Such files come from labelling tools and spreadsheets as often as from scripts, so the
reader accepts what those write (a UTF-8 byte-order mark, CRLF line ends, header names in
any case or padded with spaces, coordinates written as ``12.0``) and rejects what would
silently mislabel: a missing column, a coordinate that is not a number, a box with no
area. Errors name the file and line.
"""

from __future__ import annotations

import csv
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
    except ValueError:
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
