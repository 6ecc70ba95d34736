"""The run folder and --resume's rules: a new run never writes into an old one's folder unless told to, a
resumed run keeps its own config (a differing one is refused, naming what differs, unless --set gives the
change), redone steps replace their metrics rows, and the accounting adds up across segments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dashboard_data import step_report, step_row

from paced_core.config import ConfigError, load_config
from services.driver.accounting import STATE_FILE, RunState
from services.driver.run_dir import RunDir, RunDirError
from services.launch import resolve_config
from services.records import EvalRow, GradingReport, row_version
from services.store.memory_store import MemoryStore

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def test_a_new_run_refuses_a_folder_that_holds_a_run(tmp_path):
    RunDir(tmp_path, load_config(DEMO), resume=False).close()
    with pytest.raises(RunDirError, match=r"already holds a run \(config.yaml, metrics.jsonl\).*--resume.*--overwrite"):
        RunDir(tmp_path, load_config(DEMO), resume=False)


def test_overwrite_starts_the_folder_over(tmp_path):
    first = RunDir(tmp_path, load_config(DEMO), resume=False)
    first.record(step_row(1), MemoryStore())
    first.close()
    (tmp_path / "checkpoints" / "step-000001").mkdir(parents=True)
    RunDir(tmp_path, load_config(DEMO, ["learner.steps=7"]), resume=False, overwrite=True).close()
    assert not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert "steps: 7" in (tmp_path / "config.yaml").read_text()


def test_redone_steps_replace_their_rows(tmp_path):
    store = MemoryStore()
    run = RunDir(tmp_path, load_config(DEMO), resume=False)
    for step in range(1, 6):
        run.record(step_row(step), store)
    run.record(EvalRow(version=4, accuracy=0.5, by_group={}, time=0.0), store)
    run.close()
    resumed = RunDir(tmp_path, load_config(DEMO), resume=True)
    assert resumed.drop_rows_after(3) == 3  # steps 4 and 5, and the evaluation of version 4
    resumed.record(step_row(4), store)
    assert [row_version(r) for r in resumed.rows()] == [1, 2, 3, 4]
    resumed.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_a_half_written_last_row_is_dropped_on_resume(tmp_path):
    store = MemoryStore()
    run = RunDir(tmp_path, load_config(DEMO), resume=False)
    run.record(step_row(1), store)
    run.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "step", "st')  # the driver was killed mid-write
    resumed = RunDir(tmp_path, load_config(DEMO), resume=True)
    assert resumed.drop_rows_after(1) == 0
    resumed.record(step_row(2), store)
    resumed.close()
    assert [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def started_run(tmp_path: Path, *overrides: str) -> Path:
    RunDir(tmp_path, load_config(DEMO, list(overrides)), resume=False).close()
    return tmp_path


def test_resume_uses_the_run_folders_config(tmp_path):
    out = started_run(tmp_path, "learner.steps=300")
    assert resolve_config(None, out, [], resume=True).learner.steps == 300


def test_resume_refuses_a_differing_config_naming_each_difference(tmp_path):
    out = started_run(tmp_path, "learner.steps=300")
    with pytest.raises(ConfigError) as err:
        resolve_config(str(DEMO), out, ["learner.lr=2e-5"], resume=True)
    message = str(err.value)
    assert "learner.steps: 300 in the run folder" in message, message
    assert "learner.lr" not in message  # changed on purpose with --set
    assert "--set key=value" in message


def test_resume_takes_a_change_given_with_set(tmp_path):
    out = started_run(tmp_path, "learner.steps=300")
    cfg = resolve_config(str(DEMO), out, ["learner.steps=500"], resume=True)
    assert cfg.learner.steps == 500
    assert resolve_config(None, out, ["learner.steps=500"], resume=True).learner.steps == 500
    RunDir(out, cfg, resume=True).close()  # the resumed run keeps the change: the next --resume goes on with it
    assert resolve_config(None, out, [], resume=True).learner.steps == 500


def test_resume_names_the_masked_secrets_when_it_cannot_use_them(tmp_path):
    out = started_run(tmp_path, "store.url=redis://:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"keeps its secrets masked .*--config FILE"):
        resolve_config(None, out, [], resume=True)
    given = resolve_config(None, out, ["store.url=redis://:s3cret@127.0.0.1:6379/0"], resume=True)
    assert given.store.url.get_secret_value().endswith("@127.0.0.1:6379/0")


def report(queued: int, graded: int) -> GradingReport:
    return GradingReport(graded=graded, queued=queued, recorded=graded, correct=0, teacher_refs_kept=0,
                         problem_ids=[], tokens=10 * graded)  # fmt: skip


def test_the_accounting_adds_up_across_segments(tmp_path):
    state = RunState(started_at=0.0)
    state.add_grading(report(queued=40, graded=48))
    state.add_step(step_report(1, [0.0, 0.5, None], used=16, dropped_stale=4))
    # The checkpoint saw 20 rollouts in the queue (40 - 16 - 4); the driver then died, and the store's queue
    # held 26 when the run was resumed (graded after the checkpoint, never trained on).
    state.save(tmp_path, queue_depth=20, train_loop_s=12.0)
    resumed = RunState.model_validate_json((tmp_path / STATE_FILE).read_text())
    resumed.resumed_with_queue(26)
    resumed.add_step(step_report(2, None, used=16))
    left = 26 - 16
    assert resumed.rollouts_graded == resumed.used + resumed.dropped_stale + left
    assert (resumed.segments, resumed.train_loop_s, resumed.rollouts_recorded_only) == (2, 12.0, 8)
    assert resumed.trained_sequences_by_p == {"p0": 1, "between": 1, "p1": 0, "unknown": 1}


def test_resume_takes_the_newest_checkpoint_the_driver_finished(tmp_path):
    from services.driver.training import STORE_SNAPSHOT, resumable_checkpoint

    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        resumable_checkpoint(tmp_path, embedded=True)
    done, cut_short = tmp_path / "checkpoints" / "step-000002", tmp_path / "checkpoints" / "step-000004"
    for ckpt in (done, cut_short):
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
    # The learner saved step 4 and marked it latest; the driver was killed before it added its files.
    RunState(started_at=0.0).save(done, queue_depth=0, train_loop_s=1.0)
    (done / STORE_SNAPSHOT).write_text("{}")
    assert resumable_checkpoint(tmp_path, embedded=True) == done
    RunState(started_at=0.0).save(cut_short, queue_depth=0, train_loop_s=2.0)
    assert resumable_checkpoint(tmp_path, embedded=False) == cut_short
    assert resumable_checkpoint(tmp_path, embedded=True) == done  # step 4 has no store snapshot
