"""The run folder: what a run leaves on disk, and what `--resume` reads back.

    runs/demo/
      config.yaml        the resolved config (secrets masked), written when the run starts
      metrics.jsonl      one JSON row per learner step and evaluation (`kind`: step, eval, eval_set)
      summary.json       the whole run's figures, across --resume segments, written when it ends
      dashboard.log      the output of the run's dashboard process (when dashboard.enabled)
      tensorboard/       TensorBoard's event files of the metrics rows (tracking.tensorboard; services.tracking)
      wandb/             W&B's run folders (when tracking.wandb is set)
      tracking.json      the W&B and MLflow run ids, which a resumed run goes on in
      checkpoints/       the learner's checkpoints; beside each, the run's accounting (and the embedded
                         store's snapshot): see services.driver.training

A new run refuses a folder that holds one already, unless told to overwrite it. A resumed run takes its
config from the folder: a config that differs is refused, naming each difference, unless the change is
given with `--set`. Rows of steps after the checkpoint resumed from are dropped: redone steps replace
their rows instead of duplicating them. Every row recorded also goes to the run's trackers (`tracking:`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paced_core.config import PacedConfig, dump_config, flatten
from services.driver.accounting import write_json
from services.records import METRICS_ROW, MetricsRow, StepRow, row_version
from services.store.base import PassRateStore
from services.tracking import IDS, TENSORBOARD, WANDB, Tracking

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
STORE_SNAPSHOT = "store_snapshot.json"  # beside a checkpoint of a run on the embedded store
_RUN_FILES = (CONFIG, METRICS, SUMMARY, "checkpoints", "dashboard.log", TENSORBOARD, WANDB, IDS)


class RunDirError(RuntimeError):
    """The run folder does not fit what was asked (a new run into an old folder, a differing config)."""


def config_differences(saved: dict[str, Any], given: dict[str, Any], overridden: list[str]) -> list[str]:
    """The settings in which `given` differs from `saved`, one `path: saved -> given` each, leaving out the
    paths under an override key in `overridden` (what `--set` changed on purpose)."""
    a, b = flatten(saved), flatten(given)
    differences = []
    for path in sorted(a.keys() | b.keys()):
        if a.get(path) == b.get(path) or any(path == k or path.startswith(k + ".") for k in overridden):
            continue
        differences.append(f"{path}: {a.get(path)!r} in the run folder, {b.get(path)!r} now")
    return differences


def override_keys(overrides: list[str]) -> list[str]:
    """The dotted keys of `--set key=value` overrides."""
    return [o.split("=", 1)[0].strip() for o in overrides]


class RunDir:
    def __init__(
        self,
        out: str | Path,
        cfg: PacedConfig,
        resume: bool,
        overwrite: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.path = Path(out)
        self.resume = resume
        found = [name for name in _RUN_FILES if (self.path / name).exists()]
        if found and not resume:
            if not overwrite:
                raise RunDirError(
                    f"{self.path} already holds a run ({', '.join(found)}): continue it with --resume, "
                    f"start over with --overwrite, or choose another --out"
                )
            for name in found:
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        # On resume too: a change given with --set is what the next --resume continues with.
        (self.path / CONFIG).write_text(dump_config(cfg))
        self._metrics = (self.path / METRICS).open("a" if resume else "w")
        try:
            self.tracking = Tracking(cfg, self.path, resume, log)
        except BaseException:
            self._metrics.close()
            raise

    def record(self, row: MetricsRow, store: PassRateStore) -> None:
        """One metrics row, in metrics.jsonl, in the store's metrics (the dashboard's series) and in the
        trackers (a step row with the pool's pass-rate histogram)."""
        self._metrics.write(row.model_dump_json(exclude={"seq"}) + "\n")
        self._metrics.flush()
        store.append_metrics(row)
        self.tracking.record(row, store.histogram() if isinstance(row, StepRow) else None)

    def drop_rows_after(self, step: int) -> int:
        """Drop metrics.jsonl rows of steps after `step` (steps by `step`, evaluations by `version`), to be
        redone, and a last line a killed driver left half-written; returns how many rows went. The file is
        replaced whole (written beside it, then renamed)."""
        rows = self.rows()
        self._metrics.close()
        path = self.path / METRICS
        kept = [row for row in rows if row_version(row) <= step]
        tmp = path.with_name(METRICS + ".tmp")
        tmp.write_text("".join(row.model_dump_json(exclude={"seq"}) + "\n" for row in kept))
        tmp.replace(path)
        self._metrics = path.open("a")
        self.tracking.rewind(step)
        return len(rows) - len(kept)

    def rows(self) -> list[MetricsRow]:
        """Every metrics.jsonl row, oldest first (`read_metrics`)."""
        self._metrics.flush()
        return read_metrics(self.path / METRICS)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        write_json(self.path / SUMMARY, summary)
        return self.path / SUMMARY

    def close(self) -> None:
        self._metrics.close()
        self.tracking.close()


def read_metrics(path: Path) -> list[MetricsRow]:
    """Every row of the metrics.jsonl at `path`, oldest first; a half-written last line (a killed driver's)
    is left out. RunDirError names the line that is not a row."""
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(METRICS_ROW.validate_json(line))
        except ValueError as err:
            if number < len(lines):
                raise RunDirError(f"{path}:{number}: not a metrics row ({err})") from None
    return rows


def final_snapshot(path: Path) -> Path | None:
    """The store snapshot of the newest checkpoint under the run folder `path` that has one, or None."""
    found = sorted(p for p in (path / "checkpoints").glob(f"step-*/{STORE_SNAPSHOT}") if p.parent.suffix != ".tmp")
    return found[-1] if found else None
