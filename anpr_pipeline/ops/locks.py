"""One lock for the jobs that rewrite or remove stored events in bulk.

``erase_plate`` reads every Parquet file holding a plate, then rewrites them and deletes the
rows; ``archive`` exports a month to an archive part and then drops it from the database;
``retention_sweep`` deletes expired Parquet files, archive parts and rows. Run side by side,
they undo each other: an erase that listed the archive before a month was archived misses
the new part (the erased plate stays in it), an erase rewriting a Parquet file that
retention just deleted brings the file back, and two erases rewriting the same file keep
only one of the edits. The Dagster run queue cannot order them (``anpr erase-plate`` and
``anpr ops <job>`` run outside it), so they take this lock themselves.

``plate_events`` takes it *shared* while it reads the erased-plates list and writes a
video's rows and Parquet files: many videos write side by side, but never in the middle of
an erase (which would miss the new rows, or write the erased plate back after it), an
archive of the month or a retention sweep.

Where the lock lives follows the events database, which every one of them already uses:
- Postgres: a session-level advisory lock on a dedicated connection, released when the
  work ends or, if the process dies, when its connection closes;
- SQLite file: a ``flock`` on ``<database>.data-lock`` next to it (one machine), queued
  through ``<database>.data-lock.queue``;
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
from typing import IO

import sqlalchemy as sa

from anpr_pipeline.resources.event_store import EventStore

log = logging.getLogger(__name__)

# A key no other advisory lock of the project uses (those hash other names).
LOCK_NAME = "anpr_data_rewrite"
# An archive of a large month can hold the lock for many minutes; an erase waits that long.
DEFAULT_TIMEOUT_S = 3600.0
POLL_S = 1.0


class _SharedLock:
    """A readers-writer lock of this process: many shared holders or one exclusive. A waiting
    exclusive holder goes before shared holders that come after it (videos keep arriving;
    an erase must not wait for a gap between them)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    def acquire(self, shared: bool, timeout_s: float) -> bool:
        with self._cond:
            if shared:
                ok = self._cond.wait_for(
                    lambda: not self._exclusive and not self._exclusive_waiting, timeout=timeout_s
                )
                self._shared += ok
                return ok
            self._exclusive_waiting += 1
            try:
                ok = self._cond.wait_for(lambda: not self._exclusive and not self._shared, timeout=timeout_s)
            finally:
                self._exclusive_waiting -= 1
                self._cond.notify_all()
            if ok:  # a waiter that timed out must not clear the flag of the one holding it
                self._exclusive = True
            return ok

    def release(self, shared: bool) -> None:
        with self._cond:
            if shared:
                self._shared -= 1
            else:
                self._exclusive = False
            self._cond.notify_all()


_MEMORY_LOCK = _SharedLock()


class DataLockTimeout(RuntimeError):
    """Another erase, archive or retention run held the lock for longer than we waited."""


def _timeout_error(what: str, timeout_s: float) -> DataLockTimeout:
    return DataLockTimeout(
        f"{what}: another erase-plate, archive or retention_sweep run, or a video's event write, has "
        f"held the data lock for over {timeout_s:.0f} s; nothing was changed, try again when it has finished"
    )


def _log_waiting(what: str) -> None:
    log.info(
        "%s: waiting for the data lock (an erase-plate, archive or retention_sweep run, or video "
        "event writes, hold it)",
        what,
    )


def _poll(try_once: Callable[[], bool], what: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    if try_once():
        return
    _log_waiting(what)
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        if try_once():
            return
    raise _timeout_error(what, timeout_s)


# Postgres' "lock not available" (lock_timeout ran out) and "query cancelled" (statement_timeout).
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"
_TIMEOUTS = ("lock_timeout", "statement_timeout")


def _wait_for_postgres_lock(conn: sa.Connection, take: sa.TextClause, what: str, timeout_s: float) -> None:
    """Block in the server's lock queue, so a waiting erase goes before the video writes that
    ask after it (polling with try-lock would wait for a moment when no video is writing).

    Both timeouts are set for the wait (a database's own statement_timeout would cut it short)
    and put back as they were: the connection returns to the pool."""
    _log_waiting(what)
    before = conn.execute(
        sa.text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
    ).one()
    set_timeout = sa.text("SELECT set_config(:name, :value, false)")
    # 0 would mean no limit; the values are whole milliseconds.
    wait_ms = max(1, int(timeout_s * 1000))
    conn.execute(set_timeout, {"name": "lock_timeout", "value": f"{wait_ms}ms"})
    conn.execute(set_timeout, {"name": "statement_timeout", "value": f"{wait_ms + 10_000}ms"})
    try:
        conn.execute(take, {"name": LOCK_NAME})
    except sa.exc.OperationalError as exc:
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code in (_LOCK_NOT_AVAILABLE, _QUERY_CANCELED):
            raise _timeout_error(what, timeout_s) from None
        raise
    finally:
        for name, value in zip(_TIMEOUTS, before, strict=True):
            conn.execute(set_timeout, {"name": name, "value": value})


@contextmanager
def _postgres_lock(es: EventStore, what: str, shared: bool, timeout_s: float) -> Iterator[None]:
    mode = "_shared" if shared else ""
    with es.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try:
            if not conn.execute(
                sa.text(f"SELECT pg_try_advisory_lock{mode}(hashtext(:name))"), {"name": LOCK_NAME}
            ).scalar_one():
                _wait_for_postgres_lock(
                    conn, sa.text(f"SELECT pg_advisory_lock{mode}(hashtext(:name))"), what, timeout_s
                )
        except BaseException:
            # The lock may have been granted as the error came (an interrupt, a failed reset of
            # the timeouts): closing the session releases it, where the pool would keep it.
            conn.invalidate()
            raise
        try:
            yield
        finally:
            try:
                conn.execute(
                    sa.text(f"SELECT pg_advisory_unlock{mode}(hashtext(:name))"), {"name": LOCK_NAME}
                )
            except Exception as exc:
                # The lock is the session's: closing the session releases it on the server
                # (a lost connection already has), and a connection that could not unlock
                # must not go back to the pool. The work itself is done: no failure.
                log.warning("%s: could not release the data lock (%s); closing its connection", what, exc)
                conn.invalidate()


def _try_flock(handle: IO[bytes], mode: int) -> bool:
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _try_shared_behind_queue(handle: IO[bytes], queue: IO[bytes]) -> bool:
    """A shared try, only when no exclusive waiter holds the queue; the queue is not kept while
    waiting, so a second exclusive waiter can queue behind the first."""
    if not _try_flock(queue, fcntl.LOCK_SH):
        return False
    try:
        return _try_flock(handle, fcntl.LOCK_SH)
    finally:
        fcntl.flock(queue, fcntl.LOCK_UN)


@contextmanager
def _file_lock(path: Path, what: str, shared: bool, timeout_s: float, poll_s: float) -> Iterator[None]:
    """flock on ``path``, queued through ``path.queue``: an exclusive waiter holds the queue
    while it waits, so video writes that come after it wait behind it instead of keeping the
    lock shared for ever."""
    deadline = time.monotonic() + timeout_s
    with open(path, "a+b") as handle, open(path.with_name(path.name + ".queue"), "a+b") as queue:
        if shared:
            _poll(lambda: _try_shared_behind_queue(handle, queue), what, timeout_s, poll_s)
        else:
            _poll(lambda: _try_flock(queue, fcntl.LOCK_EX), what, timeout_s, poll_s)
            try:
                _poll(
                    lambda: _try_flock(handle, fcntl.LOCK_EX),
                    what,
                    max(0.0, deadline - time.monotonic()),
                    poll_s,
                )
            finally:
                fcntl.flock(queue, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _memory_lock(what: str, shared: bool, timeout_s: float) -> Iterator[None]:
    if not _MEMORY_LOCK.acquire(shared, timeout_s):
        raise _timeout_error(what, timeout_s)
    try:
        yield
    finally:
        _MEMORY_LOCK.release(shared)


def data_lock(
    es: EventStore,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = POLL_S,
    *,
    shared: bool = False,
) -> AbstractContextManager[None]:
    """The data lock, to hold for a block; ``what`` names the caller in log lines and errors.

    ``shared``: held beside other shared holders (video writes), never beside an exclusive
    one (erase, archive, retention). ``poll_s``: how often a SQLite file lock is retried
    (Postgres and the in-process lock queue the waiter instead)."""
    if es.dialect == "postgresql":
        return _postgres_lock(es, what, shared, timeout_s)
    database = es.url.database
    if not database or database == ":memory:":
        return _memory_lock(what, shared, timeout_s)
    path = Path(database).expanduser()
    return _file_lock(path.with_name(path.name + ".data-lock"), what, shared, timeout_s, poll_s)
