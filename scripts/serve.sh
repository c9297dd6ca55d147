#!/usr/bin/env bash
# Builds Fanfare (release) and runs the server on embedded defaults: sled and media under
# ./data, web app and API on http://127.0.0.1:8080/. Extra arguments go to `fanfare serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
cargo build --release -p fanfare-api --bin fanfare
exec target/release/fanfare serve "$@"
