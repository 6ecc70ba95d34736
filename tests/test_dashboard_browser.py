"""The dashboard page in a real browser: headless Chromium (/usr/bin/chromium, the Debian package) driven
by Playwright against the dashboard served by uvicorn on a free loopback port, over a run recorded in a
real Redis step by step (one histogram snapshot per step, as during a run).

Also saves tests/artifacts/dashboard.png (the README shows a copy of one, docs/dashboard.png).
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_data import SimulatedRun
from playwright.sync_api import sync_playwright

from services.dashboard import start_in_thread
from services.dashboard.server import DashboardServer
from services.records import Outcome
from services.store import RedisStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-token"
SCREENSHOT = REPO / "tests" / "artifacts" / "dashboard.png"  # docs/dashboard.png is a copy of one


@pytest.fixture(scope="module")
def run(redis_url: str) -> Iterator[tuple[RedisStore, SimulatedRun, DashboardServer]]:
    store = RedisStore(redis_url, run_name="demo")  # the name the screenshot shows
    sim = SimulatedRun(store, store.run_name, problems=1000, steps=120, per_step=48)
    server = start_in_thread(store, store.run_name, "127.0.0.1", 0, TOKEN)
    view = server.app.state.view
    sim.start()
    view.refresh()
    for _ in range(sim.steps_total):
        sim.train_step()
        if sim.step % 10 == 0:
            sim.evaluate()
        view.refresh()
    yield store, sim, server
    server.stop()
    store.clear()
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        raise FileNotFoundError(f"{CHROMIUM} is missing: install the Debian package (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A page of the dashboard that records console errors, page errors and failed requests.

    Waits pass functions ("() => ..."), not expressions: Playwright evaluates an expression with eval,
    which the page's Content-Security-Policy refuses.
    """

    def __init__(self, browser: Any, url: str) -> None:
        self.problems: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.page.goto(url)
        # Loaded: the charts were fetched once and the stream delivered an event.
        self.page.wait_for_function("() => Number(document.body.dataset.refreshes) >= 1", timeout=15_000)
        self.page.wait_for_function("() => Number(document.body.dataset.updates) >= 1", timeout=15_000)

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)


@pytest.fixture
def page(browser, run) -> Iterator[Page]:
    _, _, server = run
    p = Page(browser, server.url)
    yield p
    p.page.close()


def test_screenshot_of_the_dashboard(browser, run) -> None:
    """First, while the page shows the recorded run and nothing the later tests add."""
    _, sim, server = run
    p = Page(browser, server.url + f"#problem={sim.pool[12].id}")
    p.page.set_viewport_size({"width": 1400, "height": 1500})
    p.page.wait_for_function("() => paced.problem !== null")
    p.page.wait_for_timeout(500)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    p.page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 50_000 and p.problems == []
    p.page.close()


def test_page_loads_with_no_console_errors(page: Page) -> None:
    page.page.wait_for_timeout(1500)  # a second refresh round and a few stream events
    assert page.problems == []
    assert page.page.locator("#error").is_hidden()


def test_another_page_cannot_frame_the_dashboard(browser, run) -> None:
    _, _, server = run
    page = browser.new_page()
    refusals: list[str] = []
    page.on("console", lambda m: "frame-ancestors" in m.text and refusals.append(m.text))
    page.set_content(f'<iframe id="f" src="{server.url}"></iframe>')
    page.wait_for_function("() => document.getElementById('f').contentWindow !== null")
    page.wait_for_timeout(1500)
    assert refusals and "'none'" in refusals[0]
    assert all(f.url != server.url for f in page.frames[1:])  # what loaded there is Chromium's error page
    page.close()


def test_histogram_renders_from_the_stores_counters(page: Page, run) -> None:
    store, _, _ = run
    hist = store.histogram()
    assert page.js("paced.charts['chart-histogram'].data.datasets[0].data") == hist["counts"]
    weights = page.js("paced.charts['chart-histogram'].data.datasets[1].data")
    centers = [(i + 0.5) / 20 for i in range(20)]
    assert weights == pytest.approx([c * (1 - c) for c in centers])
    assert page.page.locator("#stat-seen").inner_text() == "1000 / 1000"
    # Pixels were drawn: the histogram and the heatmap (one column per snapshot: warm-up + 120 steps).
    assert page.js("paced.charts['chart-histogram'].getDatasetMeta(0).data.length") == 20
    assert page.js("paced.heatmapColumns") == 121


def test_a_live_update_appears_after_new_outcomes_are_recorded(page: Page, run) -> None:
    store, _, _ = run
    before = page.js("paced.seen")
    fresh = [f"late-{uuid.uuid4().hex[:6]}-{i}" for i in range(7)]
    store.register_problems(fresh, ["L1"] * len(fresh))
    store.record_outcomes([Outcome(rollout_id=f"{pid}-r", problem_id=pid, correct=True, version=120) for pid in fresh])
    page.page.wait_for_function(f"() => paced.seen === {before + 7}", timeout=5_000)
    assert page.page.locator("#stat-seen").inner_text().startswith(str(before + 7))
    assert page.js("paced.charts['chart-histogram'].data.datasets[0].data") == store.histogram()["counts"]


def test_scale_control_changes_the_desired_replicas(page: Page, run) -> None:
    store, _, _ = run
    page.page.fill("#token", TOKEN)
    page.page.fill("#scale-n", "5")
    page.page.click("#scale")
    page.page.wait_for_function("() => document.getElementById('control-msg').className === 'msg good'")
    assert store.desired_replicas("rollout") == 5
    assert "desired rollout replicas 5" in page.page.locator("#control-msg").inner_text()
    store.set_desired_replicas("rollout", 2)


def test_scale_control_is_refused_without_the_token(page: Page, run) -> None:
    store, _, _ = run
    page.page.fill("#token", "")
    page.page.fill("#scale-n", "9")
    page.page.click("#scale")
    page.page.wait_for_function("() => document.getElementById('control-msg').className === 'msg bad'")
    assert "refused (401)" in page.page.locator("#control-msg").inner_text()
    assert store.desired_replicas("rollout") == 2


def test_pause_and_resume_buttons(page: Page, run) -> None:
    store, _, _ = run
    page.page.fill("#token", TOKEN)
    page.page.click("#pause")
    page.page.wait_for_function("() => document.getElementById('control-msg').textContent.includes('paused')")
    assert store.paused() is True
    page.page.wait_for_function("() => document.getElementById('stat-paused').textContent === 'paused'")
    page.page.click("#resume")
    page.page.wait_for_function("() => document.getElementById('control-msg').textContent.includes('running')")
    assert store.paused() is False


def test_problem_view_shows_a_problems_window_and_rollouts(page: Page, run) -> None:
    store, sim, _ = run
    pid = sim.pool[3].id
    page.page.fill("#problem-id", pid)
    page.page.press("#problem-id", "Enter")
    page.page.wait_for_function(f"() => paced.problem && paced.problem.problem_id === '{pid}'")
    rows = page.page.locator("#rollouts tbody tr")
    assert rows.count() == len(store.latest_rollouts(pid))
    window = store.problem_history(pid).estimate.n
    assert page.js("paced.charts['chart-problem'].data.datasets[0].data.length") == window
    page.page.fill("#problem-id", "no-such-problem")
    page.page.press("#problem-id", "Enter")
    page.page.wait_for_function("() => document.getElementById('problem-msg').textContent.includes('no problem')")
    assert page.page.locator("#problem").is_hidden()


def test_clicking_a_histogram_bar_lists_its_problems(page: Page, run) -> None:
    store, _, _ = run
    counts = store.histogram()["counts"]
    bucket = max(range(20), key=counts.__getitem__)
    page.js(f"listBucket({bucket})")
    page.page.wait_for_selector("#bucket-list a", timeout=10_000)
    first = page.page.locator("#bucket-list a").first
    first.click()
    page.page.wait_for_function("() => paced.problem !== null")
    assert page.js("paced.problem.bucket") == bucket


def test_a_run_of_one_step_says_one_step_not_one_steps(browser, redis_url: str) -> None:
    store = RedisStore(redis_url, run_name="one-step")
    sim = SimulatedRun(store, store.run_name, problems=50, steps=1, per_step=8)
    server = start_in_thread(store, store.run_name, "127.0.0.1", 0, None)
    try:
        sim.start()
        sim.train_step()
        server.app.state.view.refresh()
        p = Page(browser, server.url)
        p.page.wait_for_function("() => document.getElementById('loss-note').textContent !== ''")
        assert p.page.locator("#loss-note").text_content() == "last 1 step"
        assert re.fullmatch(r"step 1, \d+ sequences", p.page.locator("#trained-note").text_content())
        p.page.wait_for_function("() => document.getElementById('heatmap-note').textContent !== ''")
        assert p.page.locator("#heatmap-note").text_content() == "1 step; 2 blank rows: no estimate can fall there"
        assert p.problems == []
        p.page.close()
    finally:
        server.stop()
        store.clear()
        store.close()
