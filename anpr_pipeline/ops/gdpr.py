"""GDPR: export everything held about a plate, or erase it, with an audit trail.

What is searched (exact match on the normalised plate, A–Z0–9):

- the events table (``normalized_plate``),
- the analysts' Parquet dataset ``parquet/events/`` and the archive dataset ``archive/events/``
  (every file is scanned; row-group statistics let pyarrow skip most of each file),
- the crops the matching rows point to (``crop_key``), and every other crop (and kept full
  frame, ``frames/``) of the same video taken while that vehicle was in view: each event
  row keeps only its best crop, but the detector stored one per frame. The frame of a
  crop is in its name (``<source frame>_<n>.jpg``); the video's frame rate is recovered
  from the rows of that video (best crop frame / its time offset), and crops within
  [first_seen_at, last_seen_at] ± 0.5 s are taken, except crops other events reference.
  When no rate can be recovered, all unreferenced crops of that video are taken
  (privacy first).

export_plate writes one zip to ``exports/<plate-hash>-<time>.zip``: ``manifest.json``,
``events.json`` (database rows), ``parquet_rows.json`` (matching rows with their file),
and ``crops/...`` (the JPEGs). The key carries a salted hash, never the plate.

erase_plate deletes the rows, deletes the crops, rewrites each affected Parquet file
without the plate's rows (deleting files left empty), and deletes the plate's earlier
export zips (found by the salted hash in their name: zips made under another
ANPR_GDPR_SALT are not found). It holds the data lock (``locks``) from its first read to its
last delete, so archive and retention runs, and other erasures, wait for it and it for them.

The erasure is remembered (``erased_plates``: a salted hash of the plate with look-alikes
folded, ``erasure_digest``, and the time; no plate): a later re-run or first run of a video
captured before that time drops the plate's passes (``split_erased``, called by
``plate_events`` under the shared data lock) and deletes their crops and the run's step
outputs, so a backfill does not bring the plate back. Passes captured after the erasure are
new data and kept. Changing ANPR_GDPR_SALT forgets these erasures, as it does the audit's.

Audit: one JSON object per action (a one-line JSON-lines file) under
``audit/gdpr/<YYYY-MM-DD>/<time>-<action>-<id>.jsonl`` in the bucket, next to the data it
is about and kept outside every retention class. It stores the plate only as
HMAC-SHA256(ANPR_GDPR_SALT, plate): plates are short, so an unsalted hash could be
reversed by trying them all; the salt is a secret. Without a salt the jobs refuse to run
on Postgres (production) and warn on the embedded default.

Not covered here (documented limits): the raw videos (their own retention), the database
backups (``backups/``: the newest ANPR_BACKUPS_KEEP nightly ones are kept, so the erased
rows stay in backups until those taken before the erasure are pruned, a week by default)
and Dagster's own records (run logs, materialization metadata of plate_events).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import io
import json
import logging
import re
import uuid
import zipfile
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from anpr_pipeline.ops.locks import DataLockTimeout, data_lock
from anpr_pipeline.ops.retention import delete_step_outputs, partition_key_of
from anpr_pipeline.resources.event_store import EventStore, events, normalize_plate
from anpr_pipeline.resources.object_store import ObjectNotFoundError, ObjectStore
from anpr_pipeline.resources.parquet_dataset import rewrite_without
from anpr_pipeline.uploads import TIMESTAMP_FORMAT
from anpr_pipeline.vision.plates import confusion_key

log = logging.getLogger(__name__)

EXPORTS_PREFIX = "exports/"
AUDIT_PREFIX = "audit/gdpr/"
PARQUET_PREFIXES = ("parquet/events/", "archive/events/")


class GdprError(RuntimeError):
    """The request cannot be carried out safely (bad plate, missing salt in production)."""


def _hmac_hex(salt: str, text: str) -> str:
    return hmac.new(salt.encode(), text.encode(), hashlib.sha256).hexdigest()


def plate_digest(plate: str, salt: str) -> str:
    return _hmac_hex(salt, normalize_plate(plate))


def erasure_digest(plate: str, salt: str) -> str:
    """What ``erased_plates`` keeps: HMAC of the plate with look-alikes folded (O/0, I/1, B/8,
    S/5, Z/2, G/6: ``plates.confusion_key``), so a re-read of the same pass that differs only
    by one of them is still recognised; prefixed, so it never equals the audit's hash."""
    return _hmac_hex(salt, "erased:" + confusion_key(normalize_plate(plate)))


def check_request(plate: str, salt: str, production: bool) -> str:
    """The normalised plate; refuses an empty plate, and an empty salt in production."""
    p = normalize_plate(plate)
    if not p:
        raise GdprError(f"plate {plate!r} has no letters or digits")
    if not salt:
        if production:
            raise GdprError(
                "ANPR_GDPR_SALT is empty: audit records would keep a reversible hash of the plate. "
                "Set a long random secret (e.g. `openssl rand -hex 32`) and keep it stable."
            )
        log.warning(
            "ANPR_GDPR_SALT is empty: the audit hash of %s-character plates can be brute-forced", len(p)
        )
    return p


@dataclass
class PlateData:
    plate: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    parquet: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # file key -> matching rows

    track_crops: set[str] = field(default_factory=set)  # unreferenced crops of the same passes

    @property
    def crop_keys(self) -> list[str]:
        keys = {r.get("crop_key") for r in self.rows}
        keys |= {r.get("crop_key") for rows in self.parquet.values() for r in rows}
        return sorted(k for k in keys | self.track_crops if k)

    @property
    def parquet_rows(self) -> int:
        return sum(len(v) for v in self.parquet.values())


def export_prefix(digest: str) -> str:
    """Where a plate's export zips go: ``exports/<plate-hash[:16]>-``, so erasure finds them."""
    return f"{EXPORTS_PREFIX}{digest[:16]}-"


def _read_parquet(store: ObjectStore, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get_bytes(key)))


def _matching(table: pa.Table, plate: str) -> pa.Array:
    return pc.fill_null(pc.equal(table.column("normalized_plate"), plate), False)


def parquet_files(store: ObjectStore) -> list[str]:
    return [o.key for prefix in PARQUET_PREFIXES for o in store.list(prefix) if o.key.endswith(".parquet")]


def find_plate(plate: str, es: EventStore, store: ObjectStore) -> PlateData:
    """Everything held about a normalised plate, in the database and the Parquet datasets."""
    with es.engine.connect() as conn:
        stmt = sa.select(events).where(events.c.normalized_plate == plate).order_by(events.c.captured_at)
        rows = [dict(r._mapping) | {"event_id": str(r.event_id)} for r in conn.execute(stmt)]
    data = PlateData(plate, rows)
    data.track_crops = _track_crops(plate, rows, es, store)
    for key in parquet_files(store):
        # Cheap first pass on one column; the whole file is read only when it matches.
        table = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["normalized_plate"])
        if pc.any(_matching(table, plate)).as_py():
            full = _read_parquet(store, key)
            data.parquet[key] = full.filter(_matching(full, plate)).to_pylist()
    return data


_CROP_NAME = re.compile(r"/(?:frames/)?(?P<frame>\d{6})(?:_\d+)?\.jpg$")
# crops/<camera>/<day>/<ts>/: the video's effective start (a sidecar's started_at, to the
# second), the origin its events' times were computed from; the upload key's time is not
# when a sidecar moved it.
_CROP_DIR_TS = re.compile(r"^crops/[^/]+/[^/]+/(?P<ts>\d{8}T\d{6}Z)/")
TRACK_MARGIN_S = 0.5


def frame_of(crop_key: str | None) -> int | None:
    m = _CROP_NAME.search(crop_key or "")
    return int(m["frame"]) if m else None


def frame_rate(video_rows: Sequence[dict[str, Any]], started: datetime) -> float | None:
    """Frames per second from the row whose best crop is furthest into the video."""
    best: tuple[float, int] | None = None
    for r in video_rows:
        frame, offset = frame_of(r.get("crop_key")), (r["captured_at"] - started).total_seconds()
        if frame and offset > 0 and (best is None or offset > best[0]):
            best = (offset, frame)
    return best[1] / best[0] if best else None


def _track_crops(plate: str, rows: list[dict[str, Any]], es: EventStore, store: ObjectStore) -> set[str]:
    out: set[str] = set()
    for video_key in sorted({r["video_key"] for r in rows}):
        mine = [r for r in rows if r["video_key"] == video_key and r.get("crop_key")]
        ts = _CROP_DIR_TS.match(mine[0]["crop_key"]) if mine else None
        if ts is None:
            continue
        started = datetime.strptime(ts["ts"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        video_rows = es.events_for_video(video_key)
        others = {r["crop_key"] for r in video_rows if r["normalized_plate"] != plate}
        fps = frame_rate(video_rows, started)
        spans = [pass_span(r, started) for r in mine]
        crop_dir = mine[0]["crop_key"].rsplit("/", 1)[0] + "/"
        seconds_of = (lambda frame, fps=fps: frame / fps) if fps else (lambda frame: None)
        keys = (info.key for info in store.list(crop_dir))
        # Without a frame rate every unreferenced crop of the video goes (privacy first).
        out |= crops_in_spans(keys, seconds_of, spans, others, take_untimed=True)
    return out


def crops_in_spans(
    keys: Iterable[str],
    seconds_of: Callable[[int], float | None],
    spans: Sequence[tuple[float, float]],
    keep: Collection[str],
    take_untimed: bool,
) -> set[str]:
    """The crops and kept frames among ``keys`` taken within ``spans`` (seconds into the video,
    margin included), except those in ``keep`` (other events' crops). ``seconds_of``: a
    frame number's time, None when unknown; such frames are taken when ``take_untimed``."""
    out: set[str] = set()
    for key in keys:
        frame = frame_of(key)
        if key in keep or frame is None:
            continue
        at = seconds_of(frame)
        if (at is None and take_untimed) or (at is not None and any(lo <= at <= hi for lo, hi in spans)):
            out.add(key)
    return out


def pass_span(row: dict[str, Any], started: datetime) -> tuple[float, float]:
    """Seconds into its video during which an event's vehicle was in view, with the margin."""
    return (
        (row["first_seen_at"] - started).total_seconds() - TRACK_MARGIN_S,
        (row["last_seen_at"] - started).total_seconds() + TRACK_MARGIN_S,
    )


def split_erased(
    rows: Sequence[dict[str, Any]], es: EventStore, salt: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows to store, rows of plates ``erase_plate`` erased after the pass was captured).

    A re-run recomputes events from the upload; without this, a plate erased on request would
    be stored again by the next backfill. Matched with look-alikes folded (a re-run with
    another reader may vote 0VKG96 for an erased OVKG96). Passes captured after the erasure
    are kept."""
    digests = {r["normalized_plate"]: erasure_digest(r["normalized_plate"], salt) for r in rows}
    erased = es.erasures(digests.values())

    def was_erased(row: dict[str, Any]) -> bool:
        at = erased.get(digests[row["normalized_plate"]])
        return at is not None and row["captured_at"] <= at

    return [r for r in rows if not was_erased(r)], [r for r in rows if was_erased(r)]


def write_audit(
    store: ObjectStore,
    action: str,
    plate: str,
    salt: str,
    details: dict[str, Any],
    actor: str | None = None,
    now: datetime | None = None,
) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    record = {
        "action": action,
        "at": now.isoformat(),
        "plate_hmac_sha256": plate_digest(plate, salt),
        "salted": bool(salt),
        "actor": actor or _whoami(),
        **details,
    }
    key = f"{AUDIT_PREFIX}{now.date().isoformat()}/{now.strftime(TIMESTAMP_FORMAT)}-{action}-{uuid.uuid4().hex[:8]}.jsonl"
    store.put_bytes(
        key, (json.dumps(record, sort_keys=True, default=str) + "\n").encode(), "application/x-ndjson"
    )
    return key


def read_audit(store: ObjectStore) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for o in store.list(AUDIT_PREFIX)
        for line in store.get_bytes(o.key).decode().splitlines()
        if line.strip()
    ]


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in a container
        return "unknown"


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    key: str
    events: int
    parquet_rows: int
    crops: int
    missing_crops: int
    bytes: int
    audit_key: str

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def export_plate(
    plate: str,
    es: EventStore,
    store: ObjectStore,
    salt: str,
    production: bool = False,
    actor: str | None = None,
    now: datetime | None = None,
) -> ExportResult:
    p = check_request(plate, salt, production)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    data = find_plate(p, es, store)
    buffer = io.BytesIO()
    crops = missing = 0
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("events.json", json.dumps(data.rows, indent=1, default=str))
        parquet_rows = [dict(r, source_file=key) for key, rows in data.parquet.items() for r in rows]
        zf.writestr("parquet_rows.json", json.dumps(parquet_rows, indent=1, default=str))
        for key in data.crop_keys:
            try:
                zf.writestr(key, store.get_bytes(key))
                crops += 1
            except ObjectNotFoundError:
                missing += 1  # already removed by crop retention
        manifest = {
            "plate": p,
            "generated_at": now.isoformat(),
            "events": len(data.rows),
            "parquet_rows": data.parquet_rows,
            "crops": crops,
            "missing_crops": missing,
        }
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
    digest = plate_digest(p, salt)
    key = f"{export_prefix(digest)}{now.strftime(TIMESTAMP_FORMAT)}.zip"
    store.put_bytes(key, buffer.getvalue(), "application/zip")
    audit = write_audit(
        store,
        "export",
        p,
        salt,
        {"export_key": key, "events": len(data.rows), "parquet_rows": data.parquet_rows, "crops": crops},
        actor=actor,
        now=now,
    )
    return ExportResult(key, len(data.rows), data.parquet_rows, crops, missing, len(buffer.getvalue()), audit)


# --------------------------------------------------------------------------------------
# Erase
# --------------------------------------------------------------------------------------


@dataclass
class EraseResult:
    events_deleted: int
    crops_deleted: int
    parquet_files_rewritten: int
    parquet_files_deleted: int
    parquet_rows_deleted: int
    step_outputs_deleted: int = 0
    exports_deleted: int = 0  # the plate's earlier access-request zips
    audit_key: str = ""
    dry_run: bool = False

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _rewrite_without(store: ObjectStore, key: str, plate: str) -> tuple[int, bool]:
    """Rewrite one Parquet file without the plate's rows; returns (rows removed, file deleted)."""
    table = _read_parquet(store, key)
    return rewrite_without(store, key, table, _matching(table, plate))


def erase_plate(
    plate: str,
    es: EventStore,
    store: ObjectStore,
    salt: str,
    production: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
    now: datetime | None = None,
    io_manager_dir: str = "",
) -> EraseResult:
    """Erase a plate everywhere it is held (see the module docstring), then write the audit record.

    The Dagster step outputs of the affected videos (pickled per-frame reads) are deleted
    too; re-running such a video recomputes them from the upload.
    """
    p = check_request(plate, salt, production)
    # From the first read to the last delete: an archive or retention run, or another erase,
    # working on the same files in between would bring the plate or an expired file back.
    # A dry run only reads.
    with nullcontext() if dry_run else data_lock(es, "erase-plate"):
        data = find_plate(p, es, store)
        exports = [o.key for o in store.list(export_prefix(plate_digest(p, salt)))]
        if dry_run:
            return EraseResult(
                len(data.rows),
                len(data.crop_keys),
                len(data.parquet),
                0,
                data.parquet_rows,
                exports_deleted=len(exports),
                dry_run=True,
            )
        # First, so that from here on a re-run of one of the plate's videos (waiting for this
        # lock) drops its passes instead of storing them again.
        es.record_erasure(erasure_digest(p, salt), now or datetime.now(UTC))
        # Parquet and crops first, the database last: if a step fails, a re-run still finds the
        # rows (and through them the crop keys) and finishes the job.
        rewritten = deleted_files = rows_removed = 0
        for key in data.parquet:
            removed, gone = _rewrite_without(store, key, p)
            rows_removed += removed
            deleted_files += gone
            rewritten += not gone
        crops = store.delete(data.crop_keys) if data.crop_keys else 0
        exports_deleted = store.delete(exports) if exports else 0
        with es.engine.begin() as conn:
            deleted = conn.execute(sa.delete(events).where(events.c.normalized_plate == p)).rowcount
        videos = {r["video_key"] for r in data.rows} | {
            r.get("video_key") for v in data.parquet.values() for r in v
        }
        partitions = {pk for v in videos if v and (pk := partition_key_of(v))}
        outputs = delete_step_outputs(partitions, store, io_manager_dir)
        result = EraseResult(
            int(deleted),
            crops,
            rewritten,
            deleted_files,
            rows_removed,
            outputs,
            exports_deleted=exports_deleted,
        )
        details = {k: v for k, v in result.summary().items() if k not in {"audit_key", "dry_run"}}
        result.audit_key = write_audit(store, "erase", p, salt, details, actor=actor, now=now)
        return result


# --------------------------------------------------------------------------------------
# CLI: anpr export-plate / anpr erase-plate
# --------------------------------------------------------------------------------------


def _stores_from_settings() -> tuple[EventStore, ObjectStore, str, str]:
    from anpr_pipeline.resources.event_store import get_event_store
    from anpr_pipeline.resources.object_store import ObjectStoreResource
    from anpr_pipeline.settings import load_settings

    s = load_settings()
    # The same bucket as the pipeline's, S3 timeouts and attempts included.
    store = ObjectStoreResource.from_settings(s).get_store()
    io_dir = str(s.data_path / "dagster-io") if s.bucket_kind == "local" else ""
    return get_event_store(s.database_url), store, s.gdpr_salt, io_dir


def _cli_errors() -> tuple[type[Exception], ...]:
    """What the GDPR commands report as one line: a refusal, an unreachable database or
    bucket, a data lock another run held for too long."""
    from anpr_pipeline.resources.event_store import EventStoreError
    from anpr_pipeline.resources.object_store import ObjectStoreError

    return (GdprError, EventStoreError, ObjectStoreError, DataLockTimeout)


def main_export(argv: list[str]) -> int:
    import argparse
    import sys
    from pathlib import Path

    from anpr_pipeline.cli_args import out_path_problem

    parser = argparse.ArgumentParser(
        prog="anpr export-plate",
        description="Export every event, Parquet row and crop of a plate as one zip.",
    )
    parser.add_argument("plate")
    parser.add_argument("--out", help="also write the zip to this local file")
    args = parser.parse_args(argv)
    # Before the export: it writes the zip and its audit record to the bucket.
    problem = out_path_problem(Path(args.out)) if args.out else None
    if problem:
        print(f"anpr export-plate: --out {args.out}: {problem}", file=sys.stderr)
        return 2
    try:
        es, store, salt, _io_dir = _stores_from_settings()
        result = export_plate(args.plate, es, store, salt, production=es.dialect == "postgresql")
        if args.out:
            try:
                store.download(result.key, args.out)
            except OSError as exc:  # --out could not be written after all (disk full, ...)
                print(
                    f"anpr export-plate: the export is in the bucket as {result.key}, but writing "
                    f"{args.out} failed: {exc.strerror or exc}",
                    file=sys.stderr,
                )
                return 2
    except _cli_errors() as exc:
        print(f"anpr export-plate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary(), indent=1))
    return 0


def main_erase(argv: list[str]) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="anpr erase-plate", description="Erase a plate from the events DB, crops and Parquet (audited)."
    )
    parser.add_argument("plate")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--dry-run", action="store_true", help="only count what would be erased")
    args = parser.parse_args(argv)
    try:
        es, store, salt, io_dir = _stores_from_settings()
        production = es.dialect == "postgresql"
        preview = erase_plate(args.plate, es, store, salt, production=production, dry_run=True)
        print(json.dumps(preview.summary(), indent=1))
        if args.dry_run:
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                print("anpr erase-plate: refusing without --yes (not a terminal)", file=sys.stderr)
                return 2
            if input(f"Erase all data of {normalize_plate(args.plate)}? Type 'yes': ").strip() != "yes":
                print("aborted")
                return 1
        result = erase_plate(args.plate, es, store, salt, production=production, io_manager_dir=io_dir)
    except _cli_errors() as exc:
        print(f"anpr erase-plate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary(), indent=1))
    return 0
