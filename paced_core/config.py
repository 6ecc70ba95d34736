"""One typed configuration tree for a whole PACED run, loaded from YAML with dotted overrides.

    cfg = load_config("configs/reference.yaml", overrides=["learner.lr=1e-5"])

Every section rejects unknown keys; loss kinds, kernels, schedules and data sources are
discriminated unions (`kind:` / `type:`), so a bad combination fails at load, before any model is
touched. Errors are raised as `ConfigError`, one line per problem, each naming the config path and,
where the value came from the file, its line (`configs/x.yaml:12: learner.lr: ...`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from paced_core import weighting
from paced_core.redact import mask_url


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every problem and where it is."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- models


class StudentConfig(Section):
    """The model being trained. `path` is a Hugging Face id or a local directory."""

    path: str = Field(min_length=1)
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: bool = False


class TeacherConfig(Section):
    """The frozen teacher. `path: null` means self-distillation: the frozen initial student."""

    path: str | None = None
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Self-distillation teacher prompt: the problem plus its reference answer (privileged context).
    privileged_context: bool = False
    # What the loss sees of the teacher: its full logits (exact over the vocabulary), or only its top-k
    # log-probs plus one tail bucket, which is what a served teacher (vLLM's `logprobs=k`) returns. The
    # learner loads the teacher either way; `topk` reduces its logits to that view before the loss.
    logits: Literal["full", "topk"] = "full"
    topk: int = Field(default=64, ge=1)
    # Teacher references for stages trained on teacher sequences: generated before training by a
    # teacher rollout worker, verified, and only the correct ones kept.
    reference_samples: int = Field(default=1, ge=1)
    reference_temperature: float = Field(default=0.0, ge=0.0)


# ---------------------------------------------------------------- data


class BuiltinData(Section):
    type: Literal["builtin"] = "builtin"
    name: str


class JsonlData(Section):
    type: Literal["jsonl"] = "jsonl"
    path: str


class SyntheticData(Section):
    type: Literal["synthetic"] = "synthetic"
    n: int = Field(default=2000, ge=1)
    levels: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    seed: int = 0


DataSource = Annotated[BuiltinData | JsonlData | SyntheticData, Field(discriminator="type")]


class DataConfig(Section):
    # One source, or a list of sources concatenated into one pool (problem ids must not repeat).
    train: DataSource | list[DataSource]
    heldout: DataSource | None = None
    # Further evaluation sets, by name: evaluated before and after the run (e.g. MATH-500, AIME 2024).
    eval_sets: dict[str, DataSource] = Field(default_factory=dict)
    # With no separate held-out source, this fraction of `train` is held out (deterministically).
    heldout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    limit: int | None = Field(default=None, ge=1)
    template: str = "plain"


# ---------------------------------------------------------------- actors


class VLLMEngineConfig(Section):
    """The `vllm` backend's engine (`vllm.LLM` arguments); ignored by the `hf` backend."""

    max_model_len: int | None = Field(default=None, ge=1)  # None: the model's own context length
    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    # KV cache size in GiB; None: vLLM's default (on CPU 4 GiB, or $VLLM_CPU_KVCACHE_SPACE).
    kv_cache_gib: float | None = Field(default=None, gt=0.0)
    tensor_parallel_size: int = Field(default=1, ge=1)
    enforce_eager: bool = False
    # How new weights reach the engines: object_store (CPU and GPU) or nccl (GPU only); see services/weight_sync.py.
    weight_transport: Literal["object_store", "nccl"] = "object_store"

    def engine_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        if self.kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        return args


class RolloutConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    replicas: int = Field(default=1, ge=0)
    samples_per_problem: int = Field(default=4, ge=1)
    batch_size: int = Field(default=16, ge=1)
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, ge=-1)
    max_new_tokens: int = Field(default=256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0
    num_cpus: float = Field(default=1.0, ge=0.0)  # Ray resources per rollout actor
    num_gpus: float = Field(default=0.0, ge=0.0)
    logprobs: bool = False  # return each sampled token's log-prob with the rollout (vllm backend)
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)


class VerifierConfig(Section):
    # "auto": each problem's own checker (exact for synthetic, math for MATH-style, choice for MMLU).
    checker: Literal["auto", "math", "exact", "choice"] = "auto"
    replicas: int = Field(default=1, ge=1)
    workers: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=5.0, gt=0.0)
    num_cpus: float = Field(default=0.5, ge=0.0)


class StoreConfig(Section):
    """Where pass rates live. No `url` means the embedded in-memory store (a named Ray actor)."""

    url: SecretStr | None = None
    # Key prefix of the run in the store; null: the run's name (run.name), so runs never collide.
    run_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    window: int = Field(default=16, ge=1)
    prior_a: float = Field(default=1.0, ge=0.0)
    prior_b: float = Field(default=1.0, ge=0.0)
    mode: Literal["rolling", "frozen"] = "rolling"
    frozen_k: int = Field(default=8, ge=1)
    metrics_cap: int = Field(default=100_000, ge=1)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not re.match(r"^(redis|rediss|unix)://", url.get_secret_value()):
            raise ValueError(
                f"must start with redis://, rediss:// or unix://; got {mask_url(url.get_secret_value())!r}"
            )
        return url


# ---------------------------------------------------------------- weighting


class BetaKernel(Section):
    """w(p) = p^a (1-p)^b; a = b = 1 is PACED's p(1-p)."""

    type: Literal["beta"] = "beta"
    a: float = Field(default=1.0, ge=0.0)
    b: float = Field(default=1.0, ge=0.0)

    def build(self) -> weighting.Kernel:
        return functools.partial(weighting.beta_kernel, a=self.a, b=self.b)


class UniformKernel(Section):
    type: Literal["uniform"] = "uniform"

    def build(self) -> weighting.Kernel:
        return weighting.uniform


class HardKernel(Section):
    type: Literal["hard"] = "hard"

    def build(self) -> weighting.Kernel:
        return weighting.hard


def _tag_or_default(default: str, key: str = "type") -> Discriminator:
    """A union tag that may be left out of a section (`scheduler.kernel: {a: 2}` means a beta kernel)."""

    def tag(value: Any) -> str:
        return value.get(key, default) if isinstance(value, dict) else getattr(value, key, default)

    return Discriminator(tag)


KernelSpec = Annotated[
    Annotated[BetaKernel, Tag("beta")]
    | Annotated[UniformKernel, Tag("uniform")]
    | Annotated[HardKernel, Tag("hard")],
    _tag_or_default("beta"),
]


class SchedulerConfig(Section):
    kernel: KernelSpec = Field(default_factory=BetaKernel)
    # "sample": draw problems in proportion to w; "loss": draw uniformly, multiply each loss by w.
    weighting: Literal["sample", "loss"] = "sample"
    floor: float = Field(default=0.01, ge=0.0)  # sampling floor, keeps p in {0, 1} re-estimable
    explore_weight: float = Field(default=0.25, ge=0.0)  # weight of a problem with no estimate yet
    stale_after_versions: int = Field(default=50, ge=1)  # estimates older than this count as unknown
    seed: int = 0


# ---------------------------------------------------------------- learning


class ForwardKL(Section):
    kind: Literal["forward_kl"] = "forward_kl"
    # Which sequences the loss is computed on; forward KL is teacher-forced on teacher references.
    sequences: Literal["teacher", "student"] = "teacher"


class ReverseKL(Section):
    kind: Literal["reverse_kl"] = "reverse_kl"
    sequences: Literal["teacher", "student"] = "student"


class JSD(Section):
    kind: Literal["jsd"] = "jsd"
    beta: float = Field(default=0.5, ge=0.0, le=1.0)
    sequences: Literal["teacher", "student"] = "student"


class AKL(Section):
    kind: Literal["akl"] = "akl"
    mu: float = Field(default=0.5, gt=0.0, le=1.0)
    sequences: Literal["teacher", "student"] = "student"


LossSpec = Annotated[ForwardKL | ReverseKL | JSD | AKL, Field(discriminator="kind")]


class ConstantSchedule(Section):
    type: Literal["constant"] = "constant"
    loss: LossSpec = Field(default_factory=ReverseKL)


class TwoStageSchedule(Section):
    """`first` until the switch, then `second`; switch at a step or at a fraction of the run."""

    type: Literal["two_stage"] = "two_stage"
    first: LossSpec = Field(default_factory=ForwardKL)
    second: LossSpec = Field(default_factory=ReverseKL)
    switch_step: int | None = Field(default=None, ge=0)
    switch_fraction: float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_switch(self) -> TwoStageSchedule:
        if (self.switch_step is None) == (self.switch_fraction is None):
            raise ValueError("give exactly one of switch_step and switch_fraction")
        return self


ScheduleSpec = Annotated[
    Annotated[ConstantSchedule, Tag("constant")] | Annotated[TwoStageSchedule, Tag("two_stage")],
    _tag_or_default("constant"),
]


class LearnerConfig(Section):
    steps: int = Field(default=100, ge=1)
    batch_size: int = Field(default=16, ge=1)  # sequences per optimizer step
    lr: float = Field(default=1e-5, gt=0.0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(default=1.0, gt=0.0)
    chunk_size: int = Field(default=128, ge=1)  # tokens per chunk in the KL
    sync_every: int = Field(default=1, ge=1)  # publish weights every N steps
    max_staleness: int = Field(default=4, ge=0)  # drop rollouts more than N versions old
    checkpoint_every: int | None = Field(default=None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    num_cpus: float = Field(default=1.0, ge=0.0)  # Ray resources of the learner actor
    num_gpus: float = Field(default=0.0, ge=0.0)


class DashboardConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Bearer token for control endpoints; read from this environment variable when `token` is unset.
    token: SecretStr | None = None
    token_env: str = "PACED_DASHBOARD_TOKEN"


class PipelineConfig(Section):
    """How the driver runs the graph."""

    # async: rollouts, grading and learning overlap; sync: generate, grade, train, sync, repeat.
    mode: Literal["async", "sync"] = "async"
    # Problems per generation request (each sampled `rollout.samples_per_problem` times).
    problems_per_request: int = Field(default=8, ge=1)
    # Back-pressure: stop dispatching rollouts while this many graded rollouts wait for the learner.
    max_queued_rollouts: int = Field(default=256, ge=1)
    # Before training, sample every pool problem this many times to seed pass rates (0: skip).
    warmup_samples: int = Field(default=0, ge=0)
    # Held-out problems evaluated before, during and after the run (0: all).
    eval_problems: int = Field(default=200, ge=0)
    # Completions per evaluated problem: 1 is greedy; k > 1 samples k (top-p, top-k, max tokens of the
    # rollouts) and reports mean accuracy over the k (mean@k), as for AIME.
    eval_samples: int = Field(default=1, ge=1)
    # Sampling temperature of mean@k evaluation (None: rollout.temperature).
    eval_temperature: float | None = Field(default=None, gt=0.0)
    # Seconds the learner waits for a full batch before training on what it has.
    learner_wait_s: float = Field(default=30.0, gt=0.0)


class RunConfig(Section):
    name: str = Field(default="paced", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    eval_every: int = Field(default=20, ge=1)
    log_every_s: float = Field(default=5.0, gt=0.0)


class PacedConfig(Section):
    """A whole run. Only `student` and `data` have no defaults."""

    run: RunConfig = Field(default_factory=RunConfig)
    student: StudentConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    data: DataConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    schedule: ScheduleSpec = Field(default_factory=ConstantSchedule)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    @model_validator(mode="after")
    def _consistent(self) -> PacedConfig:
        if self.store.run_name is None:
            self.store.run_name = self.run.name
        sched = self.schedule
        switch = sched.switch_step if isinstance(sched, TwoStageSchedule) else None
        if switch is not None and switch >= self.learner.steps:
            raise ValueError(
                f"schedule.switch_step ({switch}) must be below learner.steps "
                f"({self.learner.steps}), or the second stage never runs"
            )
        if self.rollout.backend == "vllm":
            for section in ("student", "teacher"):
                if getattr(self, section).gguf_file is not None:
                    raise ValueError(
                        f"{section}.gguf_file: the vllm backend loads model directories; convert the GGUF file "
                        f"once with `paced models import-gguf SRC DIR` and set {section}.path to DIR"
                    )
        elif self.rollout.logprobs:
            raise ValueError("rollout.logprobs needs rollout.backend 'vllm'")
        return self

    def to_plain(self, reveal_secrets: bool = False) -> dict[str, Any]:
        """The resolved config as plain data; secrets masked unless `reveal_secrets`."""
        data = self.model_dump(mode="json")
        if reveal_secrets:
            if self.store.url is not None:
                data["store"]["url"] = self.store.url.get_secret_value()
            if self.dashboard.token is not None:
                data["dashboard"]["token"] = self.dashboard.token.get_secret_value()
        elif self.store.url is not None:
            data["store"]["url"] = mask_url(self.store.url.get_secret_value())
        return data


# ---------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> PacedConfig:
    """Read a YAML file, apply `section.key=value` overrides (values parsed as YAML), validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    lines = _line_index(node)
    for override in overrides:
        apply_override(raw, override)
        # A value set on the command line is reported as such, not at the file line it replaced.
        key = tuple(override.partition("=")[0].strip().split("."))
        lines = {p: n for p, n in lines.items() if p[: len(key)] != key}
        lines[key] = f"--set {mask_url(override)}"
    return validate_config(raw, source=str(path), lines=lines)


def validate_config(
    raw: dict[str, Any], source: str = "<config>", lines: dict[tuple[str, ...], int | str] | None = None
) -> PacedConfig:
    """Validate plain data as a `PacedConfig`; every error names its dotted path (and file line)."""
    try:
        return PacedConfig.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False):
            loc = tuple(str(part) for part in e["loc"])
            dotted = _dotted(loc, raw) or "(top level)"
            line = _nearest_line(loc, raw, lines or {})
            where = line if isinstance(line, str) else f"{source}:{line}" if line else source
            problems.append(f"{where}: {dotted}: {e['msg']}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in nested plain data; the value is parsed as YAML (`1e-5`, `true`, `[1, 2]`)."""
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {override!r}: expected dotted.path=value, e.g. learner.lr=1e-5")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {err}") from err
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {override!r}: {prefix} is a value ({child!r}), not a section")
        node = child
    node[parts[-1]] = parsed


def _dotted(loc: tuple[str, ...], raw: dict[str, Any]) -> str:
    """The config path a user wrote: drop pydantic's union-tag segments (e.g. `two_stage`)."""
    out, node = [], raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            out.append(part)
            node = node[int(part)]
        elif isinstance(node, dict):
            # Either a missing key the user must add (keep it) or a union tag (skip it).
            if part not in _UNION_TAGS:
                out.append(part)
                node = None
        else:
            out.append(part)
            node = None
    return ".".join(out)


_UNION_TAGS = {
    "builtin", "jsonl", "synthetic", "beta", "uniform", "hard",
    "forward_kl", "reverse_kl", "jsd", "akl", "constant", "two_stage",
}  # fmt: skip


def _nearest_line(
    loc: tuple[str, ...], raw: dict[str, Any], lines: dict[tuple[str, ...], int | str]
) -> int | str | None:
    """The file line (or the --set text) closest to the error's path."""
    path = tuple(_dotted(loc, raw).split("."))
    for key, where in lines.items():
        if isinstance(where, str) and key[: len(path)] == path:
            return where
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _line_index(node: yaml.Node | None) -> dict[tuple[str, ...], int | str]:
    """Map each key path in a composed YAML document to its 1-based line."""
    index: dict[tuple[str, ...], int | str] = {}

    def walk(n: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                path = (*prefix, str(key.value))
                index[path] = key.start_mark.line + 1
                walk(value, path)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                index[(*prefix, str(i))] = item.start_mark.line + 1
                walk(item, (*prefix, str(i)))

    if node is not None:
        walk(node, ())
    return index


def dump_config(cfg: PacedConfig) -> str:
    """The resolved config as YAML (secrets masked): what `paced config show` prints."""
    return yaml.safe_dump(cfg.to_plain(), sort_keys=False)

