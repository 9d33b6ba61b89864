"""Video decoding with PyAV: probe, sampled frame iteration, specific errors.

Decoding is the CPU floor of the pipeline, so each video is decoded once, with FFmpeg's
own threading (``thread_type = "AUTO"``), and frames are converted to RGB only when they are
sampled. Timestamps are the stream's real ``pts x time_base`` (variable frame rate safe),
relative to the stream start.

Frames are rotated upright by the stream's display matrix (phone uploads, cameras mounted
sideways), before any scaling; probe reports the upright size.

Every failure - missing, empty, not a container, no video stream, corrupt packets,
truncated, a decoder stall - raises :class:`VideoDecodeError` naming the file and what is
wrong. Nothing else escapes: FFmpeg / OS errors are wrapped, so a bad upload fails only its
own partition with a readable message. The one tolerated fault is a few packets the decoder
rejects as invalid data (a damaged access unit mid-file): they are skipped and counted in
:class:`DecodeStats`, and only more than ``max(3, 1 %)`` of the packets read fail the video.
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
# A damaged access unit costs its own frame(s) and the decoder resynchronises after it, so a
# few bad packets are skipped; more than max(_MIN, _FRACTION x packets read) is a corrupt file.
# Counted against the packets read so far, so a file of garbage fails early, not at its end.
_BAD_PACKETS_MIN = 3
_BAD_PACKETS_FRACTION = 0.01


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


@dataclass
class DecodeStats:
    """Counters filled in by :func:`iter_frames` while it decodes; read them after the loop."""

    packets: int = 0  # video packets read (the end-of-stream flush excluded)
    bad_packets: int = 0  # packets the decoder rejected as invalid data, skipped


@dataclass(frozen=True)
class SampledFrame:
    index: int  # sample number 0, 1, 2, ...
    source_index: int  # decoded frame number in the stream
    pts_s: float  # presentation time in seconds, relative to the stream start
    image: np.ndarray  # RGB uint8 (H, W, 3)


def frame_to_rgb(frame: av.VideoFrame, max_width: int | None = None) -> np.ndarray:
    """Upright RGB uint8 (H, W, 3) from a decoded frame; scaled down to ``max_width`` if wider.

    Conversion and scaling happen in one swscale pass inside FFmpeg (no intermediate
    full-size RGB array). ``max_width`` applies to the upright image: a portrait clip stored
    sideways is scaled by its displayed width.
    """
    turns = _quarter_turns(frame)
    width, height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    if max_width is not None and 0 < max_width < width:
        height = max(1, round(height * max_width / width))
        width = max_width
        stored = (height, width) if turns % 2 else (width, height)  # the size before rotating
        image = frame.to_ndarray(width=stored[0], height=stored[1], format="rgb24", interpolation="AREA")
    else:
        image = frame.to_ndarray(format="rgb24")
    # np.rot90 turns counter-clockwise for k > 0, the same sense as frame.rotation.
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns (0-3) that display the frame upright.

    ``frame.rotation`` is the display matrix's counter-clockwise angle; angles other than
    multiples of 90 degrees (and mirroring) do not occur in camera or phone files and are
    rounded / ignored.
    """
    return round(frame.rotation / 90) % 4


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
    """Seconds the file claims for the video stream; 0.0 if unknown.

    The stream's own duration, else Matroska's per-track DURATION tag. The container
    duration is the longest of all streams, so it stands in only when no other audio/video
    stream could be that longest one (an MKV whose audio runs on past the video is not
    truncated). A header frame count (AVI's dwTotalFrames survives truncation while FFmpeg
    re-derives the duration from what is left) counts as a claim too.
    """
    value = _stream_duration(stream)
    if value is None and container.duration and not _other_media_streams(container, stream):
        value = container.duration / av.time_base
    value = value or 0.0
    fps = _fps(stream)
    if stream.frames and fps > 0:
        value = max(value, stream.frames / fps)
    return value if math.isfinite(value) and value > 0 else 0.0


def _stream_duration(stream: av.video.stream.VideoStream) -> float | None:
    """The stream's duration in seconds, or Matroska's DURATION tag ("HH:MM:SS.nnnnnnnnn",
    written per track because Matroska has no stream duration field); None if neither.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    # mkvmerge may suffix a language ("DURATION-eng").
    tag = next((v for k, v in stream.metadata.items() if k.upper().split("-")[0] == "DURATION"), None)
    if tag is None:
        return None
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:  # malformed: no claim
        return None


def _other_media_streams(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> bool:
    return any(s.type in ("audio", "video") and s.index != stream.index for s in container.streams)


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
        stats = DecodeStats()  # damaged packets before the first frame: the same budget as decoding
        try:
            for packet in container.demux(stream):
                if time.monotonic() > deadline:
                    raise VideoDecodeError(p, f"probe took longer than {timeout_s:.0f} s")
                if first_frame is None:
                    frames = _decode(packet, stats, p, end_s)
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
        width, height = width or first_frame.width, height or first_frame.height
        if _quarter_turns(first_frame) % 2:  # the size frames are delivered at, upright
            width, height = height, width
        return VideoInfo(
            path=str(p),
            container=container.format.name,
            codec=stream.codec_context.name,
            width=width,
            height=height,
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
    stats: DecodeStats | None = None,
) -> Iterator[SampledFrame]:
    """Decode ``path`` once and yield sampled, upright frames in presentation order.

    sample_fps=None yields every frame; otherwise one frame per 1/sample_fps tick: the first
    whose pts is at most half a source frame before the tick, i.e. the nearest one (by pts,
    so variable frame rate is sampled correctly; a gap spanning several ticks yields one
    frame). threads=0 lets FFmpeg choose. max_width scales frames down (aspect kept); None
    keeps full resolution. stall_timeout_s bounds the decoder work between two yielded frames
    (the consumer's time does not count). ``stats``, if given, counts the packets read and
    the bad packets skipped. Raises VideoDecodeError (also after the last frame if the
    decoded span is far shorter than declared).
    """
    if sample_fps is not None and not sample_fps > 0:
        raise ValueError(f"sample_fps must be > 0 or None, got {sample_fps}")
    stats = stats if stats is not None else DecodeStats()
    frames = _iter_frames(
        Path(path), sample_fps, threads, max_width, stall_timeout_s, check_truncation, stats
    )
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


class _Sampler:
    """Keeps one frame per 1/sample_fps tick (every frame if sample_fps is None).

    A frame counts for a tick from half a source frame before it: Matroska rounds pts to
    milliseconds (0.333 s for the tick at 1/3 s) and cameras jitter, both of which put frames
    just before their tick. Without that slack such a frame is skipped and the next one taken
    a whole frame late, dropping up to a third of the frames of a camera at or below
    sample_fps.
    """

    def __init__(self, sample_fps: float | None) -> None:
        self.sample_fps = sample_fps
        self.next_tick = 0.0

    def keep(self, t: float, frame_duration: float) -> bool:
        if self.sample_fps is None:
            return True
        t += max(1e-6, 0.5 * frame_duration)
        if t < self.next_tick:
            return False
        # The tick after this frame, derived from its own time: no drift with variable frame rate.
        self.next_tick = (math.floor(t * self.sample_fps + 1e-6) + 1) / self.sample_fps
        return True


def _decode(packet: av.Packet, stats: DecodeStats, p: Path, t: float) -> list[av.VideoFrame]:
    """The packet's frames; none for a packet the decoder rejects, within the bad-packet budget."""
    if packet.size:
        stats.packets += 1
    try:
        return packet.decode()
    except av.error.InvalidDataError as exc:  # a damaged access unit: skip it, the decoder resyncs
        stats.bad_packets += 1
        if stats.bad_packets > max(_BAD_PACKETS_MIN, _BAD_PACKETS_FRACTION * stats.packets):
            raise VideoDecodeError(
                p,
                f"corrupt data: {stats.bad_packets} of {stats.packets} packets undecodable "
                f"(near t={t:.2f} s): {_describe(exc)}",
            ) from exc
        return []
    except Exception as exc:  # any other FFmpeg error: not a damage the decoder recovers from
        raise VideoDecodeError(
            p, f"corrupt data at packet {stats.packets} (near t={t:.2f} s): {_describe(exc)}"
        ) from exc


def _iter_frames(
    p: Path,
    sample_fps: float | None,
    threads: int,
    max_width: int | None,
    stall_timeout_s: float,
    check_truncation: bool,
    stats: DecodeStats,
) -> Iterator[SampledFrame]:
    with _open(p, stall_timeout_s) as container:
        stream = _video_stream(container, p)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = max(0, int(threads))
        fps = _fps(stream)
        clock = _Clock(stream, fps)
        sampler = _Sampler(sample_fps)
        decoded = samples = 0
        t, end_s = 0.0, 0.0
        deadline = time.monotonic() + stall_timeout_s
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
            except Exception as exc:  # demux / I/O error: the container itself is damaged
                raise VideoDecodeError(
                    p, f"corrupt data at frame {decoded} (near t={t:.2f} s): {_describe(exc)}"
                ) from exc
            if packet is None:
                break
            for frame in _decode(packet, stats, p, t):
                t = clock.seconds(frame.pts)
                frame_duration = float(frame.duration * clock.time_base) if frame.duration else clock.step
                end_s = max(end_s, t + frame_duration)
                decoded += 1
                if not sampler.keep(t, frame_duration):
                    continue
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
