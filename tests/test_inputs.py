"""`deepmapper run` on derived features and derived labels: gene sets, clusters, ATAC peaks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from deepmapper.cli import cli

GMT = Path(__file__).parent / "data" / "pbmc_markers.gmt"
FAST = ["--passes", "2", "--epochs", "6", "--ig-steps", "8", "--threads", "1", "--no-report", "--no-baselines"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_genesets_become_the_features(pbmc_h5ad, tmp_path):
    # a GMT set with two matching genes is below the default minimum size (5) and is dropped
    res = invoke("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--genesets", GMT,
                 "--outdir", tmp_path, *FAST)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "findings.tsv", sep="\t")
    assert sorted(table["feature"]) == ["B_CELL_MARKERS", "NK_CELL_MARKERS"]
    summary = json.loads((tmp_path / "findings.json").read_text())
    assert summary["n_features"] == 2 and summary["config"]["input"]["genesets"] == str(GMT)
    # the class a set is made for is where its score pushes hardest
    per_class = pd.read_csv(tmp_path / "findings_per_class.tsv", sep="\t")
    top = per_class[per_class["rank"] == 1].set_index("class")["feature"]
    assert top["CD19+ B"] == "B_CELL_MARKERS"
    assert top["CD56+ NK"] == "NK_CELL_MARKERS"
    # the report shows the regulon specificity score of each set per label
    res = invoke("report", "--results", tmp_path, "--outdir", tmp_path, "--no-multiqc")
    assert res.exit_code == 0, res.output
    assert 'id="plot-rss"' in (tmp_path / "report.html").read_text()
    from deepmapper.results.report.results import load_results

    rss = load_results(tmp_path).dataset["rss"]
    assert rss["CD19+ B"]["B_CELL_MARKERS"] > rss["CD19+ B"]["NK_CELL_MARKERS"]
    assert rss["CD56+ NK"]["NK_CELL_MARKERS"] > rss["CD56+ NK"]["B_CELL_MARKERS"]


def test_cluster_labels_replace_a_label_key(pbmc_h5ad, tmp_path):
    res = invoke("run", "--input", pbmc_h5ad, "--cluster", "--outdir", tmp_path, *FAST)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "findings.json").read_text())
    assert len(summary["classes"]) >= 3 and all(c.isdigit() for c in summary["classes"])
    assert summary["mean_accuracy"] > 0.6
    import anndata as ad

    ds = ad.read_h5ad(tmp_path / "dataset.h5ad")
    assert ds.uns["deepmapper"]["label_key"] == "cluster"


def test_cluster_and_label_key_together_is_an_error(pbmc_h5ad, tmp_path):
    res = invoke("run", "--input", pbmc_h5ad, "--cluster", "--label-key", "bulk_labels", "--outdir", tmp_path, *FAST)
    assert res.exit_code == 2
    assert "--cluster" in res.output and "--label-key" in res.output
    assert not (tmp_path / "findings.tsv").exists()


def test_atac_peaks_keep_their_names_and_planted_peaks_rank_high(tmp_path):
    from deepmapper.datasets.synthetic_atac import make_peaks

    adata = make_peaks(400, 1500, n_groups=2, peaks_per_group=40, fold=4.0, density=0.08, seed=3)
    path = tmp_path / "peaks.h5ad"
    adata.write_h5ad(path)
    res = invoke("run", "--input", path, "--label-key", "group", "--modality", "atac", "--outdir", tmp_path / "o",
                 "--passes", "3", "--epochs", "20", "--threads", "1", "--no-report", "--no-baselines")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "o" / "findings.tsv", sep="\t")
    assert table["feature"].str.match(r"^chr\w+:\d+-\d+$").all()
    planted = set(adata.var_names[adata.var["planted_group"] != ""])
    recall = np.mean([f in planted for f in table["feature"][:80]])
    assert recall > 0.3, recall  # 80 planted peaks of 1500: chance is ~0.05; measured 0.49


def test_atac_input_that_is_not_counts_is_refused(tmp_path):
    import anndata as ad

    X = np.random.default_rng(0).normal(size=(40, 30)).astype(np.float32)
    adata = ad.AnnData(X)
    adata.var_names = [f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(30)]
    adata.obs["group"] = ["a", "b"] * 20
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    res = invoke("run", "--input", path, "--label-key", "group", "--modality", "atac", "--normalize", "never",
                 "--outdir", tmp_path / "o", *FAST)
    assert res.exit_code != 0
    assert "count" in res.output.lower() and "Traceback" not in res.output


def test_small_clusters_are_dropped_the_same_way_in_run_and_in_the_cluster_command(pbmc_h5ad, tmp_path):
    import anndata as ad

    # a high resolution on a subset gives clusters of a few cells
    small = ad.read_h5ad(pbmc_h5ad)[::5].copy()
    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    res = invoke("cluster", "--input", path, "--resolution", "4", "--out", tmp_path / "all.h5ad")
    assert res.exit_code == 0, res.output
    sizes = ad.read_h5ad(tmp_path / "all.h5ad").obs["cluster"].value_counts()
    assert (sizes < 5).any(), sizes  # the case this test is about
    res = invoke("cluster", "--input", path, "--resolution", "4", "--min-size", "5", "--out", tmp_path / "kept.h5ad")
    assert res.exit_code == 0, res.output
    kept = ad.read_h5ad(tmp_path / "kept.h5ad")
    assert kept.obs["cluster"].value_counts().min() >= 5
    assert kept.n_obs == int(sizes[sizes >= 5].sum())
    res = invoke("ingest", "--input", path, "--cluster", "--cluster-resolution", "4", "--out", tmp_path / "ds.h5ad")
    assert res.exit_code == 0, res.output
    ds = ad.read_h5ad(tmp_path / "ds.h5ad")
    assert list(ds.obs_names) == list(kept.obs_names)
