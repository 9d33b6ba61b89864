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
