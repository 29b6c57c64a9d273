"""deepmapper.pl on a run whose pair screen placed pairs: the attribution map draws the arrangement
training used, and pl.pairs draws each top pair's genes against each other by class.

Planted data (600 cells x 300 genes, 3 classes, 3 pairs whose correlation flips in one class each,
6 single-gene markers), 2 passes of 3 epochs: the screen places the 3 planted pairs in a second.
One in-memory run (deepmapper.tl), one `deepmapper run` read back (deepmapper.read_results), one
in-memory run with interactions off; all shared per module.
"""
from __future__ import annotations

import json
import shutil

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import deepmapper as dm  # noqa: E402
from deepmapper.errors import InputError  # noqa: E402
from deepmapper.model.transform import square_side  # noqa: E402

KEY = "deepmapper"
FAST = {"epochs": 3, "min_epochs": 1, "patience": 2, "ig_steps": 4, "attribution_max_samples": 40,
        "threads": 1, "backbone_width": 8, "interaction_max_pairs": 4}


@pytest.fixture(scope="module")
def planted_data():
    from deepmapper.datasets.synthetic import planted

    return planted(600, 300, n_marginal=6, n_combo=6, n_classes=3, seed=3, effect=1.0, sparsity=0.3,
                   correlation=0.95, pair_shape="flip")


@pytest.fixture(scope="module")
def in_memory(planted_data, one_torch_thread):
    adata = planted_data[0].copy()
    dm.tl.rank_features(adata, "label", passes=2, **FAST)
    return adata


@pytest.fixture(scope="module")
def run_dir(planted_data, tmp_path_factory, one_torch_thread):
    from click.testing import CliRunner

    from deepmapper.cli import cli

    tmp = tmp_path_factory.mktemp("pl_run")
    planted_data[0].write_h5ad(tmp / "planted.h5ad")
    out = tmp / "results"
    flags = ["--passes=2", *(f"--{k.replace('_', '-')}={v}" for k, v in FAST.items())]
    got = CliRunner().invoke(cli, ["run", "--input", str(tmp / "planted.h5ad"), "--label-key", "label",
                                   "--outdir", str(out), "--no-report", "--no-baselines", *flags],
                             catch_exceptions=False)
    assert got.exit_code == 0, got.output
    return out


@pytest.fixture(scope="module")
def from_files(run_dir):
    return dm.read_results(run_dir)


@pytest.fixture(scope="module")
def no_pairs(planted_data, one_torch_thread):
    adata = planted_data[0].copy()
    dm.tl.rank_features(adata, "label", passes=1, interactions=False, **FAST)
    return adata


def pair_sets(names, pairs):
    return {frozenset((str(names[a]), str(names[b]))) for a, b in pairs}


def training_arrangement(run_dir, t: int) -> np.ndarray:
    """The arrangement pass t trained on, built by the trainer's own code from the run's files."""
    from deepmapper import io
    from deepmapper.engine import train
    from deepmapper.config import Config
    from deepmapper.engine.data import prepare
    from deepmapper.engine import interactions
    from deepmapper.pipeline.runner import use_interactions

    ds = io.read_dataset(run_dir / "dataset.h5ad")
    cfg = Config.from_dict(json.loads((run_dir / "findings.json").read_text())["config"])
    data = prepare(ds, cfg)
    use_interactions(data, cfg, interactions.read_table(run_dir / "interactions.tsv"))
    assert data.n_pairs == 3
    return train.member_arrangement(data, cfg.run.seed + t)


def drawn_dominoes(ax, perm) -> set:
    """The feature pairs of the outlined dominoes of a drawn map (by pixel, under ``perm``)."""
    from matplotlib.patches import Rectangle

    side = square_side(len(perm))
    out = set()
    for r in (p for p in ax.patches if isinstance(p, Rectangle)):
        x, y = r.get_xy()
        assert (r.get_width(), r.get_height()) == (2, 1)
        left = int(round(y + 0.5)) * side + int(round(x + 0.5))
        out.add(frozenset((int(perm[left]), int(perm[left + 1]))))
    return out


# -- what the runs store -----------------------------------------------------------------------

def test_the_screen_places_the_planted_pairs_and_both_paths_store_them(in_memory, from_files, planted_data,
                                                                      run_dir):
    from deepmapper.engine.passfile import read_pass

    truth = {frozenset(p) for p in planted_data[1]["combo_pairs"]}
    for adata in (in_memory, from_files):
        uns = adata.uns[KEY]
        assert pair_sets(uns["features"], uns["placed_pairs"]) == truth
        table = uns["pairs"]
        assert {frozenset(p) for p in zip(table["feature_a"], table["feature_b"])} == truth
        assert table["rank"].tolist() == [1, 2, 3]
        assert (table["q_value"] < 0.05).all()
        assert (table["corr_in_class"] < 0).all() and (table["corr_rest"] > 0).all()   # the planted flip
        assert uns["summary"]["n_pairs"] == 3
    np.testing.assert_array_equal(in_memory.uns[KEY]["placed_pairs"], from_files.uns[KEY]["placed_pairs"])
    a, b = in_memory.uns[KEY]["pairs"], from_files.uns[KEY]["pairs"]
    assert a[["feature_a", "feature_b", "class", "rank"]].equals(b[["feature_a", "feature_b", "class", "rank"]])
    np.testing.assert_allclose(a["median_importance"], b["median_importance"], rtol=1e-5)
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-5)
    for t, path in enumerate(sorted((run_dir / "passes").glob("pass_*.npz"))):
        p = read_pass(path)           # the pass files hold the placed pairs and the arrangement seed
        np.testing.assert_array_equal(p.pairs, from_files.uns[KEY]["placed_pairs"])
        assert p.seed == from_files.uns[KEY]["params"]["seed"] + t


def test_read_results_without_pass_files_reads_the_recorded_pairs(run_dir, from_files, tmp_path):
    """findings.json records the placed pairs (one decision, made by training): a reader needs neither
    the pass files nor interactions.tsv, and never selects pairs again."""
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, symlinks=False)
    shutil.rmtree(copy / "passes")
    (copy / "interactions.tsv").unlink()
    got = dm.read_results(copy)
    assert "pass_importance" not in got.uns[KEY]
    np.testing.assert_array_equal(got.uns[KEY]["placed_pairs"], from_files.uns[KEY]["placed_pairs"])

    summary = json.loads((copy / "findings.json").read_text())
    del summary["placed_pairs"]               # results written before the record: said, never guessed
    (copy / "findings.json").write_text(json.dumps(summary))
    blind = dm.read_results(copy)
    assert "placed_pairs" not in blind.uns[KEY]
    with pytest.raises(InputError, match="placed 3 gene pairs") as err:
        dm.pl.attribution_map(blind, arrangement=0, show=False)
    assert err.value.field == "placed_pairs"
    dm.pl.attribution_map(blind, arrangement="rank", show=False)
    dm.pl.pairs(blind, show=False)           # the pair table and the values are still there
    import matplotlib.pyplot as plt

    plt.close("all")


# -- the attribution map -----------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 1])
def test_map_draws_the_arrangement_the_pass_trained_on(from_files, in_memory, run_dir, planted_data, t):
    import matplotlib.pyplot as plt

    from deepmapper.model.transform import arrangement

    perm = training_arrangement(run_dir, t)
    uns = from_files.uns[KEY]
    n = len(uns["features"])
    side = square_side(n)
    median = uns["ranking"]["median_importance"].reindex([str(f) for f in uns["features"]]).to_numpy()
    for adata in (from_files, in_memory):
        ax = dm.pl.attribution_map(adata, arrangement=t, show=False)
        image = ax.images[0].get_array()
        assert image.shape == (side, side) and image.mask.sum() == side * side - n
        med = adata.uns[KEY]["ranking"]["median_importance"].reindex(
            [str(f) for f in adata.uns[KEY]["features"]]).to_numpy()
        np.testing.assert_array_equal(np.asarray(image).ravel()[:n], med[perm].astype(image.dtype))
        # every planted pair sits in one outlined domino of two adjacent pixels of a row
        features = [str(f) for f in adata.uns[KEY]["features"]]
        truth = {frozenset(features.index(g) for g in p) for p in planted_data[1]["combo_pairs"]}
        assert drawn_dominoes(ax, perm) == truth
        assert "3 pairs" in ax.get_title()
    plain = arrangement(n, int(uns["params"]["seed"]) + t)
    assert not np.array_equal(median[plain], median[perm])     # the plain arrangement is another picture
    plt.close("all")


def test_map_without_pairs_is_the_plain_arrangement(no_pairs):
    import matplotlib.pyplot as plt

    from deepmapper.model.transform import arrangement

    uns = no_pairs.uns[KEY]
    assert len(uns["pairs"]) == 0 and uns["placed_pairs"].shape == (0, 2)
    n = len(uns["features"])
    t = int(uns["pass_indices"][-1])                 # a pass ranked from (another one is refused)
    ax = dm.pl.attribution_map(no_pairs, arrangement=t, show=False)
    median = uns["ranking"]["median_importance"].reindex([str(f) for f in uns["features"]]).to_numpy()
    perm = arrangement(n, int(uns["params"]["seed"]) + t)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()).ravel()[:n],
                                  median[perm].astype(ax.images[0].get_array().dtype))
    assert not ax.patches
    plt.close("all")


# -- pl.pairs ------------------------------------------------------------------------------------

def test_pairs_draws_one_panel_per_pair_gene_a_against_gene_b_by_class(from_files, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    uns = from_files.uns[KEY]
    table = uns["pairs"]
    axs = dm.pl.pairs(from_files, show=False, save=tmp_path / "pairs.png")
    assert len(axs) == len(table) == 3                       # default 6: as many as the run placed
    assert (tmp_path / "pairs.png").stat().st_size > 5000
    labels = from_files.obs["label"].astype(str).to_numpy()
    names = [str(v) for v in from_files.var_names]
    X = from_files.X.toarray() if hasattr(from_files.X, "toarray") else np.asarray(from_files.X)
    classes = [str(c) for c in uns["summary"]["classes"]]
    for ax, row in zip(axs, table.itertuples(index=False)):
        a, b, cls = row.feature_a, row.feature_b, row[2]
        assert (ax.get_xlabel(), ax.get_ylabel()) == (a, b)
        assert f"{a} x {b}" in ax.get_title() and cls in ax.get_title()
        dots = {c.get_label(): c for c in ax.collections}
        assert sorted(dots) == sorted(classes)
        assert len({tuple(to_rgba(c.get_facecolor()[0])[:3]) for c in dots.values()}) == len(classes)
        assert ax.collections[-1].get_label() == cls          # the pair's class on top
        for c, coll in dots.items():
            xy = coll.get_offsets()
            mask = labels == c
            np.testing.assert_allclose(xy[:, 0], X[mask, names.index(a)], rtol=1e-6)
            np.testing.assert_allclose(xy[:, 1], X[mask, names.index(b)], rtol=1e-6)
        # the picture shows the flip: the pair's class tilts the other way from the rest
        inside = dots[cls].get_offsets()
        rest = np.concatenate([dots[c].get_offsets() for c in classes if c != cls])
        both = (inside > 0).all(axis=1), (rest > 0).all(axis=1)          # cells expressing both genes
        assert np.corrcoef(inside[both[0]].T)[0, 1] < 0 < np.corrcoef(rest[both[1]].T)[0, 1]

    two = dm.pl.pairs(from_files, n_pairs=2, ncols=1, show=False)
    assert [ax.get_xlabel() for ax in two] == table["feature_a"].head(2).tolist()
    fig = dm.pl.pairs(from_files, n_pairs=1, return_fig=True)
    assert isinstance(fig, matplotlib.figure.Figure) and sum(ax.get_visible() for ax in fig.axes) == 1
    plt.close("all")


def test_pairs_in_memory_reads_the_analysed_matrix_and_scanpy_colours(in_memory):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    adata = in_memory.copy()
    adata.obs["label"] = adata.obs["label"].astype("category")
    palette = ["#112233", "#445566", "#778899"]
    adata.uns["label_colors"] = palette                 # scanpy's colours for the groups are used
    axs = dm.pl.pairs(adata, n_pairs=1, max_cells=250, show=False)
    a, b = axs[0].get_xlabel(), axs[0].get_ylabel()
    cats = list(adata.obs["label"].cat.categories)
    rows = np.sort(np.random.default_rng(0).choice(adata.n_obs, 250, replace=False))   # the report's sample
    X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)[rows]
    labels = adata.obs["label"].astype(str).to_numpy()[rows]
    for coll in axs[0].collections:
        c = coll.get_label()
        assert to_hex(coll.get_facecolor()[0]) == palette[cats.index(c)]
        np.testing.assert_allclose(coll.get_offsets()[:, 0], X[labels == c, list(adata.var_names).index(a)],
                                   rtol=1e-6)
    assert sum(len(coll.get_offsets()) for coll in axs[0].collections) == 250
    plt.close("all")


def test_pairs_normalises_counts_as_the_analysis_did(in_memory):
    import matplotlib.pyplot as plt

    from deepmapper.io import normalize_log1p

    adata = in_memory.copy()
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=adata.shape).astype(np.float32)
    adata.layers["counts"] = counts
    adata.uns[KEY]["values_from"] = {"matrix": "layer:counts", "normalize": True}
    ax = dm.pl.pairs(adata, n_pairs=1, show=False)[0]
    a = list(adata.var_names).index(ax.get_xlabel())
    labels = adata.obs["label"].astype(str).to_numpy()
    coll = ax.collections[0]
    np.testing.assert_allclose(coll.get_offsets()[:, 0],
                               normalize_log1p(counts)[labels == coll.get_label(), a], rtol=1e-5)
    plt.close("all")


def test_pairs_errors_are_one_clear_line(in_memory, no_pairs):
    with pytest.raises(InputError, match="no DeepMapper result") as err:
        dm.pl.pairs(in_memory, key="nope", show=False)
    assert err.value.field == "key"
    with pytest.warns(UserWarning, match="placed no gene pairs.*interactions=True") as record:
        assert dm.pl.pairs(no_pairs, show=False) is None          # a finding, said in one line (README)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    old = in_memory.copy()
    del old.uns[KEY]["pairs"]                     # a result written before the screen existed
    with pytest.raises(InputError, match="no pair table") as err:
        dm.pl.pairs(old, show=False)
    assert err.value.field == "pairs"
    with pytest.raises(InputError, match="n_pairs"):
        dm.pl.pairs(in_memory, n_pairs=0, show=False)
    with pytest.raises(InputError, match="no obs column 'cell_type'") as err:
        dm.pl.pairs(in_memory, groupby="cell_type", show=False)
    assert err.value.field == "groupby"
    other = in_memory[:, [v for v in in_memory.var_names if v != in_memory.uns[KEY]["pairs"]["feature_a"][0]]]
    with pytest.raises(InputError, match="is not in the X matrix") as err:
        dm.pl.pairs(other.copy(), show=False)
    assert "\n" not in str(err.value) and err.value.fix
