#!/usr/bin/env bash
# The test command: set up if needed, lint, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
# Two worker processes (pytest-xdist): the suite is many independent end-to-end runs, so on 2 cores it takes about
# half the wall time; LOTTERY_TEST_WORKERS=0 runs it in this process.
.venv/bin/python -m pytest -n "${LOTTERY_TEST_WORKERS:-2}" "$@"
