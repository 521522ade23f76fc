"""The operator's flow through the Dagster UI, in a real headless Chromium.

A `dagster dev` (webserver + daemon) runs on a free port of 127.0.0.1 with a temporary DAGSTER_HOME and the
demo database; Playwright for Python drives the system Chromium (no browser download). Screenshots land in
retention_pipeline_tests/browser/artifacts/ (RETENTION_BROWSER_ARTIFACTS overrides it); the two the README
shows are copied to docs/screenshots/ when missing, or always with RETENTION_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.demo import build_demo, demo_environment
from retention_pipeline.core.schema import events

from .helpers import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    JOB_PATH,
    LOCATION,
    VIEWPORT,
    DagsterServer,
    dagster_dev,
    dismiss_community_dialog,
    find_chromium,
    latest_observation_labels,
    run_status,
    screenshot,
    should_show_community_dialog,
    step_output_metadata,
    table_value,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: the UI test needs /usr/bin/chromium or `chromium` on PATH (apt-get install chromium)"
    "; Playwright drives it, no browser download",
)

RUN_URL = re.compile(r"/runs/(?P<run_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
RUN_TIMEOUT_MS = 90_000
CAMERA_ASSETS = ("events", "detections", "gpu_stats", "logs", "thumbnails", "images", "clips")


# --------------------------------------------------------------------------------------------------------
# Fixtures: the demo, the Dagster instance, the browser.


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ui_demo")
    build_demo(base)
    return base


@pytest.fixture(scope="module")
def server(demo: Path) -> Iterator[DagsterServer]:
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    with dagster_dev(demo.parent / f"{demo.name}_dagster", demo_environment(demo)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a missing dev dependency fails, it does not skip
        pytest.fail("Chromium is installed but Playwright is not: pip install playwright (the dev extra)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no local storage) per test; its last screen is saved whatever happens."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    try:
        screenshot(page, f"{request.node.name}_last")
    finally:
        context.close()


# --------------------------------------------------------------------------------------------------------
# Steps an operator takes.


def demo_event_times(demo: Path) -> list[datetime]:
    engine = make_engine(demo_environment(demo)["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(events.c.started_at)))
    finally:
        engine.dispose()


def demo_files(demo: Path) -> int:
    return sum(1 for p in (demo / "data").rglob("*") if p.is_file() and p.suffix in (".jpg", ".mp4"))


def open_launchpad(page: Page, server: DagsterServer) -> None:
    page.goto(f"{server.url}{JOB_PATH}/playground")
    dismiss_community_dialog(page, server)
    assert not should_show_community_dialog(server), "Skip did not dismiss the community dialog"
    page.get_by_text(re.compile(r"^Jobs\s*/\s*data_cleanup$")).wait_for()  # the page header
    assert page.title() == "Jobs | data_cleanup | Launchpad"
    editor = page.locator(".CodeMirror")
    editor.wait_for()
    assert "dry_run: true" in editor.inner_text(), "the Launchpad's default config is not a dry run"
    page.get_by_text("No errors").wait_for()  # the config validates against the job's schema
    page.locator("button:not([disabled])", has_text="Launch Run").wait_for()


def launch_and_wait(page: Page, server: DagsterServer) -> str:
    """Launch Run, follow to the run page, wait until it has finished; the run id."""
    page.get_by_text("No errors").wait_for()  # the edited config still validates
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(RUN_URL)
    match = RUN_URL.search(page.url)
    assert match, page.url
    run_id = match["run_id"]
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    status.wait_for(timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "Success", (
        f"run {run_id} ended {status.inner_text()} (API says {run_status(server, run_id)}):\n"
        + server.log_tail()
    )
    assert run_status(server, run_id) == "SUCCESS"
    page.get_by_text("RUN_SUCCESS").first.wait_for()
    return run_id


def open_report_output(page: Page) -> Locator:
    """Filter the event log to report_cleanup's output and open its full metadata: the dialog (or the page,
    should the UI ever show that metadata whole, the filter leaving only this one output)."""
    log_filter = page.get_by_placeholder("Filter…")
    log_filter.fill("step:report_cleanup type:STEP_OUTPUT")
    log_filter.press("Enter")
    page.get_by_text('Yielded output "result" of type "CleanupStats"').wait_for()
    screenshot(page, "03_run_report_output")
    more = page.get_by_role("button", name="View full message")
    if more.count() == 0:
        return page.locator("body")
    more.first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(re.compile(r"^(space_reclaimed|space_to_reclaim)$")).wait_for()
    return dialog


# --------------------------------------------------------------------------------------------------------
# The tests.


def test_launchpad_dry_run_shows_cleanup_stats(page: Page, server: DagsterServer, demo: Path) -> None:
    times_before, files_before = demo_event_times(demo), demo_files(demo)

    open_launchpad(page, server)
    assert page.get_by_role("tab", name="Launchpad").get_attribute("aria-selected") == "true"
    screenshot(page, "01_launchpad", readme_name="launchpad.png")

    run_id = launch_and_wait(page, server)
    page.get_by_text(re.compile(r"^Run of\s*data_cleanup\b")).first.wait_for()  # the run page header
    page.get_by_text("report_cleanup").first.wait_for()  # the step that reports, in the event log
    screenshot(page, "02_run_success")

    scope = open_report_output(page)
    # A dry run's counts are labelled as what would be deleted, on the page as in the CLI.
    shown = {
        key: table_value(scope, key) for key in ("dry_run", "cutoff", "events_to_delete", "space_to_reclaim")
    }
    page.wait_for_timeout(600)  # the dialog fades in; a picture taken sooner shows the page through it
    screenshot(page, "04_run_stats", readme_name="run_stats.png")

    stored = step_output_metadata(server, run_id, "report_cleanup")
    for key in ("events_to_delete", "space_to_reclaim", "dry_run"):
        assert shown[key] == stored[key], f"{key}: page shows {shown[key]!r}, Dagster stored {stored[key]!r}"
    assert "events_deleted" not in stored and "space_reclaimed" not in stored
    assert shown["dry_run"] == "true"
    cutoff = datetime.fromisoformat(shown["cutoff"])
    expired = sum(1 for t in times_before if t < cutoff)
    assert expired > 0, "the demo should hold events older than the retention"
    assert int(shown["events_to_delete"]) == expired
    assert int(shown["space_to_reclaim"]) > 0
    # A dry run reports what it would delete and deletes nothing.
    assert demo_event_times(demo) == times_before
    assert demo_files(demo) == files_before


def run_count(server: DagsterServer) -> int:
    data = server.graphql("{ runsOrError { __typename ... on Runs { count } } }")
    return int(data["runsOrError"]["count"])


def test_launchpad_refuses_a_value_out_of_bounds_and_launches_nothing(
    page: Page, server: DagsterServer
) -> None:
    runs_before = run_count(server)
    open_launchpad(page, server)
    # The Launchpad's editor is CodeMirror; its API replaces the text as typing would.
    page.evaluate(
        "() => { const cm = document.querySelector('.CodeMirror').CodeMirror;"
        " cm.setValue(cm.getValue().replace('dry_run: true', 'dry_run: true\\n      retention_days: 0')); }"
    )
    # Dagster's schema has no ranges: the editor accepts the value, the launch check refuses it.
    page.get_by_text("No errors").wait_for()
    page.get_by_role("button", name="Launch Run").click()
    page.get_by_text("retention_days must be greater than or equal to 1, got 0").first.wait_for()
    page.wait_for_timeout(600)  # the dialog fades in
    screenshot(page, "05_launch_refused")
    assert RUN_URL.search(page.url) is None
    assert run_count(server) == runs_before


# --------------------------------------------------------------------------------------------------------
# The asset graph (issue 6, part 1): runs as soon as the code location declares its assets.


def _declared_assets() -> list[str]:
    from retention_pipeline.definitions import defs

    return [spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()]


@pytest.mark.skipif(not _declared_assets(), reason="assets not declared yet")
def test_asset_graph_and_asset_page_with_observations(page: Page, server: DagsterServer, demo: Path) -> None:
    # Observations follow real runs only: the operator sets dry_run: false in the Launchpad.
    open_launchpad(page, server)
    editor = page.locator(".CodeMirror")
    editor.locator(".CodeMirror-line", has_text="dry_run: true").locator("text=true").dblclick()
    page.keyboard.type("false")
    assert "dry_run: false" in editor.inner_text()
    run_id = launch_and_wait(page, server)
    stats = step_output_metadata(server, run_id, "report_cleanup")
    assert stats["dry_run"] == "false"
    rows_left = len(demo_event_times(demo))

    # The asset graph of the group, every asset in it.
    page.goto(f"{server.url}/locations/{LOCATION}/asset-groups/camera_system/lineage")
    page.get_by_text("camera_system").first.wait_for()
    for name in CAMERA_ASSETS:
        page.get_by_text(name, exact=True).first.wait_for(state="attached")
    screenshot(page, "05_asset_graph")

    # The events asset: description, group, where its files go, and its latest observation.
    page.goto(f"{server.url}/assets/events")
    page.get_by_text("Camera events. Deleted when started_at is older than RETENTION_DAYS").wait_for()
    assert page.get_by_text("camera_system").first.is_visible()
    for downstream in ("clips", "detections"):
        assert page.locator(f'a[href="/assets/{downstream}"]').count() >= 1, f"events -> {downstream} missing"
    metadata = page.locator("table", has=page.get_by_text("rows_deleted", exact=True))
    metadata.wait_for()
    assert table_value(metadata, "rows") == str(rows_left)
    assert table_value(metadata, "rows_deleted") == stats["events_deleted"] != "0"
    screenshot(page, "06_asset_page")

    # Its observations plotted over time: one chart per numeric metadata key.
    labels = latest_observation_labels(server, "events")
    assert "rows" in labels and "rows_deleted" in labels, labels
    page.get_by_text("Plots", exact=True).click()
    for label in labels:
        page.get_by_text(label, exact=True).first.wait_for()
    assert page.locator("canvas").count() >= len(labels)
    page.get_by_text("Metadata", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    screenshot(page, "07_asset_plots")


# --------------------------------------------------------------------------------------------------------
# Run history at a glance (issue 24): each run's figures as chips on the Runs page.

RUNS_QUERY = """
query { runsOrError(filter: {pipelineName: "data_cleanup"}) {
  ... on Runs { results { runId status tags { key value } } } } }
"""


def finished_cleanup_runs(server: DagsterServer) -> dict[str, dict[str, str]]:
    """run id -> tags of every successful data_cleanup run."""
    results = server.graphql(RUNS_QUERY)["runsOrError"]["results"]
    return {
        run["runId"]: {tag["key"]: tag["value"] for tag in run["tags"]}
        for run in results
        if run["status"] == "SUCCESS"
    }


def launch(page: Page, server: DagsterServer, dry_run: bool) -> str:
    open_launchpad(page, server)
    if not dry_run:
        editor = page.locator(".CodeMirror")
        editor.locator(".CodeMirror-line", has_text="dry_run: true").locator("text=true").dblclick()
        page.keyboard.type("false")
    return launch_and_wait(page, server)


def test_runs_page_shows_each_runs_figures_and_no_bookkeeping(page: Page, server: DagsterServer) -> None:
    runs = finished_cleanup_runs(server)
    # The tests above leave a dry run and a real run; launched here when this test runs alone.
    for dry_run in ("true", "false"):
        if not any(tags.get("dry_run") == dry_run for tags in runs.values()):
            launch(page, server, dry_run == "true")
    runs = finished_cleanup_runs(server)

    page.goto(f"{server.url}/runs")
    dismiss_community_dialog(page, server)
    for run_id, tags in runs.items():
        # The run's cell: the smallest block around its link that holds its chips.
        link = page.locator(f'a[href*="{run_id}"]').first
        row = link.locator("xpath=ancestor::*[contains(normalize-space(.), 'space_reclaimed')][1]")
        row.wait_for()
        shown = row.inner_text()
        for key in ("dry_run", "events_deleted", "detections_deleted", "files_deleted", "space_reclaimed"):
            assert f"{key}: {tags[key]}" in shown, f"chip {key}: {tags[key]} missing from {shown!r}"
        for bookkeeping in (
            "retention_pipeline/pid",
            "retention_pipeline/host",
            "retention_pipeline/trigger",
        ):
            assert bookkeeping not in shown and bookkeeping not in tags
    screenshot(page, "08_runs_page", readme_name="runs_page.png")

    # Filtering by a figure's tag: every real run.
    page.goto(f"{server.url}/runs?q%5B%5D=tag%3Adry_run%3Dfalse")
    real = [run_id for run_id, tags in runs.items() if tags["dry_run"] == "false"]
    page.locator(f'a[href*="{real[0]}"]').first.wait_for()
    for run_id, tags in runs.items():
        if tags["dry_run"] == "true":
            assert page.locator(f'a[href*="{run_id}"]').count() == 0, (
                "a dry run passed the dry_run=false filter"
            )
    screenshot(page, "09_runs_filtered")
