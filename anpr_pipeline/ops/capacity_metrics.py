"""Capacity gauges for the Grafana dashboard, registered next to the exporter in ``ops/metrics.py``.

| metric | type | meaning |
|---|---|---|
| ``anpr_active_cameras`` | gauge | cameras with at least one event captured in the last hour |
| ``anpr_database_size_bytes{relation}`` | gauge | bytes (table + indexes + TOAST) of each events-DB table / monthly partition; SQLite: the file |
| ``anpr_database_total_bytes`` | gauge | the whole events database |
| ``anpr_storage_bytes{class}`` | gauge | bucket bytes per data class: videos, crops, parquet, archive, backups, exports, stats, other |
| ``anpr_storage_objects{class}`` | gauge | bucket objects per data class |
| ``anpr_storage_scan_age_seconds`` | gauge | age of the bucket figures above |

Database figures are cheap catalogue reads, taken at every scrape. Listing a bucket of
millions of crops is not: it runs in a background thread at most every ``storage_ttl_s``
and scrapes report the last complete listing (nothing until the first one finishes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# First key segment -> data class (DESIGN §3 layout; retention and archive use the same split).
STORAGE_CLASSES = {
    "uploads": "videos",
    "crops": "crops",
    "parquet": "parquet",
    "archive": "archive",
    "backups": "backups",
    "exports": "exports",
    "stats": "stats",
}
ACTIVE_WINDOW = timedelta(hours=1)


def storage_class(key: str) -> str:
    return STORAGE_CLASSES.get(key.split("/", 1)[0], "other")


def bucket_usage(store: Any) -> dict[str, tuple[int, int]]:
    """(bytes, objects) per data class, from one full listing of the bucket."""
    usage = {name: [0, 0] for name in [*STORAGE_CLASSES.values(), "other"]}
    for info in store.list(""):
        entry = usage[storage_class(info.key)]
        entry[0] += info.size
        entry[1] += 1
    return {name: (b, n) for name, (b, n) in usage.items()}


def database_sizes(events_store: Any) -> tuple[dict[str, int], int]:
    """Bytes per events-DB relation and for the whole database."""
    import sqlalchemy as sa

    engine = events_store.engine
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                    "AND (c.relname LIKE 'events%' OR c.relname IN ('camera_hourly_stats', 'anpr_schema'))"
                )
            ).all()
            total = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        return {name: int(size) for name, size in rows}, int(total)
    database = engine.url.database
    if not database or database == ":memory:":
        return {}, 0
    path = Path(database)
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return {"sqlite": size}, size


def active_cameras(events_store: Any, now: datetime, window: timedelta = ACTIVE_WINDOW) -> int:
    import sqlalchemy as sa

    from anpr_pipeline.resources.event_store import events

    stmt = sa.select(sa.func.count(sa.distinct(events.c.camera_id))).where(
        events.c.captured_at >= now - window
    )
    with events_store.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


class CapacityCollector(Collector):
    def __init__(
        self, events_store: Any | None, bucket_store: Any | None = None, storage_ttl_s: float = 900.0
    ):
        self.events_store = events_store
        self.bucket_store = bucket_store
        self.storage_ttl_s = storage_ttl_s
        self._usage: dict[str, tuple[int, int]] | None = None
        self._usage_at = 0.0
        self._scan: threading.Thread | None = None
        self._lock = threading.Lock()

    def _scan_bucket(self) -> None:
        try:
            usage = bucket_usage(self.bucket_store)
        except Exception as exc:  # the next scrape retries; the last figures stay
            log.warning("capacity metrics: cannot list the bucket: %s", exc)
        else:
            with self._lock:
                self._usage, self._usage_at = usage, time.monotonic()

    def refresh_storage(self, wait: bool = False) -> None:
        """Start a bucket listing unless one is running or the last one is fresh."""
        with self._lock:
            stale = self._usage is None or time.monotonic() - self._usage_at > self.storage_ttl_s
            if self.bucket_store is None or not stale or (self._scan and self._scan.is_alive()):
                scan = self._scan
            else:
                scan = self._scan = threading.Thread(
                    target=self._scan_bucket, name="anpr-bucket-usage", daemon=True
                )
                scan.start()
        if wait and scan is not None:
            scan.join()

    def collect(self) -> Iterator[Metric]:
        if self.events_store is not None:
            try:
                cameras = active_cameras(self.events_store, datetime.now(UTC))
                sizes, total = database_sizes(self.events_store)
            except Exception as exc:
                log.warning("capacity metrics: cannot read the events database: %s", exc)
            else:
                yield GaugeMetricFamily(
                    "anpr_active_cameras", "Cameras with an event in the last hour", value=cameras
                )
                by_relation = GaugeMetricFamily(
                    "anpr_database_size_bytes", "Bytes per events-DB relation", labels=["relation"]
                )
                for name, size in sorted(sizes.items()):
                    by_relation.add_metric([name], size)
                yield by_relation
                yield GaugeMetricFamily(
                    "anpr_database_total_bytes", "Bytes of the events database", value=total
                )
        self.refresh_storage()
        with self._lock:
            usage, usage_at = self._usage, self._usage_at
        if usage is not None:
            size = GaugeMetricFamily("anpr_storage_bytes", "Bucket bytes per data class", labels=["class"])
            count = GaugeMetricFamily(
                "anpr_storage_objects", "Bucket objects per data class", labels=["class"]
            )
            for name, (nbytes, objects) in sorted(usage.items()):
                size.add_metric([name], nbytes)
                count.add_metric([name], objects)
            yield size
            yield count
            yield GaugeMetricFamily(
                "anpr_storage_scan_age_seconds",
                "Age of the bucket usage figures",
                value=time.monotonic() - usage_at,
            )


def bucket_from_settings() -> Any | None:
    """The bucket the pipeline uses (ANPR_BUCKET_*), or None when it cannot be built."""
    try:
        from anpr_pipeline.resources.object_store import ObjectStoreResource
        from anpr_pipeline.settings import load_settings

        return ObjectStoreResource.from_settings(load_settings()).get_store()
    except Exception as exc:
        log.warning("capacity metrics: no bucket (%s); storage gauges disabled", exc)
        return None
