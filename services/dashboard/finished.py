"""A finished run from its run folder, for `paced dashboard --run-dir DIR`: the same pages, read-only.

    run = open_run_dir("runs/demo")        # run.store: a MemoryStore; run.name; run.finished (what the page says)
    app = create_app(run.store, run.name, None, finished=run.finished)

A run on the embedded store leaves two things behind (services.driver.run_dir): metrics.jsonl, every step
and evaluation row, and beside its newest checkpoint the store's snapshot (`StoreSnapshot`: every
problem's window, the groups, the run info, the control records). The snapshot is restored into an
in-process `MemoryStore` with the run's settings and the rows are appended to its metrics, so every read
endpoint answers as it did at the end of the run. Left out, as the snapshot leaves them out: the graded
rollouts of each problem (the problem view shows its window only) and the workers' statuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.driver.run_dir import METRICS, RunDirError, final_snapshot, read_metrics
from services.records import StepRow
from services.store.base import StoreSettings
from services.store.memory_store import MemoryStore
from services.store.snapshot import StoreSnapshot


@dataclass(frozen=True)
class FinishedRun:
    name: str
    store: MemoryStore
    finished: str  # why the dashboard is read-only, for its page and its control endpoints' 409


def open_run_dir(path: str | Path) -> FinishedRun:
    """The run in the run folder `path`; RunDirError says what is missing (metrics.jsonl, a store snapshot)."""
    path = Path(path)
    if not (path / METRICS).is_file():
        raise RunDirError(f"{path} is not a run folder: it has no {METRICS} (paced run --out DIR writes one)")
    snapshot = final_snapshot(path)
    if snapshot is None:
        raise RunDirError(
            f"{path} holds no store snapshot (checkpoints/step-*/store_snapshot.json): only a run on the "
            "embedded store with a checkpoint leaves one (learner.checkpoint_every). A run on Redis keeps its "
            "store there: paced dashboard --store URL --run NAME"
        )
    text = snapshot.read_text()
    try:
        snap = StoreSnapshot.model_validate_json(text)
    except ValueError as err:
        raise RunDirError(f"{snapshot}: not a store snapshot ({err})") from None
    rows = read_metrics(path / METRICS)
    settings = StoreSettings(**snap.settings)
    store = MemoryStore(snap.run_name, **(settings.to_dict() | {"metrics_cap": max(settings.metrics_cap, len(rows))}))
    store.restore(text)
    for row in rows:
        store.append_metrics(row)
    steps = [row.step for row in rows if isinstance(row, StepRow)]
    at = snapshot.parent.name
    finished = f"run {snap.run_name!r} has finished: this dashboard shows its run folder {path} read-only"
    if steps and not at.endswith(f"{max(steps):06d}"):
        finished += f" (pass rates as of its last checkpoint, {at}; the series to step {max(steps)})"
    return FinishedRun(snap.run_name, store, finished)
