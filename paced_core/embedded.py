"""The tiny teacher and student shipped inside the package, for `make demo` and CPU tests.

Both are Llama-architecture models with a character-level tokenizer over `tasks.SYNTHETIC_ALPHABET`,
trained from scratch on `tasks.synthetic_arithmetic` by `scripts/train_embedded.py`: the teacher to high
accuracy on every level, the student to partial competence. How they were trained, their sizes and measured
accuracies: `paced_core/data/embedded/README.md`.

A config names them as `embedded:teacher` / `embedded:student` wherever a model path goes;
`resolve_model_path` turns that into the shipped directory, which `from_pretrained` loads offline.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
"""A model path starting with this names a shipped model: `embedded:teacher`, `embedded:student`."""

EMBEDDED_MODELS: dict[str, str] = {
    "teacher": "Llama, character tokenizer, trained to >= 90% greedy accuracy on every synthetic level",
    "student": "Llama, character tokenizer, partly trained: pass rates spread from 0 to 1, to distil into",
}
"""Name -> what it is. Each lives in `paced_core/data/embedded/<name>/` (config, safetensors, tokenizer)."""


def embedded_model_path(name: str) -> Path:
    """The directory holding the shipped model `name` (one of `EMBEDDED_MODELS`), ready for `from_pretrained`.

    Raises `ValueError` listing the known names for an unknown one, and `FileNotFoundError` when the
    directory is missing from this installation (regenerate it with `python scripts/train_embedded.py`).
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    # Setuptools installs package data as plain files, so the resource is a real directory on disk.
    path = Path(str(files("paced_core") / "data" / "embedded" / name))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"embedded model {name!r}: no config.json in {path}; the package was installed without "
            f"paced_core/data/embedded/** (check [tool.setuptools.package-data] in pyproject.toml) or the "
            f"models were deleted; regenerate them with `python scripts/train_embedded.py`"
        )
    return path


def resolve_model_path(path: str) -> str:
    """`embedded:<name>` -> the shipped directory of that model (as a string); any other path (a Hugging
    Face id or a local directory) is returned unchanged."""
    if path.startswith(EMBEDDED_PREFIX):
        return str(embedded_model_path(path.removeprefix(EMBEDDED_PREFIX)))
    return path
