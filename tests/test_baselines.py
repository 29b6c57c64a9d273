"""Baselines: logistic regression on all features and Wilcoxon, on the run's held-out split."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from scipy import stats

from deepmapper import io
from deepmapper.engine import baselines
from deepmapper.datasets import synthetic
from deepmapper.cli import cli
from deepmapper.errors import ConfigError
from deepmapper.engine.split import stratified_split


def default_split(ds, seed=0):
    codes, classes = io.labels(ds)
    return stratified_split(codes, test_fraction=0.2, val_fraction=0.15, seed=seed, classes=classes)


@pytest.fixture(scope="module")
def pbmc_ds(pbmc):
    return io.from_anndata(pbmc, label_key="bulk_labels", source="pbmc68k_reduced")


def check_ranking(table: pd.DataFrame, features):
    assert list(table.columns) == ["feature", "rank", "score"]
    assert sorted(table["feature"]) == sorted(map(str, features))
    assert table["rank"].tolist() == list(range(1, len(features) + 1))
    assert np.all(np.diff(table["score"].to_numpy()) <= 0)


def test_logistic_on_pbmc68k(pbmc_ds):
    """The reference number: raw (log-normalised), bulk_labels, test 0.2, val 0.15, seed 0."""
    split = default_split(pbmc_ds)
    table, info = baselines.logistic(pbmc_ds, split, seed=0)
    check_ranking(table, pbmc_ds.var_names)
    print(f"logistic accuracy on pbmc68k_reduced: {info['accuracy']:.4f}")
    assert 0.82 <= info["accuracy"] <= 0.88  # measured 0.8521 (the issue: about 0.84-0.85)
    assert info["n_test"] == len(split.test) == 142 and info["n_train"] == len(split.train) + len(split.val)
    assert info["converged"] and info["accuracy"] > info["majority_rate"]
    assert set(info["per_class_top"]) == set(io.labels(pbmc_ds)[1])
    assert all(len(v) == baselines.TOP_PER_CLASS for v in info["per_class_top"].values())
    assert "CD79A" in info["per_class_top"]["CD19+ B"]


def test_wilcoxon_on_pbmc68k(pbmc_ds):
    table, info = baselines.wilcoxon(pbmc_ds)
    check_ranking(table, pbmc_ds.var_names)
    assert "CD79A" in info["per_class_top"]["CD19+ B"][:5]
    assert "LYZ" in info["per_class_top"]["Dendritic"][:5]


def _scipy_z(x, in_group):
    """z of the tie-corrected normal approximation, recovered from scipy's two-sided p-value and U."""
    a, b = x[in_group], x[~in_group]
    res = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=False)
    return np.sign(res.statistic - a.size * b.size / 2) * stats.norm.isf(res.pvalue / 2)


@pytest.mark.parametrize("layout", ["sparse", "dense"])
def test_wilcoxon_z_matches_scipy(pbmc, layout):
    """Same statistic as scanpy's rank_genes_groups(wilcoxon) (checked there to 1e-6): here against scipy.

    pbmc's z-scored X has negative values, ties and (as sparse) implicit zeros amid them.
    """
    codes = pbmc.obs["bulk_labels"].cat.codes.to_numpy().astype(np.int64)
    X = np.asarray(pbmc.X[:, :40], dtype=np.float64)
    X[:, 5] = 0.0                                  # a constant feature scores 0
    X[X < -0.5] = 0.0                              # many ties at zero
    data = sp.csr_matrix(X) if layout == "sparse" else X
    z = baselines.wilcoxon_z(data, codes, 10, chunk_values=5000)  # several chunks
    assert np.all(z[:, 5] == 0)
    for k in (0, 3, 9):
        for j in (0, 7, 13, 39):
            assert z[k, j] == pytest.approx(_scipy_z(X[:, j], codes == k), abs=1e-6)


def test_run_baselines_through_the_cli(tmp_dataset, tmp_path):
    path = tmp_dataset("planted")
    out = tmp_path / "baselines"
    res = CliRunner().invoke(cli, ["baseline", "--dataset", str(path), "--outdir", str(out)])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy" in res.output
    summary = json.loads((out / "baselines.json").read_text())
    ds = io.read_dataset(path)
    split = default_split(ds)
    # judged on exactly the held-out cells the neural model uses (same split function, same seed)
    assert summary["split"]["test_index_sha256"] == hashlib.sha256(split.test.astype(np.int64).tobytes()).hexdigest()
    assert summary["logistic"]["n_test"] == len(split.test)
    for method in ("logistic", "wilcoxon"):
        table = pd.read_csv(out / f"{method}.tsv", sep="\t")
        check_ranking(table, ds.var_names)
        assert set(summary[method]["per_class_top"]) == {"class_0", "class_1"}
    # one method only
    out2 = tmp_path / "only"
    res = CliRunner().invoke(cli, ["baseline", "--dataset", str(path), "--outdir", str(out2), "--method", "logistic",
                                   "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out2.iterdir()) == ["baselines.json", "logistic.tsv"]
    assert json.loads((out2 / "baselines.json").read_text())["split"]["seed"] == 3


def test_logistic_sparse_input_is_not_densified(monkeypatch):
    X, labels = synthetic.sparse_matrix(300, 500, 0.1, seed=0, n_markers=20)
    ds = io.build_dataset(X, [f"c{i}" for i in range(300)], [f"f{j}" for j in range(500)], labels,
                          label_key="label", source="test")

    def boom(*_a, **_k):
        raise AssertionError("densified")

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        monkeypatch.setattr(cls, "toarray", boom)
        monkeypatch.setattr(cls, "todense", boom)
    table, info = baselines.logistic(ds, default_split(ds))
    assert info["scaling"].startswith("std only") and info["accuracy"] > 0.9  # markers are easy


def test_unknown_method_is_a_config_error(tmp_dataset, tmp_path):
    ds = io.read_dataset(tmp_dataset("planted"))
    with pytest.raises(ConfigError, match="unknown baseline"):
        baselines.run_baselines(ds, split=default_split(ds), seed=0, methods=("svm",))
