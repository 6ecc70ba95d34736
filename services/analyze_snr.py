"""`paced analyze snr`: the cross-problem gradient signal-to-noise ratio by pass rate (the paper's central
measurement, PAPER.md section 6; this is our protocol, the paper's own is not published).

    paced analyze snr --config configs/testbed.yaml [--checkpoint DIR] [--problems 600] [--samples 8]
                      [--loss forward_kl|reverse_kl] [--out DIR]

1. Pass rates: `--samples` K student samples per problem at `rollout.temperature`, graded: p = c / K.
2. One gradient per problem, of the unweighted distillation loss (the token-mean divergence of one
   sequence): forward KL on the teacher's greedy reference (problems without a verified one are left
   out), or reverse KL on one student sample. Gradients are taken over a parameter subset (the last
   decoder layer and the final norm by default, `--params`), so memory stays small.
3. Problems are bucketed by c (0..K). For bucket b with n_b >= 3 gradients g_i:

       g_mean = mean_i g_i,  tr Sigma = sum_i ||g_i - g_mean||^2 / (n_b - 1),
       signal = ||g_mean||^2 - tr Sigma / n_b     (unbiased for ||E g||^2; may come out < 0),
       SNR_b  = signal / tr Sigma

4. A least-squares fit log SNR = a log p + b log(1 - p) + c over the interior buckets with SNR > 0
   (the extremes have log 0), and a verdict per extreme: the SNR collapses there when the end bucket's
   SNR is below half the highest interior one; both ends collapsing is the paper's bell curve.

Writes snr.json, snr.md and snr.png in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def bucket_snr(grads: np.ndarray) -> dict[str, float | int | None]:
    """SNR of one bucket's per-problem gradients [n, d], with the small-sample correction."""
    n = grads.shape[0]
    if n < 3:
        return {"n": n, "signal": None, "trace_cov": None, "snr": None}
    mean = grads.mean(axis=0)
    trace = float(((grads - mean) ** 2).sum() / (n - 1))
    signal = float(mean @ mean - trace / n)
    return {"n": n, "signal": signal, "trace_cov": trace, "snr": signal / trace if trace > 0 else None}


def fit_bell(p: np.ndarray, snr: np.ndarray) -> dict[str, float] | None:
    """Least squares of log SNR = a log p + b log(1 - p) + c over 0 < p < 1 with SNR > 0."""
    keep = (p > 0) & (p < 1) & (snr > 0)
    if keep.sum() < 3:
        return None
    x = np.column_stack([np.log(p[keep]), np.log(1 - p[keep]), np.ones(keep.sum())])
    (a, b, c), *_ = np.linalg.lstsq(x, np.log(snr[keep]), rcond=None)
    return {"a": float(a), "b": float(b), "c": float(c), "buckets": int(keep.sum())}


def log(message: str) -> None:
    print(f"[paced analyze {time.strftime('%H:%M:%S')}] {message}", flush=True)


def analyze(
    config: str, checkpoint: str | None, problems: int, samples: int, loss: str, params: str, out: Path, seed: int
) -> dict[str, Any]:
    import torch

    from paced_core.config import ForwardKL, ReverseKL, load_config
    from paced_core.tasks import get_template
    from services.learner import Learner
    from services.pool import load_pool
    from services.records import RolloutRequest
    from services.rollout import HFRolloutWorker
    from services.store.memory_store import MemoryStore
    from services.verifier import Grader

    overrides = [f"student.path={checkpoint}"] if checkpoint else []
    cfg = load_config(config, overrides)
    rng = np.random.default_rng(seed)
    pool = load_pool(cfg.data, seed=cfg.run.seed).train
    chosen = sorted(rng.choice(len(pool), size=min(problems, len(pool)), replace=False).tolist())
    pool = [pool[i] for i in chosen]
    template = get_template(cfg.data.template)
    grader = Grader(cfg.verifier)
    student = HFRolloutWorker(
        "snr-student", cfg.student.path, cfg.rollout, pool, template,
        gguf_file=cfg.student.gguf_file, dtype=cfg.student.dtype, chat=cfg.student.chat_template,
    )  # fmt: skip

    def sample(worker: HFRolloutWorker, n: int) -> list:
        reqs = [
            RolloutRequest(request_id=f"snr-{i}", problem={"index": i, "id": p.id}, n=n) for i, p in enumerate(pool)
        ]
        rollouts = []
        for i in range(0, len(reqs), 64):
            rollouts += worker.generate(reqs[i : i + 64])
        verdicts = grader.grade([pool[r.problem.index] for r in rollouts], [r.text for r in rollouts])
        return list(zip(rollouts, verdicts, strict=True))

    log(f"pass rates: {samples} samples of {len(pool)} problems at temperature {cfg.rollout.temperature} ...")
    graded = sample(student, samples)
    correct = np.zeros(len(pool), dtype=int)
    one_sample: dict[int, list[int]] = {}
    for r, v in graded:
        correct[r.problem.index] += v.correct
        one_sample.setdefault(r.problem.index, r.completion_ids)
    if loss == "forward_kl":
        teacher_rollout = cfg.rollout.model_copy(update={"temperature": 0.0})
        teacher = HFRolloutWorker("snr-teacher", cfg.teacher.path or cfg.student.path, teacher_rollout, pool,
                                  template, gguf_file=cfg.teacher.gguf_file, dtype=cfg.teacher.dtype,
                                  chat=cfg.student.chat_template, role="teacher")  # fmt: skip
        log("teacher references (greedy, verified) ...")
        completions = {r.problem.index: r.completion_ids for r, v in sample(teacher, 1) if v.correct}
        del teacher
        spec: Any = ForwardKL()
    else:
        completions = one_sample
        spec = ReverseKL()
    learner = Learner(cfg, pool, out, store=MemoryStore("snr-analysis"))
    model = learner.student
    subset = _parameter_subset(model, params)
    log(f"gradients of {spec.kind} over {sum(p.numel() for p in subset):,} parameters ({params}) "
        f"for {len(completions)} problems ...")  # fmt: skip
    grads = np.zeros((len(pool), sum(p.numel() for p in subset)), dtype=np.float32)
    have = np.zeros(len(pool), dtype=bool)
    for i in sorted(completions):
        per_token, mask = learner.loss.divergence([learner.batches.sequence(pool[i].id, completions[i])], spec)
        value = (per_token * mask).sum() / mask.sum().clamp_min(1)
        g = torch.autograd.grad(value, subset)
        grads[i] = torch.cat([x.reshape(-1) for x in g]).float().cpu().numpy()
        have[i] = True
    buckets = []
    for c in range(samples + 1):
        rows = have & (correct == c)
        buckets.append({"correct": c, "p": c / samples, **bucket_snr(grads[rows].astype(np.float64))})
    p = np.array([b["p"] for b in buckets])
    snr = np.array([b["snr"] if b["snr"] is not None else np.nan for b in buckets])
    result = {
        "config": config, "checkpoint": checkpoint or cfg.student.path, "loss": spec.kind, "params": params,
        "problems": len(pool), "samples": samples, "temperature": cfg.rollout.temperature,
        "with_gradient": int(have.sum()), "buckets": buckets, "fit": fit_bell(p, np.nan_to_num(snr, nan=-1.0)),
    }  # fmt: skip
    grader.close()
    return result


def _parameter_subset(model: Any, params: str) -> list:
    if params == "all":
        return [p for p in model.parameters() if p.requires_grad]
    if params == "last_layer":
        layers = model.model.layers
        return [*layers[-1].parameters(), *model.model.norm.parameters()]
    raise ValueError(f"--params must be last_layer or all; got {params!r}")


def write(result: dict[str, Any], out: Path) -> None:
    from services.plots import finish, pyplot

    out.mkdir(parents=True, exist_ok=True)
    (out / "snr.json").write_text(json.dumps(result, indent=2))
    rows = [b for b in result["buckets"] if b["snr"] is not None]
    fig, ax = pyplot().subplots(figsize=(7, 4))
    ax.plot([b["p"] for b in rows], [max(b["snr"], 1e-6) for b in rows], "o-", label="SNR per bucket")
    fit = result["fit"]
    if fit:
        q = np.linspace(0.02, 0.98, 97)
        ax.plot(q, np.exp(fit["a"] * np.log(q) + fit["b"] * np.log(1 - q) + fit["c"]), ":",
                label=f"fit: a = {fit['a']:.2f}, b = {fit['b']:.2f}")  # fmt: skip
    ax.set_yscale("log")
    finish(fig, ax, out / "snr.png", xlabel="student pass rate c / K", ylabel="SNR = ||E g||^2 / tr Cov g",
           title=f"gradient SNR by pass rate ({result['loss']}, {result['params']})")  # fmt: skip
    lines = [
        f"# Gradient SNR by pass rate: {result['loss']}",
        "",
        f"Checkpoint `{result['checkpoint']}`, config `{result['config']}`, {result['problems']} problems, "
        f"K = {result['samples']} samples at temperature {result['temperature']}, gradients over "
        f"`{result['params']}` for {result['with_gradient']} problems.",
        "",
        "| c / K | problems | signal (unbiased squared norm of the mean) | tr Cov g | SNR |",
        "|---|---|---|---|---|",
    ]
    for b in result["buckets"]:
        cells = ["-" if b[k] is None else f"{b[k]:.3g}" for k in ("signal", "trace_cov", "snr")]
        lines.append(f"| {b['correct']}/{result['samples']} | {b['n']} | " + " | ".join(cells) + " |")
    inner = [b["snr"] for b in result["buckets"] if b["snr"] is not None and 0 < b["correct"] < result["samples"]]
    ends = {b["correct"]: b["snr"] for b in result["buckets"] if b["correct"] in (0, result["samples"])}
    if inner:
        lines += ["", f"SNR at p = 0: {_g(ends.get(0))}; at p = 1: {_g(ends.get(result['samples']))}; "
                  f"highest interior bucket: {_g(max(inner))}."]  # fmt: skip
    if fit:
        lines += ["", f"Fit over {fit['buckets']} interior buckets: log SNR = {fit['a']:.2f} log p + "
                  f"{fit['b']:.2f} log(1 - p) {fit['c']:+.2f}."]  # fmt: skip
    else:
        lines += ["", "Too few interior buckets with a positive SNR to fit."]
    lines += ["", "Verdict: " + bell_verdict(result)]
    (out / "snr.md").write_text("\n".join(lines) + "\n")


def bell_verdict(result: dict[str, Any]) -> str:
    """Whether the SNR collapses at each extreme: the end bucket's SNR below half the highest interior one."""
    k = result["samples"]
    inner = [b["snr"] for b in result["buckets"] if b["snr"] is not None and 0 < b["correct"] < k]
    if not inner:
        return "no interior bucket has an estimate."
    peak = max(inner)
    ends = {b["correct"]: b["snr"] for b in result["buckets"] if b["correct"] in (0, k)}
    missing = [f"p = {c // k}" for c in (0, k) if ends.get(c) is None]
    if missing:
        return f"no estimate at {' and '.join(missing)} (fewer than 3 problems there)."
    collapsed = {c: ends.get(c) is not None and ends[c] < peak / 2 for c in (0, k)}
    if all(collapsed.values()):
        return "the SNR collapses at both extremes: the bell curve the paper reports."
    if not any(collapsed.values()):
        return "the SNR collapses at neither extreme: no bell curve."
    low, high = ("p = 0", "p = 1") if collapsed[0] else ("p = 1", "p = 0")
    return f"the SNR collapses at {low} only; at {high} it is as high as in the interior: half a bell."


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="paced analyze snr", description="Gradient SNR by pass rate.")
    parser.add_argument("what", choices=["snr"])
    parser.add_argument("--config", required=True, help="the run config (models, data, rollout settings)")
    parser.add_argument("--checkpoint", default=None, help="student model directory (default: the config's)")
    parser.add_argument("--problems", type=int, default=600)
    parser.add_argument("--samples", type=int, default=8, help="K samples per problem for its pass rate")
    parser.add_argument("--loss", choices=["forward_kl", "reverse_kl"], default="forward_kl")
    parser.add_argument("--params", choices=["last_layer", "all"], default="last_layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/snr")
    args = parser.parse_args(argv)
    from paced_core.config import ConfigError
    from services.models import ModelLoadError

    out = Path(args.out)
    try:
        result = analyze(args.config, args.checkpoint, args.problems, args.samples, args.loss, args.params, out,
                         args.seed)  # fmt: skip
    except (ConfigError, ModelLoadError, FileNotFoundError, ValueError) as err:
        print(f"paced analyze: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    write(result, out)
    fit = result["fit"]
    log(f"{out / 'snr.md'}: " + (f"fit a = {fit['a']:.2f}, b = {fit['b']:.2f}; " if fit else "") + bell_verdict(result))
    return 0
