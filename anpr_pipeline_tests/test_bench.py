"""Smoke runs of `anpr bench` (tiny configurations): the report has every field, with sane values.

Benchmarks are not timed tests: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from anpr_pipeline.bench import main, percentile
from anpr_pipeline.cli import COMMANDS
from anpr_pipeline_tests.servers import free_port


def test_bench_is_an_anpr_command():
    assert COMMANDS["bench"][0] == "anpr_pipeline.bench:main"


def test_percentile_interpolates():
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile(list(map(float, range(101))), 95) == pytest.approx(95.0)


def test_video_bench_reports_every_stage(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [
        "--seconds",
        "2",
        "--width",
        "320",
        "--height",
        "240",
        "--vehicles",
        "1",
        "--json",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--threads",
        "1",
        "--reader",
        os.environ.get("ANPR_READER", "default"),
        "--detector",
        os.environ.get("ANPR_DETECTOR", "default"),
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert "realtime factor" in capsys.readouterr().out

    assert (
        report["video"]["width"] == 320 and report["video"]["height"] == 240 and report["video"]["synthetic"]
    )
    assert report["video"]["frames"] == 30
    machine = report["machine"]
    assert machine["cpu_cores"] >= 1 and machine["cpu_model"]
    assert len(machine["loadavg_start"]) == 3 and len(machine["loadavg_end"]) == 3
    config = report["config"]
    assert config["device"] in {"cpu", "cuda"}
    assert config["torch_threads"] == 1
    assert config["detector_version"] and config["reader_version"]
    assert (
        config["sample_fps"] == 5.0
        and config["detector_batch_size"] == 8
        and config["reader_batch_size"] == 32
    )

    assert report["decode_only"]["frames"] == 30 and report["decode_only"]["fps"] > 0
    e2e = report["end_to_end"]
    assert e2e["wall_s"] > 0 and e2e["fps"] > 0
    assert e2e["realtime_factor"] == pytest.approx(report["video"]["duration_s"] / e2e["wall_s"], rel=0.02)
    assert e2e["ratio_to_decode"] == pytest.approx(e2e["fps"] / report["decode_only"]["fps"], rel=0.02)
    stages = e2e["stages"]
    detect = stages["decode_detect"]
    assert detect["sampled_frames"] == 10  # 2 s at 5 fps
    assert detect["detected_frames"] + detect["skipped_static"] == detect["sampled_frames"]
    assert detect["sampled_frames_per_s"] > 0
    assert stages["read"]["crops"] == detect["detections"]
    assert stages["events"]["events"] <= stages["events"]["tracks"]
    assert sum(s["wall_s"] for s in stages.values()) == pytest.approx(e2e["wall_s"], abs=0.01)
    assert report["peak_rss_mb"] > 50
    assert report["accuracy"]["vehicles"] >= 1
    assert 0.0 <= report["accuracy"]["recall"] <= 1.0


def test_video_bench_reuses_the_cached_video(tmp_path):
    args = [
        "--seconds",
        "1",
        "--width",
        "160",
        "--height",
        "120",
        "--vehicles",
        "1",
        "--cache-dir",
        str(tmp_path),
        "--detector",
        "classical",
        "--reader",
        os.environ.get("ANPR_READER", "default"),
        "--json",
        str(tmp_path / "a.json"),
    ]
    assert main(args) == 0
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == 1
    mtime = videos[0].stat().st_mtime_ns
    assert main([*args[:-1], str(tmp_path / "b.json")]) == 0
    assert videos[0].stat().st_mtime_ns == mtime
    assert json.loads((tmp_path / "b.json").read_text())["video"]["path"] == str(videos[0])


def test_db_bench_ingests_searches_and_drops_its_database(postgres_url, tmp_path):
    out = tmp_path / "db.json"
    assert (
        main(
            [
                "db",
                "--rows",
                "2000",
                "--batch-rows",
                "500",
                "--queries",
                "30",
                "--url",
                postgres_url,
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    ingest = report["ingest"]
    assert ingest["rows"] == 2000 and ingest["batches"] == 4
    assert ingest["events_per_s"] > 0 and ingest["per_video_transactions"]["events_per_s"] > 0
    search = report["search"]
    assert search["rows_in_table"] >= 2000
    for mode in ("exact", "prefix"):
        s = search[mode]
        assert s["queries"] == 30
        assert 0 < s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert report["server_version"] and report["table_size_mb"] > 0
    check = report["archive_check"]  # the oldest month, which holds part of the rows
    assert 0 < check["rows"] < search["rows_in_table"] and check["lock_held_s"] > 0
    assert len(report["machine"]["loadavg_start"]) == 3
    libpq = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"anpr_bench_{os.getpid()}_%",)
        ).fetchone()[0]
    assert left == 0


def test_bench_names_a_bad_video_or_server_in_one_line(tmp_path, capsys):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    assert main([str(fake), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"anpr bench: {fake}:") and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:  # SQLite has no COPY: refused before any work
        main(["db", "--url", "sqlite:///x.db"])
    assert exit_info.value.code == 2 and "expected a postgresql:// URL" in capsys.readouterr().err
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    assert main(["db", "--url", closed, "--rows", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"anpr bench db: cannot use the server at {closed}:") and "Traceback" not in err


def test_accuracy_counts_and_names_the_missed_and_spurious_plates() -> None:
    from anpr_pipeline.bench import accuracy

    truth = {"vehicles": [{"plate": "AAA1111"}, {"plate": "BBB2222"}, {"plate": "AAA1111"}]}
    rows = [{"normalized_plate": p} for p in ("AAA1111", "CCC3333", "AAA1111")]
    report = accuracy(truth, rows)
    assert report == {
        "vehicles": 3,
        "events": 3,
        "plates_found": 2,  # both AAA1111 vehicles, each with its event
        "recall": 0.6667,
        "spurious_events": 1,
        "missed_plates": ["BBB2222"],
        "spurious_plates": ["CCC3333"],
    }
    assert accuracy(None, rows) is None


def test_accuracy_matches_vehicles_and_events_one_to_one() -> None:
    from anpr_pipeline.bench import accuracy

    # One vehicle pass split into two events: the second event is spurious.
    truth = {"vehicles": [{"plate": "ABC1234"}, {"plate": "XYZ987"}]}
    rows = [{"normalized_plate": p} for p in ("ABC1234", "ABC1234", "XYZ987")]
    split = accuracy(truth, rows)
    assert (split["plates_found"], split["recall"], split["spurious_events"]) == (2, 1.0, 1)
    assert split["spurious_plates"] == ["ABC1234"] and split["missed_plates"] == []
    # Two vehicles with the same plate, one event found: one of them is missed.
    twins = accuracy({"vehicles": [{"plate": "ABC1234"}] * 2}, [{"normalized_plate": "ABC1234"}])
    assert (twins["plates_found"], twins["recall"], twins["spurious_events"]) == (1, 0.5, 0)
    assert twins["missed_plates"] == ["ABC1234"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sample-fps", "0"], "argument --sample-fps: '0': expected a number above 0"),
        (["--sample-fps", "500"], "--sample-fps 500.0: expected 0 < fps <= 120"),
        (["--detector", "nope"], "--detector: unknown detector 'nope'"),
        (["--reader", "nope"], "--reader: unknown reader 'nope'"),
        (["--device", "tpu"], "--device: unknown device 'tpu'"),
        (["--reader-batch", "0"], "argument --reader-batch: '0': expected a positive integer"),
        (["--detector-batch", "-2"], "argument --detector-batch: '-2': expected a positive integer"),
        (["--repeat", "0"], "argument --repeat: '0': expected a positive integer"),
        (["--prefetch", "-1"], "--prefetch -1: expected 0 (off) or more frames"),
    ],
)
def test_bench_rejects_bad_flags_in_one_line(tmp_path, capsys, flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:  # before any video is rendered
        main([*flags, "--cache-dir", str(tmp_path / "cache")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "cache").exists()
