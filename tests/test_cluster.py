"""Labels from clustering: RNA on pbmc68k_reduced, ATAC on a generated peak matrix, the CLI, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from deepmapper.features import cluster
from deepmapper.cli import cli
from deepmapper.errors import ConfigError, InputError
from deepmapper.datasets.synthetic_atac import make_peaks
from conftest import skip_unless  # noqa: E402


def test_check_label_source():
    with pytest.raises(ConfigError, match=r"--cluster.*--label-key 'bulk_labels'.*Fix: drop --cluster"):
        cluster.check_label_source("bulk_labels", True)
    cluster.check_label_source("bulk_labels", False)
    cluster.check_label_source(None, True)
    cluster.check_label_source(None, False)


def test_rna_clusters_recover_pbmc_cell_types(pbmc):
    out = cluster.cluster_labels(pbmc, modality="rna", seed=0)
    assert out is not pbmc and "cluster" not in pbmc.obs  # input untouched
    assert out.obsm["X_pca"].shape == (700, 50)
    labels = out.obs["cluster"]
    assert labels.dtype == "category" and 4 <= labels.nunique() <= 15
    # the published louvain clustering and the sorted cell types are both recovered well above chance
    assert adjusted_rand_score(pbmc.obs["louvain"], labels) > 0.5
    assert adjusted_rand_score(pbmc.obs["bulk_labels"], labels) > 0.35
    # cluster "0" is the largest; the same embedding and seed give the same clusters
    assert labels.value_counts().idxmax() == "0"
    again = cluster.leiden_on_embedding(out.obsm["X_pca"], seed=0)
    np.testing.assert_array_equal(again, labels.astype(int).to_numpy())


def test_atac_clusters_recover_planted_groups():
    # 600 cells x 5000 peaks, 4 groups owning 250 peaks each, opened 4x more often.
    # snapATAC2 2.9 (spectral, its defaults) scores ARI 0.95-0.97 on seeds 0-2 of this design;
    # bench/cluster_atac_vs_snapatac2.py compares on the full-size (2000 x 20000, weaker) matrix.
    peaks = make_peaks(600, 5000, n_groups=4, peaks_per_group=250, fold=4.0, seed=0)
    out = cluster.cluster_labels(peaks, modality="atac", seed=0)
    assert adjusted_rand_score(peaks.obs["group"], out.obs["cluster"]) >= 0.85
    assert list(out.var_names) == list(peaks.var_names)  # peak names kept as feature names
    assert out.obsm["X_lsi"].shape[0] == 600 and out.uns["cluster"]["embedding"] == "X_lsi"
    assert out.uns["cluster"]["n_neighbors"] == 50


def test_bad_arguments():
    peaks = make_peaks(60, 300, n_groups=2, peaks_per_group=20, seed=0)
    with pytest.raises(ConfigError, match="unknown modality 'dna'"):
        cluster.cluster_labels(peaks, modality="dna")
    with pytest.raises(ConfigError, match="resolution must be > 0"):
        cluster.cluster_labels(peaks, modality="atac", resolution=0)
    peaks.X = peaks.X.multiply(1 / peaks.X.sum(axis=1)).tocsr()  # normalised, not counts any more
    with pytest.raises(InputError, match="not whole numbers.*--modality atac"):
        cluster.cluster_labels(peaks, modality="atac", where="peaks.h5ad")


def test_cli_cluster_atac_and_refusal(tmp_path):
    import anndata as ad

    peaks = make_peaks(300, 2000, n_groups=3, peaks_per_group=150, fold=5.0, seed=2)
    src = tmp_path / "peaks.h5ad"
    peaks.write_h5ad(src)
    out = tmp_path / "clustered.h5ad"
    res = CliRunner().invoke(cli, ["cluster", "--input", str(src), "--modality", "atac", "--out", str(out),
                                   "--key", "state"])
    assert res.exit_code == 0, res.output
    got = ad.read_h5ad(out)
    assert "state" in got.obs and "X_lsi" in got.obsm and got.var_names[0].startswith("chr")
    assert adjusted_rand_score(peaks.obs["group"], got.obs["state"]) > 0.8

    peaks.X = peaks.X.log1p()
    bad = tmp_path / "normalised.h5ad"
    peaks.write_h5ad(bad)
    res = CliRunner().invoke(cli, ["cluster", "--input", str(bad), "--modality", "atac",
                                   "--out", str(tmp_path / "never.h5ad")])
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert f"{bad}: field 'X':" in line and "Fix: give the raw" in line
    assert not (tmp_path / "never.h5ad").exists()


# -- kompot: the optional two-condition comparator ------------------------------------------

def _two_conditions(n=80, seed=0):
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    cond = np.repeat(["ctrl", "treat"], n // 2)
    X = rng.normal(size=(n, 6))
    X[cond == "treat", 0] += 3  # g0 up, g1 down in the treated cells; g2..g5 unchanged
    X[cond == "treat", 1] -= 2
    return ad.AnnData(X, obs=pd.DataFrame({"c": cond}, index=[f"c{i}" for i in range(n)]),
                      var=pd.DataFrame(index=[f"g{j}" for j in range(6)]))


def test_kompot_missing_gives_install_hint(monkeypatch):
    import sys

    from deepmapper.errors import ToolError
    from deepmapper._dev.kompot_baseline import kompot_ranking

    monkeypatch.setitem(sys.modules, "kompot", None)  # import kompot now raises ImportError
    with pytest.raises(ToolError, match="kompot is not installed.*Fix: pip install kompot"):
        kompot_ranking(_two_conditions(), "c", ["ctrl", "treat"])
    with pytest.raises(ConfigError, match="exactly two different groups"):
        kompot_ranking(_two_conditions(), "c", ["ctrl", "ctrl"])
    with pytest.raises(InputError, match=r"label\(s\) \['placebo'\] not in obs\['c'\]"):
        kompot_ranking(_two_conditions(), "c", ["ctrl", "placebo"])


@pytest.mark.slow  # about 2 minutes on 2 shared cores: JAX compilation and mellon's fits dominate
def test_kompot_ranks_the_shifted_genes_first():
    import importlib.util

    skip_unless(importlib.util.find_spec("kompot") is not None, "kompot not installed (pip install '.[test]')")
    from deepmapper._dev.kompot_baseline import kompot_ranking

    table = kompot_ranking(_two_conditions(), "c", ["ctrl", "treat"], n_landmarks=20, n_pcs=3)
    assert table["feature"].tolist()[:2] == ["g0", "g1"]
    assert table["rank"].tolist() == list(range(1, 7))
    assert np.sign(table.set_index("feature").loc[["g0", "g1"], "mean_log_fold_change"]).tolist() == [1, -1]
