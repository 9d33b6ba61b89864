import pytest

from anpr_pipeline.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_setup(monkeypatch, tmp_path):
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    for name in ("ANPR_BUCKET_KIND", "ANPR_DATABASE_URL", "ANPR_BUCKET_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.bucket_kind == "local"
    assert settings.bucket_dir == str(tmp_path / "bucket")
    assert settings.database_url == f"sqlite:///{tmp_path / 'events.db'}"


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("ANPR_SAMPLE_FPS", "fast", "ANPR_SAMPLE_FPS='fast' is not a number"),
        ("ANPR_SAMPLE_FPS", "0", "ANPR_SAMPLE_FPS"),
        ("ANPR_BUCKET_KIND", "ftp", "ANPR_BUCKET_KIND"),
        ("ANPR_DEVICE", "tpu", "ANPR_DEVICE"),
        ("ANPR_KEEP_FRAMES", "maybe", "ANPR_KEEP_FRAMES"),
        ("ANPR_RETENTION_VIDEOS_DAYS", "-1", "ANPR_RETENTION_VIDEOS_DAYS"),
        ("ANPR_DATABASE_URL", "mysql://x/y", "ANPR_DATABASE_URL"),
        ("ANPR_PLATE_REGIONS", "br,mars", "unknown region.s. mars"),
        ("ANPR_DETECTOR", "cascade-typo", "ANPR_DETECTOR: unknown detector 'cascade-typo'"),
        ("ANPR_READER", "bogus", "ANPR_READER: unknown reader 'bogus'"),
        ("ANPR_READER", "crnn:", "ANPR_READER: .*name the weight files"),
        ("ANPR_MIN_READ_CONFIDENCE", "7", "ANPR_MIN_READ_CONFIDENCE: 7.0: expected a number from 0 to 1"),
        ("ANPR_S3_ENDPOINT_URL", "localhost:9000", "ANPR_S3_ENDPOINT_URL='localhost:9000': expected http"),
        ("ANPR_S3_ENDPOINT_URL", "http://", "ANPR_S3_ENDPOINT_URL"),
        ("ANPR_ALERT_WEBHOOK_URL", "hooks.example/x", "ANPR_ALERT_WEBHOOK_URL"),
        ("ANPR_S3_CONNECT_TIMEOUT_S", "0", "ANPR_S3_CONNECT_TIMEOUT_S=0.0: expected seconds > 0"),
        ("ANPR_S3_CONNECT_TIMEOUT_S", "nan", "ANPR_S3_CONNECT_TIMEOUT_S"),
        ("ANPR_S3_MAX_ATTEMPTS", "-1", "ANPR_S3_MAX_ATTEMPTS=-1: expected retries >= 0"),
        ("ANPR_TORCH_THREADS", "-1", "ANPR_TORCH_THREADS=-1: expected 0 or more"),
        ("ANPR_BACKUPS_KEEP", "-3", "ANPR_BACKUPS_KEEP=-3: expected 0 or more"),
        ("ANPR_ARCHIVE_EVENTS_AFTER_DAYS", "-1", "ANPR_ARCHIVE_EVENTS_AFTER_DAYS"),
        ("ANPR_LOW_CONFIDENCE_SHARE_MAX", "7", "ANPR_LOW_CONFIDENCE_SHARE_MAX=7.0: expected a share"),
        ("ANPR_STALL_MINUTES", "0", "ANPR_STALL_MINUTES=0: expected 1 or more"),
        ("ANPR_BACKLOG_WARN", "600", "ANPR_BACKLOG_WARN=600, ANPR_BACKLOG_CRITICAL=500: expected"),
        ("ANPR_S3_ARCHIVE_STORAGE_CLASS", "GLACIER-IR", "ANPR_S3_ARCHIVE_STORAGE_CLASS='GLACIER-IR'"),
        ("ANPR_MIN_READ_CONFIDENCE", "-0.1", "ANPR_MIN_READ_CONFIDENCE"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings()


def test_plate_regions_reach_the_reader(monkeypatch, tmp_path):
    from anpr_pipeline.resources.models import ModelsResource
    from anpr_pipeline.settings import PLATE_REGIONS
    from anpr_pipeline.vision.plates import FORMATS

    assert set(PLATE_REGIONS) == set(FORMATS)  # settings validate against the formats we have
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ANPR_PLATE_REGIONS", " BR , eu")
    models = ModelsResource.from_settings(load_settings())
    assert models.get_reader().regions == ["br", "eu"]


def test_required_plate_format_is_off_by_default_and_reaches_the_event_rules(monkeypatch, tmp_path):
    from anpr_pipeline.resources.pipeline_config import PipelineConfig

    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    assert PipelineConfig.from_settings(load_settings()).require_plate_format is False
    monkeypatch.setenv("ANPR_REQUIRE_PLATE_FORMAT", "yes")
    assert PipelineConfig.from_settings(load_settings()).require_plate_format is True


def test_text_row_reread_is_on_by_default_and_can_be_turned_off(monkeypatch, tmp_path):
    from anpr_pipeline.resources.models import ModelsResource

    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ANPR_READER", "crnn")
    assert ModelsResource.from_settings(load_settings()).get_reader().text_row is True
    monkeypatch.setenv("ANPR_READER_TEXT_ROW", "false")
    reader = ModelsResource.from_settings(load_settings()).get_reader()
    assert reader.text_row is False and "textrow" not in reader.version


def test_cli_reports_a_bad_setting_without_a_traceback(monkeypatch, tmp_path, capsys):
    from anpr_pipeline.cli import main as anpr

    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ANPR_PLATE_REGIONS", "br,atlantis")
    assert anpr(["demo", "--videos", "1"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "ANPR_PLATE_REGIONS" in err and "atlantis" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "name, value",
    [
        ("ANPR_DETECTOR", "classical"),
        ("ANPR_DETECTOR", "cascade-hq"),
        ("ANPR_READER", "easyocr"),
        ("ANPR_READER", "crnn:/models/a.pt,/models/b.pt"),
        ("ANPR_MIN_READ_CONFIDENCE", "0"),
        ("ANPR_MIN_READ_CONFIDENCE", "1"),
        ("ANPR_S3_ENDPOINT_URL", "http://127.0.0.1:8333"),
        ("ANPR_S3_ENDPOINT_URL", "https://s3.eu-central-1.amazonaws.com"),
        ("ANPR_S3_MAX_ATTEMPTS", "0"),
    ],
)
def test_good_model_settings_load(monkeypatch, tmp_path, name, value):
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(name, value)
    load_settings()


def test_model_names_are_checked_without_importing_torch(tmp_path):
    """Settings load in the Dagster code location and every CLI: checking the names must not
    pay for torch (nor the vision code that imports it)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from anpr_pipeline.settings import SettingsError, load_settings\n"
        "try:\n"
        "    load_settings()\n"
        "except SettingsError as exc:\n"
        "    print(exc)\n"
        "print('torch' in sys.modules)\n"
    )
    env = dict(os.environ, ANPR_DATA_DIR=str(tmp_path), ANPR_READER="bogus")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "ANPR_READER: unknown reader 'bogus': expected one of default, crnn, crnn:PATH[,PATH], easyocr",
        "False",
    ]


def test_settings_name_lists_match_what_the_vision_code_builds():
    """settings keeps torch-free copies of the detector and reader names; they must be the
    names build_detector / build_reader accept, or a valid setting would be refused (or a
    bad one let through)."""
    from anpr_pipeline import settings
    from anpr_pipeline.vision import detector
    from anpr_pipeline.vision.reader import build_reader

    assert settings.DETECTORS == ("default", *detector.DETECTORS)
    with pytest.raises(ValueError, match="unknown detector") as detector_error:
        detector.build_detector("bogus", device="cpu")
    assert str(("default", *detector.DETECTORS)) in str(detector_error.value)
    with pytest.raises(ValueError, match="unknown reader") as reader_error:
        build_reader("bogus", device="cpu")
    assert str(reader_error.value).endswith("choose from: " + ", ".join(settings.READERS))
    # A crnn:PATHS name settings accept is a reader name to build_reader too (the files decide).
    with pytest.raises(Exception) as missing:  # noqa: PT011 - whatever a missing file raises
        build_reader("crnn:/no/such/reader.pt", device="cpu")
    assert "unknown reader" not in str(missing.value)
