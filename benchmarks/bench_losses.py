"""Chunked vs unchunked forward KL, forward + backward, at (B=8, T=512, V=32,000) in float32: over
the full vocabulary, and against a teacher known by its top-64 log-probs (`topk_divergence`).

Unchunked is the same function with chunk_size=None (one chunk holding every token). Peak memory is
measured per variant in a fresh process as the rise of peak RSS above the inputs (logits already
allocated), so it includes the [B, T, V] gradient both variants must return. Both children run with
a fixed glibc mmap threshold (MALLOC_MMAP_THRESHOLD_=1 MiB): glibc's default threshold adapts
upward and then keeps freed chunk buffers in its heap, which measures the allocator's caching rather
than what the loss needs live. Time is the median of alternating runs of both variants in this
process, so the ratio comes from one run.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from paced_core.losses import DEFAULT_CHUNK, forward_kl, topk_divergence, topk_logprobs

B, T, V, K = 8, 512, 32_000, 64


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(B, T, V, generator=gen).mul_(3).requires_grad_()
    t = torch.randn(B, T, V, generator=gen).mul_(3)
    return s, t


def _loss(s: torch.Tensor, t, chunk: int | None) -> torch.Tensor:
    """Full-vocabulary forward KL when `t` is teacher logits; top-k when it is (ids, log-probs)."""
    if isinstance(t, tuple):
        return topk_divergence(s, *t, kind="forward_kl", chunk_size=chunk)
    return forward_kl(s, t, chunk_size=chunk)


def _step(s: torch.Tensor, t, chunk: int | None) -> None:
    s.grad = None
    _loss(s, t, chunk).mean().backward()


def _topk_inputs() -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Student logits and the teacher's top-K view, built a few rows at a time so the full teacher
    logits never exist (the memory baseline stays the student's logits)."""
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(B, T, V, generator=gen).mul_(3).requires_grad_()
    rows = 64  # 8 MB of teacher logits at a time
    views = [topk_logprobs(torch.randn(rows, V, generator=gen).mul_(3), K) for _ in range(B * T // rows)]
    ids = torch.cat([i for i, _ in views]).reshape(B, T, K)
    return s, (ids, torch.cat([lp for _, lp in views]).reshape(B, T, K))


def _peak_rss_mb(chunk: int | None, topk: bool = False) -> float:
    """Run in a child process: peak RSS rise (MB) caused by one forward + backward."""
    s, t = _topk_inputs() if topk else _inputs()
    with open("/proc/self/statm") as statm:  # current RSS, not the peak reached while building inputs
        base = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 <= base + 64, "inputs left a higher peak"
    _loss(s, t, chunk).mean().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base


def _measure_memory(chunk: int | None, topk: bool = False) -> float:
    code = (
        "import json; from benchmarks.bench_losses import _peak_rss_mb; "
        f"print(json.dumps(_peak_rss_mb({chunk}, topk={topk})))"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe (chunk={chunk}, topk={topk}) failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _times(topk: bool) -> tuple[float, float]:
    """(median s chunked, median s unchunked) for one loss, alternating the variants."""
    s, t = _topk_inputs() if topk else _inputs()
    times: dict[int | None, list[float]] = {DEFAULT_CHUNK: [], None: []}
    _step(s, t, DEFAULT_CHUNK)  # warm-up
    for _ in range(3):
        for chunk in (DEFAULT_CHUNK, None):
            start = time.perf_counter()
            _step(s, t, chunk)
            times[chunk].append(time.perf_counter() - start)
    return statistics.median(times[DEFAULT_CHUNK]), statistics.median(times[None])


def run() -> list[dict]:
    # Memory first, while this process is small: a child's peak RSS starts from its parent's at fork.
    memory = {topk: (_measure_memory(DEFAULT_CHUNK, topk), _measure_memory(None, topk)) for topk in (False, True)}
    rows = []
    # Top-k: the unchunked version builds [N, k + 1] buckets from one [N, V] pass, so its peak is lower
    # than the full divergence's and the ratio target is looser.
    for label, topk, shape, mem_target in (
        ("forward KL", False, f"B={B}, T={T}, V={V}, chunk={DEFAULT_CHUNK}", 0.25),
        ("top-k forward KL", True, f"B={B}, T={T}, V={V}, k={K}, chunk={DEFAULT_CHUNK}", 0.5),
    ):
        (mem_chunked, mem_full), (t_chunked, t_full) = memory[topk], _times(topk)
        mem_ratio, time_ratio = mem_chunked / mem_full, t_chunked / t_full
        rows += [
            {"name": f"{label} fwd+bwd peak memory, chunked / unchunked ({shape})", "value": mem_ratio,
             "unit": f"x ({mem_chunked:.0f} MB vs {mem_full:.0f} MB)", "target": f"<= {mem_target}",
             "ok": mem_ratio <= mem_target},
            {"name": f"{label} fwd+bwd time, chunked / unchunked ({shape})", "value": time_ratio,
             "unit": f"x ({t_chunked:.2f} s vs {t_full:.2f} s)", "target": "<= 1.3", "ok": time_ratio <= 1.3},
        ]  # fmt: skip
    return rows
