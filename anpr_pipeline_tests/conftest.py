"""Shared fixtures. Server fixtures (Postgres, SeaweedFS) live in anpr_pipeline_tests/servers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

# Server fixtures (postgres_url, fresh_postgres_url, pg_cluster, s3_server, s3_store, s3_env, moto_s3).
from anpr_pipeline_tests.servers import *  # noqa: F403

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(REPO_ROOT.parent / "shared" / "data")


def _shared_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real-photo data set lives in ../shared/data (not in the repo)")
    return path


@pytest.fixture(scope="session")
def real_dev_dir() -> Path:
    return _shared_dir("real_dev")


@pytest.fixture(scope="session")
def real_train_dir() -> Path:
    return _shared_dir("real_train")
