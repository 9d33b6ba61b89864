from dagster import AssetKey, Definitions

from anpr_pipeline.definitions import build_definitions, defs


def test_definitions_load_and_validate():
    Definitions.validate_loadable(defs)


def test_definitions_contain_the_pipeline():
    repo = defs.get_repository_def()
    asset_keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {"video", "frames", "plate_detections", "plate_reads", "plate_events"} <= asset_keys
    assert "process_video" in {job.name for job in repo.get_all_jobs()}
    assert {"upload_sensor", "watchlist_sensor", "stale_daily_stats_sensor"} <= {
        s.name for s in repo.sensor_defs
    }
    checks = {key.name for key in repo.asset_graph.asset_check_keys}
    assert {"decodable_and_non_empty", "low_confidence_share", "unique_ids_and_timestamps_in_span"} <= checks
    assert repo.asset_graph.get(AssetKey("video")).partitions_def.name == "videos"


def test_s3_settings_switch_resources_not_code(monkeypatch):
    monkeypatch.setenv("ANPR_BUCKET_KIND", "s3")
    monkeypatch.setenv("ANPR_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ANPR_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    from anpr_pipeline.settings import load_settings

    prod = build_definitions(load_settings())
    assert prod.resources["bucket"].kind == "s3"
    assert type(prod.resources["io_manager"]).__name__ == "S3PickleIOManager"
    Definitions.validate_loadable(prod)


def test_dg_cli_loads_the_project_from_tool_dg_config():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    dg = shutil.which("dg") or str(Path(sys.executable).with_name("dg"))
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([dg, "check", "defs"], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr
