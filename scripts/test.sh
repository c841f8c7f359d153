#!/usr/bin/env bash
# Set up and run the whole test suite. Extra arguments go to pytest (e.g. -k protocol).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
# The browser tests drive Debian's chromium; install it when we can (root + apt), else they skip.
if ! command -v chromedriver >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing chromium + chromium-driver for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "[test] could not install chromium; browser tests will skip"
fi
# The pool tests (tests/pool) run Debian's HAProxy in front of three recognizers; install it likewise, else they skip.
if ! command -v haproxy >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing haproxy for the pool tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null) \
    || echo "[test] could not install haproxy; pool tests will skip"
fi
exec .venv/bin/python -m pytest "$@"
