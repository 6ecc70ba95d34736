"""A `datasets` source: local parquet, JSON lines, Arrow and save_to_disk data the test writes, read through the
config into the run's pool with its field mapping; a mapping to a missing column names the file and the columns."""

from __future__ import annotations

from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from paced_core.config import ConfigError, load_config  # noqa: E402
from paced_core.hf_datasets import load_hf_dataset  # noqa: E402
from paced_core.tasks import TaskDataError  # noqa: E402
from services.pool import group_of, load_pool  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

ROWS = {
    "uid": ["q1", "q2", "q3"],
    "text": ["1+1?", "2+3?", "10-4?"],
    "gold": [2, 5, 6],
    "topic": ["add", "add", "sub"],
    "source": ["s", "s", "s"],
}


@pytest.fixture
def table():
    return datasets.Dataset.from_dict(ROWS)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".arrow", ".csv"])
def test_each_file_kind_becomes_problems_with_the_mapping(table, tmp_path, suffix):
    path = tmp_path / f"toy{suffix}"
    if suffix == ".parquet":
        table.to_parquet(str(path))
    elif suffix == ".jsonl":
        table.to_json(str(path))
    elif suffix == ".csv":
        table.to_csv(str(path), index=False)
    else:
        table.save_to_disk(str(tmp_path / "saved"))
        path = next((tmp_path / "saved").glob("*.arrow")).rename(path)
    problems = load_hf_dataset(path, question="text", answer="gold", id="uid", group="topic")
    assert [(p.id, p.prompt, p.answer, p.checker) for p in problems] == [
        ("q1", "1+1?", "2", "math"),
        ("q2", "2+3?", "5", "math"),
        ("q3", "10-4?", "6", "math"),
    ]
    assert problems[2].metadata == {"source": "s", "dataset": "toy", "group": "sub"}
    assert group_of(problems[2]) == "sub"


def test_a_saved_dataset_dict_is_read_by_split(table, tmp_path):
    datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert [p.id for p in load_hf_dataset(tmp_path / "dd", question="text", answer="gold", split="test")] == ["dd-0"]
    with pytest.raises(TaskDataError, match=r"dd: give split, one of train, test \(got None\)"):
        load_hf_dataset(tmp_path / "dd", question="text", answer="gold")


def test_a_mapping_to_a_missing_column_lists_the_columns_there_are(table, tmp_path):
    table.to_parquet(str(tmp_path / "toy.parquet"))
    with pytest.raises(TaskDataError) as err:
        load_hf_dataset(tmp_path / "toy.parquet", question="question", answer="gold")
    assert str(err.value) == (
        f"{tmp_path / 'toy.parquet'}: fields.question is 'question', which is not a column; "
        "the columns are uid, text, gold, topic, source"
    )


def test_repeated_ids_and_empty_answers_name_the_row(tmp_path):
    datasets.Dataset.from_dict({"q": ["a", "b"], "a": ["1", "1"], "k": ["x", "x"]}).to_parquet(
        str(tmp_path / "d.parquet")
    )
    with pytest.raises(TaskDataError, match=r"d\.parquet row 1: id 'x' repeats row 0"):
        load_hf_dataset(tmp_path / "d.parquet", question="q", answer="a", id="k")
    datasets.Dataset.from_dict({"q": ["a"], "a": [" "]}).to_parquet(str(tmp_path / "e.parquet"))
    with pytest.raises(TaskDataError, match=r"e\.parquet row 0: column 'a' \(fields\.answer\) is empty"):
        load_hf_dataset(tmp_path / "e.parquet", question="q", answer="a")


def demo_with(train: str):
    return load_config(DEMO, [f"data.train={train}", "data.heldout_fraction=0.0"])


def test_a_config_source_feeds_the_pool(table, tmp_path):
    table.to_parquet(str(tmp_path / "toy.parquet"))
    fields = "{question: text, answer: gold, id: uid}"
    cfg = demo_with(f"{{type: datasets, path: {tmp_path / 'toy.parquet'}, fields: {fields}, checker: exact}}")
    assert [(p.id, p.answer, p.checker) for p in load_pool(cfg.data).train] == [
        ("q1", "2", "exact"),
        ("q2", "5", "exact"),
        ("q3", "6", "exact"),
    ]


def test_an_unknown_field_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.train.*fields\.prompt"):
        demo_with("{type: datasets, path: x.parquet, fields: {prompt: text}}")


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(TaskDataError, match=r"nowhere\.parquet: no such file or folder"):
        load_hf_dataset(tmp_path / "nowhere.parquet")
