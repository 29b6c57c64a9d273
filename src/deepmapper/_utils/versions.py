"""Versions of the software a result depends on (reported in findings.json and MultiQC)."""
from __future__ import annotations

import platform
from importlib import metadata



def _version() -> str:
    """pyproject.toml's version, the one place it lives: read from it in a source checkout
    (PYTHONPATH=src, where an installed copy's metadata may name another release), else from the
    installed distribution's metadata, which the build copied from it."""
    import re
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8")
        found = re.search(r'(?m)^version = "([^"]+)"', text)
        if found and re.search(r'(?m)^name = "deepmapper"', text):
            return found.group(1)
    try:
        return metadata.version("deepmapper")
    except metadata.PackageNotFoundError:  # sources copied without metadata
        return "unknown"


__version__ = _version()

PACKAGES = ("deepmapper", "torch", "numpy", "scipy", "scikit-learn", "anndata", "scanpy", "captum", "pandas")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
