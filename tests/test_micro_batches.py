"""Micro-batches with gradient accumulation (`learner.micro_batch_tokens`): the loss, the per-sequence losses
and every parameter's gradient equal one big batch's, for every divergence and both weighting modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paced_core.config import load_config
from paced_core.tasks import synthetic_arithmetic
from services.learner import Learner
from services.learner_batches import micro_batches
from services.store.memory_store import MemoryStore

REPO = Path(__file__).resolve().parents[1]
POOL = synthetic_arithmetic(12, seed=4)
KINDS = ["forward_kl", "reverse_kl", "jsd", "akl"]


def learner(tmp_path: Path, mode: str, budget: int | None) -> Learner:
    sets = [f"scheduler.weighting={mode}", "learner.chunk_size=7"]
    if budget is not None:
        sets.append(f"learner.micro_batch_tokens={budget}")
    cfg = load_config(REPO / "configs" / "demo.yaml", sets)
    return Learner(cfg, POOL, tmp_path, store=MemoryStore(f"micro-{mode}-{budget}"))


@pytest.fixture(scope="module")
def learners(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("micro")
    return {(mode, b): learner(tmp, mode, b) for mode in ("sample", "loss") for b in (None, 30)}


def batch(model: Learner):
    rng = np.random.default_rng(0)
    vocab = len(model.tokenizer)
    return [model.batches.sequence(p.id, rng.integers(4, vocab, size=int(rng.integers(1, 9))).tolist()) for p in POOL]


@pytest.mark.parametrize("mode", ["sample", "loss"])
@pytest.mark.parametrize("kind", KINDS)
def test_micro_batches_give_the_whole_batchs_loss_and_gradients(learners, mode, kind):
    from paced_core.config import AKL, JSD, ForwardKL, ReverseKL

    spec = {"forward_kl": ForwardKL(), "reverse_kl": ReverseKL(), "jsd": JSD(), "akl": AKL()}[kind]
    whole, micro = learners[mode, None], learners[mode, 30]
    seqs = batch(whole)
    assert len(micro_batches(seqs, micro.cfg.learner.micro_batch_tokens)) > 3  # the budget really splits the batch
    assert [i for g in micro_batches(seqs, micro.cfg.learner.micro_batch_tokens) for i in g] == list(range(len(seqs)))
    weights = np.linspace(0.0, 0.25, len(seqs))  # one zero weight included
    loss_a, seq_a, tok_a = whole.loss.accumulate(seqs, spec, weights)
    loss_b, seq_b, tok_b = micro.loss.accumulate(seqs, spec, weights)
    assert loss_b == pytest.approx(loss_a, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(seq_b, seq_a, rtol=1e-5, atol=1e-6)
    assert tok_a == tok_b == sum(len(s.completion) for s in seqs)
    for (name, pa), pb in zip(whole.student.named_parameters(), micro.student.parameters(), strict=True):
        assert pa.grad is not None and pb.grad is not None and pa.grad.abs().max() > 0, name
        # float32 sums in another order: equal to 1e-5 of the tensor's largest gradient
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5 * float(pa.grad.abs().max()), msg=name)


def test_a_sequence_longer_than_the_budget_goes_alone(learners):
    model = learners["sample", 30]
    seqs = batch(model)
    long = model.batches.sequence(POOL[0].id, [5] * 40)
    groups = micro_batches([seqs[0], long, seqs[1]], model.cfg.learner.micro_batch_tokens)
    assert [1] in groups
