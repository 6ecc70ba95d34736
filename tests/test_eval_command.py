"""`paced eval`: a small real run of the shipped student, then its final student evaluated from the run folder
and from the model `paced export` wrote reproduces the run's own last held-out evaluation (greedy is
deterministic); mean@k, other data sources, and each way the input can be wrong, named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.evaluate import EvalReport, evaluate, main
from services.export import export_model
from tests.test_pipeline import run_driver, small_config

pytestmark = pytest.mark.slow

EMBEDDED = {"student": "embedded:student", "teacher": "embedded:teacher"}


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory) -> Path:
    """A finished 4-step run of the shipped (trained) student, its final student saved, 40 problems held out."""
    out = tmp_path_factory.mktemp("run")
    overrides = {"learner.checkpoint_every": "4", "pipeline.eval_problems": "40", "data.train.n": "400"}
    run_driver(small_config(EMBEDDED, "eval", steps=4, **overrides), out)
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    return export_model(run, tmp_path_factory.mktemp("export") / "student")


def last_eval(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"][-1]


def test_the_run_folder_reproduces_the_runs_final_heldout_accuracy(run):
    final = last_eval(run)
    report = evaluate(str(run), "heldout", progress=False)
    assert final["version"] == 4 and report.model_dir == str(run / "checkpoints" / "step-000004" / "student")
    assert (report.problems, report.metric, report.max_new_tokens, report.template) == (40, "greedy", 8, "plain")
    assert 0 < report.accuracy < 1  # the shipped student solves some held-out problems, not all
    assert report.accuracy == final["accuracy"] and report.by_group == final["by_group"]


def test_the_export_reproduces_it_too_as_json(run, exported, capsys):
    assert (exported / "paced_config.yaml").read_text() == (run / "config.yaml").read_text()
    assert main(["--model", str(exported), "--data", "heldout", "--json"]) == 0
    out = capsys.readouterr()
    report = EvalReport.model_validate_json(out.out)
    final = last_eval(run)
    assert report.accuracy == final["accuracy"] and report.by_group == final["by_group"]
    assert "[paced eval] 40/40 problems" in out.err  # progress goes to stderr, the record alone to stdout


def test_the_table_has_a_row_per_group_and_the_total(exported, capsys):
    assert main(["--model", str(exported), "--data", "heldout"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{exported} on heldout: 40 problems, greedy, hf backend, at most 8 new tokens")
    assert lines[1].split() == ["group", "problems", "accuracy"]
    groups = [line.split()[0] for line in lines[2:]]
    assert groups[-1] == "all" and set(groups[:-1]) <= {"L1", "L2", "L3", "L4", "L5"}
    assert sum(int(line.split()[1]) for line in lines[2:-1]) == int(lines[-1].split()[1]) == 40


def test_mean_at_k_samples_each_problem_k_times(exported):
    report = evaluate(str(exported), "heldout", samples=4, temperature=1.0, limit=8, progress=False)
    assert (report.metric, report.samples, report.problems, report.temperature) == ("mean@4", 4, 8, 1.0)
    assert all(a in (0, 0.25, 0.5, 0.75, 1) for a in report.per_problem)
    assert report.accuracy == sum(report.per_problem) / 8


def test_a_jsonl_file_and_a_builtin_name_are_data(exported, tmp_path):
    rows = [{"id": "a", "problem": "12+7=", "answer": "19", "checker": "exact", "level": 1}]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate(str(exported), str(tmp_path / "mine.jsonl"), progress=False)
    assert report.ids == ["a"] and report.group_sizes == {"L1": 1}
    # AIME prompts are longer than the tiny model's context: keep each prompt's last tokens (a --set of the config).
    aime = evaluate(str(exported), "aime24", limit=2, overrides=["rollout.long_prompts=truncate"], progress=False)
    assert aime.group_sizes == {"aime24": 2}


def test_a_prompt_too_long_for_the_model_is_named(exported, capsys):
    assert main(["--model", str(exported), "--data", "aime24", "--limit", "1"]) == 1
    assert "paced eval: --data aime24: problem 'aime2024-I-1' has a prompt of 520 tokens" in capsys.readouterr().err


def test_a_missing_model_folder_is_named(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope"), "--data", "aime24"]) == 1
    assert capsys.readouterr().err == (
        f"paced eval: --model {tmp_path / 'nope'}: no such folder; give a run folder (paced run --out) or a "
        "model folder\n"
    )


def test_a_folder_that_is_neither_a_run_nor_a_model_is_named(tmp_path, capsys):
    assert main(["--model", str(tmp_path), "--data", "aime24"]) == 1
    assert "neither a run folder (no config.yaml) nor a Hugging Face model folder" in capsys.readouterr().err


def test_an_unknown_dataset_lists_the_ones_there_are(exported, capsys):
    assert main(["--model", str(exported), "--data", "math5000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("paced eval: --data math5000: not `heldout`, a built-in dataset (math500, aime24")
    assert "math5000 does not exist" in err


def test_a_bad_jsonl_file_is_named_with_its_line(exported, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "problem": "1+1=", "answer": "2"}\nnot json\n')
    assert main(["--model", str(exported), "--data", str(tmp_path / "bad.jsonl")]) == 1
    assert f"paced eval: --data {tmp_path / 'bad.jsonl'}: {tmp_path / 'bad.jsonl'}:2: invalid JSON" in (
        capsys.readouterr().err
    )


def test_heldout_needs_a_run_config(exported, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in exported.iterdir():
        if path.name != "paced_config.yaml":
            (plain / path.name).write_bytes(path.read_bytes())
    assert main(["--model", str(plain), "--data", "heldout"]) == 1
    assert f"--data heldout is a run's held-out set; {plain} carries no run config" in capsys.readouterr().err


def test_a_temperature_without_samples_is_refused(exported, capsys):
    assert main(["--model", str(exported), "--data", "heldout", "--temperature", "0.7"]) == 1
    assert "--temperature 0.7 needs --samples > 1: one sample per problem is greedy" in capsys.readouterr().err
