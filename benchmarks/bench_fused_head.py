"""The fused LM head (`paced_core.losses.Projected`) against logits made first, forward + backward of forward
KL with the student's head trained, float32 on CPU at H=256, V=32,000, chunk 128.

"Logits" is what a model's LM head does: student logits hidden @ W_s.T [tokens, V] with their graph,
teacher logits under no_grad, then the chunked divergence (which itself holds only a chunk). "Fused"
passes hidden states and head weights instead. Peak memory is measured in a fresh process per point
as the rise of peak RSS (VmHWM, reset with /proc/self/clear_refs) above the inputs, under a fixed glibc
mmap threshold as in `bench_losses`. The rows give how much the peak grows when the tokens grow 4x
(the logits path by [tokens, V] tensors, the fused one by [tokens, H] ones) and the time ratio, both
measured in one run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from paced_core.losses import DEFAULT_CHUNK, Projected, forward_kl

HIDDEN, VOCAB = 256, 32_000
TOKENS = (1024, 4096)


def _inputs(tokens: int, vocab: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    hs = torch.randn(tokens, HIDDEN, generator=gen).requires_grad_()
    ws = torch.randn(vocab, HIDDEN, generator=gen).mul_(HIDDEN**-0.5).requires_grad_()
    ht = torch.randn(tokens, HIDDEN, generator=gen)
    wt = torch.randn(vocab, HIDDEN, generator=gen).mul_(HIDDEN**-0.5)
    return hs, ws, ht, wt


def _step(hs, ws, ht, wt, fused: bool) -> None:
    if fused:
        loss = forward_kl(Projected(hs, ws), Projected(ht, wt), chunk_size=DEFAULT_CHUNK)
    else:
        with torch.no_grad():
            teacher = ht @ wt.T
        loss = forward_kl(hs @ ws.T, teacher, chunk_size=DEFAULT_CHUNK)
    loss.mean().backward()


def _status_mb(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def _child(tokens: int, vocab: int, fused: bool) -> float:
    """In the child: peak RSS rise (MB) of one forward + backward above the inputs."""
    inputs = _inputs(tokens, vocab)
    Path("/proc/self/clear_refs").write_text("5")  # the peak so far becomes the current RSS
    base = _status_mb("VmRSS")
    _step(*inputs, fused)
    return _status_mb("VmHWM") - base


def peak_rss_mb(tokens: int, vocab: int = VOCAB, fused: bool = True) -> float:
    """Peak RSS rise (MB) of one fused or logits-first forward + backward, in a fresh process."""
    code = (
        "import json; from benchmarks.bench_fused_head import _child; "
        f"print(json.dumps(_child({tokens}, {vocab}, {fused})))"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe (tokens={tokens}, fused={fused}) failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _times(tokens: int) -> tuple[float, float]:
    """(median s fused, median s logits-first), the variants alternating."""
    inputs = _inputs(tokens, VOCAB)
    times: dict[bool, list[float]] = {True: [], False: []}
    _step(*inputs, True)  # warm-up
    for _ in range(3):
        for fused in (True, False):
            for x in inputs[:2]:
                x.grad = None
            start = time.perf_counter()
            _step(*inputs, fused)
            times[fused].append(time.perf_counter() - start)
    return statistics.median(times[True]), statistics.median(times[False])


def run() -> list[dict]:
    small, large = TOKENS
    peaks = {(n, fused): peak_rss_mb(n, VOCAB, fused) for n in TOKENS for fused in (True, False)}
    growth_fused = peaks[(large, True)] - peaks[(small, True)]
    growth_logits = peaks[(large, False)] - peaks[(small, False)]
    t_fused, t_logits = _times(large)
    shape = f"H={HIDDEN}, V={VOCAB}, chunk={DEFAULT_CHUNK}"
    return [
        {"name": f"fused head: peak growth {small} -> {large} tokens, fused / logits-first ({shape})",
         "value": growth_fused / growth_logits,
         "unit": f"x ({growth_fused:.0f} MB vs {growth_logits:.0f} MB)", "target": "<= 0.05",
         "ok": growth_fused / growth_logits <= 0.05},
        {"name": f"fused head: peak at {large} tokens, fused / logits-first ({shape})",
         "value": peaks[(large, True)] / peaks[(large, False)],
         "unit": f"x ({peaks[(large, True)]:.0f} MB vs {peaks[(large, False)]:.0f} MB)", "target": "<= 0.25",
         "ok": peaks[(large, True)] / peaks[(large, False)] <= 0.25},
        {"name": f"fused head: fwd+bwd time at {large} tokens, fused / logits-first ({shape})",
         "value": t_fused / t_logits, "unit": f"x ({t_fused:.2f} s vs {t_logits:.2f} s)", "target": "<= 1.5",
         "ok": t_fused / t_logits <= 1.5},
    ]  # fmt: skip
