"""The problem pool and the held-out set a run uses, from the `data` config section."""

from __future__ import annotations

from dataclasses import dataclass

from paced_core.config import BuiltinData, DataConfig, DataSource, JsonlData, SyntheticData
from paced_core.tasks import Problem, builtin_dataset, load_jsonl, split_heldout, synthetic_arithmetic


@dataclass(frozen=True)
class Pool:
    train: list[Problem]
    heldout: list[Problem]


def _load(source: DataSource) -> list[Problem]:
    if isinstance(source, BuiltinData):
        return builtin_dataset(source.name)
    if isinstance(source, JsonlData):
        return load_jsonl(source.path)
    if isinstance(source, SyntheticData):
        return synthetic_arithmetic(source.n, levels=tuple(source.levels), seed=source.seed)
    raise TypeError(f"unknown data source {source!r}")


def _load_all(sources: DataSource | list[DataSource], where: str) -> list[Problem]:
    """One source, or several concatenated; a problem id that two sources share is an error."""
    if not isinstance(sources, list):
        return _load(sources)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, source in enumerate(sources):
        for problem in _load(source):
            if problem.id in seen:
                raise ValueError(
                    f"{where}[{index}]: problem id {problem.id!r} is already in {where}[{seen[problem.id]}]"
                )
            seen[problem.id] = index
            problems.append(problem)
    return problems


def load_pool(cfg: DataConfig, seed: int = 0) -> Pool:
    """Training pool and held-out set: a separate source, or `heldout_fraction` of the training one."""
    train = _load_all(cfg.train, "data.train")
    if cfg.heldout is not None:
        heldout = _load(cfg.heldout)
    elif cfg.heldout_fraction > 0:
        train, heldout = split_heldout(train, cfg.heldout_fraction, seed=seed)
    else:
        heldout = []
    if cfg.limit is not None:
        train = train[: cfg.limit]
    overlap = {p.id for p in train} & {p.id for p in heldout}
    if overlap:
        raise ValueError(f"data: {len(overlap)} problems are in both train and held-out, e.g. {sorted(overlap)[0]!r}")
    return Pool(train=train, heldout=heldout)


def group_of(problem: Problem) -> str:
    """The bucket a problem is reported under: difficulty level, else subject, else its dataset."""
    meta = problem.metadata
    if "level" in meta and meta["level"] is not None:
        return f"L{meta['level']}"
    return str(meta.get("subject") or meta.get("dataset") or "all")


def load_eval_sets(cfg: DataConfig) -> dict[str, list[Problem]]:
    """The named evaluation sets of `data.eval_sets`, loaded."""
    return {name: _load(source) for name, source in cfg.eval_sets.items()}
