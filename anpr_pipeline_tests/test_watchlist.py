"""Watchlist file parsing and ``watchlist_sensor`` against a real events DB and a real HTTP receiver."""

from __future__ import annotations

import json
import re
import socket
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from dagster import SensorResult, build_sensor_context

from anpr_pipeline import watchlist as watchlist_module
from anpr_pipeline.resources.event_store import EventStore, EventStoreResource, watchlist_alerts
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline.vision.plates import fuzzy_match
from anpr_pipeline.watchlist import (
    WatchCursor,
    WatchEntry,
    Watchlist,
    WatchlistError,
    load_watchlist,
    send_alerts,
    watchlist_sensor,
)
from anpr_pipeline_tests.factories import event_row


def _deliveries(store: EventStore) -> dict[str, int]:
    """How many alerts are in each delivery state (watchlist_alerts)."""
    a = watchlist_alerts.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(a.delivery, sa.func.count()).group_by(a.delivery))
        return {delivery: n for delivery, n in rows}


class Receiver(ThreadingHTTPServer):
    """A real webhook endpoint on 127.0.0.1 that records what it is sent."""

    def __init__(self, status: int = 200):
        self.received: list[dict] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(json.loads(body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()


def test_watchlist_yaml_and_csv(tmp_path):
    yml = tmp_path / "w.yaml"
    yml.write_text("- plate: ab-123 cd\n  label: stolen\n- pattern: 'xy*99'\n")
    wl = load_watchlist(yml)
    assert wl.exact == ["AB123CD"]
    assert [e.label for e in wl.match("AB123CD")] == ["stolen"]
    assert wl.match("XY1299") and wl.match("XY99") and not wl.match("XY1298")
    csv_file = tmp_path / "w.csv"
    csv_file.write_text("plate,pattern,label\nAB123CD,,stolen\n,Q?7*,fleet\n")
    wl = load_watchlist(csv_file)
    assert wl.match("QZ7") and wl.match("QZ7ABC") and not wl.match("Q7")


def test_watchlist_from_a_spreadsheet_with_a_byte_order_mark(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a BOM (and ends lines with CRLF)."""
    csv_file = tmp_path / "w.csv"
    csv_file.write_bytes(b"\xef\xbb\xbfplate,pattern,label\r\nAB123CD,,stolen\r\n,XY*99,fleet\r\n")
    wl = load_watchlist(csv_file)
    assert wl.exact == ["AB123CD"] and [e.pattern for e in wl.patterns] == ["XY*99"]
    yml = tmp_path / "w.yaml"
    yml.write_bytes(b'\xef\xbb\xbf- plate: "01234567"\n  label: quoted\n')
    assert load_watchlist(yml).exact == ["01234567"]  # quoted digits stay the plate as written
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"plate,label\nAB123CD,voiture vol\xe9e\n")
    with pytest.raises(WatchlistError, match="not UTF-8"):
        load_watchlist(latin1)


def test_fuzzy_entries_match_reads_one_ocr_slip_away(tmp_path):
    yml = tmp_path / "w.yaml"
    yml.write_text("- plate: OZG3580\n  fuzzy: true\n  label: stolen\n- plate: AB123CD\n")
    wl = load_watchlist(yml)
    assert wl.exact == ["AB123CD"] and wl.fuzzy_lengths == [6, 7, 8]
    # O/0 folded, one wrong (O/D), missed or extra character: what the reader gets wrong.
    for read in ("OZG3580", "0ZG3580", "DZG3580", "0ZG358", "OZG35800"):
        assert [e.label for e in wl.match(read)] == ["stolen"], read
    for read in ("DZG3530", "OZG35", "AB123C0", "AB123CO"):  # two slips; exact entries stay exact
        assert not wl.match(read), read
    csv_file = tmp_path / "w.csv"
    csv_file.write_text("plate,label,fuzzy\nOZG3580,stolen,no\nAB123CD,,\n")
    by_plate = {e.plate: e.fuzzy for e in load_watchlist(csv_file, fuzzy=True).entries}
    assert by_plate == {"OZG3580": False, "AB123CD": True}  # an entry's own flag beats the default


def test_csv_headers_are_read_as_a_spreadsheet_writes_them(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("Plate, Label ,FUZZY\nOZG3580,stolen,yes\n")
    (entry,) = load_watchlist(path).entries
    assert (entry.plate, entry.label, entry.fuzzy) == ("OZG3580", "stolen", True)
    path.write_text("plate,fuzy\nOZG3580,yes\n")
    with pytest.raises(WatchlistError, match="entry 1: unknown key.*'fuzy'"):
        load_watchlist(path)
    path.write_text("plate,label,\nOZG3580,stolen,\n")  # an empty trailing column
    assert [e.plate for e in load_watchlist(path).entries] == ["OZG3580"]
    path.write_text("plate,label,\nOZG3580,stolen,blue\n")
    with pytest.raises(WatchlistError, match="entry 1: a value in a column without a header"):
        load_watchlist(path)
    path.write_text("plate,label\nOZG3580,stolen, blue\n")
    with pytest.raises(WatchlistError, match="entry 1: more values than the header.*quote a label"):
        load_watchlist(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("- label: nothing\n", "exactly one of"),
        ("- plate: AB1\n  fuzzy: maybe\n", "fuzzy must be true or false"),
        ("- pattern: 'AB*'\n  fuzzy: true\n", "not patterns"),
        ("- plate: AB1\n  pattern: AB*\n", "exactly one of"),
        ("- pattern: '*'\n", "every plate"),
        ("- pattern: 'AB[12]'\n", "only A-Z"),
        ("plate: AB1\n", "expected a list"),
        # Unquoted numbers are YAML ints (a leading 0: octal, 01234567 -> 342391): refused.
        ("- plate: 01234567\n", 'plate 01234567 is not text .*342391.*quote it: plate: "01234567"'),
        ("watchlist:\n- pattern: 1234\n", 'pattern 1234 is not text.*quote it: pattern: "1234"'),
        ("- plate: yes\n", "plate yes is not text"),
        # A misspelt flag would leave a stolen plate's entry exact without a word.
        ("- plate: OZG3580\n  fuzy: true\n", "entry 1: unknown key.*'fuzy'.*plate, pattern, label, fuzzy"),
        ("- plate: OZG3580\n  Fuzzy: true\n", "unknown key.*'Fuzzy'"),
        ("- plate: OZG3580\n  expires: 2027-01-01\n", "unknown key.*'expires'"),
    ],
)
def test_bad_watchlists_name_the_problem(tmp_path, text, message):
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(WatchlistError, match=message):
        load_watchlist(path)
    with pytest.raises(WatchlistError, match="No such file"):
        load_watchlist(tmp_path / "missing.yaml")


def _write(store: EventStore, video: str, plates: list[str], camera: str = "cam-north") -> list[dict]:
    at = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    rows = [event_row(at, plate=p, camera=camera, video_key=video, n=n) for n, p in enumerate(plates)]
    store.replace_video_events(video, rows)
    return rows


def _tick(context_cursor, url, bucket_dir):
    context = build_sensor_context(
        cursor=context_cursor,
        resources={
            "events_db": EventStoreResource(database_url=url),
            "bucket": ObjectStoreResource(kind="local", bucket_dir=str(bucket_dir)),
        },
    )
    result = watchlist_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def _alerting_setup(tmp_path, monkeypatch, receiver, name: str, watchlist: str) -> tuple[str, EventStore]:
    """A fresh events DB, the watchlist file ``name`` holding ``watchlist``, alerts to ``receiver``."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    store = EventStore(url)
    store.init_schema()
    watch = tmp_path / name
    watch.write_text(watchlist)
    monkeypatch.setenv("ANPR_WATCHLIST", str(watch))
    monkeypatch.setenv("ANPR_ALERT_WEBHOOK_URL", receiver.url)
    return url, store


def test_sensor_alerts_once_per_event_with_crop_url(tmp_path, monkeypatch, receiver):
    watchlist = "- plate: AB123CD\n  label: stolen vehicle\n- pattern: 'XY*'\n"
    url, store = _alerting_setup(tmp_path, monkeypatch, receiver, "watch.yaml", watchlist)
    video_a = "uploads/cam-north/20261120T080000Z.mp4"

    first = _tick(None, url, tmp_path / "bucket")  # nothing yet
    assert not receiver.received and "No watchlist hits" in first.skip_reason.skip_message

    _write(store, video_a, ["AB123CD", "ZZ000", "XY77"])
    second = _tick(first.cursor, url, tmp_path / "bucket")
    assert sorted(p["plate"] for p in receiver.received) == ["AB123CD", "XY77"]
    hit = next(p for p in receiver.received if p["plate"] == "AB123CD")
    assert hit["labels"] == ["stolen vehicle"] and hit["camera_id"] == "cam-north"
    assert hit["crop_url"].startswith("file://") and hit["crop_url"].endswith(hit["crop_key"])
    assert "2 watchlist hit(s)" in second.skip_reason.skip_message
    assert _deliveries(store) == {"posted": 2}

    # Same events again (next tick's overlap, and a re-run of the video): no second alert.
    third = _tick(second.cursor, url, tmp_path / "bucket")
    _write(store, video_a, ["AB123CD", "ZZ000", "XY77"])
    fourth = _tick(third.cursor, url, tmp_path / "bucket")
    assert len(receiver.received) == 2

    # A new pass of the plate in another video alerts again, once.
    _write(store, "uploads/cam-east/20261120T090000Z.mp4", ["AB123CD"], camera="cam-east")
    _tick(fourth.cursor, url, tmp_path / "bucket")
    assert [p["camera_id"] for p in receiver.received[2:]] == ["cam-east"]


def test_sensor_alerts_on_look_alike_reads_of_fuzzy_plates(tmp_path, monkeypatch, receiver):
    url, store = _alerting_setup(
        tmp_path, monkeypatch, receiver, "watch.csv", "plate,label\nOZG3580,stolen vehicle\n"
    )
    monkeypatch.setenv("ANPR_WATCHLIST_FUZZY", "true")
    first = _tick(None, url, tmp_path / "bucket")
    _write(store, "uploads/cam-north/20261120T080000Z.mp4", ["DZG3580", "ZZ000", "OZG3580", "DZG3530"])
    second = _tick(first.cursor, url, tmp_path / "bucket")
    by_plate = {p["plate"]: p for p in receiver.received}
    assert sorted(by_plate) == ["DZG3580", "OZG3580"]
    assert by_plate["OZG3580"]["exact"] and not by_plate["DZG3580"]["exact"]
    assert by_plate["DZG3580"]["matched"] == ["OZG3580"]
    assert by_plate["DZG3580"]["labels"] == ["stolen vehicle"]
    assert "2 watchlist hit(s)" in second.skip_reason.skip_message


def test_sensor_skips_clearly_without_or_with_a_broken_watchlist(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    monkeypatch.delenv("ANPR_WATCHLIST", raising=False)
    assert (
        "No watchlist configured"
        in watchlist_sensor(
            build_sensor_context(
                resources={
                    "events_db": EventStoreResource(database_url=url),
                    "bucket": ObjectStoreResource(bucket_dir=str(tmp_path)),
                }
            )
        ).skip_message
    )
    # A broken file fails the tick (shown red, the error on the sensor) rather than skipping
    # quietly; the cursor stays where it was, so the meantime is checked once it is fixed.
    bad = tmp_path / "w.yaml"
    bad.write_text("- pattern: '*'\n")
    monkeypatch.setenv("ANPR_WATCHLIST", str(bad))
    with pytest.raises(WatchlistError, match="would match every plate"):
        watchlist_sensor(
            build_sensor_context(
                resources={
                    "events_db": EventStoreResource(database_url=url),
                    "bucket": ObjectStoreResource(bucket_dir=str(tmp_path)),
                }
            )
        )


class _Hit:
    def __init__(self, plate):
        self.plate = plate

    def message(self):
        return f"hit {self.plate}"

    def payload(self):
        return {"plate": self.plate}


def test_webhook_failures_never_block_the_sensor(caplog):
    # Refused connection: retried, then reported as failed.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    result = send_alerts([_Hit("AB1")], f"http://127.0.0.1:{closed_port}/hook")
    assert result == {"posted": 0, "failed": 1, "pending": 0}
    # A receiver that accepts the connection and never answers: the caller is released at
    # its budget with the post still pending in the background.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        result = send_alerts([_Hit("AB2")], f"http://127.0.0.1:{silent.getsockname()[1]}/hook", budget_s=0.2)
        assert result["pending"] == 1
    finally:
        silent.close()
    assert "hit AB1" in caplog.text and "hit AB2" in caplog.text


def test_webhook_rejection_is_not_retried(tmp_path):
    server = Receiver(status=400)
    try:
        result = send_alerts([_Hit("AB3")], server.url)
        assert result["failed"] == 1 and len(server.received) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_hit_the_webhook_missed_is_posted_once_it_is_back(tmp_path, monkeypatch):
    """At-least-once delivery: a receiver down at the hit gets it on a later tick."""
    down = Receiver(status=503)
    url, store = _alerting_setup(tmp_path, monkeypatch, down, "watch.yaml", "- plate: AB123CD\n")
    first = _tick(None, url, tmp_path / "bucket")
    _write(store, "uploads/cam-north/20261120T080000Z.mp4", ["AB123CD", "ZZ000"])
    second = _tick(first.cursor, url, tmp_path / "bucket")
    assert len(down.received) == 3 and "failed 1" in second.skip_reason.skip_message
    assert _deliveries(store) == {"failed": 1}
    down.status = 200  # the receiver recovers; the retry waits for its backoff
    third = _tick(second.cursor, url, tmp_path / "bucket")
    assert len(down.received) == 3 and _deliveries(store) == {"failed": 1}
    monkeypatch.setattr(watchlist_module, "RETRY_BACKOFF", watchlist_module.timedelta(0))
    fourth = _tick(third.cursor, url, tmp_path / "bucket")
    assert "0 watchlist hit(s) alerted; 1 re-posted" in fourth.skip_reason.skip_message
    assert len(down.received) == 4 and down.received[-1]["plate"] == "AB123CD"
    assert _deliveries(store) == {"posted": 1}
    _tick(fourth.cursor, url, tmp_path / "bucket")
    assert len(down.received) == 4  # delivered: never again
    down.shutdown()
    down.server_close()


def test_retries_give_up_after_a_day_and_skip_erased_events(tmp_path, monkeypatch):
    down = Receiver(status=500)
    url, store = _alerting_setup(
        tmp_path, monkeypatch, down, "watch.yaml", "- plate: AB123CD\n- plate: XY99\n"
    )
    first = _tick(None, url, tmp_path / "bucket")
    _write(store, "uploads/cam-north/20261120T080000Z.mp4", ["AB123CD"])
    _write(store, "uploads/cam-east/20261120T080000Z.mp4", ["XY99"], camera="cam-east")
    _tick(first.cursor, url, tmp_path / "bucket")
    assert _deliveries(store) == {"failed": 2}
    store.delete_video_events("uploads/cam-east/20261120T080000Z.mp4")  # e.g. a GDPR erasure
    monkeypatch.setattr(watchlist_module, "RETRY_BACKOFF", watchlist_module.timedelta(0))
    wl = load_watchlist(tmp_path / "watch.yaml")
    now = datetime.now(UTC)
    retried = watchlist_module.due_retries(store, wl, lambda key: None, now)
    assert [h.event["normalized_plate"] for h in retried] == ["AB123CD"]
    assert _deliveries(store) == {"sending": 1, "dropped": 1}
    later = now + watchlist_module.RETRY_FOR + watchlist_module.timedelta(minutes=1)
    assert watchlist_module.due_retries(store, wl, lambda key: None, later) == []
    assert _deliveries(store) == {"abandoned": 1, "dropped": 1}
    down.shutdown()
    down.server_close()


def test_a_backlog_of_events_sharing_one_timestamp_is_paged_through(tmp_path, monkeypatch, receiver):
    """Keyset paging on (created_at, id): pages full of one timestamp do not stall the scan,
    within a tick and, past PAGES_PER_TICK, across ticks."""
    monkeypatch.setattr(watchlist_module, "PAGE_SIZE", 3)
    url, store = _alerting_setup(tmp_path, monkeypatch, receiver, "watch.yaml", "- pattern: 'AB*'\n")
    cursor = _tick(None, url, tmp_path / "bucket").cursor
    plates = [f"AB{n:03d}" for n in range(8)]
    _write(store, "uploads/cam-north/20261120T080000Z.mp4", plates)  # one transaction: one created_at
    result = _tick(cursor, url, tmp_path / "bucket")
    assert sorted(p["plate"] for p in receiver.received) == plates
    assert WatchCursor.load(result.cursor).page is None  # the scan finished in one tick

    monkeypatch.setattr(watchlist_module, "PAGES_PER_TICK", 1)
    more = [f"AB{n:03d}" for n in range(8, 16)]
    _write(store, "uploads/cam-east/20261120T080000Z.mp4", more, camera="cam-east")
    cursor = result.cursor
    ticks = 0
    while True:  # the 10-minute overlap re-reads all 16: six pages of 3, one per tick
        cursor = _tick(cursor, url, tmp_path / "bucket").cursor
        ticks += 1
        if WatchCursor.load(cursor).page is None or ticks > 10:
            break
    assert ticks == 6
    assert sorted(p["plate"] for p in receiver.received) == plates + more  # each once


def test_without_a_webhook_a_failing_scan_or_prune_loses_no_logged_hit(tmp_path, monkeypatch):
    # Without a webhook the log line is the alert, and a hit is claimed (never found again)
    # before it is logged: nothing that can fail may come between the two.
    url = f"sqlite:///{tmp_path / 'events.db'}"
    store = EventStore(url)
    store.init_schema()
    (tmp_path / "watch.yaml").write_text("- pattern: 'AB*'\n")
    monkeypatch.setenv("ANPR_WATCHLIST", str(tmp_path / "watch.yaml"))
    monkeypatch.delenv("ANPR_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setattr(watchlist_module, "PAGE_SIZE", 3)
    cursor = _tick(None, url, tmp_path / "bucket").cursor
    plates = [f"AB{n:03d}" for n in range(5)]
    _write(store, "uploads/cam-north/20261120T080000Z.mp4", plates)

    real_candidates, calls = watchlist_module.candidate_events, []

    def second_page_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise sa.exc.OperationalError("SELECT ...", {}, Exception("server closed the connection"))
        return real_candidates(*args, **kwargs)

    def prune_fails(*args, **kwargs):
        raise sa.exc.OperationalError("DELETE ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(watchlist_module, "candidate_events", second_page_fails)
    monkeypatch.setattr(watchlist_module, "prune_alerts", prune_fails)  # every tick: never fatal
    first = _tick(cursor, url, tmp_path / "bucket")  # page 1 claimed and announced
    assert WatchCursor.load(first.cursor).page is not None  # resumes at page 2
    second = _tick(first.cursor, url, tmp_path / "bucket")
    announced = re.findall(r"AB\d{3}", first.skip_reason.skip_message + second.skip_reason.skip_message)
    assert sorted(announced) == plates  # each once, none lost
    assert WatchCursor.load(second.cursor).page is None and _deliveries(store) == {"logged": 5}


def test_a_cursor_from_before_the_alerts_table_keeps_its_memory(tmp_path, monkeypatch, receiver):
    url, store = _alerting_setup(tmp_path, monkeypatch, receiver, "watch.yaml", "- plate: AB123CD\n")
    now = datetime.now(UTC)
    rows = _write(store, "uploads/cam-north/20261120T080000Z.mp4", ["AB123CD"])
    legacy = json.dumps({"watermark": now.isoformat(), "alerted": [rows[0]["event_id"]]})
    result = _tick(legacy, url, tmp_path / "bucket")
    assert not receiver.received and "No watchlist hits" in result.skip_reason.skip_message
    assert WatchCursor.load(result.cursor).alerted == [] and _deliveries(store) == {"posted": 1}


def test_a_large_hotlist_is_matched_in_sql_and_in_python(tmp_path, monkeypatch, receiver):
    """40,000 exact plates (beyond SQLite's 32,766 bound parameters) and 5,000 fuzzy ones."""
    exact = [f"EX{n:05d}" for n in range(40_000)]
    fuzzy = [f"FZ{n:05d}" for n in range(5_000)]
    lines = ["plate,label,fuzzy"] + [f"{p},,no" for p in exact] + [f"{p},,yes" for p in fuzzy]
    url, store = _alerting_setup(tmp_path, monkeypatch, receiver, "watch.csv", "\n".join(lines) + "\n")
    cursor = _tick(None, url, tmp_path / "bucket").cursor
    _write(store, "uploads/cam-north/20261120T080000Z.mp4", ["EX39999", "FZ0O123", "EX4", "QQ12345"])
    _tick(cursor, url, tmp_path / "bucket")
    assert sorted(p["plate"] for p in receiver.received) == ["EX39999", "FZ0O123"]
    matched = next(p for p in receiver.received if p["plate"] == "FZ0O123")["matched"]
    assert "FZ00123" in matched and matched == [p for p in fuzzy if fuzzy_match(p, "FZ0O123")]


def test_indexed_matching_agrees_with_checking_every_entry():
    import random

    rng = random.Random(7)
    alphabet = "AB0O1I8S5Z2G6XY"
    plates = ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 7))) for _ in range(300)]
    entries = [WatchEntry(plate=p, fuzzy=rng.random() < 0.6, label=str(n)) for n, p in enumerate(plates)]
    entries += [WatchEntry(pattern="AB*"), WatchEntry(pattern="?X?")]
    watchlist = Watchlist(tuple(entries))
    reads = plates + ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 8))) for _ in range(2000)]
    for read in reads:
        assert watchlist.match(read) == [e for e in entries if e.matches(read)], read
