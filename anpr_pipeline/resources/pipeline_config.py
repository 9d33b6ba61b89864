"""Processing knobs shared by the per-video assets, as one resource built from settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from anpr_pipeline.settings import Settings
from anpr_pipeline.vision.plates import MIN_PLATE_CHARS, MIN_READ_CONFIDENCE


class PipelineConfig(ConfigurableResource):
    """Sampling, crop and event rules. Change them with ANPR_* env vars (or per run in the launchpad)."""

    sample_fps: float = 5.0
    keep_frames: bool = False
    crop_padding: float = 0.08
    min_read_confidence: float = MIN_READ_CONFIDENCE
    low_confidence_share_max: float = 0.5
    min_plate_chars: int = MIN_PLATE_CHARS
    # A track seen in one sampled frame only becomes an event at this confidence or above.
    single_frame_min_confidence: float = 0.8
    # ... and must read as some plate format: a lone read that fits none is most often frame
    # or car text (a state name, a slogan) or a fragment of a plate read in full elsewhere.
    single_frame_needs_format: bool = True
    # Every event must fit a plate format of the video's regions (ANPR_PLATE_REGIONS or the
    # upload's region): off by default, as US vanity and specialty plates follow no list
    # (30 % of real_train's US crops fit none); on suits a country whose plates all follow
    # its formats (all of real_train's Brazilian crops do), where it drops car and shop text.
    require_plate_format: bool = False
    # A track whose every box touches the frame edge is a plate never seen whole (entering or
    # leaving the picture): its reads are of part of it. Turn off for a camera framed so
    # tightly that plates always touch the edge.
    drop_edge_tracks: bool = True
    # A track whose boxes lie inside a stronger track's boxes in the same frames is text on
    # or around that plate (state name, slogan, dealer line) read as a plate of its own.
    drop_nested_tracks: bool = True
    # A single-frame track just before or after another track, where that track's motion
    # puts the plate, is a far or partial misread of that plate
    # (vision/tracker.glimpse_of_another).
    drop_glimpse_tracks: bool = True
    # Dagster's event log cannot be erased per plate (GDPR erase_plate), so run metadata
    # shows plates masked (AB***1) unless the operator opts in.
    show_plates_in_ui: bool = False
    # A sampled frame whose largest 32x32-block mean grey-level change (0..255) against the
    # previous sampled frame is below this is static: it skips detection and carries the
    # previous frame's detections (and reads) forward, so a static street costs decode time
    # only. Sensor/compression noise measures ~1-1.5, a moving car tens to hundreds
    # (vision/video_pipeline.StaticGate; `anpr bench`); 0 disables the gate.
    static_frame_threshold: float = 4.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        return cls(
            sample_fps=settings.sample_fps,
            keep_frames=settings.keep_frames,
            min_read_confidence=settings.min_read_confidence,
            low_confidence_share_max=settings.low_confidence_share_max,
            require_plate_format=settings.require_plate_format,
            show_plates_in_ui=settings.show_plates_in_ui,
        )
