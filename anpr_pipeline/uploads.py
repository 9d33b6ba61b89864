"""The upload naming contract (DESIGN §3), in one place.

``uploads/<camera_id>/<YYYYMMDDTHHMMSSZ>.<mp4|mkv|avi|mov>``: the key alone tells the
camera and the UTC start of the recording, and gives the partition key
``<camera_id>/<timestamp>``. A sidecar ``<same name>.json`` may override fields.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anpr_pipeline.resources.object_store import ObjectInfo

UPLOADS_PREFIX = "uploads/"
VIDEO_EXTENSIONS = ("mp4", "mkv", "avi", "mov")
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_CAMERA_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_KEY_RE = re.compile(rf"^uploads/(?P<camera>{_CAMERA_RE})/(?P<ts>\d{{8}}T\d{{6}}Z)\.(?P<ext>[A-Za-z0-9]+)\Z")
_PARTITION_RE = re.compile(rf"^(?P<camera>{_CAMERA_RE})/(?P<ts>\d{{8}}T\d{{6}}Z)\Z")
SIDECAR_FIELDS = {"camera_id", "started_at", "fps", "region"}
# A region is a label (us, eu, br select plate formats; others are kept as the camera's label).
_REGION_RE = re.compile(r"[a-z][a-z0-9-]{0,15}")


class UploadNameError(ValueError):
    """An object key or partition key that breaks the naming contract."""


@dataclass(frozen=True)
class Upload:
    """One uploaded video, as named by its key (and optionally its sidecar)."""

    key: str
    camera_id: str
    started_at: datetime
    extension: str
    fps_hint: float | None = None
    region: str | None = None

    @property
    def timestamp(self) -> str:
        return self.started_at.strftime(TIMESTAMP_FORMAT)

    @property
    def partition_key(self) -> str:
        # Built from the key, not the sidecar, so it is stable whatever the sidecar says.
        match = _KEY_RE.match(self.key)
        assert match is not None
        return f"{match['camera']}/{match['ts']}"

    @property
    def sidecar_key(self) -> str:
        return self.key.rsplit(".", 1)[0] + ".json"


def _parse_timestamp(ts: str, source: str) -> datetime:
    try:
        return datetime.strptime(ts, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise UploadNameError(f"{source}: {ts!r} is not a valid UTC time (YYYYMMDDTHHMMSSZ)") from exc


def parse_upload_key(key: str) -> Upload:
    """Parse an object key; raise UploadNameError saying what is wrong with it."""
    match = _KEY_RE.match(key)
    if match is None:
        raise UploadNameError(
            f"{key!r} does not match uploads/<camera_id>/<YYYYMMDDTHHMMSSZ>.<{'|'.join(VIDEO_EXTENSIONS)}>"
        )
    ext = match["ext"].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise UploadNameError(f"{key!r}: extension .{ext} is not one of {', '.join(VIDEO_EXTENSIONS)}")
    return Upload(
        key=key, camera_id=match["camera"], started_at=_parse_timestamp(match["ts"], key), extension=ext
    )


def oldest_first(info: ObjectInfo) -> tuple[datetime, str]:
    """Sort key for uploads: oldest LastModified first, then by key. The sensor takes uploads
    in this order, and a partition with two uploads (``.mp4`` and ``.mov``) is processed
    from the first of them, wherever the run comes from (sensor or backfill)."""
    return info.last_modified, info.key


def upload_of_partition(key: str, partition_key: str) -> bool:
    """Whether ``key`` is a well-named video upload of ``partition_key``."""
    try:
        return parse_upload_key(key).partition_key == partition_key
    except UploadNameError:
        return False


def sibling_upload_keys(key: str) -> list[str]:
    """The keys another upload of the same partition would have (``.mov`` beside ``.mp4``,
    either case): a re-run from one of them replaces what a run from another stored."""
    stem = f"{UPLOADS_PREFIX}{parse_upload_key(key).partition_key}."
    candidates = {stem + ext for e in VIDEO_EXTENSIONS for ext in (e, e.upper())}
    return sorted(candidates - {key})


def is_sidecar_key(key: str) -> bool:
    match = _KEY_RE.match(key)
    return match is not None and match["ext"].lower() == "json"


def parse_partition_key(partition_key: str) -> tuple[str, datetime]:
    match = _PARTITION_RE.match(partition_key)
    if match is None:
        raise UploadNameError(f"partition key {partition_key!r} is not <camera_id>/<YYYYMMDDTHHMMSSZ>")
    return match["camera"], _parse_timestamp(match["ts"], partition_key)


def apply_sidecar(upload: Upload, raw: bytes) -> Upload:
    """Apply a sidecar JSON's overrides; unknown fields or bad values are errors, not ignored."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UploadNameError(f"{upload.sidecar_key}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UploadNameError(f"{upload.sidecar_key}: expected a JSON object")
    unknown = set(data) - SIDECAR_FIELDS
    if unknown:
        raise UploadNameError(
            f"{upload.sidecar_key}: unknown fields {sorted(unknown)}; allowed {sorted(SIDECAR_FIELDS)}"
        )
    changes: dict[str, object] = {}
    if "camera_id" in data:
        if not isinstance(data["camera_id"], str) or not re.fullmatch(_CAMERA_RE, data["camera_id"]):
            raise UploadNameError(f"{upload.sidecar_key}: camera_id {data['camera_id']!r} is not a valid id")
        changes["camera_id"] = data["camera_id"]
    if "started_at" in data:
        try:  # a string only: fromisoformat would take the number 20240101 as a date
            started = datetime.fromisoformat(data["started_at"].replace("Z", "+00:00"))
        except (AttributeError, ValueError) as exc:
            raise UploadNameError(
                f"{upload.sidecar_key}: started_at {data['started_at']!r} is not ISO 8601"
            ) from exc
        changes["started_at"] = started.astimezone(UTC) if started.tzinfo else started.replace(tzinfo=UTC)
    if "fps" in data:
        fps = data["fps"]
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 240:
            raise UploadNameError(f"{upload.sidecar_key}: fps {fps!r} must be a number in (0, 240]")
        changes["fps_hint"] = float(fps)
    if "region" in data:
        changes["region"] = _sidecar_region(upload, data["region"])
    return replace(upload, **changes)


def _sidecar_region(upload: Upload, value: object) -> str | None:
    if value is None:
        return None
    region = value.strip().lower() if isinstance(value, str) else None
    if region is None or not _REGION_RE.fullmatch(region):
        raise UploadNameError(
            f"{upload.sidecar_key}: region {value!r} must be a short name such as us, eu or br "
            "(letters, digits, dashes) or null"
        )
    return region


def video_key_for(camera_id: str, started_at: datetime, extension: str = "mp4") -> str:
    return f"{UPLOADS_PREFIX}{camera_id}/{started_at.astimezone(UTC).strftime(TIMESTAMP_FORMAT)}.{extension}"
