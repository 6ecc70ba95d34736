"""The whole graph with vLLM rollout actors: SmolLM2 self-distillation on GSM8K (the shipped config, cut to
two steps) on a real local Ray cluster; every published version reaches the engines between batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paced_core.config import load_config
from services.driver import Driver

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_smollm2_self_distillation_runs_a_few_steps_with_vllm_rollout_actors(ray_cluster, smollm2_dir, tmp_path):
    overrides = {
        "run.name": "smollm2-vllm",
        "student.path": str(smollm2_dir),
        "rollout.backend": "vllm",
        "rollout.max_new_tokens": "64",
        "rollout.vllm.max_model_len": "1024",
        "rollout.vllm.kv_cache_gib": "1",
        "rollout.vllm.enforce_eager": "true",
        "learner.steps": "2",
        "pipeline.eval_problems": "2",
        # The vLLM plumbing is under test, not the weighting: SmolLM2-135M solves few GSM8K problems, and
        # PACED's weight is 0 at p = 0.
        "scheduler.kernel": "{type: uniform}",
    }
    cfg = load_config(REPO / "configs" / "smollm2_gsm8k_selfdistill.yaml", [f"{k}={v}" for k, v in overrides.items()])
    driver = Driver(cfg, tmp_path)
    try:
        summary = driver.run()
    finally:
        driver.close()
    assert summary["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2]
    # Synchronous mode: step k trains on rollouts the engine produced after version k - 1 was published.
    assert all(r["staleness_mean"] == 0 for r in steps), [r["staleness_mean"] for r in steps]
    assert summary["rollouts_used"] >= 2 * cfg.learner.batch_size
    assert summary["evals"][-1]["version"] == 2
