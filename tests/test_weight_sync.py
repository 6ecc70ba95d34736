"""The driver's half of weight sync (`services.weight_sync.WeightSync`) with the object store, on a real Ray
cluster with a real learner and real HF rollout workers; and the pairing rules of the pushed transports
(nccl: separate GPUs, ipc: the same GPU), on Ray's logical GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from paced_core.config import load_config
from paced_core.tasks import get_template, synthetic_arithmetic
from services.learner import Learner
from services.records import ProblemRef, RolloutRequest
from services.rollout import HFRolloutWorker
from services.weight_sync import (
    Location,
    WeightSyncError,
    WeightTransportError,
    check_pairing,
    location,
    make_sync,
)

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
    cfg = load_config(REPO / "configs" / "demo.yaml", ["rollout.max_new_tokens=4", "store.run_name=weight-sync"])
    learner = ray.remote(Learner).options(num_cpus=0).remote(cfg, POOL, str(tmp_path_factory.mktemp("sync")))
    pool_ref = ray.put(POOL)

    def worker(worker_id: str, rollout=cfg.rollout):
        return (
            ray.remote(HFRolloutWorker)
            .options(num_cpus=0)
            .remote(
                worker_id, cfg.student.path, rollout, pool_ref, get_template(cfg.data.template), dtype=cfg.student.dtype
            )
        )

    yield cfg, learner, worker
    ray.kill(learner)


def test_object_store_sync_confirms_each_version_without_waiting(parts):
    _, learner, worker = parts
    sync = make_sync("object_store", learner, timeout_s=120)
    handles = {w: worker(w) for w in ("student-1", "student-2")}
    assert [sync.attach(w, h) for w, h in handles.items()] == [0, 0]  # nothing published yet
    assert all(sync.ready(w) for w in handles)  # loads queue ahead of requests: never held back
    version = sync.publish()
    assert version == 0 and sync.poll(wait=True) == {"student-1": 0, "student-2": 0}
    # A worker that joins after a publish serves the published version before its first request.
    late = worker("student-3")
    assert sync.attach("student-3", late) == version
    assert sync.served("student-3") == version
    sync.detach("student-3")
    assert "student-3" not in sync.workers
    for h in [*handles.values(), late]:
        ray.kill(h)


def test_a_transfer_stuck_behind_a_long_generation_times_out_naming_the_worker(parts):
    _, learner, worker = parts
    slow = worker("student-9")
    sync = make_sync("object_store", learner, timeout_s=0.2)
    sync.attach("student-9", slow)
    requests = [
        RolloutRequest(request_id=f"slow-{i}", problem=ProblemRef(index=i, id=p.id), n=200) for i, p in enumerate(POOL)
    ]
    busy = slow.generate.remote(requests)  # 1,200 completions: the load below queues behind them
    sync.publish()
    with pytest.raises(WeightSyncError, match=r"rollout worker student-9 has not confirmed weights version 0 after"):
        sync.poll(wait=True)
    ray.kill(slow)
    del busy


def test_a_refused_version_names_the_worker_and_what_it_still_serves(parts, tiny_models):
    cfg, learner, _ = parts
    # A worker on another architecture: the learner's names and shapes do not fit its model.
    other = (
        ray.remote(HFRolloutWorker)
        .options(num_cpus=0)
        .remote("student-7", tiny_models["student"], cfg.rollout, ray.put(POOL), get_template(cfg.data.template))
    )
    sync = make_sync("object_store", learner, timeout_s=120)
    sync.attach("student-7", other)
    sync.publish()
    with pytest.raises(
        WeightSyncError, match=r"rollout worker student-7 refused weights version 0: .*still serves version 0"
    ):
        sync.poll(wait=True)
    ray.kill(other)
