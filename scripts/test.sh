#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test (unit and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
