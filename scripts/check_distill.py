"""Check that the embedded student is distillable: a few CPU minutes of on-policy distillation from the
embedded teacher must raise its held-out greedy accuracy.

    python scripts/check_distill.py                       # reverse KL on student samples, 4 minutes
    python scripts/check_distill.py --loss fkl_rkl --budget 240 --seed 1

A plain single-process loop, the pipeline's algorithm without its actors: each step draws `--problems`
problems from the pool in proportion to max(p(1 - p), 0.01), p being the student's pass rate estimated
from its own samples (`PassRateTracker`, window 16, Beta(1, 1) prior); samples `--samples` completions per
problem at temperature 1; grades them (which updates p); then takes one AdamW step on

- `rkl`: reverse KL to the teacher on the student's sampled tokens (`losses.reverse_kl`);
- `fkl`: forward KL on the teacher's greedy completions (`losses.forward_kl`);
- `fkl_rkl`: `fkl` for the first half of the budget, then `rkl`.

Each sequence's loss is its token mean; the batch loss their mean (`losses.reduce`, mode "sample").
The budget counts sampling, teacher passes and optimizer steps; the held-out evaluations are extra. It is
measured in compute seconds, this process's CPU time divided by torch's thread count: the wall time on an
otherwise idle machine, and the same amount of training when other jobs share the cores.
Pool: `synthetic_arithmetic(2000, seed=0)`; held-out: the next 500 problems of that seed.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence

import numpy as np
import torch
from train_embedded import by_level, fmt_levels, generate, is_correct, pass_rates, spread
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from paced_core.embedded import resolve_model_path
from paced_core.losses import forward_kl, reduce, reverse_kl
from paced_core.passrate import PassRateTracker
from paced_core.tasks import Problem, synthetic_arithmetic
from paced_core.weighting import beta_kernel, sampling_weight


def completion_logits(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each completion token [B, C, V] and the completion mask [B, C], with prompts
    left-padded to one column as the learner does."""
    p_ids = [tokenizer.encode(p) for p in prompts]
    c_ids = [tokenizer.encode(c) for c in completions]
    p_width, c_width = max(map(len, p_ids)), max(map(len, c_ids))
    ids = torch.full((len(p_ids), p_width + c_width), tokenizer.pad_token_id)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((len(p_ids), c_width))
    for row, (p, c) in enumerate(zip(p_ids, c_ids, strict=True)):
        ids[row, p_width - len(p) : p_width + len(c)] = torch.tensor(p + c)
        attention[row, p_width - len(p) : p_width + len(c)] = 1
        mask[row, : len(c)] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
    return logits[:, p_width - 1 : -1], mask


def compute_seconds() -> float:
    """CPU time of this process over torch's thread count: wall time on an idle machine, robust to others' load."""
    return time.process_time() / torch.get_num_threads()


def heldout_accuracy(model, tokenizer, heldout: Sequence[Problem]) -> tuple[float, dict[int, float]]:
    greedy = pass_rates(model, tokenizer, heldout)
    return sum(greedy) / len(greedy), by_level(heldout, greedy)


def main() -> None:
    parser = argparse.ArgumentParser(description="On-policy distillation check for the embedded models.")
    parser.add_argument("--loss", choices=("rkl", "fkl", "fkl_rkl"), default="rkl")
    parser.add_argument("--budget", type=float, default=240.0, help="compute seconds of training (default 240)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--problems", type=int, default=64, help="problems per step")
    parser.add_argument("--samples", type=int, default=4, help="student samples per problem")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", default="embedded:teacher")
    parser.add_argument("--student", default="embedded:student")
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between evaluations")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.student))
    teacher = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.teacher)).eval()
    student = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.student))
    teacher.requires_grad_(False)
    problems = synthetic_arithmetic(2500, seed=0)
    pool, heldout = problems[:2000], problems[2000:]

    before, before_levels = heldout_accuracy(student, tokenizer, heldout)
    initial = pass_rates(student, tokenizer, pool, samples=8, temperature=1.0, seed=args.seed)
    low, mid, high = spread(initial)
    print(f"before: held-out greedy {before:.1%} ({fmt_levels(before_levels)})", flush=True)
    print(f"        pool p (8 samples, T=1): near 0 {low:.0%}, between {mid:.0%}, near 1 {high:.0%}", flush=True)

    tracker = PassRateTracker(window=16)
    for problem, p in zip(pool, initial, strict=True):
        tracker.record_many((problem.id, i < round(p * 8), 0) for i in range(8))
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)

    trained_s, step, next_eval = 0.0, 0, args.eval_every
    teacher_refs: dict[str, str] = {}
    started = time.perf_counter()
    while trained_s < args.budget:
        tick = compute_seconds()
        stage = "fkl" if args.loss == "fkl" or (args.loss == "fkl_rkl" and trained_s < args.budget / 2) else "rkl"
        p_hat = np.array([tracker.estimate(p.id).p_hat for p in pool])
        weights = sampling_weight(beta_kernel(p_hat), 0.01)
        batch = rng.choices(pool, weights=weights.tolist(), k=args.problems)
        prompts = [p.prompt for p in batch for _ in range(args.samples)]
        samples = generate(student, tokenizer, prompts, temperature=1.0)
        for i, completion in enumerate(samples):
            tracker.record(batch[i // args.samples].id, is_correct(batch[i // args.samples], completion), step)
        if stage == "fkl":
            missing = [p for p in dict.fromkeys(batch) if p.id not in teacher_refs]
            if missing:
                refs = generate(teacher, tokenizer, [p.prompt for p in missing])
                teacher_refs.update((p.id, ref) for p, ref in zip(missing, refs, strict=True))
            prompts, completions = [p.prompt for p in batch], [teacher_refs[p.id] for p in batch]
        else:
            completions = samples
        # A sample cut at the token limit has no newline; an empty one has nothing to train on.
        kept = [(p, c) for p, c in zip(prompts, completions, strict=True) if c]
        prompts, completions = [p for p, _ in kept], [c for _, c in kept]
        with torch.no_grad():
            teacher_logits, mask = completion_logits(teacher, tokenizer, prompts, completions)
        student.train()
        student_logits, _ = completion_logits(student, tokenizer, prompts, completions)
        divergence = forward_kl if stage == "fkl" else reverse_kl
        loss = reduce(divergence(student_logits, teacher_logits, mask), mask, mode="sample")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        step += 1
        trained_s += compute_seconds() - tick
        if trained_s >= next_eval or trained_s >= args.budget:
            next_eval += args.eval_every
            accuracy, levels = heldout_accuracy(student, tokenizer, heldout)
            print(
                f"step {step:>4}  {stage}  loss {loss.item():.4f}  trained {trained_s:.0f}s  "
                f"held-out greedy {accuracy:.1%} ({fmt_levels(levels)})",
                flush=True,
            )

    after, after_levels = heldout_accuracy(student, tokenizer, heldout)
    final = pass_rates(student, tokenizer, pool, samples=8, temperature=1.0, seed=args.seed)
    low, mid, high = spread(final)
    print(f"after:  held-out greedy {after:.1%} ({fmt_levels(after_levels)})", flush=True)
    print(f"        pool p (8 samples, T=1): near 0 {low:.0%}, between {mid:.0%}, near 1 {high:.0%}", flush=True)
    print(
        f"RESULT loss={args.loss} lr={args.lr:g} problems={args.problems} samples={args.samples} "
        f"seed={args.seed}: held-out {before:.1%} -> {after:.1%} ({100 * (after - before):+.1f} points) in "
        f"{step} steps, {trained_s:.0f}s of training, {time.perf_counter() - started:.0f}s wall",
        flush=True,
    )


if __name__ == "__main__":
    main()
