"""The data lock on both backends: a second holder (another process, as `anpr erase-plate`
beside the daemon's archive run would be) waits, times out with a clear error, and gets the
lock once it is released; erase_plate waits for a run holding it instead of interleaving."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from anpr_pipeline.ops.gdpr import erase_plate
from anpr_pipeline.ops.locks import DataLockTimeout, data_lock
from anpr_pipeline.ops.retention import run_retention
from anpr_pipeline.resources.event_store import EventStore
from anpr_pipeline.settings import Settings
from anpr_pipeline_tests.ops.test_gdpr import PLATE, SALT, _two_videos

HOLDER = """
import sys
from anpr_pipeline.ops.locks import data_lock
from anpr_pipeline.resources.event_store import EventStore
with data_lock(EventStore(sys.argv[1]), "holder", shared=sys.argv[2:] == ["shared"]):
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextmanager
def held_elsewhere(url: str, shared: bool = False) -> Iterator[subprocess.Popen]:
    """The lock held by another process (a run worker) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, *(["shared"] if shared else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_process_waits_times_out_then_gets_the_lock(backend):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, backend.database_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(DataLockTimeout, match=r"^erase-plate: another erase-plate, archive or retention"):
            with data_lock(backend.events, "erase-plate", timeout_s=0.5, poll_s=0.05):
                pytest.fail("the lock was taken twice")
        assert time.monotonic() - started >= 0.5
        holder.stdin.write("\n")
        holder.stdin.flush()
        with data_lock(backend.events, "erase-plate", timeout_s=30, poll_s=0.05):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_the_block_raises(backend):
    with pytest.raises(ValueError):
        with data_lock(backend.events, "first"):
            raise ValueError("boom")
    # Another pool (another session): Postgres lets the session that holds a lock take it again.
    elsewhere = EventStore(backend.database_url)
    try:
        with data_lock(elsewhere, "second", timeout_s=0.5, poll_s=0.05):
            pass
    finally:
        elsewhere.dispose()


@pytest.mark.postgres
def test_a_lost_lock_connection_does_not_fail_the_finished_work(fresh_postgres_url):
    """The lock's session killed (a server restart, a network drop): the server has released
    the lock with it, so the work done inside still succeeds, and others can take the lock."""
    es = EventStore(fresh_postgres_url)
    holder = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    with data_lock(es, "erase-plate"):
        with es.engine.connect() as conn:
            [pid] = conn.execute(sa.text(holder)).scalars().all()
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    elsewhere = EventStore(fresh_postgres_url)
    with data_lock(elsewhere, "archive", timeout_s=1, poll_s=0.05):
        pass
    elsewhere.dispose()
    es.dispose()


def waits_for_the_lock(backend, work, untouched) -> None:
    """`work` started while another run holds the lock does not finish (and `untouched`
    still holds) until the lock is released, then finishes."""
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (work(), finished.set()), daemon=True)
    with data_lock(backend.events, "another run"):
        worker.start()
        assert not finished.wait(1.5)
        untouched()
    worker.join(30)
    assert finished.is_set()


def test_erase_waits_for_the_run_holding_the_lock(backend):
    _two_videos(backend)
    with data_lock(backend.events, "archive 2024-01"):
        # A dry run only reads: it does not queue behind the archive.
        assert erase_plate(PLATE, backend.events, backend.store, SALT, dry_run=True).events_deleted == 2

    def nothing_erased() -> None:
        assert len(backend.events.search(PLATE)) == 2

    waits_for_the_lock(
        backend, lambda: erase_plate(PLATE, backend.events, backend.store, SALT), nothing_erased
    )
    assert backend.events.search(PLATE) == []


def test_retention_sweep_waits_for_the_run_holding_the_lock(backend):
    _two_videos(backend)  # events 1 and 3 days old
    policy = Settings(retention_events_days=2)
    now = datetime.now(UTC)

    def nothing_deleted() -> None:
        assert len(backend.events.search(PLATE)) == 2

    waits_for_the_lock(
        backend,
        lambda: run_retention(now, backend.store, backend.events, policy, processed=set()),
        nothing_deleted,
    )
    assert len(backend.events.search(PLATE)) == 1  # the 3-day-old event went


def test_video_writes_share_the_lock_and_exclusive_runs_wait_for_them(backend):
    """plate_events of several videos hold the lock together; an erase waits for them."""
    with held_elsewhere(backend.database_url, shared=True):
        with data_lock(backend.events, "plate_events b", timeout_s=2, poll_s=0.05, shared=True):
            pass
        with pytest.raises(DataLockTimeout, match=r"^erase-plate: .*a video's event write"):
            with data_lock(backend.events, "erase-plate", timeout_s=0.5, poll_s=0.05):
                pytest.fail("the lock was taken beside a video write")
    with data_lock(backend.events, "erase-plate", timeout_s=5, poll_s=0.05):
        with pytest.raises(DataLockTimeout):
            with data_lock(backend.events, "plate_events c", timeout_s=0.5, poll_s=0.05, shared=True):
                pytest.fail("a video wrote during an erase")


def test_a_waiting_erase_goes_before_video_writes_that_come_after_it(backend):
    """Videos keep arriving: an erase waiting for one video's write must not also wait for
    every write that starts while it waits (it would wait until no video is writing)."""
    got_it = threading.Event()
    with held_elsewhere(backend.database_url, shared=True) as first_video:

        def erase() -> None:
            with data_lock(backend.events, "erase-plate", timeout_s=30, poll_s=0.05):
                got_it.set()
                time.sleep(0.5)

        eraser = threading.Thread(target=erase, daemon=True)
        eraser.start()
        time.sleep(1.0)  # the eraser is waiting now
        with pytest.raises(DataLockTimeout):
            with data_lock(backend.events, "plate_events later", timeout_s=0.5, poll_s=0.05, shared=True):
                pytest.fail("a later video write went before the waiting erase")
        assert not got_it.is_set()
        first_video.stdin.write("\n")
        first_video.stdin.flush()
        assert got_it.wait(30)
    eraser.join(30)
    with data_lock(backend.events, "plate_events later", timeout_s=5, poll_s=0.05, shared=True):
        pass


def test_in_memory_sqlite_has_the_same_shared_and_exclusive_rules():
    es = EventStore("sqlite://")
    with data_lock(es, "plate_events a", shared=True), data_lock(es, "plate_events b", shared=True):
        with pytest.raises(DataLockTimeout):
            with data_lock(es, "erase-plate", timeout_s=0.2):
                pytest.fail("exclusive beside shared holders")
    with data_lock(es, "erase-plate"):
        with pytest.raises(DataLockTimeout):
            with data_lock(es, "plate_events a", timeout_s=0.2, shared=True):
                pytest.fail("shared beside the exclusive holder")
    with data_lock(es, "plate_events a", timeout_s=0.2, shared=True):
        pass
    es.dispose()


def test_an_exclusive_waiter_that_times_out_leaves_the_holder_exclusive():
    es = EventStore("sqlite://")
    with data_lock(es, "erase-1"):
        with pytest.raises(DataLockTimeout):
            with data_lock(es, "erase-2", timeout_s=0.2):
                pytest.fail("two exclusive holders")
        with pytest.raises(DataLockTimeout):
            with data_lock(es, "plate_events", timeout_s=0.2, shared=True):
                pytest.fail("a video wrote while erase-1 held the lock")
    es.dispose()


@pytest.mark.postgres
def test_a_database_statement_timeout_neither_cuts_the_wait_nor_is_lost(fresh_postgres_url):
    """The wait is one blocking statement: a database-wide statement_timeout shorter than the
    wait must not end it, and the pooled connection keeps the database's settings after."""
    database = sa.make_url(fresh_postgres_url).database
    admin = sa.create_engine(
        sa.make_url(fresh_postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET statement_timeout = '1s'"))
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET lock_timeout = '7s'"))
    es = EventStore(fresh_postgres_url)
    holding = threading.Event()

    def archive() -> None:
        with data_lock(es, "archive 2026-05", timeout_s=30):
            holding.set()
            time.sleep(2.5)

    holder = threading.Thread(target=archive, daemon=True)
    holder.start()
    assert holding.wait(10)
    started = time.monotonic()
    with data_lock(es, "erase-plate", timeout_s=30, poll_s=0.05):
        assert time.monotonic() - started >= 1.5
    holder.join(30)
    for _ in range(3):  # whichever pooled connection comes back
        with es.engine.connect() as conn:
            settings = conn.execute(
                sa.text("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
            ).one()
            assert tuple(settings) == ("1s", "7s")
    es.dispose()
    admin.dispose()
