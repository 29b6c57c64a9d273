#!/usr/bin/env bash
# Installs DeepMapper and runs the demo: scanpy's bundled pbmc68k_reduced (700 PBMCs, 10 cell types),
# the whole analysis on this machine (CPU, or one GPU when present), then opens report.html.
#
# Needs Python 3.10+ only. Without an active virtual environment it creates one in .venv (or
# $DEEPMAPPER_VENV) and installs there: torch at the tested builds, then DeepMapper with the
# `report` extra (MultiQC). If MultiQC cannot be installed the demo still writes report.html.
#
# Usage: scripts/demo.sh [extra `deepmapper demo` options, e.g. --passes 5 --no-open --outdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_env.sh
source scripts/_env.sh
start=$SECONDS

dm_activate_env
_dm_say "installing torch (${DM_TORCH_PINS[*]}) and DeepMapper with the report extra ..."
dm_pip "${DM_TORCH_PINS[@]}"
if ! dm_pip -e '.[report]'; then
  dm_pip -e . || _dm_die "pip could not install DeepMapper (see above)."
  _dm_say "MultiQC could not be installed: the demo writes report.html without the MultiQC report."
fi
_dm_say "installed in $((SECONDS - start)) s; running the demo ..."

deepmapper demo --outdir deepmapper_demo "$@"

_dm_say "done in $((SECONDS - start)) s."
if [ -n "$DM_CREATED_ENV" ]; then
  _dm_say "DeepMapper is installed in $DM_CREATED_ENV: 'source $DM_CREATED_ENV/bin/activate' to use it again."
fi
