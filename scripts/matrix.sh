#!/usr/bin/env bash
# Set up, then run the default target matrix (shipped in the package) and write
# its reports to ./results/. Extra arguments go to `arena-harness run`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
mkdir -p results
exec .venv/bin/arena-harness run --jobs 2 \
    --json results/matrix.json --junit results/matrix.xml --markdown results/matrix.md "$@"
