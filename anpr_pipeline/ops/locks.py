"""One lock for the jobs that rewrite or remove stored events in bulk.

``erase_plate`` reads every Parquet file holding a plate, then rewrites them and deletes the
rows; ``archive`` exports a month to an archive part and then drops it from the database;
``retention_sweep`` deletes expired Parquet files, archive parts and rows. Run side by side,
they undo each other: an erase that listed the archive before a month was archived misses
the new part (the erased plate stays in it), an erase rewriting a Parquet file that
retention just deleted brings the file back, and two erases rewriting the same file keep
only one of the edits. The Dagster run queue cannot order them (``anpr erase-plate`` and
``anpr ops <job>`` run outside it), so they take this lock themselves.

Where the lock lives follows the events database, which every one of them already uses:
- Postgres: a session-level advisory lock on a dedicated connection, released when the
  work ends or, if the process dies, when its connection closes;
- SQLite file: an exclusive ``flock`` on ``<database>.data-lock`` next to it (one machine);
- SQLite in memory: a lock of this process.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import sqlalchemy as sa

from anpr_pipeline.resources.event_store import EventStore

log = logging.getLogger(__name__)

# A key no other advisory lock of the project uses (those hash other names).
LOCK_NAME = "anpr_data_rewrite"
# An archive of a large month can hold the lock for many minutes; an erase waits that long.
DEFAULT_TIMEOUT_S = 3600.0
POLL_S = 1.0

_MEMORY_LOCK = threading.Lock()


class DataLockTimeout(RuntimeError):
    """Another erase, archive or retention run held the lock for longer than we waited."""


def _timeout_error(what: str, timeout_s: float) -> DataLockTimeout:
    return DataLockTimeout(
        f"{what}: another erase-plate, archive or retention_sweep run has held the data lock for "
        f"over {timeout_s:.0f} s; nothing was changed, try again when it has finished"
    )


def _poll(try_once: Callable[[], bool], what: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    if try_once():
        return
    log.info("%s: waiting for the data lock (an erase-plate, archive or retention_sweep run holds it)", what)
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        if try_once():
            return
    raise _timeout_error(what, timeout_s)


@contextmanager
def _postgres_lock(es: EventStore, what: str, timeout_s: float, poll_s: float) -> Iterator[None]:
    with es.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        acquire = sa.text("SELECT pg_try_advisory_lock(hashtext(:name))")
        _poll(lambda: bool(conn.execute(acquire, {"name": LOCK_NAME}).scalar_one()), what, timeout_s, poll_s)
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": LOCK_NAME})
            except Exception as exc:
                # The lock is the session's: closing the session releases it on the server
                # (a lost connection already has), and a connection that could not unlock
                # must not go back to the pool. The work itself is done: no failure.
                log.warning("%s: could not release the data lock (%s); closing its connection", what, exc)
                conn.invalidate()


@contextmanager
def _file_lock(path: Path, what: str, timeout_s: float, poll_s: float) -> Iterator[None]:
    with open(path, "a+b") as handle:

        def try_once() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        _poll(try_once, what, timeout_s, poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _memory_lock(what: str, timeout_s: float) -> Iterator[None]:
    if not _MEMORY_LOCK.acquire(timeout=timeout_s):
        raise _timeout_error(what, timeout_s)
    try:
        yield
    finally:
        _MEMORY_LOCK.release()


def data_lock(
    es: EventStore, what: str, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = POLL_S
) -> AbstractContextManager[None]:
    """The data lock, to hold for a block; ``what`` names the caller in log lines and errors."""
    if es.dialect == "postgresql":
        return _postgres_lock(es, what, timeout_s, poll_s)
    database = es.url.database
    if not database or database == ":memory:":
        return _memory_lock(what, timeout_s)
    path = Path(database).expanduser()
    return _file_lock(path.with_name(path.name + ".data-lock"), what, timeout_s, poll_s)
