"""Object store: the same behaviour from the local folder and from a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anpr_pipeline.resources.object_store import (
    TMP_MARKER,
    AsyncUploader,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreResource,
    S3ObjectStore,
)
from anpr_pipeline.settings import load_settings
from anpr_pipeline_tests.servers import S3Server, free_port


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "bucket")
    return request.getfixturevalue("s3_store")


def test_put_get_exists_info(store: ObjectStore) -> None:
    store.put_bytes("crops/cam1/2024-01-01/a.jpg", b"\xff\xd8jpeg", content_type="image/jpeg")
    assert store.get_bytes("crops/cam1/2024-01-01/a.jpg") == b"\xff\xd8jpeg"
    assert store.exists("crops/cam1/2024-01-01/a.jpg")
    assert not store.exists("crops/cam1/2024-01-01/missing.jpg")
    info = store.info("crops/cam1/2024-01-01/a.jpg")
    assert info.size == 6 and info.last_modified.tzinfo is not None
    assert info.last_modified.utcoffset() == UTC.utcoffset(None)
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("crops/nope.jpg")


def test_put_file_and_download(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "video.mp4"
    src.write_bytes(b"v" * 100_000)
    store.put_file("uploads/cam1/20240101T000000Z.mp4", src)
    out = store.download("uploads/cam1/20240101T000000Z.mp4", tmp_path / "out" / "v.mp4")
    assert out.read_bytes() == src.read_bytes()


def test_list_is_prefix_filtered_sorted_and_complete(store: ObjectStore) -> None:
    keys = [f"uploads/cam{c}/{i:04d}.mp4" for c in (1, 2) for i in range(30)] + ["crops/x.jpg"]
    for k in keys:
        store.put_bytes(k, b"x")
    listed = [o.key for o in store.list("uploads/cam1")]
    assert listed == sorted(k for k in keys if k.startswith("uploads/cam1"))
    assert len(list(store.list())) == len(keys)
    assert list(store.list("nothing/")) == []


def test_delete_and_copy(store: ObjectStore) -> None:
    store.put_bytes("a/1", b"one")
    store.put_bytes("a/2", b"two")
    store.copy("a/1", "archive/a/1", storage_class="STANDARD_IA")
    assert store.get_bytes("archive/a/1") == b"one"
    assert store.delete(["a/1", "a/2"]) == 2
    assert not store.exists("a/1") and [o.key for o in store.list()] == ["archive/a/1"]


def test_url_is_fetchable(store: ObjectStore) -> None:
    store.put_bytes("crops/c.jpg", b"crop-bytes", content_type="image/jpeg")
    with urllib.request.urlopen(store.url("crops/c.jpg", expires_s=60), timeout=10) as resp:
        assert resp.read() == b"crop-bytes"


def test_invalid_keys_rejected(store: ObjectStore) -> None:
    for bad in ["", "/abs", "a/../b", "a//b"]:
        with pytest.raises(ObjectStoreError):
            store.put_bytes(bad, b"x")


def test_async_uploader_writes_everything_and_reports_errors(store: ObjectStore) -> None:
    with AsyncUploader(store, max_workers=4) as up:
        for i in range(40):
            up.submit(f"crops/async/{i:03d}.jpg", bytes([i]) * 10, "image/jpeg")
    assert up.uploaded == 40 and up.bytes_uploaded == 400
    assert [o.key for o in store.list("crops/async/")] == [f"crops/async/{i:03d}.jpg" for i in range(40)]
    with pytest.raises(ObjectStoreError), AsyncUploader(store) as up:
        up.submit("ok/1", b"x")
        up.submit("../escape", b"x")


def test_parquet_through_arrow_filesystem(store: ObjectStore) -> None:
    fs, base = store.arrow_filesystem()
    table = pa.table({"plate": ["AB123CD", "XY999"], "n": [1, 2]})
    path = f"{base}/parquet/events/date=2024-01-01/camera_id=cam1/t.parquet"
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert store.exists("parquet/events/date=2024-01-01/camera_id=cam1/t.parquet")


# -- local specifics -------------------------------------------------------------------------


def test_local_list_never_shows_a_partial_write(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    payload = b"z" * 5_000_000
    stop = threading.Event()
    seen_bad: list[tuple[str, int]] = []

    def writer() -> None:
        for i in range(20):
            store.put_bytes(f"uploads/cam1/{i:03d}.mp4", payload)
        stop.set()

    def lister() -> None:
        while not stop.is_set():
            for info in store.list("uploads/"):
                assert TMP_MARKER not in info.key
                if info.size != len(payload):
                    seen_bad.append((info.key, info.size))

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(writer), pool.submit(lister)]
        for f in futures:
            f.result()
    assert seen_bad == []
    assert len(list(store.list("uploads/"))) == 20


def test_local_leftover_temp_files_are_invisible(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / f"{TMP_MARKER}abc-v.mp4").write_bytes(b"half")
    store.put_bytes("uploads/v.mp4", b"whole")
    assert [o.key for o in store.list()] == ["uploads/v.mp4"]


def test_local_delete_prunes_empty_dirs(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "b")
    store.put_bytes("crops/cam1/2024-01-01/x.jpg", b"x")
    assert store.delete(["crops/cam1/2024-01-01/x.jpg", "crops/missing.jpg"]) == 1
    assert list((tmp_path / "b").iterdir()) == []


def test_local_unreadable_folder_is_an_error_not_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.walk skips folders it cannot read unless told: a camera folder with the wrong owner
    # must fail the listing (the sensor reports it) rather than hide its uploads. Tests run as
    # root, which reads any folder, so the permission error is injected at os.scandir.
    store = LocalObjectStore(tmp_path)
    store.put_bytes("uploads/cam1/20240101T000000Z.mp4", b"v")
    store.put_bytes("uploads/cam5/20240101T000000Z.mp4", b"v")
    real_scandir = os.scandir
    locked = str(tmp_path / "uploads" / "cam5")

    def scandir(path):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ObjectStoreError, match=r"cannot list .*cam5.*Permission denied"):
        list(store.list("uploads/"))


def test_resource_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANPR_BUCKET_KIND", "local")
    monkeypatch.setenv("ANPR_BUCKET_DIR", str(tmp_path / "bkt"))
    store = ObjectStoreResource.from_settings(load_settings()).get_store()
    assert isinstance(store, LocalObjectStore) and store.root == (tmp_path / "bkt").resolve()


# -- S3 specifics ------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_list_paginates_past_1000_keys(s3_store: S3ObjectStore) -> None:
    keys = [f"uploads/cam1/{i:05d}.mp4" for i in range(1203)]
    with AsyncUploader(s3_store, max_workers=8) as up:
        for k in keys:
            up.submit(k, b"v")
    assert [o.key for o in s3_store.list("uploads/")] == keys
    assert s3_store.delete(keys) == len(keys)
    assert list(s3_store.list("uploads/")) == []


@pytest.mark.s3
def test_s3_multipart_upload_of_a_large_file(s3_server: S3Server, tmp_path: Path) -> None:
    store = s3_server.store(
        s3_server.new_bucket(),
        multipart_threshold_bytes=5 * 1024 * 1024,
        multipart_chunk_bytes=5 * 1024 * 1024,
    )
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(range(256)) * (48 * 1024))  # 12 MiB -> 3 parts
    store.put_file("uploads/cam1/20240101T000000Z.mp4", big)
    info = store.info("uploads/cam1/20240101T000000Z.mp4")
    assert info.size == big.stat().st_size
    assert info.etag is not None and info.etag.endswith("-3")  # S3's multipart ETag: md5-of-parts "-<n>"
    assert (
        store.download("uploads/cam1/20240101T000000Z.mp4", tmp_path / "back.mp4").read_bytes()
        == big.read_bytes()
    )


@pytest.mark.s3
def test_s3_copy_sets_storage_class(s3_store: S3ObjectStore) -> None:
    s3_store.put_bytes("videos/v.mp4", b"video")
    assert s3_store.storage_class("videos/v.mp4") == "STANDARD"
    s3_store.copy("videos/v.mp4", "archive/v.mp4", storage_class="STANDARD_IA")
    assert s3_store.storage_class("archive/v.mp4") == "STANDARD_IA"
    assert s3_store.get_bytes("archive/v.mp4") == b"video"


@pytest.mark.s3
def test_s3_missing_bucket_is_a_clear_error(s3_server: S3Server) -> None:
    store = s3_server.store("no-such-bucket-anpr")
    with pytest.raises(ObjectStoreError, match=r"no-such-bucket-anpr.*does not exist"):
        store.check()
    with pytest.raises(ObjectStoreError, match="no-such-bucket-anpr"):
        list(store.list())
    with pytest.raises(ObjectStoreError, match=rf"{s3_server.endpoint_url}"):
        store.get_bytes("a")


@pytest.mark.s3
def test_s3_wrong_credentials_is_access_denied(s3_server: S3Server) -> None:
    store = S3ObjectStore(
        s3_server.bucket,
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id="nobody",
        aws_secret_access_key="wrong-secret",
        max_attempts=1,
    )
    with pytest.raises(ObjectStoreError, match=r"access denied.*credentials"):
        store.put_bytes("a", b"x")


def test_s3_unreachable_endpoint_fails_fast_and_clearly() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3ObjectStore(
        "anpr",
        endpoint_url=endpoint,
        connect_timeout_s=1,
        max_attempts=2,
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    t0 = time.monotonic()
    with pytest.raises(ObjectStoreError, match=rf"bucket 'anpr' at {endpoint}.*unreachable"):
        list(store.list("uploads/"))
    with pytest.raises(ObjectStoreError, match="unreachable"):
        store.get_bytes("uploads/x.mp4")
    assert time.monotonic() - t0 < 20


@pytest.mark.s3
def test_s3_resource_from_settings_uses_env_credentials(s3_env: S3Server) -> None:
    store = ObjectStoreResource.from_settings(load_settings()).get_store()
    assert isinstance(store, S3ObjectStore)
    store.put_bytes("env/k", b"v")
    assert store.get_bytes("env/k") == b"v" and store.uri("env/k") == f"s3://{s3_env.bucket}/env/k"


def test_s3_server_error_from_moto_is_wrapped(moto_s3: S3Server) -> None:
    # moto answers with an S3 error document for a bucket name S3 rejects; the store must
    # turn it into an ObjectStoreError naming the endpoint, not leak a botocore ClientError.
    store = moto_s3.store("anpr-moto")
    store.create_bucket()
    store.put_bytes("x", b"1")
    assert store.get_bytes("x") == b"1"
    with pytest.raises(ObjectStoreError, match=moto_s3.endpoint_url):
        S3ObjectStore(
            "Invalid_Bucket!",
            endpoint_url=moto_s3.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket()
    # upload_file's transfer manager wraps the client error in boto3's S3UploadFailedError.
    # (SeaweedFS creates a missing bucket on upload, so moto answers this one.)
    with pytest.raises(ObjectStoreError, match=r"cannot upload 'a'.*does not exist"):
        moto_s3.store("anpr-moto-missing").put_file("a", Path(__file__))


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"endpoint_url": "localhost:9000"}, "Invalid endpoint"),
        ({"connect_timeout_s": 0}, "connect timeout"),
        ({"max_attempts": -1}, "max_attempts"),
    ],
)
def test_s3_bad_client_settings_are_a_store_error(settings: dict, fragment: str) -> None:
    with pytest.raises(ObjectStoreError, match=f"bad S3 settings.*{fragment}"):
        S3ObjectStore("anpr", **settings)


def test_s3_timeouts_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    for key, value in {
        "ANPR_BUCKET_KIND": "s3",
        "ANPR_S3_ENDPOINT_URL": endpoint,
        "ANPR_S3_CONNECT_TIMEOUT_S": "1",
        "ANPR_S3_MAX_ATTEMPTS": "1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }.items():
        monkeypatch.setenv(key, value)
    resource = ObjectStoreResource.from_settings(load_settings())
    assert resource.s3_connect_timeout_s == 1 and resource.s3_max_attempts == 1
    store = resource.get_store()
    with pytest.raises(ObjectStoreError, match="unreachable"):
        next(iter(store.list("uploads/")))
