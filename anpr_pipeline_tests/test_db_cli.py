"""`anpr db init|upgrade|info` against SQLite and the test Postgres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anpr_pipeline.cli import main
from anpr_pipeline_tests.servers import free_port


def test_db_init_and_info_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("ANPR_DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'events.db'}")
    assert main(["db", "info"]) == 1  # info creates nothing where a wrong path points
    assert f"no SQLite database at {tmp_path / 'db' / 'events.db'}" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "events.db").touch()
    assert main(["db", "info"]) == 0
    assert "not initialised" in capsys.readouterr().out
    assert main(["db", "init"]) == 0 and main(["db", "init"]) == 0
    capsys.readouterr()
    assert main(["db", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dialect"] == "sqlite" and info["schema_version"] == 3 and info["events"] == 0


@pytest.mark.postgres
def test_db_upgrade_and_info_postgres(fresh_postgres_url: str, capsys) -> None:
    assert main(["db", "upgrade", "--url", fresh_postgres_url, "--months-ahead", "3"]) == 0
    out = capsys.readouterr().out
    assert "schema v3 ready" in out and "created partitions" in out
    assert main(["db", "info", "--json", "--url", fresh_postgres_url]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["schema_version"] == 3 and info["events"] == 0
    assert "events_default" in info["partitions"] and len(info["partitions"]) == 5


def test_db_info_unreachable_is_a_clean_error(capsys) -> None:
    url = f"postgresql+psycopg://anpr:secret-pw@127.0.0.1:{free_port()}/nowhere"
    assert main(["db", "info", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "unreachable" in err and "secret-pw" not in err


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("notaurl", "not a database URL: 'notaurl'"),
        ("postgresql+psycopg://anpr:secret-pw@host:port/db", "not a database URL"),
        ("sqlite+nodriver:///x.db", "Can't load plugin"),
    ],
)
def test_db_init_with_a_malformed_url_is_one_line(
    url: str, fragment: str, capsys, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative SQLite path lands here
    assert main(["db", "init", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("anpr db init: ") and fragment in err, err
    assert "secret-pw" not in err and "Traceback" not in err
