#!/usr/bin/env bash
# The GPU session: everything `benchmarks/gpu_check.py` measures, on a fresh GPU machine with this repo checked
# out, in at most 8 minutes. Needs python3 (>= 3.10) and PyPI; never Hugging Face (the models are random).
#
#     bash benchmarks/gpu_session.sh
#
# 1. prints nvidia-smi;
# 2. creates (or reuses) the virtualenv .venv-gpu and installs from PyPI: torch (its default Linux wheel is the
#    CUDA build), this project with its dependencies (transformers in pyproject's range), and vLLM when the
#    NVIDIA driver can run it (vllm 0.32.0 pins torch 2.13.0, built for CUDA 13: driver >= 580); with an
#    older driver, torch 2.10.0 (CUDA 12.8, driver >= 525) and no vLLM, which the result notes;
# 3. runs the check at production shapes, each section in its own process within its time limit and what is
#    left of the 8 minutes;
# 4. writes gpu_results/gpu_check-<UTC time>.json (and the session's log beside it) and exits 0 even when
#    sections fail: the JSON says which and why.
#
# Settings (environment): GPU_SESSION_BUDGET_S (480), VENV_GPU (.venv-gpu), TORCH_VERSION, VLLM_VERSION
# (0.32.0), SKIP_VLLM=1, PYTHON (python3).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 0

BUDGET="${GPU_SESSION_BUDGET_S:-480}"
MARGIN=15 # seconds kept for writing the result after the last section
VENV="${VENV_GPU:-.venv-gpu}"
PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
OUT="gpu_results/gpu_check-$STAMP.json"
mkdir -p gpu_results
exec > >(tee -a "gpu_results/gpu_session-$STAMP.log") 2>&1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
NOTES=()

say() { echo "gpu_session [$SECONDS s]: $*"; }

# The session did not get as far as the check: the result file says why, and the session still exits 0.
give_up() {
  say "$1"
  "$PYTHON" - "$OUT" "$1" <<'EOF'
import datetime, json, sys
out, why = sys.argv[1:]
result = {"check": "benchmarks/gpu_session.sh", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "setup_error": why}
open(out, "w").write(json.dumps(result, indent=2) + "\n")
EOF
  say "wrote $OUT"
  exit 0
}

say "nvidia-smi"
nvidia-smi || say "nvidia-smi failed: no NVIDIA driver here, or it is not on PATH"
DRIVER="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
DRIVER_MAJOR="${DRIVER%%.*}"
[[ "$DRIVER_MAJOR" =~ ^[0-9]+$ ]] || DRIVER_MAJOR=0

VLLM="${VLLM_VERSION:-0.32.0}"
if [[ "${SKIP_VLLM:-0}" == 1 ]]; then
  NOTES+=("vllm not installed: SKIP_VLLM=1")
  VLLM=""
elif ((DRIVER_MAJOR < 580)); then
  NOTES+=("vllm not installed: vllm $VLLM pins torch 2.13.0, built for CUDA 13, which needs NVIDIA driver >= 580; this machine has '${DRIVER:-none}'")
  VLLM=""
fi
if ((DRIVER_MAJOR >= 580)); then
  TORCH="${TORCH_VERSION:-2.13.0}"
else
  TORCH="${TORCH_VERSION:-2.10.0}"
fi
for note in "${NOTES[@]}"; do say "$note"; done

# ------------------------------------------------------------------ the virtualenv

READY="$VENV/.installed-torch-$TORCH-vllm-${VLLM:-none}"
if [[ -f "$READY" && "$READY" -nt pyproject.toml ]]; then
  say "reusing $VENV (torch $TORCH, vllm ${VLLM:-none})"
else
  if [[ ! -x "$PY" ]]; then
    say "creating $VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
      # Debian's python3 without python3-venv: a virtualenv made by uv (from PyPI) instead.
      if ! { "$PYTHON" -m pip install --quiet --user uv && "$HOME/.local/bin/uv" venv --seed "$VENV"; }; then
        give_up "cannot create a virtualenv: '$PYTHON -m venv' failed and uv could not be installed to make one"
      fi
    fi
  fi
  wants=("torch==$TORCH" ${VLLM:+"vllm==$VLLM"} -e .)
  say "installing ${wants[*]}"
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip uv || say "could not install uv; pip it is"
  # uv downloads the CUDA wheels in parallel (a few GB); pip is the fallback, e.g. where only pip's
  # configured index is reachable.
  if [[ -x "$VENV/bin/uv" ]] && "$VENV/bin/uv" pip install --quiet --python "$PY" "${wants[@]}"; then
    :
  elif ! "$PY" -m pip install --quiet --disable-pip-version-check "${wants[@]}"; then
    give_up "installing ${wants[*]} from PyPI failed (see gpu_results/gpu_session-$STAMP.log)"
  fi
  rm -f "$VENV"/.installed-*
  touch "$READY"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU visible:', torch.cuda.is_available())"

# ------------------------------------------------------------------ the check

LEFT=$((BUDGET - SECONDS - MARGIN))
((LEFT > 1)) || LEFT=1
say "running benchmarks.gpu_check with $LEFT s left of the ${BUDGET} s budget"
note_args=()
for note in "${NOTES[@]}"; do note_args+=(--note "$note"); done
"$PY" -m benchmarks.gpu_check --device cuda --time-budget "$LEFT" --json "$OUT" "${note_args[@]}"
status=$?
if [[ ! -s "$OUT" ]]; then
  give_up "benchmarks.gpu_check exited with $status before writing its result (see gpu_results/gpu_session-$STAMP.log)"
fi
say "wrote $OUT (gpu_check exit status $status); the markdown rows above go into BENCHMARKS.md"
exit 0
