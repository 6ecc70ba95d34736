"""The checks that need no actor, so that bad input fails in seconds, before anything is started: the
data, the model paths and weights, the vLLM install, Redis, the trackers' packages, and whether the run's
actors fit the cluster.
"""

from __future__ import annotations

import importlib.util
import sys

from paced_core.config import PacedConfig
from services.driver.loop import PipelineError
from services.placement import Demand, cluster_nodes, placement_problems, run_demand, vllm_version
from services.pool import check_checker, load_eval_sets, load_pool
from services.store import open_store
from services.tracking import check_trackers


def preflight(cfg: PacedConfig) -> None:
    """Data (every problem gradable by its checker), model paths and weight files, vLLM, Redis, and the
    packages of the trackers the config asks for."""
    from services.models import check_model  # transformers: only once the config is valid

    check_checker(load_pool(cfg.data, seed=cfg.run.seed), load_eval_sets(cfg.data), cfg.verifier.checker)
    if cfg.rollout.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise PipelineError(
            f"rollout.backend is 'vllm' but vllm is not installed for {sys.executable}: build its virtualenv "
            f"with `bash scripts/setup_vllm_venv.sh` and run with .venv-vllm/bin/paced (or use rollout.backend hf)"
        )
    check_model(cfg.student.path, cfg.student.gguf_file, "student.path")
    if cfg.teacher.path is not None:
        check_model(cfg.teacher.path, cfg.teacher.gguf_file, "teacher.path")
    if cfg.store.url is not None:
        open_store(cfg.store).close()
    check_trackers(cfg)


def check_placement(cfg: PacedConfig, replicas: int | None, teacher_references: bool) -> Demand:
    """What the run's actors ask Ray for at their peak (`replicas` rollout workers, the teacher-reference
    worker if `teacher_references`); PipelineError naming the shortfall when the cluster cannot hold it."""
    demand = run_demand(cfg, replicas, teacher_references=teacher_references)
    problems = placement_problems(cfg, demand, cluster_nodes(), vllm_version())
    if problems:
        raise PipelineError("this run's actors do not fit the Ray cluster:\n  " + "\n  ".join(problems))
    return demand
