"""`anpr search` / `anpr export` against a real events database (SQLite here; Postgres when up)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from anpr_pipeline.analyst_cli import parse_time
from anpr_pipeline.cli import main as anpr
from anpr_pipeline.resources.event_store import EventStore
from anpr_pipeline_tests.factories import event_row

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


SEED = [
    ("AB8C12", "cam-north", T0),  # B/8 look-alike of ABBC12
    ("ABBC12", "cam-east", T0 + timedelta(hours=1)),
    ("ABBC123", "cam-east", T0 + timedelta(hours=2)),  # one extra character
    ("XY9999", "cam-north", T0 + timedelta(days=1)),
    ("ABZZ00", "cam-south", T0 + timedelta(days=2)),
]


def seed(url: str) -> None:
    store = EventStore(url)
    store.init_schema()
    by_video: dict[str, list[dict]] = {}
    for n, (plate, camera, at) in enumerate(SEED):
        key = f"uploads/{camera}/{at:%Y%m%dT%H%M%SZ}.mp4"
        by_video.setdefault(key, []).append(event_row(at, plate=plate, camera=camera, video_key=key, n=n))
    for key, rows in by_video.items():
        store.replace_video_events(key, rows)
    store.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    seed(url)
    return url


def run_json(capsys, *argv: str) -> list[dict]:
    assert anpr(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def plates(rows: list[dict]) -> list[str]:
    return sorted(r["normalized_plate"] for r in rows)


def check_search_modes(url: str, capsys) -> None:
    base = ["--database-url", url, "--format", "json"]
    assert plates(run_json(capsys, "search", "abbc-12", *base)) == ["ABBC12"]
    assert plates(run_json(capsys, "search", "ABBC", "--prefix", *base)) == ["ABBC12", "ABBC123"]
    # Fuzzy: the B/8 look-alike and the one-extra-character read, not the far plates.
    assert plates(run_json(capsys, "search", "ABBC12", "--fuzzy", *base)) == ["AB8C12", "ABBC12", "ABBC123"]
    assert plates(run_json(capsys, "search", "ABBC12", "--fuzzy", "--camera", "cam-north", *base)) == [
        "AB8C12"
    ]
    window = ["--since", "2026-11-20T08:30", "--until", "2026-11-20T09:30"]
    assert plates(run_json(capsys, "search", "ABBC12", "--fuzzy", *window, *base)) == ["ABBC12"]


def test_search_modes_sqlite(sqlite_url, capsys):
    check_search_modes(sqlite_url, capsys)


@pytest.mark.postgres
def test_search_modes_postgres(fresh_postgres_url, capsys):
    seed(fresh_postgres_url)
    check_search_modes(fresh_postgres_url, capsys)


def test_search_json_row_has_every_column_and_crop_key(sqlite_url, capsys):
    (row,) = run_json(capsys, "search", "XY9999", "--database-url", sqlite_url, "--format", "json")
    assert row["camera_id"] == "cam-north"
    # Always with microseconds: a column mixing "...:00+00:00" and "...:00.200000+00:00" does
    # not parse as one datetime column in pandas.
    assert row["captured_at"] == (T0 + timedelta(days=1)).isoformat(timespec="microseconds")
    assert row["crop_key"].endswith("_0.jpg") and row["char_confidences"] == [0.9] * 6


def test_search_table_and_csv(sqlite_url, capsys):
    assert anpr(["search", "ABBC", "--prefix", "--database-url", sqlite_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["captured_at", "camera_id", "normalized_plate"]
    assert [line.split()[3] for line in out[2:]] == ["ABBC123", "ABBC12"]  # newest first
    assert anpr(["search", "ABBC", "--prefix", "--database-url", sqlite_url, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["normalized_plate"] for r in rows] == ["ABBC123", "ABBC12"]
    assert json.loads(rows[0]["char_confidences"]) == [0.9] * 7


def test_search_reports_errors_clearly(tmp_path, capsys):
    (tmp_path / "empty.db").touch()  # a database without the pipeline's tables
    assert anpr(["search", "AB", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}"]) == 1
    assert "no events table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        anpr(["search", "AB", "--since", "yesterday-ish"])
    assert "is not a time" in capsys.readouterr().err


def test_export_parquet_and_csv(sqlite_url, tmp_path, capsys):
    out = tmp_path / "week.parquet"
    args = ["--since", "2026-11-20", "--until", "2026-11-22", "--database-url", sqlite_url]
    assert anpr(["export", *args, "--format", "parquet", "--out", str(out)]) == 0
    assert "4 events" in capsys.readouterr().out
    table = pq.read_table(out).to_pandas()
    assert list(table["normalized_plate"]) == ["AB8C12", "ABBC12", "ABBC123", "XY9999"]  # oldest first
    assert set(table["camera_id"]) == {"cam-north", "cam-east"}
    assert str(table["captured_at"].dt.tz) == "UTC"
    out_csv = tmp_path / "north.csv"
    assert anpr(["export", *args, "--camera", "cam-north", "--format", "csv", "--out", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["normalized_plate"] for r in rows] == ["AB8C12", "XY9999"]
    assert not list(tmp_path.glob("*.partial"))
    assert pd.to_datetime(pd.read_csv(out_csv)["captured_at"]).dt.tz is not None  # one parseable format


def test_a_window_reaching_into_archived_months_says_so(sqlite_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANPR_ARCHIVE_EVENTS_AFTER_DAYS", "1")  # the seeded days are older
    args = ["--since", "2026-11-20", "--until", "2026-11-22", "--database-url", sqlite_url]
    assert anpr(["export", *args, "--format", "csv", "--out", str(tmp_path / "x.csv")]) == 0
    assert "archived out of the events table" in capsys.readouterr().err
    monkeypatch.setenv("ANPR_ARCHIVE_EVENTS_AFTER_DAYS", "0")  # never archived: nothing to say
    assert anpr(["search", "ABBC", "--prefix", "--since", "2026-11-20", "--database-url", sqlite_url]) == 0
    assert "archived" not in capsys.readouterr().err


def test_parse_time_forms():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_time("7d", now) == now - timedelta(days=7)
    assert parse_time("30m", now) == now - timedelta(minutes=30)
    assert parse_time("2026-11-20") == datetime(2026, 11, 20, tzinfo=UTC)
    assert parse_time("2026-11-20T09:00:00+01:00") == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert parse_time("2026-11-20T08:00:00Z") == datetime(2026, 11, 20, 8, tzinfo=UTC)


def _one_error_line(err: str, prefix: str) -> str:
    """The single stderr line a bad input must give: the command's name, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def _bad_database_urls(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (URL, a fragment of the message): a Postgres nobody listens on, a file that is
    not a database, and URLs that do not parse."""
    from anpr_pipeline_tests.servers import free_port

    not_db = tmp_path / "notes.db"
    not_db.write_text("hello, not a database\n")
    return {
        "unreachable": (
            f"postgresql+psycopg://analyst:secret-pw@127.0.0.1:{free_port()}/events",
            "unreachable",
        ),
        "not a database": (f"sqlite:///{not_db}", "file is not a database"),
        "no such file": (f"sqlite:///{tmp_path / 'wrong' / 'events.db'}", "no SQLite database at"),
        "bare scheme": ("sqlite", "not a database URL"),
        "not a url": ("notaurl", "not a database URL"),
    }


@pytest.mark.parametrize(
    "case", ["unreachable", "not a database", "no such file", "bare scheme", "not a url"]
)
def test_search_and_export_report_a_bad_database_in_one_line(case, tmp_path, capsys):
    url, fragment = _bad_database_urls(tmp_path)[case]
    assert anpr(["search", "AB123", "--database-url", url]) == 1
    line = _one_error_line(capsys.readouterr().err, "anpr search: ")
    assert fragment in line and "secret-pw" not in line
    out = tmp_path / "x.csv"
    assert anpr(["export", "--since", "7d", "--format", "csv", "--out", str(out), "--database-url", url]) == 1
    line = _one_error_line(capsys.readouterr().err, "anpr export: ")
    assert fragment in line and "secret-pw" not in line
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    assert not (tmp_path / "wrong").exists()  # a wrong path creates nothing


def test_search_reads_a_malformed_database_url_setting_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ANPR_DATABASE_URL", "sqlite")  # passes the scheme check, does not parse
    assert anpr(["search", "AB123"]) == 1
    assert "not a database URL: 'sqlite'" in _one_error_line(capsys.readouterr().err, "anpr search: ")


def test_export_to_a_directory_fails_before_connecting(tmp_path, capsys):
    from anpr_pipeline_tests.servers import free_port

    # A database that would fail (and retry) if it were contacted: the --out check comes first.
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/events"
    folder = tmp_path / "exports"
    folder.mkdir()
    assert anpr(["export", "--since", "7d", "--out", str(folder), "--database-url", url]) == 2
    line = _one_error_line(capsys.readouterr().err, "anpr export: ")
    assert "is a directory" in line and "127.0.0.1" not in line
    assert not list(tmp_path.glob("*.partial"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert anpr(["export", "--since", "7d", "--out", str(blocker / "x.csv"), "--database-url", url]) == 2
    assert "is not a folder" in _one_error_line(capsys.readouterr().err, "anpr export: ")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_failed_export_leaves_no_partial_file(fmt, tmp_path, capsys):
    """The events table is there but its rows cannot be read (here: a table of another shape):
    the export fails after it opened its .partial file, and removes it."""
    import sqlite3

    db = tmp_path / "odd.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE events (something INTEGER)")
    out = tmp_path / f"week.{fmt}"
    args = [
        "export",
        "--since",
        "7d",
        "--format",
        fmt,
        "--out",
        str(out),
        "--database-url",
        f"sqlite:///{db}",
    ]
    assert anpr(args) == 1
    assert "reading events failed" in _one_error_line(capsys.readouterr().err, "anpr export: ")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
def test_search_limit_must_be_a_positive_integer(sqlite_url, limit, capsys):
    with pytest.raises(SystemExit) as exit_info:
        anpr(["search", "AB", "--limit", limit, "--database-url", sqlite_url])
    assert exit_info.value.code == 2
    assert "argument --limit" in capsys.readouterr().err
    assert anpr(["search", "ABBC", "--prefix", "--limit", "1", "--database-url", sqlite_url]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3 and "newest 1 shown; more match" in captured.err
    # CSV and JSON cut short say so too (on stderr), and a list that fits says nothing.
    assert (
        anpr(["search", "ABBC", "--prefix", "--limit", "1", "--format", "csv", "--database-url", sqlite_url])
        == 0
    )
    assert "newest 1 shown" in capsys.readouterr().err
    assert (
        anpr(
            [
                "search",
                "ABBC",
                "--prefix",
                "--limit",
                "1000",
                "--format",
                "json",
                "--database-url",
                sqlite_url,
            ]
        )
        == 0
    )
    assert "shown" not in capsys.readouterr().err
