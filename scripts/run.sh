#!/usr/bin/env bash
# Set up and run the exporter on sensible defaults: http://localhost:10066/metrics
# Extra arguments go to `wattprint serve` (see `.venv/bin/wattprint serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/wattprint check || true
exec .venv/bin/wattprint serve "$@"
