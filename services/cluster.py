"""The Ray cluster a run uses: joining or starting it, waiting for a new actor, and naming what failed.

    init_ray()                       # RAY_ADDRESS (as under `ray job submit`), else a new local cluster
    init_ray("auto")                 # the cluster already running on this machine
    value = await_start(handle, "verifier 1", request, handle.stats.remote(), timeout_s=900)
    print(cause_of(err))             # the error an actor raised, without Ray's traceback framing

Every actor of a run lives in the `paced` namespace, so the named ones (the embedded store) are found
across jobs: `paced scale` and `paced dashboard` attach to a running run's store by name. Every other actor
is named `RUN:ID` (`actor_name`) after the id the dashboard and the log give it: `demo:student-3`,
`demo:verifier-1`, `demo:learner-1`, so `ray list actors` and Ray's dashboard show which is which.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

# A local cluster listens on loopback only: Ray reads this when it is imported, so set it before.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray.actor import ActorHandle
from ray.client_builder import BaseContext
from ray.exceptions import RayActorError, RayError, RayTaskError

from services.placement import ActorRequest, start_report

NAMESPACE = "paced"


class ActorStartTimeout(RuntimeError):
    """A new actor did not answer its first call in time; the message names it and what it asked for."""


def init_ray(address: str | None = None) -> str:
    """Join `address` or the cluster named by RAY_ADDRESS; else start a local one on loopback. Returns the
    address of the cluster joined (its GCS), which a second process (`paced dashboard`) can join too. Prints
    one line saying which cluster it is and how it was chosen (`auto` is the newest cluster started on this
    machine, which may be another job's), naming its session, nodes and resources."""
    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
        how = "joined"
        if address == "auto":
            how += " (address auto: the newest Ray cluster started on this machine)"
        elif address == os.environ.get("RAY_ADDRESS"):
            how += f" (RAY_ADDRESS={address})"
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        context = ray.init(
            address="local",  # a new cluster: never attach to another one already running on this machine
            num_cpus=max(4, os.cpu_count() or 1),
            include_dashboard=False,
            namespace=NAMESPACE,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
        )
        how = "started a local cluster"
    gcs = ray.get_runtime_context().gcs_address
    print(f"[paced] Ray: {how} at {gcs}: {_describe(context)}", flush=True)
    return gcs


def _describe(context: BaseContext) -> str:
    """`session session_2026-..., 2 nodes, CPU 8, GPU 1, dashboard http://...`: enough to tell clusters apart."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    total = ray.cluster_resources()
    info = getattr(context, "address_info", {})  # a Ray Client context (ray://) has none
    session = os.path.basename(info.get("session_dir") or "") or "unknown"
    parts = [f"session {session}", f"{len(nodes)} node" + ("" if len(nodes) == 1 else "s")]
    parts += [f"{r} {total.get(r, 0.0):g}" for r in ("CPU", "GPU")]
    if context.dashboard_url:
        parts.append(f"dashboard http://{context.dashboard_url}")
    return ", ".join(parts)


def start_named(create: Callable[[str], ActorHandle], name: str) -> ActorHandle:
    """`create(name)`: a new actor under Ray name `name`, or `name#2`, `name#3`, ... while that name is still
    held in the namespace (a dead actor of an earlier segment of the run that Ray has not released yet)."""
    for attempt in range(1, 9):
        candidate = name if attempt == 1 else f"{name}#{attempt}"
        try:
            return create(candidate)
        except ValueError as err:
            if "already taken" not in str(err):
                raise
    raise ValueError(f"Ray actor names {name} to {name}#8 are all taken in namespace {NAMESPACE!r}")


def actor_name(run_name: str, actor_id: str) -> str:
    """The Ray name of a run's actor: `RUN:ID`, ID as the dashboard and the log name it."""
    return f"{run_name}:{actor_id}"


def await_start(
    handle: ActorHandle, name: str, request: ActorRequest, first_call: ray.ObjectRef, timeout_s: float
) -> Any:
    """The result of a new actor's first call, if it returns within `timeout_s`. Past that the actor is
    killed and `ActorStartTimeout` names it (`name`), what it asked for (`request`), whether Ray has placed
    it, and what the cluster has free. An actor whose constructor raised raises here, with its error."""
    if not ray.wait([first_call], timeout=timeout_s)[0]:
        report = start_report(handle, request)
        ray.kill(handle)
        raise ActorStartTimeout(
            f"{name} did not start within {timeout_s:g} s (pipeline.actor_start_timeout_s): {report}"
        )
    return ray.get(first_call)


def cause_of(err: BaseException) -> str:
    """The root error of a Ray actor or task failure as one line, `Type: message`, without Ray's framing.

    A task error carries the exception the actor raised (`RayTaskError.cause`). An actor that died in its
    constructor keeps only the text of that error (`ActorDiedError` formats the creation task's error into
    its message and drops the object), so there the last `Type: message` line of its traceback is used."""
    while isinstance(err, RayTaskError) and err.cause is not None and err.cause is not err:
        err = err.cause
    if isinstance(err, RayActorError) and err.actor_init_failed:
        lines = [_ANSI.sub("", line).strip() for line in str(err).splitlines()]
        raised = [line for line in lines if _RAISED.match(line)]
        if raised:
            return raised[-1]
    if isinstance(err, RayError):
        return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


# A traceback's last line, `module.Type: message` (only for an actor whose constructor raised; see cause_of).
_RAISED = re.compile(r"^[A-Za-z_][\w.]*: \S")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
