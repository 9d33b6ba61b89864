"""Synthetic number plates, scenes and traffic videos with exact ground truth.

Three consumers:

* the demo and the end-to-end tests: :func:`make_video` renders a short h264 traffic video
  (vehicles with plates driving along a two-lane road) and returns its ground truth;
* reader training: :func:`plate_crop_samples` yields plate crops as a detector would cut
  them (a jittered box, some car body around the plate) with their text;
* detector training: :func:`render_scene` places vehicles with plates over a road (or a
  given background) and returns the plate boxes.

Plates follow real regional layouts (US state plates, EU plates with the blue strip and
square two-row variants, Brazilian grey and Mercosul plates) so a model trained here has to
ignore the same state names, slogans, stickers, strips and screws it meets on real plates.
Fonts are shipped in ``anpr_pipeline/fonts`` so a fresh machine renders the same: DejaVu by
default; ``fonts=EXTENDED_CHAR_FONTS`` adds five SIL OFL plate-like typefaces (licences
beside them).

Everything is deterministic per ``numpy.random.Generator`` / seed. Images are RGB uint8.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anpr_pipeline.vision.plates import normalize
from anpr_pipeline.vision.types import Box

REGIONS: tuple[str, ...] = ("us", "eu", "br")
FONT_DIR = Path(__file__).resolve().parent.parent / "fonts"

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
Color = tuple[float, float, float]

# Plate-character fonts: condensed bold dominates because most real plate typefaces are tall
# and narrow; mono and wide bold add variety so a reader does not learn one glyph shape.
FontChoices = tuple[tuple[str, float], ...]  # (file in FONT_DIR, weight)
CHAR_FONTS: FontChoices = (
    ("DejaVuSansCondensed-Bold.ttf", 4.0),
    ("DejaVuSans-Bold.ttf", 2.0),
    ("DejaVuSansMono-Bold.ttf", 2.0),
    ("DejaVuSansCondensed.ttf", 1.5),
    ("DejaVuSerifCondensed-Bold.ttf", 0.7),
)
# Extra open (SIL OFL 1.1) plate-like typefaces, used only where asked for (reader training,
# ``fonts=EXTENDED_CHAR_FONTS``): DejaVu alone taught the readers one shape per glyph, and
# real plates' O/D, A/4, U/V and 1/I differ from DejaVu's. Barlow Condensed is drawn after
# California plates and highway signs; Roboto Condensed and Oswald are DIN-like grotesques.
# The default stays DejaVu-only so every seeded scene, clip and test renders as before.
EXTENDED_CHAR_FONTS: FontChoices = CHAR_FONTS + (
    ("BarlowCondensed-SemiBold.ttf", 2.0),
    ("BarlowCondensed-Bold.ttf", 1.5),
    ("RobotoCondensed-Bold.ttf", 2.0),
    ("Oswald-Medium.ttf", 1.5),
    ("Oswald-SemiBold.ttf", 1.0),
)
FONT_SETS = {"dejavu": CHAR_FONTS, "extended": EXTENDED_CHAR_FONTS}
SCRIPT_FONTS = ("DejaVuSerif-BoldItalic.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerifCondensed-Bold.ttf")
SMALL_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSansCondensed.ttf")


# --------------------------------------------------------------------------------------
# Plate text
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DisplayFormat:
    """How a plate's text is printed: ``L`` letter, ``D`` digit, anything else literal.

    ``pattern`` (letters/digits only) is the normalised form, the one
    :data:`anpr_pipeline.vision.plates.FORMATS` knows.
    """

    region: str
    template: str
    weight: float
    country: str = ""  # EU strip code / layout family ("old", "mercosul" for br)

    @property
    def pattern(self) -> str:
        return "".join(c for c in self.template if c in "LD")

    def fits(self, text: str) -> bool:
        if len(text) != len(self.template):
            return False
        for t, c in zip(self.template, text, strict=True):
            if (t == "L" and c not in LETTERS) or (t == "D" and c not in DIGITS):
                return False
            if t not in "LD" and t != c:
                return False
        return True


def _df(region: str, rows: list[tuple[str, float, str]]) -> list[DisplayFormat]:
    return [DisplayFormat(region, t, w, c) for t, w, c in rows]


DISPLAY_FORMATS: dict[str, list[DisplayFormat]] = {
    "us": _df(
        "us",
        [
            ("LLL DDDD", 3.0, ""),
            ("LLL-DDDD", 1.5, ""),
            ("DLLLDDD", 2.5, ""),
            ("LLL DDD", 1.5, ""),
            ("DDD LLL", 1.0, ""),
            ("DDD-LLL", 0.5, ""),
            ("LL DDDDD", 1.0, ""),
            ("DDDD LL", 0.7, ""),
            ("DLL DDDD", 0.7, ""),
            ("LLL LDD", 0.5, ""),
            ("LDD LLL", 0.5, ""),
        ],
    ),
    "eu": _df(
        "eu",
        [
            ("LL-DDD-LL", 2.0, "F"),
            ("LL DDD LL", 1.5, "I"),
            ("DDDD LLL", 1.5, "E"),
            ("L LL DDDD", 1.0, "D"),
            ("LL L DDD", 0.7, "D"),
            ("LLL LL DD", 0.5, "D"),
            ("LL LL DDDD", 0.5, "D"),
            ("LL DDDDD", 0.8, "PL"),
            ("LLL DDDD", 0.5, "PL"),
            ("LL DD LLL", 0.8, "RO"),
            ("L DDD LLL", 0.5, "RO"),
            ("D-LLL-DDD", 0.8, "B"),
            ("LL-DDD-L", 0.5, "NL"),
            ("D-LLL-DD", 0.4, "NL"),
            ("L DDDDD L", 0.4, "A"),
            ("LL-DD-LL", 0.4, "P"),
        ],
    ),
    "br": _df("br", [("LLL-DDDD", 1.0, "old"), ("LLLDLDD", 1.0, "mercosul")]),
}


def _choose_format(region: str, rng: np.random.Generator) -> DisplayFormat:
    if region not in DISPLAY_FORMATS:
        raise ValueError(f"unknown plate region {region!r}; known: {', '.join(REGIONS)}")
    fmts = DISPLAY_FORMATS[region]
    w = np.array([f.weight for f in fmts])
    return fmts[int(rng.choice(len(fmts), p=w / w.sum()))]


def _fill(template: str, rng: np.random.Generator) -> str:
    out = []
    for t in template:
        if t == "L":
            out.append(LETTERS[int(rng.integers(26))])
        elif t == "D":
            out.append(DIGITS[int(rng.integers(10))])
        else:
            out.append(t)
    return "".join(out)


def random_plate_text(region: str, rng: np.random.Generator) -> str:
    """Display text of a random plate of ``region`` (e.g. ``'ABC 1234'``, ``'AB-123-CD'``)."""
    return _fill(_choose_format(region, rng).template, rng)


def _format_of(text: str, region: str, rng: np.random.Generator) -> DisplayFormat:
    fits = [f for f in DISPLAY_FORMATS.get(region, []) if f.fits(text)]
    if fits:
        return fits[int(rng.integers(len(fits)))]
    # Free text (vanity plates, tests): a plain layout of the region, country drawn at random.
    base = _choose_format(region, rng)
    return DisplayFormat(region, text, 1.0, base.country)


# --------------------------------------------------------------------------------------
# Drawing primitives (float32 canvases, 0..255)
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=128)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


@lru_cache(maxsize=4096)
def _glyph(font_name: str, ch: str) -> np.ndarray:
    """Ink mask (float32 0..1) of one character rendered at 160 px, cropped to its ink."""
    f = _font(font_name, 160)
    left, top, right, bottom = f.getbbox(ch)
    im = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(im).text((4 - left, 4 - top), ch, font=f, fill=255)
    a = np.asarray(im, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(a > 0.02)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


@lru_cache(maxsize=512)
def _line_mask(text: str, font_name: str) -> np.ndarray:
    """Ink mask of a whole line of small text (keeps lower case and accents proportional)."""
    f = _font(font_name, 64)
    left, top, right, bottom = f.getbbox(text)
    im = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(im).text((4 - left, 4 - top), text, font=f, fill=255)
    a = np.asarray(im, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(a > 0.02)
    if len(xs) == 0:
        return np.zeros((1, 1), np.float32)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _blend(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, color: Color, alpha: float = 1.0) -> None:
    """canvas[y:, x:] = mix(canvas, color, mask * alpha), clipped to the canvas."""
    h, w = mask.shape
    ch, cw = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cw, x + w), min(ch, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    m = mask[y0 - y : y1 - y, x0 - x : x1 - x, None] * alpha
    region = canvas[y0:y1, x0:x1, :3]
    region *= 1.0 - m
    region += m * np.asarray(color, np.float32)


def _resize_mask(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    w, h = max(1, int(round(w))), max(1, int(round(h)))
    interp = cv2.INTER_AREA if w < mask.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(mask, (w, h), interpolation=interp)


def _text_line(
    canvas: np.ndarray,
    text: str,
    font: str,
    cx: float,
    top: float,
    height: float,
    max_w: float,
    color: Color,
    alpha: float = 1.0,
) -> None:
    """Small centred text (state names, slogans, city lines), ink height ``height``."""
    if not text.strip():
        return
    m = _line_mask(text, font)
    w = m.shape[1] * height / m.shape[0]
    w = min(w, max_w)
    mm = _resize_mask(m, w, height)
    _blend(canvas, mm, int(round(cx - mm.shape[1] / 2)), int(round(top)), color, alpha)


@dataclass
class _TextStyle:
    font: str
    color: Color
    condense: float  # glyph width factor (<1: taller, narrower glyphs)
    spacing: float  # gap between glyphs, x text height
    emboss: float  # 0: flat print, >0: pressed metal with shadow/highlight


def _layout_chars(text: str, style: _TextStyle, height: float, max_w: float) -> tuple[list, float]:
    """Per-character (kind, mask-or-None, width) and the total width, fitted into ``max_w``."""
    items = []
    ref = _glyph(style.font, "H")
    ref_w = ref.shape[1] * height / ref.shape[0] * style.condense
    for ch in text:
        if ch == " ":
            items.append((" ", None, 0.45 * ref_w))
        elif ch in "-·":
            items.append((ch, None, 0.55 * ref_w))
        else:
            g = _glyph(style.font, ch)
            items.append((ch, g, g.shape[1] * height / g.shape[0] * style.condense))
    gap = style.spacing * height
    total = sum(w for _, _, w in items) + gap * max(0, len(items) - 1)
    if total > max_w:  # shrink horizontally (real plates squeeze long serials)
        k = max_w / total
        items = [(c, g, w * k) for c, g, w in items]
        gap *= k
        total = max_w
    return [(c, g, w, gap) for c, g, w in items], total


def _draw_chars(
    canvas: np.ndarray,
    text: str,
    style: _TextStyle,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    rng: np.random.Generator,
    align: str = "center",
) -> list[tuple[float, float]]:
    """Draw plate characters into the box; returns (x centre, width) of each space."""
    height = y1 - y0
    items, total = _layout_chars(text, style, height, x1 - x0)
    if align == "center":
        x = x0 + (x1 - x0 - total) / 2 + rng.uniform(-0.01, 0.01) * (x1 - x0)
    else:
        x = x0
    gaps = []
    d = max(1, int(round(height * 0.025)))
    for c, g, w, gap in items:
        if g is None:
            if c == " ":
                gaps.append((x + w / 2, w))
            if c == "-":
                bar = np.ones((max(2, int(height * 0.09)), max(2, int(w * 0.75))), np.float32)
                _blend(canvas, bar, int(x + w * 0.125), int(y0 + height * 0.46), style.color)
            elif c == "·":
                r = max(2, int(height * 0.06))
                dot = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
                cv2.circle(dot, (r, r), r, 1.0, -1, cv2.LINE_AA)
                _blend(canvas, dot, int(x + w / 2 - r), int(y0 + height * 0.45), style.color)
        else:
            m = _resize_mask(g, w, height)
            xi, yi = int(round(x)), int(round(y0))
            if style.emboss > 0:
                _blend(canvas, m, xi + d, yi + d, (0, 0, 0), 0.35 * style.emboss)
                _blend(canvas, m, xi - d, yi - d, (255, 255, 255), 0.3 * style.emboss)
            _blend(canvas, m, xi, yi, style.color)
        x += w + gap
    return gaps


def _rounded_mask(h: int, w: int, r: int, inset: int = 0) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = inset, inset, w - 1 - inset, h - 1 - inset
    r = max(1, min(r, (x1 - x0) // 2, (y1 - y0) // 2))
    cv2.rectangle(m, (x0 + r, y0), (x1 - r, y1), 1.0, -1)
    cv2.rectangle(m, (x0, y0 + r), (x1, y1 - r), 1.0, -1)
    for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
        cv2.circle(m, (cx, cy), r, 1.0, -1, cv2.LINE_AA)
    return m


def _border(canvas: np.ndarray, r: int, inset: int, thick: int, color: Color, alpha: float = 1.0) -> None:
    h, w = canvas.shape[:2]
    ring = _rounded_mask(h, w, r, inset) - _rounded_mask(h, w, max(1, r - thick), inset + thick)
    _blend(canvas, np.clip(ring, 0, 1), 0, 0, color, alpha)


def _vgradient(h: int, w: int, top: Color, bottom: Color) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(
        np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t, (h, w, 3)
    ).copy()


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (dirt, lighting, asphalt patches)."""
    small = rng.uniform(-1, 1, (max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w)))).astype(
        np.float32
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _screw(canvas: np.ndarray, cx: float, cy: float, r: float, rng: np.random.Generator) -> None:
    """A bolt: a dark hole or a chrome/plastic screw head with a slot."""
    r = max(2, int(round(r)))
    disk = np.zeros((2 * r + 3, 2 * r + 3), np.float32)
    cv2.circle(disk, (r + 1, r + 1), r, 1.0, -1, cv2.LINE_AA)
    x, y = int(cx) - r - 1, int(cy) - r - 1
    kind = rng.random()
    if kind < 0.3:
        _blend(canvas, disk, x, y, (35, 35, 38))
        return
    base = (175, 175, 180) if kind < 0.8 else (230, 230, 225)
    _blend(canvas, disk, x + 1, y + 1, (40, 40, 40), 0.5)
    _blend(canvas, disk, x, y, base)
    hi = np.zeros_like(disk)
    cv2.circle(hi, (r, r), max(1, r // 2), 1.0, -1, cv2.LINE_AA)
    _blend(canvas, hi, x, y, (250, 250, 250), 0.5)
    slot = np.zeros_like(disk)
    a = rng.uniform(0, math.pi)
    dx, dy = math.cos(a) * r * 0.8, math.sin(a) * r * 0.8
    cv2.line(
        slot,
        (int(r + 1 - dx), int(r + 1 - dy)),
        (int(r + 1 + dx), int(r + 1 + dy)),
        1.0,
        max(1, r // 4),
        cv2.LINE_AA,
    )
    _blend(canvas, slot, x, y, (60, 60, 60), 0.8)


def _dirt(canvas: np.ndarray, rng: np.random.Generator, amount: float) -> None:
    """Road grime: low-frequency brown-grey blotches, darker towards the bottom, and specks."""
    h, w = canvas.shape[:2]
    n = (_smooth_noise(rng, h, w, 8) + 1) / 2
    ramp = np.linspace(0.4, 1.0, h, dtype=np.float32)[:, None]
    m = np.clip(n * ramp * amount, 0, 1)
    _blend(canvas, m, 0, 0, (95, 85, 70), 0.6)
    specks = (rng.random((h, w)) < 0.0015 * amount).astype(np.float32)
    specks = cv2.GaussianBlur(specks, (5, 5), 1.0) * 3
    _blend(canvas, np.clip(specks, 0, 1), 0, 0, (60, 55, 45), 0.7)


def _sheen(canvas: np.ndarray, rng: np.random.Generator, strength: float) -> None:
    """Retro-reflective sheeting: a soft diagonal highlight band."""
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(-0.6, 0.6)
    pos = rng.uniform(0.1, 0.9) * w
    d = (xx + a * yy - pos) / (0.25 * w)
    _blend(canvas, np.exp(-d * d), 0, 0, (255, 255, 255), strength)


def _weighted(items: Sequence[tuple[Any, float]], rng: np.random.Generator) -> Any:
    w = np.array([x[1] for x in items], float)
    return items[int(rng.choice(len(items), p=w / w.sum()))][0]


def _is_narrow(font: str) -> bool:
    return "Condensed" in font or font.startswith("Oswald")


def _char_style(
    rng: np.random.Generator,
    color: Color,
    fonts: FontChoices,
    emboss: float | None = None,
    serif: bool = False,
) -> _TextStyle:
    # Serif plate lettering exists only on some US plates.
    font = _weighted([f for f in fonts if serif or "Serif" not in f[0]], rng)
    condense = rng.uniform(0.8, 1.08) if _is_narrow(font) else rng.uniform(0.72, 1.0)
    return _TextStyle(
        font=font,
        color=color,
        condense=float(condense),
        spacing=float(rng.uniform(0.02, 0.13)),
        emboss=float(rng.uniform(0.3, 1.0) if emboss is None else emboss),
    )


def _jitter(color: Color, rng: np.random.Generator, amount: float = 12.0) -> Color:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in color)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# Regional plate layouts
# --------------------------------------------------------------------------------------
US_STATES = (
    ("California", "dmv.ca.gov"),
    ("Texas", "THE LONE STAR STATE"),
    ("Florida", "SUNSHINE STATE"),
    ("New York", "EMPIRE STATE"),
    ("Illinois", "LAND OF LINCOLN"),
    ("Ohio", "BIRTHPLACE OF AVIATION"),
    ("Georgia", "PEACH STATE"),
    ("Arizona", "GRAND CANYON STATE"),
    ("Michigan", "GREAT LAKES"),
    ("New Jersey", "GARDEN STATE"),
    ("Virginia", "VIRGINIA IS FOR LOVERS"),
    ("Washington", "EVERGREEN STATE"),
    ("Colorado", "COLORFUL"),
    ("Oregon", "PACIFIC WONDERLAND"),
    ("Nevada", "THE SILVER STATE"),
    ("Hawaii", "ALOHA STATE"),
    ("Connecticut", "Constitution State"),
    ("Maryland", "Chesapeake Bay"),
    ("Pennsylvania", "visitPA.com"),
    ("North Carolina", "FIRST IN FLIGHT"),
    ("Minnesota", "10,000 lakes"),
    ("Iowa", "COUNTY"),
    ("Arkansas", "THE NATURAL STATE"),
    ("Utah", "LIFE ELEVATED"),
    ("Tennessee", "VOLUNTEER STATE"),
    ("New Hampshire", "LIVE FREE OR DIE"),
    ("Kansas", "DRIVE SAFELY"),
)
US_COUNTIES = ("SCOTT", "POLK", "LINN", "STORY", "CLAY", "LEE", "JOHNSON", "MARION", "DALLAS", "BOONE")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
US_TEXT_COLORS = ((20, 35, 110), (20, 20, 25), (140, 20, 30), (15, 80, 40), (60, 25, 90))
US_ACCENTS = ((190, 20, 35), (25, 60, 150), (20, 110, 60), (230, 140, 20), (110, 40, 140), (20, 20, 25))

BR_CITIES = (
    ("SP", "SÃO PAULO"),
    ("RJ", "RIO DE JANEIRO"),
    ("MG", "BELO HORIZONTE"),
    ("PR", "CURITIBA"),
    ("RS", "PORTO ALEGRE"),
    ("BA", "SALVADOR"),
    ("SC", "FLORIANÓPOLIS"),
    ("DF", "BRASÍLIA"),
    ("GO", "GOIÂNIA"),
    ("PE", "RECIFE"),
    ("CE", "FORTALEZA"),
    ("SP", "CAMPINAS"),
    ("SP", "SANTOS"),
    ("MG", "UBERLÂNDIA"),
    ("PR", "LONDRINA"),
    ("AM", "MANAUS"),
    ("PA", "BELÉM"),
)
EU_BLUE = (0, 51, 153)
EU_YELLOW = (255, 204, 0)


def _us_background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, Color, bool]:
    """(background, default text colour, dark?)"""
    style = _weighted(
        (("white", 3), ("gradient", 2.5), ("graphic", 2.5), ("yellow", 0.6), ("dark", 0.5)), rng
    )
    if style == "dark":
        bg = _vgradient(h, w, _jitter((25, 40, 95), rng), _jitter((15, 25, 70), rng))
        return bg, _weighted((((240, 240, 240), 1), ((250, 200, 60), 1)), rng), True
    if style == "yellow":
        return (
            _vgradient(h, w, _jitter((245, 205, 70), rng), _jitter((235, 190, 50), rng)),
            (20, 35, 100),
            False,
        )
    white = _jitter((243, 243, 238), rng, 8)
    bg = _vgradient(h, w, white, white)
    text = US_TEXT_COLORS[int(rng.integers(len(US_TEXT_COLORS)))]
    if style == "gradient":
        tint = _weighted(
            (((170, 205, 240), 2), ((250, 215, 170), 1), ((200, 230, 200), 1), ((230, 200, 230), 0.5)), rng
        )
        top, bottom = (tint, white) if rng.random() < 0.7 else (white, tint)
        bg = _vgradient(h, w, top, bottom)
    elif style == "graphic":
        kind = int(rng.integers(3))
        if kind == 0:  # rainbow / arcs
            cx, cy, r = rng.uniform(0.3, 0.7) * w, h * rng.uniform(0.9, 1.4), rng.uniform(0.55, 0.9) * w
            for i, c in enumerate(((235, 120, 120), (245, 200, 110), (150, 210, 140), (130, 170, 230))):
                ring = np.zeros((h, w), np.float32)
                cv2.circle(
                    ring, (int(cx), int(cy)), int(r - i * h * 0.06), 1.0, max(2, int(h * 0.06)), cv2.LINE_AA
                )
                _blend(bg, ring, 0, 0, c, 0.55)
        elif kind == 1:  # mountains / skyline silhouette
            pts = [(0, h)]
            for x in np.linspace(0, w, int(rng.integers(4, 9))):
                pts.append((int(x), int(h * rng.uniform(0.45, 0.8))))
            pts.append((w, h))
            m = np.zeros((h, w), np.float32)
            cv2.fillPoly(m, [np.array(pts, np.int32)], 1.0, cv2.LINE_AA)
            _blend(
                bg,
                m,
                0,
                0,
                _weighted((((150, 180, 215), 1), ((170, 200, 160), 1), ((200, 170, 200), 1)), rng),
                0.5,
            )
        else:  # big faint emblem (state outline / sun / fruit)
            m = np.zeros((h, w), np.float32)
            cv2.circle(
                m,
                (int(rng.uniform(0.3, 0.7) * w), int(h * 0.55)),
                int(h * rng.uniform(0.25, 0.4)),
                1.0,
                -1,
                cv2.LINE_AA,
            )
            _blend(
                bg,
                cv2.GaussianBlur(m, (0, 0), 3),
                0,
                0,
                _weighted(((US_ACCENTS[3], 1), ((120, 190, 120), 1), ((230, 120, 60), 1)), rng),
                0.45,
            )
    return bg, text, False


def _us_plate(text: str, rng: np.random.Generator, fonts: FontChoices) -> tuple[np.ndarray, np.ndarray]:
    h, w = 200, 400
    canvas, color, dark = _us_background(rng, h, w)
    state, slogan = US_STATES[int(rng.integers(len(US_STATES)))]
    if slogan == "COUNTY":
        slogan = US_COUNTIES[int(rng.integers(len(US_COUNTIES)))]
    accent = (240, 240, 240) if dark else US_ACCENTS[int(rng.integers(len(US_ACCENTS)))]
    # State name on top, often in a script-like italic, sometimes upper case or as a web address.
    name = state if rng.random() < 0.6 else state.upper()
    if rng.random() < 0.12:
        name = f"MY{state.upper().replace(' ', '')}.COM"
    _text_line(
        canvas,
        name,
        _weighted([(f, 1) for f in SCRIPT_FONTS], rng),
        w / 2 + rng.uniform(-20, 20),
        rng.uniform(8, 16),
        rng.uniform(26, 38),
        w * rng.uniform(0.45, 0.7),
        accent,
    )
    # Registration stickers in the top corners.
    for corner in (0, 1):
        if rng.random() < 0.5:
            sw, sh = rng.uniform(38, 52), rng.uniform(24, 32)
            sx = rng.uniform(10, 24) if corner == 0 else w - sw - rng.uniform(10, 24)
            sc = _weighted(
                (
                    ((220, 40, 90), 1),
                    ((40, 160, 80), 1),
                    ((250, 215, 40), 1),
                    ((60, 110, 210), 1),
                    ((250, 250, 250), 1),
                ),
                rng,
            )
            _blend(canvas, np.ones((int(sh), int(sw)), np.float32), int(sx), int(rng.uniform(8, 14)), sc)
            label = (
                MONTHS[int(rng.integers(12))] if rng.random() < 0.5 else f"{int(rng.integers(0, 100)):02d}"
            )
            _text_line(canvas, label, SMALL_FONTS[0], sx + sw / 2, 14, sh * 0.5, sw * 0.85, (20, 20, 20))
    for sx in (0.21 * w, 0.79 * w):
        _screw(canvas, sx + rng.uniform(-3, 3), 0.1 * h + 6 + rng.uniform(-3, 3), rng.uniform(5, 8), rng)
    style = _char_style(rng, _jitter(color, rng, 10), fonts, emboss=float(rng.uniform(0.2, 0.9)), serif=True)
    top = rng.uniform(52, 60)
    bottom = rng.uniform(152, 164)
    gaps = _draw_chars(canvas, text, style, rng.uniform(12, 26), top, w - rng.uniform(12, 26), bottom, rng)
    # Many states print a small emblem between the two character groups.
    if gaps and rng.random() < 0.3:
        d = int(min(h * 0.2, gaps[0][1] * 0.8))
        if d >= 4:
            m = np.zeros((d, d), np.float32)
            cv2.circle(m, (d // 2, d // 2), d // 2 - 1, 1.0, -1, cv2.LINE_AA)
            _blend(canvas, m, int(gaps[0][0] - d / 2), int((top + bottom) / 2 - d / 2), accent, 0.7)
    _text_line(
        canvas,
        slogan if rng.random() < 0.85 else slogan.upper(),
        _weighted([(f, 1) for f in SMALL_FONTS], rng),
        w / 2,
        rng.uniform(170, 176),
        rng.uniform(13, 18),
        w * 0.7,
        accent if rng.random() < 0.6 else color,
    )
    if rng.random() < 0.7:
        _border(canvas, 14, 3, 3, color, 0.7)
    if rng.random() < 0.25:  # dealer frame: covers part of the state name and slogan
        frame = np.clip(_rounded_mask(h, w, 16) - _rounded_mask(h, w, 10, 9), 0, 1)
        frame[: int(rng.uniform(8, 16))] = 1
        frame[h - int(rng.uniform(18, 30)) :] = 1
        fc = _weighted((((20, 20, 22), 3), ((190, 190, 195), 1)), rng)
        _blend(canvas, frame, 0, 0, fc)
        dealer = ("AUTO MALL", "MOTORS", "TOYOTA OF CITY", "HONDA", "FORD", "CHEVROLET", "AUTO GROUP")
        _text_line(
            canvas,
            dealer[int(rng.integers(len(dealer)))],
            SMALL_FONTS[0],
            w / 2,
            h - 20,
            11,
            w * 0.6,
            (235, 235, 235) if fc[0] < 100 else (30, 30, 30),
        )
    return canvas, _rounded_mask(h, w, 14)


def _eu_stars(canvas: np.ndarray, cx: float, cy: float, r: float) -> None:
    s = max(1, int(round(r * 0.16)))
    for i in range(12):
        a = i * math.pi / 6
        m = np.zeros((2 * s + 1, 2 * s + 1), np.float32)
        cv2.circle(m, (s, s), s, 1.0, -1, cv2.LINE_AA)
        _blend(canvas, m, int(cx + r * math.cos(a) - s), int(cy + r * math.sin(a) - s), EU_YELLOW)


def _eu_plate(
    text: str, fmt: DisplayFormat, rng: np.random.Generator, two_row: bool, fonts: FontChoices
) -> tuple[np.ndarray, np.ndarray]:
    h, w = (210, 300) if two_row else (112, 520)
    yellow = fmt.country == "NL" and rng.random() < 0.5 or rng.random() < 0.03
    white = _jitter((245, 245, 242), rng, 6)
    canvas = _vgradient(
        h,
        w,
        _jitter((250, 205, 40), rng, 8) if yellow else white,
        _jitter((245, 195, 35), rng, 8) if yellow else white,
    )
    color: Color = (170, 25, 30) if fmt.country == "B" else _jitter((18, 18, 20), rng, 8)
    sw = 0.078 * 520 if not two_row else 0.14 * w
    inset = 3
    strip = np.zeros((h, w), np.float32)
    strip[inset : h - inset, inset : int(sw)] = 1
    _blend(canvas, strip * _rounded_mask(h, w, 10, inset), 0, 0, _jitter(EU_BLUE, rng, 10))
    star_cy = h * (0.3 if not two_row else 0.22)
    _eu_stars(canvas, inset + sw / 2, star_cy, sw * 0.27)
    code = fmt.country or "EU"
    code_h = min(h * 0.24, sw * 0.55) if len(code) == 1 else min(h * 0.2, sw * 0.4)
    _text_line(
        canvas,
        code,
        "DejaVuSans-Bold.ttf",
        inset + sw / 2,
        h * (0.62 if not two_row else 0.7),
        code_h,
        sw * 0.8,
        (250, 250, 250),
    )
    # France and Italy: a second blue strip on the right (department / province).
    right = 0.0
    if fmt.country in ("F", "I") and not two_row and rng.random() < 0.7:
        right = sw
        band = np.zeros((h, w), np.float32)
        band[inset : h - inset, w - int(sw) : w - inset] = 1
        _blend(canvas, band * _rounded_mask(h, w, 10, inset), 0, 0, _jitter(EU_BLUE, rng, 10))
        label = (
            f"{int(rng.integers(1, 96)):02d}" if fmt.country == "F" else f"{int(rng.integers(1990, 2025))}"
        )
        _text_line(
            canvas, label, "DejaVuSans-Bold.ttf", w - sw / 2, h * 0.62, h * 0.18, sw * 0.8, (250, 250, 250)
        )
    style = _char_style(rng, color, fonts, emboss=float(rng.uniform(0.0, 0.8)))
    style.condense *= 0.92
    x0 = sw + rng.uniform(6, 14)
    x1 = w - right - rng.uniform(6, 14)
    if two_row:
        parts = (
            text.split(" " if " " in text else "-", 1)
            if (" " in text or "-" in text)
            else [text[:2], text[2:]]
        )
        _draw_chars(canvas, parts[0], style, x0, h * 0.08, x1, h * 0.46, rng)
        _draw_chars(canvas, parts[1], style, x0, h * 0.54, x1, h * 0.92, rng)
    else:
        gaps = _draw_chars(canvas, text, style, x0, h * 0.16, x1, h * 0.84, rng)
        if fmt.country == "D" and gaps:  # registration seals between district and letters
            gx = gaps[0][0]
            for i, c in enumerate(((70, 110, 190), (200, 200, 200))):
                r = int(min(h * 0.1, gaps[0][1] * 0.45))
                m = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
                cv2.circle(m, (r, r), r, 1.0, -1, cv2.LINE_AA)
                _blend(canvas, m, int(gx - r), int(h * (0.3 + 0.25 * i) - r), c)
    _border(canvas, 10, inset, max(2, int(h * 0.02)), color if rng.random() < 0.8 else (60, 60, 60))
    if rng.random() < 0.4:
        for sx in (0.25 * w, 0.75 * w):
            _screw(canvas, sx, h * rng.uniform(0.08, 0.12) + 3, h * 0.045 + 1, rng)
    return canvas, _rounded_mask(h, w, 10)


def _br_old_plate(text: str, rng: np.random.Generator, fonts: FontChoices) -> tuple[np.ndarray, np.ndarray]:
    h, w = 130, 400
    red = rng.random() < 0.12  # commercial vehicles: red plate, white characters
    base = np.asarray((165, 30, 35) if red else (185, 186, 188), np.float32) + rng.uniform(-25, 20)
    canvas = _vgradient(h, w, tuple(base + rng.uniform(-6, 6)), tuple(base + rng.uniform(-6, 6)))
    # Brushed-metal streaks.
    streaks = cv2.resize(
        rng.uniform(-1, 1, (h, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR
    )
    canvas += streaks[..., None] * 6
    color: Color = (240, 240, 240) if red else _jitter((22, 22, 24), rng, 8)
    uf, city = BR_CITIES[int(rng.integers(len(BR_CITIES)))]
    _text_line(
        canvas,
        f"{uf} - {city}",
        _weighted([(f, 1) for f in SMALL_FONTS], rng),
        w / 2,
        h * 0.06,
        h * 0.12,
        w * 0.6,
        color,
    )
    for sx in (0.1 * w, 0.9 * w):
        _screw(canvas, sx + rng.uniform(-4, 4), h * 0.13, h * 0.05, rng)
    style = _char_style(rng, color, fonts, emboss=float(rng.uniform(0.4, 1.0)))
    style.condense *= 0.9
    _draw_chars(canvas, text, style, rng.uniform(10, 20), h * 0.27, w - rng.uniform(10, 20), h * 0.88, rng)
    _border(canvas, 8, 2, 3, color, 0.9)
    return canvas, _rounded_mask(h, w, 8)


def _br_flag(canvas: np.ndarray, x: int, y: int, fh: int) -> None:
    fw = int(fh * 1.43)
    _blend(canvas, np.ones((fh, fw), np.float32), x, y, (0, 150, 60))
    m = np.zeros((fh, fw), np.float32)
    pts = np.array([(fw * 0.1, fh / 2), (fw / 2, fh * 0.1), (fw * 0.9, fh / 2), (fw / 2, fh * 0.9)], np.int32)
    cv2.fillPoly(m, [pts], 1.0, cv2.LINE_AA)
    _blend(canvas, m, x, y, (250, 220, 0))
    m = np.zeros((fh, fw), np.float32)
    cv2.circle(m, (fw // 2, fh // 2), max(1, int(fh * 0.24)), 1.0, -1, cv2.LINE_AA)
    _blend(canvas, m, x, y, (20, 40, 130))


def _br_mercosul_plate(
    text: str, rng: np.random.Generator, fonts: FontChoices
) -> tuple[np.ndarray, np.ndarray]:
    h, w = 130, 400
    white = _jitter((246, 246, 246), rng, 5)
    canvas = _vgradient(h, w, white, white)
    # Faint wavy security pattern.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    waves = (np.sin(xx / 9.0 + 3 * np.sin(yy / 17.0)) > 0.93).astype(np.float32)
    _blend(canvas, waves, 0, 0, (200, 205, 210), 0.35)
    band_h = int(h * 0.2)
    band = np.zeros((h, w), np.float32)
    band[2 : band_h + 2, 2 : w - 2] = 1
    _blend(canvas, band * _rounded_mask(h, w, 8, 2), 0, 0, _jitter((0, 55, 160), rng, 10))
    _text_line(
        canvas,
        "BRASIL",
        "DejaVuSans-Bold.ttf",
        w / 2,
        band_h * 0.3 + 2,
        band_h * 0.5,
        w * 0.3,
        (250, 250, 250),
    )
    _br_flag(canvas, int(w - band_h * 1.43 - 10), int(band_h * 0.25) + 2, int(band_h * 0.6))
    for i in range(4):  # Mercosul emblem: four stars under an arc
        s = np.zeros((5, 5), np.float32)
        cv2.circle(s, (2, 2), 2, 1.0, -1, cv2.LINE_AA)
        _blend(canvas, s, 14 + i * 7, int(band_h * 0.55) + (i % 2) * 3, (250, 250, 250))
    _text_line(canvas, "BR", "DejaVuSans-Bold.ttf", 20, h * 0.72, h * 0.1, 30, (20, 20, 20))
    color = _weighted((((15, 15, 18), 8), ((180, 20, 30), 1), ((20, 90, 40), 0.3), ((30, 50, 140), 0.3)), rng)
    style = _char_style(rng, color, fonts, emboss=float(rng.uniform(0.0, 0.5)))
    _draw_chars(canvas, text, style, rng.uniform(34, 44), h * 0.31, w - rng.uniform(14, 24), h * 0.9, rng)
    _border(canvas, 8, 2, 2, (20, 20, 20))
    return canvas, _rounded_mask(h, w, 8)


def render_plate_rgba(
    text: str,
    region: str,
    rng: np.random.Generator,
    *,
    two_row: bool | None = None,
    dirt: float | None = None,
    fonts: FontChoices = CHAR_FONTS,
) -> np.ndarray:
    """A plate with an alpha channel (rounded corners), RGBA uint8, about 100-210 px tall.

    ``two_row`` (EU only) forces/forbids the square two-row layout; None draws it at random.
    ``fonts`` are the weighted typefaces the plate characters are drawn from.
    """
    fmt = _format_of(text, region, rng)
    if region == "us":
        canvas, alpha = _us_plate(text, rng, fonts)
    elif region == "eu":
        if two_row is None:
            two_row = rng.random() < 0.2
        canvas, alpha = _eu_plate(text, fmt, rng, two_row, fonts)
    elif region == "br":
        mercosul = fmt.country == "mercosul" if fmt.country else any(c.isalpha() for c in text[3:])
        draw = _br_mercosul_plate if mercosul else _br_old_plate
        canvas, alpha = draw(text, rng, fonts)
    else:
        raise ValueError(f"unknown plate region {region!r}; known: {', '.join(REGIONS)}")
    amount = float(rng.uniform(0, 0.8) if rng.random() < 0.5 else 0.0) if dirt is None else dirt
    if amount > 0:
        _dirt(canvas, rng, amount)
    if rng.random() < 0.5:
        _sheen(canvas, rng, float(rng.uniform(0.05, 0.25)))
    out = np.empty(canvas.shape[:2] + (4,), np.uint8)
    out[..., :3] = np.clip(canvas, 0, 255)
    out[..., 3] = alpha * 255
    return out


def render_plate(
    text: str,
    region: str,
    rng: np.random.Generator | None = None,
    *,
    two_row: bool | None = None,
    dirt: float | None = None,
    backdrop: Color = (40, 40, 42),
) -> np.ndarray:
    """Render plate ``text`` in a ``region`` layout as an RGB uint8 image (real aspect ratio).

    Corners outside the rounded plate show ``backdrop``. US plates are 400x200, EU 520x112
    (two-row 300x210), Brazilian 400x130.
    """
    rgba = render_plate_rgba(text, region, rng or np.random.default_rng(), two_row=two_row, dirt=dirt)
    return _over(rgba, backdrop)


def _over(rgba: np.ndarray, backdrop: Color | np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.broadcast_to(np.asarray(backdrop, np.float32), rgba[..., :3].shape)
    return (rgba[..., :3] * a + bg * (1 - a)).astype(np.uint8)


def random_plate(
    rng: np.random.Generator,
    regions: Sequence[str] = REGIONS,
    two_row: bool | None = None,
    fonts: FontChoices = CHAR_FONTS,
) -> tuple[np.ndarray, str, str]:
    """(plate RGBA, display text, region) for a random region of ``regions``."""
    region = regions[int(rng.integers(len(regions)))]
    text = random_plate_text(region, rng)
    return render_plate_rgba(text, region, rng, two_row=two_row, fonts=fonts), text, region


# --------------------------------------------------------------------------------------
# Vehicles
# --------------------------------------------------------------------------------------
CAR_COLORS = (
    ((232, 232, 230), 3.0),
    ((178, 180, 184), 2.5),
    ((28, 28, 32), 2.5),
    ((95, 98, 104), 2.0),
    ((150, 22, 28), 1.0),
    ((30, 55, 120), 1.0),
    ((30, 70, 48), 0.4),
    ((190, 175, 140), 0.4),
    ((225, 180, 30), 0.3),
    ((200, 90, 30), 0.2),
)
# Plate width / vehicle width. Real: EU 0.29, BR 0.23, US 0.17; US/BR are drawn a bit larger
# so a 1280-px video frame holds two lanes of cars with legible plates.
PLATE_TO_CAR = {"us": 0.27, "eu": 0.30, "br": 0.28}


@dataclass
class Vehicle:
    """A vehicle sprite (RGBA) and where its plate is on it (4 corners, x/y in sprite px)."""

    sprite: np.ndarray
    plate_quad: np.ndarray  # (4, 2) float: tl, tr, br, bl
    body_top: float  # first row of the opaque body (the shadow below is semi-transparent)

    @property
    def plate_box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.plate_quad.min(axis=0)
        x1, y1 = self.plate_quad.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


def _roi(pts: np.ndarray, W: int, H: int, pad: int = 2) -> tuple[int, int, int, int]:
    """Integer bounding box (x0, y0, x1, y1) of points, padded and clipped to W x H."""
    x0 = max(0, int(math.floor(float(pts[:, 0].min()))) - pad)
    y0 = max(0, int(math.floor(float(pts[:, 1].min()))) - pad)
    x1 = min(W, int(math.ceil(float(pts[:, 0].max()))) + pad)
    y1 = min(H, int(math.ceil(float(pts[:, 1].max()))) + pad)
    return x0, y0, x1, y1


@dataclass(frozen=True)
class _VGrad:
    """A vertical colour gradient over ``height`` rows, evaluated only where drawn."""

    top: np.ndarray
    bottom: np.ndarray
    height: int
    offset: int = 0  # row of the full gradient at canvas row 0

    def rows(self, y0: int, y1: int) -> np.ndarray:
        t = (np.arange(y0 + self.offset, y1 + self.offset, dtype=np.float32) / max(1, self.height - 1))[
            :, None, None
        ]
        return self.top * (1 - t) + self.bottom * t

    def __mul__(self, k: float) -> _VGrad:
        return _VGrad(self.top * k, self.bottom * k, self.height, self.offset)


def _fill_poly(
    rgb: np.ndarray,
    alpha: np.ndarray,
    pts: Sequence[tuple[float, float]],
    color: Color | _VGrad,
    a: float = 1.0,
) -> None:
    """Anti-aliased polygon in ``color`` (a colour or a vertical gradient), drawn only
    inside its bounding box (full-canvas masks made sprites 10x slower)."""
    p = np.asarray(pts, np.float64)
    x0, y0, x1, y1 = _roi(p, alpha.shape[1], alpha.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    m = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.fillPoly(m, [np.round(p - (x0, y0)).astype(np.int32)], 1.0, cv2.LINE_AA)
    m *= a
    if isinstance(color, _VGrad):
        c = color.rows(y0, y1)
    else:
        c = np.asarray(color, np.float32)
    roi = rgb[y0:y1, x0:x1]
    roi *= 1 - m[..., None]
    roi += c * m[..., None]
    np.maximum(alpha[y0:y1, x0:x1], m, out=alpha[y0:y1, x0:x1])


class _Canvas:
    """Float RGB + alpha covering the window (x0, y0)-(x1, y1) of a larger drawing; all
    coordinates given to it are in the larger drawing's pixels."""

    def __init__(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1
        self.rgb = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        self.alpha = np.zeros((y1 - y0, x1 - x0), np.float32)

    def poly(self, pts: Sequence[tuple[float, float]], color: Color | _VGrad, a: float = 1.0) -> None:
        if isinstance(color, _VGrad):
            color = _VGrad(color.top, color.bottom, color.height, self.y0)
        _fill_poly(self.rgb, self.alpha, [(x - self.x0, y - self.y0) for x, y in pts], color, a)

    def blend(self, mask: np.ndarray, x: int, y: int, color: Color, a: float = 1.0) -> None:
        _blend(self.rgb, mask, int(x) - self.x0, int(y) - self.y0, color, a)

    def shadow(self, mask: np.ndarray, x: int, y: int) -> None:
        """Raise alpha (black, semi-transparent) under ``mask`` placed at (x, y)."""
        h, w = mask.shape
        ch, cw = self.alpha.shape
        x, y = x - self.x0, y - self.y0
        ax0, ay0, ax1, ay1 = max(0, x), max(0, y), min(cw, x + w), min(ch, y + h)
        if ax1 > ax0 and ay1 > ay0:
            region = self.alpha[ay0:ay1, ax0:ax1]
            np.maximum(region, mask[ay0 - y : ay1 - y, ax0 - x : ax1 - x], out=region)


def make_vehicle(
    plate_rgba: np.ndarray,
    region: str,
    rng: np.random.Generator,
    *,
    view: str | None = None,
    width: int = 720,
    context: tuple[float, float] | None = None,
) -> Vehicle:
    """A simple car (rear or front view) with ``plate_rgba`` mounted on it; shaded body,
    glass, lights, bumper, tyres and a soft shadow.

    ``context=(mx, my)`` renders only the part of the car around the plate: the plate box
    grown by ``mx`` x its width and ``my`` x its height on each side (reader crops need no
    more, and it is several times faster). Coordinates in the result are then relative to
    that window.
    """
    view = view or ("rear" if rng.random() < 0.55 else "front")
    ph, pw = plate_rgba.shape[:2]
    ratio = PLATE_TO_CAR.get(region, 0.28) * (pw / ph > 2.6 and 1.0 or (0.75 if pw / ph < 1.8 else 1.0))
    if pw / ph < 1.6:  # square two-row plate: narrower on the car
        ratio = 0.19
    W = width
    # Body type sets the proportions (height/width, roof width, window line).
    kind = _weighted((("sedan", 3.0), ("hatch", 2.0), ("suv", 2.0), ("van", 0.6)), rng)
    tall, roof, belt = {
        "sedan": (rng.uniform(0.68, 0.78), rng.uniform(0.2, 0.26), rng.uniform(0.42, 0.48)),
        "hatch": (rng.uniform(0.76, 0.86), rng.uniform(0.15, 0.21), rng.uniform(0.44, 0.5)),
        "suv": (rng.uniform(0.84, 0.95), rng.uniform(0.12, 0.17), rng.uniform(0.45, 0.5)),
        "van": (rng.uniform(0.95, 1.05), rng.uniform(0.07, 0.11), rng.uniform(0.48, 0.54)),
    }[kind]
    H = int(W * tall)
    top = rng.uniform(0.02, 0.05)
    # Plate geometry first: it decides the window when only the plate's surroundings are drawn.
    ly0, ly1 = H * (belt + 0.04), H * (belt + rng.uniform(0.11, 0.16))
    view_rear = view == "rear"
    pw_t = W * ratio
    ph_t = pw_t * ph / pw
    cx = W / 2 + rng.uniform(-0.01, 0.01) * W
    cy = (ly1 + H * 0.8) / 2 if view_rear else H * 0.8 + (H * 0.1) / 2
    cy = min(cy, H * 0.9 - ph_t / 2)
    cy = max(cy, ly1 + ph_t / 2 + 2) if view_rear else cy
    ang = math.radians(rng.uniform(-1.5, 1.5))
    ca, sa = math.cos(ang), math.sin(ang)
    corners = np.array(
        [(-pw_t / 2, -ph_t / 2), (pw_t / 2, -ph_t / 2), (pw_t / 2, ph_t / 2), (-pw_t / 2, ph_t / 2)]
    )
    quad = np.stack(
        [cx + corners[:, 0] * ca - corners[:, 1] * sa, cy + corners[:, 0] * sa + corners[:, 1] * ca], 1
    )
    if context is None:
        cv = _Canvas(0, 0, W, H)
    else:
        bx0, by0 = quad.min(axis=0)
        bx1, by1 = quad.max(axis=0)
        mx, my = context[0] * (bx1 - bx0), context[1] * (by1 - by0)
        cv = _Canvas(
            max(0, int(bx0 - mx)),
            max(0, int(by0 - my)),
            min(W, int(math.ceil(bx1 + mx))),
            min(H, int(math.ceil(by1 + my))),
        )
    body = np.asarray(_weighted(CAR_COLORS, rng), np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
    body = np.clip(body, 10, 245)
    shade = _VGrad(np.clip(body * 1.12, 0, 255), body * 0.62, H)
    dark = tuple(body * 0.55)
    # Soft ground shadow (semi-transparent).
    y_sh = int(H * 0.88)
    if cv.y1 > y_sh:
        sh = np.zeros((H - y_sh, W), np.float32)
        cv2.ellipse(
            sh,
            (W // 2, int(H * 0.965) - y_sh),
            (int(W * 0.5), int(H * 0.035)),
            0,
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
        )
        cv.shadow(cv2.GaussianBlur(sh, (0, 0), max(1.0, W * 0.01)) * 0.6, 0, y_sh)
    # Tyres.
    for x0 in (0.05, 0.8):
        cv.poly(
            [
                (W * x0, H * 0.75),
                (W * (x0 + 0.15), H * 0.75),
                (W * (x0 + 0.15), H * 0.97),
                (W * x0, H * 0.97),
            ],
            (22, 22, 24),
        )
    # Cabin (narrower at the roof, chamfered corners read as rounded) and glass.
    c = 0.03
    cabin = [
        (W * 0.04, H * belt),
        (W * (roof - c * 0.6), H * (top + c * 2)),
        (W * (roof + c), H * top),
        (W * (1 - roof - c), H * top),
        (W * (1 - roof + c * 0.6), H * (top + c * 2)),
        (W * 0.96, H * belt),
    ]
    cv.poly(cabin, shade * 0.92)
    for side in (-1, 1):  # door mirrors
        mx = W / 2 + side * W * 0.49
        cv.poly(
            [
                (mx - side * W * 0.07, H * (belt - 0.09)),
                (mx, H * (belt - 0.1)),
                (mx, H * (belt - 0.04)),
                (mx - side * W * 0.07, H * (belt - 0.03)),
            ],
            dark,
        )
    g0, g1 = _jitter((55, 62, 72), rng, 15), _jitter((20, 24, 30), rng, 8)
    glass = _VGrad(np.asarray(g0, np.float32), np.asarray(g1, np.float32), H)
    gi = 0.035
    gtop, gbot = top + 0.035, belt - rng.uniform(0.02, 0.05)
    gl = [
        (W * (roof + gi), H * gtop),
        (W * (1 - roof - gi), H * gtop),
        (W * (0.92 - gi / 2), H * gbot),
        (W * (0.08 + gi / 2), H * gbot),
    ]
    cv.poly(gl, glass)
    refl_x = rng.uniform(0.3, 0.6)
    cv.poly(
        [
            (W * refl_x, H * (gtop + 0.005)),
            (W * (refl_x + 0.08), H * (gtop + 0.005)),
            (W * (refl_x - 0.05), H * (gbot - 0.005)),
            (W * (refl_x - 0.13), H * (gbot - 0.005)),
        ],
        (200, 210, 220),
        0.12,
    )
    if view == "rear" and rng.random() < 0.4:  # third brake light
        cv.poly(
            [
                (W * 0.42, H * (gtop + 0.005)),
                (W * 0.58, H * (gtop + 0.005)),
                (W * 0.58, H * (gtop + 0.02)),
                (W * 0.42, H * (gtop + 0.02)),
            ],
            (150, 20, 25),
        )
    if view == "front" and rng.random() < 0.6:  # wipers resting on the windscreen
        for xw in (0.25, 0.55):
            cv.poly(
                [
                    (W * xw, H * (gbot - 0.012)),
                    (W * (xw + 0.2), H * (gbot - 0.03)),
                    (W * (xw + 0.2), H * (gbot - 0.024)),
                    (W * xw, H * (gbot - 0.006)),
                ],
                (15, 15, 15),
            )
    # Lower body with rounded edges.
    lb = [
        (W * 0.02, H * (belt - 0.01)),
        (W * 0.98, H * (belt - 0.01)),
        (W * 0.995, H * 0.6),
        (W * 0.99, H * 0.88),
        (W * 0.01, H * 0.88),
        (W * 0.005, H * 0.6),
    ]
    cv.poly(lb, shade)
    yc, t = int(H * (belt + 0.02)), max(1, W // 200)
    crease = np.zeros((2 * t + 3, W), np.float32)
    cv2.line(crease, (int(W * 0.03), t + 1), (int(W * 0.97), t + 1), 1.0, t, cv2.LINE_AA)
    cv.blend(crease, 0, yc - t - 1, tuple(np.clip(body * 1.35 + 20, 0, 255)), 0.5)
    # Lights: blocks, a full-width strip, or tall wrap-around lamps.
    lw = rng.uniform(0.14, 0.22)
    style = _weighted((("block", 2.0), ("strip", 1.0), ("tall", 1.0)), rng)
    if view == "rear":
        lamp, inner = _jitter((170, 20, 25), rng, 15), (235, 80, 70)
    else:
        lamp, inner = _jitter((205, 212, 222), rng, 10), (250, 250, 245)
    slope = rng.uniform(-0.04, 0.06) * H
    for left in (True, False):
        xa, xb = (0.03, 0.03 + lw) if left else (0.97 - lw, 0.97)
        ya, yb = (ly0 - 0.04 * H, ly1 + 0.03 * H) if style == "tall" else (ly0, ly1)
        outer_a, inner_b = (xa, xb) if left else (xb, xa)
        pts = [
            (W * outer_a, ya),
            (W * inner_b, ya + slope),
            (W * inner_b, yb),
            (W * outer_a, yb - (yb - ya) * 0.1),
        ]
        cv.poly(pts, lamp)
        lx = (xa + xb) / 2
        cv.poly(
            [
                (W * (lx - 0.03), ya + (yb - ya) * 0.25),
                (W * (lx + 0.03), ya + (yb - ya) * 0.25),
                (W * (lx + 0.03), yb - (yb - ya) * 0.2),
                (W * (lx - 0.03), yb - (yb - ya) * 0.2),
            ],
            inner,
            0.6,
        )
    if style == "strip" and view == "rear":
        cv.poly(
            [(W * 0.1, ly0 + 2), (W * 0.9, ly0 + 2), (W * 0.9, ly0 + 0.03 * H), (W * 0.1, ly0 + 0.03 * H)],
            lamp,
            0.9,
        )
    if view == "front":  # grille between the headlights: slats, mesh or a single slot
        gx0, gx1 = W * (0.05 + lw), W * (0.95 - lw)
        gstyle = _weighted((("slats", 2.0), ("mesh", 1.0), ("slot", 1.0)), rng)
        gy1 = ly1 if gstyle != "slot" else ly0 + (ly1 - ly0) * 0.4
        cv.poly([(gx0, ly0), (gx1, ly0), (gx1 - W * 0.02, gy1), (gx0 + W * 0.02, gy1)], (30, 32, 35))
        if gstyle == "slats":
            for k in range(1, 4):
                yk = ly0 + (ly1 - ly0) * k / 4
                cv.poly([(gx0, yk - 1.5), (gx1, yk - 1.5), (gx1, yk + 1.5), (gx0, yk + 1.5)], (90, 92, 96))
        elif gstyle == "mesh":
            for k in range(1, 8):
                xk = gx0 + (gx1 - gx0) * k / 8
                cv.poly([(xk - 1, ly0), (xk + 1, ly0), (xk + 1, ly1), (xk - 1, ly1)], (70, 72, 76), 0.7)
        if rng.random() < 0.7:  # badge
            r = max(2, int(W * 0.025))
            m = np.zeros((2 * r + 1, 3 * r + 1), np.float32)
            cv2.ellipse(m, (3 * r // 2, r), (3 * r // 2, r), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
            cv.blend(m, int(W / 2 - 1.5 * r), int((ly0 + gy1) / 2 - r), (200, 200, 205), 0.9)
    else:
        for xg in (0.03 + lw, 0.97 - lw):  # boot-lid panel gaps
            cv.poly(
                [(W * xg - 1, ly0), (W * xg + 1, ly0), (W * xg + 1, H * 0.8), (W * xg - 1, H * 0.8)],
                dark,
                0.5,
            )
        if rng.random() < 0.6:  # badge on the boot lid
            r = max(2, int(W * 0.02))
            m = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
            cv2.circle(m, (r, r), r, 1.0, -1, cv2.LINE_AA)
            cv.blend(m, int(W / 2 - r), int(ly0 + 2), (205, 205, 210), 0.9)
    # Bumper (plastic or body colour), maybe fog lamps / exhaust.
    bumper = _weighted((((35, 35, 38), 1), (tuple(body * 0.85), 1.5)), rng)
    cv.poly([(W * 0.0, H * 0.8), (W * 1.0, H * 0.8), (W * 0.99, H * 0.9), (W * 0.01, H * 0.9)], bumper)
    if view == "front" and rng.random() < 0.4:
        for xf in (0.1, 0.9):
            r = max(2, int(W * 0.025))
            m = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
            cv2.circle(m, (r, r), r, 1.0, -1, cv2.LINE_AA)
            cv.blend(m, int(W * xf - r), int(H * 0.85 - r), (230, 230, 225))
    elif view == "rear" and rng.random() < 0.5:
        xe = rng.choice([0.2, 0.75])
        cv.poly(
            [
                (W * xe, H * 0.89),
                (W * (xe + 0.07), H * 0.89),
                (W * (xe + 0.07), H * 0.915),
                (W * xe, H * 0.915),
            ],
            (20, 20, 20),
        )
    # Plate, in a slightly darker recess, tilted a little.
    rec = [
        (cx - pw_t * 0.56, cy - ph_t * 0.62),
        (cx + pw_t * 0.56, cy - ph_t * 0.62),
        (cx + pw_t * 0.56, cy + ph_t * 0.6),
        (cx - pw_t * 0.56, cy + ph_t * 0.6),
    ]
    cv.poly(rec, tuple(np.asarray(bumper if view == "front" else body, np.float32) * 0.7))
    # Downscale with area averaging first (a warp alone would alias the characters).
    small = cv2.resize(plate_rgba, (max(2, round(pw_t)), max(2, round(ph_t))), interpolation=cv2.INTER_AREA)
    sh_, sw_ = small.shape[:2]
    src = np.array([(0, 0), (sw_, 0), (sw_, sh_), (0, sh_)], np.float32)
    q = quad - (cv.x0, cv.y0)  # plate corners in canvas coordinates
    ch, cw = cv.alpha.shape
    x0, y0, x1, y1 = _roi(q, cw, ch)
    M = cv2.getPerspectiveTransform(src, (q - (x0, y0)).astype(np.float32))
    warped = cv2.warpPerspective(
        small, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0)
    )
    pa = warped[..., 3].astype(np.float32) / 255.0
    roi = cv.rgb[y0:y1, x0:x1]
    roi *= 1 - pa[..., None]
    roi += warped[..., :3].astype(np.float32) * pa[..., None]
    np.maximum(cv.alpha[y0:y1, x0:x1], pa, out=cv.alpha[y0:y1, x0:x1])
    # Shadow of the recess lip on the plate's top edge.
    lip = np.zeros((y1 - y0, x1 - x0), np.float32)
    ql = q - (x0, y0)
    cv2.fillPoly(
        lip,
        [
            np.round(np.array([ql[0], ql[1], ql[1] + (0, ph_t * 0.12), ql[0] + (0, ph_t * 0.12)])).astype(
                np.int32
            )
        ],
        1.0,
    )
    _blend(cv.rgb, cv2.GaussianBlur(lip, (0, 0), max(1.0, ph_t * 0.05)), x0, y0, (0, 0, 0), 0.25)
    sprite = np.empty((ch, cw, 4), np.uint8)
    np.clip(cv.rgb, 0, 255, out=cv.rgb)
    sprite[..., :3] = cv.rgb
    sprite[..., 3] = cv.alpha * 255
    return Vehicle(sprite=sprite, plate_quad=q, body_top=H * top - cv.y0)


# --------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------
def road_background(
    rng: np.random.Generator,
    width: int,
    height: int,
    vanishing: tuple[float, float] | None = None,
    lanes_at_bottom: Sequence[float] = (0.0, 0.5, 1.0),
) -> np.ndarray:
    """A static road seen from a pole camera: asphalt texture, lane markings converging to
    ``vanishing`` (x, y px, y usually above the frame), kerbs, pavement, shadows.

    ``lanes_at_bottom`` are lane-line x positions at the bottom row, as fractions of width
    (outer ones are the road edges).
    """
    W, H = width, height
    vx, vy = vanishing or (W * rng.uniform(0.4, 0.6), -H * rng.uniform(1.1, 1.6))
    tone = rng.uniform(80, 120)
    asphalt = np.asarray([tone, tone * rng.uniform(0.98, 1.02), tone * rng.uniform(1.0, 1.06)], np.float32)
    lum = _smooth_noise(rng, H, W, 12) * 10 + _smooth_noise(rng, H, W, 60) * 5
    lum += rng.normal(0, 5, (H, W)).astype(np.float32)
    img = asphalt + lum[..., None]

    def x_at(xb: float, y: float) -> float:  # lane line through (xb, H) and the vanishing point
        return vx + (xb - vx) * (y - vy) / (H - vy)

    def band(xb: float, y0: float, y1: float, half_w_bottom: float) -> np.ndarray:
        k0, k1 = (y0 - vy) / (H - vy), (y1 - vy) / (H - vy)
        return np.round(
            [
                (x_at(xb, y0) - half_w_bottom * k0, y0),
                (x_at(xb, y0) + half_w_bottom * k0, y0),
                (x_at(xb, y1) + half_w_bottom * k1, y1),
                (x_at(xb, y1) - half_w_bottom * k1, y1),
            ]
        ).astype(np.int32)

    # Pavement outside the road edges, with a kerb line.
    left, right = lanes_at_bottom[0] * W, lanes_at_bottom[-1] * W
    side = np.zeros((H, W), np.float32)
    kerb = np.zeros((H, W), np.float32)
    for edge, outer in ((left, -W * 3.0), (right, W * 4.0)):
        pts = [(x_at(edge, 0), 0), (x_at(outer, 0), 0), (x_at(outer, H), H), (x_at(edge, H), H)]
        cv2.fillPoly(side, [np.round(pts).astype(np.int32)], 1.0, cv2.LINE_AA)
        cv2.line(kerb, (int(x_at(edge, 0)), 0), (int(x_at(edge, H)), H), 1.0, max(3, W // 120), cv2.LINE_AA)
    pave = np.asarray(_jitter((150, 148, 140), rng, 15), np.float32) - asphalt
    img += side[..., None] * (pave + _smooth_noise(rng, H, W, 30)[..., None] * 8)
    _blend(img, kerb, 0, 0, (200, 200, 195), 0.9)
    # Tyre tracks (darker, oily) in the middle of each lane; blurred at quarter resolution.
    tracks = np.zeros((H // 4 + 1, W // 4 + 1), np.float32)
    for a, b in zip(lanes_at_bottom[:-1], lanes_at_bottom[1:], strict=True):
        for f in (0.3, 0.7):
            cv2.fillPoly(tracks, [band((a + (b - a) * f) * W, 0, H, W * 0.04) // 4], 1.0)
    tracks = cv2.resize(cv2.GaussianBlur(tracks, (0, 0), max(1.0, W * 0.0025)), (W, H))
    _blend(img, tracks, 0, 0, (50, 50, 52), 0.12)
    # Lane markings: dashed between lanes, solid at the edges; worn paint.
    paint = _jitter((225, 225, 220), rng, 10)
    marks = np.zeros((H, W), np.float32)
    for i, xb in enumerate(lanes_at_bottom):
        if i in (0, len(lanes_at_bottom) - 1):
            off = W * 0.02 if i == 0 else -W * 0.02
            cv2.fillPoly(marks, [band(xb * W + off, 0, H, W * 0.006)], 1.0, cv2.LINE_AA)
            continue
        # Dashes of constant length in the world = longer near the camera.
        u = rng.uniform(0, 1)
        while True:
            ya = vy + (H - vy) * (0.45 + u * 0.11)
            yb = vy + (H - vy) * (0.45 + (u + 0.4) * 0.11)
            if ya > H:
                break
            cv2.fillPoly(marks, [band(xb * W, ya, yb, W * 0.007)], 1.0, cv2.LINE_AA)
            u += 1.0
    _blend(img, marks * np.clip(0.75 + _smooth_noise(rng, H, W, 40) * 0.3, 0, 1), 0, 0, paint, 0.9)
    # Cracks.
    cracks = np.zeros((H, W), np.float32)
    for _ in range(int(rng.integers(2, 7))):
        pts = [(rng.uniform(0, W), rng.uniform(0, H))]
        for _ in range(int(rng.integers(3, 8))):
            pts.append((pts[-1][0] + rng.uniform(-40, 40), pts[-1][1] + rng.uniform(-25, 25)))
        cv2.polylines(cracks, [np.round(pts).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA)
    _blend(img, cracks, 0, 0, (45, 45, 45), 0.6)
    # Soft shadows of trees / poles (quarter resolution, then upsampled).
    n_shadows = int(rng.integers(0, 4))
    if n_shadows:
        shadows = np.zeros((H // 4 + 1, W // 4 + 1), np.float32)
        for _ in range(n_shadows):
            cv2.ellipse(
                shadows,
                (int(rng.uniform(0, W / 4)), int(rng.uniform(0, H / 4))),
                (int(rng.uniform(10, 50)), int(rng.uniform(5, 22))),
                rng.uniform(0, 180),
                0,
                360,
                float(rng.uniform(0.15, 0.35)),
                -1,
            )
        shadows = cv2.resize(cv2.GaussianBlur(shadows, (0, 0), 4), (W, H))
        _blend(img, shadows, 0, 0, (20, 22, 30))
    return np.clip(img, 0, 255).astype(np.uint8)


def _fit_background(background: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop of ``background`` with the target aspect, resized to (width, height)."""
    bh, bw = background.shape[:2]
    aspect = width / height
    cw = min(bw, int(bh * aspect))
    ch = int(cw / aspect)
    cw = int(cw * rng.uniform(0.7, 1.0))
    ch = int(cw / aspect)
    x = int(rng.integers(0, bw - cw + 1))
    y = int(rng.integers(0, bh - ch + 1))
    crop = background[y : y + ch, x : x + cw, :3]
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA)


SIGN_WORDS = (
    "MAIN ST",
    "STOP",
    "PARKING",
    "BUS",
    "EXIT 12",
    "OAK AVE",
    "TAXI",
    "SALE 50%",
    "PHARMACY",
    "RUA 7",
    "AV PAULISTA",
    "ZONE 30",
    "HOTEL",
    "CAFE",
    "OPEN 24H",
    "A4 PARIS",
    "ONE WAY",
)


def _add_distractors(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Signs with text and plate-like rectangles: things a plate detector must not fire on."""
    H, W = img.shape[:2]
    canvas = img.astype(np.float32)
    for _ in range(count):
        sw = int(W * rng.uniform(0.06, 0.22))
        sh = int(sw * rng.uniform(0.25, 0.7))
        x, y = int(rng.uniform(0, W - sw)), int(rng.uniform(0, H - sh))
        bg = _weighted(
            (
                ((20, 110, 60), 2),
                ((25, 60, 150), 2),
                ((240, 240, 240), 1),
                ((200, 30, 30), 1),
                ((250, 200, 30), 1),
            ),
            rng,
        )
        fg = (250, 250, 250) if sum(bg) < 500 else (20, 20, 20)
        _blend(canvas, np.ones((sh, sw), np.float32), x, y, bg)
        word = SIGN_WORDS[int(rng.integers(len(SIGN_WORDS)))]
        _text_line(
            canvas,
            word,
            _weighted([(f, 1) for f in SMALL_FONTS], rng),
            x + sw / 2,
            y + sh * 0.25,
            sh * 0.45,
            sw * 0.9,
            fg,
        )
    img[:] = np.clip(canvas, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Augmentation (all take and return RGB uint8; geometric ones also move points)
# --------------------------------------------------------------------------------------
def _move_points(points: np.ndarray | None, M: np.ndarray) -> np.ndarray | None:
    if points is None:
        return None
    p = np.asarray(points, np.float64).reshape(-1, 1, 2)
    if M.shape == (2, 3):
        return cv2.transform(p, M).reshape(-1, 2)
    return cv2.perspectiveTransform(p, M).reshape(-1, 2)


def perspective_warp(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 0.12,
    points: np.ndarray | None = None,
    border: int = cv2.BORDER_REPLICATE,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random homography: each corner moves up to ``strength`` x the image size. The output
    is sized to hold the whole warped image. Returns (image, moved points)."""
    h, w = image.shape[:2]
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float32)
    dst = src + rng.uniform(-strength, strength, (4, 2)).astype(np.float32) * np.array([w, h], np.float32)
    dst -= dst.min(axis=0)
    ow, oh = (int(math.ceil(v)) for v in dst.max(axis=0))
    M = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(image, M, (max(1, ow), max(1, oh)), flags=cv2.INTER_LINEAR, borderMode=border)
    return out, _move_points(points, M)


def rotate(
    image: np.ndarray,
    rng: np.random.Generator,
    max_degrees: float = 8.0,
    points: np.ndarray | None = None,
    border: int = cv2.BORDER_REPLICATE,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rotate by a random angle in [-max, max] about the centre, same output size."""
    h, w = image.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-max_degrees, max_degrees)), 1.0)
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=border), _move_points(
        points, M
    )


def rescale(
    image: np.ndarray,
    rng: np.random.Generator,
    min_scale: float = 0.5,
    max_scale: float = 1.5,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize by a random factor (log-uniform)."""
    s = float(math.exp(rng.uniform(math.log(min_scale), math.log(max_scale))))
    h, w = image.shape[:2]
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    out = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out, None if points is None else np.asarray(points, np.float64) * (nw / w, nh / h)


def resolution_loss(image: np.ndarray, rng: np.random.Generator, min_factor: float = 0.35) -> np.ndarray:
    """Downsample then upsample back: a far-away or low-resolution camera."""
    h, w = image.shape[:2]
    f = rng.uniform(min_factor, 1.0)
    small = cv2.resize(image, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def motion_blur(image: np.ndarray, rng: np.random.Generator, max_length: int = 9) -> np.ndarray:
    """Linear motion blur, random direction, length 3..max_length px."""
    n = int(rng.integers(3, max(4, max_length + 1)))
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1.0
    M = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    k = cv2.warpAffine(k, M, (n, n))
    return cv2.filter2D(image, -1, k / max(k.sum(), 1e-6))


def gaussian_blur(image: np.ndarray, rng: np.random.Generator, max_sigma: float = 1.6) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.3, max_sigma)))


def add_noise(image: np.ndarray, rng: np.random.Generator, max_sigma: float = 12.0) -> np.ndarray:
    """Gaussian sensor noise, partly colour, partly luminance."""
    s = rng.uniform(2, max_sigma)
    n = rng.normal(0, s, image.shape[:2] + (1,)) + rng.normal(0, s * 0.4, image.shape)
    return np.clip(image.astype(np.float32) + n, 0, 255).astype(np.uint8)


def jpeg(
    image: np.ndarray, rng: np.random.Generator, min_quality: int = 20, max_quality: int = 90
) -> np.ndarray:
    """Re-encode as JPEG (blocking, ringing, chroma loss) at a random quality."""
    q = int(rng.integers(min_quality, max_quality + 1))
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else image


def lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/gamma/colour cast, an illumination gradient and maybe a hard shadow."""
    img = image.astype(np.float32) / 255.0
    h, w = img.shape[:2]
    img = img ** rng.uniform(0.6, 1.6)
    img = (img - 0.5) * rng.uniform(0.6, 1.3) + 0.5 + rng.uniform(-0.15, 0.15)
    img *= rng.uniform(0.9, 1.1, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    grad = ((xx / w - 0.5) * math.cos(a) + (yy / h - 0.5) * math.sin(a)) * rng.uniform(0, 0.5)
    img = img * (1 + grad[..., None])
    if rng.random() < 0.3:  # hard shadow edge across the plate (pole, mirror, roof)
        m = np.zeros((h, w), np.float32)
        x0, x1 = rng.uniform(0, w, 2)
        pts = (
            np.array([(x0, 0), (w * 2, 0), (w * 2, h), (x1, h)], np.int32)
            if rng.random() < 0.5
            else np.array([(0, rng.uniform(0, h)), (w, rng.uniform(0, h)), (w, h), (0, h)], np.int32)
        )
        cv2.fillPoly(m, [pts], 1.0, cv2.LINE_AA)
        m = cv2.GaussianBlur(m, (0, 0), max(0.5, w * 0.01))
        img *= 1 - m[..., None] * rng.uniform(0.3, 0.6)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def low_contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Washed-out image: haze, overexposure or a cheap sensor (like old grey plates in IR)."""
    img = image.astype(np.float32)
    k = rng.uniform(0.3, 0.6)
    mean = rng.uniform(90, 180)
    return np.clip(mean + (img - img.mean()) * k, 0, 255).astype(np.uint8)


def night(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark, blue-ish and noisy, with a headlight/streetlight glare blob and bloom."""
    img = image.astype(np.float32) / 255.0
    h, w = img.shape[:2]
    img = img ** rng.uniform(1.3, 2.2) * rng.uniform(0.25, 0.6)
    img *= np.array([0.85, 0.92, 1.1], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h
        r = rng.uniform(0.1, 0.5) * max(w, h)
        glare = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(0.2, 0.6)
        img += glare[..., None] * np.array([1.0, 0.95, 0.8], np.float32)
    img += rng.normal(0, rng.uniform(0.01, 0.04), img.shape[:2] + (1,)).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def grayscale(image: np.ndarray) -> np.ndarray:
    """Monochrome (IR cameras), kept as three channels."""
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.repeat(g[..., None], 3, axis=2)


def augment(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    detail: float | None = None,
) -> np.ndarray:
    """Photometric augmentation chain (no geometry): lighting, night, contrast, blur, noise, JPEG.

    ``detail`` is the height in px of the smallest thing that must stay legible (the plate
    for reader crops); blur and resolution loss are capped by it so a label never sits on an
    unreadable image. None: judged from the image size.
    """
    p = min(1.0, strength)
    d = float(detail) if detail else min(image.shape[:2]) * 0.5
    img = image
    if rng.random() < 0.6 * p:
        img = lighting(img, rng)
    if rng.random() < 0.12 * p:
        img = night(img, rng)
    elif rng.random() < 0.12 * p:
        img = low_contrast(img, rng)
    if rng.random() < 0.1 * p:
        img = grayscale(img)
    # At most one kind of softening, sized to the detail that must survive.
    r = rng.random()
    if r < 0.2 * p:
        img = motion_blur(img, rng, max_length=int(np.clip(d * 0.1, 3, 9)))
    elif r < 0.45 * p:
        img = gaussian_blur(img, rng, max_sigma=float(np.clip(d * 0.035, 0.4, 0.4 + 0.9 * strength)))
    elif r < 0.65 * p and d > 20:
        img = resolution_loss(img, rng, min_factor=max(0.45, 16.0 / d))
    if rng.random() < 0.6 * p:
        img = add_noise(img, rng, max_sigma=3 + 9 * strength)
    if rng.random() < 0.6 * p:
        img = jpeg(img, rng, min_quality=max(10, int(60 - 40 * strength)), max_quality=95)
    return img


def crop_jitter(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    rng: np.random.Generator,
    pad_x: tuple[float, float] = (-0.03, 0.25),
    pad_y: tuple[float, float] = (-0.05, 0.45),
) -> tuple[np.ndarray, Box]:
    """Crop around ``box`` (x0, y0, x1, y1) as a detector would: each side independently
    padded by a fraction of the box size drawn from ``pad_x`` / ``pad_y`` (negative = cut
    into the plate, as tight detections do). Returns (crop, plate box in crop coordinates).
    """
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    cx0 = x0 - rng.uniform(*pad_x) * bw
    cx1 = x1 + rng.uniform(*pad_x) * bw
    cy0 = y0 - rng.uniform(*pad_y) * bh
    cy1 = y1 + rng.uniform(*pad_y) * bh
    H, W = image.shape[:2]
    X0, Y0 = max(0, int(math.floor(cx0))), max(0, int(math.floor(cy0)))
    X1, Y1 = min(W, int(math.ceil(cx1))), min(H, int(math.ceil(cy1)))
    crop = image[Y0:Y1, X0:X1]
    return crop, Box(int(round(x0 - X0)), int(round(y0 - Y0)), int(round(bw)), int(round(bh)))


# --------------------------------------------------------------------------------------
# Training generators
# --------------------------------------------------------------------------------------
def _road_patch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    tone = rng.uniform(60, 160)
    patch = tone + _smooth_noise(rng, h, w, 6) * 20
    return np.repeat(np.clip(patch, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def plate_crop_sample(
    rng: np.random.Generator,
    regions: Sequence[str] = REGIONS,
    *,
    min_width: int = 70,
    max_width: int = 260,
    strength: float = 1.0,
) -> tuple[np.ndarray, str, str, Box]:
    """One reader-training sample: (crop RGB, normalised text, region, plate box in the crop).

    The plate sits on a bit of car body (bumper, lights), seen at an angle, at a random
    size (plate width ``min_width``..``max_width`` px), cut out with a jittered box (tight
    or loose), then photometrically augmented.
    """
    plate, text, region = random_plate(rng, regions)
    target = math.exp(rng.uniform(math.log(min_width), math.log(max_width)))
    # Draw the car just big enough that its plate is a bit larger than the target size.
    ratio = PLATE_TO_CAR.get(region, 0.28) if plate.shape[1] / plate.shape[0] > 1.6 else 0.19
    # Only the car around the plate is drawn: generous context so geometry and crop jitter
    # have car body to show.
    veh = make_vehicle(
        plate,
        region,
        rng,
        width=int(np.clip(target * rng.uniform(1.05, 1.4) / ratio, 160, 1000)),
        context=(0.7, 1.6),
    )
    x0, _, x1, _ = veh.plate_box
    bw = x1 - x0
    patch = _over(veh.sprite, _road_patch(rng, *veh.sprite.shape[:2]))
    quad = veh.plate_quad
    # Geometry: size first (cheaper warps), then perspective and rotation.
    s = target / bw
    patch = cv2.resize(
        patch,
        (max(8, int(patch.shape[1] * s)), max(8, int(patch.shape[0] * s))),
        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
    )
    quad = quad * s
    if rng.random() < 0.8 * strength:
        patch, quad = perspective_warp(patch, rng, strength=0.08 * strength, points=quad)
    if rng.random() < 0.6 * strength:
        patch, quad = rotate(patch, rng, max_degrees=7 * strength, points=quad)
    assert quad is not None
    if rng.random() < 0.15:  # very loose crop (a detector box around the whole rear)
        pads = ((0.0, 0.6), (0.1, 1.2))
    elif rng.random() < 0.3:  # very tight crop, edges of the plate cut off
        pads = ((-0.04, 0.03), (-0.08, 0.05))
    else:
        pads = ((-0.02, 0.2), (-0.05, 0.45))
    box = (*quad.min(axis=0), *quad.max(axis=0))
    crop, pbox = crop_jitter(patch, box, rng, pad_x=pads[0], pad_y=pads[1])
    crop = augment(np.ascontiguousarray(crop), rng, strength, detail=pbox.h)
    return crop, normalize(text), region, pbox


def plate_crop_samples(
    n: int,
    seed: int,
    regions: Sequence[str] = REGIONS,
    *,
    min_width: int = 70,
    max_width: int = 260,
    strength: float = 1.0,
    workers: int = 0,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, str, str]]:
    """``n`` reader-training crops: (crop RGB uint8, normalised text, region).

    Sample ``i`` is drawn from its own generator seeded with ``(seed, start + i)``, so the
    output is the same for any ``workers`` (>1: that many processes, order kept) and a long
    run can be resumed or sharded with ``start``. About 35 ms of CPU per crop.
    """
    kwargs = {"regions": tuple(regions), "min_width": min_width, "max_width": max_width, "strength": strength}
    indices = range(start, start + n)
    if workers and workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: callers (trainers) often have torch threads running.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield from pool.map(_crop_sample_at, [seed] * n, indices, [kwargs] * n, chunksize=32)
        return
    for i in indices:
        yield _crop_sample_at(seed, i, kwargs)


def _crop_sample_at(seed: int, index: int, kwargs: dict[str, Any]) -> tuple[np.ndarray, str, str]:
    crop, text, region, _ = plate_crop_sample(np.random.default_rng((seed, index)), **kwargs)
    return crop, text, region


def _paste_rgba(dst: np.ndarray, rgba: np.ndarray, x: int, y: int) -> None:
    """Alpha-composite ``rgba`` onto ``dst`` (RGB uint8, in place) at (x, y), clipped."""
    H, W = dst.shape[:2]
    h, w = rgba.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    src = rgba[y0 - y : y1 - y, x0 - x : x1 - x]
    a = src[..., 3].astype(np.float32) * (1.0 / 255.0)
    roi = dst[y0:y1, x0:x1]
    roi[:] = cv2.blendLinear(src[..., :3], roi, a, 1.0 - a)


def render_scene(
    rng: np.random.Generator,
    width: int = 640,
    height: int = 480,
    n_plates: int = 2,
    background: np.ndarray | None = None,
    regions: Sequence[str] = REGIONS,
    *,
    min_plate_width: float = 0.04,
    max_plate_width: float = 0.2,
    strength: float = 1.0,
) -> tuple[np.ndarray, list[tuple[Box, str, str]]]:
    """A detector-training image: vehicles with plates over a road (or ``background``).

    Returns (RGB image, [(plate box, normalised text, region), ...]). Every returned plate is
    fully inside the image and not covered by a nearer vehicle; a vehicle that could not be
    placed without hiding another plate is left out (so the list may be shorter than
    ``n_plates``). Plate widths are ``min_plate_width``..``max_plate_width`` x image width.
    """
    W, H = width, height
    if background is None:
        img = road_background(
            rng,
            W,
            H,
            lanes_at_bottom=(rng.uniform(-0.3, 0.1), rng.uniform(0.35, 0.65), rng.uniform(0.9, 1.3)),
        )
    else:
        img = _fit_background(background, W, H, rng)
    _add_distractors(img, rng, int(rng.integers(0, 3)))
    # Farther (smaller) vehicles first so nearer ones are drawn over them.
    widths = sorted(
        math.exp(rng.uniform(math.log(min_plate_width), math.log(max_plate_width))) * W
        for _ in range(n_plates)
    )
    placed: list[tuple[Box, str, str]] = []
    bodies: list[tuple[float, float, float, float]] = []
    for target in widths:
        plate, text, region = random_plate(rng, regions)
        veh = make_vehicle(plate, region, rng, width=int(rng.uniform(420, 640)))
        sprite, quad = veh.sprite, veh.plate_quad
        x0, _, x1, _ = veh.plate_box
        s = target / (x1 - x0)
        sprite = cv2.resize(
            sprite,
            (max(4, int(sprite.shape[1] * s)), max(4, int(sprite.shape[0] * s))),
            interpolation=cv2.INTER_AREA,
        )
        quad = quad * (sprite.shape[1] / veh.sprite.shape[1], sprite.shape[0] / veh.sprite.shape[0])
        if rng.random() < 0.7 * strength:  # view angle
            sprite, quad = perspective_warp(
                sprite, rng, strength=0.07, points=quad, border=cv2.BORDER_CONSTANT
            )
        assert quad is not None
        qx0, qy0 = quad.min(axis=0)
        qx1, qy1 = quad.max(axis=0)
        # Perspective: bigger plates sit lower in the frame (nearer the camera), loosely.
        depth = math.log(target / (min_plate_width * W)) / max(
            1e-6, math.log(max_plate_width / min_plate_width)
        )
        for _ in range(25):
            ox = rng.uniform(-qx0, W - qx1)
            cy = H * (0.12 + 0.8 * depth) + rng.normal(0, 0.12 * H)
            oy = float(np.clip(cy - (qy0 + qy1) / 2, -qy0, H - qy1))
            box = (qx0 + ox, qy0 + oy, qx1 + ox, qy1 + oy)
            if box[0] < 0 or box[1] < 0 or box[2] > W or box[3] > H:
                continue
            body = (ox, oy + veh.body_top * s, ox + sprite.shape[1], oy + sprite.shape[0])
            hides = any(_overlap(body, p[0]) for p in placed)
            if not hides:
                break
        else:
            continue
        _paste_rgba(img, sprite, int(round(ox)), int(round(oy)))
        bx, by = int(math.floor(box[0] + (round(ox) - ox))), int(math.floor(box[1] + (round(oy) - oy)))
        bx1, by1 = int(math.ceil(box[2] + (round(ox) - ox))), int(math.ceil(box[3] + (round(oy) - oy)))
        b = Box(bx, by, bx1 - bx, by1 - by).clip(W, H)
        placed.append((b, normalize(text), region))
        bodies.append(body)
    return augment(img, rng, strength * 0.7), placed


def _overlap(a: tuple[float, float, float, float], b: Box) -> bool:
    return a[0] < b.x + b.w and b.x < a[2] and a[1] < b.y + b.h and b.y < a[3]


# --------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------
@dataclass
class _Pass:
    vehicle: Vehicle
    text: str
    region: str
    lane_x: float  # lane centre at the bottom row (px)
    t0: float  # start time (s)
    duration: float  # time from entering to leaving the frame (s)
    approaching: bool
    s_near: float  # sprite scale when the car's ground line is at the bottom row
    drift: float  # small constant lateral offset (px)


def make_video(
    path: str | Path,
    seed: int,
    width: int = 1280,
    height: int = 720,
    fps: int = 15,
    seconds: float = 8.0,
    vehicles: int = 3,
    regions: Sequence[str] = REGIONS,
    codec: str = "h264",
    crf: int = 20,
) -> dict[str, Any]:
    """Render a synthetic two-lane traffic video and return its ground truth.

    Vehicles drive towards or away from a pole camera over a static road; each plate is
    about 110-220 px wide (at 1280x720; scaled with ``width``) while visible. Returns::

        {"video": <file name>, "fps", "width", "height", "frames",
         "vehicles": [{"plate": normalised, "text": display, "region", "first_frame",
                       "last_frame", "boxes": {frame_index: [x, y, w, h]}}]}

    ``boxes`` holds every frame in which the plate is fully inside the frame and not hidden
    by a nearer vehicle; ``first_frame``/``last_frame`` span those frames (keys are ints;
    :func:`write_ground_truth` writes them as JSON strings). The ground truth is the same for
    the same seed and arguments; the encoded bytes may differ between library versions.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    W, H = width, height
    n_frames = max(1, int(round(seconds * fps)))
    vx, vy = W * rng.uniform(0.45, 0.55), -H * rng.uniform(1.2, 1.6)
    lane_lines = (0.0, 0.5, 1.0)
    background = road_background(rng, W, H, vanishing=(vx, vy), lanes_at_bottom=lane_lines)
    passes = _plan_passes(rng, W, H, seconds, vehicles, regions)
    frames_truth: list[dict[int, list[int]]] = [{} for _ in passes]
    noise = _noise_frames(rng, H, W)
    # Per-video light (overcast .. bright sun, warm .. cool) as one LUT per channel, and a
    # shutter time that smears moving cars vertically by a few pixels.
    light = _light_lut(rng)
    shutter = float(rng.uniform(0.05, 0.3))  # fraction of the frame interval

    def depth(y: float) -> float:  # sprite scale factor relative to the bottom row
        return (y - vy) / (H - vy)

    def layout(p: _Pass, t: float) -> tuple[float, float, float] | None:
        """(scale, sprite left x, sprite top y) at time t, or None when off screen."""
        u = (t - p.t0) / p.duration
        if u < 0 or u > 1:
            return None
        sh = p.vehicle.sprite.shape[0]
        # Ground line from the top edge to below the frame (approaching) or back.
        travel_end = H + sh * p.s_near * 1.02
        y = u * travel_end if p.approaching else travel_end * (1 - u)
        s = p.s_near * depth(y)
        cx = vx + (p.lane_x + p.drift - vx) * depth(y)
        return s, cx - p.vehicle.sprite.shape[1] * s / 2, y - sh * s

    av = _import_av()
    container = av.open(str(path), mode="w")
    try:
        stream = _video_stream(container, codec, W, H, fps, crf)
        for fi in range(n_frames):
            t = fi / fps
            frame = background.copy()
            drawn = []
            for k, p in enumerate(passes):
                lay = layout(p, t)
                if lay is not None:
                    drawn.append((lay[2] + p.vehicle.sprite.shape[0] * lay[0], k, lay))
            drawn.sort()  # by ground line: farther first
            rects = []
            for _, k, (s, x, y) in drawn:
                p = passes[k]
                sw = max(2, int(round(p.vehicle.sprite.shape[1] * s)))
                sh = max(2, int(round(p.vehicle.sprite.shape[0] * s)))
                xi, yi = int(round(x)), int(round(y))
                sprite = _scaled_sprite(p.vehicle.sprite, sw, sh, xi, yi, W, H)
                if sprite is not None:
                    speed = (H + p.vehicle.sprite.shape[0] * p.s_near) / p.duration / fps  # px per frame
                    blur = int(round(speed * shutter))
                    if blur >= 2:
                        sprite = (cv2.blur(sprite[0], (1, blur)), sprite[1], sprite[2])
                    _paste_rgba(frame, sprite[0], sprite[1], sprite[2])
                kx, ky = sw / p.vehicle.sprite.shape[1], sh / p.vehicle.sprite.shape[0]
                bx0, by0, bx1, by1 = p.vehicle.plate_box
                box = [
                    int(math.floor(xi + bx0 * kx)),
                    int(math.floor(yi + by0 * ky)),
                    int(math.ceil(xi + bx1 * kx)),
                    int(math.ceil(yi + by1 * ky)),
                ]
                body = (xi, yi + p.vehicle.body_top * ky, xi + sw, yi + sh * 0.97)
                rects.append((k, box, body))
            for i, (k, box, _) in enumerate(rects):
                inside = box[0] >= 0 and box[1] >= 0 and box[2] <= W and box[3] <= H
                hidden = any(
                    _overlap(body, Box(box[0], box[1], box[2] - box[0], box[3] - box[1]))
                    for _, _, body in rects[i + 1 :]
                )
                if inside and not hidden:
                    frames_truth[k][fi] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            frame = _add_sensor_noise(cv2.LUT(frame, light), noise[fi % len(noise)])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()

    out_vehicles = []
    for p, boxes in zip(passes, frames_truth, strict=True):
        if not boxes:
            continue
        out_vehicles.append(
            {
                "plate": normalize(p.text),
                "text": p.text,
                "region": p.region,
                "first_frame": min(boxes),
                "last_frame": max(boxes),
                "boxes": boxes,
            }
        )
    out_vehicles.sort(key=lambda v: v["first_frame"])
    return {
        "video": path.name,
        "fps": fps,
        "width": W,
        "height": H,
        "frames": n_frames,
        "vehicles": out_vehicles,
    }


def _import_av() -> Any:
    import av  # PyAV; imported lazily so plate/scene generation works without it

    return av


def _video_stream(container: Any, codec: str, W: int, H: int, fps: int, crf: int) -> Any:
    """libx264 (yuv420p, crf) when asked for h264 and available, else the named encoder."""
    import av

    names = ["libx264", "h264"] if codec in ("h264", "libx264") else [codec]
    last: Exception | None = None
    for name in names:
        if name not in av.codecs_available:
            continue
        try:
            stream = container.add_stream(name, rate=fps)
        except Exception as exc:  # encoder listed but not usable in this build
            last = exc
            continue
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        if name == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "film"}
        else:
            stream.bit_rate = int(W * H * fps * 0.25)
        return stream
    raise RuntimeError(f"no usable encoder for codec {codec!r} in this PyAV build ({last})")


def _plan_passes(
    rng: np.random.Generator,
    W: int,
    H: int,
    seconds: float,
    vehicles: int,
    regions: Sequence[str],
) -> list[_Pass]:
    """Vehicles alternate between two lanes; in a lane they are spaced so the follower's
    plate is never behind the leader, and every pass fits inside the video."""
    lanes = [0.25 * W, 0.75 * W]
    approaching = [bool(rng.random() < 0.6), bool(rng.random() < 0.6)]
    first_lane = int(rng.integers(2))
    per_lane = [0, 0]
    assign = []
    for i in range(vehicles):
        lane = (first_lane + i) % 2
        assign.append(lane)
        per_lane[lane] += 1
    gap = 0.62  # fraction of the pass between followers: the leader has moved a car length on
    duration = {}
    start = {}
    for lane in (0, 1):
        k = per_lane[lane]
        if k == 0:
            continue
        d = min(rng.uniform(3.2, 4.6), seconds / ((k - 1) * gap + 0.8))
        duration[lane] = max(0.8, d)
        span = (k - 1) * gap * duration[lane] + 0.8 * duration[lane]
        start[lane] = rng.uniform(-0.1 * duration[lane], max(-0.1 * duration[lane], seconds - span))
    passes = []
    count = [0, 0]
    for lane in assign:
        region = regions[int(rng.integers(len(regions)))]
        text = random_plate_text(region, rng)
        plate = render_plate_rgba(text, region, rng, two_row=False, dirt=float(rng.uniform(0, 0.35)))
        view = "front" if approaching[lane] else "rear"
        # Draw the sprite at its nearest (largest) size: per frame it is only shrunk.
        plate_near = rng.uniform(195, 225) * W / 1280
        car_w = int(min(plate_near / PLATE_TO_CAR[region], 0.55 * W))
        veh = make_vehicle(plate, region, rng, view=view, width=car_w)
        s_near = 1.0
        t0 = start[lane] + count[lane] * gap * duration[lane]
        count[lane] += 1
        passes.append(
            _Pass(
                veh,
                text,
                region,
                lanes[lane],
                t0,
                duration[lane],
                approaching[lane],
                s_near,
                float(rng.uniform(-0.02, 0.02) * W),
            )
        )
    return passes


def _scaled_sprite(
    sprite: np.ndarray, sw: int, sh: int, x: int, y: int, W: int, H: int
) -> tuple[np.ndarray, int, int] | None:
    """Resize only the part of the sprite that lands inside the frame (speed)."""
    if x >= W or y >= H or x + sw <= 0 or y + sh <= 0:
        return None
    interp = cv2.INTER_LINEAR if sw >= sprite.shape[1] * 0.6 else cv2.INTER_AREA
    resized = cv2.resize(sprite, (sw, sh), interpolation=interp)
    return resized, x, y


def _light_lut(rng: np.random.Generator) -> np.ndarray:
    """(256, 1, 3) uint8 LUT: gain, gamma and a colour cast, mild enough to keep plates legible."""
    x = np.arange(256, dtype=np.float32)[:, None] / 255.0
    gain = rng.uniform(0.8, 1.12) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    lut = np.clip((x ** rng.uniform(0.8, 1.25)) * gain * 255.0 + rng.uniform(-8, 8), 0, 255)
    return lut.astype(np.uint8)[:, None, :]


def _noise_frames(
    rng: np.random.Generator, H: int, W: int, count: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-computed sensor noise as (add, subtract) uint8 pairs so each frame costs two
    saturating adds, and the encoder has real (non-static) content to code."""
    field = np.clip(np.round(rng.normal(0, 1.4, (H + 8, W + 8, 3))), -12, 12).astype(np.int8)
    out = []
    for _ in range(count):  # shifted windows of one field: cheap, and uncorrelated per pixel
        dy, dx = (int(v) for v in rng.integers(0, 8, 2))
        n = field[dy : dy + H, dx : dx + W]
        out.append((np.maximum(n, 0).astype(np.uint8), np.maximum(-n, 0).astype(np.uint8)))
    return out


# How a detector box frames the plate: (width factor range, height factor range). "holder":
# the plate with its holder; "lights": the text row merged with lights or bumper hardware.
BOX_FRAMINGS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "tight": ((1.0, 1.1), (1.0, 1.15)),
    "holder": ((1.2, 1.6), (1.3, 2.0)),
    "lights": ((1.5, 2.0), (0.9, 1.1)),
}


def framed_plate_crops(scenes: int, seed: int = 8000) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Synthetic plates in rendered street scenes, each cut with every ``BOX_FRAMINGS`` box
    (size factors and an off-centre shift drawn per plate): ``{framing: [(crop, text)]}``.

    Deterministic for a seed. ``anpr eval-boxes`` uses seeds 8000-8059 as a tuning set for
    reading from loose detector boxes (no real labelled set has them; real_dev is for
    measuring only); ``anpr train reader --synthetic-framed`` trains on other seeds.
    """
    out: dict[str, list[tuple[np.ndarray, str]]] = {name: [] for name in BOX_FRAMINGS}
    for s in range(seed, seed + scenes):
        rng = np.random.default_rng(s)
        img, plates = render_scene(rng, 1280, 720, n_plates=2, min_plate_width=0.06, max_plate_width=0.2)
        height, width = img.shape[:2]
        for gt, text, _ in plates:
            for name, ((w0, w1), (h0, h1)) in BOX_FRAMINGS.items():
                nw, nh = gt.w * rng.uniform(w0, w1), gt.h * rng.uniform(h0, h1)
                cx = gt.x + gt.w / 2 + rng.uniform(-0.1, 0.1) * (nw - gt.w)
                cy = gt.y + gt.h / 2 + rng.uniform(-0.2, 0.2) * (nh - gt.h)
                box = Box(round(cx - nw / 2), round(cy - nh / 2), round(nw), round(nh)).clip(width, height)
                out[name].append((np.ascontiguousarray(box.crop(img)), text))
    return out


def _add_sensor_noise(frame: np.ndarray, noise: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return cv2.subtract(cv2.add(frame, noise[0]), noise[1])


def write_ground_truth(path: str | Path, truth: dict[str, Any]) -> Path:
    """Write a :func:`make_video` ground truth as JSON (frame keys become strings)."""
    path = Path(path)
    path.write_text(json.dumps(truth, indent=1, sort_keys=False))
    return path


def read_ground_truth(path: str | Path) -> dict[str, Any]:
    """Read :func:`write_ground_truth` output back, with integer frame keys."""
    truth = json.loads(Path(path).read_text())
    for v in truth.get("vehicles", []):
        v["boxes"] = {int(k): b for k, b in v["boxes"].items()}
    return truth
