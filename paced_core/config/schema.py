"""The schema of a PACED run: one typed tree of sections, validated by pydantic.

Every section rejects unknown keys; loss kinds, kernels, schedules and data sources are discriminated
unions (`kind:` / `type:`), so a bad combination fails at validation, before any model is touched. Numbers
must be finite, and a boolean is not a number. A cross-field problem is raised with `_conflict`, naming the
settings involved, so that `paced_core.config.loader` can place it at the file line or the `--set` that gave
one of them. Secret values are `SecretStr` fields.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from paced_core import weighting
from paced_core.redact import mask_url
from paced_core.schedule import switch_at
from paced_core.tasks import BUILTIN_DATASETS, BUILTIN_TEMPLATES, get_template, synthetic_arithmetic


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


class DatasetFields(Section):
    """Which column of a `datasets` source holds each part of a problem."""

    question: str = "question"
    answer: str = "answer"
    id: str | None = None  # unique ids; None: <file stem>-<row index>
    group: str | None = None  # the group its accuracy is reported under


class DatasetsData(Section):
    """A local file or folder read with Hugging Face `datasets` (optional extra; nothing is fetched)."""

    type: Literal["datasets"] = "datasets"
    path: str  # a .parquet, .json, .jsonl, .csv or .arrow file, or a folder written by save_to_disk
    split: str | None = None  # of a saved DatasetDict (needed when it holds more than one)
    fields: DatasetFields = Field(default_factory=DatasetFields)
    checker: Literal["math", "exact"] = "math"


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


DataSource = Annotated[BuiltinData | JsonlData | DatasetsData | SyntheticData, Field(discriminator="type")]
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


class RolloutConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    replicas: Int = Field(default=1, ge=0)
    # The most rollout workers `paced scale` or the dashboard may ask for; a higher count is capped here.
    max_replicas: Int = Field(default=64, ge=1)
    samples_per_problem: Int = Field(default=4, ge=1)
    batch_size: Int = Field(default=16, ge=1)
    temperature: Float = Field(default=1.0, ge=0.0)
    top_p: Float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: Int = Field(default=-1, ge=-1)
    max_new_tokens: Int = Field(default=256, ge=1)
    # A prompt longer than the model's context minus max_new_tokens: "refuse" it when the worker loads,
    # naming the problem, or "truncate" it to its last tokens.
    long_prompts: Literal["refuse", "truncate"] = "refuse"
    stop: list[str] = Field(default_factory=list)
    seed: Int = 0
    num_cpus: Float = Field(default=1.0, ge=0.0)  # Ray resources per rollout actor
    num_gpus: Float = Field(default=0.0, ge=0.0)
    # The hf backend's KV cache: "dynamic" grows with the sequence; "static" is preallocated at prompt +
    # max_new_tokens, which lets CUDA graphs / torch.compile run on a GPU (on a CPU it only costs memory).
    hf_cache: Literal["dynamic", "static"] = "dynamic"
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)

    @model_validator(mode="after")
    def _replicas_within_max(self) -> RolloutConfig:
        if self.replicas > self.max_replicas:
            raise ValueError(f"replicas {self.replicas} is above max_replicas {self.max_replicas}; raise max_replicas")
        return self


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
    # Metrics rows the store keeps (services.store.base.METRICS_CAP: 10,000 demo steps, about 36 MiB in Redis).
    metrics_cap: Int = Field(default=10_000, ge=1)
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
    # The dashboard process's CPU priority, as Unix nice (0: the run's own; 19: the lowest). Where the
    # machine is busy, browsers polling the page then slow its answers, not the training.
    nice: Int = Field(default=10, ge=0, le=19)

    @field_validator("token")
    @classmethod
    def _not_the_mask(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and set(token.get_secret_value()) == {"*"}:
            raise ValueError(
                "this is the mask `paced config show` prints in place of the token, not a token; give the real "
                "token, or leave dashboard.token out and set it in the environment variable named by token_env"
            )
        return token


class WandbConfig(Section):
    """A Weights & Biases run beside the run folder's metrics (`pip install 'paced[wandb]'`)."""

    project: str = Field(min_length=1)
    entity: str | None = None
    # online, offline (written under RUN_DIR/wandb; `wandb sync` uploads it later) or disabled;
    # None: wandb's own choice (the WANDB_MODE environment variable, else online).
    mode: Literal["online", "offline", "disabled"] | None = None
    name: str | None = None  # the W&B run's display name; None: run.name
    group: str | None = None
    tags: list[str] = Field(default_factory=list)


class MlflowConfig(Section):
    """An MLflow run beside the run folder's metrics (`pip install 'paced[mlflow]'`)."""

    # None: MLflow's own choice (the MLFLOW_TRACKING_URI environment variable, else its default).
    tracking_uri: str | None = None
    experiment: str = Field(default="paced", min_length=1)
    run_name: str | None = None  # None: run.name


class TrackingConfig(Section):
    """Where the run's metrics rows go besides RUN_DIR/metrics.jsonl and the dashboard (services/tracking.py)."""

    tensorboard: Bool = True  # event files in RUN_DIR/tensorboard
    wandb: WandbConfig | None = None
    mlflow: MlflowConfig | None = None


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
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _consistent(self) -> PacedConfig:
        if self.store.run_name is None:
            self.store.run_name = self.run.name
        sched = self.schedule
        if isinstance(sched, TwoStageSchedule):
            try:
                switch_at(sched, self.learner.steps)
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
