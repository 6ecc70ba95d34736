"""Screenshot a live dashboard with headless Chromium (the picture in docs/dashboard.png).

    python scripts/dashboard_screenshot.py http://127.0.0.1:8000/ docs/dashboard.png --after-step 250

Waits until the run has trained `--after-step` steps (read from `/api/run`), opens the page with the
problem view of a problem whose pass rate is near 1/2, and saves a full-page PNG. Uses the
system Chromium (`/usr/bin/chromium`, Debian package); never downloads a browser.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the dashboard's address, e.g. http://127.0.0.1:8000/")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--after-step", type=int, default=0, help="wait until the learner has trained this many steps")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for --after-step")
    args = parser.parse_args()
    base = args.url.rstrip("/")

    deadline = time.monotonic() + args.timeout
    while True:
        try:
            step = get(f"{base}/api/run").get("step") or 0
        except OSError:  # not serving yet: the run is still starting
            step = 0
        if step >= args.after_step:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{base}: step {step} after {args.timeout:.0f} s, still below {args.after_step}")
        time.sleep(2)
    fragment = ""
    for _ in range(30):  # the dashboard builds its problem index on first demand
        listing = get(f"{base}/api/problems?bucket=10&limit=1")
        if listing["indexed_at"] is not None:
            fragment = f"#problem={listing['problems'][0]['id']}" if listing["problems"] else ""
            break
        time.sleep(1)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(base + "/" + fragment)
        page.wait_for_function("Number(document.body.dataset.refreshes) >= 1", timeout=30_000)
        page.wait_for_function("Number(document.body.dataset.updates) >= 1", timeout=30_000)
        page.wait_for_timeout(1500)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    if errors:
        raise SystemExit(f"console errors on the page: {errors}")
    print(f"wrote {args.out} (step {step})")


if __name__ == "__main__":
    main()
