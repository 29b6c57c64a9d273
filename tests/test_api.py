"""The Python API: deepmapper.tl.rank_features, deepmapper.pl, deepmapper.read_results, on pbmc68k_reduced.

Small settings (2 passes of a few epochs): the point is the structure and that
the API, the CLI and the files agree, not the accuracy (bench/ measures that).
"""
from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import deepmapper as dm  # noqa: E402
from deepmapper.cli import cli  # noqa: E402
from deepmapper.errors import ConfigError, InputError  # noqa: E402

FAST = dict(epochs=4, min_epochs=1, patience=2, ig_steps=8, attribution_max_samples=64, threads=1)
FAST_CLI = ["--passes", "2", "--epochs", "4", "--min-epochs", "1", "--patience", "2", "--ig-steps", "8",
            "--attribution-max-samples", "64", "--threads", "1"]
KEY = "deepmapper"
RECARRAYS = ("names", "scores", "logfoldchanges", "pvals", "pvals_adj", "mean_rank")
VAR_COLUMNS = ("rank", "selection_frequency", "median_importance", "mean_rank", "pfer_bound")


@pytest.fixture(scope="module")
def api(pbmc, one_torch_thread):
    adata = pbmc.copy()
    assert dm.tl.rank_features(adata, "bulk_labels", passes=2, **FAST) is None
    return adata


@pytest.fixture(scope="module")
def cli_dir(pbmc_h5ad, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("cli_run")
    res = CliRunner().invoke(cli, ["run", "--input", str(pbmc_h5ad), "--label-key", "bulk_labels", "--outdir",
                                   str(out), "--no-report", *FAST_CLI], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def from_files(cli_dir):
    return dm.read_results(cli_dir)


def test_api_writes_the_documented_keys(api, pbmc, tmp_path):
    uns = api.uns[KEY]
    from deepmapper.results.ranking import natural_order

    classes = natural_order(pbmc.obs["bulk_labels"].astype(str).unique())     # CD4+ before CD14+, as numbers
    assert classes[:2] == ["CD4+/CD25 T Reg", "CD4+/CD45RA+/CD25- Naive T"] and classes[5] == "CD14+ Monocyte"
    for k in ("params", *RECARRAYS, "ranking", "summary", "evaluation", "features", "pass_importance",
              "pass_indices", "pairs", "placed_pairs", "values_from", "trust"):
        assert k in uns, k
    p = uns["params"]
    assert (p["groupby"], p["reference"], p["method"], p["use_raw"], p["layer"]) == \
        ("bulk_labels", "rest", "deepmapper", True, None)     # pbmc68k_reduced has .raw: used, as in scanpy
    assert p["corr_method"] == "none" and p["groups"] == "all"
    assert p["passes"] == 2 and p["config"]["epochs"] == 4 and p["n_genes"] == 765   # every feature, as scanpy
    for k in RECARRAYS:
        assert list(uns[k].dtype.names) == classes and len(uns[k]) == 765, k
    raw_genes = set(pbmc.raw.var_names)
    for c in classes:
        assert set(uns["names"][c]) == raw_genes
    assert np.isnan(uns["pvals"]["CD19+ B"]).all()            # not a test: no p-values, said so
    ranking = uns["ranking"]
    assert len(ranking) == 765 and ranking["rank"].tolist() == list(range(1, 766))
    assert ranking["selection_frequency"].between(0, 1).all()
    assert uns["pass_importance"].shape == (2, 765) and list(uns["pass_indices"]) == [0, 1]
    ev = uns["evaluation"]
    assert ev["confusion_matrix"].shape == (10, 10) and ev["confusion_matrix"].sum() == ev["heldout_size"]
    assert ev["accuracy"] > ev["majority_rate"]               # the model learnt something
    for col in VAR_COLUMNS:
        assert f"{KEY}_{col}" in api.var.columns, col
    assert sorted(api.var[f"{KEY}_rank"]) == list(range(1, 766))
    top = ranking.index[0]
    assert api.var.loc[top, f"{KEY}_rank"] == 1
    assert api.var.loc[top, f"{KEY}_selection_frequency"] == ranking.loc[top, "selection_frequency"]
    # the AnnData can still be written and read back with the result in it
    api.write_h5ad(tmp_path / "with_result.h5ad")
    import anndata as ad

    back = ad.read_h5ad(tmp_path / "with_result.h5ad")
    assert list(back.uns[KEY]["names"]["CD34+"]) == list(uns["names"]["CD34+"])


def test_scanpy_reads_the_result(api):
    import matplotlib.pyplot as plt
    import scanpy as sc

    df = sc.get.rank_genes_groups_df(api, group=None, key=KEY)
    assert len(df) == 10 * 765
    assert {"group", "names", "scores", "logfoldchanges", "pvals", "pvals_adj"} <= set(df.columns)
    mono = df[df["group"] == "CD14+ Monocyte"]
    assert mono["names"].tolist() == list(api.uns[KEY]["names"]["CD14+ Monocyte"])

    # logfoldchanges are scanpy's own definition on the analysed matrix (.raw here)
    ref = api.copy()
    sc.tl.rank_genes_groups(ref, "bulk_labels", method="t-test", use_raw=True, key_added="ttest")
    theirs = sc.get.rank_genes_groups_df(ref, group=None, key="ttest").set_index(["group", "names"])
    ours = df.set_index(["group", "names"])["logfoldchanges"]
    np.testing.assert_allclose(ours.to_numpy(), theirs.loc[ours.index, "logfoldchanges"].to_numpy(),
                               rtol=1e-4, atol=1e-4)

    axes = sc.pl.rank_genes_groups_dotplot(api, key=KEY, n_genes=2, dendrogram=False, show=False)
    shown = [t.get_text() for t in axes["mainplot_ax"].get_xticklabels()]
    expected = [g for c in api.uns[KEY]["names"].dtype.names for g in api.uns[KEY]["names"][c][:2]]
    assert shown == expected
    plt.close("all")


def test_each_group_ranking_says_the_direction(api, cli_dir):
    """Issue 21: a group's features read as scanpy's do. ``scores`` are sorted (highest first), positive
    for features up in the group, negative for features down there; findings_per_class.tsv says the
    direction in words, for every feature. On the earlier main B cells listed TYROBP (log fold change
    -7.85) with a positive score among 50 unsorted rows and no direction column."""
    import scanpy as sc

    uns = api.uns[KEY]
    for g in uns["names"].dtype.names:
        scores, lfc = uns["scores"][g].astype(float), uns["logfoldchanges"][g].astype(float)
        assert np.all(np.diff(scores) <= 0), g                      # scanpy's order: no inversion
        assert np.all(lfc[scores > 0] > 0) and np.all(lfc[scores < 0] < 0), g
        assert (scores > 0).sum() >= 20 and (scores < 0).sum() >= 20, g    # both directions are there
    b = sc.get.rank_genes_groups_df(api, group="CD19+ B", key=KEY).set_index("names")
    assert b.loc["TYROBP", "scores"] < 0 and b.loc["TYROBP", "logfoldchanges"] < -5   # down in B cells
    assert {"CD79A", "MS4A1"} & set(b.index[:10])                  # the B-cell markers lead, up

    table = pd.read_csv(cli_dir / "findings_per_class.tsv", sep="\t", keep_default_na=False, na_values=[""])
    assert list(table.columns) == ["class", "feature", "rank", "score", "direction", "logfoldchange",
                                   "median_importance", "mean_rank"]
    assert table.groupby("class").size().eq(765).all()              # every feature of every class
    assert set(table["direction"]) <= {"up", "down", "none"}
    up, down = table["direction"] == "up", table["direction"] == "down"
    assert (table.loc[up, "logfoldchange"] > 0).all() and (table.loc[down, "logfoldchange"] < 0).all()
    assert (table.loc[table["score"] > 0, "direction"] == "up").all()
    assert (table.loc[table["score"] < 0, "direction"] == "down").all()
    for _, rows in table.groupby("class"):
        assert rows["rank"].tolist() == list(range(1, 766)) and rows["score"].is_monotonic_decreasing
    row = table[(table["class"] == "CD19+ B") & (table["feature"] == "TYROBP")].iloc[0]
    assert row["direction"] == "down" and row["score"] <= 0


def test_matrixplot_of_fold_changes_and_a_preranked_list(api, tmp_path):
    """Every feature is stored per group, so scanpy's plots with values_to_plot work (on the earlier
    main, 50 genes per group: KeyError) and a pre-ranked list (GSEA .rnk) holds every gene."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    axes = sc.pl.rank_genes_groups_matrixplot(api, key=KEY, values_to_plot="logfoldchanges", n_genes=3,
                                              dendrogram=False, show=False)
    assert axes["mainplot_ax"].collections                           # drawn
    plt.close("all")
    rnk = sc.get.rank_genes_groups_df(api, group="CD14+ Monocyte", key=KEY)[["names", "scores"]]
    rnk.to_csv(tmp_path / "mono.rnk", sep="\t", index=False, header=False)
    back = pd.read_csv(tmp_path / "mono.rnk", sep="\t", header=None)
    assert len(back) == 765 and back[0].is_unique and back[1].is_monotonic_decreasing


def test_groups_reference_n_genes_and_missing_labels(pbmc, one_torch_thread):
    """scanpy's groups, reference and n_genes (on the earlier main: "unknown setting"), and
    missing_labels honoured (it was accepted and ignored): cells without a label are left out."""
    import scanpy as sc

    adata = pbmc.copy()
    labels = adata.obs["bulk_labels"].astype(object)
    mono = np.flatnonzero(labels == "CD14+ Monocyte")[:5]
    labels.iloc[mono] = np.nan
    labels.iloc[np.flatnonzero(labels == "CD56+ NK")[:3]] = "NA"
    adata.obs["bulk_labels"] = pd.Categorical(labels)
    with pytest.raises(InputError, match="missing-labels") as err:     # the error names the option
        dm.tl.rank_features(adata, "bulk_labels", passes=1, **FAST)
    assert "missing_labels" in str(err.value) and "\n" not in str(err.value)

    groups = ["CD14+ Monocyte", "CD56+ NK"]
    dm.tl.rank_features(adata, "bulk_labels", groups=groups, n_genes=30, passes=1, missing_labels="NA",
                        **{**FAST, "epochs": 2})
    uns = adata.uns[KEY]
    assert (uns["params"]["reference"], uns["params"]["groups"], uns["params"]["n_genes"]) == ("rest", groups, 30)
    assert list(uns["names"].dtype.names) == groups and len(uns["names"]) == 30
    assert len(uns["summary"]["classes"]) == 10                   # against the rest: the model learns every group
    assert uns["summary"]["n_cells"] == 700 - 8                   # 5 empty + 3 "NA" labels left out

    reference = "CD19+ B"
    dm.tl.rank_features(adata, "bulk_labels", groups=groups, reference=reference, passes=1, key_added="ref",
                        **{**FAST, "epochs": 2})
    uns = adata.uns["ref"]
    assert uns["params"]["reference"] == reference
    assert list(uns["names"].dtype.names) == groups and len(uns["names"]) == 765  # no table for the reference
    kept = labels.isin([*groups, reference]).to_numpy()
    assert uns["summary"]["classes"].tolist() == sorted([*groups, reference])     # the model saw those only
    assert uns["summary"]["n_cells"] == int(kept.sum())
    # direction and fold changes against the reference, as scanpy's own with reference=
    ref = adata[kept].copy()
    sc.tl.rank_genes_groups(ref, "bulk_labels", groups=groups, reference=reference, method="t-test",
                            use_raw=True, key_added="tt")
    for g in groups:
        theirs = sc.get.rank_genes_groups_df(ref, group=g, key="tt").set_index("names")["logfoldchanges"]
        ours = sc.get.rank_genes_groups_df(adata, group=g, key="ref").set_index("names")
        np.testing.assert_allclose(ours["logfoldchanges"], theirs.loc[ours.index], rtol=1e-4, atol=1e-4)
        assert ours["scores"].is_monotonic_decreasing
        assert (ours.loc[ours["scores"] > 0, "logfoldchanges"] > 0).all()
        assert (ours.loc[ours["scores"] < 0, "logfoldchanges"] < 0).all()


@pytest.mark.parametrize("kwargs, words", [
    (dict(groups=["T cells"]), ["no group 'T cells'", "choose from"]),
    (dict(groups="CD34+"), ["list of groups"]),
    (dict(reference="B"), ["reference 'B'"]),
    (dict(groups=["CD34+"], reference="CD34+"), ["nothing to compare"]),
    (dict(n_genes=0), ["n_genes"]),
])
def test_scanpy_arguments_are_checked(pbmc, kwargs, words):
    with pytest.raises(InputError) as info:
        dm.tl.rank_features(pbmc.copy(), "bulk_labels", passes=1, **kwargs)
    for w in words:
        assert w in str(info.value)


def _clusters(labels):
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, (len(labels), 30)).astype(np.float32)
    for k, lab in enumerate(dict.fromkeys(labels)):
        X[np.asarray(labels) == lab, k] += 6                      # one marker per group
    import anndata as ad

    return ad.AnnData(X, obs=pd.DataFrame({"cl": labels}, index=[f"c{i}" for i in range(len(labels))]))


def test_groups_are_named_and_ordered_as_scanpy_names_them(one_torch_thread):
    """Integer clusters: fields in natural order (2, 5, 10; not '10' before '2'), reference=5 (an
    int) finds the cluster; labels with trailing spaces: groups/reference given as in obs work on
    the stripped names the dataset keeps."""
    adata = _clusters(np.repeat([10, 2, 5], 20))
    adata.obs["cl"] = pd.Categorical(adata.obs["cl"])
    dm.tl.rank_features(adata, "cl", reference=5, passes=1, **{**FAST, "epochs": 2})
    uns = adata.uns[KEY]
    assert list(uns["names"].dtype.names) == ["2", "10"] and uns["params"]["reference"] == "5"
    dm.tl.rank_features(adata, "cl", passes=1, key_added="all", **{**FAST, "epochs": 2})
    assert list(adata.uns["all"]["names"].dtype.names) == ["2", "5", "10"]

    spaced = _clusters(np.repeat(["A ", "B", "C"], 20))
    dm.tl.rank_features(spaced, "cl", groups=["A ", "B"], reference="C", passes=1, **{**FAST, "epochs": 2})
    assert list(spaced.uns[KEY]["names"].dtype.names) == ["A", "B"]


def test_the_notebooks_torch_is_left_as_it_was():
    """threads= and the per-pass seeds do not leak into the session's torch (other models in it)."""
    import torch

    before = torch.get_num_threads()
    adata = _clusters(np.repeat(["a", "b"], 20))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    dm.tl.rank_features(adata, "cl", passes=1, **{**FAST, "epochs": 2, "threads": max(1, before - 1) if before > 1
                                                  else 2})
    assert torch.get_num_threads() == before
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(InputError, match="pass 7 is not one of the passes ranked from"):
        dm.pl.attribution_map(adata, arrangement=7, show=False)


def test_api_and_cli_run_give_identical_rankings(api, cli_dir):
    table = pd.read_csv(cli_dir / "findings.tsv", sep="\t", keep_default_na=False)
    ranking = api.uns[KEY]["ranking"]
    assert ranking.index.tolist() == table["feature"].tolist()
    assert ranking["rank"].tolist() == table["rank"].tolist()
    np.testing.assert_allclose(ranking["selection_frequency"], table["selection_frequency"], rtol=1e-5)
    per_class = pd.read_csv(cli_dir / "findings_per_class.tsv", sep="\t", keep_default_na=False)
    for c in api.uns[KEY]["names"].dtype.names:
        assert list(api.uns[KEY]["names"][c]) == per_class.loc[per_class["class"] == c, "feature"].tolist(), c


def test_read_results_equals_the_in_memory_result(api, from_files):
    import scanpy as sc

    a, b = api.uns[KEY], from_files.uns[KEY]
    assert set(a) == set(b)
    # the same run, but read_results' AnnData holds the analysed values in X and has no .raw: scanpy's
    # readers of use_raw (violin plots, filter_rank_genes_groups) must look in X there
    assert a["params"]["use_raw"] is True and b["params"]["use_raw"] is False and from_files.raw is None
    assert {**a["params"], "use_raw": None} == {**b["params"], "use_raw": None}
    sc.tl.filter_rank_genes_groups(from_files, key=KEY, key_added="filtered")
    assert set(from_files.uns["filtered"]["names"].dtype.names) == set(b["names"].dtype.names)
    for k in RECARRAYS:
        assert a[k].dtype == b[k].dtype, k
    for c in a["names"].dtype.names:
        assert list(a["names"][c]) == list(b["names"][c]), c
        for k in ("scores", "logfoldchanges", "mean_rank"):
            np.testing.assert_allclose(a[k][c], b[k][c], rtol=1e-5, atol=1e-7, err_msg=f"{k} {c}")
    pd.testing.assert_frame_equal(a["ranking"], b["ranking"], rtol=1e-5)
    np.testing.assert_array_equal(a["pass_importance"], b["pass_importance"])     # the pass files, exactly
    np.testing.assert_array_equal(a["features"], b["features"])
    assert a["evaluation"].keys() == b["evaluation"].keys()
    np.testing.assert_array_equal(a["evaluation"]["confusion_matrix"], b["evaluation"]["confusion_matrix"])
    pd.testing.assert_frame_equal(a["evaluation"]["per_class"], b["evaluation"]["per_class"])
    for k, v in a["summary"].items():
        if k == "dataset_sha256":   # the input file's checksum; an in-memory AnnData has none
            assert v == "" and len(b["summary"][k]) == 64
        elif isinstance(v, pd.DataFrame):
            pd.testing.assert_frame_equal(v, b["summary"][k])
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, b["summary"][k], err_msg=k)
        else:
            assert v == b["summary"][k], k
    for col in VAR_COLUMNS:
        left = api.var[f"{KEY}_{col}"]
        right = from_files.var[f"{KEY}_{col}"].reindex(left.index)
        np.testing.assert_allclose(left.to_numpy(float), right.to_numpy(float), rtol=1e-5, err_msg=col)
    # the files' AnnData is the dataset as analysed: the labels are there for scanpy's plots
    assert from_files.obs["bulk_labels"].tolist() == api.obs["bulk_labels"].astype(str).tolist()
    # the pairs the screen placed (none or some), and where each AnnData holds the analysed values
    text = ["feature_a", "feature_b", "class"]
    assert a["pairs"][text].equals(b["pairs"][text]) and a["pairs"].columns.equals(b["pairs"].columns)
    pd.testing.assert_frame_equal(a["pairs"].drop(columns=text), b["pairs"].drop(columns=text), rtol=1e-5)
    np.testing.assert_array_equal(a["placed_pairs"], b["placed_pairs"])
    assert a["placed_pairs"].shape == (a["summary"]["n_pairs"], 2)
    assert a["trust"] == b["trust"] and a["trust"]["baseline_accuracy"] is not None   # same verdict, both ways
    assert a["values_from"] == {"matrix": "raw", "normalize": False}     # pbmc68k_reduced's .raw is log1p
    assert b["values_from"] == {"matrix": "X", "normalize": False}       # dataset.h5ad: the values as analysed


def test_plots_draw_the_result(from_files, tmp_path):
    import matplotlib.pyplot as plt

    uns = from_files.uns[KEY]
    top = uns["ranking"].head(12)

    ax = dm.pl.rank_features(from_files, n_features=12, show=False, save=tmp_path / "top.png")
    widths = [bar.get_width() for bar in ax.patches]
    np.testing.assert_allclose(widths, top["selection_frequency"])
    assert [t.get_text() for t in ax.get_yticklabels()] == top.index.tolist()
    assert (tmp_path / "top.png").stat().st_size > 1000

    ax = dm.pl.stability(from_files, n_features=12, show=False)
    from matplotlib.collections import PathCollection

    from deepmapper.engine.accumulate import ranks

    dots = [c.get_offsets()[:, 1] for c in ax.collections if isinstance(c, PathCollection)]
    per_pass = ranks(uns["pass_importance"].astype(np.float64))        # the rank of each feature in each pass
    cols = [list(uns["features"]).index(f) for f in top.index]
    assert len(dots) == 12
    for y, j in zip(dots, cols):
        np.testing.assert_array_equal(y, per_pass[:, j])

    ax = dm.pl.attribution_map(from_files, arrangement=1, show=False)
    from deepmapper.model.transform import pair_arrangement, square_side

    image = ax.images[0].get_array()
    side = square_side(765)
    assert image.shape == (side, side) and image.mask.sum() == side * side - 765   # padding is blank
    # the pass's arrangement: its placed pairs side by side (tests/test_pl.py checks it against training)
    perm = pair_arrangement(765, uns["placed_pairs"], int(uns["params"]["seed"]) + 1)
    p = int(np.flatnonzero(perm == list(uns["features"]).index(top.index[0]))[0])
    assert image[p // side, p % side] == pytest.approx(top["median_importance"].iloc[0])
    ranked = dm.pl.attribution_map(from_files, arrangement="rank", show=False).images[0].get_array()
    assert ranked[0, 0] == pytest.approx(top["median_importance"].iloc[0])
    plt.close("all")

    with pytest.raises(InputError, match="no DeepMapper result"):
        dm.pl.rank_features(from_files, key="nope", show=False)
    with pytest.raises(InputError, match="arrangement"):
        dm.pl.attribution_map(from_files, arrangement=-1, show=False)
    if len(uns["pairs"]):
        assert len(dm.pl.pairs(from_files, n_pairs=2, show=False)) == min(2, len(uns["pairs"]))
    else:        # pbmc68k_reduced at these settings: the screen places no pair, and pl.pairs says so
        with pytest.warns(UserWarning, match="placed no gene pairs.*interaction_q"):
            assert dm.pl.pairs(from_files, show=False) is None
    plt.close("all")


def test_copy_leaves_the_input_alone(pbmc, one_torch_thread):
    adata = pbmc.copy()
    out = dm.tl.rank_features(adata, "bulk_labels", passes=1, key_added="dm1", copy=True,
                              **{**FAST, "epochs": 2})
    assert "dm1" not in adata.uns and "dm1_rank" not in adata.var.columns
    assert out is not adata and "dm1" in out.uns and "dm1_rank" in out.var.columns


def test_layer_and_x_are_analysed_as_asked(pbmc, one_torch_thread):
    adata = pbmc.copy()
    adata.layers["lognorm"] = adata.raw.X.copy()
    dm.tl.rank_features(adata, "bulk_labels", layer="lognorm", passes=1, key_added="lay",
                        **{**FAST, "epochs": 2})
    p = adata.uns["lay"]["params"]
    assert (p["layer"], p["use_raw"], p["matrix"]) == ("lognorm", False, "layer:lognorm")


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(groupby="bulk_label"), InputError, ["no obs column 'bulk_label'", "did you mean 'bulk_labels'"]),
    (dict(layer="counts"), InputError, ["no layer 'counts'"]),
    (dict(layer="lognorm", use_raw=True), InputError, ["layer and use_raw"]),
    (dict(epoch=3), ConfigError, ["unknown setting 'epoch'", "epochs"]),
    (dict(label_key="bulk_labels"), ConfigError, ["groupby"]),
    (dict(epochs=0), ConfigError, ["epochs"]),
    (dict(backbone="cnn_huge"), ConfigError, ["unknown backbone 'cnn_huge'"]),
])
def test_bad_arguments_give_one_clear_error(pbmc, kwargs, error, words):
    adata = pbmc.copy()
    adata.layers["lognorm"] = adata.raw.X.copy()
    kwargs = {"groupby": "bulk_labels", **kwargs}
    with pytest.raises(error) as info:
        dm.tl.rank_features(adata, kwargs.pop("groupby"), passes=2, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Fix:" in message
    for w in words:
        assert w in message
    assert KEY not in adata.uns                                 # nothing half-written


def test_use_raw_without_raw_is_an_error(pbmc):
    adata = pbmc.copy()
    del adata.raw
    with pytest.raises(InputError, match="adata.raw is None"):
        dm.tl.rank_features(adata, "bulk_labels", use_raw=True)


def test_read_results_says_what_is_missing(cli_dir, tmp_path):
    import shutil

    with pytest.raises(InputError, match="results directory not found"):
        dm.read_results(tmp_path / "nothing")
    partial = tmp_path / "partial"
    shutil.copytree(cli_dir, partial)
    (partial / "findings_per_class.tsv").unlink()
    with pytest.raises(InputError, match="findings_per_class.tsv is missing"):
        dm.read_results(partial)


def test_import_stays_light_and_exports_the_api():
    code = ("import sys, deepmapper as dm; heavy = [m for m in ('torch', 'scanpy', 'anndata', 'matplotlib', "
            "'sklearn', 'pandas') if m in sys.modules]; assert not heavy, heavy; "
            "assert callable(dm.tl.rank_features) and callable(dm.read_results); "
            "assert callable(dm.pl.rank_features) and callable(dm.pl.attribution_map); "
            "print(sorted(dm.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['__version__', 'pl', 'read_results', 'tl']"
