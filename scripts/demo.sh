#!/usr/bin/env bash
# The main job: set up, run the demo experiment (IMP with rewinding on LeNet-300-100 / Fashion-MNIST,
# with both random controls), print its table and write its report. Re-running finishes at once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
.venv/bin/lottery run examples/demo.toml "$@" | tee "$log"
run_dir=$(tail -n 1 "$log")
report=$(.venv/bin/lottery report "$run_dir" 2>/dev/null)
echo "report: $report/report.html"
echo "$run_dir"
