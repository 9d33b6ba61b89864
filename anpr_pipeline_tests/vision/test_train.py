"""`anpr train`'s dispatcher (the trainers have their own tests)."""

from __future__ import annotations

from anpr_pipeline.cli import main as anpr


def test_an_unknown_model_is_named_with_the_usage(capsys):
    assert anpr(["train", "reder"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anpr train: unknown model 'reder'\nusage: anpr train {reader,detector}")


def test_help_is_not_an_error(capsys):
    assert anpr(["train", "--help"]) == 0
    assert "unknown" not in capsys.readouterr().out
