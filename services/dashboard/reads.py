"""The dashboard's read endpoints (GET, JSON, schema at /openapi.json) over one run's store.

    /api/run                  run info, store settings, kernel, latest step, desired replicas, paused, queue
    /api/summary              the numbers the page's header shows (also what /api/stream sends)
    /api/histogram            pass-rate histogram now, w(p) over it, learnability mass sum w(p_hat)
    /api/histogram/history    snapshots per learner step (the heatmap)
    /api/trained              pass rates the learner trained on (newest steps) vs the pool; loss per bucket
    /api/groups               the histogram of each group (difficulty level, subject)
    /api/series               per step: loss, tokens/s, idle, staleness, ...; held-out evals
    /api/workers              rollout workers' last statuses
    /api/problems?bucket=B    problems in a bucket (from an index the poll builds)
    /api/problems/{id}        one problem's window and latest graded rollouts (404 if it has none)
    /api/stream               server-sent events: one `summary` event every `interval` seconds

They answer from the store's counters and single-key reads plus the in-memory `RunView` (view.py);
none scans the store. The answers every page asks for (all but the two problem views) are made once per
poll and shared by every client (answers.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from paced_core.config.schema import BetaKernel
from paced_core.weighting import Kernel
from services.dashboard import schema
from services.dashboard.answers import SharedAnswers
from services.dashboard.control import ROLE
from services.dashboard.view import RunView, StepPoint, finite
from services.records import RunInfo
from services.store.base import HIST_BUCKETS, HIST_EDGES, PassRateStore, bucket_of

CENTERS = [(HIST_EDGES[i] + HIST_EDGES[i + 1]) / 2 for i in range(HIST_BUCKETS)]
CURVE_P = [i / 100 for i in range(101)]


def kernel_of(info: RunInfo | None) -> tuple[Kernel, schema.KernelOut]:
    """The run's kernel (`RunInfo.kernel`), else the default beta(1, 1) while the run has stored no info."""
    source = "run" if info is not None else "default"
    spec = info.kernel if info is not None else BetaKernel()
    a, b = getattr(spec, "a", None), getattr(spec, "b", None)
    if spec.type == "beta":
        terms = [t if e == 1 else f"{t}^{e:g}" for t, e in (("p", a), ("(1-p)", b)) if e != 0]
        formula = " ".join(terms) or "1"
    else:
        formula = {"uniform": "1", "hard": "1 if 0 < p < 1, else 0"}[spec.type]
    return spec.build(), schema.KernelOut(type=spec.type, a=a, b=b, formula=formula, source=source)


def _mass(kernel: Kernel, counts: list[int]) -> tuple[list[float], float]:
    weights = [float(w) for w in kernel(np.array(CENTERS))]
    return weights, float(sum(c * w for c, w in zip(counts, weights, strict=True)))


def thin(n: int, max_points: int) -> list[int]:
    """At most `max_points` evenly spaced indices of range(n), always with the last one."""
    if n <= max_points:
        return list(range(n))
    stride = n / max_points
    return sorted({min(n - 1, round(i * stride)) for i in range(max_points)} | {n - 1})


def rollout_rate(steps: list[StepPoint], i: int) -> float | None:
    """Rollout tokens/s between step i-1 and step i, from their cumulative `rollout_tokens` and times."""
    if i == 0:
        return None
    a, b = steps[i - 1], steps[i]
    if a.rollout_tokens is None or b.rollout_tokens is None or a.time is None or b.time is None or b.time <= a.time:
        return None
    return (b.rollout_tokens - a.rollout_tokens) / (b.time - a.time)


def _mean_p(counts: list[int], seen: int) -> float | None:
    return sum(c * x for c, x in zip(counts, CENTERS, strict=True)) / seen if seen else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def add_reads(
    app: FastAPI,
    store: PassRateStore,
    run_name: str,
    view: RunView,
    control_enabled: bool,
    errors: dict[int | str, dict[str, Any]],
    finished: str | None = None,
) -> None:
    """Add the read endpoints of run `run_name` to `app`; `errors` are the responses every endpoint may give;
    `finished` says why the run is shown read-only (null while it can be controlled)."""
    answers = SharedAnswers(view, ttl_s=view.poll_s)

    def shared(name: str, params: Hashable, make: Callable[[], BaseModel]) -> Response:
        return Response(answers.get(name, params, make), media_type="application/json")

    def read_summary() -> schema.SummaryOut:
        info = store.run_info()
        kernel, _ = kernel_of(info)
        hist = store.histogram()
        _, mass = _mass(kernel, hist["counts"])
        evals = view.read_evals()
        return schema.SummaryOut(
            run_name=run_name,
            time=time.time(),
            step=view.latest_step,
            steps_total=info.steps if info else None,
            pool=info.pool if info else None,
            seen=hist["seen"],
            counts=hist["counts"],
            mass=mass,
            mean_w=_ratio(mass, hist["seen"]),
            paused=store.paused(),
            desired_rollout=store.desired_replicas(ROLE),
            # running workers: not the rows of workers starting or waiting for room (`pending`)
            workers=sum(s.state in ("idle", "generating") for s in store.worker_statuses().values()),
            queue=schema.QueueOut(**store.queue_depth().model_dump()),
            accuracy=evals[-1].accuracy if evals else None,
            error=view.error,
        )

    def read_run() -> schema.RunOut:
        info = store.run_info()
        _, kernel = kernel_of(info)
        return schema.RunOut(
            run_name=run_name,
            info=info.model_dump(mode="json") if info is not None else None,
            settings=store.settings().to_dict(),
            kernel=kernel,
            step=view.latest_step,
            steps_total=info.steps if info else None,
            desired_rollout=store.desired_replicas(ROLE),
            paused=store.paused(),
            queue=schema.QueueOut(**store.queue_depth().model_dump()),
            control_enabled=control_enabled and finished is None,
            finished=finished,
            refreshed_at=view.refreshed_at,
            error=view.error,
        )

    def read_histogram() -> schema.HistogramOut:
        kernel, kernel_out = kernel_of(store.run_info())
        hist = store.histogram()
        weights, mass = _mass(kernel, hist["counts"])
        return schema.HistogramOut(
            edges=hist["edges"],
            counts=hist["counts"],
            seen=hist["seen"],
            centers=CENTERS,
            weights=weights,
            curve_p=CURVE_P,
            curve_w=[float(w) for w in kernel(np.array(CURVE_P))],
            mass=mass,
            mean_w=_ratio(mass, hist["seen"]),
            kernel=kernel_out,
        )

    def read_history(max_points: int) -> schema.HistoryOut:
        snaps = view.read_snapshots()
        picked = [snaps[i] for i in thin(len(snaps), max_points)]
        return schema.HistoryOut(
            edges=HIST_EDGES,
            steps=[s.step for s in picked],
            times=[s.time for s in picked],
            counts=[s.counts for s in picked],
            seen=[s.seen for s in picked],
            reachable=store.settings().reachable_buckets(),
        )

    def read_trained() -> schema.TrainedOut:
        bins = view.read_trained()
        counts = [sum(b.counts[i] for b in bins) for i in range(HIST_BUCKETS)]
        loss_sum = [sum(b.loss_sum[i] for b in bins) for i in range(HIST_BUCKETS)]
        loss_n = [sum(b.loss_n[i] for b in bins) for i in range(HIST_BUCKETS)]
        pool = store.histogram()
        total = sum(counts)
        return schema.TrainedOut(
            edges=HIST_EDGES,
            window_steps=len(bins),
            first_step=bins[0].step if bins else None,
            last_step=bins[-1].step if bins else None,
            sequences=total,
            trained_counts=counts,
            trained_fraction=[c / total if total else 0.0 for c in counts],
            pool_counts=pool["counts"],
            pool_fraction=[c / pool["seen"] if pool["seen"] else 0.0 for c in pool["counts"]],
            loss_mean=[s / n if n else None for s, n in zip(loss_sum, loss_n, strict=True)],
            loss_count=loss_n,
            loss_kinds=sorted({b.loss_kind for b in bins if b.loss_kind}),
        )

    def read_groups() -> schema.GroupsOut:
        return schema.GroupsOut(
            edges=HIST_EDGES,
            groups=[
                schema.GroupOut(name=name, counts=h["counts"], seen=h["seen"], mean_p=_mean_p(h["counts"], h["seen"]))
                for name, h in sorted(store.histogram_by_group().items())
            ],
        )

    def read_series(max_points: int) -> schema.SeriesOut:
        steps = view.read_steps()
        picked = thin(len(steps), max_points)
        pts = [steps[i] for i in picked]
        busy = [None if p.waited_s is None or p.step_s is None else p.waited_s + p.step_s for p in pts]
        return schema.SeriesOut(
            step=[p.step for p in pts],
            time=[p.time for p in pts],
            loss=[p.loss for p in pts],
            loss_kind=[p.loss_kind for p in pts],
            learner_tokens_per_s=[_ratio(p.tokens, w) for p, w in zip(pts, busy, strict=True)],
            learner_idle=[_ratio(p.waited_s, w) for p, w in zip(pts, busy, strict=True)],
            rollout_tokens_per_s=[rollout_rate(steps, i) for i in picked],
            rollout_idle=[p.rollout_idle for p in pts],
            staleness=[p.staleness for p in pts],
            workers=[p.workers for p in pts],
            lr=[p.lr for p in pts],
            grad_norm=[p.grad_norm for p in pts],
            evals=[schema.EvalOut(**e.__dict__) for e in view.read_evals()],
        )

    def read_workers() -> schema.WorkersOut:
        now = time.time()
        out = []
        for wid, status in sorted(store.worker_statuses().items()):
            last_seen = status.last_seen
            out.append(
                schema.WorkerOut(
                    id=wid,
                    version=status.version,
                    state=status.state,
                    last_seen=last_seen,
                    age_s=max(0.0, now - last_seen) if last_seen is not None else None,
                    tokens_per_s=finite(status.tokens_per_s),
                )
            )
        return schema.WorkersOut(desired_rollout=store.desired_replicas(ROLE), workers=out)

    @app.get("/api/run", response_model=schema.RunOut, responses=errors, tags=["read"])
    def run() -> Response:
        return shared("run", None, read_run)

    @app.get("/api/summary", response_model=schema.SummaryOut, responses=errors, tags=["read"])
    def summary() -> Response:
        return shared("summary", None, read_summary)

    @app.get("/api/histogram", response_model=schema.HistogramOut, responses=errors, tags=["read"])
    def histogram() -> Response:
        return shared("histogram", None, read_histogram)

    @app.get("/api/histogram/history", response_model=schema.HistoryOut, tags=["read"])
    def histogram_history(
        max_points: Annotated[int, Query(ge=1, le=5000, description="most snapshots returned")] = 500,
    ) -> Response:
        return shared("history", max_points, lambda: read_history(max_points))

    @app.get("/api/trained", response_model=schema.TrainedOut, responses=errors, tags=["read"])
    def trained() -> Response:
        return shared("trained", None, read_trained)

    @app.get("/api/groups", response_model=schema.GroupsOut, responses=errors, tags=["read"])
    def groups() -> Response:
        return shared("groups", None, read_groups)

    @app.get("/api/series", response_model=schema.SeriesOut, tags=["read"])
    def series(
        max_points: Annotated[int, Query(ge=1, le=5000, description="most steps returned")] = 1000,
    ) -> Response:
        return shared("series", max_points, lambda: read_series(max_points))

    @app.get("/api/workers", response_model=schema.WorkersOut, responses=errors, tags=["read"])
    def workers() -> Response:
        return shared("workers", None, read_workers)

    @app.get("/api/problems", response_model=schema.ProblemListOut, tags=["read"])
    def problems(
        bucket: Annotated[int, Query(ge=0, lt=HIST_BUCKETS, description="histogram bucket 0..19")],
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> schema.ProblemListOut:
        view.want_index()
        index = view.read_index()
        return schema.ProblemListOut(
            bucket=bucket,
            indexed_at=index.built_at,
            problems=[
                schema.ProblemEntry(id=pid, p_hat=p, n=n, version=v) for pid, p, n, v in index.buckets[bucket][:limit]
            ],
        )

    @app.get(
        "/api/problems/{problem_id}",
        response_model=schema.ProblemOut,
        responses={404: {"model": schema.ErrorOut, "description": "no outcome or rollout of that id"}, **errors},
        tags=["read"],
    )
    def problem(
        problem_id: str,
        rollouts: Annotated[int, Query(ge=1, le=64, description="latest graded rollouts returned")] = 8,
    ) -> schema.ProblemOut:
        history = store.problem_history(problem_id)
        latest = store.latest_rollouts(problem_id, rollouts)
        if history.recorded == 0 and not latest:
            raise HTTPException(404, f"no outcome or rollout recorded for problem {problem_id!r} in run {run_name!r}")
        settings = store.settings()
        outcomes, correct = [], 0
        for i, (ok, version) in enumerate(history.outcomes):
            correct += ok
            outcomes.append(schema.OutcomeOut(correct=ok, version=version, p_hat=settings.p_hat(correct, i + 1)))
        est = history.estimate
        return schema.ProblemOut(
            problem_id=problem_id,
            p_hat=est.p_hat,
            n=est.n,
            correct=est.correct,
            version=est.version,
            bucket=bucket_of(est.p_hat) if est.n > 0 else None,
            recorded=history.recorded,
            frozen=history.frozen,
            outcomes=outcomes,
            rollouts=[
                schema.RolloutOut(
                    rollout_id=g.rollout.rollout_id,
                    version=g.rollout.version,
                    worker_id=g.rollout.worker_id,
                    created_at=g.rollout.created_at,
                    text=g.rollout.text,
                    correct=g.correct,
                    extracted=g.extracted,
                    reason=g.reason,
                    finish_reason=g.rollout.finish_reason,
                )
                for g in latest
            ],
        )

    @app.get(
        "/api/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "`summary` events (SummaryOut JSON)"}},
        tags=["read"],
    )
    async def stream(
        interval: Annotated[float, Query(ge=0.1, le=60, description="seconds between events")] = 1.0,
        max_events: Annotated[int | None, Query(ge=1, description="end the stream after this many events")] = None,
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            sent = 0
            while not view.stopping.is_set():
                data = await run_in_threadpool(answers.get, "summary", None, read_summary)
                yield f"event: summary\nid: {sent}\ndata: {data.decode()}\n\n"
                sent += 1
                if max_events is not None and sent >= max_events:
                    return
                deadline = time.monotonic() + interval
                while not view.stopping.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(min(0.1, interval))

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
