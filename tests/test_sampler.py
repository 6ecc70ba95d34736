"""The sum-tree sampler: draws follow the weights, zero weights are never drawn, state round-trips."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

from paced_core.sampler import WeightedSampler


def test_draw_frequencies_match_weights_chi_square():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 7.0, 0.25, 1.25, 6.0, 2.0])
    sampler = WeightedSampler(weights.size)
    sampler.update(np.arange(weights.size), weights)
    draws = sampler.sample(200_000, seed=1234)
    counts = np.bincount(draws, minlength=weights.size)
    expected = weights / weights.sum() * draws.size
    assert chisquare(counts, expected).pvalue > 0.01


def test_a_wrong_weighting_is_detected_by_the_same_chi_square():
    # Guard for the test above: the statistic is powerful enough to reject a different distribution.
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    sampler = WeightedSampler(4)
    sampler.update(np.arange(4), weights)
    counts = np.bincount(sampler.sample(200_000, seed=7), minlength=4)
    wrong = np.array([1.0, 2.0, 3.0, 4.2]) / 10.2 * counts.sum()
    assert chisquare(counts, wrong).pvalue < 0.01


def test_zero_weight_ids_are_never_drawn():
    n = 1000
    sampler = WeightedSampler(n)
    weights = np.zeros(n)
    weights[::7] = np.random.default_rng(0).random(weights[::7].size) + 1e-9
    sampler.update(np.arange(n), weights)
    draws = sampler.sample(100_000, seed=3)
    assert np.all(weights[draws] > 0)


def test_tiny_weights_next_to_zero_weights_at_boundaries():
    # Ids at the end of the tree with zero weight must not be reached through rounding.
    sampler = WeightedSampler(5)
    sampler.update([0, 1, 2, 3, 4], [1e-300, 1.0, 1e-12, 0.0, 0.0])
    draws = sampler.sample(50_000, seed=5)
    assert set(np.unique(draws)) <= {0, 1, 2}


def test_update_changes_draws_and_total():
    sampler = WeightedSampler(3)
    sampler.update([0, 1, 2], [1.0, 1.0, 1.0])
    sampler.update([1], [0.0])
    assert sampler.total() == 2.0
    assert 1 not in set(sampler.sample(10_000, seed=0))


def test_repeated_ids_in_one_update_take_the_last_weight():
    sampler = WeightedSampler(4)
    sampler.update([2, 2, 1, 2], [5.0, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(sampler.weights(), [0.0, 1.0, 3.0, 0.0])
    assert sampler.total() == 4.0


def test_total_stays_exact_after_many_updates():
    rng = np.random.default_rng(0)
    n = 4097  # not a power of two
    sampler = WeightedSampler(n)
    for _ in range(200):
        ids = rng.integers(0, n, 500)
        sampler.update(ids, rng.random(500))
    assert sampler.total() == pytest.approx(sampler.weights().sum(), rel=1e-12)


def test_load_weights_equals_incremental_updates():
    rng = np.random.default_rng(1)
    w = rng.random(1000)
    a, b = WeightedSampler(1000), WeightedSampler(1000)
    a.load_weights(w)
    b.update(np.arange(1000), w)
    np.testing.assert_array_equal(a.sample(500, seed=9), b.sample(500, seed=9))


def test_same_seed_same_draws():
    sampler = WeightedSampler(100)
    sampler.update(np.arange(100), np.arange(100) + 1.0)
    np.testing.assert_array_equal(sampler.sample(64, seed=42), sampler.sample(64, seed=42))


def test_sample_without_replacement_is_distinct_and_restores_weights():
    sampler = WeightedSampler(50)
    w = np.linspace(0.1, 5, 50)
    w[10] = 0.0
    sampler.update(np.arange(50), w)
    draws = sampler.sample(49, seed=0, replace=False)
    assert len(set(draws.tolist())) == 49 and 10 not in draws
    np.testing.assert_array_equal(sampler.weights(), w)
    with pytest.raises(ValueError, match="only 49 have positive weight"):
        sampler.sample(50, replace=False)


def test_sample_without_replacement_first_draw_follows_weights():
    sampler = WeightedSampler(4)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    sampler.update(np.arange(4), w)
    rng = np.random.default_rng(11)
    firsts = [sampler.sample(2, seed=rng, replace=False)[0] for _ in range(20_000)]
    counts = np.bincount(firsts, minlength=4)
    assert chisquare(counts, w / w.sum() * counts.sum()).pvalue > 0.01


def test_state_round_trips_through_json():
    sampler = WeightedSampler(37)
    sampler.update(np.arange(37), np.random.default_rng(2).random(37))
    state = json.loads(json.dumps(sampler.state_dict()))
    other = WeightedSampler(37)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.weights(), sampler.weights())
    np.testing.assert_array_equal(other.sample(100, seed=4), sampler.sample(100, seed=4))
    with pytest.raises(ValueError, match="n=37"):
        WeightedSampler(36).load_state_dict(state)


def test_single_id_sampler():
    sampler = WeightedSampler(1)
    sampler.update([0], [2.0])
    assert sampler.sample(5, seed=0).tolist() == [0] * 5


def test_bad_input_is_rejected_with_the_offending_value():
    sampler = WeightedSampler(10)
    with pytest.raises(IndexError, match="id 10 is outside 0..9"):
        sampler.update([3, 10], [1.0, 1.0])
    with pytest.raises(ValueError, match="id 4 got -1.0"):
        sampler.update([3, 4], [1.0, -1.0])
    with pytest.raises(ValueError, match="id 3 got nan"):
        sampler.update([3], [float("nan")])
    with pytest.raises(ValueError, match="2 ids but 1 weights"):
        sampler.update([1, 2], [1.0])
    with pytest.raises(ValueError, match="every weight is zero"):
        sampler.sample(1)
    with pytest.raises(TypeError, match="integers"):
        sampler.update([1.5], [1.0])
    # A rejected update changed nothing.
    assert sampler.total() == 0.0


def test_positive_count_follows_every_update_and_load():
    sampler = WeightedSampler(10)
    assert sampler.positive() == 0
    sampler.update([1, 2, 3], [1.0, 2.0, 0.0])
    assert sampler.positive() == 2
    sampler.update([2, 3, 3], [0.0, 5.0, 4.0])  # repeats take their last weight
    assert sampler.positive() == 2
    sampler.load_weights(np.arange(10, dtype=float))
    assert sampler.positive() == 9
    sampler.sample(9, seed=0, replace=False)  # zeroes and restores the drawn ids
    assert sampler.positive() == 9
    restored = WeightedSampler(10)
    restored.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    assert restored.positive() == 9


def test_drawing_nothing_from_an_all_zero_tree_is_allowed():
    sampler = WeightedSampler(4)
    assert sampler.sample(0).size == 0 and sampler.sample(0, replace=False).size == 0
    with pytest.raises(ValueError, match="every weight is zero"):
        sampler.sample(1)


def test_a_total_past_the_largest_float_is_refused_and_nothing_changes():
    sampler = WeightedSampler(4)
    sampler.update([0], [1.0])
    with pytest.raises(ValueError, match="largest float"):
        sampler.update([1, 2], [1e308, 1e308])
    assert sampler.total() == 1.0 and sampler.positive() == 1
    np.testing.assert_array_equal(sampler.weights(), [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="largest float"):
        sampler.load_weights([1e308, 1e308, 0.0, 0.0])


def test_numpy_integers_and_bad_states_get_clear_errors():
    assert len(WeightedSampler(np.int64(5))) == 5
    with pytest.raises(TypeError):
        WeightedSampler(5.0)
    sampler = WeightedSampler(5)
    with pytest.raises(ValueError, match="must be a dict"):
        sampler.load_state_dict([1])
    with pytest.raises(IndexError, match="18446744073709551615 is outside"):
        sampler.update(np.array([2**64 - 1], dtype=np.uint64), [1.0])
    with pytest.raises(ValueError, match="id 3 got nan"):
        sampler.load_weights([0, 0, 0, float("nan"), 0])


def test_a_bool_size_and_malformed_states_are_refused():
    with pytest.raises(TypeError, match="not a bool"):
        WeightedSampler(True)
    sampler = WeightedSampler(3)
    with pytest.raises(ValueError, match="sampler state is for n=3.0"):
        sampler.load_state_dict({"n": 3.0, "weights": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"flat list of 3 weights; got shape \(1, 3\)"):
        sampler.load_state_dict({"n": 3, "weights": [[1, 2, 3]]})
