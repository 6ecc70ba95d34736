"""The embedded store's actor killed mid-run: the run stops within seconds with one line naming the store and
how to resume (its data since the last checkpoint is gone), and `--resume` continues from that checkpoint's
snapshot."""

from __future__ import annotations

import threading

import pytest
import ray
from ray.exceptions import RayError
from test_pipeline import _when, run_driver, small_config

from services.cluster import NAMESPACE, cause_of
from services.driver import Driver
from services.store import StoreError


def test_a_killed_embedded_store_stops_the_run_naming_it_and_resume_restores_it(ray_cluster, tmp_path, tiny_models):
    cfg = small_config(tiny_models, "store-loss", steps=400, **{"learner.checkpoint_every": "5"})
    driver = Driver(cfg, tmp_path)
    killed: list[int] = []

    def kill() -> None:
        _when(lambda: driver.loop is not None and driver.loop.step >= 6)  # checkpoint 5 and its snapshot are saved
        ray.kill(ray.get_actor("paced-store-store-loss", namespace=NAMESPACE), no_restart=True)
        killed.append(driver.loop.step)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    try:
        with pytest.raises((StoreError, RayError)) as raised:
            driver.run()
    finally:
        driver.close()
    thread.join(5)
    assert killed
    message = cause_of(raised.value) if isinstance(raised.value, RayError) else str(raised.value)
    assert "the embedded store (Ray actor 'paced-store-store-loss') died" in message and "--resume" in message

    resumed = small_config(tiny_models, "store-loss", steps=12, **{"learner.checkpoint_every": "5"})
    summary = run_driver(resumed, tmp_path, resume=True)
    assert summary["steps"] == 12 and summary["passrate_histogram_after"]["seen"] > 0
