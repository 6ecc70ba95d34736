#!/usr/bin/env bash
# Lint, then build both images from the repository root: paced:VERSION-cpu and paced:VERSION-gpu, VERSION
# being pyproject.toml's (the deploy/ manifests name paced:VERSION-gpu; tests/test_deploy.py checks it).
#     bash docker/build.sh            # needs a Docker engine; `make lint` runs the hadolint half alone
set -euo pipefail
cd "$(dirname "$0")/.."
HADOLINT="${HADOLINT:-.venv/bin/hadolint}"
VERSION="$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")"
"$HADOLINT" docker/Dockerfile.cpu docker/Dockerfile.gpu
docker build -f docker/Dockerfile.cpu -t "paced:${VERSION}-cpu" .
docker build -f docker/Dockerfile.gpu -t "paced:${VERSION}-gpu" .
