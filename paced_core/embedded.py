"""The tiny models the package ships for the embedded default (`make demo`).

A config names them `embedded:teacher` and `embedded:student`; every other model path (a Hugging Face
id, a local directory) is used as given. `scripts/train_embedded.py` trains them from scratch on CPU.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EMBEDDED_MODELS = ("teacher", "student")
PREFIX = "embedded:"


def embedded_model_path(name: str) -> Path:
    """The shipped directory of embedded model `name` (one of `EMBEDDED_MODELS`)."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    return Path(str(resources.files("paced_core") / "data" / "embedded" / name))


def resolve_model_path(path: str) -> str:
    """`embedded:NAME` -> the shipped directory; anything else unchanged."""
    if path.startswith(PREFIX):
        return str(embedded_model_path(path.removeprefix(PREFIX)))
    return path
