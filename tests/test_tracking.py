"""The run's trackers (services/tracking.py), each real: TensorBoard event files read back with TensorBoard's
own EventAccumulator, a W&B offline run's .wandb file, an MLflow file store; rows recorded through the run
folder (`RunDir.record`), as the driver records them. The last test runs the real small pipeline."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest
from dashboard_data import step_row
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from paced_core.config import load_config
from services.driver.run_dir import RunDir
from services.launch import run_command
from services.records import EvalRow, EvalSetRow, Outcome
from services.store import MemoryStore
from services.tracking import TrackingError, check_trackers

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def demo(*overrides: str):
    return load_config(DEMO, list(overrides))


def store_with_pool() -> MemoryStore:
    """Four problems seen: p = 0, 0.5, 0.5 and 1 (buckets 0, 10, 10 and 19)."""
    store = MemoryStore(prior_a=0.0, prior_b=0.0)
    store.register_problems(["a", "b", "c", "d"], ["L1"] * 4)
    verdicts = {"a": [False, False], "b": [True, False], "c": [False, True], "d": [True, True]}
    store.record_outcomes(
        [Outcome(rollout_id=f"{p}{i}", problem_id=p, correct=ok, version=0) for p, oks in verdicts.items()
         for i, ok in enumerate(oks)]
    )  # fmt: skip
    return store


def tensorboard(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]


def record_steps(run_dir: RunDir, store: MemoryStore, steps: range, loss: float) -> None:
    for step in steps:
        run_dir.record(step_row(step, loss=loss, time=1_000.0 + step, rollout_tokens=100 * step), store)


def test_every_metrics_row_becomes_tensorboard_scalars_and_histograms(tmp_path):
    store = store_with_pool()
    run_dir = RunDir(tmp_path, demo(), resume=False)
    run_dir.record(EvalRow(version=0, accuracy=0.25, by_group={"L1": 0.5}, time=999.0), store)
    record_steps(run_dir, store, range(1, 4), loss=0.3)
    run_dir.record(EvalSetRow(set="gsm8k", accuracy=0.75, version=3, time=1_004.0), store)
    run_dir.close()

    events = tensorboard(tmp_path)
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/staleness_mean", "train/workers",
            "train/rollout_idle", "train/rollout_tokens", "pool/seen"} <= set(tags["scalars"])  # fmt: skip
    assert scalars(events, "train/loss") == [(1, 0.3), (2, 0.3), (3, 0.3)]
    assert scalars(events, "train/rollout_tokens_per_s") == [(2, 100.0), (3, 100.0)]  # 100 tokens a second
    assert scalars(events, "eval/accuracy") == [(0, 0.25)] and scalars(events, "eval/by_group/L1") == [(0, 0.5)]
    assert scalars(events, "eval_set/gsm8k/accuracy") == [(3, 0.75)]
    assert {"train/trained_p", "train/trained_w", "train/trained_loss", "pool/pass_rate"} <= set(tags["histograms"])
    pool = events.Histograms("pool/pass_rate")[-1].histogram_value
    assert pool.num == 4 and sum(pool.bucket) == 4
    trained = events.Histograms("train/trained_p")[0].histogram_value
    assert trained.num == 2 and (trained.min, trained.max) == (0.25, 0.5)  # step_row's trained_p


def test_a_resumed_run_appends_and_tensorboard_shows_each_redone_step_once(tmp_path):
    store = store_with_pool()
    first = RunDir(tmp_path, demo(), resume=False)
    record_steps(first, store, range(1, 5), loss=1.0)
    first.close()
    resumed = RunDir(tmp_path, demo(), resume=True)
    resumed.drop_rows_after(2)  # the checkpoint was step 2: steps 3 and 4 are redone
    record_steps(resumed, store, range(3, 6), loss=2.0)
    resumed.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert scalars(tensorboard(tmp_path), "train/loss") == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0)]


def test_tensorboard_off_writes_no_event_files(tmp_path):
    run_dir = RunDir(tmp_path, demo("tracking.tensorboard=false"), resume=False)
    record_steps(run_dir, store_with_pool(), range(1, 3), loss=0.3)
    run_dir.close()
    assert not (tmp_path / "tensorboard").exists()


def test_overwrite_removes_the_old_runs_event_files(tmp_path):
    run_dir = RunDir(tmp_path, demo(), resume=False)
    record_steps(run_dir, store_with_pool(), range(1, 3), loss=0.3)
    run_dir.close()
    RunDir(tmp_path, demo(), resume=False, overwrite=True).close()
    assert not (tmp_path / "tensorboard").exists()


# ---------------------------------------------------------------- MLflow (a file store)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    # MLflow 3 refuses its file store unless asked: a database needs sqlalchemy, which mlflow-skinny leaves out.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def mlflow_run(tmp_path: Path, uri: str, *overrides: str) -> RunDir:
    return RunDir(tmp_path / "run", demo(f"tracking.mlflow={{tracking_uri: '{uri}', experiment: e}}", *overrides),
                  resume=False)  # fmt: skip


def test_mlflow_gets_the_scalars_and_the_config_in_one_run(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    run_dir = mlflow_run(tmp_path, mlflow_uri)
    record_steps(run_dir, store_with_pool(), range(1, 4), loss=0.3)
    run_dir.record(EvalRow(version=3, accuracy=0.5, by_group={"level 1 (easy)": 0.5}, time=1_004.0), store_with_pool())
    run_dir.close()
    run_id = json.loads((tmp_path / "run" / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "demo"
    assert client.get_experiment(run.info.experiment_id).name == "e"
    losses = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in losses] == [(1, 0.3), (2, 0.3), (3, 0.3)]
    assert client.get_metric_history(run_id, "eval/by_group/level 1 _easy_")[0].value == 0.5
    assert run.data.params["learner.steps"] == "500" and run.data.params["tracking.mlflow.experiment"] == "e"


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    mlflow_run(tmp_path, mlflow_uri).close()
    cfg = demo(f"tracking.mlflow={{tracking_uri: '{mlflow_uri}', experiment: e}}")
    resumed = RunDir(tmp_path / "run", cfg, resume=True)
    record_steps(resumed, store_with_pool(), range(1, 2), loss=0.3)
    resumed.close()
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["train/loss"] == 0.3


def test_a_tracker_that_fails_mid_run_is_logged_once_and_the_run_goes_on(tmp_path, mlflow_uri):
    logged: list[str] = []
    cfg = demo(f"tracking.mlflow={{tracking_uri: '{mlflow_uri}', experiment: e}}")
    run_dir = RunDir(tmp_path / "run", cfg, resume=False, log=logged.append)
    store = store_with_pool()
    record_steps(run_dir, store, range(1, 2), loss=0.3)
    shutil.rmtree(Path(mlflow_uri.removeprefix("file://")))  # the tracking store is gone under the run
    record_steps(run_dir, store, range(2, 5), loss=0.3)
    assert [r.step for r in run_dir.rows()] == [1, 2, 3, 4]
    run_dir.close()
    assert len(logged) == 1 and "tracking: mlflow failed at version 2" in logged[0], logged
    assert [s for s, _ in scalars(tensorboard(tmp_path / "run"), "train/loss")] == [1, 2, 3, 4]


# ---------------------------------------------------------------- W&B (offline)


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (a LevelDB-style log: 7-byte file header, 32 KiB blocks, each record
    a 7-byte header of crc32, length and type (1 full, 2 first, 3 middle, 4 last) and its bytes)."""
    from wandb.proto import wandb_internal_pb2

    data, records, parts, at = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    while at + 7 <= len(data):
        left = 32768 - at % 32768
        if left < 7:  # a block's tail too short for a header is padding
            at += left
            continue
        length, kind = struct.unpack("<HB", data[at + 4 : at + 7])
        if kind == 0:
            break
        parts += data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_history(run: Path) -> tuple[str, list[dict]]:
    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    # wandb's own core process writes the file: wait until its last record (exit) is on disk.
    deadline = time.monotonic() + 30
    while not (records := wandb_records(path)) or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, f"{path} has no exit record"
        time.sleep(0.1)
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    history = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in r.history.item:  # a histogram comes as items keyed [tag, "values"], [tag, "bins"], ...
                *path, last = list(item.nested_key) or [item.key]
                into = row
                for key in path:
                    into = into.setdefault(key, {})
                into[last] = json.loads(item.value_json)
            history.append(row)
    return run_record.run_id, history


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # and the config says offline: nothing reaches the network
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def test_wandb_offline_gets_scalars_and_histograms_against_the_version(tmp_path, wandb_offline):
    run_dir = RunDir(tmp_path, demo("tracking.wandb={project: paced-test, mode: offline, tags: [t]}"), resume=False)
    record_steps(run_dir, store_with_pool(), range(1, 4), loss=0.3)
    run_dir.close()
    run_id, history = wandb_history(tmp_path)
    assert json.loads((tmp_path / "tracking.json").read_text())["wandb"] == run_id
    steps = [h for h in history if "train/loss" in h]
    assert [(h["version"], h["train/loss"]) for h in steps] == [(1, 0.3), (2, 0.3), (3, 0.3)]
    pool = steps[-1]["pool/pass_rate"]
    assert pool["_type"] == "histogram" and sum(pool["values"]) == 4 and len(pool["bins"]) == 21


def test_a_resumed_run_goes_on_in_the_same_wandb_run(tmp_path, wandb_offline):
    cfg = demo("tracking.wandb={project: paced-test, mode: offline}")
    RunDir(tmp_path, cfg, resume=False).close()
    first = json.loads((tmp_path / "tracking.json").read_text())["wandb"]
    resumed = RunDir(tmp_path, cfg, resume=True)
    record_steps(resumed, store_with_pool(), range(1, 2), loss=0.3)
    resumed.close()
    assert json.loads((tmp_path / "tracking.json").read_text())["wandb"] == first
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and {p.stem for p in runs} == {f"run-{first}"}


def test_a_tracker_that_cannot_start_fails_the_run_folder_naming_it(tmp_path, wandb_offline):
    with pytest.raises(TrackingError, match=r"tracking\.wandb could not start"):
        RunDir(tmp_path, demo("tracking.wandb={project: 'bad/project/name', mode: offline}"), resume=False)


def test_a_config_naming_a_tracker_that_is_not_installed_fails_in_preflight(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # Python's own "not importable"
    cfg = demo("tracking.mlflow={experiment: e}")
    with pytest.raises(TrackingError, match=r"pip install 'paced\[mlflow\]'"):
        check_trackers(cfg)
    argv = ["--config", str(DEMO), "--out", str(tmp_path / "run"), "--set", "tracking.mlflow={experiment: e}",
            "--set", "data.train.n=100"]  # fmt: skip
    assert run_command(argv) == 1
    assert "paced: tracking.mlflow is set but the mlflow package cannot be imported" in capsys.readouterr().err


# ---------------------------------------------------------------- the real pipeline


@pytest.mark.slow
def test_the_real_pipeline_writes_tensorboard_event_files(ray_cluster, tmp_path, tiny_models):
    from test_pipeline import run_driver, small_config

    summary = run_driver(small_config(tiny_models, "tracked", steps=3), tmp_path)
    assert summary["steps"] == 3
    events = tensorboard(tmp_path)
    assert [s for s, _ in scalars(events, "train/loss")] == [1, 2, 3]
    assert [e.step for e in events.Histograms("pool/pass_rate")] == [1, 2, 3]
    assert events.Histograms("pool/pass_rate")[-1].histogram_value.num == summary["passrate_histogram_after"]["seen"]
    assert scalars(events, "eval/accuracy")[0][0] == 0  # the held-out evaluation before training
