"""`cause_of`: the one line a user sees for an error raised inside an actor, from the exception itself
(`RayTaskError.cause`), or, for an actor whose constructor raised, from the text Ray keeps of it."""

from __future__ import annotations

import re
import subprocess
import sys
import traceback

import ray.exceptions as rex

from services.cluster import cause_of
from services.rollout import PromptTooLong


def task_error(exc: Exception) -> rex.RayTaskError:
    try:
        raise exc
    except Exception as raised:
        return rex.RayTaskError("HFRolloutWorker.__init__", traceback.format_exc(), raised, pid=1, ip="127.0.0.1")


def test_a_task_error_is_named_by_the_exception_it_carries():
    err = task_error(PromptTooLong("problem 'p7' has a prompt of 9,000 tokens")).as_instanceof_cause()
    assert cause_of(err) == "PromptTooLong: problem 'p7' has a prompt of 9,000 tokens"


def test_an_actor_that_died_in_its_constructor_is_named_by_its_error():
    died = rex.ActorDiedError(task_error(PromptTooLong("problem 'p7' has a prompt of 9,000 tokens")))
    assert cause_of(died) == "services.rollout.PromptTooLong: problem 'p7' has a prompt of 9,000 tokens"


def test_anything_else_is_its_first_line():
    assert cause_of(ValueError("bad\nmore")) == "ValueError: bad\nmore"
    assert cause_of(rex.GetTimeoutError("Get timed out\ndetail")) == "Get timed out"


def test_init_ray_says_which_cluster_it_started():
    code = "from services.cluster import init_ray; print(init_ray())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("[paced] Ray:"))
    gcs = proc.stdout.splitlines()[-1]
    assert re.fullmatch(
        rf"\[paced\] Ray: started a local cluster at {re.escape(gcs)}: session session_[\w-]+, 1 node, CPU \d+, GPU 0",
        line,
    ), line
