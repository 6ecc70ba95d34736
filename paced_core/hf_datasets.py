"""Problems from Hugging Face `datasets` files: local parquet, JSON / JSON lines, CSV or Arrow files, or a folder
written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.

    load_hf_dataset("gsm8k.parquet", question="question", answer="answer")      # ids: gsm8k-0, gsm8k-1, ...
    load_hf_dataset("saved/", question="problem", answer="solution", id="uid", group="level", split="test")

Nothing is fetched: only local paths are read. `datasets` is an optional dependency (`pip install
'paced[datasets]'`), imported when such a source is loaded. Each row becomes a `Problem` whose prompt is the
`question` column and gold answer the `answer` column (numbers are written as strings); `id`, when given,
names the column of unique ids (else `<file stem>-<row index>`), and `group`, when given, the column a
row is reported under (`metadata["group"]`). The other columns go into `metadata`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paced_core.tasks import Checker, Problem, TaskDataError

_FILE_KINDS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


def _open(path: Path, split: str | None) -> Any:
    try:
        import datasets
    except ImportError as err:
        raise TaskDataError(
            f"{path}: reading a `datasets` source needs the `datasets` package; install it with "
            f"`pip install 'paced[datasets]'` (or `pip install datasets`)"
        ) from err
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if split is None and len(splits) == 1:
                split = splits[0]
            if split not in loaded:
                raise TaskDataError(f"{path}: give split, one of {', '.join(splits)} (got {split!r})")
            return loaded[split]
        if split is not None:
            raise TaskDataError(f"{path}: holds one dataset, not splits; leave split unset (got {split!r})")
        return loaded
    kind = _FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise TaskDataError(
            f"{path}: not a file `datasets` reads here; give a {', '.join(_FILE_KINDS)} file or a save_to_disk folder"
        )
    reader = {
        "parquet": datasets.Dataset.from_parquet,
        "json": datasets.Dataset.from_json,
        "csv": datasets.Dataset.from_csv,
        "arrow": datasets.Dataset.from_file,
    }[kind]
    return reader(str(path))


def load_hf_dataset(
    path: str | Path,
    *,
    question: str = "question",
    answer: str = "answer",
    id: str | None = None,
    group: str | None = None,
    split: str | None = None,
    checker: Checker = "math",
) -> list[Problem]:
    """The rows of the dataset at `path` as problems (rules: the module docstring). Raises `TaskDataError`
    naming the path for a missing path, a mapping to a column that is not there (listing the columns there
    are), an empty question or answer (with the row index), a repeated id, or no rows at all."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TaskDataError(f"{path}: no such file or folder")
    table = _open(path, split)
    columns = list(table.column_names)
    mapping = {"question": question, "answer": answer, "id": id, "group": group}
    for field, column in mapping.items():
        if column is not None and column not in columns:
            raise TaskDataError(
                f"{path}: fields.{field} is {column!r}, which is not a column; the columns are {', '.join(columns)}"
            )
    used = {column for column in mapping.values() if column is not None}
    problems: list[Problem] = []
    first_row: dict[str, int] = {}
    for index, row in enumerate(table):
        where = f"{path} row {index}"
        texts = {}
        for field in ("question", "answer"):
            value = row[mapping[field]]
            if value is None or not str(value).strip():
                raise TaskDataError(f"{where}: column {mapping[field]!r} (fields.{field}) is empty")
            texts[field] = str(value)
        problem_id = str(row[id]) if id is not None else f"{path.stem}-{index}"
        if problem_id in first_row:
            raise TaskDataError(f"{where}: id {problem_id!r} repeats row {first_row[problem_id]}; ids must be unique")
        first_row[problem_id] = index
        metadata = {key: value for key, value in row.items() if key not in used}
        metadata["dataset"] = path.stem
        if group is not None:
            metadata["group"] = str(row[group])
        problems.append(
            Problem(id=problem_id, prompt=texts["question"], answer=texts["answer"], checker=checker, metadata=metadata)
        )
    if not problems:
        raise TaskDataError(f"{path}: no rows")
    return problems
