"""Archive: old videos to a colder prefix, old events to an archive Parquet dataset.

Videos recorded more than ``archive_videos_after_days`` ago (time from the key, sidecars
included) are copied from ``uploads/…`` to ``archive/uploads/…`` — on S3 with
``StorageClass`` = ``s3_archive_storage_class`` (a colder, cheaper class) — and the
original is deleted only after the copy is verified: same size, and same ETag when both
are single-part MD5 ETags (a multipart copy changes the ETag format, so size is the check
there). Retention still applies to archived videos (class ``videos`` covers both
prefixes). A video moved to the archive is no longer re-processable by ``process_video``,
so an upload whose partition has no ``plate_events`` yet is moved only once its LastModified
is older than the period too (a late upload is still queued; an abandoned one still goes).

Events: every whole calendar month that ended more than ``archive_events_after_days`` ago
is exported, streamed in batches, to ``archive/events/month=YYYY-MM/part-<digest>.parquet``
(all columns, including ``camera_id`` and ``created_at``). The file is read back and its
row count and a SHA-256 over its event ids (in file order) must equal what was written
before anything is removed. Then, in one write transaction that re-reads the month and
checks every row against the export (nothing arrived, left or was replaced meanwhile; on
Postgres by a digest the server computes, in the export's snapshot and again here),
the month's Postgres partition is detached and dropped, or the rows deleted (DEFAULT
partition, SQLite). The part name is a digest of the archived event ids,
so a re-run after a crash between upload and delete overwrites the same part instead of
duplicating rows; a late backfill into an archived month becomes a new part, and a video
re-run after its month was archived replaces its rows in the month's earlier parts (they are
rewritten without them before the database rows go). A month that
changed during its archive keeps its rows and loses the part just written (the next run
exports it again, under another digest). Each month is archived under the data lock
(``locks``), so an erase waits for it rather than missing its part.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Container, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from anpr_pipeline.ops.locks import data_lock
from anpr_pipeline.ops.retention import ARCHIVE_EVENTS_PREFIX, awaiting_processing, month_bounds, object_time
from anpr_pipeline.resources.event_store import EventStore, events, partition_name
from anpr_pipeline.resources.object_store import ObjectInfo, ObjectStore, S3ObjectStore
from anpr_pipeline.resources.parquet_dataset import EVENTS_SCHEMA, rewrite_without
from anpr_pipeline.uploads import UPLOADS_PREFIX

ARCHIVE_PREFIX = "archive/"
BATCH_ROWS = 50_000

ARCHIVE_SCHEMA = pa.schema(
    [("camera_id", pa.string()), *EVENTS_SCHEMA, ("created_at", pa.timestamp("us", tz="UTC"))]
)


class ArchiveError(RuntimeError):
    """An archive copy could not be verified; the original was kept."""


class MonthChangedError(ArchiveError):
    """The month's rows changed after the export; nothing was removed from the database."""


# --------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------


def plan_video_archive(
    now: datetime, objects: Iterable[ObjectInfo], days: int, processed: Container[str]
) -> tuple[list[ObjectInfo], int]:
    """Uploads (videos and sidecars) recorded before now - days, and how many of those are
    kept because they are not processed yet (`processed`: partitions with ``plate_events``)."""
    if days <= 0:
        return [], 0
    cutoff = now.astimezone(UTC) - timedelta(days=days)
    old = [o for o in objects if o.key.startswith(UPLOADS_PREFIX) and object_time(o, "videos")[0] < cutoff]
    move = [o for o in old if not awaiting_processing(o, processed, cutoff)]
    return move, len(old) - len(move)


def _verified(src: ObjectInfo, dst: ObjectInfo) -> bool:
    if src.size != dst.size:
        return False
    single_part = src.etag and dst.etag and "-" not in src.etag and "-" not in dst.etag
    return not single_part or src.etag == dst.etag


@dataclass
class VideoArchiveResult:
    moved: list[str] = field(default_factory=list)
    bytes: int = 0
    failed: list[str] = field(default_factory=list)  # "key: reason"; originals kept


def archive_videos(
    store: ObjectStore, objects: list[ObjectInfo], storage_class: str = ""
) -> VideoArchiveResult:
    result = VideoArchiveResult()
    cls = storage_class if isinstance(store, S3ObjectStore) and storage_class else None
    for src in objects:
        dst_key = ARCHIVE_PREFIX + src.key
        try:
            store.copy(src.key, dst_key, storage_class=cls)
            dst = store.info(dst_key)
            if not _verified(src, dst):
                raise ArchiveError(
                    f"copy differs (size {dst.size} vs {src.size}, etag {dst.etag} vs {src.etag})"
                )
            store.delete([src.key])
        except Exception as exc:  # one bad object must not stop the others; reported in metadata
            result.failed.append(f"{src.key}: {exc}")
            continue
        result.moved.append(src.key)
        result.bytes += src.size
    return result


# --------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------


def _month_start(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def archivable_months(es: EventStore, now: datetime, days: int) -> list[tuple[date, int]]:
    """Whole months that ended before now - days and still hold rows, with their row counts."""
    if days <= 0:
        return []
    cutoff = now.astimezone(UTC) - timedelta(days=days)
    with es.engine.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.min(events.c.captured_at))).scalar_one()
        if oldest is None:
            return []
        months, month = [], _month_start(oldest)
        while month_bounds(month)[1] <= cutoff:
            lo, hi = month_bounds(month)
            n = conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(events.c.captured_at >= lo, events.c.captured_at < hi)
            ).scalar_one()
            if n:
                months.append((month, int(n)))
            month = month_bounds(month)[1].date()
    return months


def _month_query(month: date, *columns: Any) -> sa.Select[Any]:
    """The month's rows in export order (both digests depend on it)."""
    lo, hi = month_bounds(month)
    return (
        sa.select(*columns)
        .where(events.c.captured_at >= lo, events.c.captured_at < hi)
        .order_by(events.c.captured_at, events.c.event_id)
    )


def _batches(conn: sa.Connection, month: date) -> Iterable[list[dict[str, Any]]]:
    result = conn.execution_options(yield_per=BATCH_ROWS).execute(_month_query(month, events))
    for part in result.partitions():
        yield [_as_exported(r) for r in part]


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in ARCHIVE_SCHEMA.names}
    cols["char_confidences"] = [[float(c) for c in (v or [])] for v in cols["char_confidences"]]
    return pa.Table.from_pydict(cols, schema=ARCHIVE_SCHEMA)


def _id_line(event_id: str) -> bytes:
    """One event id as the ids digest takes it (the export hashes as it writes)."""
    return event_id.encode() + b"\n"


def _ids_digest(ids: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for event_id in ids:
        digest.update(_id_line(event_id))
    return digest.hexdigest()


@dataclass
class MonthArchive:
    month: str
    rows: int
    key: str
    bytes: int
    dropped_partition: str | None
    digest: str
    superseded_rows: int = 0  # rows of re-run videos taken out of the month's earlier parts


def archive_month(es: EventStore, store: ObjectStore, month: date) -> MonthArchive:
    """Export, verify and remove one month, under the data lock (see ``locks``): an erase
    must not read the archive before this part exists and delete the rows after it is made."""
    with data_lock(es, f"archive {month:%Y-%m}"):
        return _archive_month(es, store, month)


def _archive_month(es: EventStore, store: ObjectStore, month: date) -> MonthArchive:
    with tempfile.TemporaryDirectory(prefix="anpr-archive-") as tmp:
        path = Path(tmp) / "part.parquet"
        rows, ids_digest, rows_digest = _export(es, month, path)
        key = f"{ARCHIVE_EVENTS_PREFIX}month={month:%Y-%m}/part-{ids_digest[:16]}.parquet"
        store.put_file(key, path, "application/vnd.apache.parquet")
        size = path.stat().st_size
    # Verify what the bucket now holds, not the local file.
    copy = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["event_id", "video_key"])
    if copy.num_rows != rows or _ids_digest(copy.column("event_id").to_pylist()) != ids_digest:
        raise ArchiveError(
            f"{key}: archived copy has {copy.num_rows} rows / other ids than the {rows} exported; events kept"
        )
    # Before the rows leave the database: stopped between the two, the database still holds
    # the new version of every video taken out of the older parts, and exports it again.
    superseded = _supersede_older_parts(store, month, key, set(copy.column("video_key").to_pylist()))
    try:
        dropped = _remove_month(es, month, rows, rows_digest)
    except MonthChangedError:
        # Raised before anything was removed: the rows stay in the database, so this part is
        # a copy of them. Kept, the next run (which exports the month again, under another
        # digest) would archive them twice. Any other failure (a commit whose answer was
        # lost, say) may have removed the rows: the part is then their only copy and stays.
        store.delete([key])
        raise
    return MonthArchive(f"{month:%Y-%m}", rows, key, size, dropped, ids_digest, superseded)


def _supersede_older_parts(store: ObjectStore, month: date, new_key: str, video_keys: set[str]) -> int:
    """Take the rows of ``video_keys`` out of the month's other parts; returns how many.

    A video re-run after its month was archived puts its events back in the database (same
    ids, new reads), and the next archive run exports them in a new part. As the re-run
    replaced the video's events in the database and in Parquet, its part replaces them
    here: kept, the older part's rows would be the same events twice.
    """
    prefix = f"{ARCHIVE_EVENTS_PREFIX}month={month:%Y-%m}/"
    wanted = pa.array(sorted(video_keys), pa.string())
    removed = 0
    for info in store.list(prefix):
        if info.key == new_key or not info.key.endswith(".parquet"):
            continue
        table = pq.read_table(io.BytesIO(store.get_bytes(info.key)))
        removed += rewrite_without(
            store, info.key, table, pc.is_in(table.column("video_key"), value_set=wanted)
        )[0]
    return removed


def _export(es: EventStore, month: date, path: Path) -> tuple[int, str, str]:
    """Write the month to ``path``; return its row count, the digest of its event ids (in
    file order) and the month digest that ``_remove_month`` compares, all of the rows written.

    On Postgres the month digest is the server's (``month_digest``), taken in the same
    REPEATABLE READ snapshot as the rows, so the final check can compute it again without
    moving the month's rows to Python while writers wait. SQLite fingerprints the rows
    streamed to the file: two statements there would not share a snapshot.
    """
    ids, fingerprints, rows = hashlib.sha256(), hashlib.sha256(), 0
    server: tuple[int, str] | None = None
    with es.engine.connect() as conn, pq.ParquetWriter(path, ARCHIVE_SCHEMA, compression="zstd") as writer:
        if es.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            server = month_digest(conn, month)
        for batch in _batches(conn, month):
            writer.write_table(_table(batch))
            rows += len(batch)
            for r in batch:
                ids.update(_id_line(r["event_id"]))
                if server is None:
                    fingerprints.update(_row_fingerprint(r))
    if server is None:
        return rows, ids.hexdigest(), fingerprints.hexdigest()
    if server[0] != rows:  # the two reads did not share a snapshot: the digest is not the file's
        raise ArchiveError(f"month {month:%Y-%m}: exported {rows} rows but digested {server[0]}; events kept")
    return rows, ids.hexdigest(), server[1]


# The month's digest on the server: count plus a sum of 64-bit row hashes over every column
# (``e::text``, the whole row, its ``id`` included). Rows are distinct (``id``), so the sum
# is a digest of the set with no order and no rows sent to the client. Both of its reads
# use this engine's sessions, so the text forms of timestamps and floats (TimeZone,
# extra_float_digits) agree; if they did not, the digests differ and the month is kept.
_PG_MONTH_DIGEST = sa.text(
    "SELECT count(*), coalesce(sum(('x' || left(md5(e::text), 16))::bit(64)::bigint::numeric), 0)::text "
    "FROM events AS e WHERE e.captured_at >= :lo AND e.captured_at < :hi"
)


def month_digest(conn: sa.Connection, month: date) -> tuple[int, str]:
    """The month's row count and digest (every column of every row) as stored now."""
    if conn.dialect.name == "postgresql":
        lo, hi = month_bounds(month)
        count, total = conn.execute(_PG_MONTH_DIGEST, {"lo": lo, "hi": hi}).one()
        return int(count), f"{count}:{total}"
    # yield_per on the statement: on the connection it would stream the check's DDL too.
    stored = conn.execute(_month_query(month, events).execution_options(yield_per=BATCH_ROWS))
    rows, digest = 0, hashlib.sha256()
    for row in stored:
        rows += 1
        digest.update(_row_fingerprint(_as_exported(row)))
    return rows, digest.hexdigest()


def _as_exported(row: Any) -> dict[str, Any]:
    return dict(row._mapping) | {"event_id": str(row.event_id)}


def _row_fingerprint(row: dict[str, Any]) -> bytes:
    """One stored row, every column: a re-run video writes its events again under the same
    event ids (derived from video and track), with new reads."""
    return repr(sorted(row.items())).encode() + b"\n"


def block_event_writers(conn: sa.Connection) -> None:
    """Make event writers wait until ``conn``'s transaction ends: the archive's final check
    and drop of a month run under this (``anpr bench db`` times how long)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('anpr_events_schema'))"))
        conn.execute(sa.text("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # pysqlite begins the transaction only at the first write, so a check would read
        # outside it and a row committed before the DELETE would go unarchived. A write
        # that matches nothing takes SQLite's write lock first.
        conn.execute(sa.delete(events).where(sa.false()))


def _remove_month(es: EventStore, month: date, expected_rows: int, expected_digest: str) -> str | None:
    """Drop the month if it still holds exactly the exported rows (every column of every
    row), checked and removed in one write transaction.

    A count alone would miss a row replaced meanwhile (a re-run video's new version, or
    another event): it would be dropped without ever reaching the archive.
    """
    lo, hi = month_bounds(month)
    in_month = sa.and_(events.c.captured_at >= lo, events.c.captured_at < hi)
    with es.engine.begin() as conn:
        dropped = None
        block_event_writers(conn)
        now_rows, digest = month_digest(conn, month)
        if now_rows != expected_rows or digest != expected_digest:
            raise MonthChangedError(
                f"month {month:%Y-%m} changed during the archive ({now_rows} rows now, "
                f"{expected_rows} archived{', other rows' if now_rows == expected_rows else ''}); "
                "events kept, the next run archives it again"
            )
        name = partition_name(month)
        if name in es.partitions(conn):
            conn.execute(sa.text(f"ALTER TABLE events DETACH PARTITION {name}"))
            conn.execute(sa.text(f"DROP TABLE {name}"))
            dropped = name
        conn.execute(sa.delete(events).where(in_month))  # rows of the month held in DEFAULT / SQLite
    return dropped


# --------------------------------------------------------------------------------------
# Both
# --------------------------------------------------------------------------------------


@dataclass
class ArchiveResult:
    dry_run: bool
    videos_planned: int
    videos_moved: int
    videos_bytes: int
    videos_failed: list[str]
    event_months: list[dict[str, Any]]
    events_archived: int
    events_failed: list[str]
    videos_unprocessed_kept: int

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def run_archive(
    now: datetime,
    store: ObjectStore,
    es: EventStore,
    settings: Any,
    processed: Container[str],
    dry_run: bool = False,
) -> ArchiveResult:
    """`processed`: the ``videos`` partitions that have ``plate_events`` materialised."""
    days = int(settings.archive_videos_after_days)
    videos, unprocessed = plan_video_archive(now, store.list(UPLOADS_PREFIX), days, processed)
    months = archivable_months(es, now, int(settings.archive_events_after_days))
    if dry_run:
        return ArchiveResult(
            True,
            len(videos),
            0,
            sum(o.size for o in videos),
            [],
            [{"month": f"{m:%Y-%m}", "rows": n} for m, n in months],
            0,
            [],
            unprocessed,
        )
    moved = archive_videos(store, videos, settings.s3_archive_storage_class)
    archived, failed = [], []
    for month, _n in months:
        try:
            archived.append(asdict(archive_month(es, store, month)))
        except Exception as exc:  # one bad month must not stop the others; the op fails at the end
            failed.append(f"{month:%Y-%m}: {exc}")
    return ArchiveResult(
        False,
        len(videos),
        len(moved.moved),
        moved.bytes,
        moved.failed,
        archived,
        sum(m["rows"] for m in archived),
        failed,
        unprocessed,
    )
