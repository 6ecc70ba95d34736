"""Divergences and reductions against float64 references written from the definitions."""

import itertools

import pytest
import torch

from paced_core.losses import (
    akl,
    akl_ratios,
    forward_kl,
    jsd,
    reduce,
    reverse_kl,
    topk_divergence,
    topk_logprobs,
)

torch.manual_seed(0)


def ref_kl(p_logits, q_logits):
    """KL(P || Q) per token, float64, straight from sum_v P (log P - log Q)."""
    logp = torch.log_softmax(p_logits.double(), -1)
    logq = torch.log_softmax(q_logits.double(), -1)
    return torch.where(logp.exp() > 0, logp.exp() * (logp - logq), 0.0).sum(-1)  # 0 log(0/q) = 0


def ref_jsd(s, t, beta):
    ps, pt = torch.softmax(s.double(), -1), torch.softmax(t.double(), -1)
    m = beta * pt + (1 - beta) * ps

    def kl(p, q):
        return torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p)).sum(-1)

    return beta * kl(pt, m) + (1 - beta) * kl(ps, m)


def ref_akl(s, t, mu):
    """AKL written token by token with an explicit loop over sorted teacher probabilities."""
    ps, pt = torch.softmax(s.double(), -1), torch.softmax(t.double(), -1)
    out = torch.zeros(s.shape[:-1], dtype=torch.float64)
    for i in itertools.product(*[range(n) for n in s.shape[:-1]]):
        order = sorted(range(s.shape[-1]), key=lambda v: -pt[i][v].item())
        cum, g_head, g_tail = 0.0, 0.0, 0.0
        for rank, v in enumerate(order):
            cum += pt[i][v].item()
            gap = abs(pt[i][v].item() - ps[i][v].item())
            if rank == 0 or cum <= mu:
                g_head += gap
            else:
                g_tail += gap
        r = g_head / (g_head + g_tail) if g_head + g_tail > 0 else 0.5  # identical: both KLs are 0 anyway
        fkl = ref_kl(t[i], s[i]).item()
        rkl = ref_kl(s[i], t[i]).item()
        out[i] = r * fkl + (1 - r) * rkl
    return out


def _seeded(make):
    """A case drawn from its own seed, whatever ran before it."""

    def case():
        torch.manual_seed(1234)
        return make()

    return case


CASES = {
    "random": _seeded(lambda: (torch.randn(2, 5, 11) * 2, torch.randn(2, 5, 11) * 2)),
    "near_one_hot": _seeded(
        lambda: (
            torch.randn(2, 5, 11) + 30 * torch.nn.functional.one_hot(torch.randint(11, (2, 5)), 11),
            torch.randn(2, 5, 11) + 30 * torch.nn.functional.one_hot(torch.randint(11, (2, 5)), 11),
        )
    ),
    "huge_magnitude": _seeded(lambda: (torch.randn(2, 5, 11) * 1e4, torch.randn(2, 5, 11) * 1e4)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("fn", "ref"),
    [
        (forward_kl, lambda s, t: ref_kl(t, s)),
        (reverse_kl, lambda s, t: ref_kl(s, t)),
        (lambda s, t, **kw: jsd(s, t, beta=0.5, **kw), lambda s, t: ref_jsd(s, t, 0.5)),
        (lambda s, t, **kw: jsd(s, t, beta=0.2, **kw), lambda s, t: ref_jsd(s, t, 0.2)),
    ],
    ids=["forward_kl", "reverse_kl", "jsd_0.5", "jsd_0.2"],
)
def test_divergence_matches_float64_reference(fn, ref, case):
    s, t = CASES[case]()
    got = fn(s, t, chunk_size=3)
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    expected = ref(s, t)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4 * max(1.0, expected.abs().max()))


@pytest.mark.parametrize("case", CASES)
def test_akl_matches_per_token_reference(case):
    s, t = CASES[case]()
    got = akl(s, t, mu=0.5, chunk_size=4)
    expected = ref_akl(s, t, 0.5)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4 * max(1.0, expected.abs().max()))


def test_akl_head_is_chosen_in_teacher_order_not_vocabulary_order():
    # Teacher mass sits on the last vocabulary ids; a head computed in vocabulary order would be wrong.
    t = torch.log(torch.tensor([[0.05, 0.05, 0.1, 0.3, 0.5]]))
    s = torch.log(torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2]]))
    r_head, r_tail = akl_ratios(torch.log_softmax(s, -1), torch.log_softmax(t, -1), mu=0.5)
    # head = {id 4} (cum 0.5 <= 0.5); gap head = 0.3; tail gaps = 0.15 + 0.15 + 0.1 + 0.1 = 0.5
    torch.testing.assert_close(r_head, torch.tensor([0.3 / 0.8]))
    torch.testing.assert_close(r_tail, torch.tensor([0.5 / 0.8]))


def test_jsd_at_half_is_symmetric():
    s, t = torch.randn(3, 7, 13), torch.randn(3, 7, 13)
    torch.testing.assert_close(jsd(s, t, beta=0.5), jsd(t, s, beta=0.5))


def test_jsd_is_not_symmetric_away_from_half():
    s, t = torch.randn(3, 7, 13) * 3, torch.randn(3, 7, 13) * 3
    assert not torch.allclose(jsd(s, t, beta=0.2), jsd(t, s, beta=0.2))


@pytest.mark.parametrize("fn", [forward_kl, reverse_kl, jsd, akl])
def test_chunked_equals_unchunked(fn):
    s, t = torch.randn(4, 33, 50), torch.randn(4, 33, 50)
    mask = torch.rand(4, 33) > 0.3
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    a = fn(s1, t, mask, chunk_size=7)
    b = fn(s2, t, mask, chunk_size=None)
    torch.testing.assert_close(a, b)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad)


@pytest.mark.parametrize(
    "fn",
    [
        forward_kl,
        reverse_kl,
        lambda s, t, m, **kw: jsd(s, t, m, beta=0.3, **kw),
    ],
    ids=["forward_kl", "reverse_kl", "jsd"],
)
def test_gradients_pass_gradcheck(fn):
    s = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])

    def f(s, t):
        return fn(s, t, mask, chunk_size=2)

    assert torch.autograd.gradcheck(f, (s, t))


def test_akl_gradient_treats_mixing_ratios_as_constants():
    s = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    r_head, r_tail = akl_ratios(torch.log_softmax(s, -1), torch.log_softmax(t, -1), mu=0.5)
    weights = torch.randn(2, 3, dtype=torch.float64)
    got = torch.autograd.grad((akl(s, t, mu=0.5) * weights).sum(), (s, t))
    fixed = r_head * forward_kl(s, t) + r_tail * reverse_kl(s, t)
    expected = torch.autograd.grad((fixed * weights).sum(), (s, t))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("fn", [forward_kl, reverse_kl, jsd, akl])
def test_masked_tokens_contribute_nothing(fn):
    s = torch.randn(2, 6, 9, requires_grad=True)
    t = torch.randn(2, 6, 9)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 1]])
    out = fn(s, t, mask)
    assert (out[mask == 0] == 0).all()
    assert (out[mask == 1] > 0).all()
    out.sum().backward()
    assert (s.grad[mask == 0] == 0).all()
    # Changing masked logits changes nothing.
    s2 = s.detach().clone()
    s2[mask == 0] = torch.randn_like(s2[mask == 0]) * 100
    torch.testing.assert_close(fn(s2, t, mask), out.detach())


def test_identical_distributions_give_zero():
    s = torch.randn(2, 4, 10)
    for fn in (forward_kl, reverse_kl, jsd, akl):
        torch.testing.assert_close(fn(s, s.clone()), torch.zeros(2, 4), atol=1e-6, rtol=0)


def test_bfloat16_logits_give_float32_values_and_bfloat16_gradients():
    s = torch.randn(2, 4, 10).bfloat16().requires_grad_()
    t = torch.randn(2, 4, 10).bfloat16()
    out = forward_kl(s, t)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert s.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref_kl(t.float(), s.float()), rtol=1e-3, atol=1e-3)


def test_shape_mismatch_is_rejected_with_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(2, 3, 6\)"):
        forward_kl(torch.randn(2, 3, 5), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="mask shape"):
        forward_kl(torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.ones(2, 4))


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "akl"])
def test_topk_equals_full_divergence_when_teacher_mass_is_inside_top_k(kind):
    vocab, k = 12, 4
    t = torch.full((2, 3, vocab), -1e4)
    t[..., :k] = torch.randn(2, 3, k)  # all teacher mass on ids 0..3
    s = torch.randn(2, 3, vocab)
    s[..., k:] = -30  # and all but ~1e-13 of the student's (the teacher's tail is floored at k * eps)
    ids, logp = topk_logprobs(t, k)
    full = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "jsd": jsd, "akl": akl}[kind](s, t)
    torch.testing.assert_close(topk_divergence(s, ids, logp, kind=kind), full, atol=1e-5, rtol=1e-4)


def test_topk_forward_kl_matches_bucketed_reference_and_has_gradient():
    vocab, k = 20, 5
    s = torch.randn(2, 4, vocab, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, vocab, dtype=torch.float64)
    ids, logp = topk_logprobs(t, k)
    got = topk_divergence(s, ids, logp, kind="forward_kl", chunk_size=3)
    # Reference: collapse both distributions to the teacher's top-k plus one tail bucket.
    ps, pt = torch.softmax(s, -1), torch.softmax(t, -1)
    bs = torch.cat([ps.gather(-1, ids), 1 - ps.gather(-1, ids).sum(-1, keepdim=True)], -1)
    bt = torch.cat([pt.gather(-1, ids), 1 - pt.gather(-1, ids).sum(-1, keepdim=True)], -1)
    expected = (bt * (bt.log() - bs.log())).sum(-1)
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-4, atol=1e-5)
    got.sum().backward()
    expected_grad = torch.autograd.grad(expected.sum(), s)[0]
    torch.testing.assert_close(s.grad, expected_grad, rtol=1e-3, atol=1e-5)


def test_reduce_sample_mode_is_token_mean_then_mean():
    per_token = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # sequence means: (1 + 3) / 2 = 2 and 2 / 1 = 2
    torch.testing.assert_close(reduce(per_token, mask, mode="sample"), torch.tensor(2.0))


def test_reduce_loss_mode_weights_by_problem_and_normalises():
    per_token = torch.tensor([[1.0, 1.0], [4.0, 0.0], [9.0, 9.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    w = torch.tensor([0.25, 0.75, 0.0])
    expected = (0.25 * 1.0 + 0.75 * 4.0) / 1.0
    torch.testing.assert_close(reduce(per_token, mask, w, mode="loss"), torch.tensor(expected))


def test_reduce_loss_mode_all_zero_weights_gives_zero_without_nan():
    per_token = torch.rand(3, 4, requires_grad=True)
    out = reduce(per_token, torch.ones(3, 4), torch.zeros(3), mode="loss")
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(per_token.grad).all() and (per_token.grad == 0).all()


def test_reduce_sequence_with_no_tokens_counts_as_zero():
    per_token = torch.tensor([[5.0, 5.0], [7.0, 7.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    torch.testing.assert_close(reduce(per_token, mask, mode="sample"), torch.tensor(2.5))


def test_reduce_rejects_bad_weights_and_modes():
    per_token, mask = torch.rand(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="needs problem_weights"):
        reduce(per_token, mask, mode="loss")
    with pytest.raises(ValueError, match=">= 0"):
        reduce(per_token, mask, torch.tensor([1.0, -1.0]), mode="loss")
    with pytest.raises(ValueError, match="3 problem weights for 2"):
        reduce(per_token, mask, torch.ones(3), mode="loss")
    with pytest.raises(ValueError, match="unknown reduce mode"):
        reduce(per_token, mask, mode="mean")


def ref_bucketed(s, ids, t_logp, kind, beta=0.5, mu=0.5):
    """A top-k divergence from its definition, float64: collapse both distributions onto the teacher's
    k ids plus one tail bucket, then apply the full divergence's reference to the k + 1 buckets."""
    ps = torch.softmax(s.double(), -1)
    bs = torch.cat([ps.gather(-1, ids), 1 - ps.gather(-1, ids).sum(-1, keepdim=True)], -1)
    pt = t_logp.double().exp()
    bt = torch.cat([pt, 1 - pt.sum(-1, keepdim=True)], -1)
    ls, lt = bs.log(), bt.log()  # log-probs are logits of the same distributions
    if kind == "forward_kl":
        return ref_kl(lt, ls)
    if kind == "reverse_kl":
        return ref_kl(ls, lt)
    if kind == "jsd":
        return ref_jsd(ls, lt, beta)
    return ref_akl(ls, lt, mu)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "akl"])
def test_topk_matches_bucketed_reference_with_mass_outside_top_k(kind):
    vocab, k = 16, 4
    s, t = torch.randn(2, 3, vocab) * 2, torch.randn(2, 3, vocab) * 2
    ids, logp = topk_logprobs(t, k)
    got = topk_divergence(s, ids, logp, kind=kind, beta=0.3, mu=0.6, chunk_size=2)
    expected = ref_bucketed(s, ids, logp, kind, beta=0.3, mu=0.6)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_topk_gradients_pass_gradcheck_for_student_and_teacher(kind):
    vocab, k = 7, 3
    s = torch.randn(2, 3, vocab, dtype=torch.float64, requires_grad=True)
    ids, logp = topk_logprobs(torch.randn(2, 3, vocab, dtype=torch.float64), k)
    logp = logp.double().requires_grad_()
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]])

    def fn(s, logp):
        return topk_divergence(s, ids, logp, mask, kind=kind, chunk_size=2)

    assert torch.autograd.gradcheck(fn, (s, logp))


def test_topk_keeps_the_student_tail_gradient_when_the_tail_is_tiny():
    """The student's tail bucket is exact (no floor): pushing tail mass down still has a gradient."""
    vocab, k = 10, 3
    t = torch.full((1, 1, vocab), -50.0, dtype=torch.float64)
    t[..., :k] = torch.tensor([2.0, 1.0, 0.0])
    s = t.clone()
    s[..., k:] = -20.0  # student tail ~1e-9, far below the 1e-7 floor an earlier version applied
    s.requires_grad_()
    ids, logp = topk_logprobs(t, k)
    topk_divergence(s, ids, logp, kind="reverse_kl").sum().backward()
    assert (s.grad[..., k:] > 0).all()  # descent lowers the tail logits further


def test_topk_rejects_bad_inputs_naming_them():
    s = torch.randn(1, 2, 8)
    ids, logp = topk_logprobs(torch.randn(1, 2, 8), 3)
    with pytest.raises(ValueError, match="repeat"):
        topk_divergence(s, torch.zeros_like(ids), logp)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        topk_divergence(s, ids + 8, logp)
    with pytest.raises(ValueError, match="beta"):
        topk_divergence(s, ids, logp, kind="jsd", beta=3.0)
    with pytest.raises(ValueError, match="mu"):
        topk_divergence(s, ids, logp, kind="akl", mu=0.0)
    with pytest.raises(ValueError, match="mask shape"):
        topk_divergence(s, ids, logp, torch.ones(1, 3))
    torch.testing.assert_close(
        topk_divergence(s, ids, logp, chunk_size=None), topk_divergence(s, ids, logp, chunk_size=1)
    )


@pytest.mark.parametrize("fn", [forward_kl, reverse_kl, jsd, akl], ids=["fkl", "rkl", "jsd", "akl"])
def test_vocabulary_entries_both_sides_exclude_contribute_nothing(fn):
    """-inf logits on the same entries (a padded or banned vocabulary) give the divergence over the rest,
    with finite gradients, not NaN."""
    s, t = torch.randn(2, 3, 9), torch.randn(2, 3, 9)
    s_pad, t_pad = s.clone(), t.clone()
    s_pad[..., 6:] = -torch.inf
    t_pad[..., 6:] = -torch.inf
    s_pad.requires_grad_()
    got = fn(s_pad, t_pad)
    torch.testing.assert_close(got, fn(s[..., :6], t[..., :6]))
    got.sum().backward()
    assert torch.isfinite(s_pad.grad).all() and (s_pad.grad[..., 6:] == 0).all()


def test_teacher_only_exclusions_give_finite_forward_kl_and_jsd():
    s, t = torch.randn(2, 3, 9), torch.randn(2, 3, 9)
    t[..., 7:] = -torch.inf  # the teacher rules two tokens out; the student does not
    torch.testing.assert_close(forward_kl(s, t).double(), ref_kl(t, s), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(jsd(s, t).double(), ref_jsd(s, t, 0.5), rtol=1e-5, atol=1e-6)
    assert torch.isinf(reverse_kl(s, t)).all()  # the student puts mass where the teacher has none


def test_akl_with_mu_one_is_forward_kl_at_a_large_vocabulary():
    """mu = 1 puts every position in the head even when float32 probabilities sum past 1."""
    s, t = torch.randn(4, 32_000) * 3, torch.randn(4, 32_000) * 3
    r_head, _ = akl_ratios(torch.log_softmax(s, -1), torch.log_softmax(t, -1), 1.0)
    assert (r_head == 1).all()
    torch.testing.assert_close(akl(s, t, mu=1.0), forward_kl(s, t))


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_topk_with_excluded_tokens_has_finite_gradients(kind):
    """A student that excludes every token outside the teacher's top-k, and a teacher with fewer than k
    finite log-probs: values and gradients stay finite."""
    vocab, k = 8, 3
    t = torch.full((2, 2, vocab), -torch.inf)
    t[..., :2] = torch.randn(2, 2, 2)  # only 2 finite teacher logits, so the top-3 holds a -inf
    ids, logp = topk_logprobs(t, k)
    s = torch.full((2, 2, vocab), -torch.inf)
    s[..., :2] = torch.randn(2, 2, 2)
    s.requires_grad_()
    value = topk_divergence(s, ids, logp, kind=kind)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(s.grad).all()


def test_topk_floor_does_not_grow_with_low_precision_log_probs():
    """bfloat16 log-probs get float32's floor, not k times bfloat16's epsilon (0.5 at k = 64)."""
    t = torch.randn(1, 4, 1000) * 4
    ids, logp = topk_logprobs(t, 64)
    got = topk_divergence(t, ids, logp.bfloat16().float(), kind="forward_kl")
    direct = topk_divergence(t, ids, logp.bfloat16(), kind="forward_kl")
    torch.testing.assert_close(direct, got)
    assert direct.max() < 0.05  # the student is the teacher: only bf16 rounding separates them


def test_topk_logprobs_equal_the_log_softmax_top_k_in_chunks():
    t = torch.randn(3, 50, 40)
    ids, logp = topk_logprobs(t, 5, chunk_size=7)
    expected_logp, expected_ids = torch.log_softmax(t, -1).topk(5, dim=-1)
    torch.testing.assert_close(logp, expected_logp)
    assert torch.equal(ids, expected_ids)
