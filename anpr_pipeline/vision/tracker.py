"""Group per-frame plate reads into one track per vehicle pass, and vote the plate text.

A read joins a track when its box overlaps the track's box (or where the track's last
velocity predicts it) *and* its text is similar enough; a strong text match also joins a
nearby box that no longer overlaps (fast vehicles at a low sampling rate). Tracks idle for
``max_gap_s`` close. Afterwards, tracks with the same voted plate that are close in time
are merged: a vehicle hidden for a moment behind a bus is one event. Nearly the same plates
merge only when the later track starts where the earlier one was heading, so two fleet cars
with consecutive plates stay two events.

Text comparisons use :func:`plates.confusion_key`, so reads differing only by O/0, I/1,
B/8, S/5, Z/2, G/6 count as the same plate.
"""

from __future__ import annotations

import bisect
import operator
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from anpr_pipeline.vision import plates
from anpr_pipeline.vision.types import Box, PlateRead


@dataclass
class FrameRead:
    """One plate read in one frame."""

    frame_index: int
    pts_s: float
    box: Box
    read: PlateRead
    detection_score: float
    crop_key: str | None = None

    @property
    def quality(self) -> float:
        """Read confidence x detection score: how good a picture of the plate this is."""
        return self.read.confidence * self.detection_score


VoteResult = tuple[str, tuple[float, ...], float, str | None]

# Reads one character longer than the heaviest length win when they weigh at least this
# share of it and that length is mostly their text less a glyph (see vote, step 1): the
# glyph must be seen in about a third of the frames, so one read with a rim or screw taken
# for a character never wins.
DROPPED_GLYPH_RATIO = 0.5


@dataclass
class Track:
    """The reads of one vehicle pass. Text properties are voted over all reads.

    The vote is cached: it is recomputed only when ``reads`` no longer holds the same reads
    in the same order (reads appended, merged, sorted, or the list replaced). Reads
    themselves are treated as immutable.
    """

    track_id: int
    reads: list[FrameRead] = field(default_factory=list)
    _vote_cache: tuple[tuple[FrameRead, ...], VoteResult] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def best(self) -> FrameRead:
        """Read with the best confidence x detection score (tie: the larger box)."""
        return max(self.reads, key=lambda r: (r.quality, r.box.area))

    def voted(self) -> VoteResult:
        """``vote(self.reads)``, cached until the reads change."""
        snapshot = tuple(self.reads)
        cached = self._vote_cache
        if (
            cached is not None
            and len(cached[0]) == len(snapshot)
            and all(map(operator.is_, cached[0], snapshot))  # the same read objects, in order
        ):
            return cached[1]
        result = vote(snapshot)
        self._vote_cache = (snapshot, result)
        return result

    @property
    def text(self) -> str:
        return self.voted()[0]

    @property
    def char_confidences(self) -> tuple[float, ...]:
        return self.voted()[1]

    @property
    def confidence(self) -> float:
        return self.voted()[2]

    @property
    def region(self) -> str | None:
        return self.voted()[3]

    @property
    def first_pts_s(self) -> float:
        return min(r.pts_s for r in self.reads)

    @property
    def last_pts_s(self) -> float:
        return max(r.pts_s for r in self.reads)

    @property
    def frames_seen(self) -> int:
        return len({r.frame_index for r in self.reads})


def _char_conf(read: PlateRead, i: int) -> float:
    if i < len(read.char_confidences):
        return float(read.char_confidences[i])
    return float(read.confidence)


def vote(reads: Sequence[FrameRead]) -> VoteResult:
    """Vote the plate text of a track: (text, char_confidences, confidence, region).

    1. Length: the length with the largest total read confidence (ties: more reads, then
       longer) - unless reads one character longer weigh at least ``DROPPED_GLYPH_RATIO``
       as much and most of the chosen length's weight is reads of their voted text with one
       character left out (:func:`_one_dropped`): then the longer text. A CTC reader drops
       a narrow glyph (``I``, ``1``) or one of a doubled pair in some frames; it seldom
       invents one, so those shorter reads back the longer text rather than contradict it.
       Their weight then counts for it in step 4.
    2. Each position: the character with the largest sum of (char confidence x read
       confidence) over the reads of that length.
    3. Per-character confidence = that character's weighted share at the position x the
       noisy-OR of the agreeing reads' char confidences - one read keeps its own confidence,
       agreeing reads raise it, disagreeing reads lower it.
    4. Confidence = mean char confidence x the voted length's weighted share.
    5. Region = plates.match_region(text), hinted by the reads' most common region (a tie:
       the one seen first, so the result never depends on hash order).
    Reads with empty text do not vote; no text at all gives ("", (), 0.0, None).
    """
    voting = [r for r in reads if r.read.normalized]
    if not voting:
        return "", (), 0.0, None
    by_length: dict[int, list[FrameRead]] = defaultdict(list)
    for r in voting:
        by_length[len(r.read.normalized)].append(r)

    def length_weight(n: int) -> float:
        return sum(max(r.read.confidence, 1e-6) for r in by_length[n])

    length = max(by_length, key=lambda n: (length_weight(n), len(by_length[n]), n))
    support = length_weight(length)
    text, confs = _vote_characters(by_length[length], length)
    if length + 1 in by_length:
        longer_text, longer_confs = _vote_characters(by_length[length + 1], length + 1)
        backing = sum(
            max(r.read.confidence, 1e-6)
            for r in by_length[length]
            if _one_dropped(r.read.normalized, longer_text)
        )
        longer_weight = length_weight(length + 1)
        if longer_weight >= DROPPED_GLYPH_RATIO * support and backing >= support / 2:
            length, text, confs = length + 1, longer_text, longer_confs
            support = longer_weight + backing
    length_share = support / sum(length_weight(n) for n in by_length)
    chosen = by_length[length]
    confidence = length_share * sum(confs) / len(confs)
    regions = [r.read.region for r in chosen if r.read.region]
    hint = Counter(regions).most_common(1)[0][0] if regions else None  # tie: first seen
    return text, tuple(confs), confidence, plates.match_region(text, hint=hint)


def _vote_characters(reads: Sequence[FrameRead], length: int) -> tuple[str, list[float]]:
    """Steps 2 and 3 of :func:`vote` over reads all ``length`` characters long."""
    chars: list[str] = []
    confs: list[float] = []
    for i in range(length):
        votes: dict[str, float] = defaultdict(float)
        for r in reads:
            votes[r.read.normalized[i]] += max(_char_conf(r.read, i) * r.read.confidence, 1e-9)
        char = max(votes, key=lambda c: (votes[c], c))
        share = votes[char] / sum(votes.values())
        miss = 1.0
        for r in reads:
            if r.read.normalized[i] == char:
                miss *= 1.0 - min(max(_char_conf(r.read, i), 0.0), 1.0)
        chars.append(char)
        confs.append(share * (1.0 - miss))
    return "".join(chars), confs


def _one_dropped(short: str, long: str) -> bool:
    """Whether ``short`` is ``long`` with exactly one character left out."""
    return len(short) + 1 == len(long) and any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


# --- association -------------------------------------------------------------------------


def _center(box: Box) -> tuple[float, float]:
    return box.x + box.w / 2.0, box.y + box.h / 2.0


@dataclass
class _Active:
    """Association state of an open track."""

    track: Track
    last: FrameRead
    velocity: tuple[float, float] = (0.0, 0.0)  # px/s of the box centre
    texts: list[str] = field(default_factory=list)  # recent confusion keys

    def predicted(self, pts_s: float) -> Box:
        dt = pts_s - self.last.pts_s
        b = self.last.box
        return Box(round(b.x + self.velocity[0] * dt), round(b.y + self.velocity[1] * dt), b.w, b.h)

    def add(self, r: FrameRead) -> None:
        dt = r.pts_s - self.last.pts_s
        if dt > 0:
            (x0, y0), (x1, y1) = _center(self.last.box), _center(r.box)
            self.velocity = ((x1 - x0) / dt, (y1 - y0) / dt)
        self.last = r
        self.track.reads.append(r)
        if r.read.normalized:
            self.texts = [*self.texts[-2:], plates.confusion_key(r.read.normalized)]


def _text_similarity(active: _Active, r: FrameRead) -> float | None:
    """Best similarity of the read to the track's recent texts; None if either has none."""
    if not r.read.normalized or not active.texts:
        return None
    key = plates.confusion_key(r.read.normalized)
    return max(plates.similarity(key, t) for t in active.texts)


def _pair_score(
    active: _Active,
    r: FrameRead,
    iou_threshold: float,
    min_similarity: float,
    text_match_similarity: float,
    text_match_distance: float,
) -> float | None:
    """Association score (higher is better), or None when the read cannot join."""
    predicted = active.predicted(r.pts_s)
    overlap = max(active.last.box.iou(r.box), predicted.iou(r.box))
    sim = _text_similarity(active, r)
    if overlap >= iou_threshold:
        if sim is not None and sim < min_similarity:
            return None  # same place, different plate (two cars queueing)
        return overlap + (sim if sim is not None else min_similarity)
    # No overlap: a near-identical plate close to where the track should be.
    if sim is None or sim < text_match_similarity:
        return None
    (px, py), (rx, ry) = _center(predicted), _center(r.box)
    size = max(predicted.w, predicted.h, r.box.w, r.box.h, 1)
    if ((px - rx) ** 2 + (py - ry) ** 2) ** 0.5 > text_match_distance * size:
        return None
    return sim


def _associate(
    reads: Iterable[FrameRead],
    iou_threshold: float,
    max_gap_s: float,
    min_similarity: float,
    text_match_similarity: float,
    text_match_distance: float,
) -> list[Track]:
    by_frame: dict[tuple[float, int], list[FrameRead]] = defaultdict(list)
    for r in reads:
        by_frame[(r.pts_s, r.frame_index)].append(r)
    tracks: list[Track] = []
    active: list[_Active] = []
    for (pts_s, _), frame_reads in sorted(by_frame.items(), key=lambda kv: kv[0]):
        active = [a for a in active if pts_s - a.last.pts_s <= max_gap_s]
        pairs = []
        for ai, a in enumerate(active):
            for ri, r in enumerate(frame_reads):
                score = _pair_score(
                    a, r, iou_threshold, min_similarity, text_match_similarity, text_match_distance
                )
                if score is not None:
                    pairs.append((score, ai, ri))
        used_tracks: set[int] = set()
        used_reads: set[int] = set()
        for _, ai, ri in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):  # greedy, best first
            if ai not in used_tracks and ri not in used_reads:
                active[ai].add(frame_reads[ri])
                used_tracks.add(ai)
                used_reads.add(ri)
        for ri, r in enumerate(frame_reads):
            if ri not in used_reads:
                track = Track(track_id=len(tracks))
                tracks.append(track)
                new = _Active(track=track, last=r)
                new.track.reads.append(r)
                if r.read.normalized:
                    new.texts = [plates.confusion_key(r.read.normalized)]
                active.append(new)
    return tracks


# How far back from a track's last read its closing velocity is measured.
_VELOCITY_WINDOW_S = 1.0
# A plate far away or half in view is often read once, badly, just before (or after) the
# frames that track it (ZZ112CN at the top of the frame, then ZZ772GN for 8 frames; HH64
# where KKR4609 came into view): too unlike the track's text to merge, sure enough to pass
# the single-frame rule. Such a single-frame track is a glimpse of the track when it lies
# where that track's motion puts the plate: within GLIMPSE_DISTANCE box sizes, at most
# GLIMPSE_GAP_S (two sample steps) away. No second plate can be there so soon after, or
# so soon before, so the text is not compared (see glimpse_of_another).
GLIMPSE_GAP_S = 0.4
GLIMPSE_DISTANCE = 0.5


def _order(r: FrameRead) -> tuple[float, int]:
    return r.pts_s, r.frame_index


def _end_motion(track: Track, at_start: bool) -> tuple[FrameRead, float, float]:
    """The track's last (or first) read and its box centre's velocity (px/s) over the last
    (or first) ``_VELOCITY_WINDOW_S``; a single read moves at (0, 0)."""
    end = min(track.reads, key=_order) if at_start else max(track.reads, key=_order)
    others = [r for r in track.reads if (r.pts_s > end.pts_s if at_start else r.pts_s < end.pts_s)]
    if not others:
        return end, 0.0, 0.0
    window = [r for r in others if abs(r.pts_s - end.pts_s) <= _VELOCITY_WINDOW_S]
    if window:
        ref = max(window, key=_order) if at_start else min(window, key=_order)
    else:
        ref = min(others, key=_order) if at_start else max(others, key=_order)
    dt = end.pts_s - ref.pts_s
    (x0, y0), (x1, y1) = _center(ref.box), _center(end.box)
    return end, (x1 - x0) / dt, (y1 - y0) / dt


def _continues(a: Track, b: Track, max_distance: float, backward: bool = False) -> bool:
    """Whether ``b`` (starting after ``a`` ends) plausibly continues ``a``: the centre of
    b's first box lies within ``max_distance`` box sizes of a's last box moved on at a's
    closing velocity (measured over its last ``_VELOCITY_WINDOW_S``) until b starts.
    ``backward``: instead, a's last box lies that close to b's first box moved back at b's
    opening velocity to when a ends (for an ``a`` seen too briefly to have a velocity)."""
    last, first = max(a.reads, key=_order), min(b.reads, key=_order)
    moving, vx, vy = _end_motion(b, at_start=True) if backward else _end_motion(a, at_start=False)
    other = last if backward else first
    dt = other.pts_s - moving.pts_s
    (mx, my), (ox, oy) = _center(moving.box), _center(other.box)
    size = max(last.box.w, last.box.h, first.box.w, first.box.h, 1)
    return ((mx + vx * dt - ox) ** 2 + (my + vy * dt - oy) ** 2) ** 0.5 <= max_distance * size


def _boxes_by_frame(track: Track) -> dict[int, list[Box]]:
    """The boxes of the track's reads that hold text, by frame: an unreadable detection the
    track took in (a light, the bumper where its motion put the plate) is not the plate
    seen elsewhere, and must not keep a fast vehicle's pass split."""
    by_frame: dict[int, list[Box]] = defaultdict(list)
    for r in track.reads:
        if r.read.normalized:
            by_frame[r.frame_index].append(r.box)
    return dict(by_frame)


def _apart_in_a_shared_frame(a: dict[int, list[Box]], b: dict[int, list[Box]]) -> bool:
    """Whether, in some frame both were read in, a box of one does not touch a box of the
    other: two plates seen at once in different places are two vehicles, however alike
    their texts (ABC1234 in the left lane, A8C1234 in the right)."""
    if len(b) < len(a):
        a, b = b, a
    return any(
        box_a.iou(box_b) == 0.0
        for frame, boxes_a in a.items()
        if frame in b
        for box_a in boxes_a
        for box_b in b[frame]
    )


def _merge_similar(
    tracks: list[Track], merge_gap_s: float, merge_similarity: float, merge_distance: float = 3.0
) -> list[Track]:
    """Merge tracks of the same plate close in time (occlusion, a missed detection run).

    Identical voted plates (up to look-alikes) within ``merge_gap_s`` merge even when they
    overlap in time (a duplicate detection of one plate) - unless, in a frame both were read
    in, their boxes do not overlap: two vehicles side by side. Similar plates merge only when one
    ends before the other starts *and* the later one starts where the earlier one was heading
    (:func:`_continues`, ``merge_distance`` box sizes): one vehicle's track broken by an
    occlusion or a misread, not the next car of a fleet with a consecutive plate.

    The result is that of repeatedly merging the first mergeable pair (in order of first
    appearance, then the later track) until none is left. A merge changes only the track
    merged into (a's first appearance does not move), so only pairs with that track need a
    second look: earlier tracks against it, then it against the later ones.
    """
    merged = sorted(tracks, key=lambda t: t.first_pts_s)
    first = [t.first_pts_s for t in merged]  # sorted; a merge never changes it
    last = [t.last_pts_s for t in merged]
    keys = [plates.confusion_key(t.text) for t in merged]
    # Longest span of any track: bounds how far back an earlier track can still end near one.
    max_span = max((lt - ft for ft, lt in zip(first, last, strict=True)), default=0.0)

    boxes = [_boxes_by_frame(t) for t in merged]

    def mergeable(i: int, j: int) -> bool:  # i < j
        if first[j] - last[i] > merge_gap_s or not keys[i] or not keys[j]:
            return False
        if first[j] <= last[i] and _apart_in_a_shared_frame(boxes[i], boxes[j]):
            return False
        sim = plates.similarity(keys[i], keys[j])
        if sim == 1.0:
            return True
        disjoint = first[j] > last[i] or first[i] > last[j]
        return sim >= merge_similarity and disjoint and _continues(merged[i], merged[j], merge_distance)

    def merge(i: int, j: int) -> None:  # j into i
        nonlocal max_span
        a = merged[i]
        a.reads.extend(merged[j].reads)
        a.reads.sort(key=_order)
        last[i] = max(last[i], last[j])
        max_span = max(max_span, last[i] - first[i])
        keys[i] = plates.confusion_key(a.text)
        for frame, frame_boxes in boxes[j].items():
            boxes[i].setdefault(frame, []).extend(frame_boxes)
        del merged[j], first[j], last[j], keys[j], boxes[j]

    i = 0
    while i < len(merged):
        j = i + 1
        while j < len(merged):
            if first[j] - last[i] > merge_gap_s:
                break  # sorted by first appearance: every later track starts later still
            if not mergeable(i, j):
                j += 1
                continue
            merge(i, j)
            # Track i changed: the first earlier track that now merges with it takes it.
            while True:
                lo = bisect.bisect_left(first, first[i] - merge_gap_s - max_span - 1e-6, 0, i)
                k = next((k for k in range(lo, i) if mergeable(k, i)), None)
                if k is None:
                    break
                merge(k, i)
                i = k
            j = i + 1
        i += 1
    return merged


def track_reads(
    reads: Iterable[FrameRead],
    iou_threshold: float = 0.2,
    max_gap_s: float = 1.5,
    min_similarity: float = 0.5,
    min_frames: int = 1,
    *,
    text_match_similarity: float = 0.8,
    text_match_distance: float = 3.0,
    merge_gap_s: float = 5.0,
    merge_similarity: float = 0.75,
    merge_distance: float = 3.0,
) -> list[Track]:
    """One Track per vehicle pass, ordered by first appearance, ids 0, 1, 2, ...

    iou_threshold: box overlap (with the last box or the motion-predicted one) to join.
    max_gap_s: a track with no read for this long is closed.
    min_similarity: an overlapping read whose text is less similar starts its own track.
    text_match_similarity / text_match_distance: a read this similar (look-alike
    insensitive) joins without overlap if within this many box sizes of the prediction.
    merge_gap_s / merge_similarity / merge_distance: post-merge of same-plate tracks, and of
    similar-plate ones where the later starts within merge_distance box sizes of where the
    earlier was heading (see _merge_similar).
    min_frames: tracks seen in fewer frames are dropped. Tracks with no text are dropped.
    Ids depend only on the input, so re-runs produce the same ids.
    """
    tracks = _associate(
        reads, iou_threshold, max_gap_s, min_similarity, text_match_similarity, text_match_distance
    )
    for t in tracks:
        t.reads.sort(key=_order)
    tracks = _merge_similar(tracks, merge_gap_s, merge_similarity, merge_distance)
    kept = [t for t in tracks if t.frames_seen >= min_frames and t.text]
    kept.sort(key=lambda t: (t.first_pts_s, t.reads[0].frame_index, t.reads[0].box.x, t.reads[0].box.y))
    for i, t in enumerate(kept):
        t.track_id = i
    return kept


def seen_only_at_edge(track: Track, width: int, height: int) -> bool:
    """Whether every read of ``track`` has its box at the frame's edge: a plate entering or
    leaving the picture, never seen whole, so its reads are of part of it."""
    return all(r.box.touches_edge(width, height) for r in track.reads)


def inside_another(
    track: Track, tracks: Sequence[Track], min_cover: float = 0.5, min_share: float = 0.5
) -> Track | None:
    """The stronger track whose boxes hold ``track``'s, if any: in at least ``min_share`` of
    its reads, a read of that track in the same frame covers ``min_cover`` of its box, or of
    it as rim text (``Box.on_plate``).

    That is text on or around another plate read as a plate of its own: a state name
    (``IOWA``, ``NORTHCAR``), a slogan, a dealer line, a second box on part of the plate.
    Stronger = seen in more frames, then surer, then earlier, so of two tracks holding each
    other only the weaker goes.
    """

    def strength(t: Track) -> tuple[int, float, int]:
        return (t.frames_seen, t.confidence, -t.track_id)

    own = strength(track)  # computed once, not once per other track
    frames = {r.frame_index for r in track.reads}
    for other in tracks:
        if other is track or strength(other) <= own:
            continue
        boxes: dict[int, list[Box]] = defaultdict(list)
        for r in other.reads:
            if r.frame_index in frames:  # only frames both were seen in can hold it
                boxes[r.frame_index].append(r.box)
        inside = (
            sum(any(r.box.on_plate(b, min_cover) for b in boxes.get(r.frame_index, ())) for r in track.reads)
            if boxes
            else 0
        )
        if inside >= min_share * len(track.reads):
            return other
    return None


def glimpse_of_another(track: Track, tracks: Sequence[Track]) -> Track | None:
    """The track of ``tracks`` that single-frame ``track`` is a glimpse of, or None.

    A glimpse is seen just before another track starts (or just after it ends), at most
    ``GLIMPSE_GAP_S`` away, with its box within ``GLIMPSE_DISTANCE`` box sizes of where that
    track's opening (or closing) motion puts the plate. It is dropped rather than merged:
    one far, misread frame can tip a close character vote of the track it belongs to.
    """
    if track.frames_seen != 1:
        return None
    for other in tracks:
        if other is track or other.frames_seen == 1:
            continue
        if 0 < other.first_pts_s - track.last_pts_s <= GLIMPSE_GAP_S + 1e-6:
            if _continues(track, other, GLIMPSE_DISTANCE, backward=True):
                return other
        elif 0 < track.first_pts_s - other.last_pts_s <= GLIMPSE_GAP_S + 1e-6:
            if _continues(other, track, GLIMPSE_DISTANCE):
                return other
    return None
