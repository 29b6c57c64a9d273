"""DeepMapper: rank every feature that separates labelled groups.

Each feature becomes one pixel of a pseudo-image under a seeded arrangement; a
small image model learns the classes; attributions are projected back to
features and accumulated over many arrangements.

In a notebook, in the style of scanpy::

    import deepmapper as dm
    dm.tl.rank_features(adata, "cell_type")      # results in adata.uns["deepmapper"], adata.var
    dm.pl.rank_features(adata)                   # top features with selection frequency
    adata = dm.read_results("results/")          # a finished `deepmapper run` / `nextflow run`

``import deepmapper`` stays light: ``tl``, ``pl`` and ``read_results`` are
loaded on first use, and heavy dependencies (torch, scanpy, captum) are
imported inside the functions that need them.
"""


def _version() -> str:
    """pyproject.toml's version (the one place it lives): read from it in a source checkout
    (PYTHONPATH=src, where an installed copy's metadata may be another release), else from the
    installed distribution's metadata, which the build copied from it."""
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        import re

        text = pyproject.read_text(encoding="utf-8")
        found = re.search(r'(?m)^version = "([^"]+)"', text)
        if found and re.search(r'(?m)^name = "deepmapper"', text):
            return found.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deepmapper")
    except PackageNotFoundError:  # sources copied without metadata
        return "unknown"


__version__ = _version()

__all__ = ["__version__", "tl", "pl", "read_results"]


def __getattr__(name):
    import importlib

    if name in ("tl", "pl"):
        return importlib.import_module(f".{name}", __name__)
    if name == "read_results":
        from .ranking import read_results

        return read_results
    raise AttributeError(f"module 'deepmapper' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
