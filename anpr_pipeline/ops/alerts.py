"""Alerts: decisions (backlog level, worker stall) and delivery (log + optional webhook).

Delivery never blocks or breaks the caller: the webhook POST (JSON, short timeout, a few
retries with backoff on errors, 5xx, 408 and 429, honouring a capped Retry-After) runs in a
daemon thread, and every failure is logged, never raised. Sensors alert on *transitions*
(ok → warning → critical → resolved), keeping the last state in their cursor, so an
operator gets one message per change rather than one per tick; the backlog level has
hysteresis (`backlog_level`) so a queue hovering at a threshold does not flap.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 3.0
WEBHOOK_RETRIES = 3
WEBHOOK_BACKOFF_S = 0.5
# Request Timeout and Too Many Requests say "try again later", unlike the other 4xx.
RETRYABLE_4XX = frozenset({408, 429})
# A Retry-After longer than this is cut short: delivery stays bounded (about
# WEBHOOK_RETRIES * (WEBHOOK_TIMEOUT_S + RETRY_AFTER_CAP_S) in the worst case).
RETRY_AFTER_CAP_S = 5.0
# Leave a level only once the queue is down to this share of the level's threshold, so a
# queue hovering around a threshold does not alert on every tick.
BACKLOG_CLEAR_RATIO = 0.8
BACKLOG_LEVELS = ("ok", "warning", "critical")


@dataclass
class Alert:
    name: str  # run_failure | backlog | worker_stall
    severity: str  # info | warning | critical | resolved
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        # "text" makes the same payload readable by Slack/Mattermost-style incoming webhooks.
        return {"source": "anpr_pipeline", "text": f"[{self.severity}] {self.summary}", **asdict(self)}


def backlog_level(queued: int, warn: int, critical: int, previous: str = "ok") -> str:
    """The backlog level, with hysteresis against the `previous` level.

    Rising is immediate: "critical" above `critical` queued runs, "warning" above `warn`.
    Falling is not: a level is held while `queued` stays above BACKLOG_CLEAR_RATIO (80 %) of
    that level's threshold, and left (one level at a time) once it is at or below. With
    warn=100: 101 → warning, 99 → still warning, 80 → ok. With critical=500: 450 → still
    critical, 400 → warning.
    """
    thresholds = {"warning": warn, "critical": critical}
    level = "critical" if queued > critical else "warning" if queued > warn else "ok"
    held = previous if previous in thresholds else "ok"
    while BACKLOG_LEVELS.index(held) > BACKLOG_LEVELS.index(level):
        if queued > BACKLOG_CLEAR_RATIO * thresholds[held]:
            return held
        held = BACKLOG_LEVELS[BACKLOG_LEVELS.index(held) - 1]
    return level


def is_stalled(
    queued: int,
    oldest_queued_at: datetime | None,
    last_finished_at: datetime | None,
    now: datetime,
    window: timedelta,
    last_started_at: datetime | None = None,
) -> bool:
    """Runs wait, and no video run finished or started within `window` (while the oldest
    waited that long).

    The oldest queued run must itself have waited `window`: a queue that just formed after
    an idle night is not a stall, even though nothing finished for hours. A run that started
    within the window is progress too: a camera's backlog runs one video at a time, and a
    video that takes most of the window is not a stalled worker.
    """
    if queued <= 0 or oldest_queued_at is None or now - oldest_queued_at < window:
        return False
    progress = max((t for t in (last_finished_at, last_started_at) if t is not None), default=None)
    return progress is None or now - progress >= window


def retry_after_s(value: str | None, cap: float = RETRY_AFTER_CAP_S) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds form), at most `cap`.

    None when absent or not a number (the HTTP-date form): the caller's own backoff applies.
    """
    try:
        seconds = float((value or "").strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


def _retryable(code: int) -> bool:
    return code >= 500 or code in RETRYABLE_4XX


def post_webhook(
    url: str,
    payload: dict[str, Any],
    retries: int = WEBHOOK_RETRIES,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
    backoff_s: float = WEBHOOK_BACKOFF_S,
    max_wait_s: float = RETRY_AFTER_CAP_S,
) -> bool:
    """POST JSON; True on a 2xx. Never raises.

    Retries connection errors, 5xx, 408 and 429 with exponential backoff; a Retry-After
    (seconds) on the refusal replaces the backoff, capped at `max_wait_s`. Other 4xx mean
    the receiver will never take this alert: give up at once.
    """
    body = json.dumps(payload, default=str).encode()
    for attempt in range(1, retries + 1):
        wait = backoff_s * 2 ** (attempt - 1)
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                if 200 <= resp.status < 300:
                    return True
                log.warning("alert webhook attempt %d/%d: HTTP %s", attempt, retries, resp.status)
        except urllib.error.HTTPError as exc:
            if not _retryable(exc.code):
                log.warning("alert webhook refused the alert (HTTP %s); not retrying", exc.code)
                return False
            log.warning("alert webhook attempt %d/%d: HTTP %s", attempt, retries, exc.code)
            asked = retry_after_s(exc.headers.get("Retry-After") if exc.headers else None, max_wait_s)
            wait = wait if asked is None else asked
        except Exception as exc:  # URLError, timeout, connection reset
            log.warning("alert webhook attempt %d/%d failed: %s", attempt, retries, exc)
        if attempt < retries:
            time.sleep(wait)
    log.error("alert webhook gave up after %d attempts", retries)
    return False


def send_alert(alert: Alert, webhook_url: str = "", logger: Any = None) -> threading.Thread | None:
    """Log the alert now; post it to the webhook (if any) in the background."""
    logger = logger or log
    line = f"ANPR ALERT [{alert.severity}] {alert.name}: {alert.summary}"
    if alert.severity == "critical":
        logger.error(line)
    elif alert.severity == "warning":
        logger.warning(line)
    else:
        logger.info(line)
    if not webhook_url:
        return None
    thread = threading.Thread(
        target=post_webhook, args=(webhook_url, alert.payload()), name="anpr-alert-webhook", daemon=True
    )
    thread.start()
    return thread
