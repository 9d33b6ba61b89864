"""`anpr demo`: synthetic camera videos -> bucket -> upload sensor -> process_video runs -> events.

Runs entirely on the embedded default (local bucket folder, SQLite, Dagster instance under
$DAGSTER_HOME), with the real detector and reader. The runs land in the same instance the
UI opens (`make ui`), so every partition, run and event table is there to inspect.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from anpr_pipeline.cli_args import out_path_problem, positive_int

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"
DEMO_CAMERAS = ("cam-north", "cam-east", "cam-south", "cam-west")
# The full step log is in the UI; the terminal gets warnings and the summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or ./.dagster_home with the embedded dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and REPO_DAGSTER_YAML.exists():
        shutil.copy(REPO_DAGSTER_YAML, home / "dagster.yaml")
    return home


def generate_uploads(
    store, count: int, seed: int, seconds: float, width: int, height: int
) -> dict[str, dict]:
    """Render ``count`` videos into uploads/; return ground truth by partition key."""
    from anpr_pipeline.uploads import video_key_for
    from anpr_pipeline.vision.synth import make_video

    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    truths: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="anpr-demo-") as tmp:
        for i in range(count):
            camera = DEMO_CAMERAS[i % len(DEMO_CAMERAS)]
            started = base + timedelta(minutes=i)
            key = video_key_for(camera, started)
            path = Path(tmp) / f"{i}.mp4"
            truth = make_video(path, seed=seed + i, width=width, height=height, seconds=seconds)
            store.put_file(key, path)
            truths[key.removeprefix("uploads/").rsplit(".", 1)[0]] = truth
    return truths


def run_sensor(defs, instance, store_resource):
    """Ticks of the real upload sensor until it requests runs; returns that SensorResult.

    Waits for the uploads to settle; a local bucket's uploads are taken on the second look
    (same size as on the first), so the demo ticks twice, as the daemon would 30 s apart.
    """
    from dagster import SensorResult, build_sensor_context

    from anpr_pipeline.sensors import SETTLE_SECONDS

    time.sleep(SETTLE_SECONDS)
    sensor = defs.resolve_sensor_def("upload_sensor")
    cursor = None
    for _ in range(2):
        context = build_sensor_context(
            instance=instance, cursor=cursor, resources={"bucket": store_resource}, definitions=defs
        )
        result = sensor(context)
        if not isinstance(result, SensorResult) or result.run_requests:
            break
        cursor = result.cursor
    if not isinstance(result, SensorResult) or not result.run_requests:
        raise RuntimeError(f"upload sensor did not request runs: {result}")
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def match_report(truths: dict[str, dict], events_by_partition: dict[str, list[dict]]) -> dict:
    expected, found, matched = [], [], 0
    for partition, truth in truths.items():
        plates = [v["plate"] for v in truth["vehicles"]]
        read = [e["normalized_plate"] for e in events_by_partition.get(partition, [])]
        expected += [{"video": partition, "plate": p} for p in plates]
        found += [
            {
                "video": partition,
                "plate": e["normalized_plate"],
                "confidence": round(float(e["confidence"]), 3),
                "captured_at": str(e["captured_at"]),
                "frames_seen": e["frames_seen"],
            }
            for e in events_by_partition.get(partition, [])
        ]
        remaining = list(read)
        for plate in plates:
            if plate in remaining:
                remaining.remove(plate)
                matched += 1
    return {"expected": expected, "found": found, "matched": matched, "events": len(found)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="anpr demo", description=__doc__)
    parser.add_argument(
        "--videos", type=positive_int, default=3, help="synthetic videos to generate (default 3)"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each video")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--width", type=positive_int, default=1280)
    parser.add_argument("--height", type=positive_int, default=720)
    parser.add_argument("--report", default="demo_report.json", help="where to write the JSON report")
    args = parser.parse_args(argv)
    if args.width < 320 or args.height < 240:  # plates must fit the synthetic scenes
        parser.error(f"--width {args.width} --height {args.height}: expected at least 320 x 240")
    if not 1 <= args.seconds <= 600:
        parser.error(f"--seconds {args.seconds}: expected 1 to 600")
    if problem := out_path_problem(Path(args.report)):
        parser.error(f"--report {args.report}: {problem}")

    home = ensure_dagster_home()
    from dagster import DagsterInstance

    from anpr_pipeline.definitions import build_definitions
    from anpr_pipeline.settings import load_settings

    settings = load_settings()
    defs = build_definitions(settings)
    resources = defs.resources
    store = resources["bucket"].get_store()
    events_db = resources["events_db"].get_store()
    events_db.init_schema()
    instance = DagsterInstance.get()

    print(
        f"Generating {args.videos} synthetic videos into {settings.bucket_dir if settings.bucket_kind == 'local' else settings.s3_bucket} ..."
    )
    truths = generate_uploads(store, args.videos, args.seed, args.seconds, args.width, args.height)
    result = run_sensor(defs, instance, resources["bucket"])
    job = defs.resolve_job_def("process_video")
    started = time.perf_counter()
    events_by_partition: dict[str, list[dict]] = {}
    failures = 0
    for request in result.run_requests or []:
        outcome = job.execute_in_process(
            partition_key=request.partition_key,
            instance=instance,
            tags=request.tags,
            raise_on_error=False,
            run_config=QUIET,
        )
        status = "ok" if outcome.success else "FAILED"
        failures += 0 if outcome.success else 1
        video_key = request.tags["anpr/video_key"]
        events = events_db.events_for_video(video_key)
        events_by_partition[request.partition_key] = events
        plates = ", ".join(e["normalized_plate"] for e in events) or "-"
        print(
            f"  {request.partition_key}: {status}, run {outcome.run_id[:8]}, {len(events)} events: {plates}"
        )
    pipeline_seconds = time.perf_counter() - started

    report = match_report(truths, events_by_partition)
    report["pipeline_seconds"] = round(pipeline_seconds, 1)
    Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    print(
        f"\nMatched {report['matched']} of {len(report['expected'])} synthetic plates "
        f"({report['events']} events) in {pipeline_seconds:.1f} s of pipeline time; report: {args.report}"
    )
    print(
        f"Open the UI on the same instance:  DAGSTER_HOME={home} .venv/bin/dagster dev -w workspace.yaml"
        "   (or: make ui)"
    )
    return 1 if failures else 0
