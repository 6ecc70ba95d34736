"""Rolling and frozen pass-rate estimates, and their JSON state."""

import json

import pytest

from paced_core.passrate import PassRateTracker


def test_unseen_problem_has_the_prior_mean_and_no_samples():
    est = PassRateTracker(prior_a=1.0, prior_b=3.0).estimate("never")
    assert est.p_hat == 0.25 and est.n == 0 and est.version == -1


def test_estimate_blends_outcomes_with_the_beta_prior():
    tracker = PassRateTracker(window=16, prior_a=1.0, prior_b=1.0)
    tracker.record_many([("q", True, 0), ("q", True, 1), ("q", False, 1)])
    est = tracker.estimate("q")
    assert est.p_hat == pytest.approx((1 + 2) / (2 + 3))
    assert (est.n, est.correct, est.version) == (3, 2, 1)


def test_zero_prior_gives_the_empirical_rate():
    tracker = PassRateTracker(prior_a=0.0, prior_b=0.0)
    assert tracker.estimate("q").p_hat == 0.5
    tracker.record_many([("q", True, 0), ("q", False, 0), ("q", False, 0), ("q", False, 0)])
    assert tracker.estimate("q").p_hat == 0.25


def test_window_keeps_only_the_most_recent_outcomes():
    tracker = PassRateTracker(window=4, prior_a=0.0, prior_b=0.0)
    for version in range(4):
        tracker.record("q", False, version)
    for version in range(4, 8):
        tracker.record("q", True, version)
    est = tracker.estimate("q")
    assert (est.p_hat, est.n, est.version) == (1.0, 4, 7)


def test_newest_version_is_the_max_not_the_last_recorded():
    tracker = PassRateTracker()
    tracker.record("q", True, 5)
    tracker.record("q", True, 3)  # a late rollout from an older policy
    assert tracker.estimate("q").version == 5


def test_frozen_mode_fixes_the_estimate_after_k_outcomes():
    tracker = PassRateTracker(mode="frozen", frozen_k=4, prior_a=0.0, prior_b=0.0)
    tracker.record_many([("q", c, 0) for c in (True, False, False, False)])
    assert tracker.is_frozen("q")
    tracker.record_many([("q", True, 1)] * 10)
    est = tracker.estimate("q")
    assert (est.p_hat, est.n) == (0.25, 4)
    assert tracker.ignored == 10


def test_state_round_trips_through_json():
    tracker = PassRateTracker(window=3, prior_a=0.5, prior_b=2.0)
    tracker.record_many([("a", True, 1), ("a", False, 2), ("b", True, 0), ("a", True, 3), ("a", True, 4)])
    state = json.loads(json.dumps(tracker.state_dict()))
    restored = PassRateTracker.from_state_dict(state)
    for pid in ("a", "b", "c"):
        assert restored.estimate(pid) == tracker.estimate(pid)
    restored.record("a", False, 5)
    tracker.record("a", False, 5)
    assert restored.estimate("a") == tracker.estimate("a")


def test_frozen_state_round_trips():
    tracker = PassRateTracker(mode="frozen", frozen_k=2)
    tracker.record_many([("a", True, 0), ("a", True, 0), ("a", False, 1)])
    restored = PassRateTracker.from_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert restored.is_frozen("a") and restored.ignored == 1
    assert restored.estimate("a") == tracker.estimate("a")


def test_malformed_state_and_settings_are_rejected():
    with pytest.raises(ValueError, match="malformed pass-rate state"):
        PassRateTracker.from_state_dict({"mode": "rolling"})
    with pytest.raises(ValueError, match="window"):
        PassRateTracker(window=0)
    with pytest.raises(ValueError, match="mode"):
        PassRateTracker(mode="sometimes")
