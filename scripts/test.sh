#!/usr/bin/env bash
# Set up, then run lint, types and every test tier (unit, plugin, integration).
# Tests whose tool is missing skip with the install hint; with HARNESS_REQUIRE=all
# (set by CI) such a skip is a failure. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest -n 2 "$@"
