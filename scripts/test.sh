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
# The pool tests (tests/pool) run Debian's HAProxy in front of three recognizers, and the executed deployment doc
# (tests/test_deploy_docs.py) puts the shipped nginx config and Caddyfile in front of the dashboard; install them
# likewise, else those parts skip.
if { ! command -v haproxy >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1 || ! command -v caddy >/dev/null 2>&1; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing haproxy + nginx + caddy for the pool and deployment tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx caddy >/dev/null) \
    || echo "[test] could not install haproxy/nginx/caddy; pool tests skip, the deployment test runs without its proxies"
fi
exec .venv/bin/python -m pytest "$@"
