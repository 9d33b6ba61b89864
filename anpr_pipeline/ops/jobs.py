"""Operations jobs: thin Dagster glue over the pure functions in ``anpr_pipeline.ops``.

Each job is one op with a typed run config (``dry_run``, ``plate``, …) that returns a
summary dict and attaches it as output metadata (counts and bytes per class, sizes,
checksums), so the UI shows what a run did and the same run can be repeated from there.
"""

import json
import sys
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetKey,
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    job,
    op,
)
from pydantic import Field

from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.event_store import EventStoreResource
from anpr_pipeline.resources.object_store import ObjectStoreResource

OPS_TAGS = {"anpr/kind": "ops"}
# Run tag the instance limits to one run at a time (`concurrency: runs:
# tag_concurrency_limits` in deploy/dagster.yaml and dagster.yaml), so these jobs queue
# behind each other instead of contending for locks and objects:
# - retention_sweep, archive: bulk DELETE / DETACH + DROP partition, delete and move objects;
# - db_maintenance: VACUUM (ANALYZE) and CREATE partition on the same table;
# - backup: pg_dump holds its share lock for the whole dump, so a partition DROP waits on
#   it, and every events write then queues behind that waiting DROP;
# - restore_test: pg_restore loads the same server, and a backup finishing meanwhile may
#   prune the dump it is restoring.
# GDPR export/erase are not held: a data subject's request should not wait hours behind an
# archive or VACUUM, and export only reads. Erase does rewrite Parquet files that retention
# and archive also touch, but the run queue could not order it anyway: `anpr erase-plate`
# and `anpr ops <job>` (execute_in_process) run outside it. The ops functions order those
# three themselves with the data lock (ops/locks.py).
MAINTENANCE_TAG = "anpr/maintenance"
MAINTENANCE_TAGS = {**OPS_TAGS, MAINTENANCE_TAG: "true"}


def _parse_now(text: str) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"now={text!r} is not an ISO time (e.g. 2026-01-31T02:30:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def processed_videos(context: OpExecutionContext) -> set[str]:
    """The ``videos`` partitions whose events exist: retention and archive must not move or
    delete an upload that is still queued (see ``retention.awaiting_processing``)."""
    return context.instance.get_materialized_partitions(AssetKey("plate_events"))


def as_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """Dagster metadata from a plain summary: numbers/text as they are, lists/dicts as JSON."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, list | dict | tuple):
            out[key] = MetadataValue.json(value)
        elif value is None:
            out[key] = MetadataValue.text("")
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------
# retention_sweep
# --------------------------------------------------------------------------------------


class RetentionConfig(Config):
    dry_run: bool = Field(False, description="List what would be deleted; delete nothing.")
    now: str = Field("", description="Sweep as of this ISO time (empty = now).")


@op(
    tags=OPS_TAGS, description="Delete expired videos, crops, Parquet files, event rows and video partitions."
)
def retention_sweep_op(
    context: OpExecutionContext,
    config: RetentionConfig,
    bucket: ObjectStoreResource,
    events_db: EventStoreResource,
    ops_settings: OpsSettings,
):
    from anpr_pipeline.ops.retention import delete_step_outputs, run_retention

    plan, result = run_retention(
        _parse_now(config.now),
        bucket.get_store(),
        events_db.get_store(),
        ops_settings,
        processed_videos(context),
        dry_run=config.dry_run,
    )
    summary: dict[str, Any] = {"dry_run": config.dry_run, **plan.summary()}
    examples = {name: [o.key for o in cplan.expired[:10]] for name, cplan in plan.classes.items()}
    if result is not None:
        summary.update(result.summary())
        instance = context.instance
        removed = 0
        for key in plan.video_partitions:
            if instance.has_dynamic_partition(videos_partitions.name, key):
                instance.delete_dynamic_partition(videos_partitions.name, key)
                removed += 1
        summary["video_partitions_deleted"] = removed
        summary["step_outputs_deleted"] = delete_step_outputs(
            plan.video_partitions, bucket.get_store(), ops_settings.io_manager_dir
        )
    context.log.info(f"retention {'(dry run) ' if config.dry_run else ''}{summary}")
    summary["examples"] = examples
    return Output(summary, metadata=as_metadata(summary))


@job(
    name="retention_sweep",
    tags=MAINTENANCE_TAGS,
    description="Per-class retention (videos, crops, events, Parquet).",
)
def retention_sweep_job():
    retention_sweep_op()


# --------------------------------------------------------------------------------------
# db_maintenance
# --------------------------------------------------------------------------------------


class MaintenanceConfig(Config):
    months_ahead: int = Field(2, description="Monthly partitions to create ahead of the current month.")
    vacuum: bool = Field(True, description="Run VACUUM (ANALYZE) / VACUUM + ANALYZE.")


@op(tags=OPS_TAGS, description="VACUUM (ANALYZE) events, create the next monthly partitions, record sizes.")
def db_maintenance_op(context: OpExecutionContext, config: MaintenanceConfig, events_db: EventStoreResource):
    from anpr_pipeline.ops.maintenance import run_maintenance

    result = run_maintenance(events_db.get_store(), months_ahead=config.months_ahead, vacuum=config.vacuum)
    summary = result.summary()
    context.log.info(f"db maintenance: {summary}")
    return Output(summary, metadata=as_metadata(summary))


@job(name="db_maintenance", tags=MAINTENANCE_TAGS, description="Nightly events-database upkeep.")
def db_maintenance_job():
    db_maintenance_op()


# --------------------------------------------------------------------------------------
# backup / restore_test
# --------------------------------------------------------------------------------------


class BackupConfig(Config):
    keep: int = Field(0, description="Backups to keep (0 = ANPR_BACKUPS_KEEP).")


@op(tags=OPS_TAGS, description="pg_dump -Fc (or SQLite online backup) of the events DB to backups/, keep N.")
def backup_op(
    context: OpExecutionContext,
    config: BackupConfig,
    bucket: ObjectStoreResource,
    events_db: EventStoreResource,
    ops_settings: OpsSettings,
):
    from anpr_pipeline.ops.backup import backup

    manifest, pruned = backup(
        events_db.get_store(),
        bucket.get_store(),
        config.keep or ops_settings.backups_keep,
        bin_dir=ops_settings.pg_bin_dir,
    )
    summary = {**manifest.__dict__, "pruned": pruned}
    context.log.info(f"backup written: {manifest.key} ({manifest.bytes} bytes, {manifest.rows} rows)")
    return Output(summary, metadata=as_metadata(summary))


@job(name="backup", tags=MAINTENANCE_TAGS, description="Nightly backup of the events database to the bucket.")
def backup_job():
    backup_op()


@op(
    tags=OPS_TAGS, description="Restore the newest backup into a scratch DB; verify counts + sample checksum."
)
def restore_test_op(
    context: OpExecutionContext,
    bucket: ObjectStoreResource,
    events_db: EventStoreResource,
    ops_settings: OpsSettings,
):
    from anpr_pipeline.ops.backup import RestoreTestError, restore_test

    try:
        report = restore_test(events_db.get_store(), bucket.get_store(), bin_dir=ops_settings.pg_bin_dir)
    except RestoreTestError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    summary = report.summary()
    context.log.info(f"restore test passed: {summary}")
    return Output(summary, metadata=as_metadata(summary))


@job(
    name="restore_test",
    tags=MAINTENANCE_TAGS,
    description="Monthly proof that the newest backup restores intact.",
)
def restore_test_job():
    restore_test_op()


# --------------------------------------------------------------------------------------
# GDPR: export_plate / erase_plate
# --------------------------------------------------------------------------------------


class ExportPlateConfig(Config):
    plate: str = Field(description="The plate (any spacing/case; matched on its normalised form).")


class ErasePlateConfig(Config):
    plate: str = Field(description="The plate (any spacing/case; matched on its normalised form).")
    dry_run: bool = Field(False, description="Count what would be erased; change nothing.")


@op(tags=OPS_TAGS, description="Zip every event, Parquet row and crop of a plate to exports/ (audited).")
def export_plate_op(
    context: OpExecutionContext,
    config: ExportPlateConfig,
    bucket: ObjectStoreResource,
    events_db: EventStoreResource,
    ops_settings: OpsSettings,
):
    from anpr_pipeline.ops.gdpr import GdprError, export_plate

    es = events_db.get_store()
    try:
        result = export_plate(
            config.plate,
            es,
            bucket.get_store(),
            ops_settings.gdpr_salt,
            production=es.dialect == "postgresql",
            actor=f"dagster run {context.run_id}",
        )
    except GdprError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    summary = result.summary()
    return Output(summary, metadata=as_metadata(summary))


@op(tags=OPS_TAGS, description="Erase a plate from the events DB, crops and Parquet files (audited).")
def erase_plate_op(
    context: OpExecutionContext,
    config: ErasePlateConfig,
    bucket: ObjectStoreResource,
    events_db: EventStoreResource,
    ops_settings: OpsSettings,
):
    from anpr_pipeline.ops.gdpr import GdprError, erase_plate

    es = events_db.get_store()
    try:
        result = erase_plate(
            config.plate,
            es,
            bucket.get_store(),
            ops_settings.gdpr_salt,
            production=es.dialect == "postgresql",
            dry_run=config.dry_run,
            actor=f"dagster run {context.run_id}",
            io_manager_dir=ops_settings.io_manager_dir,
        )
    except GdprError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    summary = result.summary()
    return Output(summary, metadata=as_metadata(summary))


@job(name="export_plate", tags=OPS_TAGS, description="GDPR access request: export a plate's data.")
def export_plate_job():
    export_plate_op()


@job(name="erase_plate", tags=OPS_TAGS, description="GDPR erasure request: erase a plate's data.")
def erase_plate_job():
    erase_plate_op()


# --------------------------------------------------------------------------------------
# archive
# --------------------------------------------------------------------------------------


class ArchiveConfig(Config):
    dry_run: bool = Field(False, description="List what would be archived; move nothing.")
    now: str = Field("", description="Archive as of this ISO time (empty = now).")


@op(
    tags=OPS_TAGS,
    description="Old videos to archive/ (colder storage class), old event months to archive Parquet.",
)
def archive_op(
    context: OpExecutionContext,
    config: ArchiveConfig,
    bucket: ObjectStoreResource,
    events_db: EventStoreResource,
    ops_settings: OpsSettings,
):
    from anpr_pipeline.ops.archive import run_archive

    result = run_archive(
        _parse_now(config.now),
        bucket.get_store(),
        events_db.get_store(),
        ops_settings,
        processed_videos(context),
        dry_run=config.dry_run,
    )
    summary = result.summary()
    context.log.info(f"archive {'(dry run) ' if config.dry_run else ''}{summary}")
    if result.videos_failed or result.events_failed:
        # Whatever could be verified was archived; the rest is kept and retried next week.
        raise Failure(
            description=f"archive incomplete: {len(result.videos_failed)} video(s), "
            f"{len(result.events_failed)} month(s) not archived (originals kept)",
            metadata=as_metadata(summary),
        )
    return Output(summary, metadata=as_metadata(summary))


@job(
    name="archive",
    tags=MAINTENANCE_TAGS,
    description="Weekly: move old videos and event months to the archive.",
)
def archive_job():
    archive_op()


OPS_JOBS = [
    retention_sweep_job,
    db_maintenance_job,
    backup_job,
    restore_test_job,
    export_plate_job,
    erase_plate_job,
    archive_job,
]

__all__ = ["OPS_JOBS", "Failure", "as_metadata"]


# --------------------------------------------------------------------------------------
# CLI: anpr ops <job> — the same jobs from a shell (cron-less hosts, runbooks)
# --------------------------------------------------------------------------------------

OP_OF_JOB = {
    "retention_sweep": "retention_sweep_op",
    "db_maintenance": "db_maintenance_op",
    "backup": "backup_op",
    "restore_test": "restore_test_op",
    "export_plate": "export_plate_op",
    "erase_plate": "erase_plate_op",
    "archive": "archive_op",
}


# The config each job's op takes (restore_test takes none), to check `anpr ops` flags
# before a run starts rather than show Dagster's config traceback.
CONFIG_OF_JOB: dict[str, type[Config] | None] = {
    "retention_sweep": RetentionConfig,
    "db_maintenance": MaintenanceConfig,
    "backup": BackupConfig,
    "restore_test": None,
    "export_plate": ExportPlateConfig,
    "erase_plate": ErasePlateConfig,
    "archive": ArchiveConfig,
}


def _cli_config(args: Any) -> dict[str, Any]:
    """The op config the flags give; ValueError naming the flag a job does not take."""
    config: dict[str, Any] = {}
    if args.dry_run:
        config["dry_run"] = True
    if args.plate:
        config["plate"] = args.plate
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            config[key] = json.loads(raw)
        except ValueError:
            config[key] = raw
    schema = CONFIG_OF_JOB[args.job]
    fields = schema.model_fields if schema is not None else {}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        flags = ", ".join(
            "--dry-run" if k == "dry_run" else "--plate" if k == "plate" else k for k in unknown
        )
        takes = ", ".join(sorted(fields)) or "no options"
        raise ValueError(f"{args.job} does not take {flags} (it takes: {takes})")
    if "now" in config:
        _parse_now(str(config["now"]))  # a bad time fails here, not inside the run
    missing = sorted(k for k, f in fields.items() if f.is_required() and k not in config)
    if missing:
        raise ValueError(f"{args.job} needs --{missing[0]}")
    return config


def _failure_cause(failure: Any) -> str:
    """The op's own error: Dagster's step error wraps it, and it may wrap the low-level one
    (an OSError under an ObjectStoreError) whose message says less."""
    user = getattr(failure, "user_failure_data", None)
    if user is not None and user.description:
        return user.description
    error = failure.error
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return error.message.strip()  # "ExceptionClass: message", as Python prints it


def main(argv: list[str]) -> int:
    """`anpr ops <job> [--dry-run] [--plate P] [--set key=value]`: run an operations job now.

    Uses the Dagster instance of $DAGSTER_HOME (the run shows up in the UI) and the same
    resources as the code location (ANPR_* settings).
    """
    import argparse
    import os

    from dagster import DagsterInstance

    parser = argparse.ArgumentParser(
        prog="anpr ops", description="Run an operations job now (recorded in Dagster)."
    )
    parser.add_argument("job", choices=sorted(OP_OF_JOB))
    parser.add_argument("--dry-run", action="store_true", help="retention_sweep / archive / erase_plate only")
    parser.add_argument("--plate", help="export_plate / erase_plate")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="other op config (JSON values)")
    args = parser.parse_args(argv)

    from anpr_pipeline.definitions import build_definitions

    try:
        config = _cli_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    job_def = build_definitions().resolve_job_def(args.job)  # settings read now, not at import
    run_config: dict[str, Any] = {"ops": {OP_OF_JOB[args.job]: {"config": config}}} if config else {}
    # The terminal gets warnings and the one-line outcome; the step log is in the UI.
    run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
    if os.environ.get("DAGSTER_HOME"):
        instance = DagsterInstance.get()
    else:
        print("anpr ops: DAGSTER_HOME is not set; the run is not recorded in the Dagster UI")
        instance = DagsterInstance.ephemeral()
    with instance:
        result = job_def.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False, tags={"anpr/trigger": "cli"}
        )
        if not result.success:
            failure = result.failure_data_for_node(OP_OF_JOB[args.job])
            cause = _failure_cause(failure) if failure else "the run failed (see the Dagster UI)"
            print(f"anpr ops {args.job}: FAILED: {cause}", file=sys.stderr)
            return 1
        print(json.dumps(result.output_for_node(OP_OF_JOB[args.job]), indent=1, default=str))
    return 0
