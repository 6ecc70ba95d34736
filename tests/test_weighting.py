"""Kernels: values, peak, vectorisation over numpy and torch, and the sampling floor."""

import numpy as np
import pytest
import torch

from paced_core.weighting import beta_kernel, hard, is_fresh, sampling_weight, training_weights, uniform


def test_default_beta_kernel_is_p_times_one_minus_p():
    p = np.array([0.0, 0.125, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(beta_kernel(p), p * (1 - p))
    assert beta_kernel(0.5) == 0.25


@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (2.0, 1.0), (0.5, 3.0)])
def test_beta_kernel_peaks_at_a_over_a_plus_b(a, b):
    p = np.linspace(0, 1, 100_001)
    assert p[np.argmax(beta_kernel(p, a, b))] == pytest.approx(a / (a + b), abs=1e-4)


def test_kernels_keep_the_input_kind():
    p_np, p_t = np.array([0.0, 0.3, 1.0]), torch.tensor([0.0, 0.3, 1.0])
    for kernel in (beta_kernel, uniform, hard):
        assert isinstance(kernel(p_np), np.ndarray)
        assert isinstance(kernel(p_t), torch.Tensor)
        np.testing.assert_allclose(kernel(p_t).numpy(), kernel(p_np), rtol=1e-6)


def test_uniform_and_hard():
    p = np.array([0.0, 1e-9, 0.5, 1 - 1e-9, 1.0])
    np.testing.assert_array_equal(uniform(p), np.ones(5))
    np.testing.assert_array_equal(hard(p), [0.0, 1.0, 1.0, 1.0, 0.0])
    assert hard(0.0) == 0.0 and hard(0.4) == 1.0


def test_sampling_floor_keeps_extremes_drawable_but_not_interior():
    w = beta_kernel(np.array([0.0, 0.5, 1.0, 0.001]))
    np.testing.assert_array_equal(sampling_weight(w, 0.01), [0.01, 0.25, 0.01, 0.001 * 0.999])
    torch.testing.assert_close(sampling_weight(torch.tensor([0.0, 0.2]), 0.05), torch.tensor([0.05, 0.2]))
    with pytest.raises(ValueError, match="floor"):
        sampling_weight(w, -0.1)


def test_rates_outside_unit_interval_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        beta_kernel(np.array([0.2, 1.5]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hard(torch.tensor([-0.1]))
    with pytest.raises(ValueError, match="exponents"):
        beta_kernel(0.5, a=-1.0)


def test_empty_inputs_give_empty_weights():
    for kernel in (beta_kernel, uniform, hard):
        assert kernel(torch.zeros(0)).shape == (0,)
        assert kernel(np.zeros(0)).shape == (0,)


def test_nan_rates_and_bad_exponents_or_floors_are_rejected():
    with pytest.raises(ValueError, match=r"1 of them do not, e.g. nan"):
        beta_kernel(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        uniform(float("nan"))
    with pytest.raises(ValueError, match="exponents"):
        beta_kernel(0.5, a=float("nan"))
    with pytest.raises(ValueError, match="exponents"):
        beta_kernel(0.5, b=float("inf"))
    for floor in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="floor"):
            sampling_weight(np.array([0.1]), floor)


def test_kernels_keep_float_dtypes_and_ignore_autograd():
    for dtype in (np.float32, np.float64):
        for kernel in (beta_kernel, uniform, hard):
            assert kernel(np.array([0.0, 0.5], dtype=dtype)).dtype == dtype
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for kernel in (beta_kernel, uniform, hard):
            assert kernel(torch.tensor([0.0, 0.5], dtype=dtype)).dtype == dtype
    assert uniform(torch.tensor([0, 1])).dtype == torch.float32  # integer rates give float weights
    p = torch.tensor([0.25, 0.5], requires_grad=True)
    beta_kernel(p).sum().backward()  # the range check must not break the graph
    torch.testing.assert_close(p.grad, 1 - 2 * p.detach())


def test_training_weights_take_the_empirical_rate_and_zero_unknown_problems():
    correct, n = np.array([0, 16, 8, 1, 3]), np.array([16, 16, 16, 2, 0])
    w, rate = training_weights(beta_kernel, correct, n, min_outcomes=4)
    np.testing.assert_array_equal(w, [0.0, 0.0, 0.25, 0.0, 0.0])  # exactly 0 at 0/16 and 16/16
    np.testing.assert_array_equal(rate[:3], [0.0, 1.0, 0.5])
    assert np.isnan(rate[3:]).all()  # fewer than min_outcomes: unknown
    w, _ = training_weights(hard, correct, n, min_outcomes=4, fresh=np.array([1, 1, 0, 1, 1]))
    np.testing.assert_array_equal(w, [0.0, 0.0, 0.0, 0.0, 0.0])  # a stale estimate is unknown too
    with pytest.raises(ValueError, match="min_outcomes"):
        training_weights(beta_kernel, correct, n, min_outcomes=0)


def test_an_estimate_older_than_stale_after_versions_is_not_fresh_unless_frozen():
    versions = np.array([-1, 4, 5, 10])
    np.testing.assert_array_equal(is_fresh(versions, policy_version=10, stale_after_versions=5), [0, 0, 1, 1])
    assert is_fresh(versions, policy_version=10, stale_after_versions=None).all()  # frozen: never stale


def test_uniform_trains_on_unknown_problems_too():
    """Plain distillation needs no pass rate: every problem weighs 1, known or not."""
    w, rate = training_weights(uniform, np.array([0, 3]), np.array([16, 0]), min_outcomes=4)
    np.testing.assert_array_equal(w, [1.0, 1.0])
    assert rate[0] == 0.0 and np.isnan(rate[1])
