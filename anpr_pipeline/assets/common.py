"""Glue shared by the per-video assets: finding the upload, getting a local copy, Failure."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, Failure, MetadataValue

from anpr_pipeline.ops.retention import ARCHIVE_UPLOADS_PREFIX
from anpr_pipeline.resources.object_store import LocalObjectStore, ObjectStore
from anpr_pipeline.uploads import (
    UPLOADS_PREFIX,
    VIDEO_EXTENSIONS,
    Upload,
    UploadNameError,
    apply_sidecar,
    oldest_first,
    parse_partition_key,
    parse_upload_key,
    upload_of_partition,
)


def find_upload(store: ObjectStore, partition_key: str) -> Upload:
    """The upload behind a partition, with its sidecar applied; Failure if it is gone."""
    parse_partition_key(partition_key)  # a bad key fails here, naming the contract
    stem = f"{UPLOADS_PREFIX}{partition_key}."
    # Stray siblings (``<ts>.bak.mp4``, ``<ts>.json``) are not this partition's upload.
    candidates = [info for info in store.list(stem) if upload_of_partition(info.key, partition_key)]
    if not candidates:
        raise _missing_upload(store, partition_key, stem)
    upload = parse_upload_key(min(candidates, key=oldest_first).key)
    if store.exists(upload.sidecar_key):
        try:
            upload = apply_sidecar(upload, store.get_bytes(upload.sidecar_key))
        except UploadNameError as exc:
            raise Failure(description=f"Bad sidecar for {upload.key}: {exc}", allow_retries=False) from exc
    return upload


def _missing_upload(store: ObjectStore, partition_key: str, stem: str) -> Failure:
    """Why the upload is gone: the archive job may have moved it, which an operator can undo."""
    archived = list(store.list(ARCHIVE_UPLOADS_PREFIX + partition_key + "."))
    videos = sorted(
        (o for o in archived if o.key.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS), key=lambda o: o.key
    )
    if not videos:
        return Failure(
            description=f"No upload found for partition {partition_key!r} (looked for {stem}<{'|'.join(VIDEO_EXTENSIONS)}>);"
            " it may have been deleted by retention or never uploaded.",
            allow_retries=False,
        )
    video = videos[0]
    original = UPLOADS_PREFIX + video.key.removeprefix(ARCHIVE_UPLOADS_PREFIX)
    sidecars = [o.key for o in archived if o.key.endswith(".json")]
    also = f" (and its sidecar {sidecars[0]} to {original.rsplit('.', 1)[0]}.json)" if sidecars else ""
    # The archive copy is written when the video is archived, so its LastModified is that time.
    return Failure(
        description=f"The upload of partition {partition_key!r} was archived on "
        f"{video.last_modified:%Y-%m-%d %H:%M} UTC ({video.key}); copy it back to {original}{also} "
        "to re-process.",
        metadata={"archived_keys": MetadataValue.json([o.key for o in archived])},
        allow_retries=False,
    )


@contextlib.contextmanager
def local_copy(store: ObjectStore, key: str) -> Iterator[Path]:
    """A local file for ``key``: the file itself on a local bucket, a temporary download on S3."""
    if isinstance(store, LocalObjectStore):
        yield Path(store.root) / key
        return
    with tempfile.TemporaryDirectory(prefix="anpr-video-") as tmp:
        yield store.download(key, Path(tmp) / Path(key).name)


def decode_failure(exc: Exception, key: str) -> Failure:
    """A clear, non-retried failure for a video that cannot be decoded: retrying will not help."""
    return Failure(
        description=f"Cannot decode {key}: {getattr(exc, 'reason', exc)}",
        metadata={"video_key": key, "error": MetadataValue.text(str(exc))},
        allow_retries=False,
    )


def mask_plate(plate: str, show: bool) -> str:
    """Plates in Dagster's event log cannot be erased later (GDPR): mask them unless configured.

    The full text stays in the events DB and Parquet, where erase_plate reaches it.
    """
    if show or len(plate) <= 3:
        return plate if show else "*" * len(plate)
    return plate[:2] + "*" * (len(plate) - 3) + plate[-1]


def recorded_metadata(
    context: AssetExecutionContext, asset_key: AssetKey, name: str, observations: int = 0
) -> list[Any]:
    """The values of metadata entry ``name`` recorded for this run's partition of
    ``asset_key``: its latest materialization's, then those of its ``observations`` most
    recent observations (where an earlier run noted what it was about to write)."""
    partition = AssetRecordsFilter(asset_key=asset_key, asset_partitions=[context.partition_key])
    records = context.instance.fetch_materializations(partition, limit=1).records
    events = [r.asset_materialization for r in records if r.asset_materialization]
    if observations:
        observed = context.instance.fetch_observations(partition, limit=observations).records
        events += [r.asset_observation for r in observed if r.asset_observation]
    return [event.metadata[name].value for event in events if name in event.metadata]
