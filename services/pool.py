"""The problem pool and the held-out set a run uses, from the `data` config section."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paced_core.config import (
    BuiltinData,
    DataConfig,
    DatasetsData,
    DataSource,
    JsonlData,
    PipelineConfig,
    SyntheticData,
)
from paced_core.hf_datasets import load_hf_dataset
from paced_core.tasks import (
    Problem,
    TaskDataError,
    builtin_dataset,
    load_jsonl,
    split_heldout,
    synthetic_arithmetic,
)
from paced_core.verify import CHOICE_LETTERS


@dataclass(frozen=True)
class Pool:
    train: list[Problem]
    heldout: list[Problem]


def load_source(source: DataSource) -> list[Problem]:
    """The problems of one data source: an entry of `data.train`, `data.heldout` or `data.eval_sets`, or
    `paced eval --data`."""
    if isinstance(source, BuiltinData):
        return builtin_dataset(source.name)
    if isinstance(source, JsonlData):
        return load_jsonl(source.path)
    if isinstance(source, DatasetsData):
        fields = source.fields
        return load_hf_dataset(
            source.path,
            question=fields.question,
            answer=fields.answer,
            id=fields.id,
            group=fields.group,
            split=source.split,
            checker=source.checker,
        )
    if isinstance(source, SyntheticData):
        return synthetic_arithmetic(source.n, levels=tuple(source.levels), seed=source.seed, shares=source.shares)
    raise TypeError(f"unknown data source {source!r}")


def _load_all(sources: DataSource | list[DataSource], where: str) -> list[Problem]:
    """One source, or several concatenated; a problem id that two sources share is an error."""
    if not isinstance(sources, list):
        return load_source(sources)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, source in enumerate(sources):
        for problem in load_source(source):
            if problem.id in seen:
                raise TaskDataError(
                    f"{where}[{index}]: problem id {problem.id!r} is already in {where}[{seen[problem.id]}]"
                )
            seen[problem.id] = index
            problems.append(problem)
    return problems


def load_pool(cfg: DataConfig, seed: int = 0) -> Pool:
    """Training pool and held-out set: a separate source, or `heldout_fraction` of the training one."""
    train = _load_all(cfg.train, "data.train")
    if cfg.heldout is not None:
        heldout = load_source(cfg.heldout)
    elif cfg.heldout_fraction > 0:
        train, heldout = split_heldout(train, cfg.heldout_fraction, seed=seed)
    else:
        heldout = []
    if cfg.limit is not None:
        train = train[: cfg.limit]
    overlap = {p.id for p in train} & {p.id for p in heldout}
    if overlap:
        raise TaskDataError(
            f"data: {len(overlap)} problems are in both train and held-out, e.g. {sorted(overlap)[0]!r}"
        )
    return Pool(train=train, heldout=heldout)


def evaluated_heldout(pool: Pool, pipeline: PipelineConfig) -> list[Problem]:
    """The held-out problems a run evaluates: the first `pipeline.eval_problems` (0: all of them)."""
    n = pipeline.eval_problems
    return pool.heldout[:n] if n else pool.heldout


def group_of(problem: Problem) -> str:
    """The bucket a problem is reported under: its group (a `datasets` source's fields.group), else difficulty
    level, else subject, else its dataset."""
    meta = problem.metadata
    if meta.get("group") is not None:
        return str(meta["group"])
    if "level" in meta and meta["level"] is not None:
        return f"L{meta['level']}"
    return str(meta.get("subject") or meta.get("dataset") or "all")


def load_eval_sets(cfg: DataConfig) -> dict[str, list[Problem]]:
    """The named evaluation sets of `data.eval_sets`, loaded."""
    return {name: load_source(source) for name, source in cfg.eval_sets.items()}


def check_checker(pool: Pool, eval_sets: Mapping[str, Sequence[Problem]], checker: str) -> None:
    """Fail before the run when `verifier.checker` (`checker`) forces a checker that cannot grade a problem
    of the pool or of an evaluation set: "choice" needs a gold letter A-J, and "math" or "exact" would
    compare a multiple-choice problem's gold letter with the model's final answer. "auto" grades every
    problem with its own checker and always fits. Raises `TaskDataError` naming the data section, the problem
    id and `verifier.checker`."""
    if checker == "auto":
        return
    sections = {"data.train": pool.train, "the held-out set": pool.heldout}
    sections.update({f"data.eval_sets.{name}": problems for name, problems in eval_sets.items()})
    for where, problems in sections.items():
        for problem in problems:
            if checker == "choice" and problem.answer not in CHOICE_LETTERS:
                raise TaskDataError(
                    f"{where}: problem {problem.id!r} has answer {problem.answer!r}, not one letter A-J, so "
                    f"verifier.checker 'choice' cannot grade it; set verifier.checker to 'auto' (each problem's "
                    f"own checker, {problem.checker!r} here)"
                )
            if checker != "choice" and problem.checker == "choice":
                raise TaskDataError(
                    f"{where}: problem {problem.id!r} is multiple choice (gold letter {problem.answer!r}), so "
                    f"verifier.checker {checker!r} cannot grade it; set verifier.checker to 'auto' or 'choice'"
                )
