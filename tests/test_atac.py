"""scATAC building blocks on generated peak matrices: counts check, binarise, TF-IDF, LSI, feature choice."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

from deepmapper.features import atac
from deepmapper.errors import InputError
from deepmapper.datasets.synthetic_atac import make_peaks


@pytest.fixture(scope="module")
def peaks():
    return make_peaks(400, 3000, n_groups=4, peaks_per_group=150, fold=4.0, seed=5)


def test_generator_is_count_like_seeded_and_named(peaks):
    X = peaks.X
    assert sp.isspmatrix_csr(X) and X.dtype == np.float32
    assert np.array_equal(X.data, np.rint(X.data)) and X.data.min() >= 1
    assert 0.02 < X.nnz / np.prod(X.shape) < 0.04  # density 0.03 asked
    assert all(re.fullmatch(r"chr\d+:\d+-\d+", n) for n in peaks.var_names)
    assert peaks.var_names.is_unique
    assert (peaks.var["planted_group"] != "").sum() == 4 * 150
    again = make_peaks(400, 3000, n_groups=4, peaks_per_group=150, fold=4.0, seed=5)
    assert (again.X != X).nnz == 0 and (again.obs["group"] == peaks.obs["group"]).all()
    # planted peaks are more often open in their own group
    B = atac.binarize(X)
    own = peaks.var["planted_group"].to_numpy()
    g = peaks.obs["group"].to_numpy()
    rate_in = np.mean([B[g == k][:, own == k].mean() for k in np.unique(g)])
    rate_out = np.mean([B[g != k][:, own == k].mean() for k in np.unique(g)])
    assert rate_in > 2.5 * rate_out


def test_binarize_and_tfidf_by_hand():
    X = sp.csr_matrix(np.array([[2, 0, 1, 0], [0, 0, 3, 1], [1, 1, 1, 0]], dtype=np.float32))
    B = atac.binarize(X)
    np.testing.assert_array_equal(B.toarray(), (X.toarray() > 0).astype(np.float32))
    T = atac.tfidf(B, scale=1e4).toarray()
    tf = B.toarray() / B.toarray().sum(1, keepdims=True)
    idf = np.log1p(3 / B.toarray().sum(0))
    np.testing.assert_allclose(T, np.log1p(tf * idf * 1e4), rtol=1e-5)
    assert (T[B.toarray() == 0] == 0).all()


@pytest.mark.parametrize("values, problem", [
    (np.array([[0.5, 1.2], [0.0, 2.0]]), "not whole numbers"),
    (np.array([[1.0, -1.0], [0.0, 2.0]]), "negative"),
    (np.array([[1.0, np.nan], [0.0, 2.0]]), "NaN"),
])
def test_not_count_like_is_refused(values, problem):
    with pytest.raises(InputError, match=rf"peaks.h5ad: field 'X': .*{problem}.*--modality atac.*Fix: give the raw"):
        atac.check_peak_counts(sp.csr_matrix(values), where="peaks.h5ad", field="X")
    atac.check_peak_counts(sp.csr_matrix(np.array([[0, 3], [1, 0]], dtype=np.float32)))  # counts pass


def test_lsi_drops_the_depth_component(peaks):
    B = atac.binarize(peaks.X)
    depth = np.log1p(np.asarray(B.sum(1)).ravel())
    fit = atac.lsi(atac.tfidf(B), n_components=20, depth=depth, seed=0)
    assert fit.dropped, "the generated depth spread (log-normal) should show up in one component"
    kept = np.setdiff1d(np.arange(20), fit.dropped)
    assert np.all(np.abs(fit.depth_corr[kept]) <= 0.75)
    assert np.all(np.abs(fit.depth_corr[fit.dropped]) > 0.75)
    assert fit.embedding.shape == (400, 20 - len(fit.dropped))
    again = atac.lsi(atac.tfidf(B), n_components=20, depth=depth, seed=0)
    np.testing.assert_array_equal(fit.embedding, again.embedding)


def test_dispersion_picks_planted_peaks_not_deep_clusters(peaks):
    B = atac.binarize(peaks.X)
    truth = peaks.obs["group"].to_numpy()
    planted = peaks.var["planted_group"].to_numpy() != ""  # 600 of 3000 peaks
    top = np.argsort(-atac.cluster_dispersion(B, truth))[:300]
    means = np.vstack([np.asarray(B[truth == k].mean(0)).ravel() for k in np.unique(truth)])
    top_plain = np.argsort(-means.var(0))[:300]
    assert planted[top].mean() > 0.85  # 4x the 20% base rate
    assert planted[top].mean() > planted[top_plain].mean() + 0.05  # and better than plain variance
    # clusters that differ only in depth: chi-square with expected counts from cluster totals stays flat
    rng = np.random.default_rng(0)
    deep = rng.random(400) < 0.5
    p = rng.uniform(0.02, 0.2, size=300)
    rate = np.where(deep[:, None], 3.0, 1.0) * p[None, :]
    Bd = sp.csr_matrix((rng.random((400, 300)) < rate).astype(np.float32))
    chi = atac.cluster_dispersion(Bd, deep)
    plain = np.var([np.asarray(Bd[deep == k].mean(0)).ravel() for k in (0, 1)], axis=0)
    # plain variance of cluster means follows the peak's accessibility; the chi-square much less so
    assert abs(np.corrcoef(plain, p)[0, 1]) > 0.8
    assert abs(np.corrcoef(chi, p)[0, 1]) < 0.35
