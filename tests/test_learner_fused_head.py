"""The learner's fused LM head (`learner.fused_head`, default on) and activation checkpointing
(`learner.gradient_checkpointing`): the same loss, per-sequence losses and gradients as the models' own
logits, for every divergence and the top-k teacher; a head that cannot be fused is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from paced_core.config import AKL, JSD, ForwardKL, ReverseKL, load_config
from paced_core.tasks import synthetic_arithmetic
from services.learner import Learner
from services.learner_loss import check_plain_head
from services.store.memory_store import MemoryStore

REPO = Path(__file__).resolve().parents[1]
POOL = synthetic_arithmetic(10, seed=5)
SPECS = {"forward_kl": ForwardKL(), "reverse_kl": ReverseKL(), "jsd": JSD(), "akl": AKL()}


def learner(tmp_path: Path, name: str, *sets: str) -> Learner:
    cfg = load_config(REPO / "configs" / "demo.yaml", ["learner.chunk_size=5", *sets])
    return Learner(cfg, POOL, tmp_path, store=MemoryStore(f"fused-{name}"))


@pytest.fixture(scope="module")
def learners(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fused")
    variants = {
        "logits": ("learner.fused_head=false",),
        "fused": ("learner.fused_head=true",),
        "checkpointed": ("learner.fused_head=true", "learner.gradient_checkpointing=true"),
        "topk_logits": ("learner.fused_head=false", "teacher.logits=topk", "teacher.topk=8"),
        "topk_fused": ("learner.fused_head=true", "teacher.logits=topk", "teacher.topk=8"),
    }
    return {name: learner(tmp, name, *sets) for name, sets in variants.items()}


def batch(model: Learner):
    rng = np.random.default_rng(1)
    vocab = len(model.tokenizer)
    return [model.batches.sequence(p.id, rng.integers(4, vocab, size=int(rng.integers(1, 9))).tolist()) for p in POOL]


def assert_same_step(a: Learner, b: Learner, spec) -> None:
    seqs = batch(a)
    weights = np.ones(len(seqs))
    loss_a, seq_a, tok_a = a.loss.accumulate(seqs, spec, weights)
    loss_b, seq_b, tok_b = b.loss.accumulate(seqs, spec, weights)
    assert loss_b == pytest.approx(loss_a, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(seq_b, seq_a, rtol=1e-5, atol=1e-6)
    assert tok_a == tok_b
    for (name, pa), pb in zip(a.student.named_parameters(), b.student.parameters(), strict=True):
        assert pa.grad is not None and pa.grad.abs().max() > 0, name
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5 * float(pa.grad.abs().max()), msg=name)


@pytest.mark.parametrize("kind", SPECS)
def test_fused_head_trains_like_the_models_own_logits(learners, kind):
    assert_same_step(learners["logits"], learners["fused"], SPECS[kind])


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl"])
def test_fused_head_with_a_topk_teacher(learners, kind):
    assert_same_step(learners["topk_logits"], learners["topk_fused"], SPECS[kind])


def test_activation_checkpointing_gives_the_same_gradients(learners):
    assert learners["checkpointed"].student.is_gradient_checkpointing
    assert_same_step(learners["fused"], learners["checkpointed"], SPECS["reverse_kl"])


def _tiny(**overrides) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=40, **overrides,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


def test_a_plain_head_is_accepted():
    check_plain_head(_tiny(), "student")


def test_a_head_with_a_bias_is_refused():
    model = _tiny()
    model.lm_head = torch.nn.Linear(16, 40, bias=True)
    with pytest.raises(ValueError, match=r"student \(LlamaForCausalLM\) cannot be fused.*bias-free.*fused_head: false"):
        check_plain_head(model, "student")


def test_a_logit_transform_is_refused():
    model = _tiny()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match=r"teacher .*final_logit_softcapping"):
        check_plain_head(model, "teacher")


def test_logits_that_differ_from_the_product_are_refused():
    # A head whose forward is not its weight's product (here it scales the logits): caught by the probe.
    model = _tiny()

    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 3 * super().forward(x)

    scaled = Scaled(16, 40, bias=False)
    scaled.weight = model.lm_head.weight
    model.lm_head = scaled
    with pytest.raises(ValueError, match=r"not its decoder's hidden states times its LM head"):
        check_plain_head(model, "student")
