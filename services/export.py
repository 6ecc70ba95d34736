"""`paced export RUN_DIR OUT [--step N] [--push-to-hub REPO]`: a run's trained student as a Hugging Face model.

    paced export runs/demo models/demo-student                  # the latest checkpoint
    paced export runs/demo models/demo-step-250 --step 250      # one checkpoint of the run
    paced export runs/demo models/demo-student --push-to-hub me/demo-student

OUT gets what `AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)` read
(config, safetensors, generation config, tokenizer with its chat template), a model card, README.md,
holding the run's figures (summary.json, the evaluations in metrics.jsonl) and its config, and that config
as the run wrote it (secrets masked) in paced_config.yaml, from which `paced eval` takes the prompt
template, the generation settings and the graders. The weights are those the learner saved at that checkpoint
(RUN_DIR/checkpoints/step-NNNNNN/student, `services.learner.Learner.save_checkpoint`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from services.driver.run_dir import CONFIG, METRICS, SUMMARY

RUN_CONFIG = "paced_config.yaml"
"""The run's config.yaml, in an exported model folder."""


class ExportError(ValueError):
    """A run folder, checkpoint or destination that cannot be exported; the message names it and what to do."""


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """The complete checkpoints of a run by step (a `step-NNNNNN` folder with its student's weights)."""
    root = run_dir / "checkpoints"
    found = {}
    for path in sorted(root.glob("step-*")) if root.is_dir() else []:
        step = path.name.removeprefix("step-")
        if step.isdigit() and (path / "student" / "model.safetensors").is_file():
            found[int(step)] = path
    return found


def find_checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint at `step`, or the run's latest one (checkpoints/latest.json, else the highest step)."""
    from services.learner import latest_checkpoint

    if not (run_dir / CONFIG).is_file():
        raise ExportError(f"{run_dir} is not a run folder (no {CONFIG}); give the --out of a `paced run`")
    found = checkpoints(run_dir)
    if not found:
        raise ExportError(
            f"{run_dir} has no checkpoint under {run_dir / 'checkpoints'}; a run saves one every "
            f"learner.checkpoint_every steps, at its end when that is set, and when interrupted"
        )
    if step is None:
        latest = latest_checkpoint(run_dir)
        return latest if latest in found.values() else found[max(found)]
    if step not in found:
        raise ExportError(
            f"{run_dir} has no checkpoint at step {step}; it has steps {', '.join(str(s) for s in sorted(found))}"
        )
    return found[step]


def _check_destination(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"destination {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"destination {out} is not empty; give a new or empty folder")


def export_model(run_dir: str | Path, out: str | Path, step: int | None = None, name: str | None = None) -> Path:
    """Write the student of `run_dir`'s checkpoint at `step` (default: the latest) as a Hugging Face model
    folder with a model card into `out`, which must be new or empty; returns `out`. The card loads the model
    by `name` (a Hub repository), else by the path `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.models import save_model_dir

    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    ckpt = find_checkpoint(run_dir, step)
    _check_destination(out)
    config = yaml.safe_load((run_dir / CONFIG).read_text()) or {}
    student = ckpt / "student"
    model = AutoModelForCausalLM.from_pretrained(student)
    tokenizer = AutoTokenizer.from_pretrained(student)
    generation = model.generation_config
    # Generation stops where the run's rollouts stopped, at its length limit and on its end of text.
    generation.max_new_tokens = config.get("rollout", {}).get("max_new_tokens", generation.max_new_tokens)
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    save_model_dir(model, tokenizer, out)
    trained_step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    summary, evals = _read_json(run_dir / SUMMARY), _eval_rows(run_dir / METRICS)
    card = model_card(config, summary, evals, trained_step, name or str(out))
    (out / "README.md").write_text(card)
    (out / RUN_CONFIG).write_text((run_dir / CONFIG).read_text())
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _eval_rows(path: Path) -> list[dict[str, Any]]:
    """The held-out evaluations in metrics.jsonl (a half-written last row is skipped, as the run does)."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("kind") == "eval":
            rows.append(row)
    return rows


def _figure(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def model_card(
    config: dict[str, Any], summary: dict[str, Any] | None, evals: list[dict[str, Any]], step: int, name: str
) -> str:
    """README.md of an exported student: what it is, how it was trained, its figures, how to prompt it."""
    run, data, rollout = config.get("run", {}), config.get("data", {}), config.get("rollout", {})
    student, teacher = config.get("student", {}), config.get("teacher", {})
    teacher_text = teacher.get("path") or "the frozen initial student (self-distillation)"
    loss = config.get("schedule", {})
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [paced, distillation]",
        "---",
        "",
        f"# {run.get('name', 'paced')}: the student at step {step}",
        "",
        f"Distilled with PACED (distillation weighted by the student's pass rate, w(p) = p(1 - p)) from "
        f"`{student.get('path')}` (student) and `{teacher_text}` (teacher), schedule `{_flow(loss)}`, "
        f"kernel `{_flow(config.get('scheduler', {}).get('kernel'))}`. Exported by `paced export` from the "
        f"checkpoint of learner step {step}.",
        "",
        "## Results",
        "",
    ]
    if summary is None:
        lines.append("The run wrote no summary.json (it did not finish); the evaluations below are what it logged.")
    else:
        final = summary.get("steps")
        lines += [
            "| figure | value |",
            "|---|---|",
            f"| held-out accuracy before | {_figure(summary.get('heldout_accuracy_before'))} |",
            f"| held-out accuracy after (step {final}) | {_figure(summary.get('heldout_accuracy_after'))} |",
            f"| learner steps | {final} |",
            f"| training loop wall time (s) | {_figure(summary.get('train_loop_s'))} |",
            f"| rollouts graded | {summary.get('rollouts_graded')} |",
        ]
        if final != step:
            lines += ["", f"This export is of step {step}, not of the run's last step ({final})."]
    if evals:
        groups = sorted({group for row in evals for group in row.get("by_group", {})})
        lines += [
            "",
            "Held-out accuracy by policy version (learner step) and group:",
            "",
            "| version | accuracy | " + " | ".join(groups) + " |",
            "|---" * (2 + len(groups)) + "|",
        ]
        for row in evals:
            by_group = row.get("by_group", {})
            cells = [_figure(by_group[g]) if g in by_group else "" for g in groups]
            lines.append(f"| {row.get('version')} | {_figure(row.get('accuracy'))} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Prompting it as it was trained",
        "",
        f"Prompt template `{data.get('template')}` (`paced_core.tasks.get_template`), "
        f"{'through the tokenizer chat template' if student.get('chat_template') else 'as plain text'}; "
        f"sampled at temperature {rollout.get('temperature')}, at most {rollout.get('max_new_tokens')} new "
        f"tokens, stopping at {rollout.get('stop') or 'the end-of-text token'}.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"model = AutoModelForCausalLM.from_pretrained({name!r})",
        f"tokenizer = AutoTokenizer.from_pretrained({name!r})",
        "```",
        "",
        "## The run's config",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()


def push_to_hub(out: Path, repo: str) -> str:
    """Upload the model folder `out` to the Hugging Face Hub repository `repo` (created if new, private);
    returns its URL. Every failure (offline, no token, no access) becomes an `ExportError` that says how
    to upload the folder later."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    later = f"the model folder {out} is written; upload it later with `hf upload {repo} {out}`"
    try:
        api = HfApi()
        api.create_repo(repo, private=True, exist_ok=True)
        commit = api.upload_folder(folder_path=out, repo_id=repo, commit_message="paced export")
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise ExportError(f"--push-to-hub {repo}: {type(err).__name__}: {err}; {later}") from err
    return commit.repo_url.url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="paced export",
        description="Write a run's trained student as a Hugging Face model folder (safetensors, config, "
        "tokenizer, generation config) with a model card holding the run's config and figures.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder (the --out of paced run)")
    parser.add_argument("out", type=Path, metavar="OUT", help="the model folder to write (new or empty)")
    parser.add_argument("--step", type=int, metavar="N", help="the checkpoint of learner step N (default: latest)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="then upload OUT to this Hub repository (private)")
    args = parser.parse_args(argv)
    try:
        out = export_model(args.run_dir, args.out, args.step, args.push_to_hub)
        print(f"wrote {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}); model card: {out / 'README.md'})")
        if args.push_to_hub:
            print(f"pushed to {push_to_hub(out, args.push_to_hub)}")
    except ExportError as err:
        print(f"paced export: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
