"""Database upkeep for the events store: VACUUM/ANALYZE, partitions ahead of need, sizes.

Postgres: ``VACUUM (ANALYZE) events`` needs a connection outside a transaction block,
so it runs on an AUTOCOMMIT connection; on a partitioned table it recurses into every
partition. The next two monthly partitions are created (`EventStore.ensure_month_partitions`,
which also moves stray rows out of DEFAULT). Sizes and dead tuples are read from the
catalog (``pg_total_relation_size``, ``pg_indexes_size``, ``pg_stat_user_tables``) summed
over the partitions, so an operator sees bloat before and after.

SQLite: ``VACUUM`` (rebuilds the file, returning free pages) and ``ANALYZE``; sizes from
``page_count * page_size`` and ``freelist_count``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa

from anpr_pipeline.resources.event_store import EventStore


@dataclass
class TableStats:
    rows: int
    table_bytes: int  # heap + TOAST (+ indexes on SQLite, where they share the file)
    index_bytes: int
    dead_tuples: int  # Postgres: n_dead_tup; SQLite: free pages
    partitions: list[str] = field(default_factory=list)


@dataclass
class MaintenanceResult:
    dialect: str
    before: TableStats
    after: TableStats
    partitions_created: list[str]
    vacuumed: bool

    def summary(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "rows": self.after.rows,
            "table_bytes_before": self.before.table_bytes,
            "table_bytes_after": self.after.table_bytes,
            "index_bytes_after": self.after.index_bytes,
            "dead_tuples_before": self.before.dead_tuples,
            "dead_tuples_after": self.after.dead_tuples,
            "partitions": self.after.partitions,
            "partitions_created": self.partitions_created,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_stats(store: EventStore) -> TableStats:
    with store.engine.connect() as conn:
        rows = int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
        if store.dialect == "postgresql":
            parts = store.partitions(conn)
            rels = parts or ["events"]
            stats = conn.execute(
                sa.text(
                    "SELECT coalesce(sum(pg_table_size(c.oid)), 0), coalesce(sum(pg_indexes_size(c.oid)), 0), "
                    "coalesce(sum(s.n_dead_tup), 0) FROM pg_class c "
                    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                    "WHERE c.relname = ANY(:rels) AND c.relnamespace = 'public'::regnamespace"
                ),
                {"rels": rels},
            ).one()
            return TableStats(rows, int(stats[0]), int(stats[1]), int(stats[2]), parts)
        page_size = conn.execute(sa.text("PRAGMA page_size")).scalar_one()
        pages = conn.execute(sa.text("PRAGMA page_count")).scalar_one()
        free = conn.execute(sa.text("PRAGMA freelist_count")).scalar_one()
        return TableStats(rows, int(page_size * pages), 0, int(free), [])


def vacuum_analyze(store: EventStore) -> None:
    # VACUUM cannot run inside a transaction on either database.
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if store.dialect == "postgresql":
            conn.execute(sa.text("VACUUM (ANALYZE) events"))
        else:
            conn.execute(sa.text("VACUUM"))
            conn.execute(sa.text("ANALYZE"))


def run_maintenance(
    store: EventStore, months_ahead: int = 2, vacuum: bool = True, today: date | None = None
) -> MaintenanceResult:
    before = table_stats(store)
    created = store.ensure_month_partitions(months_ahead=months_ahead, today=today)
    if vacuum:
        vacuum_analyze(store)
    return MaintenanceResult(store.dialect, before, table_stats(store), created, vacuum)
