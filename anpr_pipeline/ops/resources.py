"""`OpsSettings`: the operations settings as a Dagster resource.

Field names are the `Settings` field names, so the pure functions in ``anpr_pipeline.ops``
accept either (they read attributes such as ``retention_videos_days``). Tests and the UI
override them per run like any resource; production takes them from ANPR_* env vars.
"""

from __future__ import annotations

import os

from dagster import ConfigurableResource, EnvVar

from anpr_pipeline.settings import Settings


class OpsSettings(ConfigurableResource):
    retention_videos_days: int = 30
    retention_crops_days: int = 90
    retention_events_days: int = 365
    retention_parquet_days: int = 365
    archive_videos_after_days: int = 14
    archive_events_after_days: int = 180
    s3_archive_storage_class: str = "GLACIER_IR"
    backups_keep: int = 7
    alert_webhook_url: str = ""
    gdpr_salt: str = ""
    backlog_warn: int = 100
    backlog_critical: int = 500
    # Worker stall: runs queued but no video finished for this long.
    stall_minutes: int = 10
    # Where pg_dump / pg_restore live ("" = newest /usr/lib/postgresql/*/bin, then PATH).
    pg_bin_dir: str = ""
    # Local FilesystemIOManager root (embedded default); "" = step outputs live in the bucket
    # under dagster-io/ (S3PickleIOManager). Retention and erasure remove a video's outputs.
    io_manager_dir: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> OpsSettings:
        names = set(cls.model_fields) & set(Settings.__dataclass_fields__)
        values = {name: getattr(settings, name) for name in names}
        if settings.bucket_kind == "local":
            values["io_manager_dir"] = str(settings.data_path / "dagster-io")
        # Secrets stay references to the environment: the UI shows the variable name, not the value.
        for name, var in SECRET_ENV.items():
            if os.environ.get(var):
                values[name] = EnvVar(var)
        return cls(**values)


SECRET_ENV = {"gdpr_salt": "ANPR_GDPR_SALT", "alert_webhook_url": "ANPR_ALERT_WEBHOOK_URL"}
