"""`paced experiment FILE`: every arm x seed of one experiment, then a report with intervals and plots.

An experiment file names a base config, the arms (each a set of overrides of it), the seeds and a step
budget:

    name: default
    base: ../testbed.yaml          # relative to this file
    steps: 150                     # learner.steps of every run
    seeds: [0, 1, 2]               # learner.seed, rollout.seed and scheduler.seed of a run
    baseline: uniform              # the arm every other is compared with
    set: {run.eval_every: 25}      # overrides for every arm
    arms:
      uniform: {scheduler.kernel: {type: uniform}}
      paced: {}
    quick: {steps: 40, seeds: [0, 1], arms: [uniform, paced]}   # what --quick runs instead

Runs go one after another in this process, sharing one Ray cluster (`--parallel N`: N at a time, each
run a Ray task with its own actors, when the cluster has room). Each run writes into
OUT/runs/ARM/seed-S (the driver's summary.json and metrics.jsonl, plus config.yaml). A run whose
summary.json exists with the same resolved config is not redone, so an interrupted experiment continues
where it stopped; a run whose config changed is refused (use another --out). Then
`services.experiment_report` writes OUT/report.md, OUT/results.json and the plots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paced_core.config import ConfigError, PacedConfig, dump_config, load_config


class ExperimentError(ValueError):
    """An experiment file or output folder that cannot be used; the message says where and why."""


class QuickVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(ge=1)
    seeds: list[int] = Field(min_length=1)
    arms: list[str] | None = None  # None: every arm


class ExperimentSpec(BaseModel):
    """One experiment file, validated."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: str
    steps: int = Field(ge=1)
    seeds: list[int] = Field(min_length=1)
    baseline: str
    set: dict[str, Any] = Field(default_factory=dict)
    arms: dict[str, dict[str, Any]] = Field(min_length=1)
    quick: QuickVariant | None = None

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        import re

        bad = [name for name in arms if not re.match(r"^[A-Za-z0-9_.-]+$", name)]
        if bad:
            raise ValueError(f"arm names are letters, digits, '_', '.', '-'; got {bad[0]!r}")
        return arms

    @model_validator(mode="after")
    def _names_exist(self) -> ExperimentSpec:
        if self.baseline not in self.arms:
            raise ValueError(f"baseline {self.baseline!r} is not an arm (arms: {', '.join(self.arms)})")
        unknown = [a for a in (self.quick.arms or []) if a not in self.arms] if self.quick else []
        if unknown:
            raise ValueError(f"quick.arms names {unknown[0]!r}, which is not an arm (arms: {', '.join(self.arms)})")
        if self.quick and self.quick.arms is not None and self.baseline not in self.quick.arms:
            raise ValueError(f"quick.arms must include the baseline {self.baseline!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self

    def variant(self, quick: bool) -> tuple[int, list[int], list[str]]:
        """(steps, seeds, arms) of the full experiment or of its quick variant."""
        if not quick:
            return self.steps, self.seeds, list(self.arms)
        if self.quick is None:
            raise ExperimentError(f"experiment {self.name!r} has no quick variant (a `quick:` section)")
        return self.quick.steps, self.quick.seeds, self.quick.arms or list(self.arms)


def load_spec(path: str | Path) -> tuple[ExperimentSpec, Path]:
    """The validated spec and its base config's path. Errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ExperimentError(f"cannot read experiment file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ExperimentError(f"{path}: not valid YAML: {err}") from err
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in err.errors())
        raise ExperimentError(f"{path}: {problems}") from err
    base = (path.parent / spec.base).resolve()
    if not base.is_file():
        raise ExperimentError(f"{path}: base config {spec.base!r} not found (looked for {base})")
    return spec, base


def _as_sets(key: str, value: Any) -> list[str]:
    """`--set key=value` overrides from a YAML value. A mapping without a `type` tag is flattened into
    dotted leaves (so `learner: {lr: 5e-4}` changes only the learning rate); a tagged one (a kernel, a
    schedule) replaces the section whole. Values go as JSON, which YAML reads back unchanged."""
    if isinstance(value, dict) and "type" not in value and value:
        return [item for k, v in value.items() for item in _as_sets(f"{key}.{k}", v)]
    return [f"{key}={json.dumps(value)}"]


def run_config(spec: ExperimentSpec, base: Path, arm: str, seed: int, steps: int) -> PacedConfig:
    """The resolved config of one run: base, then the experiment's `set`, the arm, the seeds and steps."""
    overrides = [item for k, v in spec.set.items() for item in _as_sets(k, v)]
    overrides += [item for k, v in spec.arms[arm].items() for item in _as_sets(k, v)]
    overrides += [
        f"learner.steps={steps}",
        f"learner.seed={seed}",
        f"rollout.seed={seed}",
        f"scheduler.seed={seed}",
        f"run.name={spec.name}-{arm}-s{seed}",
        "dashboard.enabled=false",
    ]
    try:
        return load_config(base, overrides)
    except ConfigError as err:
        raise ExperimentError(f"arm {arm!r} (seed {seed}): {err}") from err


def log(message: str) -> None:
    print(f"[paced experiment {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _run_one(cfg_yaml: str, run_dir: str) -> dict[str, Any]:
    """One run in this process (Ray initialised): the driver's summary. The embedded store goes with it."""
    import ray

    from services.driver import Driver

    cfg = load_config_text(cfg_yaml)
    driver = Driver(cfg, run_dir)
    try:
        summary = driver.run()
    finally:
        driver.close()
        with contextlib.suppress(ValueError):  # a Redis store has no actor
            ray.kill(ray.get_actor(f"paced-store-{cfg.store.run_name}", namespace="paced"))
    return summary


def load_config_text(text: str) -> PacedConfig:
    """A config from `dump_config` output (what config.yaml of a run keeps)."""
    return PacedConfig.model_validate(yaml.safe_load(text))


def run_experiment(path: str | Path, out: str | Path, quick: bool = False, parallel: int = 1) -> Path:
    """Run every arm x seed not yet done, then write the report; returns the report's path."""
    from services.driver import init_ray, preflight
    from services.experiment_report import write_report

    spec, base = load_spec(path)
    steps, seeds, arms = spec.variant(quick)
    out = Path(out)
    todo: list[tuple[str, int, PacedConfig, Path]] = []
    for arm in arms:
        for seed in seeds:
            cfg = run_config(spec, base, arm, seed, steps)
            run_dir = out / "runs" / arm / f"seed-{seed}"
            text = dump_config(cfg)
            saved = run_dir / "config.yaml"
            if (run_dir / "summary.json").is_file():
                if saved.is_file() and saved.read_text() == text:
                    continue
                raise ExperimentError(
                    f"{run_dir} holds a finished run of another config (the experiment file or its base changed "
                    f"since); give another --out, or delete {run_dir} to redo it"
                )
            todo.append((arm, seed, cfg, run_dir))
    total = len(arms) * len(seeds)
    log(f"experiment {spec.name}{' (quick)' if quick else ''}: {len(arms)} arms x {len(seeds)} seeds, "
        f"{steps} steps each; {total - len(todo)} done, {len(todo)} to run")  # fmt: skip
    if todo:
        preflight(todo[0][2])
        init_ray()
    started = time.monotonic()
    done = 0

    def prepare(run_dir: Path, cfg: PacedConfig) -> str:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an interrupted run: redone from the start
        run_dir.mkdir(parents=True)
        return dump_config(cfg)  # the driver writes it to the run's config.yaml

    def finished(arm: str, seed: int, summary: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        elapsed = time.monotonic() - started
        eta = elapsed / done * (len(todo) - done)
        log(f"{arm} seed {seed}: held-out accuracy {summary['heldout_accuracy_before']:.3f} -> "
            f"{summary['heldout_accuracy_after']:.3f} in {summary['wall_s']:.0f} s "
            f"[{done}/{len(todo)}, ETA {eta / 60:.1f} min]")  # fmt: skip

    if parallel <= 1:
        for arm, seed, cfg, run_dir in todo:
            log(f"{arm} seed {seed}: running -> {run_dir}")
            finished(arm, seed, _run_one(prepare(run_dir, cfg), str(run_dir)))
    else:
        import ray

        from services.placement import FIELDS, run_demand

        # Each resource of the cluster over the most any one run holds of it at its peak.
        cluster = ray.cluster_resources()
        peaks = {r: max(run_demand(c).total(r) for _, _, c, _ in todo) for r in FIELDS}
        room = max(1, min((int(cluster.get(r, 0.0) // peak) for r, peak in peaks.items() if peak), default=parallel))
        if room < parallel:
            log(
                f"--parallel {parallel}: the cluster's CPUs and GPUs hold {room} run(s) at once; "
                f"running {room} at a time"
            )
            parallel = room
        remote = ray.remote(num_cpus=0)(_run_one)
        pending: dict[Any, tuple[str, int]] = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < parallel:
                arm, seed, cfg, run_dir = queue.pop(0)
                log(f"{arm} seed {seed}: running -> {run_dir}")
                pending[remote.remote(prepare(run_dir, cfg), str(run_dir.resolve()))] = (arm, seed)
            ready, _ = ray.wait(list(pending), num_returns=1)
            arm, seed = pending.pop(ready[0])
            finished(arm, seed, ray.get(ready[0]))
    report = write_report(spec, out, arms, seeds, steps)
    log(f"report: {report}")
    return report


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="paced experiment", description="Run every arm x seed, then report.")
    parser.add_argument("file", help="experiment YAML (configs/experiments/default.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/experiments/<name>)")
    parser.add_argument("--quick", action="store_true", help="run the file's quick variant")
    parser.add_argument("--parallel", type=int, default=1, metavar="N", help="runs at a time, as Ray tasks")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    args = parser.parse_args(argv)
    from ray.exceptions import RayError

    from paced_core.tasks import TaskDataError
    from services.cluster import cause_of
    from services.driver import PipelineError
    from services.models import ModelLoadError
    from services.store import StoreError

    try:
        spec, _ = load_spec(args.file)
        out = Path(args.out or Path("runs") / "experiments" / (spec.name + ("-quick" if args.quick else "")))
        if args.report_only:
            from services.experiment_report import write_report

            steps, seeds, arms = spec.variant(args.quick)
            print(write_report(spec, out, arms, seeds, steps))
        else:
            run_experiment(args.file, out, quick=args.quick, parallel=args.parallel)
    except (ExperimentError, TaskDataError, ModelLoadError, StoreError, PipelineError, FileNotFoundError) as err:
        print(f"paced experiment: {err}", file=sys.stderr)
        return 1
    except RayError as err:
        print(f"paced experiment: a run failed: {cause_of(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("paced experiment: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0
