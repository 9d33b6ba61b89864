"""Video decoding on small videos generated here with PyAV (no shared data needed)."""

from __future__ import annotations

import math
import os
import random
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from anpr_pipeline.vision.decode import (
    DecodeStats,
    SampledFrame,
    VideoDecodeError,
    VideoInfo,
    iter_frames,
    probe,
)

W, H = 64, 48


def make_video(
    path: Path,
    pts_ms: list[int] | None = None,
    frames: int = 20,
    fps: int = 10,
    noise: bool = False,
    options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
) -> Path:
    """h264 video of solid-grey frames (frame i has value 10*i) or random noise.

    pts_ms given: frames at those millisecond timestamps (variable frame rate); else
    ``frames`` frames at ``fps``. ``codec_options``: libx264's (e.g. ``{"g": "10"}``).
    """
    rng = np.random.default_rng(0)
    times = pts_ms if pts_ms is not None else [i * 1000 // fps for i in range(frames)]
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=fps, options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            if noise:
                image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            else:
                image = np.full((H, W, 3), (10 * i) % 250, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4": make_video(d / "cfr.mp4"),
        "mkv": make_video(d / "cfr.mkv"),
        "vfr": make_video(d / "vfr.mkv", pts_ms=[0, 100, 150, 700, 800, 1500]),
        "offset": make_video(d / "offset.mp4", pts_ms=[5000 + 100 * i for i in range(10)]),
        "noise_mkv": make_video(d / "noise.mkv", noise=True),
        "noise_mp4": make_video(d / "noise.mp4", noise=True),
        "noise_faststart": make_video(d / "noise_fs.mp4", noise=True, options={"movflags": "+faststart"}),
    }


def test_probe_reports_metadata(videos: dict[str, Path]) -> None:
    info = probe(videos["mp4"])
    assert isinstance(info, VideoInfo)
    assert (info.codec, info.width, info.height) == ("h264", W, H)
    assert "mp4" in info.container
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.01)
    assert info.frame_count == 20
    assert probe(videos["mkv"]).container.startswith("matroska")


def test_every_frame_with_true_timestamps(videos: dict[str, Path]) -> None:
    for key in ("mp4", "mkv"):
        frames = list(iter_frames(videos[key]))
        assert [f.index for f in frames] == list(range(20))
        assert [f.source_index for f in frames] == list(range(20))
        assert [f.pts_s for f in frames] == pytest.approx([i / 10 for i in range(20)])
        for i, f in enumerate(frames):
            assert isinstance(f, SampledFrame)
            assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
            # Solid grey 10*i survives h264 within a few levels.
            assert abs(float(f.image.mean()) - 10 * i) < 4


@pytest.mark.parametrize(
    ("sample_fps", "expected_pts", "expected_sources"),
    [
        (5.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8], [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]),
        # Ticks at 1/3 s: the nearest frame (0.3 is half a frame or less before 0.333).
        (3.0, [0.0, 0.3, 0.7, 1.0, 1.3, 1.7], [0, 3, 7, 10, 13, 17]),
        (1.0, [0.0, 1.0], [0, 10]),
        (100.0, [i / 10 for i in range(20)], list(range(20))),  # faster than the video: all
    ],
)
def test_sampling_by_pts(
    videos: dict[str, Path], sample_fps: float, expected_pts: list[float], expected_sources: list[int]
) -> None:
    frames = list(iter_frames(videos["mkv"], sample_fps=sample_fps))
    assert [f.pts_s for f in frames] == pytest.approx(expected_pts)
    assert [f.source_index for f in frames] == expected_sources
    assert [f.index for f in frames] == list(range(len(expected_pts)))


def test_variable_frame_rate(videos: dict[str, Path]) -> None:
    frames = list(iter_frames(videos["vfr"]))
    assert [f.pts_s for f in frames] == pytest.approx([0.0, 0.1, 0.15, 0.7, 0.8, 1.5])
    # 2 fps ticks at 0, 0.5, 1.0, 1.5: first frame at most half a frame (0.05 s) before
    # each; the gap 0.15 -> 0.7 and 0.8 -> 1.5 each spans ticks, yielding one frame.
    sampled = list(iter_frames(videos["vfr"], sample_fps=2.0))
    assert [f.pts_s for f in sampled] == pytest.approx([0.0, 0.7, 1.5])
    assert [f.source_index for f in sampled] == [0, 3, 5]
    assert probe(videos["vfr"]).duration_s == pytest.approx(1.6, abs=0.05)


def test_mkv_camera_at_sample_fps_keeps_every_frame(tmp_path: Path) -> None:
    # Matroska stores pts in ms: a 3 fps frame at 0.333 s is just before the 1/3 s tick.
    clip = make_video(tmp_path / "3fps.mkv", frames=30, fps=3)
    frames = list(iter_frames(clip, sample_fps=3.0))
    assert [f.source_index for f in frames] == list(range(30))


def test_jittered_camera_at_sample_fps_keeps_every_frame(tmp_path: Path) -> None:
    # Camera timestamp jitter of a few ms around a 5 fps grid, sampled at 5 fps.
    jitter = [0, -4, 3, -2, -4, 1, -3, 4, -1, -4] * 3
    clip = make_video(tmp_path / "jitter.mkv", pts_ms=[200 * i + 4 + j for i, j in enumerate(jitter)], fps=5)
    frames = list(iter_frames(clip, sample_fps=5.0))
    assert [f.source_index for f in frames] == list(range(30))
    # Twice the camera rate still yields each frame once.
    assert [f.source_index for f in iter_frames(clip, sample_fps=10.0)] == list(range(30))


def test_timestamps_relative_to_stream_start(videos: dict[str, Path]) -> None:
    frames = list(iter_frames(videos["offset"]))
    assert [f.pts_s for f in frames] == pytest.approx([i / 10 for i in range(10)])
    assert probe(videos["offset"]).duration_s == pytest.approx(1.0, abs=0.01)


def test_downscale_and_threads(videos: dict[str, Path]) -> None:
    small = next(iter_frames(videos["mp4"], max_width=32))
    assert small.image.shape == (24, 32, 3)
    full = next(iter_frames(videos["mp4"], max_width=None))
    assert full.image.shape == (H, W, 3)
    wider = next(iter_frames(videos["mp4"], max_width=1000))  # never upscales
    assert wider.image.shape == (H, W, 3)
    threaded = [f.pts_s for f in iter_frames(videos["mp4"], threads=2, sample_fps=5)]
    assert threaded == pytest.approx([f.pts_s for f in iter_frames(videos["mp4"], sample_fps=5)])


def test_invalid_sample_fps(videos: dict[str, Path]) -> None:
    with pytest.raises(ValueError):
        next(iter_frames(videos["mp4"], sample_fps=0))


def _reason(path: Path) -> tuple[str, str]:
    """(probe's reason, iter_frames' reason); both must raise VideoDecodeError."""
    with pytest.raises(VideoDecodeError) as probed:
        probe(path)
    with pytest.raises(VideoDecodeError) as decoded:
        list(iter_frames(path))
    for err in (probed.value, decoded.value):
        assert err.path == str(path)
        assert str(err) == f"{path}: {err.reason}"
    return probed.value.reason, decoded.value.reason


def test_errors_missing_empty_garbage(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.mp4") == ("file not found", "file not found")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _reason(tmp_path / "empty.mp4") == ("empty file", "empty file")
    (tmp_path / "garbage.mp4").write_bytes(random.Random(0).randbytes(5000))
    assert all(r.startswith("not a video container") for r in _reason(tmp_path / "garbage.mp4"))
    (tmp_path / "notes.mkv").write_text("not a video\n" * 50)
    assert all(r.startswith("not a video container") for r in _reason(tmp_path / "notes.mkv"))


def test_error_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio_only.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp2", rate=44100)
        stream.layout = "mono"
        samples = np.zeros((1, 1152), dtype=np.int16)
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    reasons = _reason(path)
    assert all(r.startswith("no video stream") for r in reasons), reasons


@pytest.mark.parametrize("key", ["noise_mkv", "noise_faststart"])
def test_truncated_at_half_is_reported(videos: dict[str, Path], tmp_path: Path, key: str) -> None:
    data = videos[key].read_bytes()
    cut = tmp_path / f"half{videos[key].suffix}"
    cut.write_bytes(data[: len(data) // 2])
    probed, decoded = _reason(cut)
    assert probed.startswith("truncated: decoded ") and probed.endswith(" s of 2.0 s declared"), probed
    assert decoded.startswith("truncated: decoded "), decoded
    # The frames before the cut are still delivered before the error.
    got = []
    with pytest.raises(VideoDecodeError):
        for frame in iter_frames(cut):
            got.append(frame.pts_s)
    assert 3 <= len(got) < 20


def test_truncated_mp4_without_index(videos: dict[str, Path], tmp_path: Path) -> None:
    # A plain mp4 keeps its index (moov) at the end: cut in half it is no container at all.
    data = videos["noise_mp4"].read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert all(r.startswith("not a video container") for r in _reason(cut))


def test_wrong_extension_still_decodes(videos: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "actually_mkv.mp4"
    renamed.write_bytes(videos["mkv"].read_bytes())
    assert len(list(iter_frames(renamed))) == 20
    assert probe(renamed).container.startswith("matroska")


def _fuzz(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.choice(["truncate", "flip", "scramble", "random", "drop_head"])
    if kind == "truncate":
        return bytes(b[: rng.randrange(1, len(b))])
    if kind == "flip":
        for _ in range(rng.randint(1, 10)):
            j = rng.randrange(len(b))
            b[j] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "scramble":
        for _ in range(rng.randint(10, 300)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == "random":
        return os.urandom(rng.randint(1, 20000))
    return bytes(b[rng.randrange(1, len(b)) :])


def test_fuzzed_files_decode_or_fail_cleanly(videos: dict[str, Path], tmp_path: Path) -> None:
    rng = random.Random(1234)
    sources = [videos[k].read_bytes() for k in ("noise_mkv", "noise_faststart", "mp4", "vfr")]
    outcomes: dict[str, int] = {}
    for i in range(30):
        path = tmp_path / f"fuzz{i}{rng.choice(['.mp4', '.mkv', '.avi', '.mov', '.bin'])}"
        path.write_bytes(_fuzz(rng.choice(sources), rng))
        started = time.monotonic()
        for action in (
            lambda p=path: probe(p, timeout_s=10),
            lambda p=path: list(iter_frames(p, stall_timeout_s=10)),
        ):
            try:
                action()
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except VideoDecodeError as err:  # anything else fails the test
                assert err.path == str(path) and err.reason
                outcomes[err.reason.split(":")[0][:20]] = outcomes.get(err.reason.split(":")[0][:20], 0) + 1
        # A hang guard, not a benchmark: these files are a few kB.
        assert time.monotonic() - started < 20, f"{path.name} took too long"
    assert sum(outcomes.values()) == 60


def _overwrite(data: bytes, start: int, end: int, seed: int = 0) -> bytes:
    junk = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    return data[:start] + junk + data[end:]


def test_a_few_corrupt_packets_are_skipped_and_counted(tmp_path: Path) -> None:
    # ~1.8 kB per packet: 2 kB of junk mid-file damages one or two access units.
    data = make_video(tmp_path / "noise100.mp4", frames=100, noise=True).read_bytes()
    for seed in range(3):
        damaged = tmp_path / f"damaged{seed}.mp4"
        middle = len(data) // 2 + 5000 * seed
        damaged.write_bytes(_overwrite(data, middle, middle + 2000, seed))
        assert probe(damaged).frame_count == 100  # the probe does not decode that far
        stats = DecodeStats()
        frames = list(iter_frames(damaged, stats=stats))
        assert stats.packets == 100 and 1 <= stats.bad_packets <= 3, stats
        assert len(frames) >= 100 - stats.bad_packets
        assert [f.pts_s for f in frames] == sorted(f.pts_s for f in frames)
        sampled = list(iter_frames(damaged, sample_fps=5.0, threads=2))
        assert len(sampled) >= 19


def test_a_damaged_first_packet_is_skipped_by_the_probe_too(tmp_path: Path) -> None:
    # The probe decodes until the first frame; a damaged opening keyframe must cost that
    # group of pictures (as in iter_frames: keyframes every second, like a camera's), not
    # fail the whole video as corrupt.
    source = make_video(tmp_path / "noise100.mp4", frames=100, noise=True, codec_options={"g": "10"})
    with av.open(str(source)) as container:
        first = next(p for p in container.demux(container.streams.video[0]) if p.size)
        start, size = first.pos, first.size
    data = source.read_bytes()
    for seed in range(3):
        damaged = tmp_path / f"first{seed}.mp4"
        damaged.write_bytes(_overwrite(data, start + 8, start + size - 8, seed))
        assert probe(damaged).frame_count == 100
        stats = DecodeStats()
        assert len(list(iter_frames(damaged, stats=stats))) >= 90 and stats.bad_packets >= 1


def test_mostly_garbage_fails_clearly(tmp_path: Path) -> None:
    data = make_video(tmp_path / "noise100.mp4", frames=100, noise=True).read_bytes()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(_overwrite(data, len(data) // 10, len(data) * 9 // 10))
    stats = DecodeStats()
    with pytest.raises(VideoDecodeError) as err:
        list(iter_frames(garbage, stats=stats))
    assert err.value.reason.startswith(
        f"corrupt data: {stats.bad_packets} of {stats.packets} packets undecodable"
    )
    assert stats.bad_packets > 3 and stats.packets < 50  # fails early, not at the end


def _add_audio(path: Path, video_s: float, audio_s: float) -> Path:
    """MKV with ``video_s`` of 10 fps video and ``audio_s`` of silent mp2 audio."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        audio = container.add_stream("mp2", rate=44100)
        audio.layout = "mono"
        for i in range(round(video_s * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), (10 * i) % 250, np.uint8), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        for i in range(math.ceil(audio_s * 44100 / 1152)):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1152
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return path


def test_mkv_audio_longer_than_video_is_not_truncated(tmp_path: Path) -> None:
    clip = _add_audio(tmp_path / "audio_runs_on.mkv", video_s=2.0, audio_s=3.5)
    with av.open(str(clip)) as container:  # the file as the bug needs it
        assert container.streams.video[0].duration is None and container.duration / av.time_base > 3.4
    info = probe(clip)
    assert info.duration_s == pytest.approx(2.0, abs=0.01)
    assert len(list(iter_frames(clip))) == 20
    # The video track's own DURATION tag still exposes a truncated file with audio.
    data = _add_audio(tmp_path / "long.mkv", video_s=6.0, audio_s=8.0).read_bytes()
    cut = tmp_path / "long_half.mkv"
    cut.write_bytes(data[: len(data) // 2])
    probed, decoded = _reason(cut)
    assert probed.startswith("truncated: decoded ") and probed.endswith(" s of 6.0 s declared"), probed
    assert decoded.startswith("truncated: decoded "), decoded


@pytest.mark.parametrize(
    ("degrees", "corner"),
    # A counter-clockwise quarter turn moves the stored top-left corner to the bottom left.
    [(90, "bottom_left"), (-90, "top_right"), (180, "bottom_right"), (0, "top_left")],
)
def test_display_rotation_is_applied(tmp_path: Path, degrees: int, corner: str) -> None:
    path = tmp_path / f"rot{degrees}.mp4"
    stored = np.zeros((32, 64, 3), np.uint8)  # landscape, marker in the top-left corner
    stored[:16, :32] = 255
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        container.mux(stream.encode())
    upright = (64, 32) if degrees % 180 else (32, 64)  # (height, width)
    info = probe(path)
    assert (info.height, info.width) == upright
    for max_width, scale in ((None, 1), (upright[1] // 2, 2)):  # scaling keeps the upright shape
        image = next(iter_frames(path, max_width=max_width)).image
        assert image.shape == (upright[0] // scale, upright[1] // scale, 3) and image.flags.c_contiguous
        h, w = image.shape[0] // 2, image.shape[1] // 2
        quadrants = {
            "top_left": image[:h, :w],
            "top_right": image[:h, w:],
            "bottom_left": image[h:, :w],
            "bottom_right": image[h:, w:],
        }
        brightest = max(quadrants, key=lambda q: float(quadrants[q].mean()))
        assert brightest == corner and quadrants[corner].mean() > 200
