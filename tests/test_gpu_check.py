"""`benchmarks/gpu_check.py --tiny`: the GPU check's code path at toy shapes, on CPU, without Ray or Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_runs_on_cpu_without_ray_and_reports_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    code = (
        "import sys; from benchmarks.gpu_check import main; "
        f"rc = main(['--tiny', '--repeats', '1', '--json', {str(out)!r}]); "
        "assert 'ray' not in sys.modules and 'redis' not in sys.modules, 'gpu_check imported ray or redis'; "
        "sys.exit(rc)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    learner = result["learner"]
    assert learner["tokens_per_s"] > 0 and learner["tflops_per_s"] > 0
    assert learner["mfu"] is None  # no known peak for a CPU
    assert [s["batch"] for s in result["sampler"]] == [4, 8]
    assert all(s["tokens_per_s"] > 0 for s in result["sampler"])
    assert result["publish"]["gib"] > 0 and result["publish"]["total_s"] > 0
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ")]  # header, then one per section
    sections = [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]]
    assert sections == ["learner step", "hf sampler", "hf sampler", "publish weights"]


def test_step_flops_follow_the_documented_formula():
    from benchmarks.gpu_check import TINY, build, non_embedding_params, step_flops

    student = build("tiny", "cpu", torch.float32, seed=0)
    c = student.config
    n, b, t, comp = non_embedding_params(student), TINY.batch, TINY.seq, TINY.seq - TINY.prompt
    one = n * b * t + 2 * c.num_hidden_layers * c.hidden_size * t * b * t + c.vocab_size * c.hidden_size * b * comp
    assert step_flops(student, student, b, t, comp) == 6 * one + 2 * one
    assert n == sum(p.numel() for p in student.parameters()) - c.vocab_size * c.hidden_size  # tied embeddings
