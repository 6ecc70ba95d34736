"""A run written into a store through the real store API, shaped as the driver writes it: the dashboard
tests' (and the screenshot's) data when no real pipeline run is at hand.

`SimulatedRun` plays a student whose skill on the synthetic arithmetic levels grows with the steps:
it registers the pool with its groups (L1..L5), stores the run info the driver stores, warms every
problem up, then per step draws problems in proportion to w(p_hat) = p(1-p) (plus a floor), records
their outcomes, pushes graded rollouts (the learner's share is pulled and acked), and appends a "step"
row with the driver's fields (trained_p / trained_loss of the sequences trained on) and every
`eval_every` steps an "eval" row; rollout workers report their statuses.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from paced_core.config.schema import BetaKernel
from paced_core.tasks import synthetic_arithmetic
from services.pool import group_of
from services.records import (
    EvalRow,
    GradedRollout,
    Outcome,
    ProblemRef,
    Rollout,
    RunInfo,
    StepCounts,
    StepReport,
    StepRow,
    TrainedStep,
    WorkerStatus,
)
from services.store.base import PassRateStore


def run_info(run: str, pool: int = 400, steps: int = 40, **fields: Any) -> RunInfo:
    """The run info the driver stores, for a run of `pool` problems and `steps` steps."""
    values = dict(run=run, pool=pool, heldout=pool // 10, mode="async", started_at=time.time(), steps=steps,
                  kernel=BetaKernel(), max_replicas=64)  # fmt: skip
    return RunInfo(**(values | fields))


def step_row(step: int, trained_p: list[float | None] | None = None, **fields: Any) -> StepRow:
    """A driver step row of one step: plausible figures, `fields` replacing any of them."""
    ps = [0.5, 0.25] if trained_p is None else trained_p
    values = dict(
        step=step, time=time.time(), loss=0.3, loss_kind="reverse_kl", sequences="student", grad_norm=1.0, lr=1e-3,
        tokens=64, waited_s=0.2, step_s=1.3, staleness_mean=0.5, trained_p=ps, trained_w=[0.25] * len(ps),
        trained_ids=[f"q{i}" for i in range(len(ps))], trained_loss=[0.4] * len(ps), workers=2, rollout_idle=0.1,
        rollout_tokens=1_000 * step,
    )  # fmt: skip
    return StepRow(**(values | fields))


def step_report(step: int, trained_p: list[float | None] | None, **counts: int) -> StepReport:
    """The learner's report of a step with these queue `counts`; `trained_p` None: a step that trained nothing."""
    trained = None
    if trained_p is not None:
        trained = TrainedStep(**step_row(step, trained_p).model_dump(include=set(TrainedStep.model_fields)))
    return StepReport(step=step, loss_kind="reverse_kl", waited_s=0.1, counts=StepCounts(**counts), trained=trained)


class SimulatedRun:
    def __init__(
        self,
        store: PassRateStore,
        run_name: str,
        problems: int = 400,
        steps: int = 40,
        samples: int = 4,
        per_step: int = 32,
        workers: int = 2,
        seed: int = 0,
    ) -> None:
        self.store = store
        self.run_name = run_name
        self.pool = synthetic_arithmetic(problems, seed=seed)
        self.steps_total = steps
        self.samples = samples
        self.per_step = per_step
        self.workers = [f"student-{i + 1}" for i in range(workers)]
        self.rng = np.random.default_rng(seed)
        # Each problem's difficulty: its level plus noise; the student's skill grows with the version.
        self.difficulty = np.array([p.metadata["level"] for p in self.pool], float) + self.rng.normal(0, 0.6, problems)
        self.version = 0
        self.step = 0
        self.rollout_tokens = 0
        self.seq = 0
        self.clock = time.time() - 2.0 * steps  # steps spread over the last 2 s each, ending about now

    def true_p(self, idx: np.ndarray) -> np.ndarray:
        skill = 2.0 + 2.5 * self.version / max(1, self.steps_total)
        return 1 / (1 + np.exp(-1.8 * (skill - self.difficulty[idx])))

    def start(self) -> None:
        store = self.store
        store.register_problems([p.id for p in self.pool], [group_of(p) for p in self.pool])
        store.set_run_info(run_info(self.run_name, len(self.pool), self.steps_total, started_at=self.clock))
        store.set_desired_replicas("rollout", len(self.workers))
        self.sample(np.arange(len(self.pool)))

    def sample(self, idx: np.ndarray, push: bool = True) -> list[Outcome]:
        """Sample `self.samples` rollouts of each problem in `idx` at the current version and record them."""
        correct = self.rng.random((len(idx), self.samples)) < self.true_p(idx)[:, None]
        outcomes, graded = [], []
        for row, i in enumerate(idx):
            p = self.pool[int(i)]
            for k in range(self.samples):
                self.seq += 1
                ok = bool(correct[row, k])
                text = p.answer if ok else str(int(p.answer) + int(self.rng.integers(1, 9)))
                rollout = Rollout(
                    rollout_id=f"{self.run_name}-r{self.seq}",
                    problem=ProblemRef(index=int(i), id=p.id),
                    prompt_ids=[1, 2, 3],
                    completion_ids=list(range(len(text) + 1)),
                    text=text,
                    version=self.version,
                    worker_id=self.workers[self.seq % len(self.workers)],
                    created_at=self.clock,
                    finish_reason="stop",
                )
                graded.append(GradedRollout(rollout=rollout, correct=ok, extracted=text, reason="exact"))
                outcomes.append(Outcome.of(graded[-1]))
                self.rollout_tokens += len(text) + 1
        self.store.record_outcomes(outcomes)
        if push:
            self.store.push_graded(graded)
            entries = self.store.pull_graded("learner", len(graded))
            self.store.ack([e for e, _ in entries])
        return outcomes

    def train_step(self) -> StepRow:
        """One simulated learner step: draw by w(p_hat), sample, record the driver's step row."""
        ids = [p.id for p in self.pool]
        p_hat = np.array([e.p_hat for e in self.store.estimates(ids)])
        weights = np.maximum(p_hat * (1 - p_hat), 0.01)
        idx = self.rng.choice(len(self.pool), self.per_step, replace=False, p=weights / weights.sum())
        self.sample(idx)
        trained_p = np.repeat(p_hat[idx], self.samples)
        # Reverse KL is largest where the student is least sure; it falls as the run goes on.
        trained_loss = (0.6 - 0.45 * trained_p) * math.exp(-self.step / 60) + self.rng.normal(0, 0.02, len(trained_p))
        self.step += 1
        self.version += 1
        self.clock += 2.0
        row = step_row(
            self.step,
            trained_p.round(4).tolist(),
            time=self.clock,
            loss=float(trained_loss.mean()),
            grad_norm=float(1.5 * math.exp(-self.step / 40) + 0.2),
            tokens=int(len(trained_p) * 5),
            waited_s=float(self.rng.uniform(0.1, 0.6)),
            step_s=float(self.rng.uniform(1.2, 1.6)),
            staleness_mean=float(self.rng.uniform(0.3, 1.2)),
            trained_w=(trained_p * (1 - trained_p)).round(5).tolist(),
            trained_ids=[self.pool[int(i)].id for i in idx for _ in range(self.samples)],
            trained_loss=trained_loss.round(5).tolist(),
            workers=len(self.workers),
            rollout_tokens=self.rollout_tokens,
            rollout_idle=float(self.rng.uniform(0.05, 0.25)),
        )
        self.store.append_metrics(row)
        for w in self.workers:
            status = WorkerStatus(version=self.version, state="generating", tokens_per_s=self.rng.uniform(300, 420))
            self.store.set_worker_status(w, status)
        return row

    def evaluate(self) -> None:
        levels = sorted({group_of(p) for p in self.pool})
        idx = np.arange(len(self.pool))
        by_level = {g: float(self.true_p(idx[[group_of(p) == g for p in self.pool]]).mean()) for g in levels}
        accuracy = float(np.mean(list(by_level.values())))
        self.store.append_metrics(EvalRow(version=self.version, accuracy=accuracy, by_group=by_level, time=self.clock))

    def run(self, steps: int | None = None, eval_every: int = 10) -> None:
        for _ in range(self.steps_total if steps is None else steps):
            self.train_step()
            if self.step % eval_every == 0:
                self.evaluate()


def serve_command(args: list[str], port: int, first: Callable[[str], httpx.Response], env: dict | None = None) -> str:
    """Run `python -m services.dashboard ARGS` (it must listen on `port`), call `first(url)` once it answers,
    then SIGINT it; returns its output. Asserts it exits 0 and never stops before answering within 60 s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.dashboard", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=os.environ if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                first(f"http://127.0.0.1:{port}")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    return out
