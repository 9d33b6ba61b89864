"""`anpr demo`'s arguments (the demo itself runs in the pipeline and daemon tests)."""

from __future__ import annotations

import pytest

from anpr_pipeline.cli import main as anpr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--videos", "0"], "argument --videos: '0': expected a positive integer"),
        (["--seconds", "0"], "--seconds 0.0: expected 1 to 600"),
        (["--width", "100"], "--width 100 --height 720: expected at least 320 x 240"),
        (["--report", "."], "--report .: is a directory"),
    ],
)
def test_demo_rejects_bad_arguments_before_any_work(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.setenv("ANPR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exit_info:
        anpr(["demo", *flags])
    assert exit_info.value.code == 2
    assert f"anpr demo: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()  # failed before the Dagster instance was made
