"""Sensors. ``upload_sensor`` turns new uploads in the bucket into video partitions and runs.

An upload is new while its video partition does not exist: every tick lists the whole
``uploads/`` prefix and compares it with the instance's partitions. So an upload whose
LastModified is older than uploads already handled is never passed over: an S3 multipart
upload is stamped when it started but listed when it completes, ``rsync -a`` and ``cp -p``
keep a file's own time, and a backlog larger than one tick's cap waits its turn. The cursor
holds only what a listing cannot tell: the sizes of uploads seen but not yet settled, and
the bad keys already reported. On a local (or network-mounted) folder, where a file may be
written in place and its writer stall, an upload is taken only once a later tick sees the
same size; S3 objects appear whole, so there the settle time alone is enough. Keys that break the naming contract, and uploads left empty,
are reported (count + first examples) once, and never crash the sensor. The cursor also
holds the upload version (size, time, ETag) of each registered partition whose events do
not exist yet: an upload replaced under the same key, after a run that failed on a broken
transfer, is requested again.
"""

from __future__ import annotations

import dataclasses
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
from anpr_pipeline.uploads import (
    UPLOADS_PREFIX,
    Upload,
    UploadNameError,
    is_sidecar_key,
    oldest_first,
    parse_upload_key,
)

# An object younger than this may still be being written (a local or network folder; S3
# objects appear whole).
SETTLE_SECONDS = 5.0
# An upload still empty this long after it was written is a failed one, not one in progress.
EMPTY_UPLOAD_SECONDS = 600.0
MAX_RUNS_PER_TICK = 500
BAD_KEY_EXAMPLES = 5
# Bad keys remembered as reported (so a tick does not repeat them); past this many, the
# surplus is reported again each tick rather than the cursor growing without bound.
MAX_REMEMBERED_BAD_KEYS = 10_000


@dataclass
class UploadCursor:
    bad_keys_total: int = 0
    pending: dict[str, int] = field(default_factory=dict)  # key -> size when last seen, unsettled
    reported: list[str] = field(default_factory=list)  # bad keys reported, still in the bucket
    # partition -> version (size, time, ETag) of its upload, for partitions registered whose
    # events do not exist yet (queued, running or failed): a new version is a re-upload.
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> UploadCursor:
        if not raw:
            return cls()
        try:
            stored = json.loads(raw)
            # Fields of an earlier cursor version (a LastModified mark) are dropped.
            return cls(**{f.name: stored[f.name] for f in dataclasses.fields(cls) if f.name in stored})
        except (TypeError, ValueError, AttributeError):
            return cls()  # an unreadable cursor only means bad keys are reported once more

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass
class ScanResult:
    ready: list[Upload]  # oldest first, one per partition
    bad: list[str]  # newly found bad keys, as messages
    duplicates: list[str]  # second uploads of a partition taken this scan, as messages
    waiting: dict[str, int]
    cursor: UploadCursor
    # partition -> version of its ready upload: the sensor records it for the ones it requests
    ready_versions: dict[str, str] = field(default_factory=dict)


def upload_version(info: ObjectInfo) -> str:
    return f"{info.size}:{info.last_modified.isoformat()}:{info.etag or ''}"


def scan_uploads(
    objects: list[ObjectInfo],
    cursor: UploadCursor,
    now: datetime,
    known: set[str] | frozenset[str] = frozenset(),
    settle_seconds: float = SETTLE_SECONDS,
    confirm_size: bool = False,
    done: set[str] | frozenset[str] | None = None,
) -> ScanResult:
    """Pure decision logic of the sensor: what is ready, what is bad, what must wait.

    ``known``: partition keys that already exist (their uploads were handled).
    ``confirm_size``: an upload is ready only when an earlier scan saw it at the same size.
    ``done``: the known partitions whose events exist (None: all of them). The others'
    uploads are watched: one replaced since it was registered (a camera re-sending a video
    whose transfer broke) is ready again."""
    done = known if done is None else done
    versions: dict[str, str] = {}
    ready_versions: dict[str, str] = {}
    ready: dict[str, Upload] = {}
    settled: dict[str, int] = {}
    bad: list[str] = []
    bad_keys: list[str] = []
    duplicates: list[str] = []
    waiting: dict[str, int] = {}
    already_reported = set(cursor.reported)
    for info in sorted(objects, key=oldest_first):
        if is_sidecar_key(info.key):
            continue  # sidecars are read by the video asset
        try:
            upload = parse_upload_key(info.key)
        except UploadNameError as exc:
            state, problem = "bad", str(exc)
        else:
            if upload.partition_key in ready:
                taken = ready[upload.partition_key].key
                duplicates.append(f"{info.key} ignored: {taken} is the upload of its partition")
                continue
            if upload.partition_key in known:
                if upload.partition_key in done or upload.partition_key in versions:
                    continue  # processed; or a second upload of it (the oldest is the one)
                version = upload_version(info)
                recorded = cursor.versions.get(upload.partition_key, version)
                versions[upload.partition_key] = recorded
                if recorded == version:
                    continue
            state, problem = upload_state(info, cursor, now, settle_seconds, confirm_size)
        if state == "ready":
            ready[upload.partition_key] = upload
            ready_versions[upload.partition_key] = upload_version(info)
            settled[info.key] = info.size
        elif state == "waiting":
            waiting[info.key] = info.size
        else:
            bad_keys.append(info.key)
            if info.key not in already_reported:
                bad.append(problem)
    next_cursor = UploadCursor(
        bad_keys_total=cursor.bad_keys_total + len(bad),
        # Ready uploads beyond one tick's cap stay settled for the next tick.
        pending={**waiting, **settled},
        reported=bad_keys[:MAX_REMEMBERED_BAD_KEYS],
        versions=dict(list(versions.items())[-MAX_REMEMBERED_BAD_KEYS:]),
    )
    return ScanResult(
        ready=list(ready.values()),
        bad=bad,
        duplicates=duplicates,
        waiting=waiting,
        cursor=next_cursor,
        ready_versions=ready_versions,
    )


def upload_state(
    info: ObjectInfo, cursor: UploadCursor, now: datetime, settle_seconds: float, confirm_size: bool = False
) -> tuple[str, str]:
    """("ready", ""), ("waiting", "") while the upload may still be being written, or
    ("bad", why): still empty long after it was written (a failed upload)."""
    age = now - info.last_modified
    if info.size == 0 and age >= timedelta(seconds=EMPTY_UPLOAD_SECONDS):
        minutes = age.total_seconds() / 60
        return "bad", f"{info.key}: still empty (0 bytes) {minutes:.0f} min after upload; upload it again"
    young = age < timedelta(seconds=settle_seconds)
    growing = cursor.pending.get(info.key, info.size) != info.size
    unconfirmed = confirm_size and info.key not in cursor.pending  # first sight: look again
    return ("waiting", "") if info.size == 0 or young or growing or unconfirmed else ("ready", "")


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
    # A video already turned into events is not re-run because its upload is listed again
    # (operators re-run on purpose with a backfill); one whose events do not exist yet
    # (queued, running or failed) runs again when its upload is replaced (a camera re-sending
    # a video whose transfer broke).
    registered = set(context.instance.get_dynamic_partitions(videos_partitions.name))
    done = context.instance.get_materialized_partitions(AssetKey("plate_events"))
    now = datetime.now(UTC)
    scan = scan_uploads(
        objects, cursor, now, registered | done, confirm_size=bucket.kind == "local", done=done
    )
    if scan.bad:
        context.log.warning(bad_keys_report(scan.bad))
    if scan.duplicates:
        context.log.warning(
            f"{len(scan.duplicates)} second upload(s) of a partition: {'; '.join(scan.duplicates)}"
        )
    # Oldest first; the rest stay ready (and unregistered) for the next tick.
    ready = scan.ready[:MAX_RUNS_PER_TICK]
    if len(scan.ready) > len(ready):
        context.log.info(f"{len(scan.ready) - len(ready)} more upload(s) ready: requested on later ticks")
    for upload in ready:  # recorded only once requested: one beyond the cap stays "new"
        scan.cursor.versions[upload.partition_key] = scan.ready_versions[upload.partition_key]
    again = [u.partition_key for u in ready if u.partition_key in registered]
    new = [u.partition_key for u in ready if u.partition_key not in again]
    if again:
        context.log.info(f"{len(again)} upload(s) replaced since their run: run again: {', '.join(again)}")
    run_requests = [
        RunRequest(
            partition_key=u.partition_key,
            # Unique per registration: a partition an operator deleted while its upload stayed
            # is registered again and must run again (a run key already used is skipped).
            run_key=f"{u.partition_key}@{now:%Y%m%dT%H%M%S.%fZ}",
            tags={"anpr/camera": u.camera_id, "anpr/video_key": u.key},
        )
        for u in ready
    ]
    if not run_requests:
        parts = [bad_keys_report(scan.bad)] if scan.bad else []
        if scan.waiting:
            parts.append(
                f"{len(scan.waiting)} upload(s) still being written (or seen once: looked at again next tick)"
            )
        reason = "; ".join(parts) or "No new uploads"
        return SensorResult(skip_reason=SkipReason(reason), cursor=scan.cursor.dump())
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[videos_partitions.build_add_request(new)] if new else [],
        cursor=scan.cursor.dump(),
    )
