"""`anpr search` and `anpr export`: the analysts' and operators' view of the events database.

- ``anpr search PLATE [--prefix|--fuzzy] [--camera ID] [--since T] [--until T] [--format table|json|csv]``
  exact by default; ``--prefix`` for partial plates; ``--fuzzy`` for one edit (a missed,
  extra or wrong character) on top of the OCR look-alikes O/0, I/1, B/8 (S/5, Z/2, G/6 too),
  so a plate read ``AB8C12`` is found when searching ``ABBC12``.
- ``anpr export --since T --until T --format parquet|csv --out PATH [--camera ID]`` writes
  every event in the window, streamed in chunks so a month of events fits in memory.

Times are ISO dates/datetimes (naive = UTC) or relative to now (``7d``, ``24h``, ``30m``);
``--since`` is inclusive, ``--until`` exclusive. Both commands read the database named by
``ANPR_DATABASE_URL`` (or ``--database-url``): the same SQLite file as the demo, or Postgres.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from anpr_pipeline.cli_args import out_path_problem, positive_int

# Columns analysts see, in this order (all `events` columns except the surrogate id).
OUTPUT_COLUMNS = (
    "captured_at",
    "camera_id",
    "normalized_plate",
    "plate_text",
    "confidence",
    "region",
    "frames_seen",
    "first_seen_at",
    "last_seen_at",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "frame_index",
    "video_key",
    "crop_key",
    "event_id",
    "char_confidences",
    "detector_version",
    "reader_version",
    "created_at",
)
TABLE_COLUMNS = (
    "captured_at",
    "camera_id",
    "normalized_plate",
    "plate_text",
    "confidence",
    "region",
    "frames_seen",
    "video_key",
)
_RELATIVE = re.compile(r"^(\d+)\s*([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO date/datetime (naive = UTC) or a relative '7d' / '24h' / '30m' before now."""
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use 2026-11-28, 2026-11-28T08:00, 2026-11-28T08:00:00+01:00 or 7d/24h/30m"
        ) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _database_url(arg: str | None) -> str:
    if arg:
        return arg
    from anpr_pipeline.settings import load_settings

    return load_settings().database_url


def _open_store(url: str):
    """An EventStore without creating anything: analysts may hold read-only credentials."""
    from anpr_pipeline.resources.event_store import EventStore, EventStoreError, require_sqlite_file

    require_sqlite_file(url, "the pipeline or `anpr demo`")
    store = EventStore(url, retries=1)
    if not _has_events(store):
        raise EventStoreError(
            f"{store.describe()} has no events table yet (run the pipeline or `anpr demo` first)"
        )
    return store


def _has_events(store) -> bool:
    """Through the store's retry-and-wrap path: an unreachable server or a file that is not
    a database is an EventStoreError naming the database, never a SQLAlchemy traceback."""
    import sqlalchemy as sa

    # One attempt: the analyst sees one line at once instead of a retry warning first.
    return store._run("check events table", lambda: sa.inspect(store.engine).has_table("events"), retries=0)


# -- formatting -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")  # one format per column
    if isinstance(value, float):
        return round(value, 4)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return json.dumps([_plain(v) for v in value])
    return str(value)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")  # one format per column
    if isinstance(value, list):
        return json.dumps(value)
    return value


def format_table(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def format_json(rows: Sequence[dict]) -> str:
    return json.dumps([{c: _plain(row.get(c)) for c in OUTPUT_COLUMNS} for row in rows], indent=2)


def format_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in OUTPUT_COLUMNS])
    return buffer.getvalue()


# -- search ---------------------------------------------------------------------------------------


def search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anpr search", description="Find the events of a plate.")
    parser.add_argument("plate", help="plate text; spaces, dashes and case are ignored")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--prefix", action="store_const", dest="mode", const="prefix", help="plates starting with PLATE"
    )
    mode.add_argument(
        "--fuzzy",
        action="store_const",
        dest="mode",
        const="fuzzy",
        help="one edit away, with O/0, I/1, B/8, S/5, Z/2, G/6 treated as equal",
    )
    parser.add_argument("--camera", help="only this camera id")
    parser.add_argument("--since", type=parse_time, help="from this time (inclusive)")
    parser.add_argument("--until", type=parse_time, help="before this time (exclusive)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument(
        "--limit", type=positive_int, default=1000, help="at most this many events (newest first)"
    )
    parser.add_argument("--database-url", help="events DB (default: ANPR_DATABASE_URL)")
    parser.set_defaults(mode="exact")
    return parser


def search(argv: list[str]) -> int:
    args = search_parser().parse_args(argv)
    import sqlalchemy as sa

    from anpr_pipeline.resources.event_store import EventStoreError, _first_line

    try:
        store = _open_store(_database_url(args.database_url))
        rows = store.search(
            args.plate,
            mode=args.mode,
            camera_id=args.camera,
            since=args.since,
            until=args.until,
            limit=args.limit + 1,  # one more than shown: tells whether the limit cut the list
        )
    except (EventStoreError, ValueError) as exc:
        print(f"anpr search: {exc}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as exc:  # anything the store did not wrap: still one line
        print(f"anpr search: {_first_line(exc)}", file=sys.stderr)
        return 1
    cut = len(rows) > args.limit
    rows = rows[: args.limit]
    if args.format == "json":
        print(format_json(rows))
    elif args.format == "csv":
        sys.stdout.write(format_csv(rows))
    else:
        print(format_table(rows) if rows else f"no events for {args.plate!r} ({args.mode})")
    if cut:  # on stderr for every format: a CSV or JSON cut short must not pass for complete
        print(f"(newest {args.limit} shown; more match: raise --limit)", file=sys.stderr)
    _note_archived(args.since)
    return 0


def _note_archived(since: datetime | None) -> None:
    """Months past ANPR_ARCHIVE_EVENTS_AFTER_DAYS have left the events table (the archive
    Parquet parts hold them): say so when the window reaches back there."""
    from anpr_pipeline.settings import load_settings

    days = load_settings().archive_events_after_days
    if since is not None and days > 0 and since < datetime.now(UTC) - timedelta(days=days):
        print(
            f"(events of months that ended over {days} days ago are archived out of the events "
            "table: see archive/events/ in the bucket)",
            file=sys.stderr,
        )


# -- export ---------------------------------------------------------------------------------------


def iter_events(
    store, since: datetime, until: datetime, camera_id: str | None = None, chunk_size: int = 5000
) -> Iterator[list[dict]]:
    """Events in [since, until) oldest first, in chunks (server-side cursor on Postgres)."""
    import sqlalchemy as sa

    from anpr_pipeline.resources.event_store import EventStoreError, _first_line, events

    stmt = sa.select(events).where(events.c.captured_at >= since, events.c.captured_at < until)
    if camera_id:
        stmt = stmt.where(events.c.camera_id == camera_id)
    stmt = stmt.order_by(events.c.captured_at, events.c.event_id)
    try:
        with store.engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk_size).execute(stmt)
            for partition in result.partitions():
                yield [_event_dict(r._mapping) for r in partition]
    except sa.exc.SQLAlchemyError as exc:  # e.g. the connection lost halfway through the stream
        raise EventStoreError(f"reading events failed on {store.describe()}: {_first_line(exc)}") from exc


def _event_dict(mapping: Any) -> dict:
    row = dict(mapping)
    row["event_id"] = str(row["event_id"])
    confidences = row.get("char_confidences")
    if isinstance(confidences, str):  # SQLite JSON comes back as text on some drivers
        confidences = json.loads(confidences)
    row["char_confidences"] = [float(c) for c in confidences or []]
    return row


def export_schema():
    import pyarrow as pa

    from anpr_pipeline.resources.parquet_dataset import EVENTS_SCHEMA

    # The analysts' Parquet columns plus the two that the dataset keeps in its path / omits.
    return EVENTS_SCHEMA.insert(1, pa.field("camera_id", pa.string())).append(
        pa.field("created_at", pa.timestamp("us", tz="UTC"))
    )


def export_events(
    store, since: datetime, until: datetime, fmt: str, out: Path, camera_id: str | None = None
) -> int:
    """Write events in [since, until) to ``out`` as Parquet or CSV; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    schema = export_schema()
    count = 0
    try:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for chunk in iter_events(store, since, until, camera_id):
                    columns = {name: [row.get(name) for row in chunk] for name in schema.names}
                    writer.write_table(pa.Table.from_pydict(columns, schema=schema))
                    count += len(chunk)
        else:
            with open(tmp, "w", newline="") as handle:
                handle.write(format_csv([]))
                for chunk in iter_events(store, since, until, camera_id):
                    handle.write(format_csv(chunk).split("\n", 1)[1])
                    count += len(chunk)
        tmp.replace(out)  # a reader never sees half an export
    finally:
        tmp.unlink(missing_ok=True)  # a failed export leaves no half-written .partial behind
    return count


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anpr export", description="Export events in a time window.")
    parser.add_argument("--since", type=parse_time, required=True, help="from this time (inclusive)")
    parser.add_argument(
        "--until", type=parse_time, default=None, help="before this time (exclusive; default now)"
    )
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--out", type=Path, required=True, help="output file")
    parser.add_argument("--camera", help="only this camera id")
    parser.add_argument("--database-url", help="events DB (default: ANPR_DATABASE_URL)")
    return parser


def export(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    until = args.until or datetime.now(UTC)
    if until <= args.since:
        print("anpr export: --until must be after --since", file=sys.stderr)
        return 2
    problem = out_path_problem(args.out)
    if problem:  # before connecting: a typo in --out should not cost a database round trip
        print(f"anpr export: --out {args.out}: {problem}", file=sys.stderr)
        return 2
    import sqlalchemy as sa

    from anpr_pipeline.resources.event_store import EventStoreError, _first_line

    try:
        store = _open_store(_database_url(args.database_url))
        count = export_events(store, args.since, until, args.format, args.out, args.camera)
        _note_archived(args.since)
    except EventStoreError as exc:
        print(f"anpr export: {exc}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as exc:  # anything the store did not wrap: still one line
        print(f"anpr export: {_first_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # the output could not be written (disk full, permissions)
        print(f"anpr export: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{count} events {args.since.isoformat()} .. {until.isoformat()} -> {args.out} ({args.format})")
    return 0
