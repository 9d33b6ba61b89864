"""Boxes with a text label drawn on images, for the annotated copies `anpr read` and
`anpr eval` write for people to look at."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Colour = tuple[int, int, int]  # BGR


def line_thickness(image: np.ndarray) -> int:
    """A stroke width that stays visible on large photos."""
    return max(2, round(max(image.shape[:2]) / 600))


def draw_labelled_box(
    bgr: np.ndarray, box: Sequence[int], label: str, colour: Colour, thickness: int, above: bool = True
) -> None:
    """Draw ``box`` (x, y, w, h) on ``bgr`` in place, with ``label`` on a filled tab above it
    (``above``) or below it (so a labelled box and a read box on one plate stay legible)."""
    x, y, w, h = (int(v) for v in box)
    cv2.rectangle(bgr, (x, y), (x + w, y + h), colour, thickness)
    scale = thickness / 3
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    base = max(th + 4, y - 4) if above else min(bgr.shape[0] - 2, y + h + th + 6)
    cv2.rectangle(bgr, (x, base - th - 4), (x + tw + 4, base + 2), colour, -1)
    cv2.putText(bgr, label, (x + 2, base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
