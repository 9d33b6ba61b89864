"""find_upload: which upload a partition is processed from."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import Failure

from anpr_pipeline.assets.common import find_upload
from anpr_pipeline.resources.object_store import LocalObjectStore
from anpr_pipeline.sensors import UploadCursor, scan_uploads

PARTITION = "cam-1/20261128T100000Z"


def _upload(store: LocalObjectStore, key: str, age_s: float) -> None:
    store.put_bytes(key, b"x" * 100)
    stamp = time.time() - age_s
    os.utime(Path(store.root) / key, (stamp, stamp))


def test_two_uploads_of_a_partition_are_processed_from_the_one_the_sensor_took(tmp_path):
    # The .mp4 was uploaded first; the .avi sorts first by name. Sensor and asset must agree.
    store = LocalObjectStore(tmp_path)
    _upload(store, f"uploads/{PARTITION}.mp4", age_s=300)
    _upload(store, f"uploads/{PARTITION}.avi", age_s=60)
    (taken,) = scan_uploads(list(store.list("uploads/")), UploadCursor(), datetime.now(UTC)).ready
    assert taken.key == f"uploads/{PARTITION}.mp4"
    assert find_upload(store, PARTITION).key == taken.key


def test_stray_siblings_are_not_the_upload(tmp_path):
    store = LocalObjectStore(tmp_path)
    _upload(store, f"uploads/{PARTITION}.mp4", age_s=60)
    _upload(store, f"uploads/{PARTITION}.bak.mp4", age_s=600)  # sorts first, older
    _upload(store, f"uploads/{PARTITION}.json.mp4", age_s=600)
    assert find_upload(store, PARTITION).key == f"uploads/{PARTITION}.mp4"


def test_only_stray_siblings_means_no_upload(tmp_path):
    store = LocalObjectStore(tmp_path)
    _upload(store, f"uploads/{PARTITION}.bak.mp4", age_s=60)
    with pytest.raises(Failure, match="No upload found for partition"):
        find_upload(store, PARTITION)
