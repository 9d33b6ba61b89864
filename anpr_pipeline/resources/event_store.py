"""The events store: one row per vehicle pass, in SQLite (embedded) or Postgres (production).

One SQLAlchemy Core definition of the `events` table (DESIGN §3) serves both databases;
only the physical layout differs:

- Postgres: ``PARTITION BY RANGE (captured_at)``, one partition per month named
  ``events_yYYYYmMM`` plus ``events_default``. The DEFAULT partition means an insert never
  fails because its month has no partition (a backfill of an old video, a clock that is
  wrong); `ensure_month_partitions` (nightly maintenance and `init_schema`) creates the
  current month and the next ones ahead of need, and moves any rows that landed in DEFAULT
  into their proper monthly partition, so DEFAULT stays (nearly) empty and cheap to scan.
  The primary key is ``(id, captured_at)`` because a partitioned table's unique
  constraints must contain the partition key. Bulk loads use COPY (psycopg 3).
- SQLite: the same columns, ``id`` an INTEGER rowid, executemany inserts.

Writes for a video are one transaction that deletes that video's rows and inserts the new
ones, so a re-run replaces instead of duplicating, and a write cut short by a lost
connection leaves nothing behind: it is retried from the start with backoff.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from dagster import ConfigurableResource
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, Engine

from anpr_pipeline.vision.plates import fuzzy_match, normalize

if TYPE_CHECKING:
    from anpr_pipeline.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# 2: ix_events_created_at (the watchlist sensor's scan) and the watchlist_alerts table.
# 3: the erased_plates table (plates erased by erase_plate stay erased on re-runs), and
#    camera_hourly_stats created here (it was created by the first stats run, which raced).
SCHEMA_VERSION = 3
# How long the nightly partition upkeep waits for its table lock before giving up.
PARTITION_LOCK_TIMEOUT = "10s"
# The server refused the connection for a reason retrying cannot fix (psycopg gives no SQLSTATE
# for errors at connect time, only libpq's message).
_CONFIG_REFUSAL = re.compile(
    r'FATAL:\s+(database "[^"]*" does not exist|role "[^"]*" does not exist'
    r"|password authentication failed|no pg_hba\.conf entry)"
)


class EventStoreError(RuntimeError):
    """The events database failed; the message names host/port/database, never the password."""


def as_utc(value: datetime) -> datetime:
    """Timezone-aware UTC; a naive time is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps go in as tz-aware (naive means UTC) and come out tz-aware UTC on both databases.

    SQLite has no time zones: it stores the UTC wall time, so string order is time order.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


def _columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("camera_id", sa.Text(), nullable=False),
        sa.Column("captured_at", UTCDateTime(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("plate_text", sa.Text(), nullable=False),
        sa.Column("normalized_plate", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("confidence", sa.REAL(), nullable=False),
        sa.Column("char_confidences", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("bbox_x", sa.Integer(), nullable=False),
        sa.Column("bbox_y", sa.Integer(), nullable=False),
        sa.Column("bbox_w", sa.Integer(), nullable=False),
        sa.Column("bbox_h", sa.Integer(), nullable=False),
        sa.Column("frame_index", sa.Integer(), nullable=False),
        sa.Column("frames_seen", sa.Integer(), nullable=False),
        sa.Column("video_key", sa.Text(), nullable=False),
        sa.Column("crop_key", sa.Text(), nullable=True),
        sa.Column("detector_version", sa.Text(), nullable=False),
        sa.Column("reader_version", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    ]


def build_events_table(metadata: sa.MetaData, *, partitioned: bool) -> sa.Table:
    """The `events` table. `partitioned` (Postgres) only changes the key and the layout."""
    table = sa.Table(
        "events",
        metadata,
        *_columns(),
        # A partitioned table's keys must include the partition column.
        sa.PrimaryKeyConstraint(*(["id", "captured_at"] if partitioned else ["id"]), name="events_pkey"),
        sa.UniqueConstraint("event_id", "captured_at", name="uq_events_event_id_captured_at"),
        postgresql_partition_by="RANGE (captured_at)" if partitioned else None,
    )
    sa.Index("ix_events_camera_captured", table.c.camera_id, table.c.captured_at.desc())
    sa.Index("ix_events_plate_captured", table.c.normalized_plate, table.c.captured_at.desc())
    # LIKE 'AB1%' can use a btree only with the pattern operator class (non-C collations).
    sa.Index(
        "ix_events_plate_prefix",
        table.c.normalized_plate,
        postgresql_ops={"normalized_plate": "text_pattern_ops"},
    )
    # Replacing a video's rows deletes by video_key: keep that an index lookup.
    sa.Index("ix_events_video_key", table.c.video_key)
    # The watchlist sensor reads "events created since its watermark" every 30 s.
    sa.Index("ix_events_created_at", table.c.created_at, table.c.id)
    return table


def _schema_info_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "anpr_schema",
        metadata,
        sa.Column("component", sa.Text(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def _watchlist_alerts_table(metadata: sa.MetaData) -> sa.Table:
    """One row per event the watchlist alerted on: deduplication and webhook delivery state.

    No plate text: the event row holds that (and a GDPR erasure deletes it), so an alert
    row whose event is gone says nothing about anyone.
    """
    return sa.Table(
        "watchlist_alerts",
        metadata,
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("alerted_at", UTCDateTime(), nullable=False, index=True),
        # logged (no webhook) | sending | posted | failed | abandoned | dropped
        sa.Column("delivery", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )


def _erased_plates_table(metadata: sa.MetaData) -> sa.Table:
    """Plates erased by ``erase_plate``, kept so a re-run of a video does not store them again.

    Only ``gdpr.erasure_digest``: HMAC-SHA256(ANPR_GDPR_SALT, plate with look-alikes folded),
    not the audit's hash; the table says which digests were erased when, never the plate.
    Passes captured at or before ``erased_at`` are dropped; later passes are new data.
    """
    return sa.Table(
        "erased_plates",
        metadata,
        sa.Column("plate_digest", sa.Text(), primary_key=True),
        sa.Column("erased_at", UTCDateTime(), nullable=False),
    )


def _camera_hourly_stats_table(metadata: sa.MetaData) -> sa.Table:
    """Events, distinct plates and mean confidence per camera per UTC hour (``camera_daily_stats``)."""
    return sa.Table(
        "camera_hourly_stats",
        metadata,
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("camera_id", sa.Text(), primary_key=True),
        sa.Column("hour", sa.SmallInteger(), primary_key=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("distinct_plates", sa.Integer(), nullable=False),
        sa.Column("mean_confidence", sa.REAL(), nullable=True),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
    )


# Module-level table for queries (column references are the same on both databases).
metadata = sa.MetaData()
events = build_events_table(metadata, partitioned=False)
schema_info = _schema_info_table(metadata)
watchlist_alerts = _watchlist_alerts_table(metadata)
erased_plates = _erased_plates_table(metadata)
camera_hourly_stats = _camera_hourly_stats_table(metadata)

EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in events.columns if c.name != "id")
REQUIRED_KEYS = frozenset(EVENT_COLUMNS) - {"region", "crop_key", "created_at", "video_key"}


def normalize_plate(text: str) -> str:
    """A–Z0–9 only, upper case, accents folded: the pipeline's own rule
    (``vision.plates.normalize``), so a plate typed as written ("MÜ-AB 123") finds, alerts
    and erases what the pipeline stored ("MUAB123"), never another plate ("MAB123")."""
    return normalize(text)


def _add_months(d: date, n: int) -> date:
    m = d.month - 1 + n
    return date(d.year + m // 12, m % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"events_y{month.year:04d}m{month.month:02d}"


def _describe_url(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite database {url.database or ':memory:'}"
    return (
        f"Postgres database {url.database!r} at {url.host or 'localhost'}:{url.port or 5432}"
        f" (user {url.username or '(default)'})"
    )


class EventStore:
    """Read/write access to `events`. Safe to share between threads (pooled engine)."""

    def __init__(
        self,
        url: str,
        *,
        retries: int = 5,
        retry_backoff_s: float = 0.5,
        connect_timeout_s: int = 5,
        pool_size: int = 5,
    ):
        try:
            self.url = sa.make_url(url)
        except (sa.exc.ArgumentError, ValueError) as exc:  # "sqlite", "notaurl", a bad port
            raise EventStoreError(
                f"not a database URL: {_safe_url_text(url)!r} "
                "(use sqlite:///path or postgresql+psycopg://user@host/db)"
            ) from exc
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        backend = self.url.get_backend_name()
        if backend == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                # SQLite would open "~/..." literally: expand it once, for the engine and the lock.
                self.url = self.url.set(database=str(Path(self.url.database).expanduser()))
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self._engine = self._create_engine(pool_pre_ping=True, connect_args={"timeout": 30})
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        elif backend == "postgresql":
            if self.url.get_driver_name() != "psycopg":
                raise EventStoreError(
                    f"events database URL must use the psycopg 3 driver (postgresql+psycopg://...),"
                    f" got {self.url.drivername!r}"
                )
            self._engine = self._create_engine(
                pool_pre_ping=True,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=1800,
                connect_args={"connect_timeout": connect_timeout_s, "application_name": "anpr_pipeline"},
            )
        else:
            raise EventStoreError(
                f"unsupported events database {self.url.drivername!r}: use sqlite or postgresql"
            )
        self._table = build_events_table(sa.MetaData(), partitioned=self.dialect == "postgresql")

    def _create_engine(self, **kwargs: Any) -> Engine:
        try:
            return sa.create_engine(self.url, **kwargs)
        except sa.exc.ArgumentError as exc:  # e.g. an unknown driver: sqlite+bogus://
            raise EventStoreError(f"cannot open {self.describe()}: {_first_line(exc)}") from exc

    # -- basics ----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def describe(self) -> str:
        return _describe_url(self.url)

    def dispose(self) -> None:
        self._engine.dispose()

    def _is_transient(self, exc: BaseException) -> bool:
        if _CONFIG_REFUSAL.search(str(exc)):
            return False  # the server answered: no database or role of that name, bad password
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return True
        dbapi = self._engine.dialect.dbapi
        operational = (sa.exc.OperationalError, dbapi.OperationalError)
        if self.dialect == "sqlite":
            return isinstance(exc, operational) and "locked" in str(exc).lower()
        # psycopg: OperationalError covers refused/lost connections, admin shutdown,
        # serialization failures; InterfaceError a connection closed under us. The COPY
        # path talks to psycopg directly, so its errors arrive unwrapped.
        return isinstance(exc, (*operational, sa.exc.InterfaceError, dbapi.InterfaceError))

    def _run(self, what: str, fn: Callable[[], T], retries: int | None = None) -> T:
        """Run `fn` (one whole transaction), retrying transient connection errors with backoff."""
        attempts = 1 + (self.retries if retries is None else retries)
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except (sa.exc.SQLAlchemyError, self._engine.dialect.dbapi.Error) as exc:
                if not self._is_transient(exc):
                    hint = " (check ANPR_DATABASE_URL)" if _CONFIG_REFUSAL.search(str(exc)) else ""
                    raise EventStoreError(
                        f"{what} failed on {self.describe()}: {_first_line(exc)}{hint}"
                    ) from exc
                if attempt == attempts:
                    raise EventStoreError(
                        f"{what} failed on {self.describe()} after {attempts} attempt(s): the database is "
                        f"unreachable or the connection was lost ({_first_line(exc)})"
                    ) from exc
                delay = min(self.retry_backoff_s * 2 ** (attempt - 1), 30.0)
                log.warning(
                    "%s: transient error on %s (%s); retry %d in %.1fs",
                    what,
                    self.describe(),
                    _first_line(exc),
                    attempt,
                    delay,
                )
                # The pool may hold more dead connections; drop them rather than ping each.
                self._engine.dispose()
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- schema ----------------------------------------------------------------------------

    def init_schema(self) -> None:
        """Create the table, indexes and (Postgres) partitions. Idempotent; safe concurrently."""

        def create() -> None:
            with self._engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Serialise concurrent initialisers (several run workers starting at once).
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('anpr_events_schema'))"))
                self._table.metadata.create_all(conn, checkfirst=True)
                schema_info.create(conn, checkfirst=True)
                watchlist_alerts.create(conn, checkfirst=True)
                erased_plates.create(conn, checkfirst=True)
                camera_hourly_stats.create(conn, checkfirst=True)
                # Indexes added after v1: create_all skips them on an existing table. On a
                # big Postgres table this one-off build blocks writes while it runs.
                for index in self._table.indexes:
                    index.create(conn, checkfirst=True)
                if self.dialect == "postgresql":
                    conn.execute(
                        sa.text("CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT")
                    )
                self._set_version(conn)

        with self._sqlite_file_lock("init-lock"):
            self._run("init schema", create)
        self.ensure_month_partitions()

    @contextmanager
    def _sqlite_file_lock(self, suffix: str) -> Iterator[None]:
        """An exclusive flock beside a SQLite database file (nothing elsewhere): pysqlite runs
        DDL outside a transaction, so two workers creating the schema of a new file at once
        both saw "no table" and one failed with "table ... already exists"."""
        database = self.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            yield
            return
        path = Path(database)  # expanded, its folder made, by __init__
        with open(path.with_name(f"{path.name}.{suffix}"), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _set_version(self, conn: Connection) -> None:
        now = datetime.now(UTC)
        updated = conn.execute(
            schema_info.update()
            .where(schema_info.c.component == "events")
            .values(version=SCHEMA_VERSION, updated_at=now)
        )
        if updated.rowcount == 0:
            conn.execute(
                schema_info.insert().values(component="events", version=SCHEMA_VERSION, updated_at=now)
            )

    def schema_version(self) -> int | None:
        """The schema version recorded by init_schema, None before it ran."""

        def read() -> int | None:
            with self._engine.connect() as conn:
                if not sa.inspect(conn).has_table("anpr_schema"):
                    return None
                return conn.execute(
                    sa.select(schema_info.c.version).where(schema_info.c.component == "events")
                ).scalar_one_or_none()

        return self._run("read schema version", read, retries=min(self.retries, 1))

    def ensure_month_partitions(self, months_ahead: int = 2, today: date | None = None) -> list[str]:
        """Postgres: create monthly partitions for this month + `months_ahead`, and for every
        month that has rows in DEFAULT (moving them out). Returns the partitions created.

        Rows are moved within one transaction (copy to a temp table, delete from DEFAULT,
        create the partition, re-insert), because Postgres refuses to create a partition
        while DEFAULT holds rows of its range. SQLite: nothing to do.
        """
        if self.dialect != "postgresql":
            return []
        first = (today or datetime.now(UTC).date()).replace(day=1)

        ahead = {_add_months(first, i) for i in range(months_ahead + 1)}
        stray_sql = sa.text(
            "SELECT DISTINCT date_trunc('month', captured_at AT TIME ZONE 'UTC')::date FROM events_default"
        )

        def ensure() -> list[str]:
            created: list[str] = []
            with self._engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('anpr_events_schema'))"))
                existing = set(self.partitions(conn))
                if {partition_name(m) for m in ahead} <= existing and not conn.execute(
                    sa.text("SELECT EXISTS (SELECT 1 FROM events_default)")
                ).scalar_one():
                    return created  # the common case: nothing to do, no table lock taken
                # Lock the parent first (the same order as DML: parent, then partitions) so no
                # row can land in DEFAULT between moving its rows and creating the partition.
                # Writers wait for this short, nightly transaction. A long query holding a
                # lock on events would make this wait, and every writer queue behind it:
                # give up after PARTITION_LOCK_TIMEOUT instead (partitions exist months ahead).
                conn.execute(sa.text(f"SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'"))
                try:
                    conn.execute(sa.text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
                except sa.exc.OperationalError as exc:
                    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
                    if code != "55P03":  # lock_not_available (psycopg 3 / psycopg2 spelling)
                        raise
                    raise EventStoreError(
                        f"ensure month partitions on {self.describe()}: events stayed locked by another "
                        f"transaction for {PARTITION_LOCK_TIMEOUT} (a long query or a dump?); nothing "
                        "changed, run it again later"
                    ) from exc
                for month in sorted(ahead | set(conn.execute(stray_sql).scalars())):
                    name = partition_name(month)
                    if name not in existing:
                        self._create_partition(conn, month)
                        created.append(name)
            return created

        created = self._run("ensure month partitions", ensure)
        if created:
            log.info("created partitions %s on %s", created, self.describe())
        return created

    def _create_partition(self, conn: Connection, month: date) -> None:
        lo = f"{month.isoformat()} 00:00:00+00"
        hi = f"{_add_months(month, 1).isoformat()} 00:00:00+00"
        rng = sa.text("captured_at >= CAST(:lo AS timestamptz) AND captured_at < CAST(:hi AS timestamptz)")
        params = {"lo": lo, "hi": hi}
        n = conn.execute(
            sa.text(f"SELECT count(*) FROM events_default WHERE {rng.text}"), params
        ).scalar_one()
        if n:
            conn.execute(
                sa.text(
                    f"CREATE TEMP TABLE _anpr_moving ON COMMIT DROP AS "
                    f"SELECT * FROM events_default WHERE {rng.text}"
                ),
                params,
            )
            conn.execute(sa.text(f"DELETE FROM events_default WHERE {rng.text}"), params)
        conn.execute(
            sa.text(
                f"CREATE TABLE {partition_name(month)} PARTITION OF events "
                f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
            )
        )
        if n:
            conn.execute(sa.text("INSERT INTO events SELECT * FROM _anpr_moving"))
            conn.execute(sa.text("DROP TABLE _anpr_moving"))

    def partitions(self, conn: Connection | None = None) -> list[str]:
        """Names of the partitions of `events` (Postgres), sorted; [] on SQLite."""
        if self.dialect != "postgresql":
            return []
        query = sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events' ORDER BY 1"
        )
        if conn is not None:
            return list(conn.execute(query).scalars())

        def read() -> list[str]:
            with self._engine.connect() as c:
                return list(c.execute(query).scalars())

        return self._run("list partitions", read, retries=min(self.retries, 1))

    def index_names(self) -> list[str]:
        def read() -> list[str]:
            with self._engine.connect() as conn:
                return sorted(ix["name"] for ix in sa.inspect(conn).get_indexes("events") if ix["name"])

        return self._run("list indexes", read, retries=min(self.retries, 1))

    # -- writes ----------------------------------------------------------------------------

    def _prepare(self, video_key: str, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        out = []
        for i, row in enumerate(rows):
            missing = REQUIRED_KEYS - row.keys()
            if missing:
                raise ValueError(f"event row {i} of {video_key!r} lacks {sorted(missing)}")
            if row.get("video_key", video_key) != video_key:
                raise ValueError(f"event row {i} has video_key {row['video_key']!r}, expected {video_key!r}")
            r = {name: row.get(name) for name in EVENT_COLUMNS}
            r["video_key"] = video_key
            r["event_id"] = str(uuid.UUID(str(r["event_id"])))
            r["char_confidences"] = [float(c) for c in r["char_confidences"]]
            r["created_at"] = r["created_at"] or now
            for ts in ("captured_at", "first_seen_at", "last_seen_at", "created_at"):
                v = r[ts]
                r[ts] = as_utc(v)
            out.append(r)
        return out

    def replace_video_events(
        self, video_key: str, rows: Sequence[dict[str, Any]], replaces: Sequence[str] = ()
    ) -> int:
        """Replace every event of `video_key` (and of the keys in `replaces`: other uploads of
        the same video partition) with `rows` in one transaction; returns rows written.

        Retried as a whole on transient connection errors: the transaction either committed
        (then the retry would not run) or rolled back, so no row is lost or duplicated.
        """
        prepared = self._prepare(video_key, rows)
        keys = sorted({video_key, *replaces})

        def write() -> int:
            with self._engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Two runs of the same video (a retry racing a stale run) take turns; without
                    # this the second's DELETE cannot see the first's new rows and its insert
                    # would hit the unique key. SQLite serialises writers by itself. Locks are
                    # taken in key order, so two runs holding some of the same keys cannot deadlock.
                    for key in keys:
                        conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key}
                        )
                conn.execute(sa.delete(events).where(events.c.video_key.in_(keys)))
                if not prepared:
                    return 0
                if self.dialect == "postgresql":
                    self._copy(conn, prepared)
                else:
                    conn.execute(sa.insert(events), prepared)
            return len(prepared)

        return self._run(f"replace events of video {video_key!r}", write)

    def _copy(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        cols = ", ".join(EVENT_COLUMNS)
        # The raw psycopg 3 connection of this same SQLAlchemy transaction.
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(
                    tuple(json.dumps(r[c]) if c == "char_confidences" else r[c] for c in EVENT_COLUMNS)
                )

    def delete_video_events(self, video_key: str) -> int:
        def delete() -> int:
            with self._engine.begin() as conn:
                return conn.execute(sa.delete(events).where(events.c.video_key == video_key)).rowcount

        return self._run(f"delete events of video {video_key!r}", delete)

    def record_erasure(self, digest: str, erased_at: datetime) -> None:
        """Remember that the plate with this digest was erased at ``erased_at`` (a later
        erasure of the same plate moves the time on, an earlier one never back)."""
        erased_at = as_utc(erased_at)

        def write() -> None:
            with self._engine.begin() as conn:
                known = conn.execute(
                    sa.select(erased_plates.c.erased_at).where(erased_plates.c.plate_digest == digest)
                ).scalar_one_or_none()
                if known is None:
                    conn.execute(erased_plates.insert().values(plate_digest=digest, erased_at=erased_at))
                elif known < erased_at:
                    conn.execute(
                        erased_plates.update()
                        .where(erased_plates.c.plate_digest == digest)
                        .values(erased_at=erased_at)
                    )

        self._run("record an erased plate", write)

    def erasures(self, digests: Iterable[str]) -> dict[str, datetime]:
        """digest -> when it was erased, for the digests that were."""
        wanted = sorted(set(digests))
        if not wanted:
            return {}

        def read() -> dict[str, datetime]:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    sa.select(erased_plates.c.plate_digest, erased_plates.c.erased_at).where(
                        erased_plates.c.plate_digest.in_(wanted)
                    )
                )
                return {digest: at for digest, at in rows}

        return self._run("read erased plates", read, retries=min(self.retries, 2))

    # -- reads -----------------------------------------------------------------------------

    def _select(self, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            with self._engine.connect() as conn:
                return [_row_dict(r._mapping) for r in conn.execute(stmt)]

        return self._run("read events", read, retries=min(self.retries, 2))

    def events_for_video(self, video_key: str) -> list[dict[str, Any]]:
        stmt = (
            sa.select(events)
            .where(events.c.video_key == video_key)
            .order_by(events.c.captured_at, events.c.event_id)
        )
        return self._select(stmt)

    def search(
        self,
        plate: str,
        mode: str = "exact",
        camera_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Events for a plate, newest first. mode: exact | prefix | fuzzy (see `fuzzy_match`).

        `since` is inclusive, `until` exclusive.
        """
        p = normalize_plate(plate)
        if not p:
            raise ValueError(f"plate {plate!r} has no letters or digits")
        filters: list[sa.ColumnElement[bool]] = []
        if camera_id is not None:
            filters.append(events.c.camera_id == camera_id)
        if since is not None:
            filters.append(events.c.captured_at >= since)
        if until is not None:
            filters.append(events.c.captured_at < until)
        plate_col = events.c.normalized_plate
        if mode == "exact":
            cond: sa.ColumnElement[bool] = plate_col == p
        elif mode == "prefix":
            # LIKE on Postgres (text_pattern_ops index); a range on SQLite (its LIKE is
            # case-insensitive and skips the index). Normalised plates hold no wildcards.
            cond = (
                plate_col.like(p + "%")
                if self.dialect == "postgresql"
                else sa.and_(plate_col >= p, plate_col < p + "\x7f")
            )
        elif mode == "fuzzy":
            matches = self._fuzzy_candidates(p, filters)
            if not matches:
                return []
            cond = plate_col.in_(sorted(matches))
        else:
            raise ValueError(f"search mode {mode!r}: expected exact, prefix or fuzzy")
        stmt = (
            sa.select(events)
            .where(cond, *filters)
            .order_by(events.c.captured_at.desc(), events.c.event_id)
            .limit(limit)
        )
        return self._select(stmt)

    def _fuzzy_candidates(self, p: str, filters: list[sa.ColumnElement[bool]]) -> set[str]:
        # Distinct plates of a compatible length (an index-only scan of the plate index),
        # filtered exactly in Python: correct for every confusion, no extension needed.
        length = sa.func.length(events.c.normalized_plate)
        stmt = (
            sa.select(events.c.normalized_plate)
            .where(length.between(len(p) - 1, len(p) + 1), *filters)
            .distinct()
        )

        def read() -> set[str]:
            with self._engine.connect() as conn:
                return {c for c in conn.execute(stmt).scalars() if fuzzy_match(p, c)}

        return self._run("fuzzy search", read, retries=min(self.retries, 2))

    def count(self, video_key: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(events)
        if video_key is not None:
            stmt = stmt.where(events.c.video_key == video_key)

        def read() -> int:
            with self._engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())

        return self._run("count events", read, retries=min(self.retries, 2))

    def __repr__(self) -> str:
        return f"EventStore({self.url.render_as_string(hide_password=True)!r})"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers (sensors, UI) do not block the writer; busy_timeout waits out short locks.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _safe_url_text(url: str) -> str:
    """``url`` as given, its password (if any) masked: for messages about unparsable URLs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def require_sqlite_file(url: str, made_by: str) -> None:
    """Raise EventStoreError when ``url`` is a SQLite file that does not exist: read-only
    commands must not create it (and its folders) where a wrong path points. ``made_by``:
    what creates it, for the message."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return  # EventStore says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database).expanduser()
    if not path.exists():
        raise EventStoreError(
            f"no SQLite database at {path} (check ANPR_DATABASE_URL or ANPR_DATA_DIR; {made_by} creates it)"
        )


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _row_dict(mapping: Any) -> dict[str, Any]:
    d = dict(mapping)
    d["event_id"] = str(uuid.UUID(str(d["event_id"])))
    cc = d.get("char_confidences")
    if isinstance(cc, str):
        cc = json.loads(cc)
    d["char_confidences"] = [float(c) for c in (cc or [])]
    return d


class EventStoreResource(ConfigurableResource):
    """The events database as a Dagster resource; `get_store()` returns an EventStore.

    Stores are cached per URL in the process so the connection pool is reused across
    assets of one run.
    """

    database_url: str

    def get_store(self) -> EventStore:
        return get_event_store(self.database_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> EventStoreResource:
        return cls(database_url=settings.database_url)


_STORES: dict[str, EventStore] = {}


def get_event_store(url: str) -> EventStore:
    """A process-wide EventStore per URL (one pool), schema initialised on first use."""
    store = _STORES.get(url)
    if store is None:
        store = EventStore(url)
        store.init_schema()
        _STORES[url] = store
    return store
