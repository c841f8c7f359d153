#!/usr/bin/env bash
# Create .venv and install the project with what it needs. Idempotent: re-runs only when a
# requirements file changed. Usage: scripts/setup.sh [server|edge|demo|dev]   (default: dev)
#   scripts/setup.sh edge --pi --env-file desk-07.env
#     --pi: the venv sees the system's packages (Raspberry Pi OS's python3-picamera2 cannot be pip-installed)
#     --env-file: a desk's file from `facemon-dashboard add-stations`, checked with the edge's own settings
#       loader, then installed as /etc/facemon/edge.env (as root; the unit deploy/facemon-edge.service reads it)
#       or ./edge.env (0600) otherwise
#   scripts/setup.sh edge --pi --code 7KQ2-M9XD-PAWE --dashboard https://dash.lab
#     --code/--dashboard: instead of carrying a file, redeem the desk's single-use enrolment code
#       (`facemon-dashboard add-stations ... --codes`) for its env file, then install it as --env-file does
# Environment: FACEMON_SETUP_VENV=DIR uses that existing venv as it is, with nothing created or installed (it must
#   already hold the profile's packages: CI, tests, a shared venv); FACEMON_SETUP_ETC=DIR installs edge.env there
#   instead of /etc/facemon (as root) or the checkout's ./edge.env (otherwise).
set -euo pipefail
here="$PWD"
cd "$(dirname "$0")/.."
profile="${1:-dev}"
[ $# -gt 0 ] && shift
pi=0; env_file=""; code=""; dashboard=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pi) pi=1 ;;
    --env-file) [ $# -ge 2 ] || { echo "setup: --env-file needs a file" >&2; exit 2; }
                env_file="$2"; case "$env_file" in /*) ;; *) env_file="$here/$env_file" ;; esac; shift ;;
    --code) [ $# -ge 2 ] || { echo "setup: --code needs the desk's enrolment code" >&2; exit 2; }
            code="$2"; shift ;;
    --dashboard) [ $# -ge 2 ] || { echo "setup: --dashboard needs the dashboard's URL" >&2; exit 2; }
                 dashboard="$2"; shift ;;
    *) echo "setup: unknown option $1 (known: --pi, --env-file FILE, --code CODE --dashboard URL)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$env_file" ] && [ ! -r "$env_file" ]; then echo "setup: cannot read $env_file" >&2; exit 2; fi
if [ -n "$code$dashboard" ]; then
  [ -n "$code" ] && [ -n "$dashboard" ] || { echo "setup: --code and --dashboard go together" >&2; exit 2; }
  [ -z "$env_file" ] || { echo "setup: give --env-file or --code, not both" >&2; exit 2; }
fi
case "$profile" in
  server) reqs=(requirements-server.txt requirements-dashboard.txt) ;;
  edge) reqs=(requirements-edge.txt) ;;
  demo) reqs=(requirements-server.txt requirements-edge.txt requirements-dashboard.txt) ;;
  dev) reqs=(requirements-dev.txt) ;;
  *) echo "usage: scripts/setup.sh [server|edge|demo|dev]" >&2; exit 2 ;;
esac
PY="${PYTHON:-python3}"
venv=.venv
if [ -n "${FACEMON_SETUP_VENV:-}" ]; then
  venv="$FACEMON_SETUP_VENV"; case "$venv" in /*) ;; *) venv="$here/$venv" ;; esac
  [ -x "$venv/bin/python" ] || { echo "setup: FACEMON_SETUP_VENV=$venv has no bin/python" >&2; exit 2; }
  echo "[setup] using the venv $venv as it is (FACEMON_SETUP_VENV: nothing created or installed)"
elif [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)$([ $pi = 1 ] && echo ', seeing the system packages (picamera2)')"
  if [ $pi = 1 ]; then "$PY" -m venv --system-site-packages .venv; else "$PY" -m venv .venv; fi
elif [ $pi = 1 ] && grep -q '^include-system-site-packages = false' .venv/pyvenv.cfg; then
  echo "[setup] letting the existing .venv see the system packages (picamera2)"
  sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' .venv/pyvenv.cfg
fi
stamp=".venv/.facemon-$profile"
want=$(cat pyproject.toml requirements-*.txt | sha256sum | cut -c1-16)
if [ -z "${FACEMON_SETUP_VENV:-}" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages ($profile); the first time takes a few minutes"
  .venv/bin/python -m pip install -q --upgrade pip wheel "setuptools<81"
  args=(); for r in "${reqs[@]}"; do [ -f "$r" ] && args+=(-r "$r"); done
  .venv/bin/python -m pip install -q "${args[@]}"
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
if [ $pi = 1 ] && ! "$venv/bin/python" -c "import picamera2" 2>/dev/null; then
  echo "[setup] warning: picamera2 is not importable; on Raspberry Pi OS: sudo apt install python3-picamera2" >&2
fi
if [ -n "$code" ]; then
  fetched="$(mktemp -d)"; trap 'rm -rf "$fetched"' EXIT
  # the code is single-use: redeemed only here, after the venv is ready, so a failed install does not burn it
  "$venv/bin/python" -m edge.enrolment_code --code "$code" --dashboard "$dashboard" --out "$fetched/edge.env"
  env_file="$fetched/edge.env"
fi
if [ -n "$env_file" ]; then
  "$venv/bin/python" -m edge.env_check "$env_file"   # the edge's own settings rules: refuses what the edge would
  etc="${FACEMON_SETUP_ETC:-}"; case "$etc" in ""|/*) ;; *) etc="$here/$etc" ;; esac
  if [ "$(id -u)" = 0 ]; then
    etc="${etc:-/etc/facemon}"
    install -d -m 0750 "$etc"
    if getent group facemon >/dev/null; then
      install -m 0640 -o root -g facemon "$env_file" "$etc/edge.env"; chgrp facemon "$etc"
    else
      install -m 0600 -o root "$env_file" "$etc/edge.env"
    fi
    echo "[setup] installed $etc/edge.env; start it: cp deploy/facemon-edge.service /etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now facemon-edge"
  else
    dest="${etc:-.}"; [ -z "$etc" ] || install -d -m 0750 "$etc"
    install -m 0600 "$env_file" "$dest/edge.env"
    echo "[setup] installed $dest/edge.env (0600); run it: set -a; . $dest/edge.env; set +a; $venv/bin/facemon-edge"
  fi
fi
