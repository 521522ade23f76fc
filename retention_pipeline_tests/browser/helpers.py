"""What the browser test needs around the browser: the system Chromium, a Dagster webserver and daemon on
a free port of 127.0.0.1 with their own DAGSTER_HOME, GraphQL look-ups, and screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, ViewportSize

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RETENTION_BROWSER_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
README_SCREENSHOTS = REPO / "docs" / "screenshots"
# The two screenshots the README shows, refreshed when missing or when this variable is 1, so a normal
# test run does not rewrite committed pictures.
UPDATE_README_SCREENSHOTS = os.environ.get("RETENTION_UPDATE_SCREENSHOTS") == "1"

# The system Chromium only: Playwright never downloads a browser here.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}
LOCATION = "retention_pipeline"
# The code location's one repository is Dagster's implicit `__repository__`, which the UI leaves out.
JOB_PATH = f"/locations/{LOCATION}/jobs/data_cleanup"
COMMUNITY_DIALOG = "Join the Dagster community"


def find_chromium() -> str | None:
    """Debian's /usr/bin/chromium, else a `chromium` on PATH."""
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DagsterServer:
    """A running `dagster dev` (webserver, daemon, code server) in its own process group."""

    url: str
    home: Path
    log: Path
    process: subprocess.Popen[bytes]

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.load(response)
        if answer.get("errors"):
            raise AssertionError(f"GraphQL errors: {answer['errors']}")
        data: dict[str, Any] = answer["data"]
        return data

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def server_environment(
    demo_env: Mapping[str, str], home: Path, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The shell's environment with the demo's settings, a private DAGSTER_HOME, and nothing that fires by
    itself during the test: the schedules are twelve hours away, the disk-pressure sensor needs a full disk.
    `overrides` come last, for a test that needs one of these otherwise (e.g. its own CLEANUP_TIME).
    """
    env = dict(os.environ)
    env.update(demo_env)
    far = datetime.now(UTC) + timedelta(hours=12)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "RETENTION_DAYS": "30",
            "LOG_RETENTION_DAYS": "7",
            "CLEANUP_TIME": f"{far:%H:%M}",
            "CLEANUP_TIMEZONE": "UTC",
            "DISK_FREE_MIN_PERCENT": "1",
            "DISK_FREE_TARGET_PERCENT": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides or {})
    return env


def _stop_group(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM to the whole process group (webserver, daemon, code servers, run workers), SIGKILL if it
    lingers; says how it went."""
    started = time.monotonic()
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return "dagster dev had already exited"
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(pgid, 0)  # anyone of the group still alive?
            except ProcessLookupError:
                return f"process group {pgid} stopped by {sig.name} in {time.monotonic() - started:.1f}s"
            time.sleep(0.2)
    return f"process group {pgid} still alive {time.monotonic() - started:.0f}s after SIGKILL"


@contextmanager
def dagster_dev(
    workdir: Path,
    demo_env: Mapping[str, str],
    startup_timeout: float = 120.0,
    env_overrides: Mapping[str, str] | None = None,
) -> Iterator[DagsterServer]:
    """`dagster dev` on 127.0.0.1 with a fresh DAGSTER_HOME holding a copy of the repository's
    dagster.yaml; yields once the webserver answers, the code location has loaded and the daemon
    beats; always tears the whole process group down."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log = workdir / "dagster_dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=server_environment(demo_env, home, env_overrides),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = DagsterServer(url=f"http://127.0.0.1:{port}", home=home, log=log, process=process)
    try:
        _wait_until_ready(server, startup_timeout)
        yield server
    finally:
        outcome = _stop_group(process)
        with log.open("a") as out:
            out.write(f"\n[browser test] {outcome}\n")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / "dagster_dev.log")


def _wait_until_ready(server: DagsterServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    stage = "webserver /server_info"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"dagster dev exited with {server.process.returncode} while waiting for {stage}:\n"
                + server.log_tail()
            )
        if stage.startswith("webserver"):
            info = _get(f"{server.url}/server_info")
            if info and b"dagster_webserver_version" in info:
                stage = "code location"
        if stage == "code location":
            data = server.graphql(
                "{ repositoriesOrError { ... on RepositoryConnection"
                " { nodes { location { name } pipelines { name } } } } }"
            )
            nodes = data["repositoriesOrError"].get("nodes", [])
            if any(p["name"] == "data_cleanup" for n in nodes for p in n["pipelines"]):
                stage = "daemon heartbeat"
        if stage == "daemon heartbeat":
            data = server.graphql(
                "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
            )
            statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
            coordinator = [s for s in statuses if s["daemonType"] == "QUEUED_RUN_COORDINATOR"]
            if coordinator and coordinator[0]["healthy"]:
                return
        time.sleep(0.5)
    raise AssertionError(
        f"dagster dev not ready after {timeout:.0f}s (waiting for {stage}):\n" + server.log_tail()
    )


def run_status(server: DagsterServer, run_id: str) -> str:
    data = server.graphql(
        "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }", {"id": run_id}
    )
    return str(data["runOrError"].get("status", data["runOrError"]["__typename"]))


def step_output_metadata(server: DagsterServer, run_id: str, step: str) -> dict[str, str]:
    """The output metadata Dagster stored for one step of a run, as the UI would print it."""
    data = server.graphql(
        """query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events {
             __typename ... on ExecutionStepOutputEvent { stepKey metadataEntries { label __typename
               ... on IntMetadataEntry { intRepr } ... on TextMetadataEntry { text }
               ... on FloatMetadataEntry { floatValue } ... on BoolMetadataEntry { boolValue } } } } } } }""",
        {"id": run_id},
    )
    for event in data["logsForRun"]["events"]:
        if event["__typename"] == "ExecutionStepOutputEvent" and event["stepKey"] == step:
            out = {}
            for entry in event["metadataEntries"]:
                values = [v for k, v in entry.items() if k not in ("label", "__typename")]
                out[entry["label"]] = str(values[0]).lower() if values else ""
            return out
    raise AssertionError(f"run {run_id} has no output event of step {step}")


def latest_observation_labels(server: DagsterServer, asset: str) -> list[str]:
    """Labels of the numeric metadata of the asset's latest observation."""
    data = server.graphql(
        """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { __typename ... on Asset {
             assetObservations(limit: 1) { metadataEntries { label __typename } } } } }""",
        {"key": {"path": [asset]}},
    )
    observations = data["assetOrError"].get("assetObservations") or []
    if not observations:
        return []
    numeric = ("IntMetadataEntry", "FloatMetadataEntry")
    return [e["label"] for e in observations[0]["metadataEntries"] if e["__typename"] in numeric]


def should_show_community_dialog(server: DagsterServer) -> bool:
    return bool(server.graphql("{ shouldShowNux }")["shouldShowNux"])


def dismiss_community_dialog(page: Page, server: DagsterServer) -> None:
    """The first visit to a local instance shows "Join the Dagster community" (a second after the page
    loads); Skip tells the instance, so it does not come back. Then a watch is set, should it show again."""
    if should_show_community_dialog(server):
        dialog = page.get_by_text(COMMUNITY_DIALOG)
        dialog.wait_for(state="visible", timeout=30_000)
        # Skip tells the instance through the SetNuxSeen mutation; wait for its answer.
        with page.expect_response(
            lambda r: "/graphql" in r.url and "SetNuxSeen" in (r.request.post_data or "")
        ):
            page.get_by_role("button", name="Skip").click()
        dialog.wait_for(state="hidden")
    watch_for_community_dialog(page)


def watch_for_community_dialog(page: Page) -> None:
    """Safety net: should the dialog cover the page again, any action first clicks Skip."""
    page.add_locator_handler(
        page.get_by_text(COMMUNITY_DIALOG), lambda: page.get_by_role("button", name="Skip").click()
    )


def table_value(scope: Locator, key: str) -> str:
    """The value cell (the row's last cell) of the metadata table row whose first cell is `key`."""
    row = scope.locator("tr").filter(
        has=scope.page.locator("td:first-child", has_text=re.compile(f"^{key}$"))
    )
    if row.count() != 1:
        raise AssertionError(f"expected one metadata row {key!r}, found {row.count()}")
    return row.locator("td").last.inner_text().strip().replace(",", "")


def screenshot(page: Page, name: str, readme_name: str | None = None) -> Path:
    """A PNG in ARTIFACTS; with readme_name, also the README's copy under docs/screenshots/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if readme_name:
        target = README_SCREENSHOTS / readme_name
        if UPDATE_README_SCREENSHOTS or not target.exists():
            README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return path
