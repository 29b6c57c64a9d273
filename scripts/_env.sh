# Sourced by scripts/demo.sh and scripts/test.sh: the Python environment DeepMapper is installed into.
#
# - an active virtual environment ($VIRTUAL_ENV) or conda environment ($CONDA_PREFIX) is used as it is;
# - otherwise a virtual environment is created (once) in $DEEPMAPPER_VENV, default .venv in the
#   repository, and activated. The system Python's own pip is never used: Debian 12 and Ubuntu 24.04
#   refuse it (PEP 668, "externally managed environment").
# The Python that creates it: $PYTHON, default python3 (3.10 or newer).
# After sourcing: `python` and `pip` are the environment's, its bin/ is on PATH.

_dm_say() { echo "[deepmapper] $*"; }
_dm_die() { echo "[deepmapper] error: $*" >&2; exit 1; }

_dm_make_venv() {  # _dm_make_venv BASE_PYTHON DIR
  local base="$1" dir="$2" err
  err="$("$base" -m venv "$dir" 2>&1)" && return 0
  rm -rf "$dir"
  # Debian/Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package.
  if command -v apt-get >/dev/null 2>&1 && grep -qi "ensurepip\|python3.*-venv" <<<"$err"; then
    local ver sudo=""
    ver="$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    _dm_say "installing the Debian package python${ver}-venv (needed to create a virtual environment)"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      "python${ver}-venv" >/dev/null || _dm_die "could not install python${ver}-venv; install it, then rerun."
    "$base" -m venv "$dir" && return 0
  fi
  echo "$err" >&2
  _dm_die "could not create a virtual environment in $dir with $base -m venv (see above)."
}

dm_activate_env() {
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    export PATH="$VIRTUAL_ENV/bin:$PATH"
    _dm_say "using the active virtual environment $VIRTUAL_ENV"
    DM_CREATED_ENV=""
  elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
    export PATH="$CONDA_PREFIX/bin:$PATH"
    _dm_say "using the active conda environment $CONDA_PREFIX"
    DM_CREATED_ENV=""
  else
    local base="${PYTHON:-python3}" venv="${DEEPMAPPER_VENV:-$PWD/.venv}"
    command -v "$base" >/dev/null 2>&1 || _dm_die "$base not found: install Python 3.10 or newer (e.g. apt-get install python3 python3-venv), or set PYTHON=/path/to/python3."
    "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
      _dm_die "DeepMapper needs Python 3.10 or newer; $base is $("$base" -V 2>&1). Set PYTHON=/path/to/python3.10+."
    if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
      _dm_say "$venv has no working pip: creating it again"
      [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
      _dm_say "no virtual environment is active: creating one in $venv ($base -m venv)"
      _dm_make_venv "$base" "$venv"
    else
      _dm_say "using the virtual environment $venv"
    fi
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
    DM_CREATED_ENV="$venv"
  fi
  python -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    _dm_die "DeepMapper needs Python 3.10 or newer; this environment has $(python -V 2>&1)."
}

# torch is installed first at the exact builds tested here (on our machines they come from local files);
# pyproject.toml accepts a range, so a user's newer torch is kept when the environment already has one.
DM_TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

dm_pip() { python -m pip install -q --disable-pip-version-check "$@"; }
