"""The operations jobs run through Dagster (execute_in_process, real resources) on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetMaterialization, instance_for_test

from anpr_pipeline.ops.jobs import db_maintenance_job, retention_sweep_job
from anpr_pipeline.ops.resources import OpsSettings
from anpr_pipeline.resources.event_store import EventStoreResource
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline_tests.ops.conftest import event_row, store_video


def resources_for(backend, **ops) -> dict:
    return {
        "bucket": ObjectStoreResource(**backend.bucket_kwargs),
        "events_db": EventStoreResource(database_url=backend.database_url),
        "ops_settings": OpsSettings(**ops),
    }


def mark_processed(instance, *video_keys: str) -> None:
    """Record plate_events for these uploads' partitions, as a finished process_video run does."""
    for key in video_keys:
        partition = key.split("/", 1)[1].rsplit(".", 1)[0]
        instance.report_runless_asset_event(AssetMaterialization("plate_events", partition=partition))


def materialize_step_output(backend, instance, partition_key: str, io_dir: str) -> None:
    """Store a per-video step output through the real IO manager of this backend's layout."""
    from dagster import FilesystemIOManager, asset, materialize

    from anpr_pipeline.partitions import videos_partitions

    @asset(name="plate_reads", partitions_def=videos_partitions)
    def plate_reads():
        return [{"normalized_plate": "OLD111"}]

    if not instance.has_dynamic_partition(videos_partitions.name, partition_key):
        instance.add_dynamic_partitions(videos_partitions.name, [partition_key])
    if backend.bucket_kwargs["kind"] == "s3":
        from dagster_aws.s3 import S3PickleIOManager, S3Resource

        io_manager = S3PickleIOManager(
            s3_resource=S3Resource(endpoint_url=backend.bucket_kwargs["s3_endpoint_url"]),
            s3_bucket=backend.bucket_kwargs["s3_bucket"],
            s3_prefix="dagster-io",
        )
    else:
        io_manager = FilesystemIOManager(base_dir=io_dir)
    assert materialize(
        [plate_reads], partition_key=partition_key, instance=instance, resources={"io_manager": io_manager}
    ).success


def _step_metadata(result, node: str) -> dict:
    [event] = [e for e in result.events_for_node(node) if e.event_type_value == "STEP_OUTPUT"]
    return event.step_output_data.metadata


def test_retention_job_deletes_old_video_its_partition_and_keeps_new(backend):
    now = datetime.now(UTC)
    old = store_video(backend, [event_row(now - timedelta(days=40), "OLD111", camera="camA")])
    new = store_video(backend, [event_row(now - timedelta(days=2), "NEW222", camera="camB")])
    # Recorded as long ago as `old`, but uploaded just now (camera back from an outage), still queued.
    late = "uploads/camL/" + (now - timedelta(days=40)).strftime("%Y%m%dT%H%M%SZ") + ".mp4"
    backend.store.put_bytes(late, b"\x00late")
    old_pk, new_pk, late_pk = (k.split("/", 1)[1].rsplit(".", 1)[0] for k in (old, new, late))
    io_dir = str(backend.store.uri("")) + "-dagster-io" if backend.bucket_kwargs["kind"] == "local" else ""
    resources = resources_for(
        backend,
        retention_videos_days=30,
        retention_crops_days=30,
        retention_events_days=30,
        retention_parquet_days=30,
        io_manager_dir=io_dir,
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("videos", [old_pk, new_pk, late_pk])
        mark_processed(instance, old, new)
        for pk in (old_pk, new_pk):
            materialize_step_output(backend, instance, pk, io_dir)
        dry = retention_sweep_job.execute_in_process(
            run_config={"ops": {"retention_sweep_op": {"config": {"dry_run": True}}}},
            instance=instance,
            resources=resources,
        )
        summary = dry.output_for_node("retention_sweep_op")
        assert (
            summary["videos_expired"] == 1
            and summary["crops_expired"] == 1
            and summary["events_expired"] == 1
            and summary["videos_unprocessed_kept"] == 1
        )
        assert backend.store.exists(old) and set(instance.get_dynamic_partitions("videos")) == {
            old_pk,
            new_pk,
            late_pk,
        }

        result = retention_sweep_job.execute_in_process(instance=instance, resources=resources)
        assert result.success
        summary = result.output_for_node("retention_sweep_op")
        metadata = _step_metadata(result, "retention_sweep_op")
        assert metadata["videos_deleted"].value == 1 and metadata["videos_bytes"].value == len(b"\x00video")
        assert summary["video_partitions_deleted"] == 1
        assert summary["step_outputs_deleted"] == 1  # the old video's pickled reads, not the new one's
        if io_dir:
            from pathlib import Path

            assert [p.relative_to(io_dir).as_posix() for p in Path(io_dir).rglob("*") if p.is_file()] == [
                f"plate_reads/{new_pk}"
            ]
        else:
            assert [o.key for o in backend.store.list("dagster-io/")] == [f"dagster-io/plate_reads/{new_pk}"]
        assert set(instance.get_dynamic_partitions("videos")) == {new_pk, late_pk}
    assert not backend.store.exists(old) and backend.store.exists(new) and backend.store.exists(late)
    assert [o.key for o in backend.store.list("crops/")] == [
        event_row(now - timedelta(days=2), camera="camB")["crop_key"]
    ]
    assert [e["normalized_plate"] for e in backend.events.search("NEW222")] == ["NEW222"]
    assert backend.events.search("OLD111") == []
    assert all("camera_id=camB" in o.key for o in backend.store.list("parquet/"))


def test_db_maintenance_job_vacuums_and_creates_partitions(backend):
    now = datetime.now(UTC)
    rows = [
        event_row(now - timedelta(minutes=i), video_key="uploads/cam1/20250101T000000Z.mp4", n=i)
        for i in range(30)
    ]
    backend.events.replace_video_events(rows[0]["video_key"], rows)
    backend.events.replace_video_events(rows[0]["video_key"], rows[:5])  # 25 dead rows
    result = db_maintenance_job.execute_in_process(resources=resources_for(backend))
    assert result.success
    summary = result.output_for_node("db_maintenance_op")
    assert summary["rows"] == 5
    if backend.events.dialect == "postgresql":
        month = now.date().replace(day=1)
        nxt = [(month.year + (month.month - 1 + i) // 12, (month.month - 1 + i) % 12 + 1) for i in range(3)]
        assert {f"events_y{y:04d}m{m:02d}" for y, m in nxt} <= set(summary["partitions"])
        assert summary["dead_tuples_after"] == 0
        assert summary["table_bytes_after"] > 0 and summary["index_bytes_after"] > 0
    else:
        assert summary["dead_tuples_after"] == 0  # free pages after VACUUM
        assert summary["table_bytes_after"] <= summary["table_bytes_before"]


def test_cli_runs_ops_jobs_and_records_them(local_backend, monkeypatch, tmp_path, capsys):
    import json

    from dagster import DagsterInstance

    from anpr_pipeline import cli

    now = datetime.now(UTC)
    old = store_video(local_backend, [event_row(now - timedelta(days=40), "OLD111", camera="camA")])
    monkeypatch.setenv("ANPR_BUCKET_KIND", "local")
    monkeypatch.setenv("ANPR_BUCKET_DIR", local_backend.bucket_kwargs["bucket_dir"])
    monkeypatch.setenv("ANPR_DATABASE_URL", local_backend.database_url)
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.get() as instance:
        mark_processed(instance, old)  # the CLI reads what was processed from $DAGSTER_HOME
    assert cli.main(["ops", "retention_sweep", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["videos_expired"] == 1 and local_backend.store.exists(old)
    assert cli.main(["ops", "retention_sweep"]) == 0
    assert not local_backend.store.exists(old)
    assert cli.main(["ops", "restore_test"]) == 1  # no backup yet: fails loudly
    assert "no complete backup" in capsys.readouterr().err
    with DagsterInstance.get() as instance:
        assert sorted(r.job_name for r in instance.get_runs()) == [
            "restore_test",
            "retention_sweep",
            "retention_sweep",
        ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export_plate"], "export_plate needs --plate"),
        (["backup", "--dry-run"], "backup does not take --dry-run (it takes: keep)"),
        (["restore_test", "--set", "keep=1"], "restore_test does not take keep (it takes: no options)"),
        (["retention_sweep", "--set", "dry_run"], "--set 'dry_run': expected KEY=VALUE"),
        (["retention_sweep", "--set", "now=garbage"], "now='garbage' is not an ISO time"),
    ],
)
def test_cli_rejects_flags_a_job_does_not_take_before_running(argv, message, tmp_path, monkeypatch, capsys):
    from anpr_pipeline import cli

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # nothing may be recorded there
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ops", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_failure_names_the_cause_in_one_line(tmp_path, monkeypatch, capsys):
    from anpr_pipeline import cli

    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ANPR_BUCKET_KIND", "s3")
    monkeypatch.setenv("ANPR_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ANPR_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("ANPR_S3_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["ops", "retention_sweep", "--dry-run"]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("anpr ops")]
    assert "FAILED: " in line and "127.0.0.1:1" in line and "DagsterExecutionStepExecutionError" not in line


def test_cli_failure_names_the_op_error_not_the_os_error_under_it(tmp_path, monkeypatch, capsys):
    from anpr_pipeline import cli

    (tmp_path / "afile").write_text("a file where the bucket folder should be")
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ANPR_BUCKET_DIR", str(tmp_path / "afile"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert cli.main(["ops", "retention_sweep", "--dry-run"]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("anpr ops")]
    assert f"cannot use {tmp_path / 'afile'} as the bucket folder (ANPR_BUCKET_DIR)" in line
