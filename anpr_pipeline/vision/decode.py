"""Video decoding with PyAV: probe, sampled frame iteration, specific errors.

Decoding is the CPU floor of the pipeline, so each video is decoded once, with FFmpeg's
own threading (``thread_type = "AUTO"``), and frames are converted to RGB only when they are
sampled. Timestamps are the stream's real ``pts x time_base`` (variable frame rate safe),
relative to the stream start.

Every failure - missing, empty, not a container, no video stream, corrupt packets,
truncated, a decoder stall - raises :class:`VideoDecodeError` naming the file and what is
wrong. Nothing else escapes: FFmpeg / OS errors are wrapped, so a bad upload fails only its
own partition with a readable message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Refuse absurd frame sizes a fuzzed header can declare before FFmpeg tries to allocate them.
_MAX_PIXELS = 16384 * 16384
# Truncation = decoded content ends this far before the declared duration: at least
# 0.5 s, 10 % of the duration for long files (containers round durations, audio may run on).
_TRUNCATION_MIN_S = 0.5
_TRUNCATION_FRACTION = 0.10


class VideoDecodeError(RuntimeError):
    """A video that cannot be (fully) decoded. ``str(e) == f"{path}: {reason}"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
    codec: str  # e.g. "h264"
    width: int
    height: int
    fps: float  # average frame rate (0.0 if unknown)
    duration_s: float
    frame_count: int | None  # video packets counted by probe's scan (None without a scan)


@dataclass(frozen=True)
class SampledFrame:
    index: int  # sample number 0, 1, 2, ...
    source_index: int  # decoded frame number in the stream
    pts_s: float  # presentation time in seconds, relative to the stream start
    image: np.ndarray  # RGB uint8 (H, W, 3)


def frame_to_rgb(frame: av.VideoFrame, max_width: int | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a decoded frame; scaled down to ``max_width`` if wider.

    Conversion and scaling happen in one swscale pass inside FFmpeg (no intermediate
    full-size RGB array).
    """
    if max_width is not None and 0 < max_width < frame.width:
        height = max(1, round(frame.height * max_width / frame.width))
        return frame.to_ndarray(width=max_width, height=height, format="rgb24", interpolation="AREA")
    return frame.to_ndarray(format="rgb24")


def _open(path: Path, timeout_s: float) -> av.container.InputContainer:
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoDecodeError(path, f"cannot stat file: {exc}") from exc
    if size == 0:
        raise VideoDecodeError(path, "empty file")
    try:
        # timeout: FFmpeg's interrupt callback aborts a read that blocks this long.
        return av.open(str(path), mode="r", timeout=(timeout_s, timeout_s), metadata_errors="ignore")
    except Exception as exc:  # any FFmpeg/OS error: the bytes are not a container we can read
        raise VideoDecodeError(path, f"not a video container: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    # FFmpeg errors' str() repeats errno and file name; the message alone reads better.
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for this codec id
        raise VideoDecodeError(path, "unsupported video codec (no decoder)")
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    if width * height > _MAX_PIXELS:
        raise VideoDecodeError(path, f"implausible frame size {width}x{height}")
    return stream


def _declared_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    """Seconds the file claims (stream duration, else container duration); 0.0 if unknown.

    A header frame count (AVI's dwTotalFrames survives truncation while FFmpeg re-derives the
    duration from what is left) counts as a claim too.
    """
    if stream.duration and stream.time_base:
        value = float(stream.duration * stream.time_base)
    elif container.duration:
        value = container.duration / av.time_base
    else:
        value = 0.0
    fps = _fps(stream)
    if stream.frames and fps > 0:
        value = max(value, stream.frames / fps)
    return value if math.isfinite(value) and value > 0 else 0.0


def _fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if 0 < value < 1000:
                return value
    return 0.0


def _check_truncated(path: Path, decoded_s: float, declared_s: float, start_s: float = 0.0) -> None:
    """Raise if the decoded span ends far before the declared duration.

    Some containers (Matroska) declare the *end timestamp* rather than the span, so a stream
    starting at t=5 s "lasts" 6 s; the end counted from 0 is accepted too.
    """
    decoded_s = max(decoded_s, decoded_s + start_s)
    tolerance = max(_TRUNCATION_MIN_S, _TRUNCATION_FRACTION * declared_s)
    if declared_s > 0 and decoded_s < declared_s - tolerance:
        raise VideoDecodeError(path, f"truncated: decoded {decoded_s:.1f} s of {declared_s:.1f} s declared")


class _Clock:
    """Timestamps relative to the stream start; falls back to frame counting without pts."""

    def __init__(self, stream: av.video.stream.VideoStream, fps: float) -> None:
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        self.start: int | None = stream.start_time
        self.step = 1.0 / fps if fps > 0 else 0.0
        self.last: float | None = None

    @property
    def start_s(self) -> float:
        """The stream start in seconds on the container's clock (0.0 if unknown)."""
        return float(self.start * self.time_base) if self.start is not None else 0.0

    def seconds(self, pts: int | None) -> float:
        if pts is None:
            t = 0.0 if self.last is None else self.last + self.step
        else:
            if self.start is None:
                self.start = pts
            t = max(0.0, float((pts - self.start) * self.time_base))
        self.last = t
        return t


def probe(path: str | Path, timeout_s: float = 60.0) -> VideoInfo:
    """Metadata of a video, verified: one frame must decode and the packets must cover the
    declared duration. Demuxing all packets is cheap (no decoding) and catches truncation
    and unreadable containers before any expensive work. Raises VideoDecodeError.
    """
    try:
        return _probe(Path(path), timeout_s)
    except VideoDecodeError:
        raise
    except Exception as exc:  # safety net: nothing but VideoDecodeError leaves this module
        raise VideoDecodeError(path, f"unreadable video: {type(exc).__name__}: {_describe(exc)}") from exc


def _probe(p: Path, timeout_s: float) -> VideoInfo:
    deadline = time.monotonic() + timeout_s
    with _open(p, timeout_s) as container:
        stream = _video_stream(container, p)
        fps = _fps(stream)
        clock = _Clock(stream, fps)
        width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
        first_frame = None
        packets, end_s = 0, 0.0
        try:
            for packet in container.demux(stream):
                if time.monotonic() > deadline:
                    raise VideoDecodeError(p, f"probe took longer than {timeout_s:.0f} s")
                if first_frame is None:
                    frames = packet.decode()
                    first_frame = frames[0] if frames else None
                if packet.size == 0:
                    continue
                packets += 1
                pts = packet.pts if packet.pts is not None else packet.dts
                duration = float(packet.duration * clock.time_base) if packet.duration else clock.step
                end_s = max(end_s, clock.seconds(pts) + duration)
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(
                p, f"corrupt data at packet {packets} (near t={end_s:.2f} s): {_describe(exc)}"
            ) from exc
        if first_frame is None:
            raise VideoDecodeError(p, f"no decodable video frames ({packets} packets)")
        declared = _declared_duration(container, stream)
        _check_truncated(p, end_s, declared, clock.start_s)
        if fps == 0.0 and end_s > 0:
            fps = packets / end_s
        return VideoInfo(
            path=str(p),
            container=container.format.name,
            codec=stream.codec_context.name,
            width=width or first_frame.width,
            height=height or first_frame.height,
            fps=fps,
            duration_s=end_s or declared,  # what the packets span; the header may round or lie
            frame_count=packets,
        )


def iter_frames(
    path: str | Path,
    sample_fps: float | None = None,
    threads: int = 0,
    max_width: int | None = None,
    *,
    stall_timeout_s: float = 60.0,
    check_truncation: bool = True,
) -> Iterator[SampledFrame]:
    """Decode ``path`` once and yield sampled frames in presentation order.

    sample_fps=None yields every frame; otherwise the first frame at/after each
    1/sample_fps tick (by pts, so variable frame rate is sampled correctly; a gap spanning
    several ticks yields one frame). threads=0 lets FFmpeg choose. max_width scales frames
    down (aspect kept); None keeps full resolution. stall_timeout_s bounds the decoder work
    between two yielded frames (the consumer's time does not count). Raises VideoDecodeError
    (also after the last frame if the decoded span is far shorter than declared).
    """
    if sample_fps is not None and not sample_fps > 0:
        raise ValueError(f"sample_fps must be > 0 or None, got {sample_fps}")
    frames = _iter_frames(Path(path), sample_fps, threads, max_width, stall_timeout_s, check_truncation)
    try:
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except VideoDecodeError:
                raise
            except Exception as exc:  # safety net: nothing but VideoDecodeError leaves this module
                raise VideoDecodeError(
                    path, f"unreadable video: {type(exc).__name__}: {_describe(exc)}"
                ) from exc
            yield frame
    finally:
        frames.close()  # a consumer that stops early closes the container now, not at GC


def _iter_frames(
    p: Path,
    sample_fps: float | None,
    threads: int,
    max_width: int | None,
    stall_timeout_s: float,
    check_truncation: bool,
) -> Iterator[SampledFrame]:
    with _open(p, stall_timeout_s) as container:
        stream = _video_stream(container, p)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = max(0, int(threads))
        fps = _fps(stream)
        clock = _Clock(stream, fps)
        decoded = samples = 0
        next_tick, t, end_s = 0.0, 0.0, 0.0
        deadline = time.monotonic() + stall_timeout_s
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    break
                frames = packet.decode()
            except Exception as exc:  # FFmpeg/OS error while reading or decoding
                raise VideoDecodeError(
                    p, f"corrupt data at frame {decoded} (near t={t:.2f} s): {_describe(exc)}"
                ) from exc
            for frame in frames:
                t = clock.seconds(frame.pts)
                frame_duration = float(frame.duration * clock.time_base) if frame.duration else clock.step
                end_s = max(end_s, t + frame_duration)
                decoded += 1
                if sample_fps is not None and t + 1e-6 < next_tick:
                    continue
                if sample_fps is not None:
                    next_tick = (math.floor(t * sample_fps + 1e-6) + 1) / sample_fps
                try:
                    image = frame_to_rgb(frame, max_width)
                except Exception as exc:
                    raise VideoDecodeError(
                        p, f"cannot convert frame {decoded - 1}: {_describe(exc)}"
                    ) from exc
                yield SampledFrame(index=samples, source_index=decoded - 1, pts_s=t, image=image)
                samples += 1
                deadline = time.monotonic() + stall_timeout_s
            if time.monotonic() > deadline:
                raise VideoDecodeError(
                    p, f"decoder stalled: no frame for {stall_timeout_s:.0f} s (after frame {decoded})"
                )
        if decoded == 0:
            raise VideoDecodeError(p, "no decodable video frames")
        if check_truncation:
            _check_truncated(p, end_s, _declared_duration(container, stream), clock.start_s)
