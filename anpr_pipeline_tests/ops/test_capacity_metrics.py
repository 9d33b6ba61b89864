"""Capacity gauges (active cameras, events-DB sizes, bucket bytes by class) scraped from the registry."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from anpr_pipeline.ops.capacity_metrics import CapacityCollector, storage_class
from anpr_pipeline.resources.event_store import EventStore
from anpr_pipeline.resources.object_store import LocalObjectStore
from anpr_pipeline_tests.factories import event_row


def _samples(collector) -> dict:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _seed(store: EventStore) -> None:
    now = datetime.now(UTC)
    for camera, at in (
        ("cam-a", now - timedelta(minutes=5)),
        ("cam-b", now - timedelta(minutes=50)),
        ("cam-c", now - timedelta(hours=3)),
    ):
        video = f"uploads/{camera}/{at:%Y%m%dT%H%M%SZ}.mp4"
        store.replace_video_events(video, [event_row(at, plate="AB123", camera=camera, video_key=video)])


def check(url: str, tmp_path) -> dict:
    store = EventStore(url)
    store.init_schema()
    _seed(store)
    bucket = LocalObjectStore(tmp_path / "bucket")
    bucket.put_bytes("uploads/cam-a/20260101T000000Z.mp4", b"v" * 1000)
    bucket.put_bytes("crops/cam-a/2026-01-01/x/000001_0.jpg", b"c" * 30)
    bucket.put_bytes("crops/cam-a/2026-01-01/x/000002_0.jpg", b"c" * 20)
    bucket.put_bytes("misc/readme.txt", b"o")
    collector = CapacityCollector(store, bucket)
    collector.refresh_storage(wait=True)
    m = _samples(collector)
    store.dispose()
    assert m[("anpr_active_cameras", ())] == 2  # cam-c's last event is 3 h old
    assert m[("anpr_storage_bytes", (("class", "videos"),))] == 1000
    assert m[("anpr_storage_bytes", (("class", "crops"),))] == 50
    assert m[("anpr_storage_objects", (("class", "crops"),))] == 2
    assert m[("anpr_storage_bytes", (("class", "other"),))] == 1
    assert m[("anpr_storage_bytes", (("class", "parquet"),))] == 0
    assert m[("anpr_database_total_bytes", ())] > 0
    return m


def test_capacity_gauges_sqlite(tmp_path):
    m = check(f"sqlite:///{tmp_path / 'events.db'}", tmp_path)
    assert m[("anpr_database_size_bytes", (("relation", "sqlite"),))] > 0


@pytest.mark.postgres
def test_capacity_gauges_postgres(fresh_postgres_url, tmp_path):
    m = check(fresh_postgres_url, tmp_path)
    relations = {labels[0][1] for (name, labels) in m if name == "anpr_database_size_bytes"}
    assert "events_default" in relations and any(r.startswith("events_y") for r in relations)
    assert (
        sum(v for (name, _), v in m.items() if name == "anpr_database_size_bytes")
        <= m[("anpr_database_total_bytes", ())]
    )


def test_unreadable_sources_do_not_break_the_scrape(tmp_path):
    class Broken:
        def list(self, prefix=""):
            raise OSError("bucket unreachable")

    collector = CapacityCollector(
        EventStore("postgresql+psycopg://nobody@127.0.0.1:1/none", retries=0), Broken()
    )
    collector.refresh_storage(wait=True)
    assert _samples(collector) == {}
    assert storage_class("uploads/cam/x.mp4") == "videos" and storage_class("weird") == "other"
