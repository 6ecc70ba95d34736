"""`paced plan CONFIG`: what a run asks Ray for is the driver's own demand (`services.placement.run_demand`),
and the single node it proposes holds that demand by the driver's own placement check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paced_core.config import load_config
from paced_core.embedded import embedded_model_path
from services.cli import main as paced
from services.placement import Node, placement_problems, run_demand
from services.plan import plan, weights_bytes

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")
CONFIGS = sorted(REPO.glob("configs/*.yaml")) + sorted(REPO.glob("configs/gpu/*.yaml"))


def plan_json(capsys, *args: str) -> dict:
    assert paced(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_demo_peak_is_its_actors_requests_added_up(capsys):
    cfg = load_config(DEMO)
    p = plan_json(capsys, DEMO)
    # demo.yaml trains on teacher references, so the teacher-reference worker runs beside the rollout workers.
    expected = (
        cfg.learner.num_cpus
        + (cfg.rollout.replicas + 1) * cfg.rollout.num_cpus
        + cfg.verifier.replicas * cfg.verifier.num_cpus
    )
    assert p["peak"] == {"num_cpus": expected, "num_gpus": 0.0, "memory": 0}
    assert p["single_node"]["ray_start"] == f"ray start --head --num-cpus {int(-(-expected // 1))}"
    assert [a["name"] for a in p["actors"]] == [
        "learner",
        "rollout",
        "teacher reference",
        "verifier",
        "store (embedded)",
    ]


def test_the_readme_states_the_demo_peak_the_plan_reports(capsys):
    p = plan_json(capsys, DEMO)
    readme = (REPO / "README.md").read_text()
    assert f"peak: CPU {p['peak']['num_cpus']:g}, GPU 0" in readme
    assert p["single_node"]["ray_start"] in readme


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_plan_is_the_preflight_demand_and_its_node_holds_it(path):
    cfg = load_config(path)
    demand, p = run_demand(cfg), plan(cfg)
    assert (p["peak"]["num_cpus"], p["peak"]["num_gpus"]) == (demand.total("CPU"), demand.total("GPU"))
    node = p["single_node"]
    assert placement_problems(cfg, demand, [Node("head", node["num_cpus"], node["num_gpus"])], "0.32.0") == []
    smaller = Node("head", node["num_cpus"] - 1, node["num_gpus"])
    assert placement_problems(cfg, demand, [smaller], "0.32.0"), "the proposed node is not the smallest"


def test_set_overrides_change_the_plan(capsys):
    one = plan_json(capsys, DEMO)
    three = plan_json(capsys, DEMO, "--set", "rollout.replicas=3", "--set", "rollout.num_cpus=2")
    assert three["peak"]["num_cpus"] == one["peak"]["num_cpus"] - 2 + 4 * 2  # 3 rollout + 1 teacher at 2 CPUs
    assert three["actors"][1] == {**three["actors"][1], "name": "rollout", "count": 3, "num_cpus": 2.0}


def test_a_run_on_redis_has_no_store_actor_and_a_scaled_run_peaks_at_max_replicas(capsys):
    p = plan_json(capsys, DEMO, "--set", "store.url=redis://127.0.0.1:6379/0", "--set", "rollout.max_replicas=4")
    assert "store (embedded)" not in [a["name"] for a in p["actors"]]
    assert p["peak_at_max_replicas"]["num_cpus"] == p["peak"]["num_cpus"] + 3  # 4 rollout workers of 1 CPU, not 1


def test_weights_are_the_model_files_on_disk_and_unknown_for_a_hub_id():
    student = embedded_model_path("student")
    assert weights_bytes("embedded:student") == sum(f.stat().st_size for f in student.glob("*.safetensors"))
    assert weights_bytes("Qwen/Qwen3-1.7B") is None
    cfg = load_config(REPO / "configs/gpu/qwen3_8b_to_1.7b.yaml")
    assert all(a["weights_bytes"] is None for a in plan(cfg)["actors"] if a["loads"])


def test_the_table_names_each_actor_and_the_peak(capsys):
    assert paced(["plan", DEMO]) == 0
    out = capsys.readouterr().out
    for line in ("learner", "rollout", "teacher reference", "verifier", "store (embedded)", "peak: CPU "):
        assert line in out


def test_a_bad_config_is_one_line_and_exit_2(capsys):
    assert paced(["plan", DEMO, "--set", "rollout.num_cpus=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paced plan: invalid config:") and "rollout.num_cpus" in err
