"""Chunked vs unchunked forward KL, forward + backward, at (B=8, T=512, V=32,000) in float32.

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

from paced_core.losses import DEFAULT_CHUNK, forward_kl

B, T, V = 8, 512, 32_000


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(B, T, V, generator=gen).mul_(3).requires_grad_()
    t = torch.randn(B, T, V, generator=gen).mul_(3)
    return s, t


def _step(s: torch.Tensor, t: torch.Tensor, chunk: int | None) -> None:
    s.grad = None
    forward_kl(s, t, chunk_size=chunk).mean().backward()


def _peak_rss_mb(chunk: int | None) -> float:
    """Run in a child process: peak RSS rise (MB) caused by one forward + backward."""
    s, t = _inputs()
    with open("/proc/self/statm") as statm:  # current RSS, not the peak reached while building inputs
        base = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 <= base + 64, "inputs left a higher peak"
    forward_kl(s, t, chunk_size=chunk).mean().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base


def _measure_memory(chunk: int | None) -> float:
    code = f"import json; from benchmarks.bench_losses import _peak_rss_mb; print(json.dumps(_peak_rss_mb({chunk})))"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def run() -> list[dict]:
    mem_chunked = _measure_memory(DEFAULT_CHUNK)
    mem_full = _measure_memory(None)
    s, t = _inputs()
    times: dict[int | None, list[float]] = {DEFAULT_CHUNK: [], None: []}
    _step(s, t, DEFAULT_CHUNK)  # warm-up
    for _ in range(3):
        for chunk in (DEFAULT_CHUNK, None):
            start = time.perf_counter()
            _step(s, t, chunk)
            times[chunk].append(time.perf_counter() - start)
    t_chunked, t_full = statistics.median(times[DEFAULT_CHUNK]), statistics.median(times[None])
    mem_ratio, time_ratio = mem_chunked / mem_full, t_chunked / t_full
    shape = f"B={B}, T={T}, V={V}, chunk={DEFAULT_CHUNK}"
    return [
        {"name": f"forward KL fwd+bwd peak memory, chunked / unchunked ({shape})", "value": mem_ratio,
         "unit": f"x ({mem_chunked:.0f} MB vs {mem_full:.0f} MB)", "target": "<= 0.25", "ok": mem_ratio <= 0.25},
        {"name": f"forward KL fwd+bwd time, chunked / unchunked ({shape})", "value": time_ratio,
         "unit": f"x ({t_chunked:.2f} s vs {t_full:.2f} s)", "target": "<= 1.3", "ok": time_ratio <= 1.3},
    ]  # fmt: skip
