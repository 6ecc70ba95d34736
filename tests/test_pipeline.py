"""The whole graph on a real local Ray cluster, on both store backends, with real (randomly
initialised) tiny models: these tests check the plumbing - steps, accounting, scaling, crashes,
resume - not learning. Each run is small (a pool of ~150 synthetic problems, a few learner steps);
`make demo` is the full-size run with the shipped, trained models.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
import torch

from paced_core.config import load_config
from paced_core.tasks import get_template
from services.cluster import NAMESPACE
from services.driver import ROLE, Driver

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def small_run(models: dict[str, str], run_name: str, steps: int = 6) -> dict[str, str]:
    """The overrides of configs/demo.yaml for a small run on the tiny random models."""
    return {
        "student.path": models["student"],
        "teacher.path": models["teacher"],
        "run.name": run_name,
        "run.log_every_s": "1",
        "run.eval_every": "1000",
        "data.train.n": "160",
        "learner.steps": str(steps),
        "learner.batch_size": "16",
        "pipeline.problems_per_request": "8",
        "pipeline.warmup_samples": "1",
        "pipeline.eval_problems": "16",
        "pipeline.learner_wait_s": "20",
        "rollout.batch_size": "64",
        "dashboard.port": "0",
        # demo.yaml starts with forward KL on verified teacher references, which a random teacher never gives.
        "schedule": "{type: constant, loss: {kind: reverse_kl}}",
        # Random models solve nothing (p = 0 everywhere, PACED weight 0): uniform trains on every known problem.
        "scheduler.kernel": "{type: uniform}",
    }


def small_config(models: dict[str, str], run_name: str, steps: int = 6, redis_url: str | None = None, **extra: str):
    overrides = {**small_run(models, run_name, steps), **extra}
    if redis_url:
        overrides["store.url"] = redis_url
    return load_config(REPO / "configs" / "demo.yaml", [f"{k}={v}" for k, v in overrides.items()])


def read_steps(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "step"]


def assert_every_graded_rollout_is_accounted_for(summary: dict) -> None:
    accounted = (
        summary["rollouts_used"]
        + summary["rollouts_dropped_stale"]
        + summary["rollouts_dropped_offstage"]
        + summary["rollouts_left_in_queue"]
    )
    assert summary["rollouts_graded"] == accounted, summary


def run_driver(cfg, out: Path, resume: bool = False) -> dict:
    driver = Driver(cfg, out, resume=resume)
    try:
        return driver.run()
    finally:
        driver.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_full_graph_runs_a_few_steps(backend, ray_cluster, redis_url, tmp_path, tiny_models):
    cfg = small_config(tiny_models, f"graph-{backend}", redis_url=redis_url if backend == "redis" else None)
    summary = run_driver(cfg, tmp_path)
    assert summary["steps"] == 6
    assert [r["step"] for r in read_steps(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert summary["rollouts_used"] >= 6 * 16
    assert_every_graded_rollout_is_accounted_for(summary)
    # Warm-up sampled every pool problem, so the "before" histogram covers the whole pool.
    assert summary["passrate_histogram_before"]["seen"] == 144  # 160 minus 10% held out
    assert 0.0 <= summary["heldout_accuracy_before"] <= 1.0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["steps"] == 6 and saved["run"] == f"graph-{backend}"


def test_sync_mode_runs_the_same_graph(ray_cluster, tmp_path, tiny_models, capsys):
    cfg = small_config(tiny_models, "graph-sync", **{"pipeline.mode": "sync", "run.log_every_s": "0.001"})
    summary = run_driver(cfg, tmp_path)
    assert summary["steps"] == 6 and summary["mode"] == "sync"
    assert_every_graded_rollout_is_accounted_for(summary)
    # Progress lines say the time left: after a step, from this run's rate; the last one, done.
    lines = [line for line in capsys.readouterr().out.splitlines() if "] step " in line]
    assert re.search(r"step [1-5]/6 \(eta \d+ s\) loss", "\n".join(lines)) and "step 6/6 (done)" in lines[-1]


def run_while(driver: Driver, action) -> dict:
    """Run the driver to the end while `action` runs beside it (in a thread, as a user would act)."""
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    try:
        return driver.run()
    finally:
        driver.close()
        thread.join(timeout=5)


def _when(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.2)


def sigkill_once_training(driver, stats) -> tuple:
    """(action for `run_while`, pids killed): once the learner has used 16 rollouts, SIGKILL the actor whose
    `stats()` (a dict with its "pid") is given."""
    killed: list[int] = []

    def kill() -> None:
        _when(lambda: driver.state.used >= 16)
        pid = stats()["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    return kill, killed


def test_scale_up_and_down_during_a_run(ray_cluster, tmp_path, tiny_models):
    cfg = small_config(tiny_models, "scale", steps=400, **{"learner.max_staleness": "1000"})
    driver = Driver(cfg, tmp_path)
    seen_counts: list[int] = []

    def steer() -> None:
        _when(lambda: driver.state.used > 0)
        driver.store.set_desired_replicas(ROLE, 3)
        _when(lambda: len(driver.fleet.workers) == 3)
        seen_counts.append(len(driver.fleet.workers))
        # Each actor's Ray name is the run's name and the id the dashboard shows.
        for worker_id, slot in driver.fleet.workers.items():
            assert ray.get_actor(f"scale:{worker_id}", namespace=NAMESPACE)._actor_id == slot.handle._actor_id
        assert ray.get_actor("scale:learner-1", namespace=NAMESPACE)._actor_id == driver.training.learner._actor_id
        assert ray.get_actor("scale:verifier-1", namespace=NAMESPACE)._actor_id == driver.verifiers.actors[0]._actor_id
        # The run's dashboard yields the CPU: its process runs at dashboard.nice (10) above the driver's.
        stat = Path(f"/proc/{driver.dashboard.pid}/stat").read_text().rsplit(") ", 1)[1].split()
        assert int(stat[16]) == min(19, os.nice(0) + cfg.dashboard.nice) and cfg.dashboard.nice == 10
        # Keep three until the learner has recorded a step with them (starting actors can take longer
        # than a step on a loaded machine, so "three exist" alone does not mean a step saw them).
        _when(lambda: any(r["workers"] == 3 for r in read_steps(tmp_path)))
        driver.store.set_desired_replicas(ROLE, 1)
        _when(lambda: len(driver.fleet.workers) == 1)
        seen_counts.append(len(driver.fleet.workers))

    summary = run_while(driver, steer)
    assert seen_counts == [3, 1]
    assert {r["workers"] for r in read_steps(tmp_path)} >= {3}
    assert_every_graded_rollout_is_accounted_for(summary)


def test_scaling_past_capacity_starts_what_fits_and_never_blocks_the_loop(ray_cluster, tmp_path, tiny_models):
    """On the 16-CPU test cluster, rollout workers of 6 CPUs each: the run holds one, and room remains for
    one more. Asking for 4 starts one and reports two pending (log, status rows) while training goes on;
    asking for 1000 is capped at rollout.max_replicas; asking for 1 again clears what is pending."""
    cfg = small_config(tiny_models, "capacity", steps=400, **{"learner.max_staleness": "1000",
                       "rollout.num_cpus": "6", "rollout.max_replicas": "6"})  # fmt: skip
    driver = Driver(cfg, tmp_path)
    seen: dict[str, object] = {}

    def pending_rows() -> int:
        return sum(s.state == "pending" for s in driver.store.worker_statuses().values())

    def steer() -> None:
        _when(lambda: driver.state.used > 0)
        driver.store.set_desired_replicas(ROLE, 4)
        _when(lambda: len(driver.fleet.workers) == 2 and driver.fleet.pending == 2)
        steps = len(read_steps(tmp_path))
        _when(lambda: len(read_steps(tmp_path)) >= steps + 3)  # the loop trains on while two wait for room
        seen["pending rows"] = pending_rows()
        driver.store.set_desired_replicas(ROLE, 1000)
        _when(lambda: driver.store.desired_replicas(ROLE) == 6)
        _when(lambda: driver.fleet.pending == 4)
        seen["capped"] = (driver.store.desired_replicas(ROLE), len(driver.fleet.workers))
        driver.store.set_desired_replicas(ROLE, 1)
        _when(lambda: len(driver.fleet.workers) == 1 and driver.fleet.pending == 0)
        seen["after"] = pending_rows()
        driver.loop.stop()

    summary = run_while(driver, steer)
    assert seen == {"pending rows": 2, "capped": (6, 2), "after": 0}
    assert_every_graded_rollout_is_accounted_for(summary)


# Which actor to SIGKILL (its stats: a dict with its "pid"), the run's length, and the summary's restart count.
KILLED_ACTORS = {
    "rollout": (lambda d: ray.get(next(iter(d.fleet.workers.values())).handle.state.remote()), 200, "actor_restarts"),
    "verifier": (lambda d: ray.get(d.verifiers.actors[0].stats.remote()), 60, "verifier_restarts"),
}


@pytest.mark.parametrize("actor", KILLED_ACTORS)
def test_an_actor_killed_mid_run_is_replaced_and_nothing_is_lost(ray_cluster, tmp_path, tiny_models, actor):
    stats, steps, restarts = KILLED_ACTORS[actor]
    cfg = small_config(tiny_models, f"kill-{actor}", steps=steps, **{"learner.max_staleness": "1000"})
    driver = Driver(cfg, tmp_path)
    kill, killed = sigkill_once_training(driver, lambda: stats(driver))
    summary = run_while(driver, kill)
    assert killed, f"the {actor} was never killed"
    assert summary["steps"] == steps
    assert summary[restarts] >= 1
    assert_every_graded_rollout_is_accounted_for(summary)


def test_a_redis_restart_mid_run_is_waited_out(ray_cluster, tmp_path, tiny_models):
    """Redis (with AOF) stopped by its pid for 3 s mid-run: every actor's store client waits it out and the
    run completes with every rollout accounted for."""
    from services.store.redis_server import RedisServer

    (tmp_path / "aof").mkdir()
    with RedisServer(aof_dir=str(tmp_path / "aof")) as server:
        cfg = small_config(tiny_models, "redis-restart", steps=40, redis_url=server.url,
                           **{"learner.max_staleness": "1000"})  # fmt: skip
        driver = Driver(cfg, tmp_path / "run")
        restarted: list[float] = []

        def restart() -> None:
            _when(lambda: driver.state.used >= 16)
            server.stop()
            time.sleep(3)
            server.start()
            restarted.append(time.monotonic())

        summary = run_while(driver, restart)
    assert restarted, "Redis was never restarted"
    assert summary["steps"] == 40
    assert_every_graded_rollout_is_accounted_for(summary)


def adam_steps(ckpt: Path) -> float:
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)["optimizer"]["state"]
    return float(next(iter(state.values()))["step"])


def test_killed_learner_continues_from_its_checkpoint(ray_cluster, tmp_path, tiny_models):
    cfg = small_config(
        tiny_models, "kill-learner", steps=40, **{"learner.checkpoint_every": "10", "learner.max_staleness": "1000"}
    )
    driver = Driver(cfg, tmp_path)

    def kill_learner() -> None:
        _when(lambda: (tmp_path / "checkpoints" / "step-000010").exists())
        _when(lambda: any(r.get("step", 0) > 12 for r in read_steps(tmp_path)))
        os.kill(driver.training.stats()["pid"], signal.SIGKILL)

    summary = run_while(driver, kill_learner)
    assert summary["learner_restarts"] == 1
    assert summary["steps"] == 40
    # The restarted learner went on from its latest checkpoint (every 10 steps), redoing what came after;
    # the redone steps' rows replaced the first ones.
    assert [r["step"] for r in read_steps(tmp_path)] == list(range(1, 41))
    assert [r.step for r in driver.store.metrics() if r.kind == "step"] == list(range(1, 41))
    # The optimizer state came back too: Adam's step count equals the learner's step count.
    assert adam_steps(tmp_path / "checkpoints" / "step-000040") == 40
    assert_every_graded_rollout_is_accounted_for(summary)


def test_resume_continues_with_the_same_step_count_and_optimizer_state(ray_cluster, tmp_path, tiny_models):
    first = run_driver(small_config(tiny_models, "resume", steps=4, **{"learner.checkpoint_every": "2"}), tmp_path)
    assert first["steps"] == 4
    assert adam_steps(tmp_path / "checkpoints" / "step-000004") == 4
    cfg = small_config(tiny_models, "resume", steps=7, **{"learner.checkpoint_every": "2"})
    driver = Driver(cfg, tmp_path, resume=True)
    try:
        second = driver.run()
        # The embedded store (a new actor: the first run's went with its driver) was restored from the
        # checkpoint's snapshot and has the whole run's series again.
        series = [r.step for r in driver.store.metrics() if r.kind == "step"]
    finally:
        driver.close()
    assert second["steps"] == 7
    steps = [r["step"] for r in read_steps(tmp_path)]
    assert steps == [1, 2, 3, 4, 5, 6, 7] and series == steps
    assert adam_steps(tmp_path / "checkpoints" / "step-000007") == 7


def test_a_refused_weight_update_stops_the_run_naming_the_worker(ray_cluster, tmp_path, tiny_models):
    """A published version whose tensors do not fit a worker's model is refused by the worker, which keeps
    serving its old version, and the weight sync raises naming the worker and the first mismatch."""
    from services.driver.fleet import RolloutFleet
    from services.driver.training import Training
    from services.placement import run_demand
    from services.pool import load_pool
    from services.rollout import HFRolloutWorker
    from services.store import open_store
    from services.weight_sync import WeightSyncError

    cfg = small_config(tiny_models, "refused")
    pool = load_pool(cfg.data, seed=cfg.run.seed).train
    demand = run_demand(cfg, 1, teacher_references=False)
    store = open_store(cfg.store)
    training = Training(cfg, demand, pool, tmp_path, print)
    fleet = RolloutFleet(cfg, demand, training.sync, store, ray.put(pool), print)
    try:
        fleet.start(1)
        slot = next(iter(fleet.workers.values()))
        training.publish()  # the learner's own weights fit: the worker confirms the version
        fleet.check_loads([slot.worker_id])
        served = ray.get(slot.handle.state.remote())["version"]
        assert training.sync.served(slot.worker_id) == training.sync.version == served

        # A worker on the teacher's (larger) architecture joins: the published student weights do not fit.
        other = (
            ray.remote(HFRolloutWorker)
            .options(num_cpus=0)
            .remote("student-99", tiny_models["teacher"], cfg.rollout, [], get_template(cfg.data.template))
        )
        ray.get(other.state.remote())
        with pytest.raises(WeightSyncError) as refused:
            training.sync.attach("student-99", other)
        message = str(refused.value)
        assert message.startswith(f"rollout worker student-99 refused weights version {training.sync.version}")
        assert "with shape" in message, message
        assert f"it still serves version {training.sync.version}" in message
        assert ray.get(other.state.remote())["version"] == training.sync.version
        ray.kill(other)
    finally:
        fleet.close()
        training.close()
        store.close()


def test_a_top_k_teacher_view_trains_and_a_k_past_the_vocabulary_is_refused(ray_cluster, tmp_path, tiny_models):
    """teacher.logits: topk runs the same graph with the loss on the teacher's top-k log-probs."""
    cfg = small_config(
        tiny_models, "graph-topk", **{"pipeline.mode": "sync", "teacher.logits": "topk", "teacher.topk": "8"}
    )
    summary = run_driver(cfg, tmp_path / "topk")
    assert summary["steps"] == 6
    losses = [r["loss"] for r in read_steps(tmp_path / "topk")]
    assert losses and all(0 < loss < float("inf") for loss in losses), losses
    too_big = small_config(tiny_models, "graph-topk-big", **{"teacher.logits": "topk", "teacher.topk": "100000"})
    with pytest.raises(Exception, match=r"teacher.topk \(100000\) must be below the vocabulary size"):
        run_driver(too_big, tmp_path / "big")
