#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): one table, within 8 minutes on one data-centre GPU.
#   bash bench/gpu_check.sh              # on a GPU machine, from a checkout with the package installed
#   bash bench/gpu_check.sh --cpu-smoke  # the same script shrunk, on the CPU (its test)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${here}/.."
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-python}" bench/gpu_check.py "$@"
