"""Asset checks (DESIGN §4): declared here, evaluated inside the assets they guard.

Evaluating a check inside its asset keeps it partition-aware (one result per video) and
lets a blocking check stop wrong data flowing downstream in the same run: a video that fails
``decodable_and_non_empty`` is never decoded for detection. ``plate_events`` is the last
asset of its run, so its blocking check fails the run (red in the UI, the video's partition
failed) after the rows are written: it tells the operator, it does not hold the rows back
(a wrong probe duration would otherwise lose a video's events for good).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

VIDEO_DECODABLE = AssetCheckSpec(
    name="decodable_and_non_empty",
    asset=AssetKey("video"),
    blocking=True,
    description="The upload is a decodable video with frames and a positive duration.",
)
READS_CONFIDENCE = AssetCheckSpec(
    name="low_confidence_share",
    asset=AssetKey("plate_reads"),
    description="Share of plate reads below the confidence floor stays under the configured maximum.",
)
EVENTS_CONSISTENT = AssetCheckSpec(
    name="unique_ids_and_timestamps_in_span",
    asset=AssetKey("plate_events"),
    blocking=True,
    description="Stored events have unique event_id and timestamps inside the video's recording span.",
)


def check_video(info: dict) -> AssetCheckResult:
    problems = []
    if not info.get("sampled_frames_expected"):
        problems.append("no frames to sample")
    if not info.get("duration_s") or info["duration_s"] <= 0:
        problems.append("zero duration")
    if not info.get("width") or not info.get("height"):
        problems.append("no picture size")
    return AssetCheckResult(
        check_name=VIDEO_DECODABLE.name,
        asset_key=VIDEO_DECODABLE.asset_key,
        passed=not problems,
        metadata={
            "problems": ", ".join(problems) or "none",
            "duration_s": float(info.get("duration_s") or 0),
        },
    )


def check_read_confidence(confidences: Sequence[float], floor: float, max_share: float) -> AssetCheckResult:
    low = sum(1 for c in confidences if c < floor)
    share = low / len(confidences) if confidences else 0.0
    return AssetCheckResult(
        check_name=READS_CONFIDENCE.name,
        asset_key=READS_CONFIDENCE.asset_key,
        passed=share <= max_share,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "reads": len(confidences),
            "low_confidence": low,
            "share": round(share, 4),
            "floor": floor,
            "max_share": max_share,
        },
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; they are stored as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def check_events(rows: Sequence[dict], span: tuple[datetime, datetime]) -> AssetCheckResult:
    ids = [str(row["event_id"]) for row in rows]
    duplicates = len(ids) - len(set(ids))
    start, end = span
    outside = [
        str(row["event_id"])
        for row in rows
        if not (
            start
            <= _utc(row["first_seen_at"])
            <= _utc(row["captured_at"])
            <= _utc(row["last_seen_at"])
            <= end
        )
    ]
    return AssetCheckResult(
        check_name=EVENTS_CONSISTENT.name,
        asset_key=EVENTS_CONSISTENT.asset_key,
        passed=duplicates == 0 and not outside,
        metadata={
            "events": len(rows),
            "duplicate_event_ids": duplicates,
            "outside_span": len(outside),
            "outside_examples": ", ".join(outside[:5]) or "none",
        },
    )
