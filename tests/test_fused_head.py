"""The fused LM head (`losses.Projected`): divergences over hidden states and a head weight equal the same
divergences over the logits those would make, in value and in every gradient, without making them."""

import pytest
import torch

from benchmarks.bench_fused_head import peak_rss_mb
from paced_core.losses import DIVERGENCES, Projected, topk_divergence, topk_logprobs

KINDS = {
    "forward_kl": {},
    "reverse_kl": {},
    "jsd": {"beta": 0.3},
    "akl": {"mu": 0.5},
}


def _case(dtype=torch.float64, b=2, t=9, h=6, v=23, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hs = torch.randn(b, t, h, generator=gen, dtype=dtype).requires_grad_()
    ws = torch.randn(v, h, generator=gen, dtype=dtype).requires_grad_()
    ht = torch.randn(b, t, h, generator=gen, dtype=dtype)
    wt = torch.randn(v, h, generator=gen, dtype=dtype)
    mask = torch.rand(b, t, generator=gen) > 0.3
    return hs, ws, ht, wt, mask


@pytest.mark.parametrize("kind", KINDS)
def test_fused_equals_logits_in_value_and_gradients(kind):
    hs, ws, ht, wt, mask = _case()
    weights = torch.randn(mask.shape)  # an arbitrary downstream reduction
    fn = DIVERGENCES[kind]
    fused = fn(Projected(hs, ws), Projected(ht, wt), mask, chunk_size=4, **KINDS[kind])
    g_fused = torch.autograd.grad((fused * weights).sum(), (hs, ws))
    plain = fn(hs @ ws.T, ht @ wt.T, mask, chunk_size=4, **KINDS[kind])
    g_plain = torch.autograd.grad((plain * weights).sum(), (hs, ws))
    torch.testing.assert_close(fused, plain)
    assert (fused[~mask] == 0).all()
    for got, expected in zip(g_fused, g_plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_fused_gradients_pass_gradcheck_on_both_sides(kind):
    hs, ws, ht, wt, mask = _case(b=2, t=3, h=3, v=5)
    inputs = [x.detach().requires_grad_() for x in (hs, ws, ht, wt)]

    def f(hs, ws, ht, wt):
        return DIVERGENCES[kind](Projected(hs, ws), Projected(ht, wt), mask, chunk_size=2, **KINDS[kind])

    assert torch.autograd.gradcheck(f, tuple(inputs))


def test_one_side_fused_and_the_other_as_logits():
    hs, ws, ht, wt, mask = _case()
    fused = DIVERGENCES["reverse_kl"](Projected(hs, ws), ht @ wt.T, mask, chunk_size=5)
    torch.testing.assert_close(fused, DIVERGENCES["reverse_kl"](hs @ ws.T, ht @ wt.T, mask, chunk_size=5))


def test_a_tied_head_gets_the_gradient_of_both_its_uses():
    # Tied embeddings: the head weight is also the input embedding, so its gradient sums two paths.
    hs, ws, ht, wt, mask = _case()
    ids = torch.randint(ws.shape[0], mask.shape)
    fused = DIVERGENCES["forward_kl"](Projected(hs + ws[ids], ws), Projected(ht, wt), mask)
    g_fused = torch.autograd.grad(fused.sum(), ws)[0]
    plain = DIVERGENCES["forward_kl"]((hs + ws[ids]) @ ws.T, ht @ wt.T, mask)
    torch.testing.assert_close(g_fused, torch.autograd.grad(plain.sum(), ws)[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "akl"])
def test_fused_topk_equals_topk_over_logits(kind):
    hs, ws, ht, wt, mask = _case(v=40)
    ids, logp = topk_logprobs(Projected(ht, wt), 6, chunk_size=5)
    ids_plain, logp_plain = topk_logprobs(ht @ wt.T, 6)
    assert torch.equal(ids, ids_plain)
    torch.testing.assert_close(logp, logp_plain)
    fused = topk_divergence(Projected(hs, ws), ids, logp, mask, kind=kind, chunk_size=4)
    plain = topk_divergence(hs @ ws.T, ids, logp, mask, kind=kind, chunk_size=4)
    torch.testing.assert_close(fused, plain)
    for got, expected in zip(
        torch.autograd.grad(fused.sum(), (hs, ws)), torch.autograd.grad(plain.sum(), (hs, ws)), strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_bfloat16_compute_with_float32_master_weights():
    # bf16_mixed: float32 weight, matmul in bfloat16; gradients come back float32 and close to the
    # same computation written with explicit casts.
    hs, ws, ht, wt, mask = _case(torch.float32, h=16, v=64)
    fused = DIVERGENCES["forward_kl"](
        Projected(hs, ws, torch.bfloat16), Projected(ht, wt, torch.bfloat16), mask, chunk_size=4
    )
    g = torch.autograd.grad(fused.sum(), (hs, ws))
    plain = DIVERGENCES["forward_kl"](hs.bfloat16() @ ws.bfloat16().T, ht.bfloat16() @ wt.bfloat16().T, mask)
    g_plain = torch.autograd.grad(plain.sum(), (hs, ws))
    assert all(x.dtype == torch.float32 for x in g)
    torch.testing.assert_close(fused, plain, rtol=1e-3, atol=1e-3)
    for got, expected in zip(g, g_plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05 * float(expected.abs().max()))


def test_mismatched_sides_are_named():
    hs, ws = _case()[:2]
    with pytest.raises(ValueError, match=r"hidden \(2, 9, 6\) with head \(23, 6\).*logits \(2, 9, 22\)"):
        DIVERGENCES["forward_kl"](Projected(hs, ws), torch.randn(2, 9, 22))
    with pytest.raises(ValueError, match=r"same H"):
        Projected(hs, torch.randn(23, 5))


def test_peak_memory_grows_with_chunk_times_vocab_not_tokens_times_vocab():
    # Four times the tokens: the logits path grows by the extra [tokens, V] logits (student, teacher and
    # the student's logit gradient); the fused path only by [tokens, H] tensors.
    vocab = 16_384
    fused_small, fused_large = peak_rss_mb(1024, vocab, fused=True), peak_rss_mb(4096, vocab, fused=True)
    plain_small, plain_large = peak_rss_mb(1024, vocab, fused=False), peak_rss_mb(4096, vocab, fused=False)
    one_extra_logits_mb = 3072 * vocab * 4 / 2**20  # 192 MB: one float32 [3072, V] tensor
    assert plain_large - plain_small > 2 * one_extra_logits_mb
    assert fused_large - fused_small < 0.1 * one_extra_logits_mb
    assert fused_large < plain_large / 4
