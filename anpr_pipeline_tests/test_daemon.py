"""The real `dagster-daemon`, production instance (deploy/dagster.yaml on Postgres), S3 bucket:
an upload is picked up by the sensor, queued, launched, and its events appear in Postgres.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from anpr_pipeline.resources.event_store import EventStore
from anpr_pipeline.uploads import video_key_for
from anpr_pipeline.vision.synth import make_video
from anpr_pipeline_tests.servers import create_database, drop_database

pytestmark = [pytest.mark.s3, pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 420


def _pg_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {
        "DAGSTER_PG_HOST": parts.hostname or "127.0.0.1",
        "DAGSTER_PG_PORT": str(parts.port or 5432),
        "DAGSTER_PG_DB": parts.path.lstrip("/"),
        "DAGSTER_PG_USERNAME": parts.username or "postgres",
        "DAGSTER_PG_PASSWORD": parts.password or "",
    }


@pytest.fixture
def events_url(postgres_admin_url):
    name, url = create_database(postgres_admin_url, prefix="anpr_daemon_events")
    yield url
    drop_database(postgres_admin_url, name)


def test_daemon_picks_up_an_upload_and_events_appear(s3_server, fresh_postgres_url, events_url, tmp_path):
    bucket = s3_server.new_bucket("anpr-daemon")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    events = EventStore(events_url)
    events.init_schema()

    make_video(tmp_path / "v.mp4", seed=5, seconds=4.0, vehicles=1)
    key = video_key_for("cam-daemon", datetime(2026, 11, 28, 6, 0, tzinfo=UTC))
    s3_server.store(bucket).put_file(key, tmp_path / "v.mp4")

    env = {
        **os.environ,
        **s3_server.env(bucket),
        **_pg_env(fresh_postgres_url),
        "DAGSTER_HOME": str(home),
        "ANPR_DATABASE_URL": events_url,
        "ANPR_DATA_DIR": str(tmp_path / "data"),
    }
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        stored: list[dict] = []
        while time.monotonic() < deadline and not stored:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-4000:]
            time.sleep(5)
            stored = events.events_for_video(key)
        assert stored, (
            f"no events after {WAIT_S} s; daemon log tail:\n{(tmp_path / 'daemon.log').read_text()[-4000:]}"
        )
        assert all(e["camera_id"] == "cam-daemon" for e in stored)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()
