"""`paced experiment`: the spec is checked before anything runs; a real experiment (2 arms x 2 seeds, a few
steps, the shipped models on a small testbed, runs as Ray tasks) writes a report whose numbers are the runs'
own, and a second invocation redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from services.experiment import ExperimentError, load_spec, run_config
from services.experiment_report import interval, steps_to_reach

REPO = Path(__file__).resolve().parents[1]
PACED = [sys.executable, "-m", "services.cli"]


def write_spec(tmp_path: Path, **fields) -> Path:
    spec = {
        "name": "t",
        "base": str(REPO / "configs" / "testbed.yaml"),
        "steps": 3,
        "seeds": [0, 1],
        "baseline": "uniform",
        "set": {"data.train.n": 300, "run.eval_every": 2, "pipeline.warmup_samples": 4},
        "arms": {"uniform": {"scheduler.kernel": {"type": "uniform"}}, "paced": {}},
        **fields,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"baseline": "nope"}, "baseline 'nope' is not an arm"),
        ({"quick": {"steps": 1, "seeds": [0], "arms": ["paced", "zzz"]}}, "quick.arms names 'zzz'"),
        ({"quick": {"steps": 1, "seeds": [0], "arms": ["paced"]}}, "quick.arms must include the baseline"),
        ({"seeds": [1, 1]}, "seeds repeat"),
        ({"base": "missing.yaml"}, "base config 'missing.yaml' not found"),
        ({"stepz": 3}, "stepz: Extra inputs are not permitted"),
    ],
)
def test_a_bad_experiment_file_is_refused_naming_the_field(tmp_path, fields, message):
    with pytest.raises(ExperimentError, match=message):
        load_spec(write_spec(tmp_path, **fields))


def test_an_arm_with_a_bad_override_is_named(tmp_path):
    spec, base = load_spec(write_spec(tmp_path, arms={"uniform": {}, "broken": {"learner.lr": -1}}))
    with pytest.raises(ExperimentError, match=r"(?s)arm 'broken' \(seed 0\): .*learner.lr"):
        run_config(spec, base, "broken", 0, 3)


def test_a_runs_config_is_base_then_set_then_arm_then_seeds(tmp_path):
    spec, base = load_spec(write_spec(tmp_path))
    cfg = run_config(spec, base, "uniform", 1, 3)
    assert cfg.scheduler.kernel.type == "uniform" and cfg.data.train.n == 300
    assert (cfg.learner.seed, cfg.rollout.seed, cfg.scheduler.seed, cfg.learner.steps) == (1, 1, 1, 3)
    assert cfg.run.name == "t-uniform-s1" and cfg.dashboard.enabled is False


def test_interval_is_students_t_over_seeds():
    x = [0.70, 0.74, 0.78]
    iv = interval(x)
    assert iv["mean"] == pytest.approx(0.74)
    assert iv["half"] == pytest.approx(stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / np.sqrt(3))
    assert interval([0.5])["half"] is None and interval([])["mean"] is None


def test_steps_to_reach_interpolates_between_evaluations():
    curve = [(0, 0.5), (10, 0.6), (20, 0.8)]
    assert steps_to_reach(curve, 0.7) == pytest.approx(15.0)
    assert steps_to_reach(curve, 0.5) == 0.0
    assert steps_to_reach(curve, 0.9) is None


@pytest.mark.slow
def test_an_experiment_reports_the_runs_own_numbers_and_continues_without_redoing(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    # --parallel: runs as Ray tasks, as many at once as the local cluster's CPUs hold (one here).
    proc = subprocess.run([*PACED, "experiment", str(spec), "--out", str(out), "--parallel", "2"],
                          capture_output=True, text=True, cwd=REPO, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running 1 at a time" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for name in ("accuracy_vs_steps.png", "batch_composition.png", "forgetting_retained.png"):
        assert (out / name).stat().st_size > 1000
    summaries = {
        (arm, seed): json.loads((out / "runs" / arm / f"seed-{seed}" / "summary.json").read_text())
        for arm in ("uniform", "paced")
        for seed in (0, 1)
    }
    for arm in ("uniform", "paced"):
        finals = [summaries[arm, s]["heldout_accuracy_after"] for s in (0, 1)]
        r = results["arms"][arm]
        assert r["final"]["mean"] == pytest.approx(np.mean(finals))
        assert r["final"]["half"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std(finals, ddof=1) / np.sqrt(2))
        diffs = [summaries[arm, s]["heldout_accuracy_after"] - summaries["uniform", s]["heldout_accuracy_after"]
                 for s in (0, 1)]  # fmt: skip
        assert r["diff_from_baseline"]["mean"] == pytest.approx(np.mean(diffs))
        counts = [summaries[arm, s]["trained_sequences_by_p"] for s in (0, 1)]
        total = sum(sum(c.values()) for c in counts)
        assert total == 2 * 3 * 32  # every trained sequence of 3 steps x batch 32, both seeds
        assert r["trained_by_p"]["between"] == pytest.approx(sum(c["between"] for c in counts) / total)
        kept = [summaries[arm, s]["eval_sets_retained"]["retained"]["accuracy_after"] for s in (0, 1)]
        assert r["retained"]["retained"]["forgetting"]["mean"] == pytest.approx(1 - np.mean(kept))
        assert f"| {arm} | " in report and f"{r['final']['mean']:.3f}" in report
    # PACED never trains on a problem it knows at p = 0 or 1 (weight 0); uniform does (the pool is U-shaped).
    assert results["arms"]["paced"]["trained_by_p"]["p0"] + results["arms"]["paced"]["trained_by_p"]["p1"] < 0.1
    assert results["arms"]["uniform"]["trained_by_p"]["p1"] > 0.2

    mtimes = {k: (out / "runs" / k[0] / f"seed-{k[1]}" / "summary.json").stat().st_mtime for k in summaries}
    again = subprocess.run([*PACED, "experiment", str(spec), "--out", str(out)], capture_output=True, text=True,
                           cwd=REPO, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 done, 0 to run" in again.stdout
    assert mtimes == {k: (out / "runs" / k[0] / f"seed-{k[1]}" / "summary.json").stat().st_mtime for k in summaries}

    changed = write_spec(tmp_path, steps=4)
    refused = subprocess.run([*PACED, "experiment", str(changed), "--out", str(out)], capture_output=True,
                             text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert refused.returncode == 1 and "holds a finished run of another config" in refused.stderr


def test_a_section_override_changes_only_its_leaves_and_a_tagged_one_replaces(tmp_path):
    spec, base = load_spec(
        write_spec(tmp_path, arms={"uniform": {"learner": {"lr": 5e-4}, "scheduler": {"kernel": {"type": "hard"}}}})
    )
    cfg = run_config(spec, base, "uniform", 0, 3)
    assert cfg.learner.lr == 5e-4
    assert (cfg.learner.batch_size, cfg.learner.lr_schedule, cfg.learner.warmup_steps) == (32, "cosine", 10)
    assert cfg.scheduler.kernel.type == "hard" and cfg.scheduler.min_outcomes == 4
