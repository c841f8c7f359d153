#!/usr/bin/env bash
# Create .venv and install the project with what it needs. Idempotent: re-runs only when a
# requirements file changed. Usage: scripts/setup.sh [server|edge|demo|dev]   (default: dev)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"
case "$profile" in
  server) reqs=(requirements-server.txt requirements-dashboard.txt) ;;
  edge) reqs=(requirements-edge.txt) ;;
  demo) reqs=(requirements-server.txt requirements-edge.txt requirements-dashboard.txt) ;;
  dev) reqs=(requirements-dev.txt) ;;
  *) echo "usage: scripts/setup.sh [server|edge|demo|dev]" >&2; exit 2 ;;
esac
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.facemon-$profile"
want=$(cat pyproject.toml requirements-*.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages ($profile); the first time takes a few minutes"
  .venv/bin/python -m pip install -q --upgrade pip wheel "setuptools<81"
  args=(); for r in "${reqs[@]}"; do [ -f "$r" ] && args+=(-r "$r"); done
  .venv/bin/python -m pip install -q "${args[@]}"
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
