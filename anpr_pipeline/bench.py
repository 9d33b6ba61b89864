"""`anpr bench`: measured, reproducible throughput of the pipeline and of the events database.

``anpr bench [VIDEO] --json OUT`` runs one video through the same per-video code the Dagster
assets run (:mod:`anpr_pipeline.vision.video_pipeline` for decode -> gate -> detect -> crops
and crops -> reader; :mod:`anpr_pipeline.assets.events` for tracking and event rows;
:class:`EventStore` for the write) and reports per-stage throughput next to the decode-only
reference (PyAV, threaded, no conversion: the CPU floor). Without VIDEO it renders (once,
cached under ``.anpr_data/bench/``) a 1080p 15 fps 60 s synthetic traffic video whose ground
truth also gives an accuracy check, so a faster configuration cannot silently read worse.

``anpr bench db --rows N --json OUT`` creates a scratch database on a Postgres server, loads
N events through ``EventStore.replace_video_events`` (COPY), measures ingest events/s and
plate-search latency percentiles (exact and prefix), then drops the database.

Benchmarks are not tests: CI runs a tiny configuration of each (anpr_pipeline_tests/test_bench.py)
and checks the report's shape, never its timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from anpr_pipeline.cli_args import positive_float, positive_int
from anpr_pipeline.evaluation import add_text_row_flag

DEFAULT_CACHE = Path(".anpr_data") / "bench"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STARTED_AT = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
CAMERA = "cam-bench"

# --------------------------------------------------------------------------- environment


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _r(x: float, n: int = 2) -> float:
    return round(float(x), n)


def _rate(count: float, seconds: float) -> float:
    return _r(count / seconds) if seconds > 0 else 0.0


# --------------------------------------------------------------------------- the video


def synthetic_video(
    cache_dir: Path, width: int, height: int, fps: int, seconds: float, vehicles: int, seed: int
) -> tuple[Path, dict[str, Any]]:
    """The cached synthetic traffic video for these parameters (rendered on first use)."""
    from anpr_pipeline.vision.synth import make_video, read_ground_truth, write_ground_truth

    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"synth_{width}x{height}_{fps}fps_{seconds:g}s_v{vehicles}_seed{seed}"
    video, truth_path = cache_dir / f"{stem}.mp4", cache_dir / f"{stem}.json"
    if not (video.exists() and truth_path.exists()):
        tmp = cache_dir / f"{stem}.tmp-{os.getpid()}.mp4"
        truth = make_video(
            tmp, seed=seed, width=width, height=height, fps=fps, seconds=seconds, vehicles=vehicles
        )
        write_ground_truth(truth_path, truth)
        os.replace(tmp, video)  # only a complete file is ever cached
    return video, read_ground_truth(truth_path)


def decode_only(path: Path, threads: int) -> dict[str, Any]:
    """Decode every frame (PyAV, FFmpeg frame+slice threading, no pixel conversion)."""
    import av

    t0, c0 = time.perf_counter(), time.process_time()
    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = max(0, threads)
        for _ in container.decode(stream):
            frames += 1
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"frames": frames, "seconds": _r(seconds, 3), "fps": _rate(frames, seconds), "cpu_s": _r(cpu, 3)}


# --------------------------------------------------------------------------- end to end


def run_end_to_end(
    path: Path,
    info,
    detector,
    reader,
    *,
    sample_fps: float,
    detector_batch: int,
    reader_batch: int,
    static_threshold: float,
    crop_padding: float,
    decode_threads: int,
    reuse: bool,
    prefetch_frames: int | None,
    workdir: Path,
    database_url: str | None,
) -> tuple[dict[str, Any], list[dict]]:
    """One video through the pipeline's per-video code; returns (timings, event rows)."""
    import pandas as pd

    from anpr_pipeline.assets.events import event_row, event_tracks, frame_reads, video_span
    from anpr_pipeline.assets.reads import with_reads
    from anpr_pipeline.resources.event_store import EventStore
    from anpr_pipeline.resources.object_store import LocalObjectStore
    from anpr_pipeline.resources.parquet_dataset import write_video_events
    from anpr_pipeline.resources.pipeline_config import PipelineConfig
    from anpr_pipeline.vision.decode import iter_frames
    from anpr_pipeline.vision.tracker import track_reads
    from anpr_pipeline.vision.video_pipeline import detect_and_read

    store = LocalObjectStore(workdir / "bucket")
    events_db = EventStore(database_url or f"sqlite:///{workdir / 'events.db'}")
    events_db.init_schema()
    prefix = f"crops/{CAMERA}/{STARTED_AT.date().isoformat()}/{secrets.token_hex(4)}/"

    t_start, c_start = time.perf_counter(), time.process_time()
    # Stage 1: decode -> gate -> detect -> crops (+ JPEG encode/upload in background threads);
    # stage 2: crops (read back from the bucket, as the plate_reads asset does) -> reader.
    clip = detect_and_read(
        iter_frames(path, sample_fps=sample_fps, threads=decode_threads),
        detector,
        reader,
        store,
        crop_prefix=prefix,
        detector_batch=detector_batch,
        reader_batch=reader_batch,
        static_threshold=static_threshold,
        crop_padding=crop_padding,
        reuse_static_detections=reuse,
        prefetch_frames=prefetch_frames,
    )
    stats, keys = clip.stats, [row["crop_key"] for row in clip.detections]
    t_detected, c_detected = clip.detected_at
    t_read, c_read = time.perf_counter(), time.process_time()
    # Stage 3: tracking + vote -> event rows -> events DB (COPY on Postgres) + Parquet.
    df = with_reads(pd.DataFrame(clip.detections), clip.reads, (info.width, info.height), crop_padding)
    video = {
        "video_key": f"uploads/{CAMERA}/bench-{secrets.token_hex(4)}.mp4",
        "camera_id": CAMERA,
        "started_at": STARTED_AT.isoformat(),
        "timestamp": "20261128T090000Z",
        "duration_s": info.duration_s,
        "fps": info.fps,
    }
    pipeline = PipelineConfig()
    tracks = track_reads(frame_reads(df)) if len(df) else []
    kept = event_tracks(tracks, pipeline, (info.width, info.height))
    rows = [event_row(t, video, detector.version, reader.version) for t in kept]
    rows.sort(key=lambda r: r["captured_at"])
    t_tracked = time.perf_counter()
    written = events_db.replace_video_events(video["video_key"], rows)
    write_video_events(store, CAMERA, video["timestamp"], rows, video_span(video))
    t_end, c_end = time.perf_counter(), time.process_time()
    if database_url:  # a real server: leave it as we found it
        events_db.delete_video_events(video["video_key"])
    events_db.dispose()

    wall = t_end - t_start
    detect_wall, read_wall = t_detected - t_start, t_read - t_detected
    events_wall = t_end - t_read
    frames = info.frame_count or round(info.duration_s * info.fps)
    cpu = c_end - c_start
    timing = {
        "wall_s": _r(wall, 3),
        # CPU seconds of this process (all threads): on a shared machine, the work the
        # pipeline needs, independent of what other processes take from the cores.
        "cpu_s": _r(cpu, 3),
        "cpu_utilisation": _r(cpu / wall, 3),
        "realtime_factor": _r(info.duration_s / wall, 3),
        "fps": _rate(frames, wall),
        "stages": {
            "decode_detect": {
                "wall_s": _r(detect_wall, 3),
                "cpu_s": _r(c_detected - c_start, 3),
                "sampled_frames": stats.sampled,
                "skipped_static": stats.skipped_static,
                "detected_frames": stats.detected_frames,
                "detections": stats.detections,
                "reused_detections": stats.reused_detections,
                "frames_wait_s": _r(stats.frames_s, 3),
                "detect_s": _r(stats.detect_s, 3),
                "gate_s": _r(stats.gate_s, 3),
                "crops_s": _r(stats.crops_s, 3),
                "upload_wait_s": _r(clip.upload_wait_s, 3),
                "crop_encode_cpu_s": _r(clip.crop_encode_s, 3),
                "detector_frames_per_s": _rate(stats.detected_frames, stats.detect_s),
                "sampled_frames_per_s": _rate(stats.sampled, detect_wall),
            },
            "read": {
                "wall_s": _r(read_wall, 3),
                "cpu_s": _r(c_read - c_detected, 3),
                "crops": len(keys),
                "distinct_crops_read": len(set(keys)),
                "crops_per_s": _rate(len(keys), read_wall),
                "distinct_crops_per_s": _rate(len(set(keys)), read_wall),
            },
            "events": {
                "wall_s": _r(events_wall, 3),
                "cpu_s": _r(c_end - c_read, 3),
                "track_s": _r(t_tracked - t_read, 3),
                "write_s": _r(t_end - t_tracked, 3),
                "tracks": len(tracks),
                "events": written,
                "events_per_s": _rate(written, t_end - t_tracked),
            },
        },
    }
    return timing, rows


def accuracy(truth: dict[str, Any] | None, rows: list[dict]) -> dict[str, Any] | None:
    """Ground-truth plates found among the events (synthetic video only).

    Matched as multisets, like ``demo.match_report``: each vehicle takes one event of its
    plate. A vehicle pass split into two events leaves one spurious event, and two vehicles
    with the same plate need two events to both be found."""
    if not truth:
        return None
    expected = [v["plate"] for v in truth["vehicles"]]
    found = [r["normalized_plate"] for r in rows]
    unmatched = Counter(found)
    missed = []
    for plate in expected:
        if unmatched[plate] > 0:
            unmatched[plate] -= 1
        else:
            missed.append(plate)
    matched = len(expected) - len(missed)
    spurious = sorted(unmatched.elements())
    return {
        "vehicles": len(expected),
        "events": len(found),
        "plates_found": matched,
        "recall": _r(matched / len(expected), 4) if expected else 0.0,
        "spurious_events": len(spurious),
        # What went wrong, so a change in the counts can be looked into.
        "missed_plates": sorted(missed),
        "spurious_plates": spurious,
    }


def bench_video(args: argparse.Namespace) -> dict[str, Any]:
    from anpr_pipeline.resources.pipeline_config import PipelineConfig
    from anpr_pipeline.vision.decode import probe
    from anpr_pipeline.vision.detector import build_detector
    from anpr_pipeline.vision.device import resolve_device, set_torch_threads
    from anpr_pipeline.vision.reader import build_reader

    report: dict[str, Any] = {"kind": "video", "machine": machine_info()}
    truth = None
    t0 = time.perf_counter()
    if args.video:
        path = Path(args.video)
    else:
        vehicles = args.vehicles if args.vehicles is not None else max(1, round(args.seconds * 2 / 3))
        path, truth = synthetic_video(
            Path(args.cache_dir), args.width, args.height, args.fps, args.seconds, vehicles, args.seed
        )
    report["prepare_video_s"] = _r(time.perf_counter() - t0, 3)
    info = probe(path)
    report["video"] = {
        "path": str(path),
        "synthetic": truth is not None,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "fps": _r(info.fps, 3),
        "duration_s": _r(info.duration_s, 3),
        "frames": info.frame_count,
    }

    import torch

    threads = args.threads or usable_cores()
    set_torch_threads(threads)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    detector = build_detector(args.detector, device=device, batch_size=args.detector_batch)
    reader = build_reader(args.reader, device=device, batch_size=args.reader_batch, text_row=args.text_row)
    pipeline = PipelineConfig()
    static_threshold = (
        pipeline.static_frame_threshold if args.static_threshold is None else args.static_threshold
    )
    report["config"] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "decode_threads": args.decode_threads,
        "detector": args.detector,
        "reader": args.reader,
        "detector_version": detector.version,
        "reader_version": reader.version,
        "detector_batch_size": args.detector_batch,
        "reader_batch_size": args.reader_batch,
        "sample_fps": args.sample_fps,
        "static_frame_threshold": static_threshold,
        "reuse_static_detections": not args.no_reuse,
        "prefetch_frames": args.detector_batch if args.prefetch is None else args.prefetch,
        "crop_padding": pipeline.crop_padding,
        "events_db": "postgresql" if args.db_url else "sqlite",
        "model_load_s": _r(time.perf_counter() - t0, 3),
    }
    decodes = [decode_only(path, args.decode_threads) for _ in range(max(1, args.repeat))]
    report["decode_only"] = min(decodes, key=lambda d: d["seconds"]) | {
        "runs_fps": [d["fps"] for d in decodes]
    }

    runs, rows = [], []
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    for i in range(max(1, args.repeat)):
        with tempfile.TemporaryDirectory(prefix="anpr-bench-") as tmp:
            if profiler is not None and i == 0:
                profiler.enable()
            timing, rows = run_end_to_end(
                path,
                info,
                detector,
                reader,
                sample_fps=args.sample_fps,
                detector_batch=args.detector_batch,
                reader_batch=args.reader_batch,
                static_threshold=static_threshold,
                crop_padding=pipeline.crop_padding,
                decode_threads=args.decode_threads,
                reuse=not args.no_reuse,
                prefetch_frames=args.prefetch,
                workdir=Path(tmp),
                database_url=args.db_url,
            )
            if profiler is not None and i == 0:
                profiler.disable()
                profiler.dump_stats(args.profile)
        runs.append(timing)
    best = min(runs, key=lambda r: r["wall_s"])  # least disturbed by the machine's other load
    report["end_to_end"] = best | {
        "runs_wall_s": [r["wall_s"] for r in runs],
        "median_wall_s": _r(statistics.median(r["wall_s"] for r in runs), 3),
        "ratio_to_decode": _r(best["fps"] / report["decode_only"]["fps"], 4)
        if report["decode_only"]["fps"]
        else 0.0,
        # What the cores could do if this process had them to itself: video seconds per
        # CPU second x cores (an upper bound; the measured factor above is what it got).
        "realtime_factor_cpu_bound": _r(info.duration_s * usable_cores() / best["cpu_s"], 3)
        if best["cpu_s"]
        else 0.0,
        "ratio_to_decode_cpu": _r(report["decode_only"]["cpu_s"] / best["cpu_s"], 4)
        if best["cpu_s"]
        else 0.0,
    }
    report["accuracy"] = accuracy(truth, rows)
    report["peak_rss_mb"] = peak_rss_mb()
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def video_table(r: dict[str, Any]) -> str:
    e, d, c, v = r["end_to_end"], r["decode_only"], r["config"], r["video"]
    s = e["stages"]
    lines = [
        f"video        {v['width']}x{v['height']} {v['fps']:g} fps, {v['duration_s']:.1f} s, {v['frames']} frames"
        f" ({'synthetic' if v['synthetic'] else v['path']})",
        f"machine      {r['machine']['cpu_model']}, {r['machine']['cpu_cores']} cores,"
        f" load {r['machine']['loadavg_start']} -> {r['machine']['loadavg_end']}",
        f"config       device={c['device']} torch_threads={c['torch_threads']} sample_fps={c['sample_fps']:g}"
        f" det_batch={c['detector_batch_size']} read_batch={c['reader_batch_size']}"
        f" static_thr={c['static_frame_threshold']:g} reuse={c['reuse_static_detections']}",
        f"work         {s['decode_detect']['sampled_frames']} sampled frames ({s['decode_detect']['skipped_static']} static),"
        f" {s['decode_detect']['detections']} detections ({s['decode_detect']['reused_detections']} reused),"
        f" {s['read']['distinct_crops_read']} crops read, {s['events']['events']} events",
        f"models       detector={c['detector_version']}  reader={c['reader_version']}",
        "",
        f"{'stage':<34}{'seconds':>10}{'rate':>14}{'cpu s':>10}",
        f"{'decode only (all frames)':<34}{d['seconds']:>10.2f}{d['fps']:>10.1f} f/s{d['cpu_s']:>10.2f}",
        f"{'decode+detect (sampled frames)':<34}{s['decode_detect']['wall_s']:>10.2f}"
        f"{s['decode_detect']['sampled_frames_per_s']:>10.1f} f/s{s['decode_detect']['cpu_s']:>10.2f}",
        f"{'  of which detector':<34}{s['decode_detect']['detect_s']:>10.2f}"
        f"{s['decode_detect']['detector_frames_per_s']:>10.1f} f/s",
        f"{'  of which decode+convert wait':<34}{s['decode_detect']['frames_wait_s']:>10.2f}",
        f"{'read (distinct crops)':<34}{s['read']['wall_s']:>10.2f}{s['read']['distinct_crops_per_s']:>10.1f} c/s"
        f"{s['read']['cpu_s']:>10.2f}",
        f"{'events (track + write)':<34}{s['events']['wall_s']:>10.2f}{s['events']['events_per_s']:>10.1f} e/s"
        f"{s['events']['cpu_s']:>10.2f}",
        f"{'end to end':<34}{e['wall_s']:>10.2f}{e['fps']:>10.1f} f/s{e['cpu_s']:>10.2f}",
        "",
        f"realtime factor {e['realtime_factor']:.2f}x (cpu-bound {e['realtime_factor_cpu_bound']:.2f}x)"
        f"   ratio to decode {e['ratio_to_decode']:.3f} (cpu {e['ratio_to_decode_cpu']:.3f})"
        f"   peak RSS {r['peak_rss_mb']:.0f} MB   runs {e['runs_wall_s']}",
    ]
    if r.get("accuracy"):
        a = r["accuracy"]
        lines.append(
            f"accuracy     {a['plates_found']}/{a['vehicles']} plates found, {a['spurious_events']} spurious events"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- database


def _libpq_url(url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (psycopg.connect wants libpq form)."""
    import sqlalchemy as sa

    u = sa.make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    import sqlalchemy as sa

    return (
        sa.make_url(url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


@contextlib.contextmanager
def scratch_database(server_url: str, keep: bool = False) -> Iterator[str]:
    """A new database on the server of ``server_url`` (any database URL on it); dropped after."""
    import psycopg

    admin = _libpq_url(server_url)
    name = f"anpr_bench_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_DIGITS = "0123456789"


def _plate(rng) -> str:
    # Formats of our regions, so prefix selectivity looks like real traffic.
    kind = rng.integers(3)
    if kind == 0:  # us-like 3 letters + 4 digits
        return "".join(rng.choice(list(_LETTERS), 3)) + "".join(rng.choice(list(_DIGITS), 4))
    if kind == 1:  # br Mercosul LLLDLDD
        p = rng.choice(list(_LETTERS), 4)
        d = rng.choice(list(_DIGITS), 3)
        return f"{p[0]}{p[1]}{p[2]}{d[0]}{p[3]}{d[1]}{d[2]}"
    return (
        "".join(rng.choice(list(_LETTERS), 2))
        + "".join(rng.choice(list(_DIGITS), 3))
        + "".join(rng.choice(list(_LETTERS), 2))
    )


def synthetic_event_rows(
    rng, n: int, video_key: str, start: datetime, span_s: float, plates: list[str]
) -> list[dict]:
    """``n`` event rows for one "video", spread over ``span_s`` from ``start``."""
    import uuid

    out = []
    offsets = rng.uniform(0, span_s, n)
    cams = rng.integers(0, 50, n)
    picks = rng.integers(0, len(plates), n)
    for i in range(n):
        captured = start + timedelta(seconds=float(offsets[i]))
        plate = plates[picks[i]]
        out.append(
            {
                "event_id": str(uuid.uuid4()),
                "camera_id": f"cam-{cams[i]:03d}",
                "captured_at": captured,
                "first_seen_at": captured - timedelta(seconds=1.5),
                "last_seen_at": captured + timedelta(seconds=1.0),
                "plate_text": plate,
                "normalized_plate": plate,
                "region": "us",
                "confidence": 0.9,
                "char_confidences": [0.9] * len(plate),
                "bbox_x": 100,
                "bbox_y": 200,
                "bbox_w": 180,
                "bbox_h": 45,
                "frame_index": int(i % 300),
                "frames_seen": 5,
                "video_key": video_key,
                "crop_key": f"crops/x/{i}.jpg",
                "detector_version": "bench",
                "reader_version": "bench",
            }
        )
    return out


def _latencies(fn, queries: list[str]) -> dict[str, float]:
    fn(queries[0])  # warm the connection pool and the plan cache
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {
        "queries": len(times),
        "p50_ms": _r(percentile(times, 50), 3),
        "p95_ms": _r(percentile(times, 95), 3),
        "p99_ms": _r(percentile(times, 99), 3),
        "max_ms": _r(max(times), 3),
    }


def bench_db(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import sqlalchemy as sa

    from anpr_pipeline.resources.event_store import EventStore

    report: dict[str, Any] = {
        "kind": "db",
        "machine": machine_info(),
        "rows": args.rows,
        "batch_rows": args.batch_rows,
    }
    rng = np.random.default_rng(args.seed)
    # Distinct plates: each seen ~4 times on average (a city's repeat traffic).
    plates = sorted({_plate(rng) for _ in range(max(10, args.rows // 4))})
    # Three months of data, inside monthly partitions (the DEFAULT one stays empty).
    first = (datetime.now(UTC).date().replace(day=1) - timedelta(days=40)).replace(day=1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    with scratch_database(args.url, keep=args.keep) as url:
        store = EventStore(url)
        store.init_schema()
        store.ensure_month_partitions(months_ahead=3, today=date(first.year, first.month, 1))
        with store.engine.connect() as conn:
            report["server_version"] = conn.execute(sa.text("SHOW server_version")).scalar_one()
        span_s = 80 * 86400.0 / max(1, -(-args.rows // args.batch_rows))
        copy_s = 0.0
        t_wall = time.perf_counter()
        done = batch_no = 0
        while done < args.rows:
            n = min(args.batch_rows, args.rows - done)
            batch_start = start + timedelta(seconds=span_s * batch_no)
            video_key = f"uploads/bench/{batch_no:07d}.mp4"
            rows = synthetic_event_rows(rng, n, video_key, batch_start, span_s, plates)
            t0 = time.perf_counter()
            store.replace_video_events(video_key, rows)
            copy_s += time.perf_counter() - t0
            done += n
            batch_no += 1
        wall = time.perf_counter() - t_wall
        # Small per-video transactions, as the pipeline writes them (25 events a video).
        small_n, small_videos = 25, min(200, max(1, args.rows // 25))
        small_s = 0.0
        for v in range(small_videos):
            rows = synthetic_event_rows(
                rng, small_n, f"uploads/bench-small/{v:05d}.mp4", start, 80 * 86400.0, plates
            )
            t0 = time.perf_counter()
            store.replace_video_events(f"uploads/bench-small/{v:05d}.mp4", rows)
            small_s += time.perf_counter() - t0
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE events"))
        report["ingest"] = {
            "rows": done,
            "batches": batch_no,
            "copy_s": _r(copy_s, 3),
            "events_per_s": _rate(done, copy_s),
            "wall_s_with_row_generation": _r(wall, 3),
            "per_video_transactions": {
                "videos": small_videos,
                "events_per_video": small_n,
                "events_per_s": _rate(small_videos * small_n, small_s),
                "videos_per_s": _rate(small_videos, small_s),
            },
        }
        total = store.count()
        picks = rng.integers(0, len(plates), args.queries)
        exact = [plates[i] for i in picks]
        prefixes = [plates[i][: 3 + int(i % 2)] for i in picks]
        report["search"] = {
            "rows_in_table": total,
            "exact": _latencies(lambda p: store.search(p, mode="exact"), exact),
            "prefix": _latencies(lambda p: store.search(p, mode="prefix", limit=100), prefixes),
            "prefix_limit": 100,
        }
        report["table_size_mb"] = _r(_table_size_mb(store), 1)
        report["archive_check"] = _archive_check(store, first)
        store.dispose()
    report["peak_rss_mb"] = peak_rss_mb()
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _archive_check(store, month: date) -> dict[str, Any]:
    """How long an archive's final check of ``month`` keeps event writers waiting: the
    month digest computed with writers blocked, as ``ops.archive`` does, then rolled back."""
    from anpr_pipeline.ops.archive import block_event_writers, month_digest

    with store.engine.connect() as conn:
        trans = conn.begin()
        block_event_writers(conn)
        t0 = time.perf_counter()
        rows, _digest = month_digest(conn, month)
        held = time.perf_counter() - t0
        trans.rollback()
    return {"month": f"{month:%Y-%m}", "rows": rows, "lock_held_s": _r(held, 3)}


def _table_size_mb(store) -> float:
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        size = conn.execute(
            sa.text(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'events'::regclass"
            )
        ).scalar_one()
    return float(size or 0) / 1e6


def db_table(r: dict[str, Any]) -> str:
    i, s = r["ingest"], r["search"]
    return "\n".join(
        [
            f"machine      {r['machine']['cpu_model']}, {r['machine']['cpu_cores']} cores, Postgres {r['server_version']},"
            f" load {r['machine']['loadavg_start']} -> {r['machine']['loadavg_end']}",
            f"ingest       {i['rows']} rows in {i['batches']} COPY transactions: {i['events_per_s']:,.0f} events/s"
            f" ({i['copy_s']:.1f} s); per-video (25 rows) {i['per_video_transactions']['events_per_s']:,.0f} events/s",
            f"table        {s['rows_in_table']} rows, {r['table_size_mb']:.0f} MB with indexes",
            f"archive      final check of {r['archive_check']['month']} ({r['archive_check']['rows']} rows):"
            f" writers wait {r['archive_check']['lock_held_s']:.2f} s",
            f"{'search':<10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}",
            *(
                f"{m:<10}{s[m]['p50_ms']:>10.2f}{s[m]['p95_ms']:>10.2f}{s[m]['p99_ms']:>10.2f}"
                for m in ("exact", "prefix")
            ),
        ]
    )


# --------------------------------------------------------------------------- CLI


def _write(report: dict[str, Any], out: str | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, default=str) + "\n")


def main_db(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="anpr bench db",
        description="Postgres COPY ingest, plate-search latency and how long an archive's final check of a month holds writers.",
    )
    ap.add_argument("--rows", type=int, default=1_000_000, help="events to load (default 1 000 000)")
    ap.add_argument(
        "--url",
        default=DEFAULT_ADMIN_URL,
        help="any database URL on the server; a scratch database is created there and dropped",
    )
    ap.add_argument("--json", dest="out", help="write the report here")
    ap.add_argument("--batch-rows", type=int, default=10_000, help="rows per COPY transaction")
    ap.add_argument("--queries", type=int, default=500, help="searches per mode")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args(argv)
    if args.rows < 1:
        ap.error("--rows must be >= 1")
    if not args.url.startswith("postgresql"):  # COPY and partitions: a Postgres server only
        ap.error(f"--url {args.url}: expected a postgresql:// URL (the benchmark needs a Postgres server)")
    import psycopg

    try:
        report = bench_db(args)
    except psycopg.OperationalError as exc:
        print(f"anpr bench db: cannot use the server at {args.url}: {exc}".rstrip(), file=sys.stderr)
        return 2
    _write(report, args.out)
    print(db_table(report))
    return 0


def _check_video_flags(args: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    """Bad model, device and sampling flags: one argparse error line (exit 2) before a video
    is rendered or a model loaded, as in `anpr read`."""
    from anpr_pipeline.read_cli import check_model_flags

    check_model_flags(args, ap)
    if args.sample_fps > 120:
        ap.error(f"--sample-fps {args.sample_fps}: expected 0 < fps <= 120")
    if args.prefetch is not None and args.prefetch < 0:
        ap.error(f"--prefetch {args.prefetch}: expected 0 (off) or more frames")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "db":
        return main_db(argv[1:])
    ap = argparse.ArgumentParser(
        prog="anpr bench",
        description="Pipeline throughput on one video (default: a cached synthetic 1080p 15 fps 60 s traffic "
        "video). `anpr bench db --help` for the database benchmark.",
    )
    ap.add_argument("video", nargs="?", help="video file (default: synthetic)")
    ap.add_argument("--json", dest="out", help="write the report here")
    ap.add_argument("--seconds", type=positive_float, default=60.0)
    ap.add_argument("--fps", type=positive_int, default=15)
    ap.add_argument("--width", type=positive_int, default=1920)
    ap.add_argument("--height", type=positive_int, default=1080)
    ap.add_argument("--vehicles", type=positive_int, default=None, help="default: 2 per 3 s of video")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--sample-fps", type=positive_float, default=5.0)
    ap.add_argument("--detector", default="default")
    ap.add_argument("--reader", default="default")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument(
        "--threads", type=positive_int, default=None, help="torch intra-op threads (default: usable cores)"
    )
    ap.add_argument(
        "--decode-threads", type=int, default=0, help="FFmpeg decoder threads (0 = FFmpeg decides)"
    )
    ap.add_argument("--detector-batch", type=positive_int, default=8)
    ap.add_argument("--reader-batch", type=positive_int, default=32)
    add_text_row_flag(ap)
    ap.add_argument(
        "--static-threshold",
        type=float,
        default=None,
        help="static-frame gate (default: the pipeline's PipelineConfig value)",
    )
    ap.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="frames decoded ahead in a background thread (default: one detector batch; 0: off)",
    )
    ap.add_argument(
        "--no-reuse",
        action="store_true",
        help="read every detection afresh (no reuse of unchanged detections; for comparison)",
    )
    ap.add_argument(
        "--db-url", default=None, help="events DB for the write stage (default: a temporary SQLite)"
    )
    ap.add_argument(
        "--repeat", type=positive_int, default=1, help="runs; the fastest is reported, all are listed"
    )
    ap.add_argument("--profile", default=None, help="write a cProfile of the first end-to-end run here")
    args = ap.parse_args(argv)
    _check_video_flags(args, ap)
    from anpr_pipeline.vision.decode import VideoDecodeError

    try:
        report = bench_video(args)
    except VideoDecodeError as exc:  # the message names the file and what is wrong with it
        print(f"anpr bench: {exc}", file=sys.stderr)
        return 2
    _write(report, args.out)
    print(video_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
