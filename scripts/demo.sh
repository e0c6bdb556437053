#!/usr/bin/env bash
# The main job: set up, run the demo experiment (IMP with rewinding on LeNet-300-100 / Fashion-MNIST,
# with both random controls), print its table and write its report. Re-running finishes at once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir=$(.venv/bin/lottery run examples/demo.toml "$@" | tee /dev/stderr | tail -n 1)
.venv/bin/lottery report "$run_dir" >/dev/null
echo "report: $run_dir/report/report.html"
echo "$run_dir"
