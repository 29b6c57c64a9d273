#!/usr/bin/env bash
# Release rehearsal, offline: what a tag would publish, installed the way a user installs it,
# running the pipeline's own module command lines.
#
#   1. build the sdist and the wheel from this checkout; `twine check --strict` both;
#   2. a fresh virtual environment; the wheel installed from local folders only
#      (pip --no-index --find-links: the dist folder, a wheelhouse, torch from the machine's local files);
#   3. the test profile's DAG (tests/test_nextflow_static.py: every process's command line, chained as
#      the workflow chains them) run with that environment's `deepmapper` and nothing from src/
#      (DEEPMAPPER_INSTALLED_ONLY=1: the fixture refuses the source tree, and bin/ is left off PATH so
#      the wheel's console script runs every step). A module, data file (report template) or entry
#      point the wheel lacks fails a step.
#
# The wheelhouse (default ~/.cache/deepmapper/wheelhouse, $DEEPMAPPER_WHEELHOUSE) holds the
# dependencies as files; it is filled once (pip download, through pip's configured indexes) and
# reused, so later rehearsals touch no index. --no-compile: no .pyc for the ~1 GB installed (a fresh
# environment per run; Python compiles what it imports). torch comes from $DEEPMAPPER_TORCH_WHEELS (default
# /opt/wheels, where this machine keeps a CPU build) when a torch wheel lies there.
# Usage: scripts/release_rehearsal.sh   (exit status non-zero when any part fails; prints timings)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/deepmapper-rehearsal.XXXXXX")"
# DEEPMAPPER_REHEARSAL_KEEP=1 keeps the folder (dist/, venv/) for a look afterwards
[ "${DEEPMAPPER_REHEARSAL_KEEP:-0}" = 1 ] && echo "[rehearsal] keeping $work" || trap 'rm -rf "$work"' EXIT
house="${DEEPMAPPER_WHEELHOUSE:-$HOME/.cache/deepmapper/wheelhouse}"
torch_dir="${DEEPMAPPER_TORCH_WHEELS:-/opt/wheels}"
mkdir -p "$house"
say() { echo "[rehearsal] $*"; }
t0=$SECONDS

# -- 1. sdist + wheel (the build backend of the calling environment: no index needed), from a copy of
# the tracked files only: a stale build/ or egg-info, or a file git does not know, cannot reach the wheel
mkdir -p "$work/tree"
git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$work/tree"
"$python" -m build --no-isolation --sdist --wheel --outdir "$work/dist" "$work/tree" >"$work/build.log" 2>&1 ||
  { tail -20 "$work/build.log"; exit 1; }
"$python" -m twine check --strict "$work"/dist/*
wheel="$(ls "$work"/dist/deepmapper-*.whl)"
version="$(basename "$wheel" | cut -d- -f2)"
say "built $(ls "$work/dist" | tr '\n' ' ')in $((SECONDS - t0)) s"

# -- 2. a fresh environment from local folders only
t1=$SECONDS
links=(--find-links "$work/dist" --find-links "$house")
pins=()
torch_wheel="$(ls "$torch_dir"/torch-*.whl 2>/dev/null | head -n 1 || true)"
if [ -n "$torch_wheel" ]; then
  links+=(--find-links "$torch_dir")
  pins+=("torch==$(basename "$torch_wheel" | cut -d- -f2)")
fi
# what the DAG tests need besides the package: the test runner and the checkers they import
# the wheel by its path, so no other deepmapper-<version> file can stand in for it; `samples`
# (PyDESeq2), as the pipeline's environments pin it, for the --sample_key DAG
wants=("deepmapper[timm,report,samples] @ file://$wheel" "${pins[@]}" pytest pytest-timeout jsonschema reftrace pyyaml)
rm -f "$house"/deepmapper-*
"$python" -m venv "$work/venv"
venv_pip=("$work/venv/bin/python" -m pip install -q --no-compile --disable-pip-version-check --no-index "${links[@]}")
if ! "${venv_pip[@]}" "${wants[@]}" 2>"$work/pip.log"; then
  say "the wheelhouse lacks a dependency: filling $house once (pip download)"
  "$python" -m pip download -q --disable-pip-version-check --dest "$house" --find-links "$work/dist" \
    ${torch_wheel:+--find-links "$torch_dir"} "${wants[@]}" 2> >(grep -v 'is neither a file nor a directory' >&2)
  rm -f "$house"/deepmapper-*  # this checkout's own wheel comes from dist/ every time
  "${venv_pip[@]}" "${wants[@]}"
fi
say "installed the wheel into a fresh environment in $((SECONDS - t1)) s"
"$work/venv/bin/deepmapper" --version | grep -q "version $version" ||
  { echo "the installed console script does not report $version" >&2; exit 1; }

# -- 3. the module command lines against the installed wheel, on the test profile and with --sample_key
# (every process runs in the fixtures; the comparisons with `deepmapper run`, a second full analysis
# each, stay in the suite)
t2=$SECONDS
env -u PYTHONPATH PATH="$work/venv/bin:$PATH" DEEPMAPPER_INSTALLED_ONLY=1 \
  "$work/venv/bin/python" -m pytest "$root/tests/test_nextflow_static.py" -q -p no:cacheprovider \
    -k "(test_dag_ and not test_dag_equals_embedded_run) or test_donor_dag_ or test_stub_creates_declared_outputs" "$@"
say "ran the DAG against the wheel in $((SECONDS - t2)) s; total $((SECONDS - t0)) s"
