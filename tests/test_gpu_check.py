"""`benchmarks/gpu_check.py` on the CPU at `--tiny` shapes: every section runs through the production learner
without a Ray cluster or a Redis server; a section that fails, or outruns its time limit, is recorded and the
others still run; the FLOP count and the goals' verdicts follow their definitions; the session script is
valid bash."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import GOALS, SECTIONS, TINY, Run, judge, padded_batch, random_learner, step_flops
from services.learner_batches import TrainSequence

ROOT = Path(__file__).resolve().parents[1]
CPU_TINY = Run(TINY, "cpu", repeats=1, peak_flops=None, tiny=True)


def check(tmp_path: Path, *args: str) -> tuple[dict, list[str]]:
    """Run `python -m benchmarks.gpu_check --tiny --repeats 1 ARGS` as a program: (JSON result, table rows)."""
    out = tmp_path / "gpu_check.json"
    code = (
        "import sys; from benchmarks.gpu_check import main; "
        f"rc = main(['--tiny', '--repeats', '1', '--json', {str(out)!r}, *{list(args)!r}]); "
        "assert 'ray' not in sys.modules, 'gpu_check imported ray'; sys.exit(rc)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text()), [line for line in run.stdout.splitlines() if line.startswith("| ")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[dict, list[str]]:
    return check(tmp_path_factory.mktemp("tiny"))


def test_every_section_runs_in_order(tiny):
    result, _ = tiny
    assert list(result["sections"]) == list(SECTIONS)
    assert result["tiny"] and result["shapes"]["student"] == "tiny"
    assert not [name for name, r in result["sections"].items() if "error" in r]


@pytest.mark.parametrize(
    ("name", "batch", "checkpointing"),
    [("learner", TINY.batch, False), ("learner_checkpointing", TINY.batch, True),
     ("learner_large_batch", TINY.large_batch, True)],
)  # fmt: skip
def test_learner_sections_train_padded_micro_batches_and_count_completion_tokens(tiny, name, batch, checkpointing):
    r = tiny[0]["sections"][name]
    assert (r["batch"], r["checkpointing"], r["padded_width"]) == (batch, checkpointing, TINY.seq)
    assert r["micro_batches"] >= 2  # TINY.micro_batch_tokens holds two full-width sequences
    assert r["padded_tokens"] > r["prompt_tokens"] + r["completion_tokens"]  # the padding is real
    assert math.isfinite(r["loss"]) and r["loss"] > 0 and math.isfinite(r["grad_norm"])
    assert r["completion_tokens_per_s"] == pytest.approx(r["completion_tokens"] / r["step_s"])
    assert r["tflops_per_s"] > 0 and r["build_s"] > 0
    assert r["mfu"] is None and r["peak_memory_gb"] is None  # no known peak, no CUDA memory on a CPU


def test_bf16_update_probe_shows_pure_bf16_losing_the_update(tiny):
    r = tiny[0]["sections"]["bf16_update"]
    assert r["lr"] == 1e-6
    assert r["bf16"]["parameter_dtype"] == "bfloat16" and r["bf16"]["changed_fraction"] < 0.1
    assert r["bf16_mixed"]["parameter_dtype"] == "float32" and r["bf16_mixed"]["changed_fraction"] > 0.99
    # One step does not move most bf16 copies of the master weights either; many steps add up in float32.
    assert r["bf16_mixed"]["published_changed_fraction"] < 0.1


def test_publish_times_the_object_store_path_and_names_what_it_does_not_measure(tiny):
    r = tiny[0]["sections"]["publish"]
    o = r["object_store"]
    assert o["seconds"] > 0 and o["gb_per_s"] > 0
    assert o["unique_gb"] < o["gb"]  # the tiny student ties its embedding and LM head: copied under both names
    assert "one process" in r["nccl"]["skipped"] and "one process" in r["ipc"]["skipped"]


def test_vllm_section_is_skipped_with_the_reason_where_vllm_is_not_installed(tiny):
    assert "vllm is not installed" in tiny[0]["sections"]["vllm"]["skipped"]


def test_goals_are_listed_and_unmeasured_at_tiny_shapes_on_a_cpu(tiny):
    goals = tiny[0]["goals"]
    assert [(g["section"], g["field"]) for g in goals] == [(g.section, g.field) for g in GOALS]
    verdicts = {(g["section"], g["field"]): g["verdict"] for g in goals}
    assert verdicts[("learner", "mfu")] == "unmeasured"  # no peak FLOP/s known for a CPU
    assert verdicts[("vllm", "decode_tokens_per_s")] == "unmeasured (skipped)"
    assert all(v.startswith("unmeasured") for v in verdicts.values())


def test_markdown_has_a_row_per_figure(tiny):
    _, rows = tiny
    assert rows[0] == "| gpu check | value | target | met |"
    body = rows[1:]  # the separator row is "|---|..."
    assert sum(row.startswith("| learner ") for row in body) == 9  # three learner sections x three figures
    assert sum("AdamW step" in row for row in body) == 2
    assert sum(row.startswith("| publish tiny student") for row in body) == 3
    assert any(row.startswith("| vllm | skipped: vllm is not installed") for row in body)
    assert all(row.count(" | ") == 3 for row in body)


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path):
    # micro-batches of 0 tokens are refused by the learner's config: only the learner section uses them.
    result, rows = check(tmp_path, "--only", "learner", "publish", "--micro-batch-tokens", "0")
    learner = result["sections"]["learner"]
    assert learner["error"] == "ConfigError" and "learner.micro_batch_tokens" in learner["message"]
    assert learner["shapes"] == {"student": "tiny", "teacher": "tiny", "batch": TINY.batch, "seq": TINY.seq,
                                 "micro_batch_tokens": 0, "chunk": TINY.chunk, "checkpointing": False}  # fmt: skip
    assert result["sections"]["publish"]["object_store"]["seconds"] > 0
    assert [g["verdict"] for g in result["goals"]] == ["unmeasured (error)"] * 2
    assert rows[1].startswith("| learner | error: ConfigError: invalid config:")


def test_a_section_in_its_own_process_reports_its_results(tmp_path):
    result, _ = check(tmp_path, "--only", "publish", "--time-budget", "120")
    assert result["sections"]["publish"]["object_store"]["seconds"] > 0


def test_a_section_past_its_time_limit_is_killed_and_the_spent_budget_skips_the_rest(tmp_path):
    result, _ = check(tmp_path, "--only", "learner", "publish", "--time-budget", "1.2", "--section-limit", "0.5")
    learner, publish = result["sections"]["learner"], result["sections"]["publish"]
    assert learner["error"] == "TimeoutExpired" and "time limit of 0.5 s" in learner["message"]
    assert learner["shapes"]["batch"] == TINY.batch
    assert "--time-budget 1.2 s spent" in publish["skipped"]  # less than a second was left


def test_step_flops_count_completion_tokens_by_palm_accounting():
    learner = random_learner(CPU_TINY, "tiny")
    # The tiny Qwen2 body per layer: q (128x128 + bias), k and v (128x64 + bias), o (128x128), the MLP
    # (3 x 128x256) and two norms; two layers and the final norm.
    layer = (128 * 128 + 128) + 2 * (128 * 64 + 64) + 128 * 128 + 3 * 128 * 256 + 2 * 128
    n, vd, ld = 2 * layer + 128, 512 * 128, 2 * 128
    assert gpu_check.non_embedding_params(learner.student) == n
    seqs = [TrainSequence([1] * 10, [1] * 12, [2] * 5, "a", -1), TrainSequence([1] * 3, [1] * 3, [2] * 1, "b", -1)]
    expected = 5 * (6 * (n + 2 * ld * 15 + vd) + 2 * (n + 2 * ld * 17 + vd)) + 1 * (8 * (n + 2 * ld * 4 + vd))
    assert step_flops(learner, seqs) == expected


def test_padded_batches_fill_the_width_with_varied_completions():
    learner = random_learner(CPU_TINY, "tiny")
    seqs = padded_batch(learner, 16, 512, seed=3)
    completions = [len(s.completion) for s in seqs]
    longest = max(completions)
    assert max(len(s.student_prompt) for s in seqs) + longest == 512
    assert all(len(s.student_prompt) <= 256 for s in seqs)
    assert min(completions) >= longest // 4 and len(set(completions)) > 8


def test_goals_are_judged_met_or_missed_at_the_goals_shapes_only():
    sections = {
        "learner": {"mfu": 0.50, "peak_memory_gb": 120.0},
        "learner_checkpointing": {"error": "OutOfMemoryError", "message": "...", "shapes": {}},
        "vllm": {"publish_s": 0.4, "decode_tokens_per_s": 20_000.0},
    }
    verdicts = {(g["section"], g["field"]): g["verdict"] for g in judge(sections, production=True)}
    assert verdicts == {
        ("learner", "mfu"): "met",
        ("learner", "peak_memory_gb"): "missed",
        ("learner_checkpointing", "mfu"): "unmeasured (error)",
        ("learner_checkpointing", "peak_memory_gb"): "unmeasured (error)",
        ("vllm", "publish_s"): "met",
        ("vllm", "decode_tokens_per_s"): "missed",
    }
    elsewhere = judge(sections, production=False)
    assert elsewhere[0]["verdict"] == "not judged (not the goals' shapes)" and elsewhere[0]["value"] == 0.50


def test_the_session_script_is_valid_bash():
    script = ROOT / "benchmarks" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
