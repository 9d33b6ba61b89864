"""Backups of the events database to the bucket, and a restore test that proves they work.

Postgres: ``pg_dump -Fc`` of the events database, taken inside an exported snapshot
(``pg_export_snapshot`` + ``pg_dump --snapshot``) so the row count and sample checksum
written next to the dump (``<dump>.json``, the manifest) describe exactly what the dump
holds, even while runs keep writing. SQLite: the sqlite3 online-backup API (a consistent
copy of a live database), same manifest.

Keys: ``backups/events-<YYYYMMDDTHHMMSSZ>.dump`` (or ``.sqlite``) + ``.json``; the newest
``keep`` are kept, older ones deleted after a successful backup.

restore_test restores the newest dump into a scratch database (``pg_restore`` into a
fresh ``anpr_restore_*`` database, dropped afterwards; SQLite: a downloaded copy with
``PRAGMA integrity_check``) and verifies

1. the restored row count equals the manifest's,
2. the checksum of a sample (the first 1000 rows by event_id) equals the manifest's,
3. against the live table: every sample row still present live is identical to the
   restored one (rows removed since by retention/erasure are counted, not failed).

Any mismatch raises `RestoreTestError` with the numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from anpr_pipeline.resources.event_store import EventStore, events
from anpr_pipeline.resources.object_store import ObjectStore
from anpr_pipeline.uploads import TIMESTAMP_FORMAT

BACKUPS_PREFIX = "backups/"
SAMPLE_SIZE = 1000
# Columns that identify a row's content in the sample checksum.
_SAMPLE_COLUMNS = (
    "event_id",
    "camera_id",
    "captured_at",
    "plate_text",
    "normalized_plate",
    "confidence",
    "video_key",
    "crop_key",
    "frame_index",
    "frames_seen",
)
PG_TIMEOUT_S = 3600


class BackupError(RuntimeError):
    """pg_dump / pg_restore / the copy failed; the message carries the tool's stderr."""


class RestoreTestError(AssertionError):
    """The restored backup differs from what was backed up (or from the live table)."""


@dataclass
class Manifest:
    key: str
    dialect: str
    created_at: str
    rows: int
    sample_rows: int
    sample_checksum: str
    bytes: int = 0
    sha256: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        return cls(**json.loads(raw))


def pg_tool(name: str, bin_dir: str = "") -> str:
    """Path of pg_dump/pg_restore: bin_dir, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = [Path(bin_dir) / name] if bin_dir else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
        reverse=True,
    )
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found (install the PostgreSQL client or set ANPR_PG_BIN_DIR)")
    return found


def libpq_env(url: URL) -> dict[str, str]:
    """Connection settings as PG* variables: the password never appears on a command line."""
    env = dict(os.environ)
    for var, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value is not None:
            env[var] = str(value)
    if "sslmode" in url.query:
        env["PGSSLMODE"] = str(url.query["sslmode"])
    return env


def _run_tool(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PG_TIMEOUT_S)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _canonical(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def sample_rows(conn: Connection, event_ids: list[str] | None = None) -> list[dict[str, Any]]:
    cols = [events.c[name] for name in _SAMPLE_COLUMNS]
    stmt = sa.select(*cols).order_by(events.c.event_id, events.c.captured_at)
    stmt = stmt.where(events.c.event_id.in_(event_ids)) if event_ids is not None else stmt.limit(SAMPLE_SIZE)
    return [
        {k: _canonical(v) for k, v in r._mapping.items()} | {"event_id": str(r.event_id)}
        for r in conn.execute(stmt)
    ]


def checksum(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def _count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Backup
# --------------------------------------------------------------------------------------


def _dump_postgres(es: EventStore, target: Path, bin_dir: str) -> tuple[int, list[dict[str, Any]]]:
    # The snapshot stays valid while this transaction is open: pg_dump reads the same data.
    with es.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
        rows, sample = _count(conn), sample_rows(conn)
        _run_tool(
            [pg_tool("pg_dump", bin_dir), "-Fc", "--no-owner", f"--snapshot={snapshot}", "-f", str(target)],
            libpq_env(es.url),
            "pg_dump",
        )
        conn.rollback()
    return rows, sample


def _dump_sqlite(es: EventStore, target: Path) -> tuple[int, list[dict[str, Any]]]:
    src = sqlite3.connect(es.url.database)
    try:
        dst = sqlite3.connect(target)
        with dst:
            src.backup(dst)
        dst.close()
    finally:
        src.close()
    engine = sa.create_engine(f"sqlite:///{target}")
    try:
        with engine.connect() as conn:
            return _count(conn), sample_rows(conn)
    finally:
        engine.dispose()


def backup(
    es: EventStore, store: ObjectStore, keep: int, now: datetime | None = None, bin_dir: str = ""
) -> tuple[Manifest, list[str]]:
    """Dump the events database to the bucket; returns its manifest and the pruned keys."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    ext = "dump" if es.dialect == "postgresql" else "sqlite"
    key = f"{BACKUPS_PREFIX}events-{now.strftime(TIMESTAMP_FORMAT)}.{ext}"
    with tempfile.TemporaryDirectory(prefix="anpr-backup-") as tmp:
        target = Path(tmp) / f"events.{ext}"
        if es.dialect == "postgresql":
            rows, sample = _dump_postgres(es, target, bin_dir)
        else:
            rows, sample = _dump_sqlite(es, target)
        manifest = Manifest(
            key,
            es.dialect,
            now.isoformat(),
            rows,
            len(sample),
            checksum(sample),
            target.stat().st_size,
            _sha256(target),
        )
        store.put_file(key, target, "application/octet-stream")
    # The manifest goes last: a dump without one is incomplete and never picked for restore.
    store.put_bytes(key + ".json", manifest.to_json(), "application/json")
    return manifest, prune_backups(store, keep)


def list_backups(store: ObjectStore) -> list[str]:
    """Complete backups (dump + manifest), oldest first (the key holds a sortable UTC time)."""
    keys = {o.key for o in store.list(BACKUPS_PREFIX)}
    return sorted(k for k in keys if k.endswith((".dump", ".sqlite")) and k + ".json" in keys)


def prune_backups(store: ObjectStore, keep: int) -> list[str]:
    if keep <= 0:
        return []
    old = list_backups(store)[:-keep]
    doomed = [k for key in old for k in (key, key + ".json")]
    if doomed:
        store.delete(doomed)
    return old


# --------------------------------------------------------------------------------------
# Restore test
# --------------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    key: str
    rows_backed_up: int
    rows_restored: int
    sample_rows: int
    sample_checksum: str
    live_rows_compared: int
    live_rows_missing: int
    sha256_ok: bool
    live_rows_rewritten: int = 0  # sampled rows a re-run rewrote after the backup: not compared

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _scratch_postgres(es: EventStore) -> Iterator[URL]:
    name = f"anpr_restore_{secrets.token_hex(5)}"
    with es.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield es.url.set(database=name)
    finally:
        with es.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _verify(manifest: Manifest, restored_url: URL | str, live: EventStore, sha_ok: bool) -> RestoreReport:
    engine = sa.create_engine(restored_url)
    try:
        with engine.connect() as conn:
            restored_count, sample = _count(conn), sample_rows(conn)
    finally:
        engine.dispose()
    problems = []
    if not sha_ok:
        problems.append("the downloaded dump's sha256 differs from the manifest")
    if restored_count != manifest.rows:
        problems.append(f"restored {restored_count} rows, the backup held {manifest.rows}")
    if checksum(sample) != manifest.sample_checksum:
        problems.append(
            f"sample checksum {checksum(sample)[:12]} != backed-up {manifest.sample_checksum[:12]}"
        )
    sampled_ids = [r["event_id"] for r in sample]
    with live.engine.connect() as conn:
        live_rows = {r["event_id"]: r for r in sample_rows(conn, sampled_ids)}
        # A re-run of a video since the backup rewrites its rows (same ids, new reads): not a
        # damaged backup. Rows changed in place keep their created_at and are still compared.
        rewritten = _written_since(conn, sampled_ids, datetime.fromisoformat(manifest.created_at))
    differ = [
        r["event_id"]
        for r in sample
        if r["event_id"] in live_rows and r["event_id"] not in rewritten and live_rows[r["event_id"]] != r
    ]
    if differ:
        problems.append(f"{len(differ)} sample rows differ from the live table, e.g. event_id {differ[0]}")
    if problems:
        raise RestoreTestError(f"restore test of {manifest.key} FAILED: " + "; ".join(problems))
    return RestoreReport(
        manifest.key,
        manifest.rows,
        restored_count,
        len(sample),
        checksum(sample),
        len(live_rows),
        len(sample) - len(live_rows),
        sha_ok,
        live_rows_rewritten=len(rewritten),
    )


def _written_since(conn: Connection, event_ids: list[str], since: datetime) -> set[str]:
    """Which of ``event_ids`` the live table holds as written after ``since``."""
    stmt = sa.select(events.c.event_id).where(events.c.event_id.in_(event_ids), events.c.created_at > since)
    return {str(event_id) for (event_id,) in conn.execute(stmt)}


def restore_test(es: EventStore, store: ObjectStore, bin_dir: str = "") -> RestoreReport:
    backups = list_backups(store)
    if not backups:
        raise RestoreTestError(f"no complete backup under {BACKUPS_PREFIX} in {store.describe()} to restore")
    key = backups[-1]
    manifest = Manifest.from_json(store.get_bytes(key + ".json"))
    if manifest.dialect != es.dialect:
        raise RestoreTestError(f"{key} is a {manifest.dialect} backup; the live database is {es.dialect}")
    with tempfile.TemporaryDirectory(prefix="anpr-restore-") as tmp:
        local = store.download(key, Path(tmp) / Path(key).name)
        sha_ok = _sha256(local) == manifest.sha256
        if es.dialect == "sqlite":
            with contextlib.closing(sqlite3.connect(local)) as db:
                check = db.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise RestoreTestError(f"restore test of {key} FAILED: integrity_check says {check}")
            return _verify(manifest, f"sqlite:///{local}", es, sha_ok)
        with _scratch_postgres(es) as url:
            env = libpq_env(url)
            _run_tool(
                [
                    pg_tool("pg_restore", bin_dir),
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "-d",
                    str(url.database),
                    str(local),
                ],
                env,
                "pg_restore",
            )
            return _verify(manifest, url, es, sha_ok)
