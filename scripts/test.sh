#!/usr/bin/env bash
# Set up and run the whole test suite: unit, property-based and integration tests
# (real `wattprint serve` processes and a real Prometheus on 127.0.0.1). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
