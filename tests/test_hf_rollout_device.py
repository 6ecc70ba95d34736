"""The hf rollout worker: on the device Ray gave it (the CPU when it asked for no GPU), and its static KV
cache (`rollout.hf_cache: static`) samples exactly what the dynamic cache does."""

from __future__ import annotations

from paced_core.config import RolloutConfig
from paced_core.tasks import get_template, synthetic_arithmetic
from services.rollout import HFRolloutWorker

PROBLEMS = synthetic_arithmetic(6, seed=8)


def worker(model_path: str, cache: str) -> HFRolloutWorker:
    rollout = RolloutConfig(max_new_tokens=10, batch_size=3, hf_cache=cache)
    return HFRolloutWorker(f"hf-{cache}", model_path, rollout, PROBLEMS, get_template("plain"), threads=1)


def test_without_a_gpu_the_worker_samples_on_the_cpu(tiny_models):
    hf = worker(tiny_models["student"], "dynamic")
    assert hf.device == "cpu" and next(hf.model.parameters()).device.type == "cpu"


def test_the_static_cache_gives_the_dynamic_caches_greedy_completions(tiny_models):
    dynamic = worker(tiny_models["student"], "dynamic").complete(PROBLEMS)
    static = worker(tiny_models["student"], "static").complete(PROBLEMS)
    assert static == dynamic and any(dynamic)
