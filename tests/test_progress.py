"""The ETA of a progress line: the steps left at the mean rate so far, in the unit a person reads."""

from __future__ import annotations

import math

import pytest

from paced_core.progress import eta


@pytest.mark.parametrize(
    ("done", "total", "elapsed_s", "text"),
    [
        (412, 500, 72.0, "eta 15 s"),
        (1, 100, 2.5, "eta 4 min 08 s"),
        (10, 1000, 75.0, "eta 2 h 03 min"),
        (0, 500, 3.0, "eta ?"),
        (500, 500, 72.0, "done"),
        (3, 3, 0.0, "done"),
    ],
)
def test_the_time_left_at_the_mean_rate(done, total, elapsed_s, text):
    assert eta(done, total, elapsed_s) == text


@pytest.mark.parametrize(("done", "total", "elapsed_s"), [(-1, 5, 1.0), (0, 0, 1.0), (1, 5, -1.0), (1, 5, math.nan)])
def test_impossible_figures_are_refused(done, total, elapsed_s):
    with pytest.raises(ValueError, match="eta"):
        eta(done, total, elapsed_s)
