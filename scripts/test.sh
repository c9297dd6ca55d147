#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test (unit and end-to-end).
# The tests run inside a fresh network namespace with only loopback up, so no WebRTC
# candidate or packet can leave this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
cargo build --workspace --all-targets
cargo build -p fanfare-api --bin fanfare

inner='ip link set lo up && exec cargo test --workspace --offline --no-fail-fast'
if [ "$(id -u)" -eq 0 ]; then
  exec unshare --net -- bash -c "$inner"
else
  exec unshare --net --map-root-user -- bash -c "$inner"
fi
