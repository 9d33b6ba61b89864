"""Events store on SQLite and on a real Postgres, including a server stopped mid-write."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from anpr_pipeline.resources.event_store import (
    EventStore,
    EventStoreError,
    EventStoreResource,
    normalize_plate,
    partition_name,
)
from anpr_pipeline.settings import load_settings
from anpr_pipeline_tests.servers import PgCluster, free_port

VIDEO = "cam1/20240315T080000Z"
T0 = datetime(2024, 3, 15, 8, 0, tzinfo=UTC)


def make_rows(
    video_key: str = VIDEO,
    n: int = 10,
    start: datetime = T0,
    plates: tuple[str, ...] = ("AB123CD", "XY98ZZ", "KLM4567"),
    camera_id: str = "cam1",
    version: str = "v1",
) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        plate = plates[i % len(plates)]
        t = start + timedelta(seconds=2 * i)
        rows.append(
            {
                "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{video_key}#{i}")),
                "camera_id": camera_id,
                "captured_at": t,
                "first_seen_at": t - timedelta(seconds=1),
                "last_seen_at": t + timedelta(seconds=1),
                "plate_text": plate[:3] + " " + plate[3:],
                "normalized_plate": plate,
                "region": "eu",
                "confidence": 0.875,
                "char_confidences": [0.5 + 0.05 * k for k in range(len(plate))],
                "bbox_x": 10,
                "bbox_y": 20,
                "bbox_w": 120,
                "bbox_h": 30,
                "frame_index": 3 * i,
                "frames_seen": 4,
                "video_key": video_key,
                "crop_key": f"crops/{camera_id}/2024-03-15/080000/{3 * i}_0.jpg",
                "detector_version": "det-" + version,
                "reader_version": "rd-" + version,
            }
        )
    return rows


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> EventStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nested' / 'events.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    s = EventStore(url)
    s.init_schema()
    yield s
    s.dispose()


# -- pure helpers ------------------------------------------------------------------------------


def test_normalize_plate_keeps_a_to_z_and_digits() -> None:
    from anpr_pipeline.vision.plates import normalize

    assert normalize_plate("ab-123 cd") == "AB123CD"
    # Typed as written, a German plate with an umlaut is the plate the reader stored, not
    # another one with the letter dropped (MAB123 is a different, valid Munich plate).
    for typed, stored in (("MÜ-AB 123", "MUAB123"), ("TÖL X 12", "TOLX12"), ("ＡＢ１２３", "AB123")):
        assert normalize_plate(typed) == normalize(typed) == stored


# -- schema --------------------------------------------------------------------------------------


def test_init_schema_is_idempotent_and_creates_indexes(store: EventStore) -> None:
    store.init_schema()
    store.init_schema()
    assert store.schema_version() == 3
    names = set(store.index_names())
    assert {
        "ix_events_camera_captured",
        "ix_events_plate_captured",
        "ix_events_plate_prefix",
        "ix_events_created_at",
    } <= names
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"watchlist_alerts", "erased_plates", "camera_hourly_stats"} <= tables


INIT_IN_A_WORKER = """
import sys
from anpr_pipeline.resources.event_store import EventStore
EventStore(sys.argv[1]).init_schema()
"""


def test_workers_creating_the_schema_of_a_new_sqlite_file_at_once_all_succeed(tmp_path) -> None:
    """Run workers start together on a fresh embedded database; DDL in pysqlite runs outside a
    transaction, so without a lock some failed with "table ... already exists"."""
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'events{attempt}.db'}"
        workers = [
            subprocess.Popen([sys.executable, "-c", INIT_IN_A_WORKER, url], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        failures = [err for w in workers if (err := w.communicate()[1]) and w.returncode != 0]
        assert failures == []
        assert EventStore(url).schema_version() == 3


def test_init_schema_upgrades_a_version_1_database(store: EventStore) -> None:
    """A database made by v1 (no created_at index, no watchlist_alerts) gets them, rows kept."""
    store.replace_video_events("cam1/20240315T080000Z", make_rows("cam1/20240315T080000Z", n=3))
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_events_created_at"))
        conn.execute(sa.text("DROP TABLE watchlist_alerts"))
        conn.execute(sa.text("UPDATE anpr_schema SET version = 1"))
    upgraded = EventStore(str(store.url.render_as_string(hide_password=False)))
    upgraded.init_schema()
    assert upgraded.schema_version() == 3 and "ix_events_created_at" in upgraded.index_names()
    assert sa.inspect(upgraded.engine).has_table("watchlist_alerts") and upgraded.count() == 3
    assert sa.inspect(upgraded.engine).has_table("erased_plates")
    upgraded.dispose()
    cols = {c["name"] for c in sa.inspect(store.engine).get_columns("events")}
    assert {"id", "event_id", "captured_at", "char_confidences", "created_at", "video_key"} <= cols


def test_sqlite_url_creates_parent_dir(tmp_path: Path) -> None:
    s = EventStore(f"sqlite:///{tmp_path / 'a' / 'b' / 'events.db'}")
    s.init_schema()
    assert (tmp_path / "a" / "b" / "events.db").is_file() and s.count() == 0


def test_sqlite_url_with_a_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = EventStore("sqlite:///~/anpr/events.db")
    s.init_schema()  # SQLite itself would look for a folder named "~"
    assert (tmp_path / "anpr" / "events.db").is_file() and s.count() == 0
    s.dispose()


@pytest.mark.postgres
def test_postgres_partitions_and_keys(fresh_postgres_url: str) -> None:
    s = EventStore(fresh_postgres_url)
    s.init_schema()
    month = datetime.now(UTC).date().replace(day=1)
    expected = {"events_default", partition_name(month)}
    for _ in range(2):
        month = (month + timedelta(days=32)).replace(day=1)
        expected.add(partition_name(month))
    assert set(s.partitions()) == expected
    with s.engine.connect() as conn:
        strategy = conn.execute(
            sa.text("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'events'::regclass")
        ).scalar_one()
        assert strategy == "r"
        unique = (
            conn.execute(
                sa.text(
                    "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid='events'::regclass AND indisunique"
                )
            )
            .scalars()
            .all()
        )
        assert any("(event_id, captured_at)" in d for d in unique)
        prefix = conn.execute(
            sa.text("SELECT pg_get_indexdef('ix_events_plate_prefix'::regclass)")
        ).scalar_one()
        assert "text_pattern_ops" in prefix
        types = dict(
            conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name='events'"
                )
            ).all()
        )
        assert types["event_id"] == "uuid" and types["char_confidences"] == "jsonb"
        assert types["captured_at"] == "timestamp with time zone"
    assert s.ensure_month_partitions() == []  # nothing more to do


@pytest.mark.postgres
def test_postgres_plate_search_uses_the_index(fresh_postgres_url: str) -> None:
    s = EventStore(fresh_postgres_url)
    s.init_schema()
    s.replace_video_events(VIDEO, make_rows(n=50))
    with s.engine.connect() as conn:
        conn.execute(sa.text("ANALYZE events"))
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = "\n".join(
            conn.execute(
                sa.text("EXPLAIN SELECT * FROM events WHERE normalized_plate = :p ORDER BY captured_at DESC"),
                {"p": "AB123CD"},
            ).scalars()
        )
        assert "Seq Scan" not in plan, plan
        assert "normalized_plate_captured_at_idx" in plan or "ix_events_plate_captured" in plan, plan
        prefix_plan = "\n".join(
            conn.execute(sa.text("EXPLAIN SELECT * FROM events WHERE normalized_plate LIKE 'AB1%'")).scalars()
        )
        assert "Seq Scan" not in prefix_plan, prefix_plan
        assert "~>=~" in prefix_plan, prefix_plan  # the text_pattern_ops range condition


def test_sqlite_plate_search_uses_the_index(tmp_path: Path) -> None:
    s = EventStore(f"sqlite:///{tmp_path / 'e.db'}")
    s.init_schema()
    with s.engine.connect() as conn:
        plan = " ".join(
            str(r)
            for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT * FROM events WHERE normalized_plate = 'AB' ORDER BY captured_at DESC"
            )
        )
    assert "ix_events_plate_captured" in plan, plan


# -- writes and reads ---------------------------------------------------------------------------


def test_round_trip_values(store: EventStore) -> None:
    rows = make_rows(n=3)
    assert store.replace_video_events(VIDEO, rows) == 3
    got = store.events_for_video(VIDEO)
    assert [g["event_id"] for g in got] == [r["event_id"] for r in rows]
    first = got[0]
    for key in ("camera_id", "plate_text", "normalized_plate", "region", "bbox_x", "frame_index", "crop_key"):
        assert first[key] == rows[0][key]
    assert first["captured_at"] == rows[0]["captured_at"] and first["captured_at"].tzinfo is not None
    assert first["char_confidences"] == pytest.approx(rows[0]["char_confidences"])
    assert first["confidence"] == pytest.approx(0.875)
    assert isinstance(first["id"], int) and first["created_at"].tzinfo is not None


def test_replace_is_idempotent_and_scoped_to_the_video(store: EventStore) -> None:
    other = make_rows("cam2/20240315T090000Z", n=4, camera_id="cam2")
    store.replace_video_events("cam2/20240315T090000Z", other)
    rows = make_rows(n=12)
    assert store.replace_video_events(VIDEO, rows) == 12
    before = store.count()
    assert store.replace_video_events(VIDEO, rows) == 12  # re-run
    assert store.count() == before == 16
    # A re-run that finds fewer events removes the stale ones, and only this video's.
    assert store.replace_video_events(VIDEO, make_rows(n=5, version="v2")) == 5
    assert store.count(VIDEO) == 5 and store.count("cam2/20240315T090000Z") == 4
    assert {r["reader_version"] for r in store.events_for_video(VIDEO)} == {"rd-v2"}
    assert store.replace_video_events(VIDEO, []) == 0 and store.count() == 4


def test_concurrent_replaces_of_one_video_do_not_collide(store: EventStore) -> None:
    versions = [make_rows(n=60, version=f"v{i}") for i in range(6)]
    errors: list[BaseException] = []

    def replace(rows: list[dict[str, Any]]) -> None:
        try:
            store.replace_video_events(VIDEO, rows)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=replace, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    got = store.events_for_video(VIDEO)
    assert len(got) == 60 == len({r["event_id"] for r in got})
    assert len({r["reader_version"] for r in got}) == 1  # one whole version won, not a mix


def test_rows_are_validated(store: EventStore) -> None:
    bad = make_rows(n=1)
    del bad[0]["camera_id"]
    with pytest.raises(ValueError, match="camera_id"):
        store.replace_video_events(VIDEO, bad)
    with pytest.raises(ValueError, match="video_key"):
        store.replace_video_events("cam9/20240101T000000Z", make_rows(n=1))


def test_search_modes_and_filters(store: EventStore) -> None:
    store.replace_video_events(VIDEO, make_rows(n=9))  # AB123CD, XY98ZZ, KLM4567 x3 each
    store.replace_video_events(
        "cam2/20240316T000000Z",
        make_rows(
            "cam2/20240316T000000Z",
            n=3,
            start=T0 + timedelta(days=1),
            camera_id="cam2",
            plates=("A8I23CD", "AB124CD", "AB1"),
        ),
    )
    exact = store.search("ab-123 cd")
    assert len(exact) == 3 and {r["normalized_plate"] for r in exact} == {"AB123CD"}
    assert [r["captured_at"] for r in exact] == sorted((r["captured_at"] for r in exact), reverse=True)
    assert {r["normalized_plate"] for r in store.search("AB1", mode="prefix")} == {
        "AB123CD",
        "AB124CD",
        "AB1",
    }
    fuzzy = {r["normalized_plate"] for r in store.search("AB123CD", mode="fuzzy")}
    assert fuzzy == {"AB123CD", "A8I23CD", "AB124CD"}
    assert {r["camera_id"] for r in store.search("AB123CD", mode="fuzzy", camera_id="cam2")} == {"cam2"}
    assert len(store.search("AB123CD", since=T0 + timedelta(seconds=1))) == 2
    assert len(store.search("AB123CD", until=T0 + timedelta(seconds=1))) == 1
    assert len(store.search("AB123CD", limit=2)) == 2
    assert store.search("ZZZZZZZ", mode="fuzzy") == []
    with pytest.raises(ValueError):
        store.search("AB1", mode="regex")


def test_insert_for_a_month_without_partition(store: EventStore) -> None:
    # A backfilled video from years ago: no monthly partition exists for it.
    old_video = "cam1/20190310T120000Z"
    rows = make_rows(old_video, n=6, start=datetime(2019, 3, 10, 12, tzinfo=UTC))
    assert store.replace_video_events(old_video, rows) == 6
    assert store.count(old_video) == 6
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            in_default = conn.execute(sa.text("SELECT count(*) FROM events_default")).scalar_one()
        assert in_default == 6
        # Maintenance moves them into a proper partition; nothing lost, nothing doubled.
        assert store.ensure_month_partitions() == ["events_y2019m03"]
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM events_default")).scalar_one() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM events_y2019m03")).scalar_one() == 6
        assert store.count(old_video) == 6
        assert [r["event_id"] for r in store.events_for_video(old_video)] == [r["event_id"] for r in rows]
        assert store.replace_video_events(old_video, rows) == 6 and store.count() == 6


def test_ensure_month_partitions_ahead(fresh_postgres_url: str) -> None:
    s = EventStore(fresh_postgres_url)
    s.init_schema()
    created = s.ensure_month_partitions(months_ahead=3, today=date(2031, 11, 5))
    assert created == ["events_y2031m11", "events_y2031m12", "events_y2032m01", "events_y2032m02"]
    row = make_rows("cam1/20320201T000000Z", n=1, start=datetime(2032, 2, 29, 23, 59, tzinfo=UTC))
    s.replace_video_events("cam1/20320201T000000Z", row)
    with s.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events_y2032m02")).scalar_one() == 1


def test_partition_upkeep_gives_up_on_a_held_lock_instead_of_queueing_writers(
    fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long transaction holding events (a report, a dump) must not let the nightly
    ACCESS EXCLUSIVE request sit in the lock queue, where every writer would wait behind it."""
    from anpr_pipeline.resources import event_store as module

    monkeypatch.setattr(module, "PARTITION_LOCK_TIMEOUT", "300ms")
    s = EventStore(fresh_postgres_url)
    s.init_schema()
    with s.engine.connect() as reader:
        reader.execute(sa.text("BEGIN"))
        reader.execute(sa.text("SELECT count(*) FROM events"))  # holds ACCESS SHARE till the end
        with pytest.raises(EventStoreError, match="stayed locked by another transaction for 300ms"):
            s.ensure_month_partitions(today=date(2033, 1, 1))
        reader.execute(sa.text("ROLLBACK"))
    assert "events_y2033m01" not in s.partitions()
    assert s.ensure_month_partitions(today=date(2033, 1, 1))[0] == "events_y2033m01"  # later: fine
    s.dispose()


def test_resource_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANPR_DATABASE_URL", f"sqlite:///{tmp_path / 'ev.db'}")
    store = EventStoreResource.from_settings(load_settings()).get_store()
    assert store.dialect == "sqlite" and store.count() == 0


# -- faults --------------------------------------------------------------------------------------


def test_unreachable_database_is_a_clear_error() -> None:
    port = free_port()
    s = EventStore(
        f"postgresql+psycopg://anpr:s3cret-pw@127.0.0.1:{port}/events_db",
        retries=1,
        retry_backoff_s=0.05,
        connect_timeout_s=2,
    )
    with pytest.raises(EventStoreError) as err:
        s.init_schema()
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "events_db" in msg and "unreachable" in msg
    assert "s3cret-pw" not in msg


@pytest.mark.postgres
def test_a_missing_database_is_a_configuration_error_not_retried(postgres_url: str) -> None:
    # The server answered: retrying for a minute would only delay the message.
    url = sa.make_url(postgres_url).set(database="anpr_no_such_db").render_as_string(hide_password=False)
    s = EventStore(url, retries=5, retry_backoff_s=10)
    with pytest.raises(EventStoreError) as err:
        s.init_schema()  # with retries it would take 150 s
    msg = str(err.value)
    assert 'database "anpr_no_such_db" does not exist' in msg and "check ANPR_DATABASE_URL" in msg
    assert "attempt(s)" not in msg


def _wait_for_blocked_copy(admin_url: str, timeout_s: float = 30) -> None:
    """Wait until a COPY into events is waiting on a lock (i.e. the write is mid-way)."""
    end = time.monotonic() + timeout_s
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < end:
            n = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'COPY events%'"
            ).fetchone()[0]
            if n:
                return
            time.sleep(0.05)
    raise AssertionError("the COPY never blocked")


def _hold_conflicting_row(db_url: str, row: dict[str, Any]) -> psycopg.Connection:
    """An open transaction that inserted a row with the same (event_id, captured_at) as `row`.

    The store's COPY then waits on the unique index for this transaction: the replace is
    stuck after its DELETE and part of its COPY, exactly 'mid-write'.
    """
    conn = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
    conn.execute(
        "INSERT INTO events (event_id, camera_id, captured_at, first_seen_at, last_seen_at, plate_text,"
        " normalized_plate, confidence, char_confidences, bbox_x, bbox_y, bbox_w, bbox_h, frame_index,"
        " frames_seen, video_key, detector_version, reader_version, created_at) VALUES"
        " (%s, 'blocker', %s, %s, %s, 'X', 'X', 0, '[]', 0, 0, 0, 0, 0, 0, 'blocker', 'x', 'x', now())",
        (row["event_id"], row["captured_at"], row["captured_at"], row["captured_at"]),
    )
    return conn  # transaction left open on purpose


@pytest.mark.postgres
def test_postgres_stopped_before_write_fails_clearly_then_retry_completes(pg_cluster: PgCluster) -> None:
    s = EventStore(pg_cluster.new_database(), retries=1, retry_backoff_s=0.1, connect_timeout_s=2)
    s.init_schema()
    rows = make_rows(n=40)
    pg_cluster.stop()
    with pytest.raises(EventStoreError) as err:
        s.replace_video_events(VIDEO, rows)
    assert f"127.0.0.1:{pg_cluster.port}" in str(err.value) and "anpr_fault" in str(err.value)
    pg_cluster.start()
    assert s.replace_video_events(VIDEO, rows) == 40
    assert s.count() == 40 and len({r["event_id"] for r in s.events_for_video(VIDEO)}) == 40
    s.dispose()


@pytest.mark.postgres
def test_postgres_stopped_mid_write_rolls_back_then_rerun_is_exact(pg_cluster: PgCluster) -> None:
    url = pg_cluster.new_database()
    s = EventStore(url, retries=0, connect_timeout_s=2)
    s.init_schema()
    v1, v2 = make_rows(n=300, version="v1"), make_rows(n=400, version="v2")
    s.replace_video_events(VIDEO, v1)
    blocker = _hold_conflicting_row(url, v2[-1])
    errors: list[BaseException] = []

    def write() -> None:
        try:
            s.replace_video_events(VIDEO, v2)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        _wait_for_blocked_copy(pg_cluster.admin_url)
        # A crash, not a fast shutdown: a fast shutdown ends the lock holder's transaction
        # cleanly, which can release the lock and let the COPY commit before the writer's own
        # backend is told to stop. After a crash nothing is released, so the write must fail.
        pg_cluster.stop("immediate")
    finally:
        writer.join(60)
        blocker.close()
    assert len(errors) == 1 and isinstance(errors[0], EventStoreError), errors
    assert f"127.0.0.1:{pg_cluster.port}" in str(errors[0])
    pg_cluster.start()
    # The interrupted transaction rolled back: the previous version is intact, not half-replaced.
    assert s.count(VIDEO) == 300 and s.count() == 300
    assert {r["reader_version"] for r in s.events_for_video(VIDEO)} == {"rd-v1"}
    assert s.replace_video_events(VIDEO, v2) == 400  # the retried run
    got = s.events_for_video(VIDEO)
    assert len(got) == 400 == len({r["event_id"] for r in got}) and s.count() == 400
    s.dispose()


@pytest.mark.postgres
def test_postgres_restart_during_write_is_retried_transparently(
    pg_cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    url = pg_cluster.new_database()
    s = EventStore(url, retries=8, retry_backoff_s=0.5, connect_timeout_s=2)
    s.init_schema()
    v1, v2 = make_rows(n=200, version="v1"), make_rows(n=250, version="v2")
    s.replace_video_events(VIDEO, v1)
    blocker = _hold_conflicting_row(url, v2[-1])
    result: list[Any] = []
    writer = threading.Thread(
        target=lambda: result.append(_capture(lambda: s.replace_video_events(VIDEO, v2)))
    )
    with caplog.at_level(logging.WARNING, logger="anpr_pipeline.resources.event_store"):
        writer.start()
        try:
            _wait_for_blocked_copy(pg_cluster.admin_url)
            pg_cluster.stop()
            blocker.close()
            time.sleep(1.0)  # the writer is now retrying against a stopped server
            pg_cluster.start()
        finally:
            writer.join(120)
    assert result == [250], result
    # The fast shutdown terminates the lock holder and the writer at the same moment: usually
    # the writer's COPY is aborted and retried (a "transient error" warning), but now and then
    # the lock is released first and the COPY commits just before the server goes down.
    # Either way the outcome must be the new version exactly once.
    retried = any("transient error" in r.getMessage() for r in caplog.records)
    got = s.events_for_video(VIDEO)
    assert len(got) == 250 == len({r["event_id"] for r in got}) and s.count() == 250, retried
    assert {r["reader_version"] for r in got} == {"rd-v2"}
    s.dispose()


def _capture(fn: Any) -> Any:
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - reported through the result list
        return exc
