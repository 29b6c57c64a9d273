#!/usr/bin/env bash
# Installs DeepMapper and runs the demo: scanpy's bundled pbmc68k_reduced (700 PBMCs, 10 cell types),
# the whole analysis on this machine (CPU, or one GPU when present), then opens report.html.
# Usage: scripts/demo.sh [extra `deepmapper demo` options, e.g. --passes 5]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
python3 -m pip install -q --disable-pip-version-check -e .
deepmapper demo --outdir deepmapper_demo "$@"
