"""Conditions across donors (issue 19): splits, permutations and tests at the level of the sample."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deepmapper as dm
from deepmapper import io
from deepmapper.engine import samples
from deepmapper.config import Config
from deepmapper.datasets import donors
from deepmapper.errors import InputError
from deepmapper.results.findings import RANK_TEST_ALONE, RANK_WITH_MODEL
from deepmapper.engine.split import (MIN_SAMPLES_PER_LABEL, sample_labels, sample_split, sample_validation_folds,
                              split_side_of)

FAST = dict(epochs=3, min_epochs=1, patience=2, ig_steps=4, attribution_max_samples=64, threads=1,
            interaction_max_features=60)


def _design(draw_sizes, n_labels):
    """cells' label codes and sample codes from per-sample sizes; sample s has label s % n_labels."""
    codes, samp = [], []
    for s, n in enumerate(draw_sizes):
        codes += [s % n_labels] * n
        samp += [s] * n
    return np.asarray(codes), np.asarray(samp)


@settings(max_examples=60, deadline=None)
@given(n_labels=st.integers(2, 4), per_label=st.integers(MIN_SAMPLES_PER_LABEL, 8),
       sizes=st.lists(st.integers(1, 30), min_size=32, max_size=32), seed=st.integers(0, 10_000),
       test_fraction=st.floats(0.05, 0.6), val_fraction=st.floats(0.05, 0.6))
def test_sample_split_never_cuts_a_sample(n_labels, per_label, sizes, seed, test_fraction, val_fraction):
    n_samples = n_labels * per_label
    codes, samp = _design(sizes[:n_samples], n_labels)
    names = [f"s{i}" for i in range(n_samples)]
    classes = [f"c{k}" for k in range(n_labels)]
    split = sample_split(codes, samp, names, classes, test_fraction=test_fraction, val_fraction=val_fraction,
                         seed=seed)
    side = split_side_of(split, len(codes))
    for s in range(n_samples):                       # one side per sample
        assert len(set(side[samp == s].tolist())) == 1
    for part in (split.train, split.val, split.test):  # every label on every side
        assert set(codes[part].tolist()) == set(range(n_labels))
    assert len(np.concatenate([split.train, split.val, split.test])) == len(codes)
    folds = sample_validation_folds(codes, samp, n_samples, split, 10, seed)
    assert np.all(folds[split.test] == -1)
    for s in np.unique(samp[folds >= 0]):            # a fold holds whole samples
        assert len(set(folds[samp == s].tolist())) == 1
    for f in range(int(folds.max()) + 1):            # each pass validates and trains on every label
        assert set(codes[folds == f].tolist()) == set(range(n_labels))
        assert set(codes[(folds >= 0) & (folds != f)].tolist()) == set(range(n_labels))


def test_too_few_samples_is_one_clear_error():
    codes, samp = _design([10] * 5, 2)        # label 0: samples 0, 2, 4; label 1: samples 1, 3
    with pytest.raises(InputError) as err:
        sample_split(codes, samp, [f"d{i}" for i in range(5)], ["ctrl", "dis"], test_fraction=0.2,
                     val_fraction=0.1, seed=0)
    text = err.value.format()
    assert "'dis' (2 samples: d1, d3)" in text and "needs 3" in text and "--sample-key" in text


def _held_out(sizes_by_label, samples: bool):
    """PreparedData whose held-out set is one sample per label with the given cell counts."""
    from deepmapper.engine.data import PreparedData
    from deepmapper.engine.split import Split

    codes = np.concatenate([np.full(n, c) for c, n in enumerate(sizes_by_label)])
    test = np.arange(len(codes))
    return PreparedData(X=np.zeros((len(codes), 1), np.float32), codes=codes, classes=["ctrl", "dis"],
                        feature_names=["g"], split=Split(test[:0], test[:0], test), mean=np.zeros(1),
                        scale=np.ones(1), samples=codes.copy() if samples else None,
                        sample_names=["d0", "d1"] if samples else None)


def test_with_samples_the_gate_asks_balanced_accuracy_above_chance():
    from deepmapper.engine.accumulate import gate

    # held out: one donor of 60 cells (ctrl) and one of 20 (dis); the pass is right on 70 % of each
    predicted = np.concatenate([np.r_[np.zeros(42), np.ones(18)], np.r_[np.ones(14), np.zeros(6)]]).astype(int)
    by_cells = _held_out([60, 20], samples=False).gate_score(predicted)
    by_samples = _held_out([60, 20], samples=True).gate_score(predicted)
    assert by_cells == pytest.approx((0.70, 0.75))             # accuracy below the majority rate: rejected
    assert by_samples == pytest.approx((0.70, 0.50))           # balanced accuracy above chance: accepted
    assert not gate(by_cells[0], min_accuracy=0.0, majority_rate=by_cells[1])
    assert gate(by_samples[0], min_accuracy=0.0, majority_rate=by_samples[1])
    # predicting one label for every cell is chance either way
    score, chance = _held_out([60, 20], samples=True).gate_score(np.zeros(80, int))
    assert score == pytest.approx(0.5) and not gate(score, min_accuracy=0.0, majority_rate=chance)


@pytest.mark.parametrize("sizes,expected", [((3, 3), 20), ((4, 4), 70), ((2, 3, 2), 210)])
def test_relabellings_move_whole_samples_and_are_enumerated(sizes, expected):
    lab = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    assert samples.n_relabellings(lab) == expected
    every = samples.relabellings(lab, 10_000, seed=0)
    assert len(every) == expected - 1                            # all, except the observed labelling
    assert len({tuple(r) for r in every}) == expected - 1          # distinct
    assert not any(np.array_equal(r, lab) for r in every)
    assert all(np.array_equal(np.bincount(r, minlength=len(sizes)), sizes) for r in every)
    some = samples.relabellings(lab, 5, seed=1)
    assert len(some) == 5 and len({tuple(r) for r in some}) == 5


def test_screen_permutes_labels_between_whole_samples(monkeypatch):
    from deepmapper.engine import interactions

    rng = np.random.default_rng(0)
    n_samples, per = 12, 25
    samp = np.repeat(np.arange(n_samples), per)
    codes = (samp % 2).astype(np.int64)                          # 6 samples per label
    X = rng.poisson(2.0, (len(codes), 30)).astype(np.float32)
    seen = []
    real = interactions._screen_labelling

    def spy(cols, labelling, *args, **kw):
        seen.append(np.asarray(labelling).copy())
        return real(cols, labelling, *args, **kw)

    monkeypatch.setattr(interactions, "_screen_labelling", spy)
    cfg = Config().interactions
    cells = np.arange(len(codes))
    interactions.screen(X, codes, ["a", "b"], [f"g{j}" for j in range(30)], cells=cells, cfg=cfg, seed=0,
                        progress=False, samples=samp)
    assert len(seen) == cfg.permutations + 1
    for labelling in seen[:-1]:                                    # the permutations
        for s in range(n_samples):
            assert len(set(labelling[samp == s].tolist())) == 1    # a sample keeps one label
        assert np.bincount(labelling[::per], minlength=2).tolist() == [6, 6]
    assert np.array_equal(seen[-1], codes)                         # then the data


def test_screen_says_when_no_calibration_is_possible():
    from deepmapper.engine import interactions

    samp = np.repeat(np.arange(6), 20)
    codes = (samp % 2).astype(np.int64)                          # 3 + 3 samples: 19 other relabellings
    X = np.random.default_rng(1).poisson(2.0, (len(codes), 20)).astype(np.float32)
    res = interactions.screen(X, codes, ["a", "b"], [f"g{j}" for j in range(20)], cells=np.arange(len(codes)),
                              cfg=Config().interactions, seed=0, progress=False, samples=samp)
    assert len(res.table) == 0
    assert "only 19 distinct relabellings" in res.note and "no pair is reported" in res.note


def test_counts_are_recovered_exactly_from_the_normalised_dataset():
    adata = donors.simulate(3, n_genes=80, mean_cells=30, seed=2)
    ds = io.from_anndata(adata, label_key="condition", sample_key="donor")
    assert ds.uns["deepmapper"]["normalized"] and ds.uns["deepmapper"]["sample_key"] == "donor"
    back = io.counts_matrix(ds)
    assert np.array_equal(back.toarray(), adata.X.toarray())


def test_pseudobulk_deseq2_matches_a_direct_computation():
    """PyDESeq2 on donor sums against the sums, median-of-ratios size factors and log2 ratios by hand."""
    from deepmapper.engine import pseudobulk

    adata = donors.simulate(4, n_genes=200, mean_cells=60, lfc=1.2, seed=3)
    codes, classes = (adata.obs["condition"] == "disease").to_numpy().astype(np.int64), ["control", "disease"]
    names = sorted(set(adata.obs["donor"]))
    s_codes = np.searchsorted(names, adata.obs["donor"].to_numpy())
    sums = samples.pseudobulk_sums(adata.X, s_codes, len(names))
    direct = np.stack([np.asarray(adata.X[s_codes == s].sum(0)).ravel() for s in range(len(names))])
    assert np.array_equal(sums, direct)
    lab = sample_labels(codes, s_codes, len(names))
    res = pseudobulk.deseq2(sums, lab, classes)
    sf = pseudobulk.size_factors(sums)
    norm = sums / sf[:, None]
    hand = np.log2(norm[lab == 1].mean(0) + 0.5) - np.log2(norm[lab == 0].mean(0) + 0.5)
    truth = [int(g[1:]) for g in adata.uns["truth"]["true_genes"]]
    fc = res["log2fc"][0]
    assert np.all(fc[truth] > 0.5)                                   # planted up in disease: up
    well = norm.mean(0) > 50
    assert np.corrcoef(fc[well], hand[well])[0, 1] > 0.95
    assert np.median(np.abs(fc[well] - hand[well])) < 0.15
    # the planted genes are the most significant ones
    assert len(set(np.argsort(res["p"][0])[:12].tolist()) & set(truth)) >= 9


def test_one_odd_sample_is_not_a_finding():
    """The p behind sample_q is the largest over the sets with one sample left out, for every feature.
    The rank's p is that too for a feature whose effect collapses when one sample is left out (one odd
    donor); one whose effect holds whichever sample is missing (keeps EFFECT_KEPT of its size and
    STAT_KEPT of its statistic, in the same direction) is ranked by its p on every sample."""
    labels = np.array([0, 0, 0, 1, 1, 1])

    def test(keep):
        # feature 0: carried by sample 3 alone; 1: by every sample; 2: nothing; 3: its effect turns
        # over without sample 4; 4: its effect and statistic shrink to just above what must be kept
        # without sample 5; 5: its effect holds without sample 1 but its statistic falls below
        all_in = keep.all()
        p = np.array([[1e-6 if keep[3] else 0.5, 1e-6 if all_in else 1e-4, 0.7, 1e-5 if all_in else 0.3,
                       1e-5 if all_in else 0.02, 1e-5 if all_in else 0.04]])
        eff = np.array([[2.0 if keep[3] else 0.05, 1.0 if all_in else 0.8, 0.1, 1.0 if keep[4] else -0.2,
                         1.0 if keep[5] else samples.EFFECT_KEPT + 0.01, 1.0]])
        stat = np.array([[5.0 if keep[3] else 0.3, 5.0 if all_in else 4.0, 0.4, 5.0 if keep[4] else -1.0,
                          5.0 if keep[5] else 5 * samples.STAT_KEPT + 0.01, 5.0 if keep[1] else 2.0]])
        return p, eff, stat
    out, worst = samples.leave_one_sample_out(test, labels)
    np.testing.assert_array_equal(worst, [[0.5, 1e-4, 0.7, 0.3, 0.02, 0.04]])
    assert out[0, 0] == 0.5                      # the odd sample's feature: its p without that sample
    assert out[0, 1] == 1e-6                     # held in every set: its p on every sample
    assert out[0, 2] == 0.7
    assert out[0, 3] == 0.3                      # turned over: the largest p
    assert out[0, 4] == 1e-5                     # kept enough of its size and of its statistic
    assert out[0, 5] == 0.04                     # its statistic fell to 2 of 5: the largest p
    seen = []
    samples.leave_one_sample_out(lambda keep: seen.append(keep.copy()) or (np.zeros((1, 1)),) + (np.ones((1, 1)),) * 2,
                                 labels)
    assert len(seen) == 7 and seen[0].all() and all((~k).sum() == 1 for k in seen[1:])   # all, then each left out
    # a left-out fit without a p value counts as 1 and its effect as not holding; no p on all samples stays NaN
    out, worst = samples.leave_one_sample_out(lambda keep: (np.array([[0.01 if keep.all() else np.nan, np.nan]]),
                                                            np.array([[1.0 if keep.all() else np.nan, 1.0]]),
                                                            np.array([[3.0, 3.0]])), labels)
    assert out[0, 0] == worst[0, 0] == 1.0 and np.isnan(out[0, 1]) and np.isnan(worst[0, 1])


def test_the_sample_q_is_never_below_the_plain_pseudobulk_test():
    """On donor data (3 + 3 donors, counts), the leave-one-out q is at least the plain PyDESeq2 q gene by
    gene; genes up in every disease donor keep their plain p and are still called, and genes up in one
    disease donor only get a larger p than the plain test's (all but one of them here)."""
    from deepmapper.engine import pseudobulk
    from deepmapper.engine.split import sample_labels as labels_of

    data = donors.simulate(3, n_genes=400, mean_cells=60, lfc=1.5, seed=3)   # enough genes for the dispersion trend
    ds = io.from_anndata(data, label_key="condition", sample_key="donor")
    codes, classes = io.labels(ds)
    s_codes, names = io.samples(ds)
    lab = labels_of(codes, s_codes, len(names))
    res = samples.sample_test(ds, s_codes, len(names), lab, classes)
    plain_p = pseudobulk.deseq2(samples.pseudobulk_sums(io.counts_matrix(ds), s_codes, len(names)),
                                lab, classes)["p"][0]
    plain = samples.bh(plain_p)
    ok = np.isfinite(plain)
    assert "left out" in res["test"] and np.all(res["q"][ok] >= plain[ok] - 1e-12)
    where = {g: i for i, g in enumerate(ds.var_names)}
    true = [where[g] for g in data.uns["truth"]["true_genes"]]
    one = [where[g] for g in data.uns["truth"]["one_donor_genes"]]
    assert np.mean(res["p"][true] == plain_p[true]) >= 0.75
    one = [j for j in one if np.isfinite(plain_p[j])]         # PyDESeq2 gives no p for some (Cook's)
    assert len(one) >= 6 and np.sum(res["p"][one] > plain_p[one]) >= len(one) - 1
    q = dict(zip(ds.var_names, np.nan_to_num(res["q"], nan=1.0)))
    assert sum(q[g] < 0.05 for g in data.uns["truth"]["true_genes"]) >= 6


def test_the_sample_test_on_several_processes_gives_the_same_p_and_counts_its_fits(monkeypatch):
    """``n_cpus`` spreads each PyDESeq2 fit's genes over processes: the p values do not move, and the
    progress counts every fit (all samples, then each left out)."""
    from deepmapper._utils.progress import Progress
    from deepmapper.engine.split import sample_labels as labels_of

    data = donors.simulate(3, n_genes=120, mean_cells=30, seed=5)
    ds = io.from_anndata(data, label_key="condition", sample_key="donor")
    codes, classes = io.labels(ds)
    s_codes, names = io.samples(ds)
    lab = labels_of(codes, s_codes, len(names))
    fits = []
    update = Progress.update
    monkeypatch.setattr(Progress, "update", lambda self, n=1, **kw: fits.append(self.desc) or update(self, n, **kw))
    one = samples.sample_test(ds, s_codes, len(names), lab, classes, n_cpus=1)
    assert fits == ["sample-level test (PyDESeq2)"] * (len(names) + 1)
    two = samples.sample_test(ds, s_codes, len(names), lab, classes, n_cpus=2)
    assert np.array_equal(one["p"], two["p"], equal_nan=True) and np.isfinite(one["p"]).sum() > 100


def test_log_normalised_input_falls_back_to_welch_and_says_why():
    """pbmc68k_reduced's .raw is log-normalised: no counts, so no NB pseudobulk; Welch on sample means."""
    from deepmapper.engine import pseudobulk

    adata = donors.simulate(3, n_genes=80, mean_cells=30, seed=7)
    adata.X = io.normalize_log1p(adata.X)                 # what a log-normalised .raw holds
    ds = io.from_anndata(adata, label_key="condition", sample_key="donor")
    assert io.counts_matrix(ds) is None
    stats = samples.sample_level(ds, ["control", "disease"])
    assert stats["test"].startswith("Welch") and "no raw counts" in stats["note"]
    assert np.nanmin(stats["q"]) <= 1 and np.all(stats["reproducibility"] <= 1)
    with pytest.raises(pseudobulk.PseudobulkUnavailable, match="no raw counts"):
        pseudobulk.baseline(ds, ["control", "disease"])


def test_design_warnings(caplog):
    adata = donors.simulate(3, n_genes=40, mean_cells=20, seed=4)
    with caplog.at_level(logging.WARNING, logger="deepmapper.io"):
        io.from_anndata(adata, label_key="condition")
    assert "add --sample-key donor" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepmapper.io"):
        io.from_anndata(adata, label_key="cell_type")               # cell types are not nested in donors
    assert "sample-key" not in caplog.text
    lines = io.design_warnings(["a", "a", "b", "b"], samples=["d1", "d1", "d2", "d3"], sample_key="donor")
    assert len(lines) == 1 and "'a'" in lines[0] and "label = sample" in lines[0]
    with pytest.raises(InputError, match="both 'condition'"):
        io.from_anndata(adata, label_key="condition", sample_key="condition")


def test_a_sample_key_mixing_one_label_and_several_labels_per_sample_is_refused():
    """One mislabelled cell makes one sample carry two labels while the others carry one: refused at
    ingest with the counts, the sample and the ways out, not taken for a paired design or failing
    later with a misleading count per label."""
    adata = donors.simulate(3, n_genes=40, mean_cells=20, seed=4)
    one = adata.copy()
    labels = one.obs["condition"].astype(str).to_numpy()
    labels[0] = "disease" if labels[0] == "control" else "control"
    one.obs["condition"] = labels
    with pytest.raises(InputError) as err:
        io.from_anndata(one, label_key="condition", sample_key="donor")
    text = err.value.format()
    first = one.obs["donor"].astype(str).iloc[0]
    assert err.value.field == "donor"
    assert f"1 of 6 samples in 'donor' carry several labels of 'condition' (e.g. {first}: " in text
    assert "and 5 carry one" in text and "mislabelled cells" in text and "condition column as the label" in text
    ok = io.from_anndata(adata, label_key="condition", sample_key="donor")
    assert io.samples(ok)[1] == sorted(adata.obs["donor"].astype(str).unique())
    assert io.sample_blocks(ok) is None and not ok.uns["deepmapper"].get("paired")


def test_every_donor_under_several_labels_is_a_paired_design():
    """Each donor under both conditions (or cell types within donors): the samples become donor x
    label, each knows its donor, and the flag survives the dataset file."""
    adata = donors.simulate_paired(3, n_genes=40, mean_cells=20, seed=4)
    ds = io.from_anndata(adata, label_key="condition", sample_key="donor")
    assert ds.uns["deepmapper"]["paired"] is True
    codes, names = io.samples(ds)
    assert names == [f"donor{d:02d}{io.PAIRED_SEPARATOR}{c}" for d in range(3) for c in ("control", "disease")]
    expected = (adata.obs["donor"].astype(str) + io.PAIRED_SEPARATOR + adata.obs["condition"].astype(str)).to_numpy()
    assert np.array_equal(np.asarray(names, dtype=object)[codes], expected)
    blocks, donor_names = io.sample_blocks(ds)
    assert donor_names == ["donor00", "donor01", "donor02"] and blocks.tolist() == [0, 0, 1, 1, 2, 2]
    types = io.from_anndata(donors.simulate(3, n_genes=40, mean_cells=20, seed=4), label_key="cell_type",
                            sample_key="donor")
    assert types.uns["deepmapper"]["paired"] is True and len(io.sample_blocks(types)[1]) == 6


def test_paired_design_through_the_dataset_file(tmp_path):
    adata = donors.simulate_paired(3, n_genes=40, mean_cells=20, seed=4)
    path = io.write_dataset(io.from_anndata(adata, label_key="condition", sample_key="donor"), tmp_path / "d.h5ad")
    back = io.read_dataset(path)
    assert io.sample_blocks(back)[1] == ["donor00", "donor01", "donor02"] and len(io.samples(back)[1]) == 6


def test_a_missing_sample_id_is_refused_not_made_a_sample(tmp_path):
    """A cell without a donor (NaN in obs, as pandas leaves an unmatched join) is refused with the
    count, in memory and from an h5ad file, not turned into a sample called 'nan'."""
    adata = donors.simulate(3, n_genes=40, mean_cells=20, seed=4)
    adata.obs["donor"] = adata.obs["donor"].astype(object)
    adata.obs.iloc[:5, adata.obs.columns.get_loc("donor")] = np.nan
    with pytest.raises(InputError, match="5 cells have no sample id"):
        io.from_anndata(adata, label_key="condition", sample_key="donor")
    adata.obs["donor"] = adata.obs["donor"].astype("category")      # NaN is not a category
    adata.write_h5ad(tmp_path / "d.h5ad")
    with pytest.raises(InputError, match="5 cells have no sample id"):
        io.read_input(str(tmp_path / "d.h5ad"), label_key="condition", sample_key="donor")


@pytest.mark.parametrize("per_label", [1, 3])
def test_populations_record_one_sample_per_directory(tmp_path, caplog, per_label):
    import scipy.io
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    specs = []
    for label in ("ctrl", "dis"):
        for k in range(per_label):
            d = tmp_path / f"{label}{k}"
            d.mkdir()
            scipy.io.mmwrite(str(d / "matrix.mtx"), sp.csr_matrix(rng.poisson(1.0, (15, 20)).T.astype(float)))
            (d / "barcodes.tsv").write_text("".join(f"bc{i}\n" for i in range(15)))
            (d / "features.tsv").write_text("".join(f"id{j}\tg{j}\tGene Expression\n" for j in range(20)))
            specs.append(f"{label}={d}")
    with caplog.at_level(logging.WARNING, logger="deepmapper.io"):
        ds = io.read_input(specs, label_key=None)
    if per_label == 1:                      # label = sample: a warning, and no split by sample
        assert "label = sample" in caplog.text and "sample_key" not in ds.uns["deepmapper"]
    else:                                   # enough directories: split and tested by sample by default
        assert ds.uns["deepmapper"]["sample_key"] == io.SAMPLE_KEY
        codes, names = io.samples(ds)
        assert names == ["ctrl0", "ctrl1", "ctrl2", "dis0", "dis1", "dis2"]      # the directories' names
        assert np.bincount(codes).tolist() == [15] * 6
        assert np.array_equal(io.counts_matrix(ds).sum(1).A1 if hasattr(io.counts_matrix(ds), "A1")
                              else np.asarray(io.counts_matrix(ds).sum(1)).ravel(),
                              np.asarray(ds.obs[io.TOTALS_KEY]))


def test_sample_names_from_the_samplesheet_name_the_samples(tmp_path):
    """The pipeline stages every population as input??/<its own name>, so the directories' names say
    nothing (here all are 'matrix'): INGEST passes the samplesheet's ids, one --sample-name per --input."""
    import scipy.io
    import scipy.sparse as sp
    from click.testing import CliRunner

    from deepmapper.cli import cli

    rng = np.random.default_rng(7)
    specs, ids = [], []
    for label in ("ctrl", "dis"):
        for k in range(3):
            d = tmp_path / f"input{len(ids) + 1:02d}" / "matrix"
            d.mkdir(parents=True)
            scipy.io.mmwrite(str(d / "matrix.mtx"), sp.csr_matrix(rng.poisson(1.0, (12, 20)).T.astype(float)))
            (d / "barcodes.tsv").write_text("".join(f"bc{i}\n" for i in range(12)))
            (d / "features.tsv").write_text("".join(f"id{j}\tg{j}\tGene Expression\n" for j in range(20)))
            specs.append(f"{label}={d}")
            ids.append(f"{label}_donor{k + 1}")
    args = ["ingest", *[a for spec in specs for a in ("--input", spec)], "--out", str(tmp_path / "d.h5ad")]
    plain = CliRunner().invoke(cli, args)
    named = CliRunner().invoke(cli, [*args[:-2], *[a for i in ids for a in ("--sample-name", i)],
                                      "--out", str(tmp_path / "n.h5ad")])
    assert plain.exit_code == 0 and named.exit_code == 0, plain.output + named.output
    assert io.samples(io.read_dataset(tmp_path / "d.h5ad"))[1] == ["ctrl-1", "ctrl-2", "ctrl-3", "dis-1", "dis-2",
                                                                   "dis-3"]
    assert io.samples(io.read_dataset(tmp_path / "n.h5ad"))[1] == sorted(ids)
    bad = CliRunner().invoke(cli, [*args[:-2], "--sample-name", "a", "--out", str(tmp_path / "x.h5ad")])
    assert bad.exit_code != 0 and "1 sample names for 6 inputs" in bad.output
    assert not (tmp_path / "x.h5ad").exists()


def _tiny(n_donors: int = 3):
    return donors.simulate(n_donors, n_genes=60, mean_cells=40, seed=6)


def test_sample_key_through_the_api(one_torch_thread):
    adata = _tiny(5)          # 5 donors per condition: each pass trains on 3 of each (model_left_out)
    dm.tl.rank_features(adata, "condition", sample_key="donor", passes=1, **FAST)
    res = adata.uns["deepmapper"]
    ranking = res["ranking"]
    sl = res["summary"]["sample_level"]           # what the rank was made of, where a scanpy user reads it
    assert sl["rank"] == RANK_WITH_MODEL and sl["model_left_out"] == "" and sl["n_samples"] == 10
    for col in ("model_rank", "sample_p", "sample_p_left_out", "sample_q", "sample_reproducibility"):
        assert col in ranking.columns
    q = ranking["sample_q"]                  # NaN: DESeq2 gave no p value (Cook's outlier, all zero)
    assert q.notna().mean() > 0.8 and q.dropna().between(0, 1).all()
    # sample_q adjusts the leave-one-out p; the rank's p is never above it, and never below the test's
    np.testing.assert_allclose(q, samples.bh(ranking["sample_p_left_out"].to_numpy()), rtol=1e-5)
    assert (ranking["sample_p"].fillna(1.0) <= ranking["sample_p_left_out"].fillna(1.0) + 1e-12).all()
    # ranked by importance x -log10(sample p) (0 without a p value), ties in the model's order
    evidence = -np.log10(ranking["sample_p"].fillna(1.0).clip(1e-300, 1.0))
    score = (ranking["median_importance"] * evidence).to_numpy()
    np.testing.assert_array_equal(np.lexsort((ranking["model_rank"].to_numpy(), -score)), np.arange(len(score)))
    assert not ranking["model_rank"].is_monotonic_increasing       # the evidence did reorder the model's ranking
    # scanpy's layout carries the sample-level q as pvals_adj, so pval_cutoff keeps what that test calls
    import scanpy as sc

    for group in ("control", "disease"):
        df = sc.get.rank_genes_groups_df(adata, group=group, key="deepmapper")
        np.testing.assert_array_equal(df["pvals_adj"].to_numpy(), q.reindex(df["names"]).to_numpy())
        np.testing.assert_array_equal(df["pvals"].to_numpy(),
                                      ranking["sample_p_left_out"].reindex(df["names"]).to_numpy())
        cut = float(np.nanmin(q)) + 1e-9        # keeps at least the best (few donors: no q < 0.05 here)
        kept = sc.get.rank_genes_groups_df(adata, group=group, key="deepmapper", pval_cutoff=cut)
        assert set(kept["names"]) == set(q.index[q < cut]) and len(kept) > 0
    with pytest.raises(InputError, match="sample"):
        dm.tl.rank_features(_tiny(), "condition", sample_key="nope", passes=1, **FAST)


def test_the_model_weighs_in_only_with_three_training_samples_per_label(one_torch_thread):
    """3 donors per condition: one held out, one validated on, one trained on. With one training donor
    per label every feature that tells those two donors apart serves the model as well as the condition
    (with two, an odd donor is half of a label's training data), so the rank is the sample-level test's
    alone (the model orders its ties), and the run says why."""
    from types import SimpleNamespace

    from deepmapper.results.findings import MIN_TRAIN_SAMPLES, model_left_out

    adata = _tiny(3)
    dm.tl.rank_features(adata, "condition", sample_key="donor", passes=2, **FAST)
    res = adata.uns["deepmapper"]
    sl = res["summary"]["sample_level"]
    assert sl["rank"] == RANK_TEST_ALONE
    assert "fewer than 3 samples of a label ('control' (1), 'disease' (1)" in sl["model_left_out"]
    # the pair screen saw the 2 + 2 donors outside the held-out set, and findings.json says so
    assert "no pair screen calibration is possible with 2 + 2 samples: only 5 " in sl["pair_screen"]
    ranking = res["ranking"]
    p = ranking["sample_p"].fillna(1.0).to_numpy()
    np.testing.assert_array_equal(np.lexsort((ranking["model_rank"].to_numpy(), p)), np.arange(len(p)))
    assert res["summary"]["n_passes_accepted"] == 2              # the gate passed: the other reason

    # the rule on pass records: any label with fewer than MIN_TRAIN_SAMPLES training samples in any
    # pass ranked from; a failed gate is said first; pass files written before the count keep the model
    def rec(accepted=True, **counts):
        return SimpleNamespace(accepted=accepted, meta={"gate": {"score": 0.5, "chance": 0.5},
                                                        **({"train_samples": counts} if counts else {})})

    assert MIN_TRAIN_SAMPLES == 3
    assert model_left_out([rec(a=3, b=4), rec(a=4, b=3)]) == ""
    assert model_left_out([rec()]) == ""
    assert "'b' (2)" in model_left_out([rec(a=3, b=3), rec(a=3, b=2)])
    assert model_left_out([rec(False, a=1, b=1)]).startswith("no pass passed the accuracy gate")


def test_sample_key_through_the_cli(tmp_path, one_torch_thread):
    from click.testing import CliRunner

    from deepmapper.cli import cli

    adata = _tiny()
    path = tmp_path / "donors.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--input", str(path), "--label-key", "condition", "--sample-key", "donor",
                                   "--outdir", str(out), "--no-report", "--passes", "1", "--epochs", "3",
                                   "--min-epochs", "1", "--patience", "2", "--ig-steps", "4",
                                   "--attribution-max-samples", "64", "--threads", "1",
                                   "--interaction-max-features", "60"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import json

    import pandas as pd

    findings = pd.read_csv(out / "findings.tsv", sep="\t")
    assert {"model_rank", "sample_p", "sample_q", "sample_reproducibility"} <= set(findings.columns)
    summary = json.loads((out / "findings.json").read_text())["sample_level"]
    assert summary["sample_key"] == "donor" and summary["n_samples"] == 6
    assert "DESeq2" in summary["test"]                              # counts were given: the NB pseudobulk
    assert "no pair screen calibration is possible" in summary["pair_screen"]
    per_sample = pd.read_csv(out / "findings_samples.tsv", sep="\t")
    assert set(per_sample["sample"]) == set(adata.obs["donor"])
    baselines = json.loads((out / "baselines" / "baselines.json").read_text())
    assert "pseudobulk" in baselines["methods"] and (out / "baselines" / "pseudobulk.tsv").is_file()
    # the held-out cells are whole donors
    ds = io.read_dataset(out / "dataset.h5ad")
    from deepmapper.engine.passfile import read_pass

    p = read_pass(sorted((out / "passes").glob("pass_*.npz"))[0])
    held = set(ds.obs["donor"].to_numpy()[p.heldout_index])
    assert set(np.flatnonzero(ds.obs["donor"].isin(held).to_numpy())) == set(p.heldout_index.tolist())
    evaluation = json.loads((out / "evaluation.json").read_text())      # the accuracy is on these donors' cells
    assert evaluation["heldout_samples"] == sorted(held) and len(held) == 2
    recalls = [v["recall"] for v in evaluation["per_class"].values()]
    assert evaluation["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-6)
    # the report's Samples section: design, comparison with the pseudobulk baseline, donor x feature panel
    from deepmapper.results.report.html import build_html
    from deepmapper.results.report.results import load_results

    results = load_results(out)
    page = build_html(results)
    assert 'id="samples"' in page and "Top features in each sample" in page
    # MultiQC says the same: accuracy on held-out samples, the gate as balanced accuracy per pass
    from deepmapper.results.report import mqc

    written = {f.name: f for f in mqc.write_custom_content(results, tmp_path / "mqc")}
    accuracy = written["deepmapper_pass_accuracy_mqc.tsv"].read_text()
    assert "from 2 held-out samples" in accuracy and "balanced accuracy" in accuracy
    table = pd.read_csv(written["deepmapper_passes_mqc.tsv"], sep="\t", comment="#")
    assert table["balanced_accuracy"].tolist() == pytest.approx([p.gate["score"] for p in results.passes])
    # 3 donors per condition: each pass trained on one of each, so the test ranks alone, and the page says why
    assert "alone</strong>: passes trained on fewer than 3 samples of a label" in page
    assert "pseudobulk DESeq2&#x27;s top 20" in page or "pseudobulk DESeq2's top 20" in page
    # read back into an AnnData: the sample-level columns travel with the ranking
    back = dm.read_results(out)
    assert {"model_rank", "sample_q"} <= set(back.uns["deepmapper"]["ranking"].columns)


def test_with_no_pass_beating_chance_the_sample_level_test_ranks_alone(tmp_path, one_torch_thread):
    """A sample key and no pass through the gate (a model that does not carry over to a new donor):
    the run still answers with the sample-level test, which stands without the model, ranks by
    sample_p alone (the model's order among ties), and says so in the trust verdict and the report.
    Without a sample key there is no such test, and the run refuses as before."""
    import json

    import pandas as pd
    from click.testing import CliRunner

    from deepmapper.cli import cli

    adata = donors.null(donors.simulate(3, n_genes=60, mean_cells=40, lfc=0.0, seed=6), seed=6)
    path = tmp_path / "null.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--input", str(path), "--label-key", "condition", "--sample-key", "donor",
                                   "--outdir", str(out), "--no-report", "--passes", "1", "--max-tries", "2",
                                   "--min-accuracy", "1", "--epochs", "3", "--min-epochs", "1", "--patience", "2",
                                   "--ig-steps", "4", "--attribution-max-samples", "64", "--threads", "1",
                                   "--interaction-max-features", "60"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "findings.json").read_text())
    assert summary["n_passes_accepted"] == 0 and summary["used_passes"] == [0, 1]
    assert summary["sample_level"]["rank"] == RANK_TEST_ALONE
    assert not summary["trust"]["trustworthy"]
    assert any("no pass passed the accuracy gate on held-out samples" in r for r in summary["trust"]["reasons"])
    f = pd.read_csv(out / "findings.tsv", sep="\t")
    p = f["sample_p"].fillna(1.0).to_numpy()
    np.testing.assert_array_equal(np.lexsort((f["model_rank"].to_numpy(), p)), np.arange(len(f)))
    assert not f["model_rank"].is_monotonic_increasing
    per = pd.read_csv(out / "findings_per_class.tsv", sep="\t")
    dis = per[per["class"] == "disease"]
    sign = dis["direction"].map({"up": 1, "down": -1, "none": 0}).to_numpy()
    evidence = -np.log10(dis["sample_p"].fillna(1.0).clip(1e-300, 1.0)).to_numpy()
    np.testing.assert_allclose(dis["score"].to_numpy(), sign * evidence, atol=1e-5)   # tsv: 6 digits
    assert np.all(np.diff(dis["score"].to_numpy()) <= 1e-9)
    assert json.loads((out / "evaluation.json").read_text())["n_passes"] == 2
    from deepmapper.results.report.html import build_html
    from deepmapper.results.report.results import load_results

    page = build_html(load_results(out))
    assert ("the rank is -log10 of the sample-level p value (<code>sample_p</code>; a feature whose effect collapses "
            "without one sample is judged without it) alone") in page
    with pytest.raises(InputError, match="none of the 1 passes passed the accuracy gate"):
        dm.tl.rank_features(adata, "condition", passes=1, max_tries=1, min_accuracy=1.0, **FAST)


def _passes_favouring_the_first_feature(n: int = 3):
    from deepmapper.engine.passfile import PassResult

    out = []
    for i in range(n):
        imp = np.array([0.5, 0.3, 0.2], np.float32) + 0.01 * i
        out.append(PassResult(pass_index=i, seed=i, accuracy=0.9, accepted=True, stop_epoch=1, best_epoch=1,
                              early_stopped=False, importance=imp, class_importance=np.stack([-imp, imp]),
                              train_loss=imp[:1], val_loss=imp[:1], heldout_index=np.arange(2),
                              heldout_proba=np.full((2, 2), 0.5, np.float32), classes=["control", "disease"]))
    return out


def test_the_rank_weighs_the_models_importance_by_the_sample_level_evidence():
    """The model prefers g0, but g0's sample-level p (with any one sample left out) is that of a
    null feature, as for a gene raised in one donor only: findings.tsv and each class's list put
    the features the samples support first, and keep the model's order among equals."""
    from deepmapper.results.findings import build, sample_evidence

    np.testing.assert_allclose(sample_evidence(np.array([1.0, np.nan, 0.01, 1e-320])), [0.0, 0.0, 2.0, 300.0])
    names = ["g0", "g1", "g2"]
    p = np.array([0.6, 1e-4, 1e-4])
    labels = ["control"] * 3 + ["disease"] * 3
    left_out = np.array([0.9, 1e-3, 2e-4])        # the calls' p: not what the rank weighs
    stats = {"reproducibility": np.array([0.33, 1.0, 1.0]), "p": p, "p_left_out": left_out, "q": samples.bh(left_out),
             "p_label": np.stack([p, p]), "test": "t", "note": "", "means": np.ones((6, 3)),
             "sample_names": [f"s{i}" for i in range(6)], "sample_labels": labels, "n_cells": [10] * 6,
             "sample_key": "donor", "relabellings": 20}
    up = (np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    passes = _passes_favouring_the_first_feature()
    plain, plain_pc, _, _ = build(passes, names, cfg=Config(), means=up)
    table, per_class, summary, _ = build(passes, names, cfg=Config(), means=up, sample_stats=stats)
    assert list(plain["feature"]) == ["g0", "g1", "g2"]
    assert list(table["feature"]) == ["g1", "g2", "g0"] and list(table["model_rank"]) == [2, 3, 1]
    np.testing.assert_allclose(table["sample_p"], [1e-4, 1e-4, 0.6])
    np.testing.assert_allclose(table["sample_p_left_out"], [1e-3, 2e-4, 0.9])
    np.testing.assert_allclose(table["sample_q"], samples.bh(left_out)[[1, 2, 0]])
    disease = per_class[per_class["class"] == "disease"]
    assert list(plain_pc.loc[plain_pc["class"] == "disease", "feature"]) == ["g0", "g1", "g2"]
    assert list(disease["feature"]) == ["g1", "g2", "g0"]
    np.testing.assert_allclose(disease["sample_p"], [1e-4, 1e-4, 0.6])
    # the class's list: the run's importance (findings.tsv) x the evidence, signed by the class's direction
    importance = table.set_index("feature")["median_importance"].reindex(disease["feature"]).to_numpy()
    np.testing.assert_allclose(disease["score"], importance * -np.log10(disease["sample_p"]))
    control = per_class[per_class["class"] == "control"]         # down in control: negative, in scanpy's order
    assert list(control["feature"]) == ["g0", "g2", "g1"] and (control["score"] < 0).all()
    assert summary["top_features"][:3] == ["g1", "g2", "g0"]
