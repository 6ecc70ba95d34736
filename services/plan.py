"""`paced plan CONFIG`: what a run of CONFIG will ask Ray for, per actor and at its peak, before anything starts.

    paced plan configs/demo.yaml                        # a table, the peak, and a `ray start` that holds it
    paced plan configs/gpu/qwen3_8b_to_1.7b.yaml --json # the same as one JSON object
    paced plan configs/demo.yaml --set rollout.replicas=3

The actors and their requests are the driver's own (`services.placement.run_demand`, which the driver's
preflight checks against the cluster): a new run of CONFIG starts `rollout.replicas` rollout workers, and the
teacher-reference worker when a stage trains on teacher references. Besides them a run has

    store (embedded)   a Ray actor asking for no resources (`services.store.open_store`); none with store.url
    dashboard          a process of its own on the driver's machine, not a Ray actor (`dashboard.enabled`)
    driver             the job's entrypoint; `ray job submit` gives it no Ray CPU (`--entrypoint-num-cpus`)

No actor asks Ray for `memory`, so Ray schedules them by CPUs and GPUs alone; the weights each one loads
(their files' size on disk, where the model is a local directory) are a lower bound on what its node must
hold in memory. The peak is the sum over the actors; one node must hold the largest actor (Ray places an
actor on one node). `peak_at_max_replicas` is the peak after `paced scale` up to `rollout.max_replicas`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paced_core.config import ConfigError, PacedConfig, add_set_option, load_config
from paced_core.embedded import resolve_model_path
from services.placement import Demand, run_demand

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def weights_bytes(path: str | None, gguf_file: str | None = None) -> int | None:
    """The size on disk of a model's weight files: `gguf_file` if given, else every `*.safetensors` (or
    `*.bin`, `*.pt`) file in the directory `path`. None when `path` is not a local directory (a Hugging Face
    id: not fetched here)."""
    if path is None:
        return None
    directory = Path(resolve_model_path(path)).expanduser()
    if not directory.is_dir():
        return None
    if gguf_file is not None:
        file = directory / gguf_file
        return file.stat().st_size if file.is_file() else None
    sizes = [f.stat().st_size for f in directory.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
    return sum(sizes) if sizes else None


def _loads(cfg: PacedConfig) -> dict[str, list[tuple[str, int | None]]]:
    """The models each actor of `run_demand` loads, as (config path, bytes on disk)."""
    student = ("student.path", weights_bytes(cfg.student.path, cfg.student.gguf_file))
    if cfg.teacher.path is None:  # self-distillation: the learner's teacher is the frozen initial student
        teacher = ("student.path (frozen copy)", student[1])
    else:
        teacher = ("teacher.path", weights_bytes(cfg.teacher.path, cfg.teacher.gguf_file))
    return {"learner": [student, teacher], "rollout": [student], "teacher reference": [teacher], "verifier": []}


def _totals(demand: Demand) -> dict[str, float]:
    return {"num_cpus": demand.total("CPU"), "num_gpus": demand.total("GPU")}


def plan(cfg: PacedConfig) -> dict[str, Any]:
    """What a new run of `cfg` asks Ray for: each actor's request and count, the peak, the largest single
    actor, the peak at `rollout.max_replicas`, and a single-node `ray start` that holds the peak."""
    demand = run_demand(cfg)
    loads = _loads(cfg)
    actors = []
    for a in demand.actors:
        models = loads[a.name]
        weights = [b for _, b in models]
        actors.append(
            {
                "name": a.name,
                "count": a.count,
                "num_cpus": a.num_cpus,
                "num_gpus": a.num_gpus,
                "memory": 0,  # no actor asks Ray for memory
                "settings": [f"{a.section}.num_cpus", f"{a.section}.num_gpus"],
                "loads": [name for name, _ in models],
                "weights_bytes": None if None in weights else sum(b for b in weights if b is not None),
            }
        )
    if cfg.store.url is None:
        actors.append(
            {
                "name": "store (embedded)",
                "count": 1,
                "num_cpus": 0.0,
                "num_gpus": 0.0,
                "memory": 0,
                "settings": [],
                "loads": [],
                "weights_bytes": 0,
            }
        )
    peak = _totals(demand)
    counted = [a for a in demand.actors if a.count]
    largest = {
        "num_cpus": max((a.num_cpus for a in counted), default=0.0),
        "num_gpus": max((a.num_gpus for a in counted), default=0.0),
    }
    head = {"num_cpus": math.ceil(peak["num_cpus"] - 1e-9), "num_gpus": math.ceil(peak["num_gpus"] - 1e-9)}
    start = f"ray start --head --num-cpus {head['num_cpus']}" + (
        f" --num-gpus {head['num_gpus']}" if head["num_gpus"] else ""
    )
    return {
        "run": cfg.run.name,
        "actors": actors,
        "processes": {
            "dashboard": cfg.dashboard.enabled,  # a process on the driver's machine, no Ray resources
            "driver": True,
        },
        "peak": {**peak, "memory": 0},
        "largest_actor": largest,
        "max_replicas": cfg.rollout.max_replicas,
        "peak_at_max_replicas": _totals(run_demand(cfg, replicas=cfg.rollout.max_replicas)),
        "single_node": {**head, "ray_start": start},
    }


def render(p: dict[str, Any]) -> str:
    """`plan`'s answer as the table `paced plan` prints."""
    rows = [f"run {p['run']}: what it asks Ray for (a new run; no actor asks for Ray memory)"]
    rows.append(f"  {'actor':<18} {'count':>5} {'CPUs':>6} {'GPUs':>6}  weights it loads (on disk)")
    for a in p["actors"]:
        if a["loads"]:
            weights = _size(a["weights_bytes"]) if a["weights_bytes"] is not None else "unknown (not a local dir)"
            weights += f" ({', '.join(a['loads'])})"
        else:
            weights = "-"
        rows.append(f"  {a['name']:<18} {a['count']:>5} {a['num_cpus']:>6g} {a['num_gpus']:>6g}  {weights}")
    dashboard = "a process of its own on the driver's machine" if p["processes"]["dashboard"] else "off"
    peak, largest, node = p["peak"], p["largest_actor"], p["single_node"]
    rows += [
        f"  dashboard: {dashboard}; driver: the job's entrypoint (no Ray CPU under `ray job submit`)",
        f"peak: {_resources(peak)}",
        f"largest actor: {_resources(largest)} (one node must hold it)",
        f"at rollout.max_replicas {p['max_replicas']} (paced scale): {_resources(p['peak_at_max_replicas'])}",
        f"one node that holds the peak: {node['ray_start']}",
    ]
    return "\n".join(rows)


def _resources(r: dict[str, float]) -> str:
    return f"CPU {r['num_cpus']:g}, GPU {r['num_gpus']:g}"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paced plan", description="what a run of CONFIG will ask Ray for")
    parser.add_argument("file", help="YAML config file")
    add_set_option(parser, "rollout.replicas=3")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.file, args.overrides)
    except ConfigError as err:
        print(f"paced plan: {err}", file=sys.stderr)
        return 2
    p = plan(cfg)
    print(json.dumps(p, indent=2) if args.json else render(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
