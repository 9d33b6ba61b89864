"""GDPR export/erase on both backends: the export holds everything, the erasure leaves no
trace in the events DB, the crops or the Parquet dataset, other plates are untouched, and
the audit trail never stores the plate in clear."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from dagster import instance_for_test

from anpr_pipeline import cli
from anpr_pipeline.ops.gdpr import erase_plate, erasure_digest, plate_digest, read_audit, split_erased
from anpr_pipeline.ops.jobs import erase_plate_job, export_plate_job
from anpr_pipeline.ops.retention import partition_key_of
from anpr_pipeline.resources.parquet_dataset import read_events
from anpr_pipeline_tests.ops.conftest import event_row, store_video
from anpr_pipeline_tests.ops.test_jobs import materialize_step_output, resources_for

PLATE, OTHER, SALT = "AB123CD", "ZZ999ZZ", "test-salt-0123456789"


def _two_videos(backend) -> tuple[list[dict], list[dict]]:
    now = datetime.now(UTC).replace(microsecond=0)
    v1 = "uploads/cam1/" + (now - timedelta(days=3)).strftime("%Y%m%dT%H%M%SZ") + ".mp4"
    v2 = "uploads/cam2/" + (now - timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ") + ".mp4"
    rows1 = [
        event_row(now - timedelta(days=3) + timedelta(seconds=5), PLATE, "cam1", v1, 0),
        event_row(now - timedelta(days=3) + timedelta(seconds=9), OTHER, "cam1", v1, 1),
    ]
    rows2 = [event_row(now - timedelta(days=1) + timedelta(seconds=2), PLATE, "cam2", v2, 0)]
    store_video(backend, rows1)
    store_video(backend, rows2)
    return [r for r in rows1 + rows2 if r["normalized_plate"] == PLATE], [rows1[1]]


def _no_plate_in_audit(backend) -> None:
    for o in backend.store.list("audit/"):
        assert PLATE.encode() not in backend.store.get_bytes(o.key)


def test_export_then_erase_leaves_no_trace(backend):
    mine, others = _two_videos(backend)
    io_dir = str(backend.store.uri("")) + "-dagster-io" if backend.bucket_kwargs["kind"] == "local" else ""
    with instance_for_test() as instance:  # pickled per-frame reads of both videos, via the real IO manager
        for row in mine:
            materialize_step_output(backend, instance, partition_key_of(row["video_key"]), io_dir)
    resources = resources_for(backend, gdpr_salt=SALT, io_manager_dir=io_dir)
    result = export_plate_job.execute_in_process(
        run_config={"ops": {"export_plate_op": {"config": {"plate": "ab-123 cd"}}}}, resources=resources
    )
    summary = result.output_for_node("export_plate_op")
    assert (summary["events"], summary["parquet_rows"], summary["crops"]) == (2, 2, 2)
    assert PLATE not in summary["key"] and summary["key"].startswith("exports/")
    other_export = export_plate_job.execute_in_process(
        run_config={"ops": {"export_plate_op": {"config": {"plate": OTHER}}}}, resources=resources
    ).output_for_node("export_plate_op")["key"]
    with zipfile.ZipFile(io.BytesIO(backend.store.get_bytes(summary["key"]))) as zf:
        assert {r["event_id"] for r in json.loads(zf.read("events.json"))} == {r["event_id"] for r in mine}
        assert {r["normalized_plate"] for r in json.loads(zf.read("parquet_rows.json"))} == {PLATE}
        assert zf.read(mine[0]["crop_key"]).startswith(b"\xff\xd8")
        assert json.loads(zf.read("manifest.json"))["plate"] == PLATE

    dry = erase_plate_job.execute_in_process(
        run_config={"ops": {"erase_plate_op": {"config": {"plate": PLATE, "dry_run": True}}}},
        resources=resources,
    )
    assert dry.output_for_node("erase_plate_op")["events_deleted"] == 2
    assert dry.output_for_node("erase_plate_op")["exports_deleted"] == 1
    assert len(backend.events.search(PLATE)) == 2

    result = erase_plate_job.execute_in_process(
        run_config={"ops": {"erase_plate_op": {"config": {"plate": PLATE}}}}, resources=resources
    )
    erased = result.output_for_node("erase_plate_op")
    assert erased["events_deleted"] == 2 and erased["crops_deleted"] == 2
    assert erased["parquet_rows_deleted"] == 2
    assert erased["parquet_files_deleted"] == 1 and erased["parquet_files_rewritten"] == 1
    assert erased["step_outputs_deleted"] == 2
    assert erased["exports_deleted"] == 1

    # No trace in any of the three stores ...
    assert backend.events.search(PLATE) == [] and backend.events.search(PLATE, mode="fuzzy") == []
    assert not any(backend.store.exists(r["crop_key"]) for r in mine)
    assert not backend.store.exists(summary["key"])  # the access request's zip went too
    parquet = read_events(backend.store)
    assert PLATE not in set(parquet["normalized_plate"]) and PLATE not in set(parquet["plate_text"])
    # ... while the other plate in the same video / Parquet file is untouched.
    assert [e["event_id"] for e in backend.events.search(OTHER)] == [others[0]["event_id"]]
    assert backend.store.exists(others[0]["crop_key"])
    assert list(parquet["normalized_plate"]) == [OTHER]
    assert backend.store.exists(other_export)

    audit = [a for a in read_audit(backend.store) if a["plate_hmac_sha256"] == plate_digest(PLATE, SALT)]
    last = sorted(audit, key=lambda a: a["at"])[-1]
    assert last["action"] == "erase" and last["exports_deleted"] == 1
    assert {a["plate_hmac_sha256"] for a in read_audit(backend.store)} == {
        plate_digest(PLATE, SALT),
        plate_digest(OTHER, SALT),
    }
    _no_plate_in_audit(backend)


def test_empty_salt_refused_in_production_warned_otherwise(backend):
    _two_videos(backend)
    result = erase_plate_job.execute_in_process(
        run_config={"ops": {"erase_plate_op": {"config": {"plate": PLATE}}}},
        resources=resources_for(backend, gdpr_salt=""),
        raise_on_error=False,
    )
    if backend.events.dialect == "postgresql":
        assert not result.success
        assert (
            "ANPR_GDPR_SALT is empty"
            in result.failure_data_for_node("erase_plate_op").user_failure_data.description
        )
        assert len(backend.events.search(PLATE)) == 2
    else:
        assert result.success and backend.events.search(PLATE) == []


def test_cli_export_and_erase(local_backend, monkeypatch, capsys, tmp_path):
    _two_videos(local_backend)
    monkeypatch.setenv("ANPR_BUCKET_KIND", "local")
    monkeypatch.setenv("ANPR_BUCKET_DIR", local_backend.bucket_kwargs["bucket_dir"])
    monkeypatch.setenv("ANPR_DATABASE_URL", local_backend.database_url)
    monkeypatch.setenv("ANPR_GDPR_SALT", SALT)
    assert cli.main(["export-plate", PLATE, "--out", str(tmp_path / "x.zip")]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 2
    assert zipfile.is_zipfile(tmp_path / "x.zip")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: --yes is required
    assert cli.main(["erase-plate", PLATE]) == 2
    assert len(local_backend.events.search(PLATE)) == 2
    assert cli.main(["erase-plate", PLATE, "--yes"]) == 0
    assert local_backend.events.search(PLATE) == []


@pytest.mark.parametrize("plate", ["", "--"])
def test_plate_without_characters_is_refused(local_backend, plate):
    from anpr_pipeline.ops.gdpr import GdprError, erase_plate

    with pytest.raises(GdprError):
        erase_plate(plate, local_backend.events, local_backend.store, SALT)


@pytest.mark.parametrize("sidecar_shift_s", [0, 60])
def test_erase_takes_every_crop_of_the_pass_not_only_the_best(backend, sidecar_shift_s):
    """The detector stores a crop per frame; the event row references only the best one.
    A sidecar's started_at (shifted from the key's time) is the origin of the event times
    and names the crop folder."""
    start = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC) + timedelta(seconds=sidecar_shift_s)
    video = "uploads/cam7/20250601T080000Z.mp4"
    prefix = f"crops/cam7/2025-06-01/{start:%Y%m%dT%H%M%SZ}/"
    fps = 15

    def row(plate, n, first_s, best_s, last_s):
        r = event_row(start + timedelta(seconds=best_s), plate, "cam7", video, n)
        r.update(
            first_seen_at=start + timedelta(seconds=first_s),
            last_seen_at=start + timedelta(seconds=last_s),
            crop_key=f"{prefix}{best_s * fps:06d}_0.jpg",
        )
        return r

    mine, other = row(PLATE, 0, 2, 3, 4), row(OTHER, 1, 6, 7, 8)
    store_video(backend, [mine, other])
    my_crops = {f"{prefix}{f:06d}_0.jpg" for f in range(30, 61, 3)} | {f"{prefix}frames/{45:06d}.jpg"}
    other_crops = {f"{prefix}{f:06d}_0.jpg" for f in range(90, 121, 3)}
    for key in my_crops | other_crops:
        backend.store.put_bytes(key, b"\xff\xd8jpeg")
    erased = erase_plate_job.execute_in_process(
        run_config={"ops": {"erase_plate_op": {"config": {"plate": PLATE}}}},
        resources=resources_for(backend, gdpr_salt=SALT),
    ).output_for_node("erase_plate_op")
    assert erased["crops_deleted"] == len(my_crops)
    assert not any(backend.store.exists(k) for k in my_crops)
    assert all(backend.store.exists(k) for k in other_crops | {other["crop_key"]})


def test_an_erasure_is_remembered_for_passes_captured_up_to_it(backend):
    """A re-run drops the erased plate's passes captured before the erasure, keeps later ones
    and every other plate; the list holds the salted hash, never the plate."""
    erased_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    _two_videos(backend)
    erase_plate(PLATE, backend.events, backend.store, SALT, now=erased_at)
    digest = erasure_digest(PLATE, SALT)
    assert backend.events.erasures([digest, erasure_digest(OTHER, SALT)]) == {digest: erased_at}
    assert digest != plate_digest(PLATE, SALT)  # not the audit's hash
    # An erasure recorded again later moves the time on, never back (naive times are UTC).
    backend.events.record_erasure(digest, (erased_at - timedelta(days=30)).replace(tzinfo=None))
    assert backend.events.erasures([digest])[digest] == erased_at

    before = event_row(erased_at - timedelta(seconds=1), PLATE, "cam1", None, 0)
    at = event_row(erased_at, PLATE, "cam1", None, 1)
    after = event_row(erased_at + timedelta(seconds=1), PLATE, "cam1", None, 2)
    other = event_row(erased_at - timedelta(days=1), OTHER, "cam1", None, 3)
    # Another reader's vote for the same pass, one look-alike apart (B/8).
    look_alike = event_row(erased_at - timedelta(days=2), "A8123CD", "cam1", None, 4)
    kept, dropped = split_erased([before, at, after, other, look_alike], backend.events, SALT)
    assert kept == [after, other] and dropped == [before, at, look_alike]
    # Under another salt the erasure is not known (the README says so).
    assert split_erased([before], backend.events, "another-salt") == ([before], [])
    with backend.events.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM erased_plates") for v in row)
    assert PLATE not in stored


def test_a_dry_run_remembers_nothing(local_backend):
    _two_videos(local_backend)
    erase_plate(PLATE, local_backend.events, local_backend.store, SALT, dry_run=True)
    assert local_backend.events.erasures([erasure_digest(PLATE, SALT)]) == {}


def test_cli_builds_the_bucket_with_the_s3_timeout_and_attempt_settings(monkeypatch, tmp_path):
    """`anpr export-plate` / `erase-plate` honour ANPR_S3_CONNECT_TIMEOUT_S / ANPR_S3_MAX_ATTEMPTS
    like the pipeline's bucket does (a real boto3 client; building it contacts nothing)."""
    from anpr_pipeline.ops.gdpr import _stores_from_settings

    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ANPR_DATABASE_URL", f"sqlite:///{tmp_path / 'events.db'}")
    monkeypatch.setenv("ANPR_BUCKET_KIND", "s3")
    monkeypatch.setenv("ANPR_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ANPR_S3_CONNECT_TIMEOUT_S", "1.5")
    monkeypatch.setenv("ANPR_S3_MAX_ATTEMPTS", "2")
    es, store, _salt, _io_dir = _stores_from_settings()
    config = store.client.meta.config
    # botocore stores `max_attempts` retries as total_max_attempts (the first call included).
    assert (config.connect_timeout, config.retries["total_max_attempts"]) == (1.5, 2 + 1)
    es.dispose()


def _cli_env(monkeypatch, backend) -> None:
    monkeypatch.setenv("ANPR_BUCKET_KIND", "local")
    monkeypatch.setenv("ANPR_BUCKET_DIR", backend.bucket_kwargs["bucket_dir"])
    monkeypatch.setenv("ANPR_DATABASE_URL", backend.database_url)
    monkeypatch.setenv("ANPR_GDPR_SALT", SALT)


def _one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in err, err
    return lines[0]


def test_cli_export_checks_out_before_writing_anything(local_backend, monkeypatch, capsys, tmp_path):
    """A bad --out is refused before the export zip and its audit record go to the bucket."""
    _two_videos(local_backend)
    _cli_env(monkeypatch, local_backend)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["export-plate", PLATE, "--out", str(blocker / "x.zip")]) == 2
    assert "is not a folder" in _one_error_line(capsys.readouterr().err, "anpr export-plate: ")
    assert cli.main(["export-plate", PLATE, "--out", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err, "anpr export-plate: ")
    assert not list(local_backend.store.list("exports/")) and not list(local_backend.store.list("audit/"))


@pytest.mark.parametrize("command", [["export-plate", PLATE], ["erase-plate", PLATE, "--dry-run"]])
def test_cli_reports_a_broken_events_db_in_one_line(command, local_backend, monkeypatch, capsys, tmp_path):
    _cli_env(monkeypatch, local_backend)
    not_db = tmp_path / "not.db"
    not_db.write_text("not a database\n")
    monkeypatch.setenv("ANPR_DATABASE_URL", f"sqlite:///{not_db}")
    assert cli.main(command) == 2
    captured = capsys.readouterr()
    assert "file is not a database" in _one_error_line(captured.err, f"anpr {command[0]}: ")
    assert captured.out == ""


@pytest.mark.parametrize("command", [["export-plate", PLATE], ["erase-plate", PLATE, "--dry-run"]])
def test_cli_reports_an_unreachable_bucket_in_one_line(command, local_backend, monkeypatch, capsys):
    from anpr_pipeline_tests.servers import free_port

    _two_videos(local_backend)
    _cli_env(monkeypatch, local_backend)
    monkeypatch.setenv("ANPR_BUCKET_KIND", "s3")
    monkeypatch.setenv("ANPR_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("ANPR_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("ANPR_S3_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    assert cli.main(command) == 2
    line = _one_error_line(capsys.readouterr().err, f"anpr {command[0]}: ")
    assert "unreachable" in line


def test_cli_refusal_without_yes_goes_to_stderr(local_backend, monkeypatch, capsys):
    _two_videos(local_backend)
    _cli_env(monkeypatch, local_backend)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["erase-plate", PLATE]) == 2
    assert "refusing without --yes" in capsys.readouterr().err
