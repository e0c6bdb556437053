#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv, the CPU build of torch (pinned; override with
# TORCH_SPEC), the Fashion-MNIST files (Debian's dataset-fashion-mnist), lottery with its test, Ray, tracker
# and images (Pillow) extras, Chromium for the report's browser test, and slurm-wlm + munge for the Slurm
# test. Idempotent: a second run only checks.
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
# The tracker extras the tests use (measured on a fresh venv: tensorboard 6 s / 54 MB, wandb 10 s / 88 MB,
# mlflow-skinny 9 s / 87 MB).
if ! .venv/bin/python -c "import lottery, pytest, xdist, hypothesis, ray, tensorboard, wandb, mlflow, PIL, pandas, lightning, transformers, submitit" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.lottery-installed ]; then
    echo "setup: installing lottery (editable, with test, ray, tensorboard, wandb, mlflow, images, pandas, lightning, transformers and slurm extras)"
    .venv/bin/pip install --quiet -e ".[test,ray,tensorboard,wandb,mlflow,images,pandas,lightning,transformers,slurm]"
    touch .venv/.lottery-installed
fi
# A headless browser for the report test (tests/test_report_browser.py; skipped without one): Debian's chromium,
# about 20 s and 350 MB. Set LOTTERY_NO_BROWSER=1 to skip it.
if [ -z "${LOTTERY_NO_BROWSER:-}" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian package chromium (for the report's browser test)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; } \
        || echo "setup: could not install chromium; the browser test will be skipped"
fi
# A single-node Slurm for the slurm executor's test (tests/test_slurm.py starts its own slurmctld, slurmd and munged
# in a temporary directory; skipped without them): Debian's slurm-wlm and munge. Set LOTTERY_NO_SLURM=1 to skip it.
if [ -z "${LOTTERY_NO_SLURM:-}" ] && ! command -v slurmctld >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages slurm-wlm and munge (for the Slurm executor's test)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q slurm-wlm munge >/dev/null; } \
        || echo "setup: could not install slurm-wlm and munge; the Slurm test will be skipped"
fi
