"""`paced eval --model DIR_OR_RUN --data NAME_OR_FILE`: a model's accuracy on a set of problems, scored as a
run scores its own evaluations (`services.scoring.score_problems`, the same rollout worker and graders).

    paced eval --model runs/demo --data heldout                  # the run's final student on its held-out set
    paced eval --model models/demo-student --data heldout        # the same, from the model `paced export` wrote
    paced eval --model runs/demo --step 250 --data heldout --json
    paced eval --model models/smollm2-135m-instruct --data gsm8k_test --samples 8 --temperature 0.6 \\
        --set data.template=gsm8k --set student.chat_template=true --set rollout.max_new_tokens=512

--model is a run folder (the --out of `paced run`: its latest checkpoint's student, or that of `--step N`,
found as `paced export` finds it) or a Hugging Face model folder. The settings (prompt template, chat
template, `rollout` generation settings, `verifier` graders, dtype) are the run's config: the run folder's
config.yaml, or the paced_config.yaml an export carries; a model folder without one gets the config
defaults, with `rollout.max_new_tokens` from its generation config. `--set KEY=VALUE` changes any of them.

--data is `heldout` (the run's held-out set as the run evaluated it: its first `pipeline.eval_problems`), a
name in the config's `data.eval_sets`, a built-in dataset, a JSON lines file (`type: jsonl`), another file or
folder Hugging Face `datasets` reads (`type: datasets`), or one data source as YAML (`{type: synthetic, n: 50}`).

Greedy (one sample per problem, the default) or mean@k (`--samples k`, at `--temperature`, by default the
config's `pipeline.eval_temperature`, else `rollout.temperature`). A table of the accuracy by group (level,
subject, dataset or a datasets source's group column: `services.pool.group_of`) goes to stdout, or with
`--json` one `EvalReport`; progress lines (problems done, rate, time left) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from paced_core.config import (
    BuiltinData,
    ConfigError,
    DatasetsData,
    DataSource,
    JsonlData,
    PacedConfig,
    load_config,
    validate_config,
)
from paced_core.config.loader import add_set_option, apply_override
from paced_core.progress import eta
from paced_core.tasks import BUILTIN_DATASETS, Problem, TaskDataError, get_template
from services.driver.run_dir import CONFIG
from services.export import RUN_CONFIG, ExportError, find_checkpoint
from services.models import ModelLoadError
from services.pool import evaluated_heldout, load_pool, load_source
from services.rollout import HFRolloutWorker, PromptTooLong, RolloutWorker, eval_temperature
from services.scoring import Score, score_problems
from services.verifier import Grader


class EvalError(ValueError):
    """A model, data set or setting `paced eval` cannot use; the message names it and where it is."""


class EvalReport(Score):
    """What `paced eval --json` prints: the score, and what was evaluated how."""

    model: str  # --model as given
    model_dir: str  # the model folder loaded (a run's checkpoint student)
    data: str  # --data as given
    ids: list[str]  # the problems, in the order of `per_problem`
    backend: str
    temperature: float
    max_new_tokens: int
    template: str


def resolve_model(model: str, step: int | None) -> tuple[Path, Path | None]:
    """The model folder to load and the run config that goes with it (None: none there)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        raise EvalError(f"--model {model}: no such folder; give a run folder (paced run --out) or a model folder")
    if (path / CONFIG).is_file():
        try:
            return find_checkpoint(path, step) / "student", path / CONFIG
        except ExportError as err:
            raise EvalError(f"--model {model}: {err}") from err
    if step is not None:
        raise EvalError(f"--step {step} picks a checkpoint of a run folder; {model} is a model folder")
    if not (path / "config.json").is_file():
        raise EvalError(
            f"--model {model}: neither a run folder (no {CONFIG}) nor a Hugging Face model folder (no config.json)"
        )
    return path, (path / RUN_CONFIG) if (path / RUN_CONFIG).is_file() else None


def eval_config(model_dir: Path, run_config: Path | None, overrides: Sequence[str]) -> PacedConfig:
    """The run's config (or the defaults, for a model folder without one) with `overrides`, its student
    being `model_dir`."""
    if run_config is not None:
        cfg = load_config(run_config, overrides)
        student = cfg.student.model_copy(update={"path": str(model_dir), "gguf_file": None})
        return cfg.model_copy(update={"student": student})
    raw: dict = {"student": {"path": str(model_dir)}, "data": {"train": []}}
    generation = model_dir / "generation_config.json"
    max_new = json.loads(generation.read_text()).get("max_new_tokens") if generation.is_file() else None
    if max_new:
        raw["rollout"] = {"max_new_tokens": max_new}
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=f"{model_dir} (the config defaults, no {RUN_CONFIG})")


def load_data(data: str, cfg: PacedConfig, has_run_config: bool) -> list[Problem]:
    """The problems `--data` names (module docstring)."""
    if data == "heldout":
        if not has_run_config:
            raise EvalError(
                f"--data heldout is a run's held-out set; {cfg.student.path} carries no run config "
                f"({RUN_CONFIG}): give the run folder, or a model `paced export` wrote"
            )
        problems = evaluated_heldout(load_pool(cfg.data, seed=cfg.run.seed), cfg.pipeline)
        if not problems:
            raise EvalError("--data heldout: the run has no held-out set (data.heldout, data.heldout_fraction)")
        return problems
    source: DataSource
    if data in cfg.data.eval_sets:
        source = cfg.data.eval_sets[data]
    elif data in BUILTIN_DATASETS:
        source = BuiltinData(name=data)
    elif data.lstrip().startswith("{"):
        try:
            source = TypeAdapter(DataSource).validate_python(yaml.safe_load(data))
        except (yaml.YAMLError, ValidationError) as err:
            raise EvalError(f"--data {data}: not a data source ({err})") from err
    elif Path(data).expanduser().exists():
        path = str(Path(data).expanduser())
        source = JsonlData(path=path) if path.endswith(".jsonl") else DatasetsData(path=path)
    else:
        sets = f"the config's data.eval_sets ({', '.join(cfg.data.eval_sets)}), " if cfg.data.eval_sets else ""
        raise EvalError(
            f"--data {data}: not `heldout`, {sets}a built-in dataset ({', '.join(BUILTIN_DATASETS)}) nor a file "
            f"({Path(data).expanduser().resolve()} does not exist)"
        )
    try:
        return load_source(source)
    except (TaskDataError, OSError) as err:
        raise EvalError(f"--data {data}: {err}") from err


def start_worker(cfg: PacedConfig, backend: str) -> RolloutWorker:
    """A rollout worker of `backend` serving `cfg.student`, in this process, as the run's rollout actors
    start theirs (`services.driver.fleet`): the same generation settings, prompt and thread count."""
    rollout = cfg.rollout.model_copy(update={"backend": backend})
    args = {
        "gguf_file": cfg.student.gguf_file,
        "dtype": cfg.student.dtype,
        "chat": cfg.student.chat_template,
        "threads": max(1, int(rollout.num_cpus)),
    }
    template = get_template(cfg.data.template)
    try:
        if backend == "vllm":
            # vLLM logs to stdout by default; stdout is the table or the JSON record here.
            os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
            from services.rollout_vllm import EngineStartError, VLLMRolloutWorker

            try:
                return VLLMRolloutWorker("eval-1", cfg.student.path, rollout, [], template, **args)
            except EngineStartError as err:
                raise EvalError(str(err)) from err
        return HFRolloutWorker("eval-1", cfg.student.path, rollout, [], template, **args)
    except ModelLoadError as err:
        raise EvalError(str(err)) from err


def evaluate(
    model: str,
    data: str,
    samples: int = 1,
    temperature: float | None = None,
    backend: str = "hf",
    step: int | None = None,
    overrides: Sequence[str] = (),
    limit: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Score `model` on `data` (module docstring); progress lines on stderr when `progress`."""
    model_dir, run_config = resolve_model(model, step)
    cfg = eval_config(model_dir, run_config, overrides)
    if samples == 1 and temperature:
        raise EvalError(f"--temperature {temperature} needs --samples > 1: one sample per problem is greedy")
    try:
        given = cfg.pipeline.eval_temperature if temperature is None else temperature
        chosen = eval_temperature(samples, given, cfg.rollout.temperature)
    except ValueError as err:
        raise EvalError(f"--samples {samples}: {err}") from err
    problems = load_data(data, cfg, run_config is not None)[:limit]
    worker = start_worker(cfg, backend)
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed > 0 else float("inf")
        print(
            f"[paced eval] {done}/{total} problems, {rate:.1f} problems/s, {eta(done, total, elapsed)}",
            file=sys.stderr,
            flush=True,
        )

    # Chunks of whole generation batches: each batch holds the same prompts as in one call, as the run's.
    chunk = math.lcm(cfg.rollout.batch_size, samples) // samples
    grader = Grader(cfg.verifier)
    try:
        score = score_problems(
            problems,
            lambda part: worker.complete(part, samples, chosen),
            lambda ps, texts: [v.correct for v in grader.grade(ps, texts)],
            samples=samples,
            chunk=chunk,
            progress=report if progress else None,
        )
    except PromptTooLong as err:
        raise EvalError(f"--data {data}: {err}") from err
    finally:
        grader.close()
    return EvalReport(
        **score.model_dump(),
        model=model,
        model_dir=str(model_dir),
        data=data,
        ids=[p.id for p in problems],
        backend=backend,
        temperature=chosen,
        max_new_tokens=cfg.rollout.max_new_tokens,
        template=cfg.data.template,
    )


def render(report: EvalReport) -> str:
    """The table `paced eval` prints: accuracy by group, then overall."""
    width = max(len("group"), *(len(g) for g in report.by_group))
    lines = [
        f"{report.model}{'' if report.model_dir == report.model else f' ({report.model_dir})'} on {report.data}: "
        f"{report.problems} problems, {report.metric}"
        + (f" at temperature {report.temperature:g}" if report.samples > 1 else "")
        + f", {report.backend} backend, at most {report.max_new_tokens} new tokens",
        f"{'group':<{width}}  problems  accuracy",
    ]
    for group, accuracy in report.by_group.items():
        lines.append(f"{group:<{width}}  {report.group_sizes[group]:>8}  {accuracy:>8.3f}")
    lines.append(f"{'all':<{width}}  {report.problems:>8}  {report.accuracy:>8.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="paced eval",
        description="A model's accuracy on a set of problems, greedy or mean@k, scored as a run scores its "
        "evaluations, by group.",
    )
    parser.add_argument("--model", required=True, metavar="DIR_OR_RUN", help="a run folder or an HF model folder")
    parser.add_argument(
        "--data",
        required=True,
        metavar="NAME_OR_FILE",
        help="heldout (the run's), a name in data.eval_sets, a built-in dataset, a .jsonl file, a file or folder "
        "datasets reads, or a data source as YAML",
    )
    parser.add_argument("--samples", type=int, default=1, metavar="K", help="samples per problem (default 1: greedy)")
    parser.add_argument("--temperature", type=float, metavar="T", help="sampling temperature of mean@k")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="rollout backend (default hf)")
    parser.add_argument("--step", type=int, metavar="N", help="a run folder's checkpoint of step N (default: latest)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N problems")
    add_set_option(parser, "rollout.max_new_tokens=512")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    try:
        report = evaluate(
            args.model,
            args.data,
            args.samples,
            args.temperature,
            args.backend,
            args.step,
            args.overrides,
            args.limit,
        )
    except ConfigError as err:
        print(f"paced eval: {err}", file=sys.stderr)
        return 2
    except EvalError as err:
        print(f"paced eval: {err}", file=sys.stderr)
        return 1
    print(report.model_dump_json(indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
