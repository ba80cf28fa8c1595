#!/usr/bin/env bash
# OTTER reproduction suite: set up the project virtualenv (first run), then run the notebooks in order
# with papermill (default: the offline CPU `smoke` profile), or the tests.
#
#   ./run_all.sh                         # smoke profile end to end (offline, CPU)
#   ./run_all.sh --profile paper         # paper scale (GPUs + internet); also: mini
#   ./run_all.sh --force                 # redo steps whose outputs exist
#   ./run_all.sh --only 05 --set train.epochs=1
#   ./run_all.sh --test [pytest args]    # the test suite (what CI runs)
#
# Environment: PYTHON (interpreter for the venv, default python3.11), OTTER_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${OTTER_VENV:-.venv}"
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3.11 || command -v python3 || true)
fi
[ -n "$PYTHON" ] || { echo "run_all.sh: no python3.11 / python3 found; set PYTHON=/path/to/python3.11" >&2; exit 2; }

ensure_venv() {
  local stamp="$VENV/.otter-install-stamp" log="$VENV/otter-setup.log" want t0=$SECONDS
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  echo "== setting up $VENV with $($PYTHON --version 2>&1) (first run: several minutes, ~7 GB; log: $log) =="
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  # pip and the import check write to the log only; it is printed if a step fails.
  # One resolve: torch/torchvision pins, setuptools<81, pandas<3, webdataset<0.3 live in pyproject.toml.
  if ! { "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" \
         && "$VENV/bin/python" -m pip install --quiet -e ".[test]" \
         && "$VENV/bin/python" -c "import torch, torchvision, ot, img2dataset, papermill, otterlib.models.clip_reference as c
c.clip_module()"; } >"$log" 2>&1
  then
    cat "$log" >&2
    echo "run_all.sh: setting up $VENV failed (output above, also in $log)" >&2
    exit 2
  fi
  echo "$want" > "$stamp"
  echo "== $VENV ready in $((SECONDS - t0)) s =="
}

# Offline-safe defaults, also for the set-up's import check (a profile with offline: true also sets the hub
# switches). (No MPLBACKEND here: notebook kernels need matplotlib's inline backend; library code picks Agg.)
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
ensure_venv
export PATH="$PWD/$VENV/bin:$PATH"

if [ "${1:-}" = "--test" ]; then
  shift
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" -m otterlib.runner "$@"
