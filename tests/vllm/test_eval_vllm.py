"""`paced eval --backend vllm`: SmolLM2-135M-Instruct on two GSM8K problems through the vLLM rollout worker scores
as the `hf` backend does (greedy completions agree: test_vllm_rollout.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.evaluate import EvalReport, evaluate

REPO = Path(__file__).resolve().parents[2]
SETTINGS = [
    "data.template=gsm8k",
    "student.chat_template=true",
    "rollout.max_new_tokens=24",
    "rollout.vllm.max_model_len=1024",
    "rollout.vllm.kv_cache_gib=1",
    "rollout.vllm.enforce_eager=true",
]


def test_the_vllm_backend_scores_as_the_hf_backend(smollm2_dir):
    # Its own process: this session's engine fixture holds vLLM's process-wide state.
    cmd = [sys.executable, "-m", "services.cli", "eval", "--model", str(smollm2_dir), "--data", "gsm8k_train"]
    cmd += ["--limit", "2", "--backend", "vllm", "--json", *[arg for s in SETTINGS for arg in ("--set", s)]]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    vllm = EvalReport.model_validate_json(result.stdout)
    hf = evaluate(str(smollm2_dir), "gsm8k_train", limit=2, overrides=SETTINGS, progress=False)
    assert (vllm.backend, hf.backend, vllm.problems) == ("vllm", "hf", 2)
    assert vllm.per_problem == hf.per_problem and vllm.by_group == hf.by_group == {"gsm8k_train": hf.accuracy}
