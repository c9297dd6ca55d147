#!/usr/bin/env bash
# Installs what building and testing Fanfare needs on Debian 12, skipping what is present.
# Usage: scripts/setup.sh build   (packages the build needs)
#        scripts/setup.sh test    (the build's packages plus the test peers)
set -euo pipefail

BUILD_PACKAGES=(
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev
)
TEST_PACKAGES=(
  iproute2 procps
  nftables  # tests/tests/browser.rs limits the server's outgoing UDP in the test namespace
  chromium  # the real browser of tests/tests/browser.rs
  ffmpeg    # ffprobe checks recordings; ffmpeg makes upload fixtures
  # GStreamer's RTSP server, the real camera of the ingest tests (tests/rtsp/server.py;
  # x264enc is in -ugly, x265enc in -bad, opusenc in -base)
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad
  glib-networking  # GIO's TLS backend: the rtsps camera (server.py --tls-cert)
  python3-venv  # tests/s3's moto server lives in a venv inside the clone
)

want=("${BUILD_PACKAGES[@]}")
if [ "${1:-build}" = "test" ]; then
  want+=("${TEST_PACKAGES[@]}")
  # Node.js drives Chromium (tests/browser): Debian's packages, unless a node/npm is already on PATH.
  command -v node >/dev/null || want+=(nodejs)
  command -v npm >/dev/null || want+=(npm)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests/browser's npm packages (playwright-core; never `playwright install`: the browser is
# Debian's). Reinstalled only when package-lock.json changed since the last `npm ci`, so later
# runs need no network.
if [ "${1:-build}" = "test" ]; then
  browser_dir="$(dirname "$0")/../tests/browser"
  lock_sum="$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$browser_dir/node_modules/.fanfare-lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
    echo "setup: npm ci in tests/browser"
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_sum" >"$browser_dir/node_modules/.fanfare-lock-sha256"
  fi

  # The S3-compatible server of the object-store tests (moto, from PyPI) in a venv under
  # target/, rebuilt only when tests/s3/requirements.txt changes.
  s3_dir="$(dirname "$0")/../tests/s3"
  venv="$(dirname "$0")/../target/s3-venv"
  req_sum="$(sha256sum "$s3_dir/requirements.txt" | cut -d' ' -f1)"
  if [ "$(cat "$venv/.fanfare-req-sha256" 2>/dev/null)" != "$req_sum" ]; then
    echo "setup: moto (S3 test server) into target/s3-venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$s3_dir/requirements.txt"
    echo "$req_sum" >"$venv/.fanfare-req-sha256"
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "setup: Rust (cargo 1.89 or newer) is required; install it with rustup, then run this again." >&2
  exit 1
fi
