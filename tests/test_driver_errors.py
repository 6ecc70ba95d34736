"""Bad input to `paced run` fails with a message naming what is wrong, and exit code != 0, before Ray starts:
so before any actor, in seconds rather than the minute a model load inside an actor takes. The run's Ray
temp dir (RAY_TMPDIR) is a fresh folder; that it stays empty shows Ray was never started."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def paced_run(tmp_path: Path, models: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, bool]:
    """The run's result, and whether it started Ray."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="paced-rt-", dir="/tmp"))  # short: Ray's socket paths must fit
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "run", "--config", str(REPO / "configs" / "demo.yaml"),
         "--out", str(tmp_path / "out"),
         "--set", f"student.path={models['student']}", "--set", f"teacher.path={models['teacher']}", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )  # fmt: skip
    started_ray = any(ray_tmp.iterdir())
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return proc, started_ray


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "student.path=/nonexistent/model"],
            "student.path: model directory '/nonexistent/model' does not exist",
        ),
        (["--set", "teacher.path=./no-such-dir"], "teacher.path: model directory './no-such-dir' does not exist"),
        # A relative path without ./ could be a Hugging Face id: the message says it is neither.
        (["--set", "student.path=models/not-imported"], "(and no folder 'models/not-imported' is under"),
        (["--set", "learner.lr=-1"], "learner.lr: Input should be greater than 0"),
        (["--set", "store.url=redis://:s3cret@127.0.0.1:1/0"], "redis://:***@127.0.0.1:1/0"),
    ],
    ids=["missing-student", "missing-teacher", "not-a-folder-or-id", "invalid-config", "unreachable-redis"],
)
def test_bad_input_fails_fast_with_a_clear_message(tmp_path, tiny_models, args, message):
    proc, started_ray = paced_run(tmp_path, tiny_models, *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout
    assert not started_ray


def test_a_data_file_with_no_valid_rows_is_named(tmp_path, tiny_models):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n\n")
    proc, started_ray = paced_run(tmp_path, tiny_models, "--set", f"data.train={{type: jsonl, path: {data}}}")
    assert proc.returncode != 0
    assert str(data) in proc.stderr and "no problems" in proc.stderr, proc.stderr
    assert not started_ray


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "data.train=[{type: synthetic, n: 20, seed: 1}, {type: synthetic, n: 20, seed: 1}]"],
            r"paced: data.train\[1\]: problem id '.+' is already in data.train\[0\]",
        ),
        (["--set", "verifier.checker=choice"], r"paced: data.train: problem '.+' has answer '.+', not one letter A-J"),
    ],
    ids=["duplicate-ids", "checker-that-cannot-grade"],
)
def test_data_errors_are_one_paced_line_not_a_traceback(tmp_path, tiny_models, args, message):
    proc, _ = paced_run(tmp_path, tiny_models, *args)
    assert proc.returncode == 1
    assert re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_corrupt_weights_file_is_named_before_any_actor_starts(tmp_path, tiny_models):
    # A model.safetensors cut in half (an interrupted copy): preflight reads every weights file's header.
    broken = tmp_path / "broken-student"
    shutil.copytree(tiny_models["student"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    proc, started_ray = paced_run(tmp_path, {**tiny_models, "student": str(broken)})
    assert proc.returncode == 1
    assert f"paced: student.path: {weights} is not a readable safetensors file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not started_ray
