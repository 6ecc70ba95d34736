"""GPU check: the learner step, the `hf` sampler and weight publishing at production shapes.

    python -m benchmarks.gpu_check                 # on a GPU: Qwen2.5-1.5B student, Qwen2.5-7B teacher
    python -m benchmarks.gpu_check --tiny          # anywhere (CPU too): the same code at toy shapes
    python -m benchmarks.gpu_check --json out.json --batch 8 --seq 2048

Needs torch and transformers only (no Ray, no Redis): models are built from `transformers` configs
written here, with random weights, in bf16. It measures

- **learner step**: what `services.learner.Learner.train_step` does per step: teacher forward (no grad)
  and student forward over prompt + completion, logits for the completion positions only, reverse KL
  over the full vocabulary in chunks (`paced_core.losses.reverse_kl`), backward, gradient clipping,
  AdamW. Tokens/s counts every token of the batch (B x T). MFU = achieved FLOP/s / the card's dense
  bf16 peak, with FLOPs per step (PaLM's accounting; N = non-embedding parameters, L layers, d width,
  V vocabulary, C completion tokens per sequence):

      student (fwd + bwd)  6 N_s B T + 12 L_s d_s T B T + 6 V d_s B C
      teacher (fwd)        2 N_t B T +  4 L_t d_t T B T + 2 V d_t B C

- **hf sampler**: `generate` with sampling at each batch size in `--sample-batches`, every sequence
  forced to `--new-tokens` new tokens; generated tokens/s.
- **publish**: what the driver's weight publish costs: the student's state dict copied to CPU
  (`Learner.weights`), then serialized (safetensors bytes, as an object-store put copies them).

Prints the results as JSON, then markdown rows for BENCHMARKS.md. A section that runs out of GPU
memory is reported as such (with its shapes) and the others still run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config

from paced_core.losses import reduce, reverse_kl

# Dense bf16 peak (no sparsity) by device-name substring, in FLOP/s. Others: pass --peak-tflops.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def qwen25_config(size: str) -> Qwen2Config:
    """The published shapes of Qwen2.5-1.5B / -7B, and a toy one (`tiny`) for CPU tests."""
    shapes = {
        "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                     num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
        "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                   num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
        "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    }  # fmt: skip
    return Qwen2Config(max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, **shapes[size])


@dataclass(frozen=True)
class Shapes:
    student: str
    teacher: str
    batch: int
    seq: int
    prompt: int
    chunk: int
    sample_batches: tuple[int, ...]
    sample_prompt: int
    new_tokens: int


FULL = Shapes("1.5b", "7b", batch=8, seq=2048, prompt=256, chunk=128, sample_batches=(64, 256), sample_prompt=128,
              new_tokens=256)  # fmt: skip
TINY = Shapes("tiny", "tiny", batch=2, seq=48, prompt=16, chunk=16, sample_batches=(4, 8), sample_prompt=8,
              new_tokens=8)  # fmt: skip


def build(size: str, device: str, dtype: torch.dtype, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(qwen25_config(size), dtype=dtype)
    return model


def non_embedding_params(model: PreTrainedModel) -> int:
    """Parameters of the transformer body: all but the input embedding and the LM head."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def step_flops(student: PreTrainedModel, teacher: PreTrainedModel, batch: int, seq: int, completion: int) -> float:
    """FLOPs of one learner step (see the module docstring)."""

    def cost(model: PreTrainedModel, passes: int) -> float:
        c = model.config
        n, layers, d, vocab = non_embedding_params(model), c.num_hidden_layers, c.hidden_size, c.vocab_size
        return passes * (n * batch * seq + 2 * layers * d * seq * batch * seq + vocab * d * batch * completion)

    return cost(student, 6) + cost(teacher, 2)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> float:
    """Median seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def learner_step(shapes: Shapes, device: str, dtype: torch.dtype, repeats: int, peak: float | None) -> dict:
    student = build(shapes.student, device, dtype, seed=0).train()
    teacher = build(shapes.teacher, device, dtype, seed=1).eval().requires_grad_(False)
    vocab = min(student.config.vocab_size, teacher.config.vocab_size)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-6)
    completion = shapes.seq - shapes.prompt
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab, (shapes.batch, shapes.seq), generator=gen).to(device)
    mask = torch.ones(shapes.batch, completion, device=device)

    def step() -> None:
        # Logits for the completion positions only (the last C + 1 predict the C completion tokens).
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, logits_to_keep=completion + 1).logits[:, :-1, :vocab]
        s_logits = student(input_ids=ids, logits_to_keep=completion + 1).logits[:, :-1, :vocab]
        loss = reduce(reverse_kl(s_logits, t_logits, mask, chunk_size=shapes.chunk), mask, mode="sample")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()

    reset_peak(device)
    seconds = timed(step, device, warmup=1, repeats=repeats)
    flops = step_flops(student, teacher, shapes.batch, shapes.seq, completion)
    tokens = shapes.batch * shapes.seq
    return {
        "batch": shapes.batch,
        "seq": shapes.seq,
        "completion": completion,
        "step_s": seconds,
        "tokens_per_s": tokens / seconds,
        "tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "student_params": sum(p.numel() for p in student.parameters()),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "peak_memory_gib": peak_memory_gib(device),
    }


def sampler(shapes: Shapes, batch: int, device: str, dtype: torch.dtype, repeats: int) -> dict:
    model = build(shapes.student, device, dtype, seed=0).eval()
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, shapes.sample_prompt), generator=gen).to(device)

    def run() -> None:
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                max_new_tokens=shapes.new_tokens,
                min_new_tokens=shapes.new_tokens,  # random weights: no early stop, every sequence full length
                pad_token_id=0,
            )

    reset_peak(device)
    seconds = timed(run, device, warmup=1, repeats=repeats)
    return {
        "batch": batch,
        "prompt": shapes.sample_prompt,
        "new_tokens": shapes.new_tokens,
        "seconds": seconds,
        "tokens_per_s": batch * shapes.new_tokens / seconds,
        "peak_memory_gib": peak_memory_gib(device),
    }


def publish(shapes: Shapes, device: str, dtype: torch.dtype, repeats: int) -> dict:
    model = build(shapes.student, device, dtype, seed=0)
    cpu_state: dict[str, torch.Tensor] = {}

    def to_cpu() -> None:
        cpu_state.clear()
        cpu_state.update({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

    to_cpu_s = timed(to_cpu, device, warmup=1, repeats=repeats)
    # safetensors refuses tensors that share storage (tied embeddings): serialize each storage once.
    unique = {k: v for k, v in cpu_state.items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
    blob = b""

    def serialize() -> None:
        nonlocal blob
        blob = save(unique)

    serialize_s = timed(serialize, "cpu", warmup=0, repeats=repeats)
    return {
        "gib": len(blob) / 2**30,
        "state_dict_to_cpu_s": to_cpu_s,
        "serialize_s": serialize_s,
        "total_s": to_cpu_s + serialize_s,
    }


def guarded(name: str, fn: Callable[[], dict]) -> dict:
    """Run one section; out-of-memory on the GPU is a result (with the shapes tried), not a crash."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError as err:
        return {"error": f"{name}: CUDA out of memory ({str(err).splitlines()[0]})"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def markdown_rows(result: dict) -> list[str]:
    """Rows for BENCHMARKS.md: | what | value | shapes |."""
    rows = ["| gpu check | value | shapes |", "|---|---|---|"]
    learner = result["learner"]
    if "error" in learner:
        rows.append(f"| learner step | {learner['error']} | |")
    else:
        mfu = f", MFU {learner['mfu']:.1%}" if learner["mfu"] is not None else ""
        rows.append(
            f"| learner step | {learner['tokens_per_s']:,.0f} tokens/s ({learner['tflops_per_s']:.1f} TFLOP/s{mfu}) "
            f"| student {result['shapes']['student']}, teacher {result['shapes']['teacher']}, "
            f"B={learner['batch']} T={learner['seq']} (C={learner['completion']}) |"
        )
    for s in result["sampler"]:
        value = s["error"] if "error" in s else f"{s['tokens_per_s']:,.0f} generated tokens/s"
        rows.append(f"| hf sampler | {value} | batch {s['batch']}, {result['shapes']['new_tokens']} new tokens |")
    p = result["publish"]
    value = (
        p["error"]
        if "error" in p
        else f"{p['total_s']:.2f} s ({p['state_dict_to_cpu_s']:.2f} to CPU + {p['serialize_s']:.2f} serialize, "
        f"{p['gib']:.2f} GiB)"
    )
    rows.append(f"| publish weights | {value} | student {result['shapes']['student']} |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy shapes: runs on CPU in seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="learner sequences per step (default 8; tiny 2)")
    parser.add_argument("--seq", type=int, help="learner tokens per sequence (default 2048; tiny 48)")
    parser.add_argument("--sample-batches", type=int, nargs="+", help="sampler batch sizes (default 64 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (median)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not in PEAK_BF16")
    parser.add_argument("--json", help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    shapes = TINY if args.tiny else FULL
    overrides = {"batch": args.batch, "seq": args.seq}
    if args.sample_batches:
        overrides["sample_batches"] = tuple(args.sample_batches)
    shapes = Shapes(**{**shapes.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    if shapes.seq <= shapes.prompt:
        parser.error(f"--seq ({shapes.seq}) must exceed the prompt length ({shapes.prompt})")
    device, dtype = args.device, torch.bfloat16
    name = device_name(device)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK_BF16.items() if k in name), None)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    result = {
        "device": name,
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "peak_tflops": peak / 1e12 if peak else None,
        "shapes": shapes.__dict__,
        "learner": guarded("learner", lambda: learner_step(shapes, device, dtype, args.repeats, peak)),
        "sampler": [
            {"batch": b, **guarded(f"sampler batch {b}", lambda b=b: sampler(shapes, b, device, dtype, args.repeats))}
            for b in shapes.sample_batches
        ],
        "publish": guarded("publish", lambda: publish(shapes, device, dtype, args.repeats)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print("\n".join(markdown_rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
