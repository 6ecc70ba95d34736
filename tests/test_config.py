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
    with pytest.raises(ConfigError, match="switch_step .100. must be below learner.steps .100."):
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
