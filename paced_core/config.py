"""One typed configuration tree for a whole PACED run, loaded from YAML with dotted overrides.

    cfg = load_config("configs/reference.yaml", overrides=["learner.lr=1e-5"])

Every section rejects unknown keys; loss kinds, kernels, schedules and data sources are
discriminated unions (`kind:` / `type:`), so a bad combination fails at load, before any model is
touched. Numbers must be finite, and a boolean is not a number. Errors are raised as `ConfigError`, one
line per problem, each naming the config path as the user writes it (`data.train[1].path`) and where its value
came from: the file line, or the `--set` that gave it (`configs/x.yaml:12: learner.lr: ...`). Secret values
(`SecretStr` fields) never appear in an error.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from paced_core import weighting
from paced_core.redact import mask_url, names_a_credential
from paced_core.tasks import BUILTIN_DATASETS, BUILTIN_TEMPLATES, get_template, synthetic_arithmetic


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every problem and where it is."""


class Section(BaseModel):
    # No setting means anything at infinity or NaN; `None` is how a section says "no limit".
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _not_a_bool(value: Any) -> Any:
    # YAML reads `true`, `yes` and `on` as booleans, which pydantic would otherwise take as 1 (or 0).
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


def _only_a_bool(value: Any) -> Any:
    # pydantic would otherwise read 1, 0, "yes" or "off" as a boolean; YAML already gives true/false.
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
Bool = Annotated[bool, BeforeValidator(_only_a_bool)]


def _conflict(message: str, *fields: str) -> PydanticCustomError:
    """A cross-field error; `fields` are the dotted paths involved, the first reported as its location."""
    return PydanticCustomError("config_conflict", "{message}", {"message": message, "fields": fields})


def _default_tag(key: str, default: str) -> BeforeValidator:
    """Let a union section leave its tag out (`scheduler.kernel: {a: 2}` means a beta kernel)."""

    def fill(value: Any) -> Any:
        return {key: default, **value} if isinstance(value, dict) else value

    return BeforeValidator(fill)


# ---------------------------------------------------------------- models


class StudentConfig(Section):
    """The model being trained. `path` is a Hugging Face id or a local directory."""

    path: str = Field(min_length=1)
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: Bool = False


class TeacherConfig(Section):
    """The frozen teacher. `path: null` means self-distillation: the frozen initial student."""

    path: str | None = None
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Self-distillation teacher prompt: the problem plus its reference answer (privileged context).
    privileged_context: Bool = False
    # What the loss sees of the teacher: its full logits (exact over the vocabulary), or only its top-k
    # log-probs plus one tail bucket, which is what a served teacher (vLLM's `logprobs=k`) returns. The
    # learner loads the teacher either way; `topk` reduces its logits to that view before the loss.
    logits: Literal["full", "topk"] = "full"
    topk: Int = Field(default=64, ge=1)
    # Teacher references for stages trained on teacher sequences: generated before training by a
    # teacher rollout worker, verified, and only the correct ones kept.
    reference_samples: Int = Field(default=1, ge=1)
    reference_temperature: Float = Field(default=0.0, ge=0.0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "serving" in data:
            raise ValueError(
                "teacher.serving was replaced by teacher.logits: 'full' (was colocated) or 'topk' (was remote_topk)"
            )
        return data


# ---------------------------------------------------------------- data


class BuiltinData(Section):
    type: Literal["builtin"] = "builtin"
    name: str

    @field_validator("name")
    @classmethod
    def _shipped(cls, name: str) -> str:
        if name not in BUILTIN_DATASETS:
            raise ValueError(f"unknown built-in dataset {name!r}; the package ships {', '.join(BUILTIN_DATASETS)}")
        return name


class JsonlData(Section):
    type: Literal["jsonl"] = "jsonl"
    path: str


class SyntheticData(Section):
    type: Literal["synthetic"] = "synthetic"
    n: Int = Field(default=2000, ge=1)
    levels: list[Int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    # The share of the pool at each level (one positive number per level; default: equal shares).
    shares: list[Float] | None = None
    seed: Int = 0

    @field_validator("levels")
    @classmethod
    def _known_levels(cls, levels: list[int]) -> list[int]:
        synthetic_arithmetic(0, levels=levels)  # the generator owns the rule; it names an unknown or repeated level
        return levels

    @model_validator(mode="after")
    def _shares_fit_levels(self) -> SyntheticData:
        if self.shares is not None:
            synthetic_arithmetic(0, levels=self.levels, shares=self.shares)
        return self


DataSource = Annotated[BuiltinData | JsonlData | SyntheticData, Field(discriminator="type")]
# One source or a list of them, told apart by shape, so an error names only the shape given.
DataSources = Annotated[
    Annotated[DataSource, Tag("one")] | Annotated[list[DataSource], Tag("list")],
    Discriminator(lambda value: "list" if isinstance(value, list) else "one"),
]


class DataConfig(Section):
    # One source, or a list of sources concatenated into one pool (problem ids must not repeat).
    train: DataSources
    heldout: DataSource | None = None
    # Further evaluation sets, by name: evaluated before and after the run (e.g. MATH-500, AIME 2024).
    eval_sets: dict[str, DataSource] = Field(default_factory=dict)
    # With no separate held-out source, this fraction of `train` is held out (deterministically).
    heldout_fraction: Float = Field(default=0.1, ge=0.0, lt=1.0)
    limit: Int | None = Field(default=None, ge=1)
    template: str = "plain"

    @field_validator("template")
    @classmethod
    def _student_template(cls, name: str) -> str:
        get_template(name)  # raises ValueError listing the known templates
        if name == "privileged_context":
            others = ", ".join(t for t in BUILTIN_TEMPLATES if t != name)
            raise ValueError(
                "privileged_context shows the reference answer, so it is the teacher's prompt only "
                f"(teacher.privileged_context: true); give the student one of {others}"
            )
        return name


# ---------------------------------------------------------------- actors


class VLLMEngineConfig(Section):
    """The `vllm` backend's engine (`vllm.LLM` arguments); ignored by the `hf` backend."""

    max_model_len: Int | None = Field(default=None, ge=1)  # None: the model's own context length
    gpu_memory_utilization: Float = Field(default=0.85, gt=0.0, le=1.0)
    # KV cache size in GiB; None: vLLM's default (on CPU 4 GiB, or $VLLM_CPU_KVCACHE_SPACE).
    kv_cache_gib: Float | None = Field(default=None, gt=0.0)
    tensor_parallel_size: Int = Field(default=1, ge=1)
    enforce_eager: Bool = False
    # How new weights reach the engines (services/weight_sync.py): object_store (CPU and GPU), nccl (GPU: engines
    # on other GPUs than the learner) or ipc (GPU: the engine on the learner's own GPU).
    weight_transport: Literal["object_store", "nccl", "ipc"] = "object_store"

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
    replicas: Int = Field(default=1, ge=0)
    samples_per_problem: Int = Field(default=4, ge=1)
    batch_size: Int = Field(default=16, ge=1)
    temperature: Float = Field(default=1.0, ge=0.0)
    top_p: Float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: Int = Field(default=-1, ge=-1)
    max_new_tokens: Int = Field(default=256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: Int = 0
    num_cpus: Float = Field(default=1.0, ge=0.0)  # Ray resources per rollout actor
    num_gpus: Float = Field(default=0.0, ge=0.0)
    logprobs: Bool = False  # return each sampled token's log-prob with the rollout (vllm backend)
    # The hf backend's KV cache: "dynamic" grows with the sequence; "static" is preallocated at prompt +
    # max_new_tokens, which lets CUDA graphs / torch.compile run on a GPU (on a CPU it only costs memory).
    hf_cache: Literal["dynamic", "static"] = "dynamic"
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)


class VerifierConfig(Section):
    # "auto": each problem's own checker (exact for synthetic, math for MATH-style, choice for MMLU).
    checker: Literal["auto", "math", "exact", "choice"] = "auto"
    replicas: Int = Field(default=1, ge=1)
    workers: Int = Field(default=1, ge=1)
    timeout_s: Float = Field(default=5.0, gt=0.0)
    num_cpus: Float = Field(default=0.5, ge=0.0)


class StoreConfig(Section):
    """Where pass rates live. No `url` means the embedded in-memory store (a named Ray actor)."""

    url: SecretStr | None = None
    # Key prefix of the run in the store; null: the run's name (run.name), so runs never collide.
    run_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    window: Int = Field(default=16, ge=1)
    # Beta prior of the displayed estimate p_hat = (a + c) / (a + b + n); training weights use c / n.
    prior_a: Float = Field(default=0.0, ge=0.0)
    prior_b: Float = Field(default=0.0, ge=0.0)
    mode: Literal["rolling", "frozen"] = "rolling"
    frozen_k: Int = Field(default=8, ge=1)
    metrics_cap: Int = Field(default=100_000, ge=1)
    # Redis only: how long every actor waits out an unreachable server (retrying with backoff) before the run
    # stops; with AOF persistence the data is still there when it is back.
    outage_s: Float = Field(default=60.0, ge=0.0)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return url
        value = url.get_secret_value()
        if not re.match(r"^(redis|rediss|unix)://", value):
            # Never echo the value: it is a secret, and what is not a URL is not masked by mask_url.
            scheme = value.split("://", 1)[0] if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value) else None
            got = f"the scheme {scheme!r}" if scheme else "no scheme"
            raise ValueError(f"must start with redis://, rediss:// or unix://; got {got}")
        if "***" in value:
            raise ValueError(
                "its password is the mask `paced config show` prints (***), not a password; "
                "give the real URL, or leave store.url out for the embedded store"
            )
        return url


# ---------------------------------------------------------------- weighting


class BetaKernel(Section):
    """w(p) = p^a (1-p)^b; a = b = 1 is PACED's p(1-p)."""

    type: Literal["beta"] = "beta"
    a: Float = Field(default=1.0, ge=0.0)
    b: Float = Field(default=1.0, ge=0.0)

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


KernelSpec = Annotated[
    BetaKernel | UniformKernel | HardKernel, Field(discriminator="type"), _default_tag("type", "beta")
]


class SchedulerConfig(Section):
    kernel: KernelSpec = Field(default_factory=BetaKernel)
    # "sample": draw problems in proportion to w; "loss": draw uniformly, multiply each loss by w.
    weighting: Literal["sample", "loss"] = "sample"
    floor: Float = Field(default=0.01, ge=0.0)  # rollout weight of known w = 0 problems: keeps them re-estimable
    explore_weight: Float = Field(default=0.25, ge=0.0)  # rollout weight of an unknown problem
    # A problem with fewer outcomes than this is unknown: explored, never trained on as if known.
    min_outcomes: Int = Field(default=4, ge=1)
    stale_after_versions: Int = Field(default=50, ge=1)  # estimates older than this count as unknown
    seed: Int = 0


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
    beta: Float = Field(default=0.5, ge=0.0, le=1.0)
    sequences: Literal["teacher", "student"] = "student"


class AKL(Section):
    kind: Literal["akl"] = "akl"
    mu: Float = Field(default=0.5, gt=0.0, le=1.0)
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
    switch_step: Int | None = Field(default=None, ge=1)
    switch_fraction: Float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_switch(self) -> TwoStageSchedule:
        if (self.switch_step is None) == (self.switch_fraction is None):
            raise ValueError("give exactly one of switch_step and switch_fraction")
        return self

    def switch_at(self, total_steps: int) -> int:
        """The first step of the second stage in a run of `total_steps`: `switch_step`, or
        `switch_fraction * total_steps` rounded down with the fraction read as the decimal it is written
        as (0.29 of 100 steps is step 29, where binary floating point gives 28). ValueError when a stage
        would not run (the switch must fall in 1 .. total_steps - 1)."""
        if self.switch_step is not None:
            switch, what = self.switch_step, f"{self.switch_step}"
        else:
            switch = math.floor(Fraction(repr(self.switch_fraction)) * total_steps)
            what = f"{self.switch_fraction} of {total_steps} steps (step {switch})"
        if switch < 1:
            raise ValueError(f"{what} switches before the first step: the first stage never runs")
        if switch >= total_steps:
            raise ValueError(f"{what} must be below learner.steps ({total_steps}), or the second stage never runs")
        return switch


ScheduleSpec = Annotated[
    ConstantSchedule | TwoStageSchedule, Field(discriminator="type"), _default_tag("type", "constant")
]


AdamBeta = Annotated[Float, Field(ge=0.0, lt=1.0)]


class LearnerConfig(Section):
    steps: Int = Field(default=100, ge=1)
    batch_size: Int = Field(default=16, ge=1)  # sequences per optimizer step
    lr: Float = Field(default=1e-5, gt=0.0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: Int = Field(default=0, ge=0)
    weight_decay: Float = Field(default=0.0, ge=0.0)
    betas: tuple[AdamBeta, AdamBeta] = (0.9, 0.999)
    grad_clip: Float | None = Field(default=1.0, gt=0.0)
    chunk_size: Int = Field(default=128, ge=1)  # tokens per chunk in the KL
    # The LM heads fused with the chunked divergence: each chunk's logits are made from the final hidden
    # states, used and dropped, so no [tokens, V] logits exist for either model. Needs a plain linear head
    # (checked when the learner starts); false: the models' own logits, chunked afterwards.
    fused_head: Bool = True
    # Recompute the student's decoder layers in backward instead of keeping their activations.
    gradient_checkpointing: Bool = False
    # "model": parameters, AdamW state and compute in student.dtype (with bfloat16, most small updates round
    # away); "bf16_mixed": float32 master weights and AdamW state, bf16 compute under autocast.
    precision: Literal["model", "bf16_mixed"] = "model"
    # Padded tokens per micro-batch (sequences x (longest prompt + longest completion)); gradients are
    # accumulated over the micro-batches of a step, with the loss of the whole batch. None: one micro-batch.
    micro_batch_tokens: Int | None = Field(default=None, ge=1)
    sync_every: Int = Field(default=1, ge=1)  # publish weights every N steps
    max_staleness: Int = Field(default=4, ge=0)  # drop rollouts more than N versions old
    checkpoint_every: Int | None = Field(default=None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: Int = 0
    num_cpus: Float = Field(default=1.0, ge=0.0)  # Ray resources of the learner actor
    num_gpus: Float = Field(default=0.0, ge=0.0)


class DashboardConfig(Section):
    enabled: Bool = True
    host: str = "127.0.0.1"
    port: Int = Field(default=8000, ge=0, le=65535)
    # Bearer token for control endpoints; read from this environment variable when `token` is unset.
    token: SecretStr | None = None
    token_env: str = "PACED_DASHBOARD_TOKEN"

    @field_validator("token")
    @classmethod
    def _not_the_mask(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and set(token.get_secret_value()) == {"*"}:
            raise ValueError(
                "this is the mask `paced config show` prints in place of the token, not a token; give the real "
                "token, or leave dashboard.token out and set it in the environment variable named by token_env"
            )
        return token


class PipelineConfig(Section):
    """How the driver runs the graph."""

    # async: rollouts, grading and learning overlap; sync: generate, grade, train, sync, repeat.
    mode: Literal["async", "sync"] = "async"
    # Problems per generation request (each sampled `rollout.samples_per_problem` times).
    problems_per_request: Int = Field(default=8, ge=1)
    # Back-pressure: stop dispatching rollouts while this many graded rollouts wait for the learner.
    max_queued_rollouts: Int = Field(default=256, ge=1)
    # Before training, sample every pool problem this many times to seed pass rates (0: skip).
    warmup_samples: Int = Field(default=0, ge=0)
    # Held-out problems evaluated before, during and after the run (0: all).
    eval_problems: Int = Field(default=200, ge=0)
    # Completions per evaluated problem: 1 is greedy; k > 1 samples k (top-p, top-k, max tokens of the
    # rollouts) and reports mean accuracy over the k (mean@k), as for AIME.
    eval_samples: Int = Field(default=1, ge=1)
    # Sampling temperature of mean@k evaluation (None: rollout.temperature).
    eval_temperature: Float | None = Field(default=None, gt=0.0)
    # Seconds the learner waits for a full batch before training on what it has.
    learner_wait_s: Float = Field(default=30.0, gt=0.0)
    # Stop the run when the learner has trained nothing for this long (e.g. no problem has w > 0).
    stall_timeout_s: Float = Field(default=600.0, gt=0.0)
    # Stop the run when a rollout worker has not confirmed a weight version for this long (a stuck transfer).
    weight_sync_timeout_s: Float = Field(default=300.0, gt=0.0)
    # Stop the run when a new actor has not answered its first call this long after it was created: Ray
    # could not place it, or its constructor is still loading (a vLLM engine of a 7B model takes minutes).
    actor_start_timeout_s: Float = Field(default=900.0, gt=0.0)


class RunConfig(Section):
    name: str = Field(default="paced", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: Int = 0
    eval_every: Int = Field(default=20, ge=1)
    log_every_s: Float = Field(default=5.0, gt=0.0)


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
        if isinstance(sched, TwoStageSchedule):
            try:
                sched.switch_at(self.learner.steps)
            except ValueError as err:
                setting = "schedule.switch_step" if sched.switch_step is not None else "schedule.switch_fraction"
                raise _conflict(str(err), setting, "learner.steps") from None
        holds, held_by = (self.store.window, "store.window") if self.store.mode == "rolling" else (
            self.store.frozen_k, "store.frozen_k")  # fmt: skip
        if holds < self.scheduler.min_outcomes:
            raise _conflict(
                f"a problem's estimate holds at most {holds} outcomes ({held_by}), fewer than "
                f"scheduler.min_outcomes ({self.scheduler.min_outcomes}): no problem could ever become known",
                "scheduler.min_outcomes",
                held_by,
            )
        if self.rollout.backend == "vllm":
            for section in ("student", "teacher"):
                if getattr(self, section).gguf_file is not None:
                    raise _conflict(
                        f"rollout.backend 'vllm' loads model directories; convert the GGUF file once with "
                        f"`paced models import-gguf SRC DIR` and set {section}.path to DIR",
                        f"{section}.gguf_file",
                        "rollout.backend",
                    )
        elif self.rollout.logprobs:
            raise _conflict(
                f"needs rollout.backend 'vllm', got {self.rollout.backend!r}", "rollout.logprobs", "rollout.backend"
            )
        return self

    @model_validator(mode="after")
    def _placeable(self) -> PacedConfig:
        """GPU requests Ray can grant and the learner can use; what depends on the cluster is checked by
        services/placement.py once Ray is up."""
        for section in ("learner", "rollout"):
            gpus = getattr(self, section).num_gpus
            if gpus > 1 and not gpus.is_integer():
                raise _conflict(
                    f"Ray gives an actor a fraction of one GPU or a whole number of GPUs, not {gpus:g}: "
                    f"use e.g. {math.floor(gpus)} or {math.ceil(gpus)}",
                    f"{section}.num_gpus",
                )
        if self.learner.device == "cuda" and self.learner.num_gpus == 0:
            raise _conflict(
                "learner.device 'cuda' needs learner.num_gpus > 0: Ray hides every GPU from an actor that asks "
                "for none (CUDA_VISIBLE_DEVICES=''), so the learner would find no GPU; set learner.num_gpus "
                "(1, or a fraction such as 0.5 to share the GPU with a rollout engine)",
                "learner.num_gpus",
                "learner.device",
            )
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
        if data["store"]["run_name"] == data["run"]["name"]:
            # Derived from run.name when not given: left out, so that a --set of run.name on this output
            # moves the store keys with it.
            data["store"]["run_name"] = None
        return data


# ---------------------------------------------------------------- loading

MAX_PROBLEMS = 50  # listed per invalid config; a generated file can hold thousands of the same mistake
KeyPath = tuple[str | int, ...]
"""A place in the plain config data: keys, and list indices as ints (`("data", "train", 1, "path")`)."""


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> PacedConfig:
    """Read a YAML file, apply `section.key=value` overrides (see `apply_override`), validate."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8") from err
    raw, lines = _read_yaml(text, str(path))
    for override in overrides:
        key = apply_override(raw, override)
        # A value set on the command line is reported as such, not at the file line it replaced.
        lines = {p: n for p, n in lines.items() if p[: len(key)] != key}
        lines[key] = _shown(override)
    return validate_config(raw, source=str(path), lines=lines)


def validate_config(
    raw: dict[str, Any], source: str = "<config>", lines: dict[KeyPath, int | str] | None = None
) -> PacedConfig:
    """Validate plain data as a `PacedConfig`. Each error is one line, `where: dotted.path: message`: `lines`
    maps key paths to their file line or to the `--set` that gave them, and `where` is the entry nearest the
    error (`source:LINE` or the `--set`), else `source`."""
    try:
        return PacedConfig.model_validate(raw)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        problems = [_problem(error, raw, source, lines or {}) for error in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"... and {len(errors) - MAX_PROBLEMS} more")
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None


def apply_override(raw: dict[str, Any], override: str) -> KeyPath:
    """Set `a.b.c=value` in nested plain data and return the path set. The value is parsed as YAML (`1e-5`,
    `true`, `[1, 2]`); a number indexes a list (`data.train.1.path=x`); missing sections are created."""
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    shown = _shown(override)
    if not sep or not all(parts):
        raise ConfigError(f"{shown}: expected dotted.path=value, e.g. learner.lr=1e-5")
    secret = tuple(parts) in _SECRET_PATHS
    try:
        # A secret is taken as written (YAML would read a token such as 123456 or 1e5 as a number); an
        # empty value or null unsets it.
        if secret:
            parsed = None if value.strip() in ("", "null", "~") else value.strip()
        else:
            parsed = yaml.load(value, Loader=_ConfigLoader) if value.strip() else ""
    except yaml.YAMLError as err:  # its full text quotes the value, which may be a secret
        problem = getattr(err, "problem", type(err).__name__)
        raise ConfigError(f"{shown}: the value is not valid YAML ({problem})") from err
    except (ValueError, TypeError) as err:  # a tag the value does not fit, e.g. !!int abc; never echo it
        raise ConfigError(f"{shown}: the value does not fit its YAML tag ({type(err).__name__})") from err
    path: list[str | int] = []
    node: Any = raw
    for depth, part in enumerate(parts):
        step: str | int = part
        if isinstance(node, list):
            if not (part.isdigit() and int(part) < len(node)):
                indices = f"0 to {len(node) - 1}" if node else "none, it is empty"
                raise ConfigError(f"{shown}: {_dotted(path)} is a list; {part!r} is not one of its indices ({indices})")
            step = int(part)
        elif not isinstance(node, dict):
            value_shown = "***" if _holds_secret(tuple(path)) else repr(node)
            raise ConfigError(f"{shown}: {_dotted(path)} is a value ({value_shown}), not a section or a list")
        path.append(step)
        if depth == len(parts) - 1:
            node[step] = parsed
        else:
            child = node.get(step) if isinstance(node, dict) else node[step]
            if child is None:
                child = node[step] = {}
            node = child
    return tuple(path)


def dump_config(cfg: PacedConfig) -> str:
    """The resolved config as YAML (secrets masked): what `paced config show` prints."""
    return yaml.safe_dump(cfg.to_plain(), sort_keys=False)


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader without timestamps: `name: 2024-01-01` stays the string it looks like (a date
    object would fail as a name, and an impossible date such as 2024-13-01 would raise while loading)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[KeyPath, int | str]]:
    """The document as plain data, and the 1-based line of every key path in it. A key repeated in one
    mapping is an error (a YAML loader would silently keep the last), and so is a key that is not a
    string (`2024:` must be quoted to name an evaluation set)."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        lines, problems = _key_lines(node, source) if node is not None else ({}, [])
        raw = loader.construct_document(node) if node is not None and not problems else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from err
    except (ValueError, TypeError) as err:  # a value that does not fit its tag (!!int abc); it may be a secret
        raise ConfigError(f"{source}: a value does not fit its YAML tag ({type(err).__name__})") from err
    finally:
        loader.dispose()
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw, lines


def _key_lines(root: yaml.Node, source: str) -> tuple[dict[KeyPath, int | str], list[str]]:
    """The line of every key path under `root`, and the problems with its keys. Runs on the node graph
    before construction, so merge keys (`<<: *base`) are still visible as such: a key given next to a
    merge overrides the merged one and is not a repeat. A node reached again through an alias is not
    walked again (its lines are those of its first appearance), so recursive or exponentially nested
    aliases cost nothing here."""
    lines: dict[KeyPath, int | str] = {}
    problems: list[str] = []
    seen: set[int] = set()

    def walk(node: yaml.Node, prefix: KeyPath) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            merged: list[yaml.Node] = []
            for key, value in node.value:
                line = key.start_mark.line + 1
                if key.tag == _MERGE_TAG:
                    merged.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
                    continue
                if key.tag != _STR_TAG:
                    where = _dotted(prefix) or "the top level"
                    if isinstance(key, yaml.ScalarNode):
                        problem = f"key {key.value!r} is not a name; quote it ('{key.value}')"
                    else:
                        problem = "a key here is a list or a mapping, not a name"
                    problems.append(f"{source}:{line}: {where}: {problem}")
                    continue
                path = (*prefix, key.value)
                if key.value in first:
                    again = f"key given twice (first on line {first[key.value]}); keep one"
                    problems.append(f"{source}:{line}: {_dotted(path)}: {again}")
                first.setdefault(key.value, line)
                lines[path] = line
                walk(value, path)
            for base in merged:  # keys given explicitly win over merged ones
                if isinstance(base, yaml.MappingNode):
                    for key, value in base.value:
                        path = (*prefix, str(key.value))
                        if key.value not in first:
                            lines.setdefault(path, key.start_mark.line + 1)
                            walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*prefix, i)] = item.start_mark.line + 1
                walk(item, (*prefix, i))

    walk(root, ())
    return lines, problems


def _problem(error: ErrorDetails, raw: dict[str, Any], source: str, lines: dict[KeyPath, int | str]) -> str:
    """One pydantic error as `where: dotted.path: message`; a cross-field error is placed at its fields."""
    fields = (error.get("ctx") or {}).get("fields")
    missing = error["type"] == "missing"
    if fields:
        paths: list[KeyPath] = [tuple(field.split(".")) for field in fields]
    else:
        paths = [_user_path(error["loc"], raw, keep_last=missing)]
    origins = [_missing_origin(path[:-1], lines) if missing else _origin(path, lines) for path in paths]
    # Of the fields involved, blame the one the command line set, if any.
    origin = next((o for o in origins if isinstance(o, str)), origins[0])
    where = origin if isinstance(origin, str) else f"{source}:{origin}" if origin else source
    message = error["msg"] + (_near_name(paths[0]) if error["type"] == "extra_forbidden" else "")
    return f"{where}: {_dotted(paths[0]) or '(top level)'}: {message}"


def _near_name(path: KeyPath) -> str:
    """For an unknown key, the setting of its section with the nearest name, as a hint ("" if none)."""
    section = tuple(part for part in path[:-1] if isinstance(part, str))
    # A union section lists every member's fields; the key itself may be one of another member.
    names = {setting[-1] for setting in _SETTINGS if setting[:-1] == section} - {path[-1]}
    close = difflib.get_close_matches(str(path[-1]), sorted(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _user_path(loc: tuple[str | int, ...], raw: dict[str, Any], keep_last: bool) -> KeyPath:
    """The path the user wrote, from a pydantic error location: parts the input does not contain (union
    tags such as `synthetic`, `two_stage` or `list`) are dropped, but the name of a missing field is kept."""
    path: list[str | int] = []
    node: Any = raw
    for i, part in enumerate(loc):
        if isinstance(node, dict) and node.get("type") == part and i < len(loc) - 1:
            continue  # pydantic's tag for the union member this section chose, e.g. `jsonl`, not a key of it
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif keep_last and i == len(loc) - 1:
            path.append(part)
    return tuple(path)


def _origin(path: KeyPath, lines: dict[KeyPath, int | str], inside: bool = True) -> int | str | None:
    """Where the value at `path` came from: a `--set` of it or (with `inside`) of one of its own fields,
    else the file line of it or of its nearest enclosing section (or a `--set` that gave that section)."""
    for key, where in lines.items():
        own_field = inside and len(key) == len(path) + 1 and key[: len(path)] == path
        if path and isinstance(where, str) and (key == path or own_field):
            return where
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _missing_origin(section: KeyPath, lines: dict[KeyPath, int | str]) -> int | str | None:
    """Where a field missing from `section` is to be blamed: a `--set` of the section's `type` (which
    chose what the section needs), else wherever the section itself came from (not a `--set` of a
    sibling field inside it)."""
    chosen_by = lines.get((*section, "type"))
    return chosen_by if isinstance(chosen_by, str) else _origin(section, lines, inside=False)


def _dotted(path: KeyPath) -> str:
    """`("data", "train", 1, "path")` -> `data.train[1].path`."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _setting_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, annotation) of every setting a `--set` can name under `model`: sections and fields, through
    union members and list and dict item types (list indices are not part of a path)."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path, field.annotation
        for kind in _member_types(field.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from _setting_paths(kind, path)


def _member_types(annotation: Any) -> Iterator[Any]:
    """The types inside an annotation: itself, union members, list and dict item types, Annotated's type."""
    yield annotation
    for arg in get_args(annotation):
        yield from _member_types(arg)


_SETTINGS = dict(_setting_paths(PacedConfig))
# The `SecretStr` settings, e.g. ("store", "url").
_SECRET_PATHS = frozenset(path for path, kind in _SETTINGS.items() if SecretStr in _member_types(kind))


def _holds_secret(path: KeyPath) -> bool:
    """Whether the value at `path` is a secret, a section holding one, or a part of one."""
    return any(secret[: len(path)] == path or path[: len(secret)] == secret for secret in _SECRET_PATHS)


# Settings whose values errors may quote.
_PLAIN_PATHS = frozenset(path for path in _SETTINGS if not _holds_secret(path))


def _shown(override: str) -> str:
    """An override as errors quote it, `--set key=value`. The value is shown for a known setting that is
    not a secret, and for an unknown key unless it looks like a mistyped secret (`dashboard.tokn=...`:
    a key in a section that holds secrets, or named like a credential)."""
    key, sep, value = override.partition("=")
    if not sep:
        return "--set ***"  # no `=`: the whole text may be a secret written as `key:value`
    parts = tuple(part for part in key.strip().split(".") if not part.isdigit())
    if parts not in _PLAIN_PATHS and (parts in _SETTINGS or _looks_secret(parts)):
        value = "***"
    return f"--set {key}{sep}{value}"


_SECRET_SECTIONS = frozenset(path[0] for path in _SECRET_PATHS)


def _looks_secret(parts: tuple[str, ...]) -> bool:
    """A key in a section that holds secrets, or named like a credential or a URL (which may embed one)."""
    return parts[0].lower() in _SECRET_SECTIONS or any(
        names_a_credential(part) or "url" in part.lower() for part in parts
    )
