"""Tracker: per-frame reads -> one track per vehicle pass, voted text (pure code)."""

from __future__ import annotations

import random

import pytest

from anpr_pipeline.vision.plates import normalize
from anpr_pipeline.vision.tracker import (
    FrameRead,
    Track,
    inside_another,
    seen_only_at_edge,
    track_reads,
    vote,
)
from anpr_pipeline.vision.types import Box, PlateRead

FPS = 10.0


def fr(
    frame: int,
    text: str,
    box: tuple[int, int, int, int],
    conf: float = 0.9,
    det: float = 0.9,
    char_confs: tuple[float, ...] | None = None,
    region: str | None = None,
) -> FrameRead:
    norm = normalize(text)
    read = PlateRead(
        text=text,
        normalized=norm,
        confidence=conf,
        char_confidences=char_confs if char_confs is not None else (conf,) * len(norm),
        region=region,
    )
    return FrameRead(
        frame_index=frame,
        pts_s=frame / FPS,
        box=Box(*box),
        read=read,
        detection_score=det,
        crop_key=f"crops/{frame}_{box[0]}.jpg",
    )


def car(
    text: str,
    frames: range,
    x0: int,
    y: int,
    dx: int,
    noise: dict[int, tuple[str, float]] | None = None,
    dropped: frozenset[int] = frozenset(),
) -> list[FrameRead]:
    """A plate box 100x30 moving dx px per frame; noise = {frame: (misread text, conf)}."""
    out = []
    for f in frames:
        if f in dropped:
            continue
        shown, conf = (noise or {}).get(f, (text, 0.9))
        out.append(fr(f, shown, (x0 + dx * (f - frames.start), y, 100, 30), conf=conf))
    return out


def summary(tracks: list[Track]) -> list[tuple[int, str, int, float, float]]:
    return [
        (t.track_id, t.text, t.frames_seen, round(t.first_pts_s, 2), round(t.last_pts_s, 2)) for t in tracks
    ]


def test_two_cars_noisy_reads_and_a_dropped_frame() -> None:
    a = car(
        "ABO-1234",
        range(0, 10),
        x0=100,
        y=400,
        dx=20,
        noise={3: ("AB01234", 0.6), 7: ("ABO1Z34", 0.5)},  # O/0 and 2/Z swaps
        dropped=frozenset({6}),  # detector missed frame 6
    )
    b = car("7XYZ123", range(2, 12), x0=900, y=200, dx=-25, noise={5: ("7XYZ1Z3", 0.4)})
    reads = a + b
    tracks = track_reads(reads)
    assert summary(tracks) == [
        (0, "ABO1234", 9, 0.0, 0.9),
        (1, "7XYZ123", 10, 0.2, 1.1),
    ]
    assert tracks[0].region == "us" and tracks[1].region == "us"
    assert {r.read.normalized for r in tracks[0].reads} == {"ABO1234", "AB01234", "ABO1Z34"}
    # Same result whatever the input order.
    shuffled = reads[:]
    random.Random(3).shuffle(shuffled)
    assert summary(track_reads(shuffled)) == summary(tracks)


def test_best_frame_is_best_confidence_times_detection_then_larger_box() -> None:
    reads = car("ABC1234", range(0, 5), x0=100, y=100, dx=10)
    reads[2] = fr(2, "ABC1234", (120, 100, 100, 30), conf=0.95, det=0.99)
    (track,) = track_reads(reads)
    assert track.best.frame_index == 2
    assert track.best.crop_key == "crops/2_120.jpg"
    # Tie on quality: the larger box wins.
    tie = [fr(0, "ABC1234", (100, 100, 100, 30)), fr(1, "ABC1234", (105, 100, 120, 36))]
    (track,) = track_reads(tie)
    assert track.best.frame_index == 1


def test_occluded_vehicle_is_one_event() -> None:
    # Seen 0.0-0.4 s, hidden 2.5 s (longer than max_gap_s), seen again further along.
    before = car("KLM5678", range(0, 5), x0=100, y=300, dx=20)
    after = car("KLM5678", range(30, 35), x0=700, y=300, dx=20, noise={31: ("KLM567B", 0.5)})
    other = car("XYZ9876", range(10, 16), x0=100, y=600, dx=20)
    tracks = track_reads(before + after + other)
    assert summary(tracks) == [(0, "KLM5678", 10, 0.0, 3.4), (1, "XYZ9876", 6, 1.0, 1.5)]
    # Far apart in time, the same plate is a second pass.
    late = car("KLM5678", range(200, 205), x0=100, y=300, dx=20)
    assert [t.text for t in track_reads(before + late)] == ["KLM5678", "KLM5678"]


def test_cars_queueing_at_the_same_spot_are_separate() -> None:
    first = car("ABC1234", range(0, 6), x0=500, y=500, dx=0)
    second = car("QRS9876", range(6, 12), x0=500, y=500, dx=0)
    assert summary(track_reads(first + second)) == [(0, "ABC1234", 6, 0.0, 0.5), (1, "QRS9876", 6, 0.6, 1.1)]


def test_fast_vehicle_without_overlap_tracked_by_text_and_motion() -> None:
    # 150 px per sample with a 100 px box: consecutive boxes never overlap.
    fast = car("FST1234", range(0, 6), x0=0, y=100, dx=150, noise={2: ("F5T1234", 0.7)})
    (track,) = track_reads(fast)
    assert (track.text, track.frames_seen) == ("FST1234", 6)
    # A different plate far along the same row is not glued on.
    stranger = [fr(6, "ZZZ9999", (1500, 100, 100, 30))]
    assert [t.text for t in track_reads(fast + stranger)] == ["FST1234", "ZZZ9999"]


def test_min_frames_and_empty_reads() -> None:
    flash = [fr(0, "ABC1234", (10, 10, 100, 30))]
    steady = car("DEF5678", range(0, 4), x0=500, y=10, dx=5)
    assert [t.text for t in track_reads(flash + steady, min_frames=2)] == ["DEF5678"]
    # Reads with no text associate by position but do not vote; a textless track is dropped.
    blanks = [fr(f, "", (900, 400, 100, 30)) for f in range(3)]
    mixed = steady + [fr(4, "", (520, 10, 100, 30))]
    tracks = track_reads(blanks + mixed)
    assert summary(tracks) == [(0, "DEF5678", 5, 0.0, 0.4)]


def test_vote_length_majority_and_weighted_characters() -> None:
    reads = [
        fr(0, "AB", (0, 0, 10, 10), conf=0.8),
        fr(1, "A8", (0, 0, 10, 10), conf=0.5),
        fr(2, "ABX", (0, 0, 10, 10), conf=0.6),  # minority length
    ]
    text, confs, confidence, region = vote(reads)
    assert text == "AB"
    b_share = (0.8 * 0.8) / (0.8 * 0.8 + 0.5 * 0.5)
    assert confs == pytest.approx((1 - 0.2 * 0.5, b_share * 0.8))
    length_share = (0.8 + 0.5) / (0.8 + 0.5 + 0.6)
    assert confidence == pytest.approx(length_share * sum(confs) / 2)
    assert region is None


def test_vote_single_read_keeps_reader_confidences_and_region() -> None:
    read = fr(0, "ABC1D23", (0, 0, 10, 10), char_confs=(0.9, 0.8, 0.7, 0.9, 0.6, 0.9, 0.9), region="br")
    text, confs, confidence, region = vote([read])
    assert text == "ABC1D23"
    assert confs == pytest.approx((0.9, 0.8, 0.7, 0.9, 0.6, 0.9, 0.9))
    assert confidence == pytest.approx(sum(confs) / 7)
    assert region == "br"
    # LLLDDDD is US or old Brazilian: the reads' region hint decides.
    assert vote([fr(0, "ABC1234", (0, 0, 1, 1), region="br")])[3] == "br"
    assert vote([fr(0, "ABC1234", (0, 0, 1, 1))])[3] == "us"
    assert vote([]) == ("", (), 0.0, None)


def test_agreeing_reads_raise_confidence() -> None:
    one = vote([fr(0, "ABC1234", (0, 0, 1, 1), conf=0.5)])
    many = vote([fr(i, "ABC1234", (0, 0, 1, 1), conf=0.5) for i in range(5)])
    assert one[2] == pytest.approx(0.5)
    assert many[2] == pytest.approx(1 - 0.5**5)


def test_box_cover_and_frame_edge() -> None:
    plate, header = Box(100, 100, 200, 60), Box(120, 95, 100, 20)
    assert header.cover(plate) == pytest.approx(15 / 20) and plate.cover(header) == pytest.approx(
        1500 / 12000
    )
    assert Box(0, 0, 0, 0).cover(plate) == 0.0
    assert Box(1100, 690, 150, 30).touches_edge(1280, 720)  # bottom edge
    assert Box(1, 300, 150, 30).touches_edge(1280, 720)  # left edge, within the 2 px margin
    assert not Box(10, 10, 150, 30).touches_edge(1280, 720)


def test_a_plate_only_ever_cut_by_the_frame_edge() -> None:
    entering = Track(0, [fr(f, "2D7569", (1150 + 20 * f, 690, 140, 30)) for f in range(3)])
    assert seen_only_at_edge(entering, 1280, 720)
    # Seen whole in one frame: a real pass that also touched the edge.
    passing = Track(1, entering.reads + [fr(3, "2D75696", (900, 600, 140, 30))])
    assert not seen_only_at_edge(passing, 1280, 720)


def test_text_inside_a_stronger_plate_track_is_flagged() -> None:
    plate = car("769NAP", range(10), 900, 500, -10)  # 100x30 boxes
    state = [fr(f, "NORTHCAR", (905 - 10 * f, 498, 60, 10), conf=0.55) for f in (6, 7)]
    elsewhere = [fr(f, "IOWA", (100, 100, 60, 10)) for f in (6, 7)]
    tracks = track_reads(plate + state + elsewhere)
    by_text = {t.text: t for t in tracks}
    assert set(by_text) == {"769NAP", "NORTHCAR", "IOWA"}
    assert inside_another(by_text["NORTHCAR"], tracks) is by_text["769NAP"]
    assert inside_another(by_text["769NAP"], tracks) is None  # the plate holds it, not the reverse
    assert inside_another(by_text["IOWA"], tracks) is None  # same frames, elsewhere in them
    # Boxes at the same place in other frames (a car that has gone) do not hold it.
    later = Track(9, [fr(f, "NORTHCAR", (845, 498, 60, 10)) for f in (20, 21)])
    assert inside_another(later, [*tracks, later]) is None


def test_of_two_tracks_holding_each_other_only_the_weaker_is_flagged() -> None:
    a = Track(0, [fr(f, "ABC1234", (100, 100, 100, 30), conf=0.9) for f in range(4)])
    b = Track(1, [fr(f, "ABC1284", (102, 100, 100, 30), conf=0.6) for f in range(4)])
    assert inside_another(b, [a, b]) is a and inside_another(a, [a, b]) is None
