"""The planted-signal generator: truth where it says, no marginal trace of the combo genes."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from deepmapper import io
from deepmapper.engine import baselines
from deepmapper.datasets import synthetic
from deepmapper.engine.split import stratified_split


@pytest.fixture(scope="module")
def default():
    return synthetic.planted(seed=0)


def columns(adata, names):
    idx = {n: i for i, n in enumerate(adata.var_names)}
    return np.asarray(adata.X)[:, [idx[n] for n in names]]


def test_shapes_truth_and_sparsity(default):
    adata, truth = default
    assert adata.shape == (600, 2000) and adata.X.dtype == np.float32
    assert len(truth["marginal"]) == 20 and len(truth["combo"]) == 20 and len(truth["combo_pairs"]) == 10
    assert not set(truth["marginal"]) & set(truth["combo"])
    assert set(truth["marginal"]) | set(truth["combo"]) <= set(adata.var_names)
    assert adata.obs["label"].value_counts().to_dict() == {"class_0": 300, "class_1": 300}
    assert np.all(np.asarray(adata.X) >= 0)
    assert abs(truth["zero_fraction"] - 0.6) < 0.1 and abs(float(np.mean(np.asarray(adata.X) == 0)) - 0.6) < 0.1
    assert adata.uns["deepmapper"]["normalized"] and list(adata.uns["planted"]["combo"]) == truth["combo"]


def test_deterministic_by_seed(default):
    a, ta = default
    b, tb = synthetic.planted(seed=0)
    c, tc = synthetic.planted(seed=1)
    np.testing.assert_array_equal(a.X, b.X)
    assert ta == tb and a.uns["deepmapper"]["source_sha256"] == b.uns["deepmapper"]["source_sha256"]
    assert tc["marginal"] != ta["marginal"] and not np.array_equal(a.X, c.X)


def test_combo_genes_have_no_marginal_shift(default):
    """Per combo gene: the two classes have the same mean and the same variance; marginal genes do not."""
    adata, truth = default
    codes, _ = io.labels(adata)
    combo = columns(adata, truth["combo"])
    t_stats = []
    for j in range(combo.shape[1]):
        x0, x1 = combo[codes == 0, j], combo[codes == 1, j]
        test = stats.ttest_ind(x0, x1, equal_var=False)
        assert test.pvalue > 1e-3                        # same mean
        assert stats.levene(x0, x1).pvalue > 1e-3        # same variance
        assert stats.ks_2samp(x0, x1).pvalue > 1e-3      # same distribution
        t_stats.append(test.statistic)
    # all 20 together: the t statistics look like 20 draws of N(0, 1)
    assert stats.chi2.sf(np.sum(np.square(t_stats)), df=len(t_stats)) > 1e-3
    marg = columns(adata, truth["marginal"])
    assert all(stats.ttest_ind(marg[codes == 0, j], marg[codes == 1, j]).pvalue < 1e-6 for j in range(20))


def test_combo_pairs_flip_correlation(default):
    adata, truth = default
    codes, classes = io.labels(adata)
    for (a, b), own in zip(truth["combo_pairs"], truth["pair_class"]):
        x = columns(adata, [a, b])
        for k, cls in enumerate(classes):
            r = np.corrcoef(x[codes == k, 0], x[codes == k, 1])[0, 1]
            assert (r < 0) if cls == own else (r > 0.1), (a, b, cls, r)


def test_logistic_finds_marginal_not_combo(default):
    adata, truth = default
    codes, classes = io.labels(adata)
    split = stratified_split(codes, test_fraction=0.2, val_fraction=0.15, seed=0, classes=classes)
    table, info = baselines.logistic(adata, split)
    top = set(table["feature"][:40])
    assert len(top & set(truth["marginal"])) / 20 >= 0.9
    assert len(top & set(truth["combo"])) <= 4  # invisible to a linear model on single genes
    assert info["accuracy"] > 0.7


def test_more_classes_and_fast():
    synthetic.planted(n_cells=60, n_features=100, n_marginal=6, n_combo=6)  # warm imports
    t0 = time.perf_counter()
    adata, truth = synthetic.planted(n_classes=3, seed=2)
    took = time.perf_counter() - t0
    assert took < 3.0, f"planted(600 x 2000) took {took:.2f}s"  # about 0.2 s here
    assert adata.obs["label"].nunique() == 3
    assert sorted(set(truth["marginal_class"].values())) == ["class_0", "class_1", "class_2"]
    with pytest.raises(ValueError):
        synthetic.planted(n_combo=3)


def test_sparse_matrix_blocks_and_density():
    X, labels = synthetic.sparse_matrix(5000, 800, 0.05, seed=1, block_nnz=20_000, marker_boost=0.0)  # many blocks
    assert isinstance(X, sp.csr_matrix) and X.shape == (5000, 800) and X.dtype == np.float32
    X.check_format(full_check=True)
    assert X.has_canonical_format
    assert abs(X.nnz / (5000 * 800) - 0.05) < 0.002  # exact Bernoulli(density) without the marker boost
    assert X.data.min() >= 1 and np.all(X.data == np.rint(X.data))
    assert sorted(set(labels)) == ["class_0", "class_1"] and abs((labels == "class_0").sum() - 2500) <= 1
    Y, labels2 = synthetic.sparse_matrix(5000, 800, 0.05, seed=1, block_nnz=20_000, marker_boost=0.0)
    assert (X != Y).nnz == 0 and list(labels) == list(labels2)


def test_sparse_matrix_markers_are_learnable():
    X, labels = synthetic.sparse_matrix(1000, 600, 0.05, seed=0, n_markers=20, block_nnz=30_000)
    X.check_format(full_check=True)
    assert X.has_canonical_format and 0.05 < X.nnz / (1000 * 600) < 0.07
    ds = io.build_dataset(X, [f"c{i}" for i in range(1000)], [f"f{j}" for j in range(600)], labels,
                          label_key="label", source="sparse_matrix")
    codes, classes = io.labels(ds)
    split = stratified_split(codes, test_fraction=0.2, val_fraction=0.15, seed=0, classes=classes)
    assert baselines.logistic(ds, split)[1]["accuracy"] > 0.9


def test_sparse_matrix_large_never_dense():
    """100,000 x 30,000 cells x features at low density: memory follows the non-zeros, not the shape."""
    tracemalloc.start()
    try:
        X, _ = synthetic.sparse_matrix(100_000, 30_000, 0.001, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = 0.001 + 50 * 0.25 * (1 - 0.001) / 30_000  # background + own-class marker presence
    assert X.shape == (100_000, 30_000) and abs(X.nnz / 3e9 - expected) < 5e-5
    assert peak < 40 * X.nnz + 50e6, f"peak {peak / 1e6:.0f} MB for {X.nnz} non-zeros"  # dense: 12 GB
