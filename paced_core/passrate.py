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

from collections import deque
from collections.abc import Iterable
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
        if window < 1:
            raise ValueError(f"pass-rate window must be >= 1; got {window}")
        if prior_a < 0 or prior_b < 0:
            raise ValueError(f"Beta prior must be >= 0; got a={prior_a}, b={prior_b}")
        if mode not in ("rolling", "frozen"):
            raise ValueError(f"pass-rate mode must be 'rolling' or 'frozen'; got {mode!r}")
        if mode == "frozen" and frozen_k < 1:
            raise ValueError(f"frozen_k must be >= 1; got {frozen_k}")
        self.window = window if mode == "rolling" else frozen_k
        self.prior_a = prior_a
        self.prior_b = prior_b
        self.mode: Mode = mode
        self.frozen_k = frozen_k
        self.ignored = 0  # outcomes dropped because their problem's estimate was frozen
        self._histories: dict[str, _History] = {}

    def record(self, problem_id: str, correct: bool, version: int) -> None:
        """Add one graded outcome produced by policy `version`."""
        hist = self._histories.setdefault(problem_id, _History(deque(maxlen=self.window)))
        if hist.frozen:
            self.ignored += 1
            return
        hist.outcomes.append((bool(correct), int(version)))
        if self.mode == "frozen" and len(hist.outcomes) >= self.frozen_k:
            hist.frozen = True

    def record_many(self, outcomes: Iterable[tuple[str, bool, int]]) -> None:
        """Add (problem_id, correct, version) outcomes in order."""
        for problem_id, correct, version in outcomes:
            self.record(problem_id, correct, version)

    def estimate(self, problem_id: str) -> Estimate:
        """The current estimate; a problem never seen gets the prior mean with n = 0."""
        hist = self._histories.get(problem_id)
        outcomes = hist.outcomes if hist else ()
        n = len(outcomes)
        correct = sum(c for c, _ in outcomes)
        return Estimate(
            p_hat=self._p_hat(correct, n),
            n=n,
            correct=correct,
            version=max((v for _, v in outcomes), default=-1),
        )

    def _p_hat(self, correct: int, n: int) -> float:
        denom = self.prior_a + self.prior_b + n
        if denom == 0:
            return 0.5
        return (self.prior_a + correct) / denom

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
        """Rebuild a tracker from `state_dict()` output (validated; bad state raises ValueError)."""
        try:
            tracker = cls(
                window=state["window"] if state["mode"] == "rolling" else 16,
                prior_a=state["prior_a"],
                prior_b=state["prior_b"],
                mode=state["mode"],
                frozen_k=state["frozen_k"],
            )
            tracker.ignored = int(state["ignored"])
            for pid, entry in state["problems"].items():
                outcomes = [(bool(c), int(v)) for c, v in entry["outcomes"]]
                if len(outcomes) > tracker.window:
                    raise ValueError(
                        f"problem {pid!r} has {len(outcomes)} outcomes, more than the window {tracker.window}"
                    )
                tracker._histories[pid] = _History(
                    deque(outcomes, maxlen=tracker.window), frozen=bool(entry["frozen"])
                )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed pass-rate state: {err!r}") from err
        return tracker
