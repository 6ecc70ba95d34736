"""The report of an experiment: figures with 95% intervals over seeds, from the runs' own summaries.

Every number comes from OUT/runs/ARM/seed-S/summary.json (and nothing else):

- held-out accuracy against learner steps (`evals`, at each evaluated policy version), mean and 95%
  interval per arm;
- final held-out accuracy per arm, and each arm's difference from the baseline, paired by seed, with
  its own interval;
- the learner steps each arm's mean curve needs to reach the baseline's mean final accuracy (linear
  interpolation between evaluations; also how many single runs reach it), and its ratio to the
  baseline's own;
- forgetting on each retained-skill probe: 1 - accuracy after on the problems solved before;
- the share of each arm's trained sequences at p = 0, in between, p = 1 (c / n when trained);
- wall time.

The 95% interval of a mean over n seeds is mean +- t(0.975, n - 1) sd / sqrt(n) (Student's t; none for
n = 1). Writes report.md, results.json (the same numbers, for tools) and PNG plots.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

RATE_BUCKETS = ("p0", "between", "p1", "unknown")


def interval(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd and the 95% t interval's half-width of `values` (NaNs left out)."""
    x = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "mean": None, "sd": None, "half": None}
    if x.size == 1:
        return {"n": 1, "mean": float(x[0]), "sd": None, "half": None}
    sd = float(x.std(ddof=1))
    return {"n": int(x.size), "mean": float(x.mean()), "sd": sd,
            "half": float(stats.t.ppf(0.975, x.size - 1) * sd / math.sqrt(x.size))}  # fmt: skip


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """The first step at which the accuracy curve reaches `target`, interpolated linearly between
    evaluations; None if it never does."""
    prev: tuple[int, float] | None = None
    for step, acc in curve:
        if acc >= target:
            if prev is None or acc == prev[1]:
                return float(step)
            return prev[0] + (target - prev[1]) / (acc - prev[1]) * (step - prev[0])
        prev = (step, acc)
    return None


def load_runs(out: Path, arms: list[str], seeds: list[int]) -> dict[str, dict[int, dict[str, Any]]]:
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    missing = []
    for arm in arms:
        for seed in seeds:
            path = out / "runs" / arm / f"seed-{seed}" / "summary.json"
            if path.is_file():
                runs.setdefault(arm, {})[seed] = json.loads(path.read_text())
            else:
                missing.append(f"{arm}/seed-{seed}")
    if missing:
        raise FileNotFoundError(f"{out}: no summary for {', '.join(missing)}; run the experiment first")
    return runs


def curve_of(summary: dict[str, Any]) -> list[tuple[int, float]]:
    """(learner step, held-out accuracy) of each evaluation; the policy version evaluated is the step."""
    points: dict[int, float] = {}
    for e in summary["evals"]:
        points[int(e["version"])] = float(e["accuracy"])
    return sorted(points.items())


def compute(spec: Any, out: Path, arms: list[str], seeds: list[int], steps: int) -> dict[str, Any]:
    runs = load_runs(out, arms, seeds)
    base = spec.baseline
    base_final = interval([runs[base][s]["heldout_accuracy_after"] for s in seeds])["mean"]
    results: dict[str, Any] = {"experiment": spec.name, "baseline": base, "steps": steps, "seeds": seeds,
                               "baseline_final_mean": base_final, "arms": {}}  # fmt: skip
    for arm in arms:
        by_seed = runs[arm]
        finals = [by_seed[s]["heldout_accuracy_after"] for s in seeds]
        diffs = [by_seed[s]["heldout_accuracy_after"] - runs[base][s]["heldout_accuracy_after"] for s in seeds]
        reach = [steps_to_reach(curve_of(by_seed[s]), base_final) for s in seeds]
        composition = {b: 0 for b in RATE_BUCKETS}
        for s in seeds:
            for b in RATE_BUCKETS:
                composition[b] += by_seed[s].get("trained_sequences_by_p", {}).get(b, 0)
        total = sum(composition.values())
        probes: dict[str, Any] = {}
        for name in by_seed[seeds[0]].get("eval_sets_retained", {}):
            kept = [by_seed[s]["eval_sets_retained"][name]["accuracy_after"] for s in seeds]
            probes[name] = {
                "forgetting": interval([1 - k for k in kept]),
                "accuracy_before": interval([by_seed[s]["eval_sets_before"][name] for s in seeds]),
                "accuracy_after": interval([by_seed[s]["eval_sets_after"][name] for s in seeds]),
            }
        curves = [curve_of(by_seed[s]) for s in seeds]
        common = sorted(set.intersection(*(set(dict(c)) for c in curves)))
        mean_curve = [(st, float(np.mean([dict(c)[st] for c in curves]))) for st in common]
        results["arms"][arm] = {
            "before": interval([by_seed[s]["heldout_accuracy_before"] for s in seeds]),
            "final": interval(finals),
            "final_by_seed": dict(zip(map(str, seeds), finals, strict=True)),
            "diff_from_baseline": interval(diffs),
            "steps_to_baseline_final": {
                # the arm's mean curve over seeds: the headline figure
                "mean_curve": steps_to_reach(mean_curve, base_final),
                "by_seed": dict(zip(map(str, seeds), reach, strict=True)),
                "reached": sum(r is not None for r in reach),
            },
            "curve": [{"step": st, **interval([dict(c)[st] for c in curves])} for st in common],
            "trained_by_p": {b: (composition[b] / total if total else None) for b in RATE_BUCKETS},
            "trained_sequences": total,
            "retained": probes,
            "wall_s": interval([by_seed[s]["wall_s"] for s in seeds]),
        }
    base_steps = results["arms"][base]["steps_to_baseline_final"]["mean_curve"]
    for arm in arms:
        reach = results["arms"][arm]["steps_to_baseline_final"]
        ok = reach["mean_curve"] is not None and base_steps
        reach["ratio_to_baseline"] = reach["mean_curve"] / base_steps if ok else None
    return results


def _fmt(iv: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    if iv["mean"] is None:
        return "-"
    text = f"{iv['mean'] * scale:.{digits}f}"
    return text + (f" ± {iv['half'] * scale:.{digits}f}" if iv["half"] is not None else "")


def _plots(results: dict[str, Any], out: Path) -> list[str]:
    from services.plots import finish, pyplot

    plt = pyplot()
    arms = list(results["arms"])
    colors = {arm: plt.cm.tab10(i % 10) for i, arm in enumerate(arms)}
    written = []

    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        pts = results["arms"][arm]["curve"]
        x = [p["step"] for p in pts]
        m = np.array([p["mean"] for p in pts])
        h = np.array([p["half"] or 0.0 for p in pts])
        ax.plot(x, m, label=arm, color=colors[arm])
        ax.fill_between(x, m - h, m + h, color=colors[arm], alpha=0.15)
    ax.axhline(results["baseline_final_mean"], color="grey", ls=":", lw=1, label=f"{results['baseline']} final")
    title = f"{results['experiment']}: mean and 95% interval over {len(results['seeds'])} seeds"
    written.append(finish(fig, ax, out / "accuracy_vs_steps.png", xlabel="learner step",
                          ylabel="held-out accuracy (greedy)", title=title))  # fmt: skip

    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = np.zeros(len(arms))
    names = {"p0": "p = 0", "between": "0 < p < 1", "p1": "p = 1", "unknown": "unknown"}
    for bucket, color in zip(RATE_BUCKETS, ("#c0392b", "#27ae60", "#2c3e50", "#bdc3c7"), strict=True):
        share = np.array([results["arms"][a]["trained_by_p"][bucket] or 0.0 for a in arms])
        ax.bar(arms, share, bottom=bottom, label=names[bucket], color=color)
        bottom += share
    title = "what each arm trained on, by the problem's pass rate c / n"
    written.append(finish(fig, ax, out / "batch_composition.png", ylabel="share of trained sequences",
                          title=title, rotate_x=True))  # fmt: skip

    for probe in sorted({p for a in arms for p in results["arms"][a]["retained"]}):
        fig, ax = plt.subplots(figsize=(8, 4))
        ivs = [results["arms"][a]["retained"][probe]["forgetting"] for a in arms]
        ax.bar(arms, [iv["mean"] or 0 for iv in ivs], yerr=[iv["half"] or 0 for iv in ivs], capsize=4,
               color=[colors[a] for a in arms])  # fmt: skip
        written.append(finish(fig, ax, out / f"forgetting_{probe}.png",
                              ylabel="forgetting: 1 - accuracy after\non problems solved before",
                              title=f"forgetting on the retained probe '{probe}' (95% interval)",
                              legend=False, rotate_x=True))  # fmt: skip
    return written


def render(results: dict[str, Any], plots: list[str], machine: str) -> str:
    base = results["baseline"]
    n = len(results["seeds"])
    base_arm = results["arms"][base]
    # When the baseline ends below where it started, "steps to reach its final accuracy" measures nothing.
    lost = base_arm["final"]["mean"] is not None and base_arm["final"]["mean"] <= (base_arm["before"]["mean"] or 0)
    lines = [
        f"# Experiment `{results['experiment']}`",
        "",
        f"{len(results['arms'])} arms x {n} seeds ({', '.join(map(str, results['seeds']))}), "
        f"{results['steps']} learner steps each. Baseline: `{base}`. Intervals: 95%, Student's t over seeds "
        f"(differences paired by seed). Machine: {machine}. "
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "## Final held-out accuracy",
        "",
        f"| arm | before | final | final - {base} | steps to {base}'s final ({results['baseline_final_mean']:.3f}) "
        "| ratio to baseline | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, r in results["arms"].items():
        reach = r["steps_to_baseline_final"]
        at = reach["mean_curve"]
        reached = ("never" if at is None else f"{at:.0f}") + f" ({reach['reached']}/{n} seeds reach it)"
        ratio = f"{reach['ratio_to_baseline']:.2f}" if reach["ratio_to_baseline"] is not None else "-"
        if lost:
            reached = ratio = f"n/a ({base} lost accuracy)"
        lines.append(
            f"| {arm} | {_fmt(r['before'])} | {_fmt(r['final'])} | {_fmt(r['diff_from_baseline'])} | {reached} "
            f"| {ratio} | {_fmt(r['wall_s'], digits=0)} |"
        )
    probes = sorted({p for r in results["arms"].values() for p in r["retained"]})
    for probe in probes:
        lines += ["", f"## Forgetting on the retained probe `{probe}`", "",
                  "Problems the student solved (greedy) before the run and never trained on; forgetting is the "
                  "share of them it no longer solves after.", "",
                  "| arm | probe accuracy before | after | forgetting |", "|---|---|---|---|"]  # fmt: skip
        for arm, r in results["arms"].items():
            pr = r["retained"][probe]
            lines.append(f"| {arm} | {_fmt(pr['accuracy_before'])} | {_fmt(pr['accuracy_after'])} "
                         f"| {_fmt(pr['forgetting'])} |")  # fmt: skip
    lines += ["", "## What each arm trained on", "",
              "Share of trained sequences by their problem's pass rate c / n when trained (all seeds pooled).", "",
              "| arm | p = 0 | 0 < p < 1 | p = 1 | unknown | sequences |", "|---|---|---|---|---|---|"]  # fmt: skip
    for arm, r in results["arms"].items():
        t = r["trained_by_p"]
        cells = " | ".join("-" if t[b] is None else f"{t[b]:.1%}" for b in RATE_BUCKETS)
        lines.append(f"| {arm} | {cells} | {r['trained_sequences']} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Per run", "", "| arm | " + " | ".join(f"seed {s}" for s in results["seeds"]) + " |",
              "|---|" + "---|" * n]  # fmt: skip
    for arm, r in results["arms"].items():
        lines.append(f"| {arm} | " + " | ".join(f"{r['final_by_seed'][str(s)]:.3f}" for s in results["seeds"]) + " |")
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    import os
    import platform

    import torch

    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def write_report(spec: Any, out: str | Path, arms: list[str], seeds: list[int], steps: int) -> Path:
    out = Path(out)
    results = compute(spec, out, arms, seeds, steps)
    results["machine"] = machine_description()
    plots = _plots(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report = out / "report.md"
    report.write_text(render(results, plots, results["machine"]))
    return report
