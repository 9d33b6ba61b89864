from datetime import UTC, datetime

import pytest

from anpr_pipeline.uploads import (
    UploadNameError,
    apply_sidecar,
    is_sidecar_key,
    parse_partition_key,
    parse_upload_key,
    sibling_upload_keys,
    video_key_for,
)


def test_parse_upload_key_gives_camera_time_and_partition():
    upload = parse_upload_key("uploads/cam-01/20261128T101500Z.mp4")
    assert upload.camera_id == "cam-01"
    assert upload.started_at == datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    assert upload.partition_key == "cam-01/20261128T101500Z"
    assert upload.sidecar_key == "uploads/cam-01/20261128T101500Z.json"
    assert parse_partition_key(upload.partition_key) == ("cam-01", upload.started_at)


@pytest.mark.parametrize(
    "key, fragment",
    [
        ("uploads/cam-01/2026-11-28.mp4", "does not match"),
        ("uploads/cam-01/20261128T101500Z.txt", "extension .txt"),
        ("uploads/20261128T101500Z.mp4", "does not match"),
        ("videos/cam-01/20261128T101500Z.mp4", "does not match"),
        ("uploads/cam-01/20261399T101500Z.mp4", "not a valid UTC time"),
        ("uploads/cam 01/20261128T101500Z.mp4", "does not match"),
        ("uploads/cam-01/20261128T101500Z.mp4\n", "does not match"),  # `$` would let it through
    ],
)
def test_bad_keys_say_what_is_wrong(key, fragment):
    with pytest.raises(UploadNameError, match=fragment):
        parse_upload_key(key)


def test_sidecar_overrides_and_rejects_unknown_fields():
    upload = parse_upload_key("uploads/cam-01/20261128T101500Z.mkv")
    assert is_sidecar_key(upload.sidecar_key)
    changed = apply_sidecar(
        upload, b'{"camera_id": "gate-7", "started_at": "2026-11-28T10:15:02Z", "fps": 12.5, "region": "EU"}'
    )
    assert changed.camera_id == "gate-7"
    assert changed.started_at == datetime(2026, 11, 28, 10, 15, 2, tzinfo=UTC)
    assert changed.fps_hint == 12.5 and changed.region == "eu"
    assert changed.partition_key == "cam-01/20261128T101500Z"  # stable whatever the sidecar says
    with pytest.raises(UploadNameError, match="unknown fields"):
        apply_sidecar(upload, b'{"camera": "x"}')
    with pytest.raises(UploadNameError, match="not valid JSON"):
        apply_sidecar(upload, b"{nope")


def test_partition_and_sidecar_keys_do_not_end_in_a_newline():
    with pytest.raises(UploadNameError):
        parse_partition_key("cam-01/20261128T101500Z\n")
    assert not is_sidecar_key("uploads/cam-01/20261128T101500Z.json\n")


@pytest.mark.parametrize(
    "sidecar, fragment",
    [
        (b'{"region": 12}', "region 12"),
        (b'{"region": ["br"]}', "region"),
        (b'{"region": "b r"}', "region"),
        (b'{"fps": true}', "fps True"),
        (b'{"started_at": 20261128}', "started_at 20261128"),
    ],
)
def test_sidecar_values_of_the_wrong_type_are_errors(sidecar, fragment):
    upload = parse_upload_key("uploads/cam-01/20261128T101500Z.mp4")
    with pytest.raises(UploadNameError, match=fragment):
        apply_sidecar(upload, sidecar)


def test_sidecar_region_is_a_trimmed_label():
    upload = parse_upload_key("uploads/cam-01/20261128T101500Z.mp4")
    assert apply_sidecar(upload, b'{"region": " BR "}').region == "br"
    assert apply_sidecar(upload, b'{"region": "uk"}').region == "uk"  # a label, not a plate format
    assert apply_sidecar(upload, b'{"region": null}').region is None


def test_video_key_round_trips():
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_upload_key(video_key_for("cam-9", started)).started_at == started


def test_sibling_upload_keys_are_the_other_uploads_a_partition_can_have():
    siblings = sibling_upload_keys("uploads/cam-01/20261128T101500Z.mp4")
    assert (
        "uploads/cam-01/20261128T101500Z.mov" in siblings
        and "uploads/cam-01/20261128T101500Z.MP4" in siblings
    )
    assert "uploads/cam-01/20261128T101500Z.mp4" not in siblings and len(siblings) == 7
