"""Plain data types shared by the vision modules (no Dagster, no torch imports here).

Images are numpy arrays, ``uint8``, RGB, shape ``(H, W, 3)``. Boxes are integer pixels,
``x, y`` = top-left corner, in the coordinates of the image they were found in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class WeightsError(ValueError):
    """A model weights file that is not one (a wrong path in ANPR_READER, a truncated copy)."""


# Text on a plate's rim (``Box.on_plate``): at most this share of the plate box's height
# tall, within this share of it above or below the box.
SMALL_TEXT = 0.5
RIM_SHARE = 0.3


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return max(self.w, 0) * max(self.h, 0)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def cover(self, other: Box) -> float:
        """Share of this box's area that ``other`` covers (1.0: wholly inside it)."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        return ix * iy / self.area if self.area else 0.0

    def on_plate(self, plate: Box, min_cover: float) -> bool:
        """Whether this box is text on ``plate``: ``min_cover`` of it inside the plate's box,
        or, for text at most ``SMALL_TEXT`` of the plate's height, inside the plate's rim
        (``RIM_SHARE`` of its height above and below the box). State names and slogans are
        printed on the rim, which a box fitted to the character row leaves out."""
        if self.cover(plate) >= min_cover:
            return True
        if self.h > SMALL_TEXT * plate.h:
            return False
        rim = int(round(plate.h * RIM_SHARE))
        return self.cover(Box(plate.x, plate.y - rim, plate.w, plate.h + 2 * rim)) >= min_cover

    def touches_edge(self, width: int, height: int, margin: int = 2) -> bool:
        """Whether this box reaches within ``margin`` px of a width x height frame's edge."""
        return (
            self.x <= margin
            or self.y <= margin
            or self.x + self.w >= width - margin
            or self.y + self.h >= height - margin
        )

    def clip(self, width: int, height: int) -> Box:
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.w), min(height, self.y + self.h)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def padded(self, pad: float, width: int, height: int) -> Box:
        """This box grown by ``pad`` x its size on each side, clipped to a width x height image."""
        px, py = int(round(self.w * pad)), int(round(self.h * pad))
        return Box(self.x - px, self.y - py, self.w + 2 * px, self.h + 2 * py).clip(width, height)

    def crop(self, image: np.ndarray, pad: float = 0.0) -> np.ndarray:
        """Crop ``image`` to this box, grown by ``pad`` x its size on each side, clipped."""
        b = self.padded(pad, image.shape[1], image.shape[0])
        return image[b.y : b.y + b.h, b.x : b.x + b.w]

    def shifted(self, dx: int, dy: int) -> Box:
        return Box(self.x + dx, self.y + dy, self.w, self.h)


@dataclass(frozen=True)
class Detection:
    """One plate candidate in one image."""

    box: Box
    score: float  # 0..1, detector confidence


@dataclass(frozen=True)
class PlateRead:
    """What the reader made of one plate crop."""

    text: str  # as read (may contain a space/line break for two-line plates)
    normalized: str  # A-Z0-9 only
    confidence: float  # 0..1 for the whole plate
    char_confidences: tuple[float, ...] = field(default_factory=tuple)  # one per normalized char
    region: str | None = None  # matched plate format (us, eu, br, ...), None if none matched
    # Where the reader found the plate inside the crop (crop pixels) when it read a tighter
    # cut than the crop it was given (the text-row re-read); None: the crop as given.
    box: Box | None = None


@runtime_checkable
class PlateDetector(Protocol):
    """Finds plates in whole frames. Implementations batch internally."""

    version: str

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...


@runtime_checkable
class PlateReader(Protocol):
    """Reads plate crops. Implementations batch internally."""

    version: str

    def read(self, crops: Sequence[np.ndarray]) -> list[PlateRead]: ...
