"""AUCell scores, gene-set files, regulon specificity and the ``deepmapper aucell`` command."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as hs

from deepmapper.features import aucell
from deepmapper.cli import cli
from deepmapper.errors import InputError

MARKERS = Path(__file__).parent / "data" / "pbmc_markers.gmt"


def reference_aucell(X, sets, top_fraction):
    """The published definition, one cell and one set at a time (average ranks for ties)."""
    n_up = aucell.n_up_for(X.shape[1], top_fraction)
    out = np.zeros((X.shape[0], len(sets)))
    for i, row in enumerate(X):
        rank = st.rankdata(-row, method="average")
        for j, s in enumerate(sets):
            out[i, j] = np.clip(n_up - rank[s], 0, None).sum() / aucell.max_area(np.array([len(s)]), n_up)[0]
    return out


def membership(sets, n_genes):
    M = np.zeros((n_genes, len(sets)), dtype=np.float32)
    for j, s in enumerate(sets):
        M[s, j] = 1
    return M, np.array([len(s) for s in sets])


def write_gmt(path, lines):
    path.write_text("".join("\t".join(parts) + "\n" for parts in lines))
    return path


def test_matches_definition_with_and_without_ties():
    rng = np.random.default_rng(0)
    X = rng.lognormal(size=(60, 300)).astype(np.float32)
    sets = [rng.choice(300, size=k, replace=False) for k in (5, 12, 40, 150)]
    M, sizes = membership(sets, 300)
    np.testing.assert_allclose(aucell.aucell_matrix(X, M, sizes, top_fraction=0.05),
                               reference_aucell(X, sets, 0.05), atol=1e-6)
    # coarse values and many zeros: ties inside and across the top-ranked block
    Xt = np.round(X * 2) / 2
    Xt[rng.random(Xt.shape) < 0.8] = 0
    got = aucell.aucell_matrix(Xt, M, sizes, top_fraction=0.1, batch_size=7)
    np.testing.assert_allclose(got, reference_aucell(Xt, sets, 0.1), atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1


@settings(max_examples=25, deadline=None)
@given(seed=hs.integers(0, 10_000), levels=hs.integers(2, 6))
def test_ties_do_not_depend_on_gene_order(seed, levels):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, levels, size=(8, 80)).astype(np.float32)  # heavy ties
    sets = [rng.choice(80, size=k, replace=False) for k in (3, 9, 20)]
    M, sizes = membership(sets, 80)
    perm = rng.permutation(80)
    a = aucell.aucell_matrix(X, M, sizes, top_fraction=0.1)
    b = aucell.aucell_matrix(X[:, perm], M[perm], sizes, top_fraction=0.1)
    np.testing.assert_allclose(a, b, atol=1e-7)
    np.testing.assert_allclose(a, reference_aucell(X, sets, 0.1), atol=1e-6)


def test_sparse_input_equals_dense():
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    X = rng.poisson(0.3, size=(40, 200)).astype(np.float32)
    sets = [rng.choice(200, size=k, replace=False) for k in (6, 25)]
    M, sizes = membership(sets, 200)
    np.testing.assert_array_equal(aucell.aucell_matrix(sp.csr_matrix(X), M, sizes),
                                  aucell.aucell_matrix(X, M, sizes))


def test_markers_rank_their_cell_type_first_on_pbmc(pbmc, caplog):
    with caplog.at_level(logging.WARNING, logger="deepmapper.features.aucell"):
        scores = aucell.score_genesets(pbmc, MARKERS)
    # the set with two genes in the data is dropped, and the warning names it
    assert list(scores.var_names) == ["B_CELL_MARKERS", "NK_CELL_MARKERS"]
    assert "TOO_SMALL_AFTER_MATCHING (2)" in caplog.text
    # CD19, CD22, TCL1A and VPREB3 are not among the 765 genes
    assert scores.var.loc["B_CELL_MARKERS", ["n_genes", "n_genes_gmt"]].tolist() == [7, 11]
    assert scores.uns["aucell"]["matrix"] == "raw"
    pd.testing.assert_frame_equal(scores.obs, pbmc.obs)
    means = pd.DataFrame(scores.X, columns=scores.var_names).groupby(pbmc.obs["bulk_labels"].to_numpy()).mean()
    assert means["B_CELL_MARKERS"].idxmax() == "CD19+ B"
    assert means["NK_CELL_MARKERS"].idxmax() == "CD56+ NK"
    rss = aucell.regulon_specificity(scores, "bulk_labels")
    assert rss["B_CELL_MARKERS"].idxmax() == "CD19+ B"
    assert rss["NK_CELL_MARKERS"].idxmax() == "CD56+ NK"


def test_regulon_specificity_matches_scipy_jensen_shannon():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(1)
    S = rng.random((50, 4))
    S[:, 3] = 0
    labels = rng.choice(["a", "b", "c"], size=50)
    rss = aucell.regulon_specificity(pd.DataFrame(S, columns=list("wxyz")), labels)
    for lab in "abc":
        q = (labels == lab) / (labels == lab).sum()
        for j, name in enumerate("wxy"):
            expected = 1 - jensenshannon(S[:, j] / S[:, j].sum(), q, base=2)
            assert rss.loc[lab, name] == pytest.approx(expected, abs=1e-9)
    assert rss["z"].isna().all()  # a set that is never active has no distribution
    # activity spread evenly over exactly one label's cells is perfectly specific
    perfect = (labels == "b").astype(float)[:, None]
    assert aucell.regulon_specificity(perfect, labels).loc["b", "0"] == pytest.approx(1.0)


def test_gmt_errors(tmp_path, pbmc):
    empty = write_gmt(tmp_path / "empty_name.gmt", [["SET_A", "d", "CD79A"], ["", "d", "GNLY"]])
    with pytest.raises(InputError, match=r"empty_name.gmt.*line 2 has an empty gene-set name"):
        aucell.read_gmt(empty)
    dup = write_gmt(tmp_path / "dup.gmt", [["SET_A", "d", "CD79A"], ["SET_A", "d", "GNLY"]])
    with pytest.raises(InputError, match=r"'SET_A' appears twice \(lines 1 and 2\)"):
        aucell.read_gmt(dup)
    foreign = write_gmt(tmp_path / "ensembl.gmt", [["SET_A", "d"] + [f"ENSG0000010{i}" for i in range(9)]])
    with pytest.raises(InputError, match=r"ensembl.gmt: field 'genes': no gene set has at least 5 genes.*"
                                         r"GMT genes look like 'ENSG00000100'.*Fix: use the same gene identifiers"):
        aucell.score_genesets(pbmc, foreign)


def test_cli_writes_scores_and_rss(tmp_path, pbmc_h5ad):
    out, rss = tmp_path / "scores.h5ad", tmp_path / "rss.tsv"
    res = CliRunner().invoke(cli, ["aucell", "--input", str(pbmc_h5ad), "--genesets", str(MARKERS),
                                   "--out", str(out), "--label-key", "bulk_labels", "--rss-out", str(rss)])
    assert res.exit_code == 0, res.output
    import anndata as ad

    scores = ad.read_h5ad(out)
    assert scores.shape == (700, 2) and "bulk_labels" in scores.obs
    table = pd.read_csv(rss, sep="\t", index_col=0)
    assert table.loc["CD56+ NK", "NK_CELL_MARKERS"] == table["NK_CELL_MARKERS"].max()


def test_cli_bad_gmt_is_one_line(tmp_path, pbmc_h5ad):
    bad = write_gmt(tmp_path / "dup.gmt", [["S", "d", "CD79A"], ["S", "d", "GNLY"]])
    res = CliRunner().invoke(cli, ["aucell", "--input", str(pbmc_h5ad), "--genesets", str(bad),
                                   "--out", str(tmp_path / "x.h5ad")])
    assert res.exit_code == 2
    assert "dup.gmt: field 'name': gene-set name 'S' appears twice" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.h5ad").exists()
