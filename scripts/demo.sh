#!/usr/bin/env bash
# Set up (first run: a few minutes) and run the whole demo on this machine; Ctrl-C stops it.
# Options go to scripts/demo.py (e.g. --source 0 for a USB webcam, --host 0.0.0.0, --seconds 60 --check).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
exec .venv/bin/python scripts/demo.py "$@"
