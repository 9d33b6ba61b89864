"""The bucket: uploads, crops and Parquet live here, in a local folder or an S3 bucket.

Two implementations behind one interface (`ObjectStore`), chosen by settings, never by a
code fork. Keys are always "/"-separated relative names (``crops/cam1/2024-01-01/...``).

- `LocalObjectStore` writes through a temporary file in the same directory and renames it
  into place, so a reader (the upload sensor listing the folder) never sees half a file;
  `list()` skips the temporary names.
- `S3ObjectStore` uses boto3 with bounded timeouts and the "standard" retry mode, a
  paginated listing, managed (multipart) transfers for large files, presigned URLs, and
  turns botocore errors into `ObjectStoreError` messages that name the endpoint and
  bucket, so an operator sees "bucket 'anpr' does not exist at http://s3:8333" rather than
  a stack of botocore internals.

Credentials come from the environment / the standard AWS chain only.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from dagster import ConfigurableResource

if TYPE_CHECKING:
    import pyarrow.fs

    from anpr_pipeline.settings import Settings

# Temporary files of an in-progress local write carry this marker; list() skips them.
TMP_MARKER = ".anpr-tmp-"
# S3 DeleteObjects accepts at most 1000 keys per call.
_S3_DELETE_BATCH = 1000


class ObjectStoreError(RuntimeError):
    """A bucket operation failed; the message says where (endpoint, bucket, key) and why."""


class ObjectNotFoundError(ObjectStoreError):
    """The key does not exist in the bucket."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime  # tz-aware UTC
    etag: str | None = None


def _check_key(key: str) -> str:
    """Keys are relative and may not climb out of the bucket (a local-folder escape)."""
    if not key or key.startswith("/") or "\\" in key:
        raise ObjectStoreError(f"invalid object key {key!r}: keys are relative, '/'-separated")
    if any(part in {"", ".", ".."} for part in key.split("/")):
        raise ObjectStoreError(f"invalid object key {key!r}: empty, '.' or '..' path segment")
    return key


class ObjectStore(ABC):
    """What the pipeline needs from a bucket; see the module docstring."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def download(self, key: str, path: str | Path) -> Path: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def info(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in key order, across all pages."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> int:
        """Delete keys; returns how many were deleted (missing keys are not an error)."""

    @abstractmethod
    def copy(self, src: str, dst: str, storage_class: str | None = None) -> None: ...

    @abstractmethod
    def url(self, key: str, expires_s: int = 3600) -> str:
        """A URL a browser/HTTP client can fetch: presigned on S3, file:// locally."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Canonical location: s3://bucket/key or an absolute local path."""

    @abstractmethod
    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """A pyarrow filesystem plus the base path that keys are relative to."""

    def describe(self) -> str:
        return self.uri("")


# --------------------------------------------------------------------------------------
# Local folder
# --------------------------------------------------------------------------------------


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: name the setting
            raise ObjectStoreError(
                f"cannot use {self.root} as the bucket folder (ANPR_BUCKET_DIR): {exc.strerror}"
            ) from exc

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _atomic_write(self, key: str, write: Any) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same directory as the target so os.replace is an atomic rename, never a copy.
        tmp = target.parent / f"{TMP_MARKER}{uuid.uuid4().hex}-{target.name}"
        try:
            write(tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {key!r} under {self.root}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._atomic_write(key, lambda tmp: tmp.write_bytes(data))

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        self._atomic_write(key, lambda tmp: shutil.copyfile(path, tmp))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"no object {key!r} under {self.root}") from exc
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {key!r} under {self.root}: {exc}") from exc

    def download(self, key: str, path: str | Path) -> Path:
        src, dst = self._path(key), Path(path)
        if not src.is_file():
            raise ObjectNotFoundError(f"no object {key!r} under {self.root}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return dst

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), None)

    def info(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} under {self.root}")
        return self._info(key, path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Start the walk at the deepest directory the prefix names, then filter by string
        # prefix (S3 semantics: "uploads/cam" matches "uploads/cam1/...").
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(start, onerror=self._unlistable):
            dirnames[:] = [d for d in dirnames if not d.startswith(TMP_MARKER)]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(TMP_MARKER):
                    continue  # a write in progress: never expose half a file
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    found.append((key, Path(dirpath) / name))
        for key, path in sorted(found):
            try:
                yield self._info(key, path)
            except FileNotFoundError:
                continue  # deleted between the walk and the stat

    def _unlistable(self, exc: OSError) -> None:
        # os.walk skips a folder it cannot read unless told: a camera folder with the wrong
        # owner would then never be listed, and its uploads never processed, without a word.
        if isinstance(exc, FileNotFoundError):
            return  # removed during the walk (retention prunes empty folders): nothing to list
        raise ObjectStoreError(f"cannot list {exc.filename} under {self.root}: {exc.strerror}") from exc

    def delete(self, keys: Iterable[str]) -> int:
        deleted = 0
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
                deleted += 1
            except FileNotFoundError:
                continue
            self._prune_empty_dirs(path.parent)
        return deleted

    def _prune_empty_dirs(self, directory: Path) -> None:
        # Keep the tree tidy so listings of old prefixes stay cheap after retention.
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def copy(self, src: str, dst: str, storage_class: str | None = None) -> None:
        # Local folders have no storage classes: the argument is accepted and ignored.
        source = self._path(src)
        if not source.is_file():
            raise ObjectNotFoundError(f"no object {src!r} under {self.root}")
        self._atomic_write(dst, lambda tmp: shutil.copyfile(source, tmp))

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self._path(key).as_uri()

    def uri(self, key: str) -> str:
        return str(self._path(key)) if key else str(self.root)

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self.root)

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"


# --------------------------------------------------------------------------------------
# S3-compatible bucket
# --------------------------------------------------------------------------------------


class S3ObjectStore(ObjectStore):
    """An S3 bucket (AWS, MinIO, SeaweedFS). Credentials: env / the standard AWS chain.

    `aws_access_key_id`/`aws_secret_access_key` exist for tests that talk to a throwaway
    server; production leaves them None.
    """

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 5,
        multipart_threshold_bytes: int = 64 * 1024 * 1024,
        multipart_chunk_bytes: int = 16 * 1024 * 1024,
        max_pool_connections: int = 32,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.region = region or "us-east-1"
        self._session = boto3.session.Session(
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            region_name=self.region,
        )
        try:  # a bad endpoint, timeout or retry count fails here, not at the first request
            config = Config(
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                signature_version="s3v4",
                max_pool_connections=max_pool_connections,
                # Path-style for self-hosted endpoints (no wildcard DNS for bucket subdomains).
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            )
            self.client = self._session.client("s3", endpoint_url=self.endpoint_url, config=config)
        except (ValueError, BotoCoreError) as exc:
            raise ObjectStoreError(
                f"bad S3 settings (endpoint {self.endpoint_url!r}, connect timeout {connect_timeout_s} s, "
                f"{max_attempts} retries): {exc}"
            ) from exc
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=multipart_chunk_bytes,
            max_concurrency=4,
        )

    # -- error translation ---------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint_url or 'AWS S3 (' + self.region + ')'}"

    def _error(self, action: str, exc: Exception, key: str | None = None) -> ObjectStoreError:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        what = f"{action} {key!r} in {self._where}" if key is not None else f"{action} in {self._where}"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return ObjectStoreError(f"cannot {what}: the bucket does not exist")
            if code in {"NoSuchKey", "404", "NotFound"}:
                if action == "check" or key is None:
                    return ObjectStoreError(f"cannot {what}: the bucket does not exist")
                return ObjectNotFoundError(f"cannot {what}: no such object")
            if code in {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                return ObjectStoreError(
                    f"cannot {what}: access denied ({code}); check the credentials "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile) and the bucket policy"
                )
            return ObjectStoreError(f"cannot {what}: {code or status}: {exc}")
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return ObjectStoreError(f"cannot {what}: endpoint unreachable ({exc})")
        if isinstance(exc, ReadTimeoutError):
            return ObjectStoreError(f"cannot {what}: the endpoint timed out ({exc})")
        if isinstance(exc, NoCredentialsError):
            return ObjectStoreError(
                f"cannot {what}: no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "or configure an AWS profile / instance role)"
            )
        return ObjectStoreError(f"cannot {what}: {type(exc).__name__}: {exc}")

    def _call(self, action: str, fn: Any, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(action, exc, key) from exc
        except Boto3Error as exc:  # the transfer manager wraps the client's error (S3UploadFailedError)
            cause = exc.__cause__ or exc.__context__
            botocore_error = cause if isinstance(cause, ClientError | BotoCoreError) else exc
            raise self._error(action, botocore_error, key) from exc

    # -- bucket admin (tests, demo, health checks) -----------------------------------------

    def check(self) -> None:
        """Raise ObjectStoreError unless the bucket exists and is reachable with these credentials."""
        self._call("check", self.client.head_bucket, Bucket=self.bucket)

    def create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            }:
                return
            raise self._error("create", exc) from exc
        except Exception as exc:  # BotoCoreError: endpoint down etc.
            raise self._error("create", exc) from exc

    # -- objects ---------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self._call(
            "put",
            self.client.put_object,
            Bucket=self.bucket,
            Key=_check_key(key),
            Body=data,
            key=key,
            **extra,
        )

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        # upload_file switches to a multipart upload above multipart_threshold, in parallel parts.
        extra = {"ContentType": content_type} if content_type else None
        self._call(
            "upload",
            self.client.upload_file,
            str(path),
            self.bucket,
            _check_key(key),
            ExtraArgs=extra,
            Config=self.transfer_config,
            key=key,
        )

    def get_bytes(self, key: str) -> bytes:
        # The body streams after the response: a connection dropped mid-read is the same error.
        return self._call(
            "get", lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(), key=key
        )

    def download(self, key: str, path: str | Path) -> Path:
        dst = Path(path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        self._call(
            "download",
            self.client.download_file,
            self.bucket,
            key,
            str(dst),
            Config=self.transfer_config,
            key=key,
        )
        return dst

    def info(self, key: str) -> ObjectInfo:
        resp = self._call("stat", self.client.head_object, Bucket=self.bucket, Key=key, key=key)
        return ObjectInfo(
            key,
            int(resp["ContentLength"]),
            resp["LastModified"].astimezone(UTC),
            resp.get("ETag", "").strip('"') or None,
        )

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        obj["Key"],
                        int(obj["Size"]),
                        obj["LastModified"].astimezone(UTC),
                        obj.get("ETag", "").strip('"') or None,
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", exc, prefix) from exc

    def delete(self, keys: Iterable[str]) -> int:
        batch: list[str] = []
        deleted = 0
        for key in keys:
            batch.append(key)
            if len(batch) == _S3_DELETE_BATCH:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, keys: list[str]) -> int:
        # S3 reports missing keys as deleted too, so the count is "keys no longer present".
        resp = self._call(
            "delete",
            self.client.delete_objects,
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in keys], "Quiet": False},
        )
        errors = resp.get("Errors", [])
        if errors:
            first = errors[0]
            raise ObjectStoreError(
                f"cannot delete {len(errors)} of {len(keys)} objects in {self._where}: "
                f"first {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )
        return len(resp.get("Deleted", []))

    def copy(self, src: str, dst: str, storage_class: str | None = None) -> None:
        # The managed copy does a multipart copy above the threshold (CopyObject caps at 5 GB).
        extra = {"StorageClass": storage_class} if storage_class else None
        self._call(
            "copy",
            self.client.copy,
            {"Bucket": self.bucket, "Key": src},
            self.bucket,
            _check_key(dst),
            ExtraArgs=extra,
            Config=self.transfer_config,
            key=src,
        )

    def storage_class(self, key: str) -> str:
        """STANDARD unless the object was written/copied with another class."""
        resp = self._call("stat", self.client.head_object, Bucket=self.bucket, Key=key, key=key)
        return resp.get("StorageClass") or "STANDARD"

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self._call(
            "presign",
            self.client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=int(expires_s),
            key=key,
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        kwargs: dict[str, Any] = {"region": self.region}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
            kwargs["scheme"] = parsed.scheme or "https"
        # Same credentials boto3 resolved (env vars, profile, instance role), so both agree.
        creds = self._session.get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
            if frozen.token:
                kwargs["session_token"] = frozen.token
        return pyarrow.fs.S3FileSystem(**kwargs), self.bucket

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.bucket!r}, endpoint_url={self.endpoint_url!r})"


# --------------------------------------------------------------------------------------
# Asynchronous uploads (crops from the detection step)
# --------------------------------------------------------------------------------------


class AsyncUploader:
    """Upload in background threads so the producer (detector loop) is not blocked on I/O.

    At most `max_pending` uploads are in flight: beyond that `submit` waits, so a slow
    bucket applies back-pressure instead of buffering every crop in memory. On exit all
    uploads are awaited and the first error is raised (after the rest finished).
    """

    def __init__(self, store: ObjectStore, max_workers: int = 4, max_pending: int | None = None):
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="anpr-upload")
        self._slots = threading.BoundedSemaphore(max_pending or max_workers * 8)
        self._futures: list[Future[None]] = []
        self.uploaded = 0
        self.bytes_uploaded = 0
        self._lock = threading.Lock()

    def __enter__(self) -> AsyncUploader:
        return self

    def submit(self, key: str, data: bytes, content_type: str | None = None) -> Future[None]:
        self._slots.acquire()
        try:
            future = self._pool.submit(self._upload, key, data, content_type)
        except BaseException:
            self._slots.release()
            raise
        self._futures.append(future)
        return future

    def _upload(self, key: str, data: bytes, content_type: str | None) -> None:
        try:
            self.store.put_bytes(key, data, content_type)
            with self._lock:
                self.uploaded += 1
                self.bytes_uploaded += len(data)
        finally:
            self._slots.release()

    def wait(self) -> None:
        """Wait for every submitted upload; raise the first failure."""
        first: BaseException | None = None
        for future in self._futures:
            exc = future.exception()
            if exc is not None and first is None:
                first = exc
        self._futures = [f for f in self._futures if not f.done()]
        if first is not None:
            raise first

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc is None:
                self.wait()
            else:
                # The caller already failed: let uploads finish, report the original error.
                for future in self._futures:
                    future.exception()
        finally:
            self._pool.shutdown(wait=True)


# --------------------------------------------------------------------------------------
# Dagster resource
# --------------------------------------------------------------------------------------


def build_object_store(
    kind: str,
    bucket_dir: str = "",
    s3_bucket: str = "anpr",
    s3_endpoint_url: str = "",
    s3_region: str = "us-east-1",
    s3_connect_timeout_s: float = 5.0,
    s3_max_attempts: int = 5,
) -> ObjectStore:
    if kind == "local":
        if not bucket_dir:
            raise ObjectStoreError("bucket kind 'local' needs a folder (ANPR_BUCKET_DIR)")
        return LocalObjectStore(bucket_dir)
    if kind == "s3":
        return S3ObjectStore(
            s3_bucket,
            endpoint_url=s3_endpoint_url or None,
            region=s3_region,
            connect_timeout_s=s3_connect_timeout_s,
            max_attempts=s3_max_attempts,
        )
    raise ObjectStoreError(f"unknown bucket kind {kind!r}: expected 'local' or 's3'")


class ObjectStoreResource(ConfigurableResource):
    """The bucket as a Dagster resource; `get_store()` returns the ObjectStore to use."""

    kind: str = "local"
    bucket_dir: str = ""
    s3_bucket: str = "anpr"
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_connect_timeout_s: float = 5.0
    s3_max_attempts: int = 5

    def get_store(self) -> ObjectStore:
        return build_object_store(
            self.kind,
            self.bucket_dir,
            self.s3_bucket,
            self.s3_endpoint_url,
            self.s3_region,
            self.s3_connect_timeout_s,
            self.s3_max_attempts,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStoreResource:
        return cls(
            kind=settings.bucket_kind,
            bucket_dir=settings.bucket_dir,
            s3_bucket=settings.s3_bucket,
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
            s3_connect_timeout_s=settings.s3_connect_timeout_s,
            s3_max_attempts=settings.s3_max_attempts,
        )
