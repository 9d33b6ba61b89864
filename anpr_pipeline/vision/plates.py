"""Plate text rules: normalisation, regional plate formats, format-aware decoding.

Everything here works on *normalised* plate text: upper-case ``A-Z0-9`` only, separators
(spaces, dashes, dots, line breaks of two-line plates) removed. Format patterns are written
over normalised text too:

* ``L`` - a letter ``A-Z``
* ``D`` - a digit ``0-9``
* ``A`` - either
* any other character - that literal character (e.g. the ``E`` suffix of German e-car plates)

Why format-aware decoding: a general OCR model confuses look-alike glyphs (O/0, I/1, B/8,
S/5, Z/2, G/6, A/4). Where a plate format says a position must be a letter (or a digit), the
look-alike of the other class is the right answer. :func:`decode_with_formats` picks the
format-consistent reading with the best joint probability, and falls back to the plain
argmax when no format fits reasonably (an unknown format must not be bent into a known one).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_LETTERS = frozenset(ALPHABET[:26])
_DIGITS = frozenset(ALPHABET[26:])

# Look-alike glyph pairs (letter, digit) a general OCR model confuses. The first six are the
# ones fuzzy search expands (confusion_variants); decoding also knows A/4, D/0 and Q/0,
# which are common OCR confusions on plate fonts but too lossy to search by.
SEARCH_CONFUSIONS: tuple[tuple[str, str], ...] = (
    ("O", "0"),
    ("I", "1"),
    ("B", "8"),
    ("S", "5"),
    ("Z", "2"),
    ("G", "6"),
)
DECODE_CONFUSIONS: tuple[tuple[str, str], ...] = SEARCH_CONFUSIONS + (
    ("A", "4"),
    ("D", "0"),
    ("Q", "0"),
)

_NON_ALNUM = re.compile(r"[^A-Z0-9]")


def normalize(text: str) -> str:
    """Upper-case, strip accents, keep only ``A-Z0-9`` (``"ab-12 3"`` -> ``"AB123"``)."""
    decomposed = unicodedata.normalize("NFKD", text or "").upper()
    return _NON_ALNUM.sub("", decomposed)


@dataclass(frozen=True)
class PlateFormat:
    """One plate layout of one region, over normalised text (see module docstring)."""

    region: str  # "us", "eu", "br", ...
    name: str  # human-readable, e.g. "FR SIV AA-123-AA"
    pattern: str  # over normalised text: L letter, D digit, A either, literal otherwise

    def __len__(self) -> int:
        return len(self.pattern)

    def matches(self, normalized: str) -> bool:
        if len(normalized) != len(self.pattern):
            return False
        return all(_char_fits(p, c) for p, c in zip(self.pattern, normalized, strict=True))


def _char_fits(pattern_char: str, char: str) -> bool:
    if pattern_char == "L":
        return char in _LETTERS
    if pattern_char == "D":
        return char in _DIGITS
    if pattern_char == "A":
        return char in _LETTERS or char in _DIGITS
    return char == pattern_char


def _fmts(region: str, entries: Iterable[tuple[str, str]]) -> list[PlateFormat]:
    return [PlateFormat(region, name, pattern) for name, pattern in entries]


# --- United States -----------------------------------------------------------------------
# Passenger plates, state by state the formats are issued in serial blocks; these are the
# common standard-issue layouts. Vanity plates are free text and fall back to the argmax.
# All-digit serials (NH, RI, DE) are left out on purpose: an all-digit format would let the
# decoder turn any O/I/B/S/Z/G into digits, which defeats the position constraint.
_US = _fmts(
    "us",
    [
        ("US LLL-DDDD (NY, PA, TX, GA, OH, VA, NC, MI, WA, AZ, WI ...)", "LLLDDDD"),
        ("US D-LLL-DDD (CA)", "DLLLDDD"),
        ("US LL-DDDDD (IL, CT, NO-style)", "LLDDDDD"),
        ("US L-DDDDDD (IL older)", "LDDDDDD"),
        ("US D-LL-DDDD (MD)", "DLLDDDD"),
        ("US LLL-DDD (MN, SC, VT, HI, FL older, many older series)", "LLLDDD"),
        ("US DDD-LLL (OR, LA, KY, MN older, WI older, many older series)", "DDDLLL"),
        ("US LLL-LDD (FL, CO)", "LLLLDD"),
        ("US LDD-LLL (NJ)", "LDDLLL"),
        ("US D-LLL-DD (MA)", "DLLLDD"),
        ("US DDD-LDD (NV)", "DDDLDD"),
        ("US LLD-LDL (MO)", "LLDLDL"),
        ("US DDD-LLLL (some states' newer series)", "DDDLLLL"),
        ("US LL-DDDD (short series)", "LLDDDD"),
        ("US DDDD-LL (short series)", "DDDDLL"),
        ("US LLL-DDDDD (8-char series)", "LLLDDDDD"),
        ("US DD-LLLDD", "DDLLLDD"),
        ("US LLLL-DDD", "LLLLDDD"),
        ("US LL-DDD (5-char short series)", "LLDDD"),
        ("US DDD-LL (5-char short series)", "DDDLL"),
    ],
)


def _de_formats() -> list[tuple[str, str]]:
    # Germany: district code 1-3 letters, 1-2 letters, 1-4 digits, at most 8 characters
    # (separators dropped); optional E (electric) / H (historic) suffix. Normalised text
    # loses the district/letters boundary, so the patterns are L{2..5} D{1..4}.
    out = []
    for letters in range(2, 6):
        for digits in range(1, 5):
            if letters + digits <= 8:
                out.append((f"DE {letters}L+{digits}D", "L" * letters + "D" * digits))
                out.append((f"DE {letters}L+{digits}D E-suffix", "L" * letters + "D" * digits + "E"))
                out.append((f"DE {letters}L+{digits}D H-suffix", "L" * letters + "D" * digits + "H"))
    return out


def _ch_formats() -> list[tuple[str, str]]:
    # Switzerland: canton code (2 letters) + 1-6 digits.
    return [(f"CH LL {n}D", "LL" + "D" * n) for n in range(1, 7)]


# Netherlands "sidecodes" 1-14 (the layout families issued since 1951), separators dropped.
_NL = [
    ("NL sidecode 1 XX-99-99", "LLDDDD"),
    ("NL sidecode 2 99-99-XX", "DDDDLL"),
    ("NL sidecode 3 99-XX-99", "DDLLDD"),
    ("NL sidecode 4 XX-99-XX", "LLDDLL"),
    ("NL sidecode 5 XX-XX-99", "LLLLDD"),
    ("NL sidecode 6 99-XX-XX", "DDLLLL"),
    ("NL sidecode 7 99-XXX-9", "DDLLLD"),
    ("NL sidecode 8 9-XXX-99", "DLLLDD"),
    ("NL sidecode 9 XX-999-X", "LLDDDL"),
    ("NL sidecode 10 X-999-XX", "LDDDLL"),
    ("NL sidecode 11 XXX-99-X", "LLLDDL"),
    ("NL sidecode 12 X-99-XXX", "LDDLLL"),
    ("NL sidecode 13 9-XX-999", "DLLDDD"),
    ("NL sidecode 14 999-XX-9", "DDDLLD"),
]

# Poland: 2-letter district + 5 characters, or 3-letter district + 4 characters; the
# letter/digit mixes below are the issued "wyróżnik" patterns.
_PL = [
    ("PL XX 12345", "LLDDDDD"),
    ("PL XX 1234A", "LLDDDDL"),
    ("PL XX 123AB", "LLDDDLL"),
    ("PL XX 1A234", "LLDLDDD"),
    ("PL XX 1AB23", "LLDLLDD"),
    ("PL XXX A123", "LLLLDDD"),
    ("PL XXX 12A3", "LLLDDLD"),
    ("PL XXX 1A23", "LLLDLDD"),
    ("PL XXX 12AB", "LLLDDLL"),
    ("PL XXX 1AB2", "LLLDLLD"),
    ("PL XXX AB12", "LLLLLDD"),
    ("PL XXX 1234", "LLLDDDD"),
    ("PL XXX 12345", "LLLDDDDD"),
]

_EU = _fmts(
    "eu",
    [
        ("FR SIV AA-123-AA (since 2009)", "LLDDDLL"),
        ("FR FNI 123 ABC 75", "DDDLLLDD"),
        ("FR FNI 1234 AB 75", "DDDDLLDD"),
        ("FR FNI 123 AB 75", "DDDLLDD"),
        ("IT AA 123 AA (since 1994)", "LLDDDLL"),
        ("ES 1234 BCD (since 2000)", "DDDDLLL"),
        ("ES provincial M 1234 AB", "LDDDDLL"),
        ("ES provincial MA 1234 AB", "LLDDDDLL"),
        ("RO county CJ 12 ABC", "LLDDLLL"),
        ("RO Bucharest B 12 ABC", "LDDLLL"),
        ("RO Bucharest B 123 ABC", "LDDDLLL"),
        ("BE 1-ABC-123", "DLLLDDD"),
        ("PT AA-00-AA (since 2020)", "LLDDLL"),
        ("CZ 1A2 3456", "DLDDDDD"),
        ("SK BA-123AB", "LLDDDLL"),
        ("GB AB12 CDE (not EU, same continent)", "LLDDLLL"),
        ("SE/FI/LT/HU ABC-123", "LLLDDD"),
        ("SE ABC 12A", "LLLDDL"),
        ("HU AA AA-123 (since 2022)", "LLLLDDD"),
        ("DK/NO AB 12 345", "LLDDDDD"),
        ("GR ABC-1234", "LLLDDDD"),
        ("BG CA 1234 AB", "LLDDDDLL"),
        ("BG A 1234 BC", "LDDDDLL"),
        ("HR ZG 1234-AB", "LLDDDDLL"),
        ("LV AB-1234", "LLDDDD"),
        ("EE 123 ABC", "DDDLLL"),
        ("AT W 12345A", "LDDDDDL"),
        ("IE 191-D-12345", "DDDLDDDDD"),
        ("IE 12-D-1234", "DDLDDDD"),
        ("IE 12-KY-1234", "DDLLDDDD"),
        *_NL,
        *_PL,
        *_de_formats(),
        *_ch_formats(),
    ],
)

# Brazil: the old grey plates LLL-DDDD and the Mercosul plates LLL D L DD (since 2018).
_BR = _fmts(
    "br",
    [
        ("BR old LLL-DDDD", "LLLDDDD"),
        ("BR Mercosul LLL1L23", "LLLDLDD"),
    ],
)


def _dedupe(formats: list[PlateFormat]) -> list[PlateFormat]:
    # Several countries share a layout (FR SIV = IT); keep the first name per pattern.
    seen: set[str] = set()
    out = []
    for f in formats:
        if f.pattern not in seen:
            seen.add(f.pattern)
            out.append(f)
    return out


# Order matters only for ties (a layout shared by regions, no region hint): the EU list is
# the most generous, so it goes last - a Mercosul LLLDLDD reads as "br", not as a Polish
# "XXX 1A23".
FORMATS: dict[str, list[PlateFormat]] = {
    "us": _dedupe(_US),
    "br": _dedupe(_BR),
    "eu": _dedupe(_EU),
}


def matching_formats(normalized: str, regions: Sequence[str] | None = None) -> list[PlateFormat]:
    """All formats (of ``regions``, default all) that ``normalized`` fits."""
    return [f for f in _formats_for(regions) if f.matches(normalized)]


def fits_format(normalized: str, regions: Sequence[str] | None = None) -> bool:
    """Whether ``normalized`` fits some format of ``regions`` (default: of any region)."""
    return any(f.matches(normalized) for f in _formats_for(regions))


def match_region(normalized: str, hint: str | None = None) -> str | None:
    """The region whose formats ``normalized`` fits; ``hint`` wins when it fits too.

    A layout shared by regions (LLLDDDD is US, old Brazilian and Greek) resolves to the
    hint, else to the first region in FORMATS order. None when no format fits.
    """
    text = normalize(normalized)
    if hint is not None and any(f.matches(text) for f in FORMATS.get(hint, [])):
        return hint
    for region, formats in FORMATS.items():
        if any(f.matches(text) for f in formats):
            return region
    return None


# What it takes for a read to be reported as a plate (an event; a box `anpr eval` counts as
# found). Reads of 3 characters or fewer are almost always a fragment of a longer plate or
# stray text, so they are not reported, at the cost of Germany's rare 3-character plates
# (LLD, e.g. "M A 1": set PipelineConfig.min_plate_chars to 3 where they matter); a read
# this unsure is noise an operator cannot act on.
MIN_PLATE_CHARS = 4
MIN_READ_CONFIDENCE = 0.3
# No plate of any region we know is longer than its longest format (9: Irish 191-D-12345),
# so a longer read is a plate run into frame text, or a dealer or city line, never a plate:
# reporting it would only be reporting a wrong plate.
MAX_PLATE_CHARS = max(len(f.pattern) for formats in FORMATS.values() for f in formats)


def reportable(
    normalized: str,
    confidence: float,
    min_chars: int = MIN_PLATE_CHARS,
    min_confidence: float = MIN_READ_CONFIDENCE,
) -> bool:
    """Whether a (voted) read is long (not too long) and sure enough to report as a plate."""
    return min_chars <= len(normalized) <= MAX_PLATE_CHARS and confidence >= min_confidence


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(a: str, b: str) -> float:
    """1 - edit_distance / max length, in 0..1 (two empty strings are identical: 1.0)."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - edit_distance(a, b) / longest


_SEARCH_SWAP = {}
for _letter, _digit in SEARCH_CONFUSIONS:
    _SEARCH_SWAP[_letter] = _digit
    _SEARCH_SWAP[_digit] = _letter


def confusion_key(normalized: str) -> str:
    """Collapse look-alikes to one representative (digits -> their letter twin).

    Two readings of the same plate that differ only by O/0, I/1, B/8, S/5, Z/2, G/6 get the
    same key, so fuzzy search can index/compare on it.
    """
    return "".join(_SEARCH_SWAP[c] if c in _DIGITS and c in _SEARCH_SWAP else c for c in normalized)


def fuzzy_match(query: str, candidate: str) -> bool:
    """Edit distance <= 1 after folding OCR look-alikes (O/0, I/1, B/8, S/5, Z/2, G/6).

    What a fuzzy watchlist entry and ``anpr search --fuzzy`` count as the same plate.
    """
    a, b = confusion_key(query), confusion_key(candidate)
    return abs(len(a) - len(b)) <= 1 and edit_distance(a, b) <= 1


def confusion_variants(normalized: str, limit: int = 4096) -> list[str]:
    """Every spelling reachable by swapping O<->0, I<->1, B<->8, S<->5, Z<->2, G<->6.

    Includes ``normalized`` itself (first); sorted after that. Capped at ``limit``
    (2**k grows fast; a 12-char all-look-alike string would give 4096).
    """
    options = [(c, _SEARCH_SWAP[c]) if c in _SEARCH_SWAP else (c,) for c in normalized]
    variants: list[str] = []
    for combo in itertools.islice(itertools.product(*options), limit):
        variants.append("".join(combo))
    rest = sorted(set(variants) - {normalized})
    return [normalized, *rest]


# --- format-aware decoding ---------------------------------------------------------------

# For each alphabet index, the indices of its look-alikes (used by decoding only).
_PARTNERS: list[list[int]] = [[] for _ in ALPHABET]
for _letter, _digit in DECODE_CONFUSIONS:
    _PARTNERS[_INDEX[_letter]].append(_INDEX[_digit])
    _PARTNERS[_INDEX[_digit]].append(_INDEX[_letter])


def _formats_for(regions: Sequence[str] | None) -> list[PlateFormat]:
    names = list(FORMATS) if regions is None else list(regions)
    return [f for r in names for f in FORMATS.get(r, [])]


@lru_cache(maxsize=64)
def _masks(regions: tuple[str, ...] | None, length: int) -> tuple[list[PlateFormat], np.ndarray]:
    """Formats of ``length`` and their allowed-class masks, shape (F, length, 36)."""
    formats = [f for f in _formats_for(regions) if len(f.pattern) == length]
    masks = np.zeros((len(formats), length, len(ALPHABET)), dtype=bool)
    for k, f in enumerate(formats):
        for i, p in enumerate(f.pattern):
            if p == "L":
                masks[k, i, :26] = True
            elif p == "D":
                masks[k, i, 26:] = True
            elif p == "A":
                masks[k, i, :] = True
            elif p in _INDEX:
                masks[k, i, _INDEX[p]] = True
    return formats, masks


def _effective_probs(probs: np.ndarray, lookalike_weight: float) -> np.ndarray:
    """Each class gets at least ``lookalike_weight`` x its look-alike's probability.

    The model saying "O, 0.95" is evidence of the *glyph*; when the format forbids a letter
    there, "0" is the reading, and it should not cost log(0.95/0.03) - only a bounded
    penalty. Non-look-alike substitutions keep their true (high) cost.
    """
    eff = probs.copy()
    for c, partners in enumerate(_PARTNERS):
        if partners:
            eff[:, c] = np.maximum(eff[:, c], lookalike_weight * probs[:, partners].max(axis=1))
    return eff


def decode_with_formats(
    char_probs: np.ndarray,
    regions: Sequence[str] | None = None,
    margin: float = 3.0,
    lookalike_weight: float = 0.5,
) -> tuple[str, tuple[float, ...], str | None]:
    """Decode per-position class probabilities into plate text, respecting plate formats.

    ``char_probs``: (N, 36) probabilities over ALPHABET for N already-collapsed character
    positions (rows need not sum to exactly 1). ``regions``: restrict to these regions'
    formats (default all, in FORMATS order; the order breaks ties between regions).

    Among all formats of length N, pick the reading with the highest joint (log) probability,
    where a look-alike of the argmax class counts as ``lookalike_weight`` x the argmax's
    probability (see _effective_probs). Accept it only if its log-probability is within
    ``margin`` nats of the unconstrained argmax; else return the argmax with region None.

    Returns (text, per-char confidences, region|None). The confidence of a format-resolved
    look-alike is its effective probability (the evidence for the glyph, discounted).
    """
    probs = np.asarray(char_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(ALPHABET):
        raise ValueError(f"char_probs must have shape (N, {len(ALPHABET)}), got {probs.shape}")
    n = probs.shape[0]
    if n == 0:
        return "", (), None
    probs = np.clip(probs, 0.0, 1.0)
    free_idx = probs.argmax(axis=1)
    free_p = probs[np.arange(n), free_idx]
    free_text = "".join(ALPHABET[i] for i in free_idx)
    free_conf = tuple(float(p) for p in free_p)

    key = None if regions is None else tuple(regions)
    formats, masks = _masks(key, n)
    if not formats:
        return free_text, free_conf, None

    eff = _effective_probs(probs, lookalike_weight)
    tiny = 1e-12
    masked = np.where(masks, eff[None, :, :], -1.0)  # (F, N, 36); -1 never wins argmax
    best_idx = masked.argmax(axis=2)  # (F, N)
    best_p = np.take_along_axis(masked, best_idx[:, :, None], axis=2)[:, :, 0]
    scores = np.log(np.maximum(best_p, tiny)).sum(axis=1)  # (F,)
    k = int(scores.argmax())  # first max = earliest region/format in order on ties
    free_score = float(np.log(np.maximum(free_p, tiny)).sum())
    if scores[k] < free_score - margin:
        return free_text, free_conf, None
    text = "".join(ALPHABET[i] for i in best_idx[k])
    return text, tuple(float(p) for p in best_p[k]), formats[k].region
