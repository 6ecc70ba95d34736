"""`paced export`: a real run's checkpoint becomes a Hugging Face model folder that transformers loads and that
generates exactly as the learner's student did, with a model card; each way it can go wrong is named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from paced_core.config import load_config
from services.export import export_model, main
from tests.test_pipeline import REPO, run_driver, small_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(ray_cluster, tiny_models, tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("run")
    run_driver(small_config(tiny_models, "export", steps=4, **{"learner.checkpoint_every": "2"}), out)
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    return export_model(run, tmp_path_factory.mktemp("export") / "student")


def greedy(model_dir: Path, prompt: str = "12+7=") -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        return model.generate(**ids, do_sample=False, max_new_tokens=8)[0].tolist()


def test_the_export_loads_and_generates_as_the_learners_student(run, exported):
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md"} <= {
        path.name for path in exported.iterdir()
    }
    assert greedy(exported) == greedy(run / "checkpoints" / "step-000004" / "student")


def test_the_model_card_holds_the_runs_figures_and_config(exported):
    card = (exported / "README.md").read_text()
    assert "# export: the student at step 4" in card
    assert "| held-out accuracy before |" in card and "| learner steps | 4 |" in card
    assert "| 0 | " in card  # the evaluation before training, from metrics.jsonl
    assert "```yaml\nrun:\n  name: export\n" in card


def test_step_exports_that_checkpoint(run, tmp_path):
    export_model(run, tmp_path / "step-2", step=2)
    weights = load_file(tmp_path / "step-2" / "model.safetensors")
    saved = load_file(run / "checkpoints" / "step-000002" / "student" / "model.safetensors")
    assert weights.keys() == saved.keys() and all(torch.equal(weights[k], saved[k]) for k in saved)
    assert (
        "This export is of step 2, not of the run's last step (4)." in (tmp_path / "step-2" / "README.md").read_text()
    )


def test_an_unknown_step_lists_the_steps_there_are(run, tmp_path, capsys):
    assert main([str(run), str(tmp_path / "out"), "--step", "3"]) == 1
    assert f"{run} has no checkpoint at step 3; it has steps 2, 4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_run_without_a_checkpoint_is_named(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("run: {name: x}\n")
    assert main([str(tmp_path / "run"), str(tmp_path / "out")]) == 1
    assert f"{tmp_path / 'run'} has no checkpoint under {tmp_path / 'run' / 'checkpoints'}" in capsys.readouterr().err


def test_a_folder_that_is_not_a_run_is_named(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert f"{tmp_path} is not a run folder (no config.yaml)" in capsys.readouterr().err


def test_a_destination_that_is_not_empty_is_refused(run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main([str(run), str(tmp_path)]) == 1
    assert f"destination {tmp_path} is not empty; give a new or empty folder" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_push_to_hub_offline_fails_with_a_message_not_a_traceback(run, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "services.cli", "export", str(run), str(tmp_path / "out"), "--push-to-hub", "me/m"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after transformers' progress bars
    assert last.startswith("paced export: --push-to-hub me/m: OfflineModeIsEnabled"), result.stderr
    assert f"upload it later with `hf upload me/m {tmp_path / 'out'}`" in result.stderr


def test_the_demo_saves_its_final_student():
    # The driver saves a checkpoint at the end of every run that sets learner.checkpoint_every.
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.learner.checkpoint_every is not None and cfg.learner.steps % cfg.learner.checkpoint_every == 0
