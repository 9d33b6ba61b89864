"""Retention: delete what is older than each class's retention period, and nothing else.

Classes and where their age comes from (the name contract first, LastModified only as a
fallback for objects whose name breaks it):

| class          | objects                               | age from                                     |
|----------------|---------------------------------------|----------------------------------------------|
| videos         | ``uploads/…``, ``archive/uploads/…``  | the recording time in the key (sidecars too) |
| crops          | ``crops/<cam>/<day>/<ts>/…``          | the recording time ``<ts>`` of the video      |
| parquet        | ``parquet/events/date=YYYY-MM-DD/…``  | the *end* of that day (every row is older)    |
| events_archive | ``archive/events/month=YYYY-MM/…``    | the *end* of that month (events' period)      |
| events         | rows of the events table              | ``captured_at``                               |

An item is expired when its time is strictly before ``now - days``; ``days == 0`` keeps
the class forever. Planning (`plan_retention`, `plan_event_retention`) is pure or
read-only, so ``dry_run`` shows exactly what `apply_retention` would delete.

A video (or sidecar) under ``uploads/`` whose ``videos`` partition has no ``plate_events``
yet is kept while its LastModified is within the period: a camera back from an outage
uploads weeks-old recordings that are still queued. Abandoned or failed uploads still go
once they have been in the bucket for the whole period.

Events on Postgres: a monthly partition whose whole range is before the cutoff is
detached and dropped (instant, no dead tuples); the rest is a row delete. Both happen in
one transaction, so a failure leaves the table as it was.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from anpr_pipeline.ops.locks import data_lock
from anpr_pipeline.resources.event_store import EventStore, events, partition_name
from anpr_pipeline.resources.object_store import ObjectInfo, ObjectStore
from anpr_pipeline.uploads import TIMESTAMP_FORMAT, UPLOADS_PREFIX

ARCHIVE_UPLOADS_PREFIX = "archive/" + UPLOADS_PREFIX
CROPS_PREFIX = "crops/"
PARQUET_PREFIX = "parquet/events/"
ARCHIVE_EVENTS_PREFIX = "archive/events/"
# Object classes in the bucket and the prefixes that hold them.
CLASS_PREFIXES: dict[str, tuple[str, ...]] = {
    "videos": (UPLOADS_PREFIX, ARCHIVE_UPLOADS_PREFIX),
    "crops": (CROPS_PREFIX,),
    "parquet": (PARQUET_PREFIX,),
    "events_archive": (ARCHIVE_EVENTS_PREFIX,),
}
OBJECT_CLASSES = tuple(CLASS_PREFIXES)
# The policy setting of each class: archived events are events, and keep their period.
CLASS_SETTING = {name: f"retention_{name}_days" for name in OBJECT_CLASSES} | {
    "events_archive": "retention_events_days"
}

_VIDEO_RE = re.compile(r"^(?:archive/)?uploads/(?P<camera>[^/]+)/(?P<ts>\d{8}T\d{6}Z)\.[A-Za-z0-9]+$")
_CROP_RE = re.compile(r"^crops/[^/]+/\d{4}-\d{2}-\d{2}/(?P<ts>\d{8}T\d{6}Z)/")
_PARQUET_RE = re.compile(r"^parquet/events/date=(?P<day>\d{4}-\d{2}-\d{2})/")
_ARCHIVE_MONTH_RE = re.compile(r"^archive/events/month=(?P<y>\d{4})-(?P<m>\d{2})/")
_MONTH_PARTITION_RE = re.compile(r"^events_y(?P<y>\d{4})m(?P<m>\d{2})$")


class RetentionPolicy(Protocol):
    """Anything with the retention settings (Settings, the ops resource)."""

    retention_videos_days: int
    retention_crops_days: int
    retention_events_days: int
    retention_parquet_days: int


def _ts(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def class_days(policy: RetentionPolicy, klass: str) -> int:
    return int(getattr(policy, CLASS_SETTING[klass]))


def classify(key: str) -> str | None:
    for name, prefixes in CLASS_PREFIXES.items():
        if key.startswith(prefixes):
            return name
    return None


def object_time(info: ObjectInfo, klass: str) -> tuple[datetime, str]:
    """The time that decides an object's age, and where it came from ("name" | "mtime")."""
    if klass == "videos" and (m := _VIDEO_RE.match(info.key)) and (t := _ts(m["ts"])):
        return t, "name"
    if klass == "crops" and (m := _CROP_RE.match(info.key)) and (t := _ts(m["ts"])):
        return t, "name"
    if klass == "parquet" and (m := _PARQUET_RE.match(info.key)):
        try:
            day = date.fromisoformat(m["day"])
        except ValueError:
            pass
        else:
            # The newest row a day's file can hold: the file goes only when all its rows have.
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            return end - timedelta(microseconds=1), "name"
    if klass == "events_archive" and (m := _ARCHIVE_MONTH_RE.match(info.key)) and 1 <= int(m["m"]) <= 12:
        # Like parquet: the part goes only when the month's newest row has expired.
        end = month_bounds(date(int(m["y"]), int(m["m"]), 1))[1]
        return end - timedelta(microseconds=1), "name"
    return info.last_modified, "mtime"


def cutoff_for(now: datetime, days: int) -> datetime | None:
    """Items strictly older than this go; None when the class is kept forever (days == 0)."""
    return None if days <= 0 else now - timedelta(days=days)


def upload_partition_key(key: str) -> str | None:
    """The ``videos`` partition a (possibly archived) upload or its sidecar belongs to."""
    m = _VIDEO_RE.match(key)
    return f"{m['camera']}/{m['ts']}" if m else None


def partition_key_of(video_key: str) -> str | None:
    """The Dagster ``videos`` partition of a (possibly archived) upload; None for other keys."""
    return None if video_key.endswith(".json") else upload_partition_key(video_key)


def awaiting_processing(info: ObjectInfo, processed: Container[str], cutoff: datetime) -> bool:
    """An upload not processed yet (no ``plate_events``) that arrived after `cutoff`: keep it.

    Old recordings arrive late (a camera back from an outage) and wait in the queue for days;
    aging them by recording time alone would move or delete them before they are read.
    """
    return (
        info.key.startswith(UPLOADS_PREFIX)
        and upload_partition_key(info.key) not in processed
        and info.last_modified >= cutoff
    )


@dataclass
class ClassPlan:
    name: str
    days: int
    cutoff: datetime | None
    expired: list[ObjectInfo] = field(default_factory=list)
    kept: int = 0
    aged_by_mtime: int = 0  # expired objects whose name broke the contract
    unprocessed_kept: int = 0  # of `kept`: old enough, but uploads not processed yet

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.expired)


@dataclass
class EventsPlan:
    cutoff: datetime | None
    rows: int = 0  # rows that will go (in dropped partitions + row deletes)
    drop_partitions: list[str] = field(default_factory=list)
    partition_rows: int = 0  # of `rows`, those in dropped partitions


@dataclass
class RetentionPlan:
    now: datetime
    classes: dict[str, ClassPlan]
    events: EventsPlan
    video_partitions: list[str] = field(default_factory=list)

    def expired_keys(self) -> set[str]:
        return {o.key for plan in self.classes.values() for o in plan.expired}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"now": self.now.isoformat()}
        for name, plan in self.classes.items():
            out[f"{name}_days"] = plan.days
            out[f"{name}_expired"] = len(plan.expired)
            out[f"{name}_bytes"] = plan.bytes
            out[f"{name}_kept"] = plan.kept
        out["videos_unprocessed_kept"] = self.classes["videos"].unprocessed_kept
        out["events_cutoff"] = self.events.cutoff.isoformat() if self.events.cutoff else None
        out["events_expired"] = self.events.rows
        out["events_partitions_dropped"] = list(self.events.drop_partitions)
        out["video_partitions"] = len(self.video_partitions)
        return out


def list_objects(store: ObjectStore, policy: RetentionPolicy) -> Iterator[ObjectInfo]:
    """Every object of a class that has a retention period (classes kept forever are not listed)."""
    for name, prefixes in CLASS_PREFIXES.items():
        if class_days(policy, name) > 0:
            for prefix in prefixes:
                yield from store.list(prefix)


def plan_retention(
    now: datetime,
    objects: Iterable[ObjectInfo],
    policy: RetentionPolicy,
    events_plan: EventsPlan | None = None,
    *,
    processed: Container[str],
) -> RetentionPlan:
    """Pure: which of `objects` are expired at `now` under `policy`.

    `processed`: the ``videos`` partitions with ``plate_events`` (see `awaiting_processing`).
    """
    now = now.astimezone(UTC)
    classes = {
        name: ClassPlan(name, days, cutoff_for(now, days))
        for name in OBJECT_CLASSES
        for days in [class_days(policy, name)]
    }
    partitions: set[str] = set()
    for info in objects:
        klass = classify(info.key)
        if klass is None:
            continue
        plan = classes[klass]
        when, source = object_time(info, klass)
        if plan.cutoff is None or when >= plan.cutoff:
            plan.kept += 1
        elif awaiting_processing(info, processed, plan.cutoff):
            plan.kept += 1
            plan.unprocessed_kept += 1
        else:
            plan.expired.append(info)
            plan.aged_by_mtime += source == "mtime"
            if klass == "videos" and (pk := partition_key_of(info.key)):
                partitions.add(pk)
    events_days = int(policy.retention_events_days)
    return RetentionPlan(
        now=now,
        classes=classes,
        events=events_plan or EventsPlan(cutoff_for(now, events_days)),
        video_partitions=sorted(partitions),
    )


# --------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------


def _month_of_partition(name: str) -> date | None:
    m = _MONTH_PARTITION_RE.match(name)
    return date(int(m["y"]), int(m["m"]), 1) if m else None


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    lo = datetime(month.year, month.month, 1, tzinfo=UTC)
    nxt = _next_month(month)
    return lo, datetime(nxt.year, nxt.month, 1, tzinfo=UTC)


def expired_partitions(partitions: Iterable[str], cutoff: datetime) -> list[str]:
    """Monthly partitions whose whole range [first of month, first of next) is before cutoff."""
    out = []
    for name in partitions:
        month = _month_of_partition(name)
        if month is not None and month_bounds(month)[1] <= cutoff:
            out.append(name)
    return sorted(out)


def plan_event_retention(store: EventStore, now: datetime, policy: RetentionPolicy) -> EventsPlan:
    """Read-only: how many rows and which Postgres partitions the sweep would remove."""
    cutoff = cutoff_for(now.astimezone(UTC), int(policy.retention_events_days))
    if cutoff is None:
        return EventsPlan(None)
    with store.engine.connect() as conn:
        # Before any read of events: an archive run must not drop a listed partition before
        # its count, and locking after reading events would take the locks in the opposite
        # order to archive and partition upkeep (schema lock, then the table): a deadlock.
        _lock_schema(store, conn)
        rows = conn.execute(
            sa.select(sa.func.count()).select_from(events).where(events.c.captured_at < cutoff)
        ).scalar_one()
        drop = expired_partitions(store.partitions(conn), cutoff)
        in_drop = sum(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one() for name in drop)
    return EventsPlan(cutoff, int(rows), drop, int(in_drop))


def _lock_schema(store: EventStore, conn: sa.Connection) -> None:
    """Serialise with everything that creates or drops partitions, until the transaction ends."""
    if store.dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('anpr_events_schema'))"))


def delete_events_before(store: EventStore, cutoff: datetime) -> tuple[int, list[str]]:
    """Remove every row with captured_at < cutoff; returns (rows removed, partitions dropped).

    One transaction: DETACH + DROP the fully expired monthly partitions, then a row delete
    for the rest (partially expired month, DEFAULT partition, or SQLite).
    """
    with store.engine.begin() as conn:
        removed = 0
        # Lock before listing: an archive run (or another sweep) may drop a listed partition.
        _lock_schema(store, conn)
        dropped = expired_partitions(store.partitions(conn), cutoff)
        for name in dropped:
            removed += conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
            conn.execute(sa.text(f"ALTER TABLE events DETACH PARTITION {name}"))
            conn.execute(sa.text(f"DROP TABLE {name}"))
        removed += conn.execute(sa.delete(events).where(events.c.captured_at < cutoff)).rowcount
    return int(removed), dropped


# --------------------------------------------------------------------------------------
# Apply
# --------------------------------------------------------------------------------------


@dataclass
class RetentionResult:
    deleted: dict[str, int]
    bytes: dict[str, int]
    events_deleted: int
    partitions_dropped: list[str]
    video_partitions: list[str]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.deleted:
            out[f"{name}_deleted"] = self.deleted[name]
            out[f"{name}_bytes"] = self.bytes[name]
        out["events_deleted"] = self.events_deleted
        out["events_partitions_dropped"] = list(self.partitions_dropped)
        out["video_partitions"] = len(self.video_partitions)
        return out


def apply_retention(
    plan: RetentionPlan, store: ObjectStore, events_store: EventStore | None
) -> RetentionResult:
    """Delete exactly what `plan` lists (objects) and every event row before its cutoff.

    Events are re-evaluated against the cutoff at apply time (not the planned count): rows
    that became expired between plan and apply are still older than the same cutoff.
    """
    deleted, sizes = {}, {}
    for name, cplan in plan.classes.items():
        deleted[name] = store.delete(o.key for o in cplan.expired) if cplan.expired else 0
        sizes[name] = cplan.bytes
    events_deleted, dropped = 0, []
    if events_store is not None and plan.events.cutoff is not None:
        events_deleted, dropped = delete_events_before(events_store, plan.events.cutoff)
    return RetentionResult(deleted, sizes, events_deleted, dropped, list(plan.video_partitions))


def run_retention(
    now: datetime,
    store: ObjectStore,
    events_store: EventStore | None,
    policy: RetentionPolicy,
    processed: Container[str],
    dry_run: bool = False,
) -> tuple[RetentionPlan, RetentionResult | None]:
    """List, plan and (unless dry_run) apply. The Dagster job and the tests both call this.

    `processed`: the ``videos`` partitions that have ``plate_events`` materialised.
    """
    # Planned and applied under the data lock: an erase-plate rewriting a Parquet file this
    # sweep deletes would otherwise write the expired file back. A dry run only reads.
    no_lock = dry_run or events_store is None
    with nullcontext() if no_lock else data_lock(events_store, "retention_sweep"):
        events_plan = plan_event_retention(events_store, now, policy) if events_store is not None else None
        plan = plan_retention(now, list_objects(store, policy), policy, events_plan, processed=processed)
        if dry_run:
            return plan, None
        return plan, apply_retention(plan, store, events_store)


# --------------------------------------------------------------------------------------
# Dagster step outputs of deleted partitions
# --------------------------------------------------------------------------------------

# The per-video assets whose pickled outputs the IO manager keeps per partition
# (``<io root>/<asset>/<camera>/<timestamp>``): S3PickleIOManager under ``dagster-io/`` in
# the bucket, FilesystemIOManager under ``$ANPR_DATA_DIR/dagster-io`` (see definitions.py).
STEP_OUTPUT_ASSETS = ("video", "frames", "plate_detections", "plate_reads", "plate_events")
IO_MANAGER_PREFIX = "dagster-io/"


def delete_step_outputs(partition_keys: Iterable[str], store: ObjectStore, local_dir: str = "") -> int:
    """Delete the stored step outputs of these video partitions; returns how many were removed.

    They hold per-frame reads (plate text) and would otherwise outlive the video forever.
    """
    wanted = set(partition_keys)
    if not wanted:
        return 0
    if local_dir:
        removed = 0
        for asset in STEP_OUTPUT_ASSETS:
            for pk in wanted:
                path = Path(local_dir) / asset / pk
                if path.is_file():
                    path.unlink()
                    removed += 1
        return removed
    doomed = [
        o.key
        for asset in STEP_OUTPUT_ASSETS
        for o in store.list(f"{IO_MANAGER_PREFIX}{asset}/")
        if o.key[len(IO_MANAGER_PREFIX) + len(asset) + 1 :] in wanted
    ]
    return store.delete(doomed) if doomed else 0


__all__ = [
    "ClassPlan",
    "EventsPlan",
    "RetentionPlan",
    "RetentionResult",
    "apply_retention",
    "awaiting_processing",
    "classify",
    "delete_events_before",
    "delete_step_outputs",
    "expired_partitions",
    "list_objects",
    "object_time",
    "partition_key_of",
    "partition_name",
    "plan_event_retention",
    "plan_retention",
    "run_retention",
    "upload_partition_key",
]
