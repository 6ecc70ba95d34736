"""The estimated time left of a run, for its progress lines.

    eta(done=412, total=500, elapsed_s=72.0)  ->  "eta 15 s"

The rate is the mean so far, elapsed_s / done seconds per step, so the estimate is
(total - done) * elapsed_s / done.
"""

from __future__ import annotations

import math


def eta(done: int, total: int, elapsed_s: float) -> str:
    """`eta 15 s`, `eta 4 min 05 s`, `eta 2 h 03 min`; `eta ?` before the first step; `done` once
    `done >= total`. Raises `ValueError` for a negative count, a total below 1 or a negative or non-finite
    elapsed time."""
    if done < 0 or total < 1:
        raise ValueError(f"eta(done={done}, total={total}): done must be >= 0 and total >= 1")
    if not (math.isfinite(elapsed_s) and elapsed_s >= 0):
        raise ValueError(f"eta(elapsed_s={elapsed_s}): elapsed time must be a finite number >= 0")
    if done >= total:
        return "done"
    if done == 0:
        return "eta ?"
    left = round((total - done) * elapsed_s / done)
    if left < 60:
        return f"eta {left} s"
    if left < 3600:
        return f"eta {left // 60} min {left % 60:02d} s"
    return f"eta {left // 3600} h {left % 3600 // 60:02d} min"
