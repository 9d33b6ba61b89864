"""Labelled-box CSVs: what spreadsheets and labelling tools write is read; what would
mislabel is refused with the file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from anpr_pipeline.vision.labels import LabelRow, LabelsError, fit_to_image, read_label_rows


def _write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_what_spreadsheets_write(tmp_path: Path) -> None:
    # Byte-order mark, CRLF, header case and padding, float coordinates, a blank line.
    path = _write(
        tmp_path,
        " File , X,Y,W,H ,Plate,SPLIT\r\nus/a.jpg,10,20.0,80,40.4,7ABC123,valid\r\n\r\nb.png,0,0,5,5,,\r\n",
        encoding="utf-8-sig",
    )
    assert read_label_rows(path) == [
        LabelRow("us/a.jpg", 10, 20, 80, 40, "7ABC123", "valid", line=2),
        LabelRow("b.png", 0, 0, 5, 5, "", "", line=4),
    ]


def test_plate_and_split_columns_are_optional(tmp_path: Path) -> None:
    (row,) = read_label_rows(_write(tmp_path, "file,x,y,w,h\na.jpg,1,2,3,4\n"))
    assert row.box == (1, 2, 3, 4) and row.plate == "" and row.split == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing column(s) file, x, y, w, h"),
        ("name,x,y\na,1,2\n", "missing column(s) file, w, h"),
        ("file,x,y,w,h\na.jpg,1,2,3,4\nb.jpg,1,2,wide,4\n", "labels.csv:3: w='wide' is not a number"),
        ("file,x,y,w,h\na.jpg,1,2,0,4\n", "labels.csv:2: box 1,2,0,4 has no area"),
        ("file,x,y,w,h\na.jpg,1,2,inf,4\n", "labels.csv:2: w='inf' is not a number"),
        ("file,x,y,w,h\na.jpg,-1e400,2,3,4\n", "labels.csv:2: x='-1e400' is not a number"),
        ("file,x,y,w,h\na.jpg,1,2,3\n", "labels.csv:2: the row has 4 of the header's 5 columns"),
        ("file,x,y,w,h\n ,1,2,3,4\n", "labels.csv:2: empty file name"),
    ],
)
def test_refuses_what_would_mislabel(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabelsError, match=re.escape(message)):
        read_label_rows(_write(tmp_path, text))


def test_a_box_at_the_images_edge_is_clipped_and_one_off_it_refused() -> None:
    def row(x: int, y: int, w: int, h: int) -> LabelRow:
        return LabelRow("us/a.jpg", x, y, w, h, "ABC123", "", line=7)

    assert fit_to_image(row(10, 20, 80, 40), 640, 480, "l.csv") == row(10, 20, 80, 40)
    assert fit_to_image(row(580, -5, 80, 40), 640, 480, "l.csv") == row(580, 0, 60, 35)  # most in
    for box, where in [
        ((5000, 5000, 99, 49), "outside"),
        ((-500, -500, 99, 49), "outside"),
        ((620, 10, 80, 40), "mostly outside"),
    ]:
        with pytest.raises(
            LabelsError,
            match=re.escape(f"l.csv:7: box {','.join(map(str, box))} is {where} the 640x480 image us/a.jpg"),
        ):
            fit_to_image(row(*box), 640, 480, "l.csv")
