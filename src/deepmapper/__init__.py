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
from deepmapper._utils.versions import __version__

__all__ = ["__version__", "tl", "pl", "read_results"]


def __getattr__(name):
    import importlib

    if name in ("tl", "pl"):
        return importlib.import_module(f".{name}", __name__)
    if name == "read_results":
        from deepmapper.results.ranking import read_results

        return read_results
    raise AttributeError(f"module 'deepmapper' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
