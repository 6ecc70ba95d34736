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


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(problems=[1]), "problems must be an object"),
        (lambda s: s["problems"]["a"].update(frozen="false"), "problem 'a': frozen must be true or false"),
        (lambda s: s["problems"]["a"].update(frozen=True), "problem 'a': frozen in a rolling-mode tracker"),
        (lambda s: s["problems"]["a"].update(outcomes=[[1, "v3"]]), "problem 'a': each outcome"),
        (lambda s: s["problems"]["a"].update(outcomes=[[2, 3]]), "problem 'a': each outcome"),
        (lambda s: s["problems"].update(b=[1, 2]), "problem 'b': expected"),
        (lambda s: s.update(window=2.5), "window must be an integer"),
        (lambda s: s.update(prior_a=float("inf")), "prior_a must be a finite number"),
        (lambda s: s.update(ignored=-1), "ignored must be an integer >= 0"),
    ],
)
def test_malformed_state_names_what_and_which_problem(mutate, message):
    tracker = PassRateTracker(window=4)
    tracker.record("a", True, 3)
    state = json.loads(json.dumps(tracker.state_dict()))
    mutate(state)
    with pytest.raises(ValueError, match=message):
        PassRateTracker.from_state_dict(state)
    with pytest.raises(ValueError, match="expected an object"):
        PassRateTracker.from_state_dict([1])


def test_bad_records_are_refused_without_leaving_a_trace():
    tracker = PassRateTracker()
    with pytest.raises(TypeError, match="version must be an integer"):
        tracker.record("a", True, "seven")
    with pytest.raises(TypeError, match="problem ids are strings"):
        tracker.record(7, True, 1)
    assert tracker.problem_ids() == []
    with pytest.raises(ValueError, match="window must be an integer"):
        PassRateTracker(window=2.5)
    with pytest.raises(ValueError, match="prior_b must be a finite number"):
        PassRateTracker(prior_b=float("inf"))


def test_the_stores_use_the_trackers_formula():
    from services.store.base import StoreSettings

    settings = StoreSettings(window=4, prior_a=0.5, prior_b=2.0)
    tracker = PassRateTracker(window=4, prior_a=0.5, prior_b=2.0)
    for correct, version in [(True, 1), (False, 2), (True, 3)]:
        tracker.record("p", correct, version)
    assert settings.estimate([(True, 1), (False, 2), (True, 3)]) == tracker.estimate("p")
