"""Tracking: the run's metrics rows in TensorBoard (by default), Weights & Biases and MLflow (`tracking:`).

    tracking = Tracking(cfg, run_dir, resume, log)      # opens what cfg.tracking asks for
    tracking.record(row, store.histogram())             # every metrics row the driver records (RunDir.record)
    tracking.rewind(step)                               # the steps after `step` are redone (resume, learner restart)
    tracking.close()

Every tracker gets the same names, at x = the row's policy version (a step row's step, an evaluation's version):

    step row      train/<field> for each number of the row (loss, grad_norm, lr, tokens, step_s, staleness_mean,
                  waited_s, workers, rollout_idle, rollout_tokens), train/rollout_tokens_per_s (since the previous
                  step row of this process), pool/seen; histograms train/trained_p, train/trained_w,
                  train/trained_loss, and pool/pass_rate (the store's 20 buckets over [0, 1] at that step)
    eval row      eval/accuracy, eval/by_group/<group> (its accuracy on the held-out problems of that group)
    eval_set row  eval_set/<set>/accuracy

MLflow has no histograms: it gets the scalars. A tracker that fails mid-run is logged once and turned off;
the run goes on (metrics.jsonl keeps every row). One that cannot start fails the run before any actor starts
(`TrackingError`), as does a config that names a tracker whose package is not installed.

Resume. TensorBoard appends event files to RUN_DIR/tensorboard; the first file written after `rewind(step)`
starts with a purge marker at step + 1, so TensorBoard shows the redone steps once, with their new values.
W&B and MLflow go on in the same run (its id kept in RUN_DIR/tracking.json) and keep both points of a
redone step.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from paced_core.config import PacedConfig, flatten
from paced_core.config.schema import MlflowConfig, WandbConfig
from services.records import EvalRow, EvalSetRow, MetricsRow, StepRow, row_version
from services.store.base import HIST_EDGES

TENSORBOARD = "tensorboard"  # RUN_DIR/tensorboard: the event files
WANDB = "wandb"  # RUN_DIR/wandb: W&B's own run folders (an offline run's data)
IDS = "tracking.json"  # RUN_DIR/tracking.json: the W&B and MLflow run ids, for --resume
EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}  # config key -> the package (and the paced extra) it needs
_NOT_SCALARS = {"kind", "step", "time", "seq", "version", "set"}
_CENTERS = (np.array(HIST_EDGES[:-1]) + np.array(HIST_EDGES[1:])) / 2


class TrackingError(RuntimeError):
    """A tracker the config asks for cannot be used (its package is missing, or it could not start)."""


@dataclass(frozen=True)
class Histogram:
    """Values to draw as a histogram; `edges` None lets the tracker choose the buckets."""

    values: np.ndarray
    edges: list[float] | None = None


@dataclass(frozen=True)
class Point:
    """What one metrics row becomes in every tracker."""

    version: int
    time: float
    scalars: dict[str, float]
    histograms: dict[str, Histogram]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _histogram(values: list[Any], edges: list[float] | None = None) -> Histogram | None:
    finite = np.array([float(v) for v in values if _number(v) and math.isfinite(v)])
    return Histogram(finite, edges) if finite.size else None


def point_of(row: MetricsRow, pool: dict[str, Any] | None, last: StepRow | None = None) -> Point:
    """The scalars and histograms of a metrics row (`pool`: the store's histogram, drawn with a step row;
    `last`: the step row before it, for the rollout token rate)."""
    scalars: dict[str, float] = {}
    histograms: dict[str, Histogram] = {}
    if isinstance(row, StepRow):
        for name, value in row.model_dump().items():
            if name in _NOT_SCALARS:
                continue
            if _number(value):
                scalars[f"train/{name}"] = float(value)
            elif isinstance(value, list):
                hist = _histogram(value, HIST_EDGES if name == "trained_p" else None)
                if hist is not None:
                    histograms[f"train/{name}"] = hist
        if last is not None and row.time > last.time:
            scalars["train/rollout_tokens_per_s"] = (row.rollout_tokens - last.rollout_tokens) / (row.time - last.time)
        if pool is not None:
            scalars["pool/seen"] = float(pool["seen"])
            if pool["seen"]:  # drawn at the buckets' centers: each lands in the store's own bucket
                histograms["pool/pass_rate"] = Histogram(np.repeat(_CENTERS, pool["counts"]), HIST_EDGES)
    elif isinstance(row, EvalRow):
        scalars["eval/accuracy"] = row.accuracy
        scalars.update({f"eval/by_group/{group}": acc for group, acc in sorted(row.by_group.items())})
    elif isinstance(row, EvalSetRow):
        scalars[f"eval_set/{row.set}/accuracy"] = row.accuracy
    return Point(row_version(row), row.time, scalars, histograms)


class Tracker(Protocol):
    name: str

    def log(self, point: Point) -> None: ...

    def rewind(self, step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Event files in `folder`, one per writer this process opens; flushed after every row."""

    name = "tensorboard"

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._writer_class = SummaryWriter
        self.folder = folder
        self._purge_step: int | None = None
        self._writer: Any = None

    def log(self, point: Point) -> None:
        if self._writer is None:
            self._writer = self._writer_class(str(self.folder), purge_step=self._purge_step)
        for tag, value in point.scalars.items():
            self._writer.add_scalar(tag, value, point.version, walltime=point.time)
        for tag, hist in point.histograms.items():
            bins = hist.edges if hist.edges is not None else "tensorflow"
            self._writer.add_histogram(tag, hist.values, point.version, bins=bins, walltime=point.time)
        self._writer.flush()

    def rewind(self, step: int) -> None:
        self.close()
        self._purge_step = step + 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbTracker:
    """A W&B run whose files are in RUN_DIR/wandb; plotted against `version`."""

    name = "wandb"

    def __init__(
        self, cfg: WandbConfig, run_dir: Path, run_name: str, config: dict[str, Any], run_id: str | None
    ) -> None:
        import wandb

        self._wandb = wandb
        (run_dir / WANDB).mkdir(exist_ok=True)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode,
            name=cfg.name or run_name,
            group=cfg.group,
            tags=cfg.tags or None,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=config,
        )
        self.run.define_metric("version")
        for prefix in ("train", "pool", "eval", "eval_set"):
            self.run.define_metric(f"{prefix}/*", step_metric="version")

    def log(self, point: Point) -> None:
        data: dict[str, Any] = {"version": point.version, **point.scalars}
        for tag, hist in point.histograms.items():
            counts, edges = np.histogram(hist.values, bins=hist.edges if hist.edges is not None else 64)
            data[tag] = self._wandb.Histogram(np_histogram=(counts, edges))
        self.run.log(data)

    def rewind(self, step: int) -> None:
        """W&B keeps what it was sent: the redone steps get a second point."""

    def close(self) -> None:
        self.run.finish()


def _mlflow_key(name: str) -> str:
    # MLflow keys take letters, digits, _ - . / and spaces; a group or eval-set name may hold anything.
    return re.sub(r"[^\w\-./ ]", "_", name)


class MlflowTracker:
    """An MLflow run in `cfg.experiment` (made when missing); scalars only."""

    name = "mlflow"

    def __init__(self, cfg: MlflowConfig, run_name: str, params: dict[str, Any], run_id: str | None) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(cfg.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.experiment)
            run = self.client.create_run(experiment_id, run_name=cfg.run_name or run_name)
            run_id = run.info.run_id
            items = [Param(_mlflow_key(key), str(value)[:6000]) for key, value in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(run_id, params=items[i : i + 100])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id: str = run_id

    def log(self, point: Point) -> None:
        stamp = int(point.time * 1000)
        metrics = [
            self._metric(_mlflow_key(tag), value, stamp, point.version)
            for tag, value in point.scalars.items()
            if math.isfinite(value)
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def rewind(self, step: int) -> None:
        """MLflow keeps what it was sent: the redone steps get a second point."""

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def check_trackers(cfg: PacedConfig) -> None:
    """TrackingError naming the install command when `tracking` asks for a tracker whose package is missing."""
    for key, package in EXTRAS.items():
        if getattr(cfg.tracking, key) is None:
            continue
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise TrackingError(
                f"tracking.{key} is set but the {package} package cannot be imported ({err}): "
                f"pip install 'paced[{package}]' (or pip install {package}), or set tracking.{key}: null"
            ) from None


class Tracking:
    """The trackers of one run; see the module docstring."""

    def __init__(self, cfg: PacedConfig, run_dir: Path, resume: bool, log: Callable[[str], None]) -> None:
        check_trackers(cfg)
        self._log = log
        self._last: StepRow | None = None
        self._ids_path = run_dir / IDS
        ids: dict[str, str] = json.loads(self._ids_path.read_text()) if resume and self._ids_path.exists() else {}
        plain = cfg.to_plain()
        self.trackers: list[Tracker] = []
        t = cfg.tracking
        key = "tensorboard"
        try:
            if t.tensorboard:
                self.trackers.append(TensorBoardTracker(run_dir / TENSORBOARD))
            key = "wandb"
            if t.wandb is not None:
                tracker = WandbTracker(t.wandb, run_dir, cfg.run.name, plain, ids.get(key))
                ids[key] = tracker.run.id
                self.trackers.append(tracker)
            key = "mlflow"
            if t.mlflow is not None:
                mlflow = MlflowTracker(t.mlflow, cfg.run.name, flatten(plain), ids.get(key))
                ids[key] = mlflow.run_id
                self.trackers.append(mlflow)
        except Exception as err:  # whatever the tracker's library raises: no actor has started yet
            self.close()
            raise TrackingError(f"tracking.{key} could not start: {type(err).__name__}: {err}") from err
        if ids:
            self._ids_path.write_text(json.dumps(ids, indent=2) + "\n")

    def record(self, row: MetricsRow, pool: dict[str, Any] | None) -> None:
        """Send one metrics row (and, with a step row, the pool's histogram `pool`) to every tracker."""
        point = point_of(row, pool, self._last)
        if isinstance(row, StepRow):
            self._last = row
        self._each(lambda tracker: tracker.log(point), f"at version {point.version}")

    def rewind(self, step: int) -> None:
        """The steps after `step` are about to be redone."""
        self._last = None
        self._each(lambda tracker: tracker.rewind(step), f"rewinding to step {step}")

    def close(self) -> None:
        self._each(lambda tracker: tracker.close(), "closing")
        self.trackers = []

    def _each(self, call: Callable[[Tracker], None], doing: str) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as err:  # a tracker's failure must not end a run that is training
                self.trackers.remove(tracker)
                self._log(
                    f"tracking: {tracker.name} failed {doing} ({type(err).__name__}: {err}); it is off for the "
                    f"rest of this run (metrics.jsonl has every row)"
                )
