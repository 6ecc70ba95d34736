"""The dashboard over every run of a store in a real browser (headless Chromium, /usr/bin/chromium, driven
by Playwright; see test_dashboard_browser.py): the run list while the store is empty and as runs appear,
a run opened from it, and the compare view of two runs (an experiment's PACED and uniform arms) drawn
from what the store holds. Saves tests/artifacts/compare.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dashboard_browser import Page, browser  # noqa: F401 (the browser fixture)
from test_dashboard_runs import record

from services.dashboard.runs import create_runs_app
from services.dashboard.server import DashboardServer, listen
from services.store.redis_server import RedisServer
from services.store.runs import RunList

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "tests" / "artifacts" / "compare.png"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, DashboardServer]]:
    """The runs dashboard over a Redis that holds no run yet."""
    with RedisServer() as redis_server:
        server = DashboardServer(create_runs_app(redis_server.url, None), listen("127.0.0.1", 0)).start()
        yield redis_server.url, server
        server.stop()


def watch(browser: Any, url: str) -> tuple[Any, list[str]]:  # noqa: F811
    """A page at `url` that records console errors, page errors and failed requests."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.goto(url)
    return page, problems


def test_the_list_waits_for_runs_and_opens_one(browser, served) -> None:  # noqa: F811
    url, server = served
    page, problems = watch(browser, server.url)
    page.wait_for_function("() => Number(document.body.dataset.polls) >= 1")
    assert page.locator("#no-runs").is_visible() and page.locator("#runs tbody tr").count() == 0
    record(url, "arm-paced")
    page.wait_for_selector("#runs tbody tr[data-run='arm-paced']", timeout=10_000)
    assert page.locator("#no-runs").is_hidden()
    assert page.locator("#compare").is_disabled()
    page.click("#runs tbody tr[data-run='arm-paced'] a")
    page.wait_for_url(server.url + "runs/arm-paced/")
    page.close()
    run = Page(browser, server.url + "runs/arm-paced/")  # waits for the charts and a stream event
    assert run.page.locator("#run-name").inner_text() == "arm-paced"
    assert run.page.locator("#all-runs").is_visible()
    assert run.js("paced.charts['chart-loss'].data.datasets[0].data.length") == 20
    assert problems == [] and run.problems == []
    run.page.close()


def test_two_runs_are_compared(browser, served) -> None:  # noqa: F811
    url, server = served
    runs = RunList(url)
    if "arm-paced" not in runs.names():  # the test above records it
        record(url, "arm-paced")
    runs.close()
    uniform = record(url, "arm-uniform", uniform=True)
    page, problems = watch(browser, server.url)
    page.wait_for_selector("#runs tbody tr[data-run='arm-uniform']", timeout=10_000)
    page.check("#runs input[value='arm-paced']")
    page.check("#runs input[value='arm-uniform']")
    page.click("#compare")
    page.wait_for_url(server.url + "compare?run=arm-paced&run=arm-uniform")
    page.wait_for_function("() => Number(document.body.dataset.refreshes) >= 1 && paced.compared !== null")
    compared = page.evaluate("() => paced.compared")
    assert [r["name"] for r in compared["runs"]] == ["arm-paced", "arm-uniform"]
    accuracy = page.evaluate("() => paced.charts.accuracy.data.datasets.map((d) => d.data.map((p) => p.y))")
    assert accuracy == [[e["accuracy"] for e in r["evals"]] for r in compared["runs"]] and len(accuracy[0]) == 4
    loss = page.evaluate("() => paced.charts.loss.data.datasets.map((d) => d.data.length)")
    assert loss == [20, 20]
    shares = page.evaluate("() => paced.charts.histogram.data.datasets.map((d) => d.data)")
    counts = uniform.store.histogram()["counts"]
    assert shares[1] == pytest.approx([c / 200 for c in counts])
    labels = page.evaluate("() => paced.charts.histogram.data.datasets.map((d) => d.label)")
    assert labels == ["arm-paced (beta p (1-p))", "arm-uniform (uniform 1)"]
    page.wait_for_timeout(300)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert problems == []
    page.close()


def test_a_compare_of_a_missing_run_says_so(browser, served) -> None:  # noqa: F811
    _, server = served
    page, _ = watch(browser, server.url + "compare?run=arm-paced&run=never")
    page.wait_for_function("() => Number(document.body.dataset.refreshes) >= 1")
    assert "no run 'never'" in page.locator("#error").inner_text()
    page.close()
