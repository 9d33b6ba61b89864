"""Sensors. ``upload_sensor`` turns new uploads in the bucket into video partitions and runs.

The cursor is durable and robust: a high-water mark ``(last_modified, key)`` of uploads
already handled (so a deleted cursor object never matters), plus a short list of keys that
were seen but not yet settled. Keys that break the naming contract are reported (count +
first examples) once, and never crash the sensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from anpr_pipeline.jobs import process_video_job
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.object_store import ObjectInfo, ObjectStoreError, ObjectStoreResource
from anpr_pipeline.uploads import UPLOADS_PREFIX, Upload, UploadNameError, is_sidecar_key, parse_upload_key

# An object younger than this may still be being written (local folders; S3 objects appear
# whole, but a camera's multipart upload finishing just now is also fine to wait for).
SETTLE_SECONDS = 5.0
MAX_RUNS_PER_TICK = 500
BAD_KEY_EXAMPLES = 5


def _stamp(moment: datetime) -> str:
    """Fixed-width UTC stamp, so cursor marks compare correctly as strings."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclass
class UploadCursor:
    last_modified: str = ""  # ISO time of the newest handled upload
    last_key: str = ""  # tie-break among uploads with that same time
    bad_keys_total: int = 0
    pending: dict[str, int] = field(default_factory=dict)  # key -> size when last seen, unsettled

    @classmethod
    def load(cls, raw: str | None) -> UploadCursor:
        if not raw:
            return cls()
        try:
            return cls(**json.loads(raw))
        except (TypeError, ValueError):
            return cls()  # an unreadable cursor restarts the scan; run keys keep it idempotent

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def is_new(self, info: ObjectInfo) -> bool:
        mark = (self.last_modified, self.last_key)
        return (_stamp(info.last_modified), info.key) > mark


@dataclass
class ScanResult:
    ready: list[Upload]
    bad: list[str]
    waiting: dict[str, int]
    cursor: UploadCursor


def scan_uploads(
    objects: list[ObjectInfo], cursor: UploadCursor, now: datetime, settle_seconds: float = SETTLE_SECONDS
) -> ScanResult:
    """Pure decision logic of the sensor: what is ready, what is bad, what must wait."""
    ready: list[Upload] = []
    bad: list[str] = []
    waiting: dict[str, int] = {}
    new = sorted((o for o in objects if cursor.is_new(o)), key=lambda o: (o.last_modified, o.key))
    advance_to: ObjectInfo | None = None
    for info in new:
        if is_sidecar_key(info.key):
            candidate_ok = True  # sidecars are read by the video asset
        else:
            try:
                upload = parse_upload_key(info.key)
            except UploadNameError as exc:
                bad.append(str(exc))
                candidate_ok = True
            else:
                young = now - info.last_modified < timedelta(seconds=settle_seconds)
                growing = cursor.pending.get(info.key, info.size) != info.size
                if info.size == 0 or young or growing:
                    waiting[info.key] = info.size
                    candidate_ok = False
                else:
                    ready.append(upload)
                    candidate_ok = True
        # Advance the high-water mark only over a contiguous run of handled objects, so a
        # file still being written is looked at again next tick.
        if candidate_ok and not waiting:
            advance_to = info
    next_cursor = UploadCursor(
        last_modified=_stamp(advance_to.last_modified) if advance_to else cursor.last_modified,
        last_key=advance_to.key if advance_to else cursor.last_key,
        bad_keys_total=cursor.bad_keys_total + len(bad),
        pending=waiting,
    )
    # Uploads after a waiting one were not passed by the cursor: only those not yet
    # requested would repeat, and run keys make a repeat a no-op.
    return ScanResult(ready=ready, bad=bad, waiting=waiting, cursor=next_cursor)


def bad_keys_report(bad: list[str]) -> str:
    examples = "; ".join(bad[:BAD_KEY_EXAMPLES])
    return f"{len(bad)} upload key(s) break the naming contract and were skipped, e.g. {examples}"


@sensor(
    job=process_video_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Lists uploads/ in the bucket; each new video becomes a partition and a process_video run.",
)
def upload_sensor(context: SensorEvaluationContext, bucket: ObjectStoreResource):
    cursor = UploadCursor.load(context.cursor)
    try:
        objects = list(bucket.get_store().list(UPLOADS_PREFIX))
    except (ObjectStoreError, OSError) as exc:
        return SkipReason(f"Bucket unreachable, will retry next tick: {exc}")
    scan = scan_uploads(objects, cursor, datetime.now(UTC))
    if scan.bad:
        context.log.warning(bad_keys_report(scan.bad))
    existing = set(context.instance.get_dynamic_partitions(videos_partitions.name))
    # A video already turned into events is not re-run because its upload was seen again
    # (a rescan after a lost cursor); operators re-run on purpose with a backfill.
    done = context.instance.get_materialized_partitions(AssetKey("plate_events"))
    ready = [u for u in scan.ready if u.partition_key not in done][:MAX_RUNS_PER_TICK]
    new_keys = sorted({u.partition_key for u in ready} - existing)
    run_requests = [
        RunRequest(
            partition_key=u.partition_key,
            run_key=u.partition_key,
            tags={"anpr/camera": u.camera_id, "anpr/video_key": u.key},
        )
        for u in ready
    ]
    if len([u for u in scan.ready if u.partition_key not in done]) > MAX_RUNS_PER_TICK:
        # Leave the rest for the next tick: do not advance past what was not requested.
        last = ready[-1]
        scan.cursor.last_key = last.key
        scan.cursor.last_modified = next(_stamp(o.last_modified) for o in objects if o.key == last.key)
    if not run_requests:
        reason = (
            bad_keys_report(scan.bad)
            if scan.bad
            else (f"{len(scan.waiting)} upload(s) still being written" if scan.waiting else "No new uploads")
        )
        return SensorResult(skip_reason=SkipReason(reason), cursor=scan.cursor.dump())
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[videos_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=scan.cursor.dump(),
    )
