"""Plate text rules: normalisation, formats, format-aware decoding (pure code, no Dagster)."""

from __future__ import annotations

import numpy as np
import pytest

from anpr_pipeline.vision.plates import (
    ALPHABET,
    FORMATS,
    PlateFormat,
    confusion_key,
    confusion_variants,
    decode_with_formats,
    edit_distance,
    fits_format,
    fuzzy_match,
    match_region,
    matching_formats,
    normalize,
    reportable,
    similarity,
)


def one_hot_probs(
    text: str, conf: float = 0.9, alternatives: dict[int, dict[str, float]] | None = None
) -> np.ndarray:
    """(N, 36) probabilities: ``conf`` on each char of ``text``, rest spread evenly.

    ``alternatives`` overrides single positions: {position: {char: prob, ...}}.
    """
    probs = np.full((len(text), len(ALPHABET)), (1.0 - conf) / (len(ALPHABET) - 1))
    for i, c in enumerate(text):
        probs[i, ALPHABET.index(c)] = conf
    for i, row in (alternatives or {}).items():
        rest = (1.0 - sum(row.values())) / (len(ALPHABET) - len(row))
        probs[i, :] = rest
        for c, p in row.items():
            probs[i, ALPHABET.index(c)] = p
    return probs


def test_alphabet_and_normalize() -> None:
    assert ALPHABET == "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    assert normalize("ab-12 3") == "AB123"
    assert normalize(" 7abc 123\n") == "7ABC123"
    assert normalize("SÃO·1234") == "SAO1234"
    assert normalize("") == ""
    assert normalize("--- .") == ""


def test_formats_cover_required_regions_and_layouts() -> None:
    assert {"us", "eu", "br"} <= set(FORMATS)
    patterns = {r: {f.pattern for f in fs} for r, fs in FORMATS.items()}
    assert {"LLLDDDD", "LLLDLDD"} <= patterns["br"]
    assert {"LLLDDDD", "DLLLDDD", "LLDDDDD", "DDDLLL", "LLLDDD"} <= patterns["us"]
    # FR SIV / IT, ES, RO county, NL sidecode 4, DE "B AB 1234".
    assert {"LLDDDLL", "DDDDLLL", "LLDDLLL", "LLDDLL", "LLLDDDD"} <= patterns["eu"]
    for formats in FORMATS.values():
        for f in formats:
            assert isinstance(f, PlateFormat) and f.name and f.pattern
            assert set(f.pattern) <= set("LDA" + ALPHABET)


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("LLLDDDD", "ABC1234", True),
        ("LLLDDDD", "ABC123", False),
        ("LLLDDDD", "AB01234", False),
        ("LLLDLDD", "ABC1D23", True),
        ("LLDDDDE", "BAB1234E", False),  # wrong length
        ("LLLDDDDE", "BAB1234E", True),  # literal E suffix
        ("LLLDDDDE", "BAB1234H", False),
        ("AAA", "A1B", True),
    ],
)
def test_plate_format_matches(pattern: str, text: str, expected: bool) -> None:
    assert PlateFormat("x", "test", pattern).matches(text) is expected


def test_match_region() -> None:
    assert match_region("ABC1D23") == "br"  # Mercosul
    assert match_region("AB123CD") == "eu"  # FR SIV
    assert match_region("1234BCD") == "eu"  # ES
    assert match_region("7ABC123") == "us"  # CA
    # LLLDDDD is US, old Brazilian and Greek: the hint decides, else the first region.
    assert match_region("ABC1234") == "us"
    assert match_region("ABC1234", hint="br") == "br"
    assert match_region("ABC1234", hint="eu") == "eu"
    # A hint whose formats do not fit is ignored.
    assert match_region("AB123CD", hint="br") == "eu"
    assert match_region("HELLOWORLD1") is None
    assert match_region("") is None
    assert any(f.name.startswith("BR Mercosul") for f in matching_formats("ABC1D23"))


def test_fits_format_checks_the_given_regions_only() -> None:
    assert fits_format("ABC1234") and fits_format("ABC1234", ["br"]) and fits_format("ABC1D23", ["br"])
    assert fits_format("AB12CDE") and fits_format("AB12CDE", ["eu"])  # GB
    assert not fits_format("AB12CDE", ["br"])  # a GB plate is no Brazilian format
    assert not fits_format("CARBRAXX") and not fits_format("XSTASY", ["us"])  # badge, vanity plate
    assert not fits_format("")


def test_reportable_needs_a_plate_length_and_some_confidence() -> None:
    assert reportable("7ABC123", 0.9) and reportable("ABCD", 0.9)
    assert not reportable("AB1", 0.99)  # a fragment, however sure (a German LLD plate too)
    assert not reportable("ABC123", 0.29) and reportable("ABC123", 0.3)
    assert reportable("AB1", 0.5, min_chars=3) and not reportable("ABC123", 0.5, min_confidence=0.6)
    assert reportable("191D12345", 0.9)  # the longest plate we know (Irish)
    assert not reportable("LANDOFLINCOLN", 0.99)  # a slogan is longer than any plate


def test_edit_distance_and_similarity() -> None:
    assert edit_distance("", "") == 0
    assert edit_distance("ABC", "") == 3
    assert edit_distance("ABC1234", "ABC1234") == 0
    assert edit_distance("ABC1234", "A8C1234") == 1
    assert edit_distance("ABC1234", "BC1234") == 1
    assert edit_distance("KITTEN", "SITTING") == 3
    assert similarity("", "") == 1.0
    assert similarity("ABC1234", "ABC1234") == 1.0
    assert similarity("ABC1234", "A8C1234") == pytest.approx(1 - 1 / 7)
    assert similarity("ABCD", "WXYZ") == 0.0


def test_confusion_variants_and_key() -> None:
    variants = confusion_variants("O1B")
    assert variants[0] == "O1B"
    assert set(variants) == {"O1B", "01B", "OIB", "0IB", "O18", "018", "OI8", "0I8"}
    assert confusion_variants("XYZ") == ["XYZ", "XY2"]
    assert confusion_variants("KMW") == ["KMW"]
    assert confusion_key("0I8") == confusion_key("OIB") == confusion_key("O18") == "OIB"
    assert confusion_key("ABC1234") == "ABCIZ34"
    assert len(confusion_variants("O" * 16, limit=100)) == 100


def test_decode_resolves_confusions_by_position() -> None:
    # Read "A8C1Z34" (8 at a letter position, Z at a digit position) - US LLLDDDD fixes both.
    probs = one_hot_probs("A8C1Z34")
    text, confs, region = decode_with_formats(probs, regions=["us"])
    assert text == "ABC1234"
    assert region == "us"
    assert len(confs) == 7
    assert confs[1] < 0.9 and confs[0] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("read", "regions", "expected", "region"),
    [
        ("A8C1234", ["br"], "ABC1234", "br"),  # B/8 at a letter position
        ("ABC5O23", ["br"], "ABC5O23", "br"),  # Mercosul: O legitimately a letter at pos 4
        ("ABC5023", ["br"], "ABC5023", "br"),  # ... and old layout keeps the 0
        ("ABC1I34", ["br"], "ABC1I34", "br"),  # Mercosul letter position
        ("AB1Z3CD", ["eu"], "AB123CD", "eu"),  # FR SIV: Z -> 2 in a digit position
        ("12345BCD"[1:], ["eu"], "2345BCD", "eu"),  # ES
        ("7A8CI23", ["us"], "7ABC123", "us"),  # CA: 8 -> B, I -> 1
        ("1Z3ABC", ["us"], "123ABC", "us"),  # DDDLLL: Z -> 2
        ("4BC1234", ["br"], "ABC1234", "br"),  # A/4
        ("4BC1234", ["us"], "4BC1234", "us"),  # ... but a valid MD D-LL-DDDD in the US
    ],
)
def test_decode_cases(read: str, regions: list[str], expected: str, region: str) -> None:
    text, _, got_region = decode_with_formats(one_hot_probs(read), regions=regions)
    assert (text, got_region) == (expected, region)


def test_decode_picks_best_joint_probability_across_formats() -> None:
    # Position 3 ambiguous between "1" (0.5) and "I" (0.45): both LLLDDDD and LLLLDDD-like
    # readings exist only if a format allows them; with br formats the digit wins.
    probs = one_hot_probs("ABC1234", alternatives={3: {"1": 0.5, "I": 0.45}})
    assert decode_with_formats(probs, regions=["br"])[0] == "ABC1234"
    # Mercosul position 4 (letter): "D" 0.3 vs "0" 0.6 -> old layout ABC1034 wins only if
    # that is more probable; here the letter reading must win by joint probability.
    probs = one_hot_probs("ABC1D34", alternatives={4: {"D": 0.6, "0": 0.3}})
    assert decode_with_formats(probs, regions=["br"])[0] == "ABC1D34"
    probs = one_hot_probs("ABC1034", alternatives={4: {"D": 0.3, "0": 0.6}})
    assert decode_with_formats(probs, regions=["br"])[0] == "ABC1034"


def test_decode_falls_back_to_argmax_when_no_format_fits() -> None:
    # Vanity text: no format of length 10.
    text, confs, region = decode_with_formats(one_hot_probs("HELLOWORLD"))
    assert (text, region) == ("HELLOWORLD", None)
    assert confs == pytest.approx((0.9,) * 10)
    # Length 7 exists, but forcing "XYZWVUT" into any format means several confident
    # non-look-alike substitutions: too far below the argmax -> argmax, region None.
    text, _, region = decode_with_formats(one_hot_probs("XYZWVUT", conf=0.95), regions=["br"])
    assert (text, region) == ("XYZWVUT", None)
    # A larger margin accepts the forced reading.
    _, _, region = decode_with_formats(one_hot_probs("XYZWVUT", conf=0.95), regions=["br"], margin=1e6)
    assert region == "br"


def test_decode_edge_cases() -> None:
    assert decode_with_formats(np.zeros((0, 36))) == ("", (), None)
    with pytest.raises(ValueError, match="shape"):
        decode_with_formats(np.zeros((7, 35)))
    # Unknown region -> no formats -> argmax.
    assert decode_with_formats(one_hot_probs("0BC1234"), regions=["mars"])[2] is None


def test_fuzzy_match_rules() -> None:
    assert fuzzy_match("AB123CD", "AB123CD")
    assert fuzzy_match("AB123CD", "A8123CD")  # B/8 confusion
    assert fuzzy_match("AB123CD", "A8I23CO")  # several confusions, no real edit
    assert fuzzy_match("AB123CD", "AB123CE")  # one substitution
    assert fuzzy_match("AB123CD", "AB12CD")  # one deletion
    assert fuzzy_match("AB123CD", "AB1234CD")  # one insertion
    assert not fuzzy_match("AB123CD", "AB1CD")
    assert not fuzzy_match("AB123CD", "XB123CE")
    assert fuzzy_match("OZG3580", "DZG3580")  # one real edit (D/O is not folded)
