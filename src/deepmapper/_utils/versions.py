"""Versions of the software a result depends on (reported in findings.json and MultiQC)."""
from __future__ import annotations

import platform
from importlib import metadata

# The package version: the one literal every other place (package metadata aside) reads.
__version__ = "0.1.0"

PACKAGES = ("deepmapper", "torch", "numpy", "scipy", "scikit-learn", "anndata", "scanpy", "captum", "pandas")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
