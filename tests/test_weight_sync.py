"""The driver's half of weight sync (`services.weight_sync.WeightSync`) with the object store, on a real Ray
cluster with a real learner and real HF rollout workers; and the pairing rules of the pushed transports
(nccl: separate GPUs, ipc: the same GPU), on Ray's logical GPUs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import ray

from paced_core.config import load_config
from paced_core.tasks import get_template, synthetic_arithmetic
from services.learner import Learner
from services.learner_actor import LearnerActor, learner_actor
from services.records import GradedRollout, ProblemRef, Rollout, RolloutRequest
from services.rollout import HFRolloutWorker
from services.store import open_store
from services.weight_sync import WeightSyncError, make_sync
from services.weight_transport import Location, WeightTransportError, check_pairing, location

REPO = Path(__file__).resolve().parents[1]
POOL = synthetic_arithmetic(6, seed=2)


def test_nccl_refuses_a_learner_and_engine_on_one_gpu():
    with pytest.raises(WeightTransportError, match=r"student-2 share GPU 0 .*cannot connect two ranks.*ipc"):
        check_pairing("nccl", Location("node-a", ("0",)), Location("node-a", ("0",)), "student-2")
    check_pairing("nccl", Location("node-a", ("0",)), Location("node-a", ("1",)), "student-2")
    check_pairing("nccl", Location("node-a", ("0",)), Location("node-b", ("0",)), "student-2")  # another machine


def test_ipc_needs_the_engine_on_the_learners_gpu():
    check_pairing("ipc", Location("node-a", ("0",)), Location("node-a", ("0",)), "student-1")
    with pytest.raises(WeightTransportError, match=r"student-1 runs on GPU 1 .* learner on GPU 0.*colocate"):
        check_pairing("ipc", Location("node-a", ("0",)), Location("node-a", ("1",)), "student-1")
    with pytest.raises(WeightTransportError, match=r"within one device"):
        check_pairing("ipc", Location("node-a", ("0",)), Location("node-b", ("0",)), "student-1")
    with pytest.raises(WeightTransportError, match=r"GPU none"):
        check_pairing("ipc", Location("node-a", ()), Location("node-a", ()), "student-1")


@ray.remote
class _Where:
    def location(self) -> Location:
        return location()


def test_fractional_gpus_on_one_ray_node_are_the_same_device(ray_cluster):
    # Ray's logical GPU 0, shared by two half-GPU actors: what a colocated layout gets.
    a, b = (_Where.options(num_gpus=0.5, num_cpus=0).remote() for _ in range(2))
    learner, engine = ray.get([a.location.remote(), b.location.remote()])
    assert learner.gpus == engine.gpus == ("0",) and learner.node == engine.node
    check_pairing("ipc", learner, engine, "student-1")
    with pytest.raises(WeightTransportError, match="cannot connect two ranks on one device"):
        check_pairing("nccl", learner, engine, "student-1")
    for actor in (a, b):
        ray.kill(actor)


@pytest.fixture(scope="module")
def parts(ray_cluster, tmp_path_factory):
    overrides = ["rollout.max_new_tokens=4", "store.run_name=weight-sync", "schedule.loss.kind=reverse_kl"]
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    learner = learner_actor(num_cpus=0).remote(cfg, POOL, str(tmp_path_factory.mktemp("sync")))
    pool_ref = ray.put(POOL)

    def worker(worker_id: str, model_path: str = cfg.student.path):
        return (
            ray.remote(HFRolloutWorker)
            .options(num_cpus=0)
            .remote(worker_id, model_path, cfg.rollout, pool_ref, get_template(cfg.data.template))
        )

    store = open_store(cfg.store)  # the run's embedded store lives as long as a handle to it does
    yield cfg, learner, worker, store
    ray.kill(learner)


def train_one_step(store, learner) -> int:
    """One real reverse-KL step on a few queued rollouts; returns the learner's new version."""
    graded = [
        GradedRollout(
            rollout=Rollout(
                rollout_id=f"ws-{uuid.uuid4().hex}", problem=ProblemRef(index=i, id=p.id), prompt_ids=[1, 5, 6],
                completion_ids=[7, 8, 9], text="", version=0, worker_id="student-0", created_at=time.time(),
            ),
            correct=True, extracted="", reason="exact",
        )
        for i, p in enumerate(POOL[:4])
    ]  # fmt: skip
    store.push_graded(graded)
    report = ray.get(learner.train_step.remote(None, 2.0))
    assert report.trained is not None
    return report.step


def test_object_store_sync_confirms_each_version_without_waiting(parts):
    _, learner, worker, store = parts
    sync = make_sync("object_store", learner, timeout_s=120)
    handles = {w: worker(w) for w in ("student-1", "student-2")}
    assert [sync.attach(w, h) for w, h in handles.items()] == [0, 0]  # nothing published yet
    assert all(sync.ready(w) for w in handles)  # loads queue ahead of requests: never held back
    version = train_one_step(store, learner)
    sync.publish(version)
    assert sync.poll(wait=True).confirmed == {"student-1": version, "student-2": version}
    assert [ray.get(h.state.remote())["version"] for h in handles.values()] == [version, version]
    # A worker that joins after a publish serves the published version before its first request.
    late = worker("student-3")
    assert sync.attach("student-3", late) == version >= 1
    sync.detach("student-3")
    assert "student-3" not in sync.workers
    for h in [*handles.values(), late]:
        ray.kill(h)


def test_the_learner_publishes_beside_a_training_step(parts):
    # A step that waits for rollouts (none come) does not hold back a publish: `weights` runs in the
    # learner's own concurrency group.
    _, learner, _, _ = parts
    step = learner.train_step.remote(None, 20.0)
    started = time.monotonic()
    version_ref, _state = learner.weights.options(num_returns=2).remote()
    ray.get(version_ref, timeout=10)
    assert time.monotonic() - started < 10
    assert not ray.wait([step], timeout=0)[0]  # the step is still waiting
    ray.get(step)


def test_a_transfer_stuck_behind_a_long_generation_times_out_naming_the_worker(parts):
    _, learner, worker, _ = parts
    slow = worker("student-9")
    sync = make_sync("object_store", learner, timeout_s=0.5)
    sync.attach("student-9", slow)
    requests = [
        RolloutRequest(request_id=f"slow-{i}", problem=ProblemRef(index=i, id=p.id), n=200) for i, p in enumerate(POOL)
    ]
    busy = slow.generate.remote(requests)  # 1,200 completions: the loads below queue behind them
    sync.publish(7)
    time.sleep(0.3)
    sync.publish(8)  # a newer version does not restart the clock of the one still unconfirmed
    with pytest.raises(WeightSyncError, match=r"rollout worker student-9 has not confirmed weights version 8 after"):
        sync.poll(wait=True)
    ray.kill(slow)
    del busy


def test_a_refused_version_names_the_worker_and_what_it_still_serves(parts, tiny_models):
    _, learner, worker, _ = parts
    other = worker("student-7", tiny_models["student"])  # another architecture: the names and shapes do not fit
    sync = make_sync("object_store", learner, timeout_s=120)
    sync.attach("student-7", other)
    sync.publish(1)
    refused = r"rollout worker student-7 refused weights version 1: WeightMismatchError: .*still serves version 0"
    with pytest.raises(WeightSyncError, match=refused):
        sync.poll(wait=True)
    ray.kill(other)


@pytest.fixture
def push(parts, tmp_path):
    cfg, _, worker, store = parts

    class CpuPushLearner(LearnerActor):
        """The real learner, its push done by the object-store load: the nccl and ipc senders need CUDA, and
        this is what lets the driver half of a pushed transport (`PushSync`) run on the CPU. (Defined here:
        Ray's workers cannot import a test module, so the class travels by value.)"""

        @ray.method(concurrency_group="weights")
        def attach_engine(self, worker_id: str, handle, engine_world_size: int = 1) -> None:
            self.engines = {**getattr(self, "engines", {}), worker_id: handle}

        @ray.method(concurrency_group="weights")
        def detach_engine(self, worker_id: str) -> None:
            self.engines.pop(worker_id, None)

        @ray.method(concurrency_group="weights")
        def push_weights(self, worker_id: str) -> int:
            version, state = Learner.weights(self)  # the lock-taking copy, as a push would read
            return ray.get(self.engines[worker_id].load_weights.remote(version, state))

    learner = learner_actor(CpuPushLearner, num_cpus=0).remote(cfg, POOL, str(tmp_path))
    yield store, learner, worker
    ray.kill(learner)


def test_a_pushed_transport_holds_a_workers_requests_until_its_weights_are_in(push):
    store, learner, worker = push
    sync = make_sync("ipc", learner, timeout_s=120)
    handle = worker("student-1")
    assert sync.attach("student-1", handle) == 0 and sync.ready("student-1")
    version = train_one_step(store, learner)
    sync.publish(version)  # no learner or worker call: nothing to wait for
    assert sync.served("student-1") == 0
    assert not sync.ready("student-1")  # starts the push; the worker's next request waits for it
    assert not sync.ready("student-1")  # still in flight: no second push
    assert sync.poll(wait=True).confirmed == {"student-1": version}
    assert sync.ready("student-1") and ray.get(handle.state.remote())["version"] == version
    ray.kill(handle)


def test_a_worker_that_dies_while_its_push_is_due_is_reported_dead(push):
    store, learner, worker = push
    sync = make_sync("ipc", learner, timeout_s=120)
    handle = worker("student-2")
    sync.attach("student-2", handle)
    sync.publish(train_one_step(store, learner))
    ray.kill(handle)
    assert not sync.ready("student-2")
    report = sync.poll(wait=True)
    assert report.dead == ["student-2"] and report.confirmed == {}
