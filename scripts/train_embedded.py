"""Train the embedded teacher and student from scratch on CPU and write them into the package.

    python scripts/train_embedded.py            # about 10 minutes on 2 CPU cores

Both models are `LlamaForCausalLM` with a character-level tokenizer over `SYNTHETIC_ALPHABET`, trained by
plain next-token cross-entropy on the completion `answer + "\\n" + </s>` after the bare prompt ("47+33=").
One base model is trained, then forked: the teacher trains on until it is accurate on every level of
`synthetic_arithmetic`; the student trains for a short phase mostly on the easy levels (`Specialise`), in
which it partly forgets the harder ones: its pass rates spread from 0 to 1 (the regime where p(1 - p) weighting
matters), and what it forgot, a few minutes of distillation bring back.

Training problems come from `synthetic_arithmetic` with seeds that never collide with the demo's
(`DEMO_PROBLEMS`: seed 0): the student never sees a demo problem, so the demo's pool and held-out set are
new to it; the teacher, the oracle, sees them in its last phase. Everything is seeded: the same seed, torch version
and thread count give the same weights.

Writes `paced_core/data/embedded/{teacher,student}/` (safetensors, config, generation config, tokenizer)
and `paced_core/data/embedded/README.md` with sizes, timings and the measured accuracies.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from paced_core.chartok import build_char_tokenizer as build_tokenizer
from paced_core.tasks import SYNTHETIC_ALPHABET, Problem, synthetic_arithmetic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "paced_core" / "data" / "embedded"
STOP = "\n"  # ends every answer; generation stops on it (or on </s>, which follows it in training)
MAX_NEW_TOKENS = 8  # the longest answer, "-178\n", is 5 tokens
LEVELS = (1, 2, 3, 4, 5)

DEMO_TEMPERATURE = 1.75
"""`rollout.temperature` of `configs/demo.yaml`: the student's pass rates are measured at it."""
DEMO_PROBLEMS = 2500
"""`synthetic_arithmetic(DEMO_PROBLEMS, seed=0)` holds the demo's pool (2200, held-out included) and
`scripts/check_distill.py`'s pool (the first 2000) and held-out set (the next 500)."""


@dataclass(frozen=True)
class Specialise:
    """A last phase on the easy levels 1-2, with a `hard_share` of problems from levels 3-5, at a constant
    `lr`: the model partly forgets the harder levels. What it forgets, distillation can bring back quickly,
    unlike a skill never learnt, which a pool of a few thousand problems does not teach in minutes.

    It runs in rounds of `round_steps` until at least `near0` of the calibration problems (the first 400
    of the demo's pool: the spread is a property of the student on the pool it will be distilled on) have
    a sampled pass rate <= 1/8 (8 samples at `DEMO_TEMPERATURE`), or `max_steps` have run."""

    lr: float
    hard_share: float
    near0: float
    round_steps: int
    max_steps: int


@dataclass(frozen=True)
class Spec:
    """A model's shape and its base training run: warmup, then a cosine decay of the learning rate to
    lr/10 over `steps`."""

    name: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    steps: int
    batch: int
    lr: float
    warmup: int = 200


BASE = Spec("base", hidden=96, layers=3, heads=8, ffn=384, steps=4000, batch=128, lr=3e-3)
"""The training both models share; the teacher then trains `until_accurate`, the student `specialise`s."""
TEACHER_UNTIL = 0.95
TEACHER_EXTRA_STEPS = 3000
STUDENT_SPECIALISE = Specialise(lr=1e-3, hard_share=0.0, near0=0.28, round_steps=25, max_steps=300)
ADAPT_EVERY = 300
"""Steps between re-weightings of the levels: each is drawn in proportion to 1.1 - its greedy accuracy on
the monitor problems, so the data follows what is not learnt yet (level 1 is learnt first, level 5 last)."""
MONITOR_SEED = 1
"""`synthetic_arithmetic(300, seed=MONITOR_SEED)`: 60 problems per level to watch training on and weight
levels by."""


# ----------------------------------------------------------------------------- tokenizer


def stop_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Token ids that end a completion: the newline and </s>."""
    return [tokenizer.convert_tokens_to_ids(STOP), tokenizer.eos_token_id]


# ----------------------------------------------------------------------------- data


class LevelStreams:
    """Endless, seeded supplies of training problems, one per level, skipping the prompts in `exclude`. A level
    is read in chunks of distinct problems from `synthetic_arithmetic` with seeds >= 1000, never the demo's 0."""

    def __init__(self, seed: int, exclude: set[str]) -> None:
        self.seed, self.exclude = seed, exclude
        self.chunks: dict[int, Iterator[Problem]] = {level: iter(()) for level in LEVELS}
        self.chunks_read = dict.fromkeys(LEVELS, 0)

    def draw(self, level: int) -> Problem:
        while True:
            for problem in self.chunks[level]:
                if problem.prompt not in self.exclude:
                    return problem
            self.chunks_read[level] += 1
            chunk_seed = 1000 + self.seed * 1_000_003 + level * 10_007 + self.chunks_read[level]
            self.chunks[level] = iter(synthetic_arithmetic(500, levels=(level,), seed=chunk_seed))


def completion_batch(
    tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str], completions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded `prompt + completion` token ids, their attention mask, and the completion mask (1 on the
    completion's tokens, which are the ones trained on)."""
    rows = [
        (tokenizer.encode(prompt), tokenizer.encode(completion))
        for prompt, completion in zip(prompts, completions, strict=True)
    ]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (p, c) in enumerate(rows):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        attention[row, : len(p) + len(c)] = 1
        completion_mask[row, len(p) : len(p) + len(c)] = 1
    return ids, attention, completion_mask


# ----------------------------------------------------------------------------- generation and scoring


@torch.no_grad()
def generate(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    *,
    temperature: float = 0.0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """Completions of `prompts`, greedy at temperature 0 else sampled (from torch's global generator), by
    batched `model.generate` over left-padded prompts as the rollout workers run it. A completion ends with
    its stop newline; `</s>` and padding are dropped."""
    model.eval()
    batch = tokenizer(list(prompts), padding=True, return_tensors="pt")
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def is_correct(problem: Problem, completion: str) -> bool:
    """The answer followed by the stop newline; a truncated answer ("10" for "103") is wrong."""
    return completion == problem.answer + STOP


def pass_rates(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    problems: Sequence[Problem],
    *,
    samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    batch: int = 1024,
) -> list[float]:
    """Per problem, the fraction of `samples` completions that are correct (greedy: 0 or 1)."""
    torch.manual_seed(seed)
    prompts = [problem.prompt for problem in problems for _ in range(samples)]
    completions = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        completions += generate(model, tokenizer, chunk, temperature=temperature)
    return [
        sum(is_correct(problem, c) for c in completions[i * samples : (i + 1) * samples]) / samples
        for i, problem in enumerate(problems)
    ]


def by_level(problems: Sequence[Problem], values: Sequence[float]) -> dict[int, float]:
    """Mean of `values` per level."""
    sums: dict[int, list[float]] = {}
    for problem, value in zip(problems, values, strict=True):
        sums.setdefault(problem.metadata["level"], []).append(value)
    return {level: sum(v) / len(v) for level, v in sorted(sums.items())}


def spread(rates: Sequence[float]) -> tuple[float, float, float]:
    """Fractions of problems with p <= 1/8 ("near 0"), 1/8 < p < 7/8 ("in between") and p >= 7/8 ("near 1")."""
    low = sum(p <= 0.125 for p in rates) / len(rates)
    high = sum(p >= 0.875 for p in rates) / len(rates)
    return low, 1 - low - high, high


def fmt_levels(accuracy: dict[int, float]) -> str:
    return " ".join(f"L{level} {value:.0%}" for level, value in accuracy.items())


# ----------------------------------------------------------------------------- training


def build_model(spec: Spec, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.ffn,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def train_step(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    optimizer: torch.optim.Optimizer,
    problems: list[Problem],
) -> float:
    """One AdamW step of cross-entropy on the completions `answer + "\\n" + </s>`; returns the loss."""
    model.train()
    ids, attention, completion = completion_batch(
        tokenizer, [p.prompt for p in problems], [p.answer + STOP + tokenizer.eos_token for p in problems]
    )
    loss = model(input_ids=ids, attention_mask=attention, labels=ids.masked_fill(completion == 0, -100)).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


class Run:
    """One model in training: its optimizer, data streams and level weights. `copy.deepcopy` forks it, as
    `main` does after the base phase: one fork becomes the teacher, the other the student."""

    def __init__(self, spec: Spec, tokenizer: PreTrainedTokenizerFast, *, seed: int, exclude: set[str]) -> None:
        self.name, self.spec, self.tokenizer, self.exclude, self.seed = spec.name, spec, tokenizer, exclude, seed
        self.model = build_model(spec, tokenizer, seed)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=spec.lr, weight_decay=0.1, betas=(0.9, 0.98))
        self.streams = LevelStreams(seed, exclude)
        self.monitor = synthetic_arithmetic(300, seed=MONITOR_SEED)
        self.rng = random.Random(seed)
        self.weights = [1.0] * len(LEVELS)
        self.steps = 0
        self.seconds = 0.0
        self.accuracy: dict[int, float] = {}

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _step(self, levels: list[int]) -> float:
        self.steps += 1
        return train_step(self.model, self.tokenizer, self.optimizer, [self.streams.draw(level) for level in levels])

    def _report(self, loss: float, started: float) -> None:
        """Greedy accuracy on the monitor problems; the levels are re-weighted by what is not learnt yet."""
        self.accuracy = by_level(self.monitor, pass_rates(self.model, self.tokenizer, self.monitor))
        self.weights = [1.1 - self.accuracy[level] for level in LEVELS]
        print(
            f"[{self.name}] step {self.steps:>5}  loss {loss:.3f}  greedy {fmt_levels(self.accuracy)}  "
            f"{self.seconds + time.perf_counter() - started:.0f}s",
            flush=True,
        )

    def base(self) -> None:
        """Warmup, then a cosine decay to lr/10 over `spec.steps`; levels re-weighted every ADAPT_EVERY steps."""
        spec, started = self.spec, time.perf_counter()
        params = sum(p.numel() for p in self.model.parameters())
        print(f"[{self.name}] {params:,} parameters; {spec.steps} steps of {spec.batch}, lr {spec.lr}", flush=True)
        loss = float("nan")
        for step in range(spec.steps):
            cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / spec.steps))
            self._set_lr(spec.lr * min(1.0, (step + 1) / spec.warmup) * cosine)
            loss = self._step(self.rng.choices(LEVELS, weights=self.weights, k=spec.batch))
            if (step + 1) % ADAPT_EVERY == 0 or step + 1 == spec.steps:
                self._report(loss, started)
        self.seconds += time.perf_counter() - started

    def until_accurate(self, until: float, max_steps: int) -> None:
        """Rounds of ADAPT_EVERY steps at lr/10 while a level's monitor accuracy is below `until`."""
        started, extra, loss = time.perf_counter(), 0, float("nan")
        self._set_lr(self.spec.lr * 0.1)
        while min(self.accuracy.values()) < until and extra < max_steps:
            for _ in range(ADAPT_EVERY):
                loss = self._step(self.rng.choices(LEVELS, weights=self.weights, k=self.spec.batch))
            extra += ADAPT_EVERY
            self._report(loss, started)
        self.seconds += time.perf_counter() - started

    def specialise(self, phase: Specialise, calibration: Sequence[Problem]) -> None:
        """See `Specialise`."""
        started, special, loss = time.perf_counter(), 0, float("nan")
        print(f"[{self.name}] specialising: {phase}", flush=True)
        self._set_lr(phase.lr)
        while special < phase.max_steps:
            for _ in range(phase.round_steps):
                loss = self._step(
                    [
                        self.rng.choice((3, 4, 5) if self.rng.random() < phase.hard_share else (1, 2))
                        for _ in range(self.spec.batch)
                    ]
                )
            special += phase.round_steps
            rates = pass_rates(
                self.model, self.tokenizer, calibration, samples=8, temperature=DEMO_TEMPERATURE, seed=special
            )
            low, mid, high = spread(rates)
            print(
                f"[{self.name}] specialised {special} steps: calibration split near 0 {low:.0%}, between "
                f"{mid:.0%}, near 1 {high:.0%}",
                flush=True,
            )
            if low >= phase.near0:
                break
        self._report(loss, started)
        self.seconds += time.perf_counter() - started


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    """Safetensors weights, config, a generation config that stops on the newline, and the tokenizer."""
    model.generation_config = GenerationConfig(
        eos_token_id=stop_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
    )
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


# ----------------------------------------------------------------------------- report


@dataclass
class Measured:
    """What the README reports about one trained model."""

    name: str
    spec: Spec
    steps: int
    parameters: int
    megabytes: float
    seconds: float
    pool_greedy: dict[int, float]
    heldout_greedy: dict[int, float]
    sampled: dict[int, float] | None = None
    sampled_spread: tuple[float, float, float] | None = None


def measure(
    run: Run, directory: Path, pool: Sequence[Problem], heldout: Sequence[Problem], *, sampled: bool
) -> Measured:
    model, tokenizer, name = run.model, run.tokenizer, run.name
    measured = Measured(
        name=name,
        spec=run.spec,
        steps=run.steps,
        parameters=sum(p.numel() for p in model.parameters()),
        megabytes=sum(f.stat().st_size for f in directory.iterdir()) / 2**20,
        seconds=run.seconds,
        pool_greedy=by_level(pool, pass_rates(model, tokenizer, pool)),
        heldout_greedy=by_level(heldout, pass_rates(model, tokenizer, heldout)),
    )
    print(f"[{name}] greedy, pool:     {fmt_levels(measured.pool_greedy)}", flush=True)
    print(f"[{name}] greedy, held-out: {fmt_levels(measured.heldout_greedy)}", flush=True)
    if sampled:
        rates = pass_rates(model, tokenizer, pool, samples=8, temperature=DEMO_TEMPERATURE)
        measured.sampled = by_level(pool, rates)
        measured.sampled_spread = spread(rates)
        low, mid, high = measured.sampled_spread
        print(
            f"[{name}] sampled pass rate (T={DEMO_TEMPERATURE}, 8 samples), pool: {fmt_levels(measured.sampled)}",
            flush=True,
        )
        print(f"[{name}] pool split: p<=1/8 {low:.0%}, between {mid:.0%}, p>=7/8 {high:.0%}", flush=True)
    return measured


def _row(label: str, values: dict[int, float]) -> str:
    return f"| {label} | " + " | ".join(f"{values[level]:.0%}" for level in LEVELS) + " |"


def readme(teacher: Measured, student: Measured, seed: int, total_seconds: float) -> str:
    low, mid, high = student.sampled_spread or (0.0, 0.0, 0.0)
    phase = STUDENT_SPECIALISE
    specs = "\n".join(
        f"| {m.name} | {m.spec.hidden} | {m.spec.layers} | {m.spec.heads} | {m.spec.ffn} | "
        f"{m.parameters:,} | {m.megabytes:.1f} MB | {m.steps} x {m.spec.batch} | {m.spec.lr:g} | "
        f"{m.seconds / 60:.1f} min |"
        for m in (teacher, student)
    )
    return f"""# Embedded models

The tiny teacher and student that `make demo` distils between (`embedded:teacher`, `embedded:student`;
`paced_core/embedded.py`). Generated by `scripts/train_embedded.py`; do not edit by hand.

Both are `LlamaForCausalLM` trained from scratch on `paced_core.tasks.synthetic_arithmetic`, with a
character-level tokenizer (`PreTrainedTokenizerFast`, one token per character of `SYNTHETIC_ALPHABET` plus
`<pad> <s> </s> <unk>`; no BOS is added, so a prompt is exactly its characters). A problem is the prompt
followed by the completion `answer + "\\n"`, then `</s>`; the generation config stops on the newline or
`</s>`. Loss: cross-entropy on the completion tokens; AdamW, warmup then cosine decay, gradient clipping
at 1. Every {ADAPT_EVERY} steps the levels are re-weighted in proportion to 1.1 minus their greedy accuracy
on 60 monitor problems each, so the data follows what is not learnt yet.

| model | hidden | layers | heads | ffn | parameters | on disk | steps x batch | lr | training time |
|---|---|---|---|---|---|---|---|---|---|
{specs}

Both share one base run ({BASE.steps} steps; it never sees a problem of `synthetic_arithmetic(2500, seed=0)`,
the demo's pool and held-out set), then fork. The teacher, the oracle, trains on at lr/10 on every problem
(the demo's included; a level such as 2-digit x digit has only 900), in rounds of {ADAPT_EVERY} steps, while
a level's monitor accuracy is below {TEACHER_UNTIL:.0%} (at most {TEACHER_EXTRA_STEPS} steps). The student
specialises at lr {phase.lr:g} on batches from levels 1-2 ({phase.hard_share:.0%} of problems from levels 3-5),
in rounds of {phase.round_steps} steps, until at least {phase.near0:.0%} of the first 400 pool problems have a
sampled pass rate <= 1/8 (at most {phase.max_steps} steps). It partly forgets levels 3-5, which distillation then
brings back quickly, and so starts with pass rates spread from 0 to 1.

## Measured accuracy

Pool: `synthetic_arithmetic(2000, seed=0)`; held-out: the next 500 problems of the same seed. Greedy
decoding; "sampled" is the mean pass rate of 8 samples per problem at temperature {DEMO_TEMPERATURE}, the demo's
rollout temperature.

| | L1 | L2 | L3 | L4 | L5 |
|---|---|---|---|---|---|
{_row("teacher, greedy, pool", teacher.pool_greedy)}
{_row("teacher, greedy, held-out", teacher.heldout_greedy)}
{_row("student, greedy, pool", student.pool_greedy)}
{_row("student, greedy, held-out", student.heldout_greedy)}
{_row("student, sampled, pool", student.sampled or {})}

Student pass rates over the pool (8 samples, temperature {DEMO_TEMPERATURE}): {low:.0%} near 0 (p <= 1/8), {mid:.0%} in
between, {high:.0%} near 1 (p >= 7/8).

## Retrain

    .venv/bin/python scripts/train_embedded.py --seed {seed}

took {total_seconds / 60:.1f} minutes in all on 2 CPU cores (torch {torch.__version__}, {torch.get_num_threads()}
threads). The same seed, torch version and thread count give the same weights. `scripts/check_distill.py`
checks that the student gains held-out accuracy from a few minutes of on-policy distillation.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the embedded teacher and student (see the module docstring).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="a file to keep the base run in: loaded if it exists (same seed), else written after training it",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    tokenizer = build_tokenizer()
    for text in (SYNTHETIC_ALPHABET, "47+33=80\n"):
        if tokenizer.decode(tokenizer.encode(text)) != text:
            raise RuntimeError(f"tokenizer does not round-trip {text!r}")
    demo = synthetic_arithmetic(DEMO_PROBLEMS, seed=0)
    pool, heldout = demo[:2000], demo[2000:]

    if args.base is not None and args.base.is_file():
        base = torch.load(args.base, weights_only=False)  # our own file: the Run object this script saved
        if base.seed != args.seed:
            raise SystemExit(f"--base {args.base} holds the base run of seed {base.seed}, not {args.seed}")
        print(f"[base] loaded from {args.base} ({base.steps} steps, {base.seconds:.0f}s of training)", flush=True)
        started -= base.seconds  # the total below counts the base run's training time too
    else:
        base = Run(BASE, tokenizer, seed=args.seed, exclude={p.prompt for p in demo})
        base.base()
        if args.base is not None:
            torch.save(base, args.base)
    teacher, student = copy.deepcopy(base), base
    teacher.name, student.name = "teacher", "student"
    results = {}
    student.specialise(STUDENT_SPECIALISE, calibration=pool[:400])
    save(student.model, tokenizer, args.out / "student")
    results["student"] = measure(student, args.out / "student", pool, heldout, sampled=True)
    # The teacher is the oracle: from here on it also trains on the demo's problems (a level such as
    # 2-digit x digit has only 900 problems, and the base run never saw the demo's share of them).
    teacher.streams = LevelStreams(args.seed + 1, exclude=set())
    teacher.until_accurate(TEACHER_UNTIL, TEACHER_EXTRA_STEPS)
    save(teacher.model, tokenizer, args.out / "teacher")
    results["teacher"] = measure(teacher, args.out / "teacher", pool, heldout, sampled=False)
    total = time.perf_counter() - started
    (args.out / "README.md").write_text(readme(results["teacher"], results["student"], args.seed, total))
    print(f"wrote {args.out} in {total / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
