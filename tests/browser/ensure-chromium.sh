#!/usr/bin/env bash
# Makes sure a Chromium for the browser tests is installed (Debian's package: /usr/bin/chromium).
# CHROMIUM=/path/to/chrome skips the check.
set -euo pipefail
bin="${CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$bin" ]]; then
  exit 0
fi
if [[ -n "${CHROMIUM:-}" ]]; then
  echo "error: CHROMIUM=$CHROMIUM is not an executable" >&2
  exit 1
fi
if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  echo "==> installing chromium (apt-get install -y chromium)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium >&2
  exit 0
fi
echo "error: Chromium is not installed. On Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)." >&2
exit 1
