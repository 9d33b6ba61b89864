"""The Dagster UI in a real headless Chromium: the asset graph, the video partitions, the sensor.

Starts `dagster dev` (webserver + daemon) on the embedded default with a throwaway
DAGSTER_HOME on a free port, registers two video partitions, then:
- asks the webserver's GraphQL API what it serves (assets, the `videos` partitions, the
  upload sensor and its state);
- renders the `vision` asset graph and the sensor page in headless Chromium
  (`--dump-dom` for assertions, `--screenshot` kept in test-artifacts/ for people).
Skips with a clear message when no Chromium is installed (Debian: apt-get install chromium).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from anpr_pipeline_tests.servers import free_port

# ~1.5 min on 2 cores (dagster dev start-up dominates).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
LOCATION = "anpr_pipeline"  # workspace.yaml's location_name
PARTITIONS = ["cam-north/20261120T080000Z", "cam-east/20261120T090000Z"]
PIPELINE_ASSETS = {"video", "frames", "plate_detections", "plate_reads", "plate_events", "camera_daily_stats"}
START_TIMEOUT_S = 240


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found: install it (Debian: `apt-get install -y chromium`) to run the UI test")


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def _location_loaded(base: str) -> bool:
    data = _graphql(
        base,
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
        " locationOrLoadError { __typename } } } } }",
    )
    entries = {e["name"]: e for e in data["workspaceOrError"]["locationEntries"]}
    entry = entries.get(LOCATION)
    if entry and entry["locationOrLoadError"]["__typename"] == "PythonError":
        raise AssertionError(f"code location failed to load: {entry}")
    return bool(entry) and entry["loadStatus"] == "LOADED"


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    chromium = _chromium()
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ANPR_DATA_DIR": str(root / "data"),
        "ANPR_DEVICE": "cpu",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    env.pop("ANPR_DATABASE_URL", None)
    env.pop("ANPR_BUCKET_DIR", None)
    # The partitions exist before the UI starts, as after an upload sensor tick.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from dagster import DagsterInstance; "
            "DagsterInstance.get().add_dynamic_partitions('videos', sys.argv[1:])",
            *PARTITIONS,
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    log_path = root / "dagster-dev.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(REPO / "workspace.yaml"),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"dagster dev exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if _location_loaded(base):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"UI not ready in {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        # The first-visit "Join the Dagster community" dialog would cover the screenshots.
        _graphql(base, "mutation { setNuxSeen }")
        yield base, chromium
    finally:
        # dagster dev runs webserver, daemon and code servers in its own process group.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _chrome(chromium: str, url: str, *action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1600,1000",
            # The UI is a single-page app: let it fetch and render before capturing.
            "--virtual-time-budget=20000",
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def _page(chromium: str, url: str, screenshot: str) -> str:
    """The rendered text of a page; its screenshot goes to test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    shot.unlink(missing_ok=True)
    taken = _chrome(chromium, url, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    dumped = _chrome(chromium, url, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    return _visible_text(dumped.stdout)


def test_api_serves_assets_partitions_and_sensor(dagster_ui):
    base, _ = dagster_ui
    nodes = _graphql(base, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    assert PIPELINE_ASSETS <= {"/".join(n["assetKey"]["path"]) for n in nodes}
    video = _graphql(
        base,
        """
        { assetNodeOrError(assetKey: {path: ["video"]}) { ... on AssetNode {
            partitionKeys
            partitionDefinition { dimensionTypes { dynamicPartitionsDefinitionName } } } } }
    """,
    )["assetNodeOrError"]
    assert sorted(video["partitionKeys"]) == sorted(PARTITIONS)
    assert video["partitionDefinition"]["dimensionTypes"][0]["dynamicPartitionsDefinitionName"] == "videos"
    sensor = _graphql(
        base,
        """
        query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
            ... on Sensor { name sensorState { status } targets { pipelineName } } } }
    """,
        {
            "s": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "sensorName": "upload_sensor",
            }
        },
    )["sensorOrError"]
    assert sensor["sensorState"]["status"] == "RUNNING"
    assert sensor["targets"][0]["pipelineName"] == "process_video"


def test_browser_shows_asset_graph_with_partitions(dagster_ui):
    base, chromium = dagster_ui
    text = _page(chromium, f"{base}/locations/{LOCATION}/asset-groups/vision", "ui_asset_graph_vision.png")
    for name in ("frames", "plate_detections", "plate_reads", "video", "plate_events"):
        assert re.search(rf"\b{name}\b", text), f"{name} not in the rendered asset graph: {text[:1500]}"
    assert f"{len(PARTITIONS)} partitions" in text, text[:1500]


def test_browser_shows_the_upload_sensor(dagster_ui):
    base, chromium = dagster_ui
    text = _page(chromium, f"{base}/locations/{LOCATION}/sensors/upload_sensor", "ui_upload_sensor.png")
    assert "upload_sensor" in text and "process_video" in text, text[:1500]
    assert "Running" in text, text[:1500]
