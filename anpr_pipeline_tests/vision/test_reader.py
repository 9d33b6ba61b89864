"""Plate reader: offline loading, CTC post-processing, format-aware decoding, real accuracy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anpr_pipeline.vision import plates
from anpr_pipeline.vision.reader import build_reader, ctc_char_probs, finish_read
from anpr_pipeline.vision.types import PlateReader

N = len(plates.ALPHABET)


def _load(path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return np.ascontiguousarray(image[:, :, ::-1])


def _onehot(text: str, sharp: float = 0.9) -> np.ndarray:
    rows = np.full((len(text), N), (1 - sharp) / (N - 1), dtype=np.float32)
    for i, ch in enumerate(text):
        rows[i, plates.ALPHABET.index(ch)] = sharp
    return rows


def test_ctc_collapse_merges_repeats_and_keeps_doubled_letters() -> None:
    # frames: A A blank A B B blank  ->  "AAB" (a blank separates the two A's)
    seq = "AA_AB_"
    probs = np.full((len(seq), 1 + N), 0.001, dtype=np.float32)
    for t, ch in enumerate(seq):
        probs[t, 0 if ch == "_" else 1 + plates.ALPHABET.index(ch)] = 1.0
    rows = ctc_char_probs(probs)
    assert "".join(plates.ALPHABET[i] for i in rows.argmax(1)) == "AAB"
    assert np.allclose(rows.sum(1), 1.0)


def test_empty_read_is_empty_not_an_error() -> None:
    read = finish_read(np.zeros((0, N), dtype=np.float32))
    assert read.normalized == "" and read.confidence == 0.0 and read.region is None


def test_format_aware_decoding_turns_o_into_zero_on_a_brazilian_plate() -> None:
    # "ABC12O4": the 6th position reads O above 0; both BR layouts (LLLDDDD, Mercosul
    # LLLDLDD) want a digit there.
    probs = _onehot("ABC12O4")
    probs[5, plates.ALPHABET.index("0")] = 0.08
    read = finish_read(probs, ["br"])
    assert read.normalized == "ABC1204"
    assert read.region == "br"
    assert len(read.char_confidences) == 7


@pytest.fixture(scope="module")
def easyocr_reader() -> PlateReader:
    return build_reader("easyocr", device="cpu")


def test_easyocr_loads_offline_and_reads_a_real_crop(easyocr_reader, real_train_dir) -> None:
    reads = easyocr_reader.read([_load(real_train_dir / "crops/us/la244.png")])
    assert easyocr_reader.version.startswith("easyocr-english_g2")
    assert reads[0].normalized == "CZH964"
    assert len(reads[0].char_confidences) == 6
    assert 0.0 < reads[0].confidence <= 1.0
