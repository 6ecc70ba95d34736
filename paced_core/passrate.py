"""Per-problem pass-rate estimates from the student's own rollouts.

Rolling mode keeps, per problem, the last `window` graded outcomes, each tagged with the policy
version that produced it. The estimate blends them with a Beta(prior_a, prior_b) prior:

    p_hat = (prior_a + correct) / (prior_a + prior_b + n),   n = outcomes in the window (<= window)

so a problem with few samples sits near the prior mean instead of jumping to 0 or 1 after one rollout.
With prior_a = prior_b = 0 the estimate is the plain empirical rate c / n (and undefined, reported as
the prior mean 0.5, while n = 0).

Frozen mode reproduces the paper's protocol: the first `frozen_k` outcomes of a problem fix its
estimate; later outcomes are counted as ignored and change nothing.

State is plain JSON-able data (lists, ints, strings): it can be written to Redis or a file as JSON
and read back without unpickling anything.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["rolling", "frozen"]


@dataclass(frozen=True)
class Estimate:
    """What the store exposes for a problem: the estimate, the sample count and the newest version."""

    p_hat: float
    n: int
    correct: int
    version: int  # newest policy version among the outcomes in the window; -1 when n == 0


def p_hat(correct: int, n: int, prior_a: float, prior_b: float) -> float:
    """(prior_a + correct) / (prior_a + prior_b + n); the prior-free 0 / 0 is reported as 0.5."""
    denom = prior_a + prior_b + n
    if denom == 0:
        return 0.5
    return (prior_a + correct) / denom


def estimate_of(outcomes: Sequence[tuple[bool, int]], prior_a: float, prior_b: float) -> Estimate:
    """The estimate of a problem whose window holds `outcomes`, (correct, version) pairs. The one
    formula every holder of pass rates uses (`PassRateTracker` and the run's stores alike)."""
    correct = sum(1 for c, _ in outcomes if c)
    return Estimate(
        p_hat=p_hat(correct, len(outcomes), prior_a, prior_b),
        n=len(outcomes),
        correct=correct,
        version=max((v for _, v in outcomes), default=-1),
    )


def settings_errors(window: Any, prior_a: Any, prior_b: Any, mode: Any, frozen_k: Any) -> list[str]:
    """What is wrong with these estimator settings (empty when nothing is): window and frozen_k are
    integers >= 1 (not bools), the priors finite numbers >= 0, the mode "rolling" or "frozen"."""
    problems = []
    for name, value in (("window", window), ("frozen_k", frozen_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be an integer >= 1; got {value!r}")
    for name, value in (("prior_a", prior_a), ("prior_b", prior_b)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            problems.append(f"Beta prior {name} must be a finite number >= 0; got {value!r}")
    if mode not in ("rolling", "frozen"):
        problems.append(f"pass-rate mode must be 'rolling' or 'frozen'; got {mode!r}")
    return problems


@dataclass
class _History:
    outcomes: deque[tuple[bool, int]] = field(default_factory=deque)
    frozen: bool = False


class PassRateTracker:
    """Rolling (or frozen) pass-rate estimates for problems identified by string ids."""

    def __init__(
        self,
        window: int = 16,
        prior_a: float = 1.0,
        prior_b: float = 1.0,
        mode: Mode = "rolling",
        frozen_k: int = 8,
    ) -> None:
        problems = settings_errors(window, prior_a, prior_b, mode, frozen_k)
        if problems:
            raise ValueError("invalid pass-rate settings: " + "; ".join(problems))
        self.window = window if mode == "rolling" else frozen_k
        self.prior_a = prior_a
        self.prior_b = prior_b
        self.mode: Mode = mode
        self.frozen_k = frozen_k
        self.ignored = 0  # outcomes dropped because their problem's estimate was frozen
        self._histories: dict[str, _History] = {}

    def record(self, problem_id: str, correct: bool, version: int) -> None:
        """Add one graded outcome produced by policy `version`."""
        if not isinstance(problem_id, str):
            raise TypeError(f"problem ids are strings; got {type(problem_id).__name__} {problem_id!r}")
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"problem {problem_id!r}: version must be an integer; got {version!r}")
        hist = self._histories.setdefault(problem_id, _History(deque(maxlen=self.window)))
        if hist.frozen:
            self.ignored += 1
            return
        hist.outcomes.append((bool(correct), version))
        if self.mode == "frozen" and len(hist.outcomes) >= self.frozen_k:
            hist.frozen = True

    def record_many(self, outcomes: Iterable[tuple[str, bool, int]]) -> None:
        """Add (problem_id, correct, version) outcomes in order."""
        for problem_id, correct, version in outcomes:
            self.record(problem_id, correct, version)

    def estimate(self, problem_id: str) -> Estimate:
        """The current estimate; a problem never seen gets the prior mean with n = 0."""
        hist = self._histories.get(problem_id)
        return estimate_of(hist.outcomes if hist else (), self.prior_a, self.prior_b)

    def is_frozen(self, problem_id: str) -> bool:
        hist = self._histories.get(problem_id)
        return bool(hist and hist.frozen)

    def problem_ids(self) -> list[str]:
        return list(self._histories)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: settings plus each problem's outcomes as [correct, version] pairs."""
        return {
            "window": self.window,
            "prior_a": self.prior_a,
            "prior_b": self.prior_b,
            "mode": self.mode,
            "frozen_k": self.frozen_k,
            "ignored": self.ignored,
            "problems": {
                pid: {"outcomes": [[int(c), v] for c, v in h.outcomes], "frozen": h.frozen}
                for pid, h in self._histories.items()
            },
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PassRateTracker:
        """Rebuild a tracker from `state_dict()` output. Everything is checked; bad state raises
        ValueError naming what is wrong and, for a problem's entry, the problem."""
        if not isinstance(state, dict):
            raise ValueError(f"malformed pass-rate state: expected an object, got {type(state).__name__}")
        missing = [key for key in ("window", "prior_a", "prior_b", "mode", "frozen_k", "ignored", "problems")
                   if key not in state]  # fmt: skip
        if missing:
            raise ValueError(f"malformed pass-rate state: missing {', '.join(missing)}")
        try:
            tracker = cls(
                window=state["window"] if state["mode"] == "rolling" else 16,
                prior_a=state["prior_a"],
                prior_b=state["prior_b"],
                mode=state["mode"],
                frozen_k=state["frozen_k"],
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed pass-rate state: {err}") from err
        ignored = state["ignored"]
        if isinstance(ignored, bool) or not isinstance(ignored, int) or ignored < 0:
            raise ValueError(f"malformed pass-rate state: ignored must be an integer >= 0; got {ignored!r}")
        tracker.ignored = ignored
        if not isinstance(state["problems"], dict):
            raise ValueError("malformed pass-rate state: problems must be an object keyed by problem id")
        for pid, entry in state["problems"].items():
            tracker._histories[pid] = tracker._history_from(pid, entry)
        return tracker

    def _history_from(self, pid: str, entry: Any) -> _History:
        where = f"malformed pass-rate state for problem {pid!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("outcomes"), list):
            raise ValueError(f"{where}: expected {{'outcomes': [[correct, version], ...], 'frozen': bool}}")
        frozen = entry.get("frozen")
        if not isinstance(frozen, bool):
            raise ValueError(f"{where}: frozen must be true or false; got {frozen!r}")
        if frozen and self.mode == "rolling":
            raise ValueError(f"{where}: frozen in a rolling-mode tracker")
        outcomes = []
        for pair in entry["outcomes"]:
            ok = isinstance(pair, list) and len(pair) == 2 and pair[0] in (0, 1) and not isinstance(pair[1], bool)
            if not ok or not isinstance(pair[1], int):
                raise ValueError(f"{where}: each outcome must be [0 or 1, integer version]; got {pair!r}")
            outcomes.append((bool(pair[0]), pair[1]))
        if len(outcomes) > self.window:
            raise ValueError(f"{where}: {len(outcomes)} outcomes, more than the window {self.window}")
        return _History(deque(outcomes, maxlen=self.window), frozen=frozen)
