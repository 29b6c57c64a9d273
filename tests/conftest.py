"""Shared fixtures.

- ``pbmc``: scanpy's bundled ``pbmc68k_reduced`` (700 cells, 765 genes, ``X``
  z-scored, ``.raw`` log-normalised, labels in ``obs["bulk_labels"]``). Loaded once
  per session and shared: ``.copy()`` it before changing anything.
- ``pbmc_h5ad``: that AnnData written to an ``.h5ad`` file, as a user's input.
- ``tmp_dataset``: a factory writing a validated ``dataset.h5ad`` (what ``ingest``
  writes) into the test's ``tmp_path``::

      path = tmp_dataset()                       # pbmc68k_reduced (.raw, bulk_labels)
      path = tmp_dataset("planted", seed=1)      # synthetic.planted(n_cells=200, n_features=400, ...)
      path = tmp_dataset(adata, name="x.h5ad")   # any AnnData built by io.build_dataset
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared 2-core machine: one thread is faster than contention."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pbmc():
    sc = pytest.importorskip("scanpy")
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture(scope="session")
def pbmc_h5ad(pbmc, tmp_path_factory):
    path = tmp_path_factory.mktemp("pbmc") / "pbmc68k_reduced.h5ad"
    pbmc.write_h5ad(path)
    return path


PLANTED_SMALL = dict(n_cells=200, n_features=400, n_marginal=10, n_combo=10)


@pytest.fixture
def tmp_dataset(tmp_path, request):
    from deepmapper import io

    def make(source="pbmc", *, name: str = "dataset.h5ad", **kwargs):
        if source == "pbmc":
            adata = io.from_anndata(request.getfixturevalue("pbmc"), label_key="bulk_labels",
                                    source="pbmc68k_reduced")
        elif source == "planted":
            from deepmapper.datasets import synthetic

            adata, _ = synthetic.planted(**{**PLANTED_SMALL, **kwargs})
        else:
            adata = source
        return io.write_dataset(adata, tmp_path / name)

    return make


def skip_unless(available: bool, reason: str) -> None:
    """Skip when an optional tool is missing, except under scripts/test.sh
    (DEEPMAPPER_TEST_REQUIRE_ALL=1), which installs every tool: there it fails."""
    if available:
        return
    if os.environ.get("DEEPMAPPER_TEST_REQUIRE_ALL"):
        pytest.fail(f"{reason}; scripts/test.sh should have installed it")
    pytest.skip(reason)
