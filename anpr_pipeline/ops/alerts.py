"""Alerts: decisions (backlog level, worker stall) and delivery (log + optional webhook).

Delivery never blocks or breaks the caller: the webhook POST (JSON, short timeout, a few
retries with backoff on errors and 5xx) runs in a daemon thread, and every failure is
logged, never raised. Sensors alert on *transitions* (ok → warning → critical → resolved),
keeping the last state in their cursor, so an operator gets one message per change
rather than one per tick.
"""

from __future__ import annotations

import json
import logging
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


@dataclass
class Alert:
    name: str  # run_failure | backlog | worker_stall
    severity: str  # info | warning | critical | resolved
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        # "text" makes the same payload readable by Slack/Mattermost-style incoming webhooks.
        return {"source": "anpr_pipeline", "text": f"[{self.severity}] {self.summary}", **asdict(self)}


def backlog_level(queued: int, warn: int, critical: int) -> str:
    """ "critical" above `critical` queued runs, "warning" above `warn`, else "ok"."""
    if queued > critical:
        return "critical"
    if queued > warn:
        return "warning"
    return "ok"


def is_stalled(
    queued: int,
    oldest_queued_at: datetime | None,
    last_finished_at: datetime | None,
    now: datetime,
    window: timedelta,
) -> bool:
    """Runs wait, and no video run finished within `window` (while the oldest waited that long).

    The oldest queued run must itself have waited `window`: a queue that just formed after
    an idle night is not a stall, even though nothing finished for hours.
    """
    if queued <= 0 or oldest_queued_at is None or now - oldest_queued_at < window:
        return False
    return last_finished_at is None or now - last_finished_at >= window


def post_webhook(
    url: str,
    payload: dict[str, Any],
    retries: int = WEBHOOK_RETRIES,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
    backoff_s: float = WEBHOOK_BACKOFF_S,
) -> bool:
    """POST JSON; True on a 2xx. Retries connection errors and 5xx; never raises."""
    body = json.dumps(payload, default=str).encode()
    for attempt in range(1, retries + 1):
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                if 200 <= resp.status < 300:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                log.warning("alert webhook refused the alert (HTTP %s); not retrying", exc.code)
                return False
            log.warning("alert webhook attempt %d/%d: HTTP %s", attempt, retries, exc.code)
        except Exception as exc:  # URLError, timeout, connection reset
            log.warning("alert webhook attempt %d/%d failed: %s", attempt, retries, exc)
        if attempt < retries:
            time.sleep(backoff_s * 2 ** (attempt - 1))
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
