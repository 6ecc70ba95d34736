"""`paced analyze snr`: the bucket SNR with its small-sample correction, the bell fit, and the command on the
shipped models (a small sample of the testbed, gradients over the last layer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.analyze_snr import bell_verdict, bucket_snr, fit_bell

REPO = Path(__file__).resolve().parents[1]


def test_bucket_snr_is_unbiased_for_the_squared_mean_over_the_trace():
    rng = np.random.default_rng(0)
    mu, sigma, d = np.full(50, 0.2), 1.0, 50
    estimates = [bucket_snr(mu + sigma * rng.standard_normal((8, d)))["snr"] for _ in range(4000)]
    # E[signal] = ||mu||^2 = 2.0 exactly; tr Cov = d sigma^2 = 50; the ratio's mean is close to 2 / 50.
    assert np.mean(estimates) == pytest.approx((mu @ mu) / (d * sigma**2), rel=0.05)
    assert bucket_snr(np.zeros((2, 3)))["snr"] is None  # fewer than 3 problems: no estimate


def test_fit_recovers_the_exponents_of_a_bell():
    p = np.arange(1, 8) / 8
    snr = np.exp(1.5 * np.log(p) + 0.7 * np.log(1 - p) - 1.0)
    fit = fit_bell(np.concatenate([[0.0], p, [1.0]]), np.concatenate([[0.01], snr, [0.02]]))
    assert (fit["a"], fit["b"], fit["c"]) == pytest.approx((1.5, 0.7, -1.0))
    assert fit_bell(np.array([0.0, 0.5, 1.0]), np.array([1.0, 1.0, 1.0])) is None


@pytest.mark.parametrize(
    ("ends", "verdict"),
    [((0.001, 0.001), "collapses at both extremes"), ((0.02, 0.001), "collapses at p = 1 only"),
     ((0.001, 0.02), "collapses at p = 0 only"), ((0.02, 0.02), "collapses at neither")],
)  # fmt: skip
def test_the_verdict_compares_each_end_with_the_interior_peak(ends, verdict):
    buckets = [{"correct": 0, "snr": ends[0]}, {"correct": 1, "snr": 0.01}, {"correct": 2, "snr": 0.02},
               {"correct": 3, "snr": 0.01}, {"correct": 4, "snr": ends[1]}]  # fmt: skip
    assert verdict in bell_verdict({"samples": 4, "buckets": buckets})


@pytest.mark.slow
def test_the_command_writes_buckets_a_fit_and_a_plot(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "analyze", "snr", "--config", "configs/testbed.yaml",
         "--problems", "60", "--samples", "4", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "snr.json").read_text())
    assert [b["correct"] for b in result["buckets"]] == [0, 1, 2, 3, 4]
    assert sum(b["n"] for b in result["buckets"]) == result["with_gradient"] <= 60
    assert (tmp_path / "snr.png").stat().st_size > 1000
    assert "| c / K | problems |" in (tmp_path / "snr.md").read_text()
