#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv, the CPU build of torch (pinned; override with
# TORCH_SPEC), the Fashion-MNIST files (Debian's dataset-fashion-mnist), and lottery with its test, Ray
# and images (Pillow) extras. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
FASHION_MNIST=/usr/share/datasets/fashion-mnist

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    .venv/bin/pip install --quiet "$TORCH_SPEC"
fi
if [ ! -f "$FASHION_MNIST/train-images-idx3-ubyte.gz" ]; then
    echo "setup: installing Debian package dataset-fashion-mnist"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
if ! .venv/bin/python -c "import lottery, pytest, hypothesis, ray, PIL" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.lottery-installed ]; then
    echo "setup: installing lottery (editable, with test, ray and images extras)"
    .venv/bin/pip install --quiet -e ".[test,ray,images]"
    touch .venv/.lottery-installed
fi
