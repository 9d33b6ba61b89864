"""Per-video processing loop shared by the Dagster assets and ``anpr bench``.

One implementation of "sampled frames -> static gate -> batched detector -> full-resolution
crops", and of "crops -> batched reader", so the throughput ``anpr bench`` measures is the
throughput of the code the pipeline runs. No Dagster imports here: the assets own naming,
uploads, DataFrames and metadata; this module owns the hot loop and its timings.

Why the loop looks like it does (DESIGN §7):

- frames come from :func:`anpr_pipeline.vision.decode.iter_frames`, which decodes once with
  FFmpeg threading and converts to RGB only the frames it samples;
- a cheap static-frame gate (1/8-scale grey thumbnail difference) skips detection on frames
  that did not change (a parked camera at night costs decode time only);
- the detector gets frames in batches (the neural detectors batch on the device; the
  classical one downscales internally); crops are cut from the full-resolution frame;
- crop JPEG encoding and uploads run in background threads (:class:`ImageUploader`), so the
  detector loop never waits on an encoder or a bucket.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TypeVar

import numpy as np

from anpr_pipeline.vision.decode import SampledFrame
from anpr_pipeline.vision.types import Detection, PlateDetector, PlateRead, PlateReader

# Static gate: the frame's 32x32-pixel block means (every 4th pixel; one OpenCV area resize),
# compared block by block with the previous sampled frame. Means average sensor and
# compression noise away, and the *largest* block change decides, so one small car far
# away still counts as motion.
_GATE_BLOCK = 32
_GATE_STEP = 4
# Detection reuse: a detection whose box and pixels match one in the previous processed
# frame (a sign, a parked car) keeps that detection's crop and read instead of a new one.
_REUSE_IOU = 0.9
_REUSE_MAX_DIFF = 3.0  # mean abs grey difference of 1/4-scale crops (0..255)


@dataclass(frozen=True)
class FrameRecord:
    """One sampled frame: where it is in the stream and what happened to it."""

    sample_index: int
    source_index: int
    pts_s: float
    detections: int
    skipped_static: bool


@dataclass(frozen=True)
class PlateCrop:
    """One detection in one sampled frame, with its full-resolution crop.

    ``image`` is a view into the frame (no copy): keep it only as long as needed (the
    uploader encodes it and drops it). ``reuse_of`` is ``(source_index, det_index)`` of an
    earlier detection showing the same pixels (static frame, or a static object such as a
    sign or a parked car): its crop and read stand for this one, so nothing new needs to be
    encoded, stored or read.
    """

    sample_index: int
    source_index: int
    pts_s: float
    det_index: int
    detection: Detection
    image: np.ndarray
    reuse_of: tuple[int, int] | None = None


@dataclass
class DetectStats:
    """Where the time of :func:`process_video_frames` went (seconds, wall clock)."""

    sampled: int = 0
    skipped_static: int = 0
    detected_frames: int = 0
    detections: int = 0
    reused_detections: int = 0
    batches: int = 0
    frames_s: float = 0.0  # waiting for the next sampled frame: decode + RGB conversion
    gate_s: float = 0.0
    detect_s: float = 0.0
    crops_s: float = 0.0  # cutting crops, reuse checks, the on_crop callback (submitting uploads)
    total_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def inference_mode():
    """``torch.inference_mode()`` around model calls (no autograd bookkeeping at all, a bit
    cheaper than ``no_grad``); a no-op context where torch is not installed."""
    try:
        import torch
    except ImportError:  # the classical detector needs no torch
        return contextlib.nullcontext()
    return torch.inference_mode()


def block_means(image: np.ndarray, block: int = _GATE_BLOCK, step: int = 1) -> np.ndarray:
    """Grey mean of each ``block`` x ``block`` pixel block (float32, (H/block, W/block)).

    ``step`` > 1 averages every step-th pixel of every step-th row only (a strided view:
    (block/step)^2 samples a block still average noise away, at 1/step^2 of the cost). The
    image is cut to whole blocks so OpenCV takes its fast integer-factor area path.
    """
    import cv2

    h, w = image.shape[:2]
    hb, wb = max(1, h // block), max(1, w // block)
    view = image[: hb * block : step, : wb * block : step] if h >= block and w >= block else image
    small = cv2.resize(view, (wb, hb), interpolation=cv2.INTER_AREA).astype(np.float32)
    return small.mean(axis=2) if small.ndim == 3 else small


class StaticGate:
    """Flags a sampled frame as static when no part of it changed since the previous one.

    The change of a frame is the largest change of any 32x32-pixel block's mean grey level
    (0..255) against the previous sampled frame; below ``threshold`` the frame is static.
    ``threshold`` <= 0 disables the gate. Comparing with the previous *sampled* frame means
    slow drift (light changes) never accumulates into a skipped moving car.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self._previous: np.ndarray | None = None

    def change(self, image: np.ndarray) -> float | None:
        """Largest block-mean change vs the previous frame (None for the first frame)."""
        blocks = block_means(image, _GATE_BLOCK, _GATE_STEP)
        previous, self._previous = self._previous, blocks
        if previous is None or previous.shape != blocks.shape:
            return None
        return float(np.abs(blocks - previous).max())

    def is_static(self, image: np.ndarray) -> bool:
        if self.threshold <= 0:
            return False
        change = self.change(image)
        return change is not None and change < self.threshold


def _crop_signature(crop: np.ndarray) -> np.ndarray:
    """1/4-scale grey crop (area average, so noise averages out) for reuse checks."""
    return block_means(crop, 4)


@dataclass
class _Seen:
    """A detection of the previous processed frame, for reuse checks."""

    detection: Detection
    origin: tuple[int, int]  # (source_index, det_index) whose crop/read it stands for
    signature: np.ndarray | None  # None when reuse across moving frames is off


def _match_previous(det: Detection, signature: np.ndarray, previous: list[_Seen]) -> _Seen | None:
    for seen in previous:
        if seen.signature is None or det.box.iou(seen.detection.box) < _REUSE_IOU:
            continue
        if seen.signature.shape != signature.shape:
            continue
        if float(np.abs(seen.signature - signature).mean()) < _REUSE_MAX_DIFF:
            return seen
    return None


T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead.

    Decoding (FFmpeg, GIL released) then overlaps with the detector working on the
    previous batch. Errors raised by ``items`` are re-raised here, in order; a consumer
    that stops early stops the producer (and closes ``items``) too. ``depth`` <= 0
    iterates in the caller's thread.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="anpr-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def batched(items: Iterable[SampledFrame], size: int) -> Iterator[list[SampledFrame]]:
    iterator = iter(items)
    while batch := list(islice(iterator, max(1, size))):
        yield batch


def _timed_batches(
    frames: Iterable[SampledFrame], size: int, stats: DetectStats
) -> Iterator[list[SampledFrame]]:
    """``batched`` that charges the time spent producing frames to ``stats.frames_s``."""
    iterator = batched(frames, size)
    while True:
        t0 = time.perf_counter()
        batch = next(iterator, None)
        stats.frames_s += time.perf_counter() - t0
        if batch is None:
            return
        yield batch


def process_video_frames(
    frames: Iterable[SampledFrame],
    detector: PlateDetector,
    *,
    batch_size: int = 8,
    static_threshold: float = 0.0,
    crop_padding: float = 0.08,
    reuse_static_detections: bool = True,
    prefetch_frames: int | None = None,
    on_crop: Callable[[PlateCrop], None] | None = None,
    on_frame: Callable[[SampledFrame, bool], None] | None = None,
) -> tuple[list[FrameRecord], DetectStats]:
    """Run the detector over a stream of sampled frames; return one record per frame.

    ``on_frame(frame, static)`` sees every sampled frame (e.g. to keep frame images);
    ``on_crop(crop)`` sees every detection with its full-resolution crop, in frame order
    and the detector's order within a frame. A static frame (``static_threshold`` > 0) is
    not given to the detector: the previous frame's detections are carried forward as
    reuses, so a car waiting at a light keeps its track. With ``reuse_static_detections``
    a detection whose box and pixels match the previous frame's is reported as a reuse too.
    Frames are decoded ``prefetch_frames`` ahead in a background thread (None: one batch
    ahead; 0: no thread), so decoding overlaps detection.
    Decode errors from ``frames`` propagate.
    """
    stats = DetectStats()
    gate = StaticGate(static_threshold)
    records: list[FrameRecord] = []
    previous: list[_Seen] = []
    t_start = time.perf_counter()
    depth = batch_size if prefetch_frames is None else prefetch_frames
    for batch in _timed_batches(prefetch(frames, depth), batch_size, stats):
        t0 = time.perf_counter()
        static_flags = [gate.is_static(frame.image) for frame in batch]
        moving = [frame for frame, static in zip(batch, static_flags, strict=True) if not static]
        stats.gate_s += time.perf_counter() - t0
        if on_frame is not None:
            for frame, static in zip(batch, static_flags, strict=True):
                on_frame(frame, static)
        detected: dict[int, list[Detection]] = {}
        if moving:
            t0 = time.perf_counter()
            with inference_mode():
                results = detector.detect([frame.image for frame in moving])
            stats.detect_s += time.perf_counter() - t0
            stats.batches += 1
            detected = {frame.index: dets for frame, dets in zip(moving, results, strict=True)}
        t0 = time.perf_counter()
        for frame, static in zip(batch, static_flags, strict=True):
            if static:
                current = previous  # nothing moved: the same plates, the same crops and reads
                crops = [
                    PlateCrop(
                        frame.index,
                        frame.source_index,
                        frame.pts_s,
                        n,
                        seen.detection,
                        seen.detection.box.crop(frame.image, pad=crop_padding),
                        reuse_of=seen.origin,
                    )
                    for n, seen in enumerate(previous)
                ]
            else:
                current, crops = [], []
                for n, det in enumerate(detected[frame.index]):
                    image = det.box.crop(frame.image, pad=crop_padding)
                    origin: tuple[int, int] | None = None
                    signature: np.ndarray | None = None
                    if reuse_static_detections:
                        signature = _crop_signature(image)
                        seen = _match_previous(det, signature, previous)
                        origin = seen.origin if seen is not None else None
                    # Kept either way: a static frame next carries these detections forward.
                    current.append(_Seen(det, origin or (frame.source_index, n), signature))
                    crops.append(
                        PlateCrop(frame.index, frame.source_index, frame.pts_s, n, det, image, origin)
                    )
            previous = current
            stats.reused_detections += sum(1 for c in crops if c.reuse_of is not None)
            stats.detections += len(crops)
            if on_crop is not None:
                for crop in crops:
                    on_crop(crop)
            records.append(FrameRecord(frame.index, frame.source_index, frame.pts_s, len(crops), static))
        stats.crops_s += time.perf_counter() - t0
        stats.sampled += len(batch)
        stats.skipped_static += len(batch) - len(moving)
        stats.detected_frames += len(moving)
    stats.total_s = time.perf_counter() - t_start
    return records, stats


def detection_row(crop: PlateCrop, crop_key: str, captured_at: datetime | None = None) -> dict:
    """One row of the detections table (the ``frames_and_detections`` asset, ``anpr bench``,
    ``anpr read``): where the detection is, in which sampled frame (and, for a video with a
    known start, at what time), and the key of the crop its read comes from."""
    box = crop.detection.box
    when = {} if captured_at is None else {"captured_at": captured_at}
    return {
        "sample_index": crop.sample_index,
        "det_index": crop.det_index,
        "pts_s": crop.pts_s,
        **when,
        "x": box.x,
        "y": box.y,
        "w": box.w,
        "h": box.h,
        "score": float(crop.detection.score),
        "crop_key": crop_key,
    }


def read_crops(
    keys: Sequence[str],
    load: Callable[[str], np.ndarray],
    reader: PlateReader,
    batch_size: int = 32,
) -> list[PlateRead]:
    """One read per key, in order; each distinct key is loaded and read once, in reader
    batches (reused detections share their original's crop key)."""
    distinct = list(dict.fromkeys(keys))
    by_key: dict[str, PlateRead] = {}
    size = max(1, batch_size)  # one size for step and slice: 0 would slice empty chunks
    for start in range(0, len(distinct), size):
        chunk = distinct[start : start + size]
        crops = [load(key) for key in chunk]
        with inference_mode():
            by_key.update(zip(chunk, reader.read(crops), strict=True))
    return [by_key[key] for key in keys]


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image (Pillow; releases the GIL while encoding)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def rgb_from_jpeg(data: bytes) -> np.ndarray:
    """The RGB image in JPEG (or any Pillow-readable) bytes: how stored crops are read back."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def make_image_uploader(store, max_workers: int = 2, quality: int = 90):
    """An :class:`~anpr_pipeline.resources.object_store.AsyncUploader` that also encodes.

    ``submit_image(key, rgb)`` hands the raw crop to a worker thread, which JPEG-encodes and
    uploads it, so neither encoding nor I/O sits on the detector loop. Back-pressure and
    error handling are AsyncUploader's (at most ``max_pending`` in flight; first error
    raised on exit). Imported lazily: the uploader lives in resources/ (boto3, Dagster).
    """
    from anpr_pipeline.resources.object_store import AsyncUploader

    class ImageUploader(AsyncUploader):
        def __init__(self) -> None:
            super().__init__(store, max_workers=max_workers)
            self.encode_s = 0.0

        def submit_image(self, key: str, image: np.ndarray, content_type: str = "image/jpeg"):
            # A crop is a view into its frame: queued as it is, it would keep the whole frame
            # in memory until encoded (tens of frames at 4K-8K with a slow bucket).
            image = image.copy()
            self._slots.acquire()
            try:
                future = self._pool.submit(self._encode_upload, key, image, content_type)
            except BaseException:
                self._slots.release()
                raise
            self._futures.append(future)
            return future

        def _encode_upload(self, key: str, image: np.ndarray, content_type: str) -> None:
            try:
                t0 = time.perf_counter()
                data = jpeg_bytes(image, quality)
                with self._lock:
                    self.encode_s += time.perf_counter() - t0
            except BaseException:
                self._slots.release()
                raise
            self._upload(key, data, content_type)  # releases the slot

    return ImageUploader()


@dataclass
class ClipRun:
    """One clip through :func:`detect_and_read`."""

    records: list[FrameRecord]
    stats: DetectStats
    detections: list[dict]  # one :func:`detection_row` per detection, in frame order
    reads: list[PlateRead]  # the read of each detection (reused ones share their original's)
    upload_wait_s: float  # waiting for the last crop uploads after detection
    crop_encode_s: float  # CPU seconds the uploader spent JPEG-encoding crops
    detected_at: tuple[float, float]  # (perf_counter, process_time) when detection ended


def detect_and_read(
    frames: Iterable[SampledFrame],
    detector: PlateDetector,
    reader: PlateReader,
    store,
    *,
    crop_prefix: str,
    detector_batch: int = 8,
    reader_batch: int = 32,
    static_threshold: float = 0.0,
    crop_padding: float = 0.08,
    reuse_static_detections: bool = True,
    prefetch_frames: int | None = None,
) -> ClipRun:
    """The per-video code outside Dagster (``anpr bench``, ``anpr read``): detection, with
    each new crop uploaded as JPEG to ``store`` under ``crop_prefix``, then the crops read
    back from ``store`` and read, as the ``plate_reads`` asset reads an upload's."""
    rows: list[dict] = []

    def on_crop(crop: PlateCrop) -> None:
        source_index, det_index = crop.reuse_of or (crop.source_index, crop.det_index)
        key = f"{crop_prefix}{source_index:06d}_{det_index}.jpg"
        if crop.reuse_of is None:
            uploader.submit_image(key, crop.image)
        rows.append(detection_row(crop, key))

    with make_image_uploader(store) as uploader:
        records, stats = process_video_frames(
            frames,
            detector,
            batch_size=detector_batch,
            static_threshold=static_threshold,
            crop_padding=crop_padding,
            reuse_static_detections=reuse_static_detections,
            prefetch_frames=prefetch_frames,
            on_crop=on_crop,
        )
        t_wait = time.perf_counter()
    upload_wait_s = time.perf_counter() - t_wait
    detected_at = (time.perf_counter(), time.process_time())
    keys = [row["crop_key"] for row in rows]
    reads = read_crops(keys, lambda key: rgb_from_jpeg(store.get_bytes(key)), reader, reader_batch)
    return ClipRun(records, stats, rows, reads, upload_wait_s, uploader.encode_s, detected_at)
