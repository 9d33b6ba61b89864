"""The per-video loop shared by the assets and `anpr bench`: static gate, reuse, batching, reads."""

from __future__ import annotations

import numpy as np

from anpr_pipeline.vision.decode import SampledFrame
from anpr_pipeline.vision.types import Box, Detection, PlateRead
from anpr_pipeline.vision.video_pipeline import (
    StaticGate,
    jpeg_bytes,
    process_video_frames,
    read_crops,
)

H, W = 240, 320


class BoxDetector:
    """Test detector: the bright rectangles it is told about, and a record of what it saw."""

    version = "test-boxes"

    def __init__(self, boxes: list[Box]) -> None:
        self.boxes = boxes
        self.calls: list[int] = []

    def detect(self, images):
        self.calls.append(len(images))
        return [[Detection(b, 0.9) for b in self.boxes] for _ in images]


class CountingReader:
    version = "test-reader"

    def __init__(self) -> None:
        self.crops = 0

    def read(self, crops):
        self.crops += len(crops)
        return [PlateRead(f"P{int(c.mean())}", f"P{int(c.mean())}", 0.9, (0.9,), None) for c in crops]


def _scene(rng: np.random.Generator, noise: float = 2.0) -> np.ndarray:
    base = np.full((H, W, 3), 90, np.uint8)
    base[200:230, 40:120] = 220  # a static "sign"
    return np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)


def _frames(images: list[np.ndarray]) -> list[SampledFrame]:
    return [SampledFrame(index=i, source_index=3 * i, pts_s=i * 0.2, image=im) for i, im in enumerate(images)]


def test_static_gate_ignores_noise_but_sees_a_small_car():
    rng = np.random.default_rng(0)
    gate = StaticGate(4.0)
    assert not gate.is_static(_scene(rng))  # the first frame is never static
    assert gate.is_static(_scene(rng))  # fresh sensor noise only
    moved = _scene(rng)
    moved[100:116, 150:190] = 30  # a 40x16 px dark object: 0.8 % of the frame
    assert not gate.is_static(moved)
    assert not StaticGate(0.0).is_static(_scene(rng))  # 0 disables the gate


def test_static_frames_skip_the_detector_and_carry_detections_forward():
    rng = np.random.default_rng(1)
    still = _scene(rng)
    moving = still.copy()
    moving[20:60, 200:300] = 250  # a car arrives elsewhere; the sign is unchanged
    images = [still, still.copy(), moving]
    detector = BoxDetector([Box(40, 200, 80, 30)])
    crops = []
    records, stats = process_video_frames(
        _frames(images), detector, batch_size=8, static_threshold=4.0, on_crop=crops.append
    )
    assert [r.skipped_static for r in records] == [False, True, False]
    assert detector.calls == [2]  # one batch, without the static frame
    assert [r.detections for r in records] == [1, 1, 1]
    assert stats.sampled == 3 and stats.skipped_static == 1 and stats.detections == 3
    # Frame 1 (static) and frame 2 (the sign's pixels unchanged) reuse frame 0's crop.
    assert [c.reuse_of for c in crops] == [None, (0, 0), (0, 0)]
    assert stats.reused_detections == 2
    assert crops[0].image.shape[:2] == (30 + 2 * 2, 80 + 2 * 6)  # padded by crop_padding=0.08, full res


def test_changed_pixels_in_the_same_box_are_read_again():
    rng = np.random.default_rng(2)
    a = _scene(rng)
    b = _scene(rng)
    b[205:225, 50:110] = 20  # different characters on the "plate" in the same place
    crops = []
    _, stats = process_video_frames(
        _frames([a, b]), BoxDetector([Box(40, 200, 80, 30)]), static_threshold=4.0, on_crop=crops.append
    )
    assert [c.reuse_of for c in crops] == [None, None]
    crops.clear()
    _, stats = process_video_frames(
        _frames([a, a.copy()]),
        BoxDetector([Box(40, 200, 80, 30)]),
        static_threshold=0.0,
        reuse_static_detections=False,
        on_crop=crops.append,
    )
    assert [c.reuse_of for c in crops] == [None, None] and stats.skipped_static == 0


def test_static_frames_carry_detections_forward_with_reuse_across_frames_off():
    rng = np.random.default_rng(3)
    still = _scene(rng)
    crops = []
    records, _ = process_video_frames(
        _frames([still, still.copy(), still.copy()]),
        BoxDetector([Box(40, 200, 80, 30)]),
        static_threshold=4.0,
        reuse_static_detections=False,
        on_crop=crops.append,
    )
    assert [r.skipped_static for r in records] == [False, True, True]
    assert [r.detections for r in records] == [1, 1, 1]
    assert [c.reuse_of for c in crops] == [None, (0, 0), (0, 0)]


def test_batches_respect_the_batch_size():
    rng = np.random.default_rng(3)
    images = []
    for i in range(7):
        im = _scene(rng)
        im[10:40, 10 + 30 * i : 40 + 30 * i] = 255  # something moves every frame
        images.append(im)
    detector = BoxDetector([])
    records, stats = process_video_frames(_frames(images), detector, batch_size=3, static_threshold=4.0)
    assert detector.calls == [3, 3, 1] and stats.batches == 3
    assert [r.source_index for r in records] == [0, 3, 6, 9, 12, 15, 18]


def test_read_crops_reads_each_distinct_key_once_in_order():
    store = {k: np.full((20, 60, 3), v, np.uint8) for k, v in (("a", 10), ("b", 20), ("c", 30))}
    reader = CountingReader()
    reads = read_crops(["a", "b", "a", "c", "a"], store.__getitem__, reader, batch_size=2)
    assert [r.text for r in reads] == ["P10", "P20", "P10", "P30", "P10"]
    assert reader.crops == 3


def test_read_crops_with_a_batch_size_below_one_reads_one_crop_at_a_time():
    # The loop stepped by max(1, batch_size) but sliced by batch_size: 0 read nothing (and
    # a KeyError followed), a negative size read the wrong crops.
    from anpr_pipeline.vision import synth
    from anpr_pipeline.vision.reader import build_reader

    rng = np.random.default_rng(5)
    store = {t: synth.render_plate(t, "br", rng, dirt=0.0) for t in ("ABC1234", "BRA2E19", "QRS5678")}
    reader = build_reader("default", device="cpu")
    keys = ["ABC1234", "BRA2E19", "ABC1234", "QRS5678"]
    expected = [r.normalized for r in read_crops(keys, store.__getitem__, reader, batch_size=32)]
    assert expected == keys
    for size in (0, -3):
        assert [
            r.normalized for r in read_crops(keys, store.__getitem__, reader, batch_size=size)
        ] == expected


def test_jpeg_bytes_encodes_views():
    image = np.zeros((50, 80, 3), np.uint8)
    data = jpeg_bytes(image[10:30, 5:60])  # a non-contiguous view, as crops are
    assert data[:2] == b"\xff\xd8"


def test_prefetch_keeps_order_and_raises_producer_errors_in_place():
    from anpr_pipeline.vision.video_pipeline import prefetch

    assert list(prefetch(range(20), 3)) == list(range(20))
    assert list(prefetch(range(5), 0)) == list(range(5))

    def failing():
        yield 1
        yield 2
        raise ValueError("corrupt data at frame 2")

    seen = []
    try:
        for item in prefetch(failing(), 4):
            seen.append(item)
    except ValueError as exc:
        assert "frame 2" in str(exc)
    else:
        raise AssertionError("the producer's error was swallowed")
    assert seen == [1, 2]


def test_prefetch_stops_and_closes_the_producer_when_the_consumer_stops():
    from anpr_pipeline.vision.video_pipeline import prefetch

    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    for item in prefetch(endless(), 2):
        if item == 5:
            break
    assert closed == [True]
