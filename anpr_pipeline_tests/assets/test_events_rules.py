"""Which tracks become events, and what an erased pass leaves (no Dagster run needed)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from anpr_pipeline.assets.events import delete_erased_crops, event_tracks, keep_track
from anpr_pipeline.resources.object_store import LocalObjectStore
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.vision.tracker import FrameRead, track_reads
from anpr_pipeline.vision.types import Box, PlateRead


def _track(text: str, confidences: list[float]):
    reads = [
        FrameRead(
            frame_index=i,
            pts_s=i * 0.2,
            box=Box(100 + 5 * i, 200, 120, 40),
            read=PlateRead(text=text, normalized=text, confidence=c, char_confidences=(c,) * len(text)),
            detection_score=0.9,
        )
        for i, c in enumerate(confidences)
    ]
    (track,) = track_reads(reads)
    return track


def test_single_frame_reads_need_high_confidence():
    config = PipelineConfig()
    assert keep_track(_track("ABC1234", [0.95]), config)
    assert not keep_track(_track("ABC1234", [0.55]), config)
    assert keep_track(_track("ABC1234", [0.55, 0.6, 0.58]), config)


def test_short_or_unsure_tracks_are_dropped():
    config = PipelineConfig()
    assert not keep_track(_track("AB1", [0.99, 0.99]), config)
    assert not keep_track(_track("ABC1234", [0.1, 0.1, 0.1]), config)


def test_single_frame_reads_must_fit_a_plate_format():
    config = PipelineConfig()
    # Confident but no format fits: frame text ("RTHCNR0IN" from NORTH CAROLINA) or a fragment.
    for text in ("RTHCNR0IN", "7743"):
        lone = _track(text, [0.99])
        assert lone.region is None and not keep_track(lone, config)
        assert keep_track(lone, config.model_copy(update={"single_frame_needs_format": False}))
        assert keep_track(_track(text, [0.9, 0.9]), config)  # seen twice: kept (vanity plates)
    assert _track("ABC1234", [0.95]).region is not None


def test_required_format_drops_every_track_no_format_of_the_video_regions_fits():
    strict = PipelineConfig(require_plate_format=True)
    vanity, gb_plate = _track("XSTASY", [0.9, 0.9, 0.9]), _track("AB12CDE", [0.9, 0.9])
    assert keep_track(vanity, PipelineConfig()) and not keep_track(vanity, strict)
    assert keep_track(gb_plate, strict) and keep_track(gb_plate, strict, ["eu"])
    assert not keep_track(gb_plate, strict, ["br"])  # a camera in Brazil: no Brazilian format
    assert keep_track(_track("ABC1D23", [0.9, 0.9]), strict, ["br"])


def _reads(
    text: str, frames: range, box: tuple[int, int, int, int], confidence: float = 0.9
) -> list[FrameRead]:
    return [
        FrameRead(
            frame_index=f,
            pts_s=f * 0.2,
            box=Box(*box),
            read=PlateRead(
                text=text, normalized=text, confidence=confidence, char_confidences=(confidence,) * len(text)
            ),
            detection_score=0.9,
        )
        for f in frames
    ]


def test_events_leave_out_plates_cut_by_the_frame_edge_and_text_inside_other_plates():
    config = PipelineConfig()
    plate = _reads("ABC1234", range(6), (500, 300, 160, 50))
    state = _reads("IOWA", range(2, 5), (520, 290, 80, 20), confidence=0.7)  # on the plate's header
    edge = _reads("XYZ789", range(3), (1180, 660, 100, 60))  # right and bottom edges of 1280x720
    tracks = track_reads(plate + state + edge)
    assert {t.text for t in tracks} == {"ABC1234", "IOWA", "XYZ789"}
    assert [t.text for t in event_tracks(tracks, config, (1280, 720))] == ["ABC1234"]
    everything = config.model_copy(update={"drop_edge_tracks": False, "drop_nested_tracks": False})
    assert {t.text for t in event_tracks(tracks, everything, (1280, 720))} == {"ABC1234", "IOWA", "XYZ789"}
    # The same plate in a larger frame is not at its edge.
    assert {t.text for t in event_tracks(tracks, config, (1920, 1080))} == {"ABC1234", "XYZ789"}


def test_events_leave_out_a_single_frame_glimpse_of_a_tracked_plate():
    # A far misread the sample before the plate is tracked, where the plate's motion puts it.
    glimpse = _reads("ZZ112CN", range(1), (800, 56, 150, 36), confidence=0.95)
    plate = [
        replace(r, box=Box(800, 130 + 74 * i, 150, 36))
        for i, r in enumerate(_reads("ZZ772GN", range(1, 8), (0, 0, 0, 0)))
    ]
    tracks = track_reads(glimpse + plate)
    assert [t.text for t in tracks] == ["ZZ112CN", "ZZ772GN"]
    assert keep_track(tracks[0], PipelineConfig())  # sure and formatted: the single-frame rule keeps it
    assert [t.text for t in event_tracks(tracks, PipelineConfig(), (1280, 720))] == ["ZZ772GN"]
    keep_all = PipelineConfig(drop_glimpse_tracks=False)
    assert [t.text for t in event_tracks(tracks, keep_all, (1280, 720))] == ["ZZ112CN", "ZZ772GN"]


@pytest.mark.parametrize("probe_fps", [30.0, 0.0, None])
def test_an_erased_pass_loses_its_crops_and_no_other_pass_does(tmp_path, probe_fps):
    """Crops are timed by their reads (the stream runs at 25 fps; a sidecar's fps hint of 30,
    or none, must not move the erased pass's window onto another pass's crops)."""
    store = LocalObjectStore(tmp_path / "bucket")
    started = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    prefix = "crops/cam1/2026-11-20/20261120T080000Z/"
    video = {
        "camera_id": "cam1",
        "timestamp": "20261120T080000Z",
        "started_at": started.isoformat(),
        "fps": probe_fps,
    }
    frames = {"erased": range(25, 76, 5), "kept": range(100, 151, 5)}  # 1-3 s and 4-6 s at 25 fps
    reads = pd.DataFrame(
        [{"crop_key": f"{prefix}{f:06d}_0.jpg", "pts_s": f / 25} for fs in frames.values() for f in fs]
    )
    for key in reads["crop_key"]:
        store.put_bytes(key, b"\xff\xd8jpeg")
    store.put_bytes(f"{prefix}frames/000050.jpg", b"\xff\xd8jpeg")  # a kept frame of the erased pass

    def row(plate: str, fs: range) -> dict:
        return {
            "normalized_plate": plate,
            "first_seen_at": started + timedelta(seconds=fs[0] / 25),
            "last_seen_at": started + timedelta(seconds=fs[-1] / 25),
            "captured_at": started + timedelta(seconds=fs[len(fs) // 2] / 25),
            "crop_key": f"{prefix}{fs[len(fs) // 2]:06d}_0.jpg",
        }

    erased, kept = row("AB123CD", frames["erased"]), row("ZZ999ZZ", frames["kept"])
    deleted = delete_erased_crops(store, video, reads, [kept], [erased])
    left = {info.key for info in store.list(prefix)}
    assert left == {f"{prefix}{f:06d}_0.jpg" for f in frames["kept"]}
    assert deleted == len(frames["erased"]) + 1
