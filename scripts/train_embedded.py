"""Train the embedded teacher and student from scratch on CPU and write them into the package.

    python scripts/train_embedded.py            # about 15 minutes on 2 CPU cores

Both models are `LlamaForCausalLM` with a character-level tokenizer over `SYNTHETIC_ALPHABET`, trained by
plain next-token cross-entropy on the completion `answer + "\\n" + </s>` after the bare prompt ("47+33=").
The teacher trains until it is accurate on every level of `synthetic_arithmetic`; the student is smaller and
stops early, so its pass rates spread from 0 to 1: the regime where p(1 - p) weighting matters.

Training problems come from `synthetic_arithmetic` with seeds that never collide with the demo's
(`DEMO_PROBLEMS`: seed 0). The student never sees a demo problem, so the demo's pool and held-out set are
new to it; the teacher, the oracle, may have seen some. Everything is seeded: the same seed, torch version
and thread count give the same weights.

Writes `paced_core/data/embedded/{teacher,student}/` (safetensors, config, generation config, tokenizer)
and `paced_core/data/embedded/README.md` with sizes, timings and the measured accuracies.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from paced_core.tasks import SYNTHETIC_ALPHABET, Problem, synthetic_arithmetic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "paced_core" / "data" / "embedded"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
STOP = "\n"  # ends every answer; generation stops on it (or on </s>, which follows it in training)
MAX_NEW_TOKENS = 8  # the longest answer, "-178\n", is 5 tokens
LEVELS = (1, 2, 3, 4, 5)

DEMO_PROBLEMS = 2500
"""`synthetic_arithmetic(DEMO_PROBLEMS, seed=0)` holds the demo's pool (2200, held-out included) and
`scripts/check_distill.py`'s pool (the first 2000) and held-out set (the next 500)."""


@dataclass(frozen=True)
class Spec:
    """One model and its training run. `level_weights[i]` is the share of level i + 1 in the data: the
    harder levels get more of it, since level 1 is learnt early."""

    name: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    steps: int
    batch: int
    lr: float
    level_weights: tuple[float, ...] = (1, 2, 2, 2, 3)
    warmup: int = 200


TEACHER = Spec("teacher", hidden=96, layers=4, heads=4, ffn=384, steps=9000, batch=128, lr=5e-3)
STUDENT = Spec("student", hidden=64, layers=3, heads=4, ffn=256, steps=2500, batch=128, lr=5e-3)


# ----------------------------------------------------------------------------- tokenizer


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of `SYNTHETIC_ALPHABET` plus the special tokens; decoding joins the characters
    back without spaces, so `decode(encode(s)) == s` for every alphabet string. No BOS is added: a prompt
    is exactly its characters, as the rollout workers tokenize it."""
    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *SYNTHETIC_ALPHABET))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    pad, bos, eos, unk = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        padding_side="left",
        model_max_length=64,
    )


def stop_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Token ids that end a completion: the newline and </s>."""
    return [tokenizer.convert_tokens_to_ids(STOP), tokenizer.eos_token_id]


# ----------------------------------------------------------------------------- data


def problem_stream(seed: int, level_weights: Sequence[float], exclude: set[str]) -> Iterator[Problem]:
    """An endless, seeded stream of training problems, levels drawn by `level_weights`, skipping `exclude`
    prompts. Each level is read in chunks of distinct problems from `synthetic_arithmetic` with its own
    seeds, all >= 1000 so that none is the demo's seed 0."""
    rng = random.Random(seed)
    chunks: dict[int, Iterator[Problem]] = {level: iter(()) for level in LEVELS}
    drawn = dict.fromkeys(LEVELS, 0)
    while True:
        level = rng.choices(LEVELS, weights=level_weights)[0]
        for problem in chunks[level]:
            if problem.prompt not in exclude:
                yield problem
                break
        else:
            drawn[level] += 1
            chunk_seed = 1000 + seed * 1_000_003 + level * 10_007 + drawn[level]
            chunks[level] = iter(synthetic_arithmetic(500, levels=(level,), seed=chunk_seed))


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


def train(
    spec: Spec,
    tokenizer: PreTrainedTokenizerFast,
    *,
    seed: int,
    exclude: set[str],
    monitor: Sequence[Problem],
    log_every: int = 500,
) -> LlamaForCausalLM:
    """Cross-entropy on the completion tokens, AdamW, linear warmup then cosine decay to lr/10."""
    model = build_model(spec, tokenizer, seed)
    params = sum(p.numel() for p in model.parameters())
    print(f"[{spec.name}] {params:,} parameters; {spec.steps} steps of {spec.batch}, lr {spec.lr}", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0, betas=(0.9, 0.98))
    stream = problem_stream(seed, spec.level_weights, exclude)
    started = time.perf_counter()
    for step in range(spec.steps):
        model.train()
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / spec.steps))
        for group in optimizer.param_groups:
            group["lr"] = spec.lr * min(1.0, (step + 1) / spec.warmup) * cosine
        problems = [next(stream) for _ in range(spec.batch)]
        ids, attention, completion = completion_batch(
            tokenizer, [p.prompt for p in problems], [p.answer + STOP + tokenizer.eos_token for p in problems]
        )
        labels = ids.masked_fill(completion == 0, -100)
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0 or step + 1 == spec.steps:
            accuracy = by_level(monitor, pass_rates(model, tokenizer, monitor))
            print(
                f"[{spec.name}] step {step + 1:>5}  loss {loss.item():.3f}  greedy {fmt_levels(accuracy)}  "
                f"{time.perf_counter() - started:.0f}s",
                flush=True,
            )
    return model


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

    spec: Spec
    parameters: int
    megabytes: float
    seconds: float
    pool_greedy: dict[int, float]
    heldout_greedy: dict[int, float]
    sampled: dict[int, float] | None = None
    sampled_spread: tuple[float, float, float] | None = None


def measure(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    spec: Spec,
    seconds: float,
    directory: Path,
    pool: Sequence[Problem],
    heldout: Sequence[Problem],
    *,
    sampled: bool,
) -> Measured:
    measured = Measured(
        spec=spec,
        parameters=sum(p.numel() for p in model.parameters()),
        megabytes=sum(f.stat().st_size for f in directory.iterdir()) / 2**20,
        seconds=seconds,
        pool_greedy=by_level(pool, pass_rates(model, tokenizer, pool)),
        heldout_greedy=by_level(heldout, pass_rates(model, tokenizer, heldout)),
    )
    print(f"[{spec.name}] greedy, pool:     {fmt_levels(measured.pool_greedy)}", flush=True)
    print(f"[{spec.name}] greedy, held-out: {fmt_levels(measured.heldout_greedy)}", flush=True)
    if sampled:
        rates = pass_rates(model, tokenizer, pool, samples=8, temperature=1.0)
        measured.sampled = by_level(pool, rates)
        measured.sampled_spread = spread(rates)
        low, mid, high = measured.sampled_spread
        print(f"[{spec.name}] sampled pass rate (T=1, 8 samples), pool: {fmt_levels(measured.sampled)}", flush=True)
        print(f"[{spec.name}] pool split: p<=1/8 {low:.0%}, between {mid:.0%}, p>=7/8 {high:.0%}", flush=True)
    return measured


def _row(label: str, values: dict[int, float]) -> str:
    return f"| {label} | " + " | ".join(f"{values[level]:.0%}" for level in LEVELS) + " |"


def readme(teacher: Measured, student: Measured, seed: int, total_seconds: float) -> str:
    low, mid, high = student.sampled_spread or (0.0, 0.0, 0.0)
    specs = "\n".join(
        f"| {m.spec.name} | {m.spec.hidden} | {m.spec.layers} | {m.spec.heads} | {m.spec.ffn} | "
        f"{m.parameters:,} | {m.megabytes:.1f} MB | {m.spec.steps} x {m.spec.batch} | {m.spec.lr:g} | "
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
at 1; the harder levels are drawn more often (weights 1, 2, 2, 2, 3 for levels 1 to 5).

| model | hidden | layers | heads | ffn | parameters | on disk | steps x batch | lr | training time |
|---|---|---|---|---|---|---|---|---|---|
{specs}

The teacher is trained until accurate on every level. The student is smaller and stops early, never sees a
problem of `synthetic_arithmetic(2500, seed=0)` (the demo's pool and held-out set), and so starts with pass
rates spread from 0 to 1.

## Measured accuracy

Pool: `synthetic_arithmetic(2000, seed=0)`; held-out: the next 500 problems of the same seed. Greedy
decoding; "sampled" is the mean pass rate of 8 samples per problem at temperature 1.0.

| | L1 | L2 | L3 | L4 | L5 |
|---|---|---|---|---|---|
{_row("teacher, greedy, pool", teacher.pool_greedy)}
{_row("teacher, greedy, held-out", teacher.heldout_greedy)}
{_row("student, greedy, pool", student.pool_greedy)}
{_row("student, greedy, held-out", student.heldout_greedy)}
{_row("student, sampled, pool", student.sampled or {})}

Student pass rates over the pool (8 samples, temperature 1.0): {low:.0%} near 0 (p <= 1/8), {mid:.0%} in
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
    args = parser.parse_args()

    started = time.perf_counter()
    tokenizer = build_tokenizer()
    for text in (SYNTHETIC_ALPHABET, "47+33=80\n"):
        if tokenizer.decode(tokenizer.encode(text)) != text:
            raise RuntimeError(f"tokenizer does not round-trip {text!r}")
    demo = synthetic_arithmetic(DEMO_PROBLEMS, seed=0)
    pool, heldout = demo[:2000], demo[2000:]
    monitor = [p for level in LEVELS for p in [q for q in heldout if q.metadata["level"] == level][:40]]

    results = {}
    for spec, exclude in ((TEACHER, set()), (STUDENT, {p.prompt for p in demo})):
        spec_started = time.perf_counter()
        model = train(spec, tokenizer, seed=args.seed, exclude=exclude, monitor=monitor)
        seconds = time.perf_counter() - spec_started
        directory = args.out / spec.name
        save(model, tokenizer, directory)
        results[spec.name] = measure(model, tokenizer, spec, seconds, directory, pool, heldout, sampled=spec is STUDENT)
    total = time.perf_counter() - started
    (args.out / "README.md").write_text(readme(results["teacher"], results["student"], args.seed, total))
    print(f"wrote {args.out} in {total / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
