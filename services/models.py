"""Loading student and teacher models and their tokenizer, with errors that say which and why.

A model path is a local directory, a Hugging Face id (only what is already cached: runs are
offline-friendly), or `embedded:teacher` / `embedded:student` for the tiny models the package ships.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from paced_core.embedded import resolve_model_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded; the message names the config path and the cause."""


def _source(path: str, what: str) -> str:
    resolved = resolve_model_path(path)
    looks_local = resolved.startswith((".", "/", "~")) or Path(resolved).expanduser().exists()
    if looks_local and not Path(resolved).expanduser().is_dir():
        raise ModelLoadError(f"{what}: model directory {resolved!r} does not exist")
    return str(Path(resolved).expanduser()) if looks_local else resolved


def check_model(path: str, gguf_file: str | None = None, what: str = "student.path") -> None:
    """Fail fast (before any actor starts) when a model's config cannot be found or read."""
    source = _source(path, what)
    if gguf_file is not None:
        if Path(source).is_dir() and not (Path(source) / gguf_file).is_file():
            raise ModelLoadError(f"{what}: no GGUF file {gguf_file!r} in {source!r}")
        return
    try:
        AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        # A relative folder that is not there reads as a Hugging Face id: say that it is not a folder either.
        local = "" if Path(source).is_dir() else f" (and no folder {source!r} is under {os.getcwd()})"
        raise ModelLoadError(f"{what}: cannot load a model config from {source!r}{local}: {err}") from err
    if Path(source).is_dir():
        check_weight_files(Path(source), what)


def check_weight_files(directory: Path, what: str) -> None:
    """Open the header of every `*.safetensors` file in `directory` (no tensor is read): a truncated or
    corrupt file is named now, not a minute later inside an actor."""
    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ModelLoadError(
                f"{what}: {path} is not a readable safetensors file ({err}); copy or download the model again"
            ) from err


def load_tokenizer(path: str, gguf_file: str | None = None, what: str = "student.path") -> PreTrainedTokenizerBase:
    source = _source(path, what)
    try:
        tok = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{what}: cannot load a tokenizer from {source!r}: {err}") from err
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path: str, gguf_file: str | None = None, dtype: str = "float32", device: str = "cpu", what: str = "student.path"
) -> PreTrainedModel:
    source = _source(path, what)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=DTYPES[dtype])
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{what}: cannot load a model from {source!r}: {err}") from err
    return model.to(device)


def save_model_dir(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> Path:
    """Save `model` (safetensors, config, generation config) and `tokenizer` into `directory`; returns it.

    Every file gets the mode a plain `open()` gives, 0666 less the umask: transformers writes weight files
    through a temporary file, which is created 0600, so others on a shared machine (or a vLLM server
    running as another user) could not read the weights.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
    return directory


def pick_device(setting: str) -> str:
    """`auto` is cuda when a GPU is visible, else cpu; `cuda` without a GPU is an error."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("learner.device is 'cuda' but no CUDA device is visible")
    return setting
