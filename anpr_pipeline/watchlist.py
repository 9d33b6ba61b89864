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
``ANPR_ALERT_WEBHOOK_URL`` with the crop's URL. The cursor is a ``created_at`` watermark
re-read with an overlap (a transaction that commits late is still seen), or a
(created_at, id) position while a backlog is paged through. Each alert is a row of the
``watchlist_alerts`` table (event id, delivery state, attempts, last error; no plate
text), so neither the overlap nor a re-run of the video's processing alerts twice.

Webhook posts run in worker threads with a short timeout and a few quick retries; the tick
waits for them at most ``WEBHOOK_BUDGET_S``, so a dead webhook never stalls the sensor.
Each worker records its outcome; a failed post (receiver down, 5xx, 429) is posted again
on later ticks with backoff for ``RETRY_FOR``, so a hit is delivered at least once (the
receiver can de-duplicate on ``event_id``). A broken watchlist file fails the tick.
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
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from anpr_pipeline.resources.event_store import (
    EventStore,
    EventStoreError,
    EventStoreResource,
    events,
    normalize_plate,
    watchlist_alerts,
)
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline.settings import load_settings, parse_bool
from anpr_pipeline.vision.plates import confusion_key, fuzzy_match

log = logging.getLogger(__name__)

# Re-read this much before the watermark: covers writes that committed after a later one.
OVERLAP = timedelta(minutes=10)
PAGE_SIZE = 5_000
PAGES_PER_TICK = 10
# Webhook redelivery: a failed post is tried again after RETRY_BACKOFF doubling per attempt
# (capped at RETRY_BACKOFF_MAX), for RETRY_FOR after the alert; a post whose worker died
# (process restart) counts as failed after STUCK_SENDING.
RETRY_BACKOFF = timedelta(seconds=30)
RETRY_BACKOFF_MAX = timedelta(minutes=30)
RETRY_FOR = timedelta(hours=24)
STUCK_SENDING = timedelta(minutes=5)
MAX_RETRIES_PER_TICK = 100
# How long watchlist_alerts remembers an alert (a re-run of older footage alerts again).
ALERT_MEMORY = timedelta(days=30)
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

    @cached_property
    def _index(self) -> tuple[dict[str, list[int]], dict[str, list[int]], list[int]]:
        """Entry positions by exact plate, by fuzzy key (see ``_one_deletion``), and patterns."""
        exact: dict[str, list[int]] = {}
        fuzzy: dict[str, list[int]] = {}
        patterns: list[int] = []
        for n, entry in enumerate(self.entries):
            if entry.pattern:
                patterns.append(n)
                continue
            exact.setdefault(entry.plate, []).append(n)
            if entry.fuzzy:
                for key in _one_deletion(confusion_key(entry.plate)):
                    fuzzy.setdefault(key, []).append(n)
        return exact, fuzzy, patterns

    def match(self, normalized: str) -> list[WatchEntry]:
        """The entries ``normalized`` matches, in file order; cost independent of list size
        (but for patterns), so a hotlist of 100k fuzzy plates still checks a read quickly."""
        exact, fuzzy, patterns = self._index
        found = set(exact.get(normalized, ()))
        for key in _one_deletion(confusion_key(normalized)):
            found.update(n for n in fuzzy.get(key, ()) if self.entries[n].matches(normalized))
        found.update(n for n in patterns if self.entries[n].matches(normalized))
        return [self.entries[n] for n in sorted(found)]


def _one_deletion(key: str) -> set[str]:
    """``key`` and every string one character shorter: two keys within one edit share one
    (symmetric-delete candidate search; ``fuzzy_match`` confirms)."""
    return {key} | {key[:i] + key[i + 1 :] for i in range(len(key))}


def _flag(value: Any, default: bool, where: str) -> bool:
    """A YAML boolean or a CSV cell (``settings.parse_bool``: true/false, yes/no, 1/0, ...)."""
    if isinstance(value, bool):
        return value
    try:
        return parse_bool(None if value is None else str(value), default)
    except ValueError:
        raise WatchlistError(f"{where}: fuzzy must be true or false, got {value!r}") from None


# What an entry may hold: anything else is most likely a misspelt one of these (`fuzy`,
# `Fuzzy`) or a feature the watchlist does not have (`expires`), and ignoring it would
# silently change what alerts.
ENTRY_KEYS = ("plate", "pattern", "label", "fuzzy")


def _entry(raw: dict[str, Any], where: str, fuzzy_default: bool = False, written: Any = None) -> WatchEntry:
    """One entry; ``written``: the same YAML entry with every value as written (for messages)."""
    unknown = [str(key) for key in raw if key not in ENTRY_KEYS]
    if unknown:
        raise WatchlistError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; an entry holds only "
            f"{', '.join(ENTRY_KEYS)}"
        )
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
        # Header names as a spreadsheet may write them: "Plate", " fuzzy ".
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames:
            reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
        rows = list(reader)
        for n, row in enumerate(rows):
            if None in row:  # DictReader's key for values past the header's columns
                raise WatchlistError(
                    f"watchlist {path} entry {n + 1}: more values than the header has columns "
                    "(quote a label holding a comma)"
                )
            # Spreadsheets export empty trailing columns ("plate,label,"): nameless and empty.
            if (row.get("") or "").strip():
                raise WatchlistError(f"watchlist {path} entry {n + 1}: a value in a column without a header")
            row.pop("", None)
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
    watermark: str = ""  # ISO sensor clock at the end of the last complete scan
    # [created_at ISO, id] of the last event read when a scan filled its page: the next tick
    # resumes strictly after it (keyset), so any number of events sharing a timestamp pass.
    page: list[Any] | None = None
    # Event ids alerted by a sensor from before the watchlist_alerts table; moved there.
    alerted: list[str] = field(default_factory=list)

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
    store: EventStore,
    watchlist: Watchlist,
    since: datetime | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int = PAGE_SIZE,
) -> list[dict]:
    """Events whose plate may match, oldest first: created at/after ``since``, or strictly
    after the (created_at, id) position ``after``."""
    plate = events.c.normalized_plate
    conditions = []
    if watchlist.exact:
        # Inlined, not bound: a hotlist of 100k plates would pass the drivers' parameter
        # limits (SQLite 32,766). Normalised plates are A-Z0-9 only, safe to inline.
        exact = sa.bindparam("exact_plates", watchlist.exact, expanding=True, literal_execute=True)
        conditions.append(plate.in_(exact))
    conditions += [plate.like(entry.like()) for entry in watchlist.patterns]
    if watchlist.fuzzy_lengths:  # every plausible length; fuzzy entries are confirmed in Python
        conditions.append(sa.func.length(plate).in_(watchlist.fuzzy_lengths))
    if not conditions:
        return []
    if after is not None:
        at, last_id = after
        position = sa.or_(events.c.created_at > at, sa.and_(events.c.created_at == at, events.c.id > last_id))
    else:
        position = events.c.created_at >= since
    stmt = (
        sa.select(events)
        .where(position, sa.or_(*conditions))
        .order_by(events.c.created_at, events.c.id)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:
        row["event_id"] = str(row["event_id"])
    return rows


def _chunks(items: list[str], size: int = 500):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def claim_alerts(store: EventStore, event_ids: list[str], now: datetime, delivery: str) -> set[str]:
    """Record alerts for the ids not alerted before; returns those (the ones to alert now).

    The table, not the sensor cursor, remembers what was alerted: a re-read of the overlap
    window or a re-run of a video's processing (same event ids) never alerts twice.
    """
    if not event_ids:
        return set()
    with store.engine.begin() as conn:
        seen: set[str] = set()
        for chunk in _chunks(event_ids):
            seen.update(
                conn.execute(
                    sa.select(watchlist_alerts.c.event_id).where(watchlist_alerts.c.event_id.in_(chunk))
                ).scalars()
            )
        new = [i for i in dict.fromkeys(event_ids) if i not in seen]
        if new:
            conn.execute(
                watchlist_alerts.insert(),
                [{"event_id": i, "alerted_at": now, "delivery": delivery, "attempts": 0} for i in new],
            )
    return set(new)


def find_hits(
    store: EventStore, watchlist: Watchlist, cursor: WatchCursor, crop_url, now: datetime, delivery: str
) -> tuple[list[Hit], WatchCursor]:
    """New hits (recorded in watchlist_alerts with ``delivery``) and the next cursor.

    The watermark is the sensor's clock at the last complete scan; each scan re-reads
    OVERLAP before it, which also absorbs clock skew between run workers (who stamp
    created_at) and the sensor. A new sensor alerts on what happens from now on, not on
    history. A scan reads pages of PAGE_SIZE by (created_at, id); past PAGES_PER_TICK it
    stops and the next tick resumes where it left off.
    """
    if cursor.alerted:  # a cursor from before the table: keep its memory of what was alerted
        claim_alerts(store, cursor.alerted, now, "posted")
    hits: list[Hit] = []
    page = cursor.page
    for _ in range(PAGES_PER_TICK):
        try:
            if page:
                after = (datetime.fromisoformat(page[0]), int(page[1]))
                candidates = candidate_events(store, watchlist, after=after, limit=PAGE_SIZE)
            else:
                start = datetime.fromisoformat(cursor.watermark) if cursor.watermark else now
                candidates = candidate_events(store, watchlist, since=start - OVERLAP, limit=PAGE_SIZE)
            hits += _new_hits(store, watchlist, candidates, crop_url, now, delivery)
        except (EventStoreError, sa.exc.SQLAlchemyError):
            if not hits:
                raise  # nothing claimed yet: the tick fails and keeps its cursor
            # The hits claimed so far must still be announced (claimed, they are never found
            # again): return them, and resume from this page next tick.
            return hits, WatchCursor(watermark=cursor.watermark, page=page)
        if len(candidates) < PAGE_SIZE:
            return hits, WatchCursor(watermark=now.isoformat())
        page = [candidates[-1]["created_at"].isoformat(), candidates[-1]["id"]]
    return hits, WatchCursor(watermark=cursor.watermark, page=page)


def _new_hits(
    store: EventStore, watchlist: Watchlist, candidates: list[dict], crop_url, now: datetime, delivery: str
) -> list[Hit]:
    matched = [(event, tuple(watchlist.match(event["normalized_plate"]))) for event in candidates]
    matched = [(event, entries) for event, entries in matched if entries]
    new = claim_alerts(store, [event["event_id"] for event, _ in matched], now, delivery)
    return [
        Hit(event, entries, crop_url(event.get("crop_key")))
        for event, entries in matched
        if event["event_id"] in new
    ]


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
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break  # the receiver rejects this payload: retrying will not help
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
        time.sleep(min(0.5 * 2**attempt, 2.0))
    return error


def _rejected(error: str) -> bool:
    """A 4xx other than timeout/rate limit: the receiver refuses this payload for good."""
    return error.startswith("HTTP 4") and error not in ("HTTP 408", "HTTP 429")


def record_delivery(store: EventStore, event_id: str, error: str | None, now: datetime | None = None) -> None:
    """Store one post's outcome; a rejected payload is abandoned, other failures retried."""
    delivery = "posted" if error is None else "abandoned" if _rejected(error) else "failed"
    with store.engine.begin() as conn:
        conn.execute(
            watchlist_alerts.update()
            .where(watchlist_alerts.c.event_id == event_id)
            .values(
                delivery=delivery,
                attempts=watchlist_alerts.c.attempts + 1,
                last_attempt_at=now or datetime.now(UTC),
                last_error=error,
            )
        )


_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="anpr-webhook")


def send_alerts(
    hits: list[Hit],
    webhook_url: str,
    logger: Any = log,
    budget_s: float = WEBHOOK_BUDGET_S,
    store: EventStore | None = None,
    announce: bool = True,
) -> dict[str, int]:
    """Log hits (``announce``); post them without holding the caller past ``budget_s``.

    With ``store``, each post's outcome is recorded in watchlist_alerts by its worker, also
    for posts still running when the caller moves on: failed posts are retried next tick.
    """
    if announce:
        for hit in hits:
            logger.warning(hit.message())
    if not webhook_url or not hits:
        return {"posted": 0, "failed": 0, "pending": 0}

    def deliver(hit: Hit) -> str | None:
        error = post_json(webhook_url, hit.payload())
        if store is not None:
            try:
                record_delivery(store, hit.event["event_id"], error)
            except Exception as exc:  # the table is bookkeeping: a lost update means one retry
                log.warning(f"could not record webhook delivery of {hit.event['event_id']}: {exc}")
        return error

    futures = [_POOL.submit(deliver, hit) for hit in hits]
    done, pending = wait(futures, timeout=budget_s)
    failed = [f.result() for f in done if f.result() is not None]
    for error in failed[:3]:
        logger.error(f"watchlist webhook failed after {WEBHOOK_ATTEMPTS} attempts: {error}")
    if pending:
        logger.warning(f"{len(pending)} watchlist webhook post(s) still running in the background")
    return {"posted": len(done) - len(failed), "failed": len(failed), "pending": len(pending)}


def _retry_due(row: dict[str, Any], now: datetime) -> bool:
    last = row["last_attempt_at"] or row["alerted_at"]
    if row["delivery"] == "sending":  # its worker never reported: the process went away
        return now - last >= STUCK_SENDING
    return now - last >= min(RETRY_BACKOFF * 2 ** max(row["attempts"] - 1, 0), RETRY_BACKOFF_MAX)


def due_retries(store: EventStore, watchlist: Watchlist, crop_url, now: datetime) -> list[Hit]:
    """Alerts whose webhook post failed (or whose worker died mid-post), due to post again.

    Each is marked "sending" again; given up (and logged) RETRY_FOR after the alert;
    dropped when its event was erased since (a GDPR erasure) or its plate left the list.
    """
    a = watchlist_alerts.c
    with store.engine.begin() as conn:
        expired = conn.execute(
            watchlist_alerts.update()
            .where(a.delivery.in_(["failed", "sending"]), a.alerted_at < now - RETRY_FOR)
            .values(delivery="abandoned")
        ).rowcount
        waiting = conn.execute(
            sa.select(watchlist_alerts).where(a.delivery.in_(["failed", "sending"])).order_by(a.alerted_at)
        )
        ids = [r.event_id for r in waiting if _retry_due(r._asdict(), now)][:MAX_RETRIES_PER_TICK]
        rows = []
        for chunk in _chunks(ids):
            conn.execute(
                watchlist_alerts.update()
                .where(a.event_id.in_(chunk))
                .values(delivery="sending", last_attempt_at=now)
            )
            rows += [
                dict(r._mapping) for r in conn.execute(sa.select(events).where(events.c.event_id.in_(chunk)))
            ]
    if expired:
        log.error(f"{expired} watchlist alert(s) never reached the webhook in {RETRY_FOR} and were given up")
    hits = []
    for row in rows:
        row["event_id"] = str(row["event_id"])
        entries = tuple(watchlist.match(row["normalized_plate"]))
        if entries:
            hits.append(Hit(row, entries, crop_url(row.get("crop_key"))))
    gone = sorted(set(ids) - {hit.event["event_id"] for hit in hits})
    if gone:
        with store.engine.begin() as conn:
            conn.execute(watchlist_alerts.update().where(a.event_id.in_(gone)).values(delivery="dropped"))
    return hits


def prune_alerts(store: EventStore, now: datetime) -> int:
    """Forget alerts older than ALERT_MEMORY: the table stays small."""
    with store.engine.begin() as conn:
        return conn.execute(
            watchlist_alerts.delete().where(watchlist_alerts.c.alerted_at < now - ALERT_MEMORY)
        ).rowcount


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
    # A broken file fails the tick (red in the UI, the sensor shows the error) and keeps the
    # cursor, so once the file is fixed the events of the meantime are still checked.
    watchlist = load_watchlist(settings.watchlist, fuzzy=settings.watchlist_fuzzy)
    bucket_store = bucket.get_store()
    store = events_db.get_store()

    def crop_url(key: str | None) -> str | None:
        if not key:
            return None
        try:
            return bucket_store.url(key, expires_s=CROP_URL_EXPIRES_S)
        except Exception as exc:  # a URL is a convenience: never lose the alert over it
            context.log.warning(f"no URL for crop {key}: {exc}")
            return None

    now = datetime.now(UTC)
    webhook = settings.alert_webhook_url
    cursor = WatchCursor.load(context.cursor)
    hits, next_cursor = find_hits(store, watchlist, cursor, crop_url, now, "sending" if webhook else "logged")
    retries = due_retries(store, watchlist, crop_url, now) if webhook else []
    result = send_alerts(hits, webhook, context.log, store=store)
    try:  # after the hits are announced: their claims are committed, and a failure here
        prune_alerts(store, now)  # must not lose them (without a webhook the log is the alert)
    except (EventStoreError, sa.exc.SQLAlchemyError) as exc:
        context.log.warning(f"could not prune old watchlist alerts (next tick tries again): {exc}")
    if retries:
        context.log.info(f"re-posting {len(retries)} watchlist alert(s) the webhook did not take before")
        again = send_alerts(retries, webhook, context.log, store=store, announce=False)
        result = {k: result[k] + again[k] for k in result}
    if not hits and not retries:
        reason = f"No watchlist hits ({len(watchlist.entries)} entries)"
    else:
        plates = ", ".join(sorted({h.event["normalized_plate"] for h in hits}))
        reason = (
            f"{len(hits)} watchlist hit(s) alerted{': ' + plates if plates else ''}; {len(retries)} re-posted"
            f" (webhook posted {result['posted']}, failed {result['failed']}, pending {result['pending']})"
        )
    return SensorResult(skip_reason=SkipReason(reason), cursor=next_cursor.dump())
