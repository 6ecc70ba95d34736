"""The config tree: YAML loading, overrides, and errors that name the path and the line."""

import subprocess
import sys
from pathlib import Path

import pytest

from paced_core.config import (
    AKL,
    JSD,
    BetaKernel,
    ConfigError,
    HardKernel,
    TwoStageSchedule,
    dump_config,
    load_config,
    validate_config,
)
from services.cli import main

REPO = Path(__file__).resolve().parents[1]
MINIMAL = "student: {path: tiny}\ndata: {train: {type: synthetic, n: 10}}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_reference_config_loads_with_its_unions_resolved():
    cfg = load_config(REPO / "configs" / "reference.yaml")
    assert isinstance(cfg.schedule, TwoStageSchedule)
    assert cfg.schedule.first.kind == "forward_kl" and cfg.schedule.second.kind == "reverse_kl"
    assert isinstance(cfg.scheduler.kernel, BetaKernel)
    assert [(source.type, source.name) for source in cfg.data.train] == [
        ("builtin", "math_train"),
        ("builtin", "aime_1983_2023"),
    ]
    assert {name: src.name for name, src in cfg.data.eval_sets.items()} == {"aime24": "aime24", "aime25": "aime25"}
    assert (cfg.pipeline.eval_samples, cfg.pipeline.eval_temperature) == (8, 0.6)


def test_minimal_config_gets_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.scheduler.kernel.build()(0.5) == 0.25
    assert cfg.store.url is None and cfg.dashboard.host == "127.0.0.1"
    assert cfg.schedule.type == "constant" and cfg.schedule.loss.kind == "reverse_kl"


def test_overrides_set_values_and_switch_union_members(tmp_path):
    cfg = load_config(
        write(tmp_path, MINIMAL),
        [
            "learner.lr=3e-6",
            "scheduler.kernel={type: hard}",
            "schedule.type=constant",
            "schedule.loss={kind: jsd, beta: 0.3}",
            'rollout.stop=["\\n", "="]',
        ],
    )
    assert cfg.learner.lr == pytest.approx(3e-6)
    assert isinstance(cfg.scheduler.kernel, HardKernel)
    assert isinstance(cfg.schedule.loss, JSD) and cfg.schedule.loss.beta == 0.3
    assert cfg.rollout.stop == ["\n", "="]


def test_nested_override_creates_a_section(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), ["schedule.loss.kind=akl", "schedule.loss.mu=0.7"])
    assert isinstance(cfg.schedule.loss, AKL) and cfg.schedule.loss.mu == 0.7


def test_unknown_key_names_the_path_and_the_file_line(tmp_path):
    path = write(tmp_path, MINIMAL + "learner:\n  steps: 10\n  lr_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+: learner\.lr_rate: Extra inputs"):
        load_config(path)


def test_bad_value_names_the_path_and_line(tmp_path):
    path = write(tmp_path, MINIMAL + "rollout:\n  temperature: -1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:4: rollout\.temperature: Input should be greater"):
        load_config(path)


def test_bad_override_names_the_override(tmp_path):
    with pytest.raises(ConfigError, match=r"--set learner\.lr=fast: learner\.lr: Input should be a valid"):
        load_config(write(tmp_path, MINIMAL), ["learner.lr=fast"])
    with pytest.raises(ConfigError, match="expected dotted.path=value"):
        load_config(write(tmp_path, MINIMAL), ["learner.lr"])
    with pytest.raises(ConfigError, match=r"student\.path is a value"):
        load_config(write(tmp_path, MINIMAL), ["student.path.x=1"])


def test_a_left_out_union_tag_takes_the_default_member(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), ["scheduler.kernel.a=2"])
    assert isinstance(cfg.scheduler.kernel, BetaKernel) and cfg.scheduler.kernel.a == 2


def test_unknown_union_tag_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="scheduler.kernel: .*'beta', 'uniform', 'hard'"):
        load_config(write(tmp_path, MINIMAL + "scheduler: {kernel: {type: gaussian}}\n"))


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "data: {train: {type: synthetic}}\nlearner: {steps: 0}\n"))
    message = str(err.value)
    assert "student: Field required" in message
    assert "learner.steps: Input should be greater than or equal to 1" in message


def test_two_stage_needs_exactly_one_switch_and_a_reachable_one(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of switch_step and switch_fraction"):
        load_config(write(tmp_path, MINIMAL + "schedule: {type: two_stage}\n"))
    with pytest.raises(
        ConfigError, match=r"run\.yaml:3: schedule\.switch_step: 100 must be below learner\.steps .100."
    ):
        load_config(write(tmp_path, MINIMAL + "schedule: {type: two_stage, switch_step: 100}\n"))


def test_missing_file_and_invalid_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+: invalid YAML"):
        load_config(write(tmp_path, "student:\n  path: x\n  bad: [1, 2\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_secrets_are_masked_when_shown(tmp_path):
    text = MINIMAL + "store: {url: 'redis://user:hunter2@db:6379/0'}\ndashboard: {token: hunter2}\n"
    cfg = load_config(write(tmp_path, text))
    shown = str(cfg.to_plain())
    assert "hunter2" not in shown and "redis://user:***@db:6379/0" in shown
    assert cfg.to_plain(reveal_secrets=True)["store"]["url"] == "redis://user:hunter2@db:6379/0"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL), ["store.url=http://u:hunter2@db"])
    assert "hunter2" not in str(err.value)


def test_validate_config_accepts_plain_data():
    raw = {"student": {"path": "s"}, "data": {"train": {"type": "builtin", "name": "math500"}}}
    cfg = validate_config(raw)
    assert cfg.data.train.name == "math500"


def test_cli_show_prints_resolved_yaml(tmp_path, capsys):
    assert main(["config", "show", str(write(tmp_path, MINIMAL)), "--set", "learner.steps=7"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "kernel:" in out and "type: beta" in out


def test_cli_check_exits_nonzero_with_the_problem(tmp_path):
    bad = write(tmp_path, MINIMAL + "learner: {lr: -1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "learner.lr: Input should be greater than 0" in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "services.cli", "config", "check", str(REPO / "configs" / "reference.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert ok.returncode == 0 and "ok" in ok.stdout


def problems(path: Path, overrides: list[str] = ()) -> list[str]:
    """The problem lines of the ConfigError that loading `path` with `overrides` raises."""
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    return [line.strip() for line in str(err.value).splitlines()[1:]]


@pytest.mark.parametrize(
    "override",
    [
        "learner.lr=.inf",
        "learner.lr=.nan",
        "rollout.temperature=.inf",
        "store.prior_a=.inf",
        "scheduler.explore_weight=.inf",
        "scheduler.floor=.nan",
        "scheduler.kernel.a=.inf",
        "learner.grad_clip=-.inf",
    ],
)
def test_infinite_and_nan_numbers_are_rejected(tmp_path, override):
    path = override.partition("=")[0]
    assert problems(write(tmp_path, MINIMAL), [override]) == [
        f"--set {override}: {path}: Input should be a finite number"
    ]


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("learner.steps=true", "learner.steps"),
        ("learner.lr=yes", "learner.lr"),
        ("data.train.levels=[on]", "data.train.levels[0]"),
    ],
)
def test_a_boolean_is_not_a_number(tmp_path, override, path):
    [problem] = problems(write(tmp_path, MINIMAL), [override])
    assert problem.startswith(f"--set {override}: {path}: ") and "expected a number, got the boolean true" in problem


def test_an_int_or_a_yaml_string_still_reads_as_a_float(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "learner: {lr: 1}\n"), ["rollout.temperature=1e-1"])
    assert (cfg.learner.lr, cfg.rollout.temperature) == (1.0, 0.1)


def test_adam_betas_lie_in_zero_to_one(tmp_path):
    assert problems(write(tmp_path, MINIMAL), ["learner.betas=[2, -1]"]) == [
        "--set learner.betas=[2, -1]: learner.betas[0]: Input should be less than 1",
        "--set learner.betas=[2, -1]: learner.betas[1]: Input should be greater than or equal to 0",
    ]
    assert load_config(write(tmp_path, MINIMAL), ["learner.betas=[0, 0.95]"]).learner.betas == (0.0, 0.95)


def test_template_is_a_known_student_template(tmp_path):
    [unknown] = problems(write(tmp_path, MINIMAL), ["data.template=boxed"])
    assert "data.template: Value error, unknown prompt template 'boxed'; known: plain, math_boxed" in unknown
    [teacher_only] = problems(write(tmp_path, MINIMAL), ["data.template=privileged_context"])
    assert "shows the reference answer, so it is the teacher's prompt only" in teacher_only
    assert load_config(write(tmp_path, MINIMAL), ["data.template=gsm8k"]).data.template == "gsm8k"


def test_synthetic_levels_are_distinct_levels_the_generator_has(tmp_path):
    path = write(tmp_path, "student: {path: tiny}\ndata:\n  train: {type: synthetic, levels: [0, 99, -3]}\n")
    [unknown] = problems(path)
    assert unknown.startswith("run.yaml:3: data.train.levels: ".replace("run.yaml", str(path))) and "level 0" in unknown
    [repeated] = problems(write(tmp_path, MINIMAL), ["data.train.levels=[2, 2]"])
    assert "data.train.levels: " in repeated and "distinct levels" in repeated


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    path = write(tmp_path, MINIMAL + "learner:\n  steps: 10\n  lr: 1.0e-3\n  steps: 20\n")
    assert problems(path) == [f"{path}:6: learner.steps: key given twice (first on line 4); keep one"]


def test_an_error_inside_a_union_names_the_users_path_and_only_the_member_given(tmp_path):
    assert problems(write(tmp_path, MINIMAL), ["data.train.n=0"]) == [
        "--set data.train.n=0: data.train.n: Input should be greater than or equal to 1"
    ]
    path = write(tmp_path, "student: {path: tiny}\ndata:\n  train:\n    - {type: synthetic}\n    - {type: jsonl}\n")
    assert problems(path) == [f"{path}:5: data.train[1].path: Field required"]


def test_a_bare_value_for_a_union_section_is_reported_at_the_section(tmp_path):
    path = write(tmp_path, MINIMAL + "scheduler:\n  kernel: hard\n")
    assert problems(path) == [
        f"{path}:4: scheduler.kernel: Input should be a valid dictionary or object to extract fields from"
    ]


def test_a_cross_field_error_is_placed_at_its_fields_and_the_set_that_gave_one(tmp_path):
    path = write(tmp_path, MINIMAL + "schedule: {type: two_stage, switch_fraction: 0.5}\n")
    overrides = ["schedule.switch_fraction=null", "schedule.switch_step=100"]
    assert problems(path, overrides) == [
        "--set schedule.switch_step=100: schedule.switch_step: 100 must be below learner.steps (100), "
        "or the second stage never runs"
    ]
    assert problems(path, ["student.gguf_file=m.gguf", "rollout.backend=vllm"]) == [
        "--set student.gguf_file=m.gguf: student.gguf_file: rollout.backend 'vllm' loads model directories; convert "
        "the GGUF file once with `paced models import-gguf SRC DIR` and set student.path to DIR"
    ]
    assert problems(path, ["learner.steps=1"]) == [
        "--set learner.steps=1: schedule.switch_fraction: 0.5 of 1 steps (step 0) switches before the first "
        "step: the first stage never runs"
    ]


def test_an_override_indexes_a_list(tmp_path):
    path = write(
        tmp_path, "student: {path: tiny}\ndata:\n  train:\n    - {type: synthetic}\n    - {type: synthetic, seed: 1}\n"
    )
    cfg = load_config(path, ["data.train.1.n=5", "data.train.0={type: builtin, name: gsm8k_train}"])
    assert cfg.data.train[1].n == 5 and cfg.data.train[0].name == "gsm8k_train"
    with pytest.raises(
        ConfigError, match=r"--set data\.train\.2\.n=5: data\.train is a list; '2' is not one of its indices \(0 to 1\)"
    ):
        load_config(path, ["data.train.2.n=5"])


@pytest.mark.parametrize(
    "override",
    [
        "dashboard={token: 123456789, bogus: 1}",
        "dashboard={token: 123456789}",
        "dashboard.token.x=123456789",
        "store.url=[123456789",
        "store.url=http://123456789",
    ],
)
def test_a_secret_never_appears_in_an_error(tmp_path, override):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL), [override])
    assert "123456789" not in str(err.value) and "=***" in str(err.value)


def test_a_secret_in_the_file_never_appears_in_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL + "dashboard: {token: 123456789}\n"), ["dashboard.token.x=1"])
    assert "123456789" not in str(err.value)


def test_shown_secrets_fail_to_reload_instead_of_becoming_the_secrets(tmp_path):
    text = MINIMAL + "store: {url: 'redis://user:hunter2@db:6379/0'}\ndashboard: {token: hunter2}\n"
    shown = dump_config(load_config(write(tmp_path, text)))
    reloaded = problems(write(tmp_path, shown))
    assert len(reloaded) == 2
    assert "store.url: Value error, its password is the mask `paced config show` prints (***)" in reloaded[0]
    assert "dashboard.token: Value error, this is the mask `paced config show` prints" in reloaded[1]


@pytest.mark.parametrize(
    "config", sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "gpu").glob("*.yaml")), ids=str
)
def test_every_shipped_config_checks_and_its_shown_form_revalidates(tmp_path, capsys, config):
    assert main(["config", "check", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: ok (")
    assert main(["config", "show", str(config)]) == 0
    shown = write(tmp_path, capsys.readouterr().out)
    assert load_config(shown).to_plain() == load_config(config).to_plain()


def test_a_builtin_dataset_is_one_the_package_ships(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert load_config(path, ["data.heldout={type: builtin, name: mmlu}"]).data.heldout.name == "mmlu"
    with pytest.raises(ConfigError, match=r"data\.heldout\.name: Value error, unknown built-in dataset 'math5000'"):
        load_config(path, ["data.heldout={type: builtin, name: math5000}"])


def test_a_flag_is_true_or_false_not_a_number(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert load_config(path, ["student.chat_template=true"]).student.chat_template is True
    with pytest.raises(ConfigError, match=r"student\.chat_template: Value error, expected true or false, got 1"):
        load_config(path, ["student.chat_template=1"])


def test_a_secret_set_on_the_command_line_is_taken_as_written(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["dashboard.token=123456789"])  # YAML alone would read a number
    assert cfg.dashboard.token.get_secret_value() == "123456789"
    assert load_config(path, ["dashboard.token=123456789", "dashboard.token=null"]).dashboard.token is None


def test_a_missing_field_is_blamed_on_its_section_or_the_set_that_chose_its_type(tmp_path):
    path = write(tmp_path, "student:\n  dtype: float32\ndata:\n  train: {type: synthetic}\n")
    assert problems(path, ["student.dtype=bfloat16"]) == [f"{path}:1: student.path: Field required"]
    with_student = write(tmp_path, MINIMAL)
    assert problems(with_student, ["data.train.type=jsonl"]) == [
        "--set data.train.type=jsonl: data.train.path: Field required",
        f"{with_student}:2: data.train.n: Extra inputs are not permitted",  # n belongs to synthetic data
    ]


def test_a_date_like_value_is_the_string_it_looks_like(tmp_path):
    path = write(tmp_path, MINIMAL + "run: {name: 2024-01-01}\n")
    assert load_config(path).run.name == "2024-01-01"
    assert load_config(path, ["run.name=2024-13-01"]).run.name == "2024-13-01"  # not a date: no traceback


def test_unreadable_values_and_files_are_config_errors_that_never_echo_the_value(tmp_path):
    path = write(tmp_path, MINIMAL + "dashboard: {token: !!int hunter2}\n")
    with pytest.raises(ConfigError, match="does not fit its YAML tag") as err:
        load_config(path)
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="does not fit its YAML tag"):
        load_config(write(tmp_path, MINIMAL), ["learner.steps=!!int abc"])
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("run: {name: caf\u00e9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 15\)"):
        load_config(latin)


def test_aliases_merge_keys_and_non_string_keys(tmp_path):
    merged = MINIMAL.replace("data: {train: {type: synthetic, n: 10}}\n", "") + (
        "data:\n  train: &base {type: synthetic, n: 10}\n  eval_sets:\n    b: {<<: *base, seed: 2}\n"
    )
    assert load_config(write(tmp_path, merged)).data.eval_sets["b"].seed == 2  # an override, not a repeat
    looped = write(tmp_path, MINIMAL + "run: &r {name: x, tags: [*r]}\n")
    with pytest.raises(ConfigError):
        load_config(looped)
    numbered = write(tmp_path, MINIMAL + "learner:\n  1: 2\n")
    assert problems(numbered) == [f"{numbered}:4: learner: key '1' is not a name; quote it ('1')"]


def test_a_user_key_named_like_a_union_member_keeps_its_path(tmp_path):
    path = write(tmp_path, "student: {path: tiny}\ndata:\n  train: {type: jsonl, jsonl: x.jsonl}\n")
    assert problems(path) == [
        f"{path}:3: data.train.path: Field required",
        f"{path}:3: data.train.jsonl: Extra inputs are not permitted",
    ]


def test_an_error_in_the_file_is_not_blamed_on_an_unrelated_set(tmp_path):
    path = write(tmp_path, MINIMAL + "schedule:\n  type: two_stage\n  switch_step: 3\n  switch_fraction: 0.5\n")
    assert problems(path, ["schedule.first.kind=jsd"]) == [
        f"{path}:3: schedule: Value error, give exactly one of switch_step and switch_fraction"
    ]


def test_values_of_unknown_keys_are_masked_and_the_list_of_problems_is_capped(tmp_path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as err:
        load_config(path, ["dashboard.tokn=hunter2"])
    assert "hunter2" not in str(err.value) and "--set dashboard.tokn=***" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(path, ["dashboard.token:hunter2"])
    assert "hunter2" not in str(err.value)
    stops = write(tmp_path, MINIMAL + "rollout:\n  stop:\n" + "    - [1]\n" * 80)
    listed = problems(stops)
    assert len(listed) == 51 and listed[-1] == "... and 30 more"


def test_shown_config_leaves_the_derived_store_name_out(tmp_path):
    shown = dump_config(load_config(write(tmp_path, MINIMAL)))
    reloaded = load_config(write(tmp_path, shown), ["run.name=other"])
    assert reloaded.store.run_name == "other"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://u:p@ss@host", "redis://u:***@host"),  # redis-py splits at the last @
        ("redis://h:6379/0?password=hunter2&db=1", "redis://h:6379/0?password=***&db=1"),
        ("unix://:pw@/tmp/r.sock?db=0", "unix://:***@/tmp/r.sock?db=0"),
        ("redis://host:6379", "redis://host:6379"),
    ],
)
def test_mask_url_hides_every_credential(url, masked):
    from paced_core.redact import mask_url

    assert mask_url(url) == masked


def test_an_unknown_key_names_the_nearest_setting(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert sorted(problems(path, ["learnr.steps=3", "learner.lr_rate=1"])) == [
        "--set learner.lr_rate=1: learner.lr_rate: Extra inputs are not permitted",
        "--set learnr.steps=3: learnr: Extra inputs are not permitted; did you mean 'learner'?",
    ]


@pytest.mark.parametrize(
    ("sets", "held_by"),
    [(["store.window=3"], "store.window"), (["store.mode=frozen", "store.frozen_k=2"], "store.frozen_k")],
)
def test_an_estimate_too_short_for_min_outcomes_is_refused(sets, held_by):
    with pytest.raises(ConfigError, match=rf"scheduler.min_outcomes: .*\({held_by}\).*could ever become known"):
        load_config(REPO / "configs" / "demo.yaml", sets)


def test_a_cuda_learner_that_asks_ray_for_no_gpu_is_refused(tmp_path):
    path = write(tmp_path, MINIMAL + "learner:\n  device: cuda\n")
    assert problems(path) == [
        f"{path}:3: learner.num_gpus: learner.device 'cuda' needs learner.num_gpus > 0: Ray hides every GPU from "
        "an actor that asks for none (CUDA_VISIBLE_DEVICES=''), so the learner would find no GPU; set "
        "learner.num_gpus (1, or a fraction such as 0.5 to share the GPU with a rollout engine)"
    ]
    assert load_config(path, ["learner.num_gpus=0.5"]).learner.num_gpus == 0.5


@pytest.mark.parametrize("section", ["learner", "rollout"])
def test_more_than_one_gpu_is_a_whole_number_of_gpus(tmp_path, section):
    path = write(tmp_path, MINIMAL)
    assert problems(path, [f"{section}.num_gpus=1.5"]) == [
        f"--set {section}.num_gpus=1.5: {section}.num_gpus: Ray gives an actor a fraction of one GPU or a whole "
        "number of GPUs, not 1.5: use e.g. 1 or 2"
    ]
    assert load_config(path, [f"{section}.num_gpus=2"])
