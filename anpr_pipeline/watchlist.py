"""Watchlist: alert when a plate of interest passes a camera.

The watchlist is a file named by ``ANPR_WATCHLIST`` (YAML or CSV), so operators edit it
without a deploy and keep it under their own change control::

    # watchlist.yaml                          # watchlist.csv
    - plate: AB123CD                          plate,pattern,label
      label: stolen vehicle                   AB123CD,,stolen vehicle
    - pattern: "XY*99"                        ,XY*99,fleet XY
      label: fleet XY

``plate`` matches the normalised plate exactly (spaces/dashes/case ignored); ``pattern``
is a glob over the normalised plate (``*`` any run, ``?`` one character). A plate entry
with ``fuzzy: true`` (CSV column ``fuzzy``; ``ANPR_WATCHLIST_FUZZY=true`` makes it every
plate entry's default) also matches reads one OCR slip away, as ``anpr search --fuzzy``
does: look-alikes O/0, I/1, B/8, S/5, Z/2, G/6 folded, plus one wrong, missed or extra
character. The reader is sure of most of its confusions (O/D, A/4, V/U), so for a hotlist
where a missed vehicle costs more than a look at a crop, fuzzy entries catch them; the
alert says when the read is not the listed plate exactly.

``watchlist_sensor`` reads events created since its cursor (matching in SQL: exact plates
with IN, patterns with LIKE, then confirmed in Python), logs each hit and posts it to
``ANPR_ALERT_WEBHOOK_URL`` with the crop's URL. Webhook posts run in worker threads with a
short timeout and a few retries; the tick waits for them at most ``WEBHOOK_BUDGET_S``, so a
dead webhook never stalls the sensor. The cursor is a ``created_at`` watermark re-read
with an overlap (a transaction that commits late is still seen) plus the event ids already
alerted, so neither the overlap nor a re-run of the video's processing alerts twice.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from anpr_pipeline.resources.event_store import EventStoreResource, normalize_plate
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline.settings import load_settings, parse_bool
from anpr_pipeline.vision.plates import fuzzy_match

log = logging.getLogger(__name__)

# Re-read this much before the watermark: covers writes that committed after a later one.
OVERLAP = timedelta(minutes=10)
MAX_ALERTED_IDS = 10_000
MAX_EVENTS_PER_TICK = 5_000
CROP_URL_EXPIRES_S = 24 * 3600
WEBHOOK_TIMEOUT_S = 3.0
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BUDGET_S = 10.0


class WatchlistError(ValueError):
    """The watchlist file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class WatchEntry:
    plate: str = ""  # normalised, exact
    pattern: str = ""  # glob over the normalised plate
    label: str = ""
    fuzzy: bool = False  # plate entries: also match reads one OCR slip away

    def matches(self, normalized: str) -> bool:
        if self.plate:
            return self.matches_exactly(normalized) or (self.fuzzy and fuzzy_match(self.plate, normalized))
        return self.matches_exactly(normalized)

    def matches_exactly(self, normalized: str) -> bool:
        if self.plate:
            return normalized == self.plate
        return fnmatch.fnmatchcase(normalized, self.pattern)

    def like(self) -> str:
        """The SQL LIKE form of the pattern (normalised plates hold no % or _)."""
        return self.pattern.replace("*", "%").replace("?", "_")


@dataclass(frozen=True)
class Watchlist:
    entries: tuple[WatchEntry, ...]

    @property
    def exact(self) -> list[str]:
        return sorted({e.plate for e in self.entries if e.plate and not e.fuzzy})

    @property
    def fuzzy_lengths(self) -> list[int]:
        """Plate lengths a fuzzy entry may match (its own, one shorter, one longer)."""
        lengths: set[int] = set()
        for entry in self.entries:
            if entry.fuzzy:
                lengths.update(range(len(entry.plate) - 1, len(entry.plate) + 2))
        return sorted(lengths)

    @property
    def patterns(self) -> list[WatchEntry]:
        return [e for e in self.entries if e.pattern]

    def match(self, normalized: str) -> list[WatchEntry]:
        return [e for e in self.entries if e.matches(normalized)]


def _flag(value: Any, default: bool, where: str) -> bool:
    """A YAML boolean or a CSV cell (``settings.parse_bool``: true/false, yes/no, 1/0, ...)."""
    if isinstance(value, bool):
        return value
    try:
        return parse_bool(None if value is None else str(value), default)
    except ValueError:
        raise WatchlistError(f"{where}: fuzzy must be true or false, got {value!r}") from None


def _entry(raw: dict[str, Any], where: str, fuzzy_default: bool = False, written: Any = None) -> WatchEntry:
    """One entry; ``written``: the same YAML entry with every value as written (for messages)."""
    for key in ("plate", "pattern"):
        value = raw.get(key)
        # YAML reads an unquoted 01234567 as the octal number 342391, 1e5 as a float, yes as
        # True: any such plate would be silently wrong, so only text is accepted.
        if value is not None and not isinstance(value, str):
            as_written = written.get(key) if isinstance(written, dict) else None
            text = as_written if isinstance(as_written, str) else str(value)
            raise WatchlistError(
                f"{where}: {key} {text} is not text (YAML reads it as the {type(value).__name__} "
                f'{value!r}); quote it: {key}: "{text}"'
            )
    plate = normalize_plate(str(raw.get("plate") or ""))
    pattern = str(raw.get("pattern") or "").strip().upper()
    label = str(raw.get("label") or "").strip()
    if bool(plate) == bool(pattern):
        raise WatchlistError(f"{where}: give exactly one of `plate` or `pattern`, got {raw!r}")
    fuzzy = _flag(raw.get("fuzzy"), fuzzy_default and bool(plate), where)
    if fuzzy and pattern:
        raise WatchlistError(f"{where}: fuzzy applies to plates, not patterns (use ? for any character)")
    if pattern:
        if any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*?" for c in pattern):
            raise WatchlistError(f"{where}: pattern {pattern!r} may hold only A-Z, 0-9, * and ?")
        if pattern.strip("*?") == "":
            raise WatchlistError(f"{where}: pattern {pattern!r} would match every plate")
    return WatchEntry(plate=plate, pattern=pattern, label=label, fuzzy=fuzzy)


def load_watchlist(path: str | Path, fuzzy: bool = False) -> Watchlist:
    """The watchlist file; ``fuzzy`` is the default of plate entries without their own flag."""
    path = Path(path)
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would
        # otherwise become part of the first column's name.
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise WatchlistError(f"watchlist {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise WatchlistError(f"watchlist {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    written_rows: list[Any] | None = None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        try:
            loaded = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise WatchlistError(f"watchlist {path}: not valid YAML ({exc})") from exc
        # A bare list, or {watchlist: [...]} so the file can grow other keys later.
        rows = loaded.get("watchlist") if isinstance(loaded, dict) else loaded
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise WatchlistError(f"watchlist {path}: expected a list of {{plate|pattern, label}} entries")
        # The same entries with every scalar as written (BaseLoader), to quote in messages.
        as_written = yaml.load(text, Loader=yaml.BaseLoader)
        written = as_written.get("watchlist") if isinstance(as_written, dict) else as_written
        if isinstance(written, list) and len(written) == len(rows):
            written_rows = written
    return Watchlist(
        tuple(
            _entry(row, f"watchlist {path} entry {n + 1}", fuzzy, written_rows[n] if written_rows else None)
            for n, row in enumerate(rows)
        )
    )


# -- finding hits -------------------------------------------------------------------------------


@dataclass
class WatchCursor:
    watermark: str = ""  # ISO created_at of the newest event seen
    alerted: list[str] = field(default_factory=list)  # event ids already alerted, oldest first

    @classmethod
    def load(cls, raw: str | None) -> WatchCursor:
        try:
            return cls(**json.loads(raw)) if raw else cls()
        except (TypeError, ValueError):
            return cls()

    def dump(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class Hit:
    event: dict[str, Any]
    entries: tuple[WatchEntry, ...]
    crop_url: str | None

    def payload(self) -> dict[str, Any]:
        e = self.event
        return {
            "type": "anpr.watchlist_hit",
            "plate": e["normalized_plate"],
            "plate_text": e["plate_text"],
            "labels": [entry.label for entry in self.entries if entry.label],
            "matched": [entry.plate or entry.pattern for entry in self.entries],
            # False when only fuzzy entries matched: the read differs from the listed plate.
            "exact": any(entry.matches_exactly(e["normalized_plate"]) for entry in self.entries),
            "camera_id": e["camera_id"],
            "captured_at": e["captured_at"].isoformat(),
            "confidence": round(float(e["confidence"]), 3),
            "event_id": e["event_id"],
            "video_key": e["video_key"],
            "crop_key": e.get("crop_key"),
            "crop_url": self.crop_url,
        }

    def message(self) -> str:
        p = self.payload()
        labels = f" ({', '.join(p['labels'])})" if p["labels"] else ""
        near = "" if p["exact"] else f" [look-alike of {', '.join(p['matched'])}: check the crop]"
        return (
            f"WATCHLIST HIT {p['plate']}{labels}{near} at {p['camera_id']} {p['captured_at']} "
            f"conf {p['confidence']} crop {p['crop_url'] or p['crop_key']}"
        )


def candidate_events(
    store, watchlist: Watchlist, since: datetime, limit: int = MAX_EVENTS_PER_TICK
) -> list[dict]:
    """Events created at/after ``since`` whose plate may match, oldest first."""
    import sqlalchemy as sa

    from anpr_pipeline.resources.event_store import events

    plate = events.c.normalized_plate
    conditions = [plate.in_(watchlist.exact)] if watchlist.exact else []
    conditions += [plate.like(entry.like()) for entry in watchlist.patterns]
    if watchlist.fuzzy_lengths:  # every plausible length; fuzzy entries are confirmed in Python
        conditions.append(sa.func.length(plate).in_(watchlist.fuzzy_lengths))
    if not conditions:
        return []
    stmt = (
        sa.select(events)
        .where(events.c.created_at >= since, sa.or_(*conditions))
        .order_by(events.c.created_at, events.c.id)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:
        row["event_id"] = str(row["event_id"])
    return rows


def find_hits(
    store, watchlist: Watchlist, cursor: WatchCursor, crop_url, now: datetime
) -> tuple[list[Hit], WatchCursor]:
    """Pure decision logic of the sensor: new hits and the next cursor.

    The watermark is the sensor's clock at the last tick; each tick re-reads OVERLAP before
    it, which also absorbs clock skew between run workers (who stamp created_at) and the
    sensor. A new sensor alerts on what happens from now on, not on history.
    """
    start = datetime.fromisoformat(cursor.watermark) if cursor.watermark else now
    candidates = candidate_events(store, watchlist, start - OVERLAP)
    alerted = set(cursor.alerted)
    hits: list[Hit] = []
    for event in candidates:
        entries = tuple(watchlist.match(event["normalized_plate"]))
        if entries and event["event_id"] not in alerted:
            alerted.add(event["event_id"])
            hits.append(Hit(event, entries, crop_url(event.get("crop_key"))))
    # A full page means there is more: resume from the last event read, not from now.
    watermark = candidates[-1]["created_at"] + OVERLAP if len(candidates) >= MAX_EVENTS_PER_TICK else now
    kept = cursor.alerted + [h.event["event_id"] for h in hits]
    return hits, WatchCursor(watermark=watermark.isoformat(), alerted=kept[-MAX_ALERTED_IDS:])


# -- alerting -------------------------------------------------------------------------------------


def post_json(
    url: str, payload: dict, timeout_s: float = WEBHOOK_TIMEOUT_S, attempts: int = WEBHOOK_ATTEMPTS
) -> str | None:
    """POST with retries and backoff; returns None on success, else the last error."""
    body = json.dumps(payload).encode()
    error = "not attempted"
    for attempt in range(attempts):
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if 200 <= response.status < 300:
                    return None
                error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code != 429:
                break  # the receiver rejects this payload: retrying will not help
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
        time.sleep(min(0.5 * 2**attempt, 2.0))
    return error


_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="anpr-webhook")


def send_alerts(
    hits: list[Hit], webhook_url: str, logger: Any = log, budget_s: float = WEBHOOK_BUDGET_S
) -> dict[str, int]:
    """Log every hit; post them to the webhook without holding the caller past ``budget_s``."""
    for hit in hits:
        logger.warning(hit.message())
    if not webhook_url or not hits:
        return {"posted": 0, "failed": 0, "pending": 0}
    futures = [_POOL.submit(post_json, webhook_url, hit.payload()) for hit in hits]
    done, pending = wait(futures, timeout=budget_s)
    failed = [f.result() for f in done if f.result() is not None]
    for error in failed[:3]:
        logger.error(f"watchlist webhook failed after {WEBHOOK_ATTEMPTS} attempts: {error}")
    if pending:
        logger.warning(f"{len(pending)} watchlist webhook post(s) still running in the background")
    return {"posted": len(done) - len(failed), "failed": len(failed), "pending": len(pending)}


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Alerts (log + ANPR_ALERT_WEBHOOK_URL, with the crop URL) when a new event's plate "
    "is on the ANPR_WATCHLIST file (exact or fuzzy plates, or glob patterns).",
)
def watchlist_sensor(
    context: SensorEvaluationContext, events_db: EventStoreResource, bucket: ObjectStoreResource
):
    settings = load_settings()
    if not settings.watchlist:
        return SkipReason("No watchlist configured (set ANPR_WATCHLIST to a YAML or CSV file)")
    try:
        watchlist = load_watchlist(settings.watchlist, fuzzy=settings.watchlist_fuzzy)
    except WatchlistError as exc:
        return SkipReason(f"Watchlist unusable, fix the file: {exc}")
    store = bucket.get_store()

    def crop_url(key: str | None) -> str | None:
        if not key:
            return None
        try:
            return store.url(key, expires_s=CROP_URL_EXPIRES_S)
        except Exception as exc:  # a URL is a convenience: never lose the alert over it
            context.log.warning(f"no URL for crop {key}: {exc}")
            return None

    cursor = WatchCursor.load(context.cursor)
    hits, next_cursor = find_hits(events_db.get_store(), watchlist, cursor, crop_url, datetime.now(UTC))
    if not hits:
        return SensorResult(
            skip_reason=SkipReason(f"No watchlist hits ({len(watchlist.entries)} entries)"),
            cursor=next_cursor.dump(),
        )
    result = send_alerts(hits, settings.alert_webhook_url, context.log)
    return SensorResult(
        skip_reason=SkipReason(
            f"{len(hits)} watchlist hit(s) alerted: {', '.join(sorted({h.event['normalized_plate'] for h in hits}))}"
            f" (webhook posted {result['posted']}, failed {result['failed']}, pending {result['pending']})"
        ),
        cursor=next_cursor.dump(),
    )
