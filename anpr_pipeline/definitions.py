"""The one ``Definitions`` object. Resources are chosen by settings (ANPR_* env vars).

Embedded default: local bucket folder, SQLite events DB, filesystem IO manager.
Production: S3 bucket, Postgres events DB, S3 pickle IO manager (so run workers on any
node share step outputs). Same code, configuration only.
"""

from __future__ import annotations

from dagster import Definitions, FilesystemIOManager, load_assets_from_modules

from anpr_pipeline import jobs as jobs_module
from anpr_pipeline import sensors as sensors_module
from anpr_pipeline.assets import detections, events, reads, stats, video
from anpr_pipeline.deploy_tags import executor_for
from anpr_pipeline.ops.alert_sensors import OPS_SENSORS
from anpr_pipeline.ops.jobs import OPS_JOBS
from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline.resources.event_store import EventStoreResource
from anpr_pipeline.resources.models import ModelsResource
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.schedules import SCHEDULES
from anpr_pipeline.settings import Settings, load_settings
from anpr_pipeline.watchlist import watchlist_sensor


def io_manager_for(settings: Settings):
    if settings.bucket_kind == "s3":
        from dagster_aws.s3 import S3PickleIOManager, S3Resource

        return S3PickleIOManager(
            s3_resource=S3Resource(
                endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region
            ),
            s3_bucket=settings.s3_bucket,
            s3_prefix="dagster-io",
        )
    return FilesystemIOManager(base_dir=str(settings.data_path / "dagster-io"))


def build_resources(settings: Settings) -> dict:
    return {
        "bucket": ObjectStoreResource.from_settings(settings),
        "events_db": EventStoreResource.from_settings(settings),
        "models": ModelsResource.from_settings(settings),
        "pipeline": PipelineConfig.from_settings(settings),
        "ops_settings": OpsSettings.from_settings(settings),
        "io_manager": io_manager_for(settings),
    }


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    return Definitions(
        assets=load_assets_from_modules([video, detections, reads, events, stats]),
        jobs=[jobs_module.process_video_job, *OPS_JOBS],
        sensors=[
            sensors_module.upload_sensor,
            watchlist_sensor,
            stats.stale_daily_stats_sensor,
            *OPS_SENSORS,
        ],
        schedules=SCHEDULES,
        resources=build_resources(settings),
        executor=executor_for(settings.executor),
    )


defs = build_definitions()
