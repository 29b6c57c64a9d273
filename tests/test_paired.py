"""Paired designs (issue 19): every donor under several labels. Samples are donor x label, donors
are split whole, the test compares labels within donors, permutations swap labels within a donor."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deepmapper as dm
from deepmapper import io
from deepmapper.config import Config
from deepmapper.datasets import donors
from deepmapper.engine import samples
from deepmapper.engine.split import (MIN_SAMPLES_PER_LABEL, block_split, block_validation_folds, sample_labels,
                                     split_side_of)
from deepmapper.errors import InputError

FAST = dict(epochs=3, min_epochs=1, patience=2, ig_steps=4, attribution_max_samples=64, threads=1,
            interaction_max_features=60)


def _crossed(n_blocks, n_labels, sizes, missing=()):
    """Cells of a crossed design: donor b under label k with sizes[...] cells, except the pairs in
    ``missing``; returns (label code per cell, sample code per cell, sample names, donor per sample)."""
    codes, samp, blocks = [], [], []
    for b in range(n_blocks):
        for k in range(n_labels):
            if (b, k) in missing:
                continue
            n = sizes[len(blocks) % len(sizes)]
            codes += [k] * n
            samp += [len(blocks)] * n
            blocks.append(b)
    return np.asarray(codes), np.asarray(samp), [f"s{i}" for i in range(len(blocks))], np.asarray(blocks)


@settings(max_examples=60, deadline=None)
@given(n_blocks=st.integers(MIN_SAMPLES_PER_LABEL, 9), n_labels=st.integers(2, 4),
       sizes=st.lists(st.integers(1, 20), min_size=8, max_size=8), seed=st.integers(0, 10_000),
       test_fraction=st.floats(0.05, 0.6), val_fraction=st.floats(0.05, 0.6),
       holes=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 3)), max_size=3))
def test_block_split_never_cuts_a_donor(n_blocks, n_labels, sizes, seed, test_fraction, val_fraction, holes):
    missing = {(b, k) for b, k in holes if b < n_blocks and k < n_labels}
    codes, samp, names, blocks = _crossed(n_blocks, n_labels, sizes, missing)
    if len(np.unique(codes)) < n_labels or any(np.bincount(blocks)[b] < 2 for b in np.unique(blocks)):
        return                                                    # not a paired design any more
    classes = [f"c{k}" for k in range(n_labels)]
    try:
        split = block_split(codes, samp, names, blocks, [f"d{b}" for b in range(n_blocks)], classes,
                            test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    except InputError as err:                                     # only where some label lacks donors
        assert missing and "donor" in err.format()
        return
    side = split_side_of(split, len(codes))
    donor = blocks[samp]
    for b in range(n_blocks):                                     # one side per donor, all its labels
        assert len(set(side[donor == b].tolist())) == 1
    for part in (split.train, split.val, split.test):             # every label on every side
        assert set(codes[part].tolist()) == set(range(n_labels))
    folds = block_validation_folds(codes, samp, len(names), blocks, split, 10, seed)
    assert np.all(folds[split.test] == -1) and np.all(folds[np.concatenate([split.train, split.val])] >= 0)
    for b in np.unique(donor[folds >= 0]):                        # a fold holds whole donors
        assert len(set(folds[donor == b].tolist())) == 1
    if not missing:                                               # each pass trains on every label
        for f in range(int(folds.max()) + 1):
            assert set(codes[(folds >= 0) & (folds != f)].tolist()) == set(range(n_labels))


def test_too_few_donors_in_a_paired_design_is_one_clear_error():
    codes, samp, names, blocks = _crossed(2, 2, [10])
    with pytest.raises(InputError) as err:
        block_split(codes, samp, names, blocks, ["d0", "d1"], ["a", "b"], test_fraction=0.2, val_fraction=0.2,
                    seed=0)
    text = err.value.format()
    assert "'a' (2 donors), 'b' (2 donors)" in text and f"needs {MIN_SAMPLES_PER_LABEL} donors" in text


def test_donor_x_label_samples_nested_in_a_donor_column_get_the_paired_hint(caplog):
    """A paired study given with a donor x condition column as the sample key is compared unpaired;
    the obvious donor column it is nested in is named, once, as the key that pairs it."""
    import logging

    adata = donors.simulate_paired(3, n_genes=40, mean_cells=20, seed=4)
    adata.obs["sample"] = adata.obs["donor"].astype(str) + "_" + adata.obs["condition"].astype(str)
    with caplog.at_level(logging.WARNING, logger="deepmapper.io"):
        io.from_anndata(adata, label_key="condition", sample_key="sample")
    hints = [r.getMessage() for r in caplog.records if "give --sample-key donor" in r.getMessage()]
    assert len(hints) == 1 and "nested in 'donor'" in hints[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepmapper.io"):
        io.from_anndata(adata, label_key="condition", sample_key="donor")
    assert "sample-key" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepmapper.io"):           # no key: the donor pairs them
        io.from_anndata(adata, label_key="condition")
    assert "constant within each 'sample'" in caplog.text and "add --sample-key donor" in caplog.text
    unpaired = donors.simulate(3, n_genes=40, mean_cells=20, seed=4)   # donors nested in conditions
    unpaired.obs["sample"] = unpaired.obs["donor"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepmapper.io"):
        io.from_anndata(unpaired, label_key="condition", sample_key="sample")
    assert "within donors" not in caplog.text


def test_a_paired_run_holds_out_whole_donors():
    """Through prepare: the run's split and folds keep every donor (both of its samples) on one side."""
    from deepmapper.engine.data import prepare

    ds = io.from_anndata(donors.simulate_paired(5, n_genes=30, mean_cells=20, seed=1), label_key="condition",
                         sample_key="donor")
    data = prepare(ds, Config())
    donor = ds.obs["donor"].astype(str).to_numpy()
    side = split_side_of(data.split, ds.n_obs)
    for d in set(donor.tolist()):
        assert len(set(side[donor == d].tolist())) == 1
        assert len(set(data.folds[donor == d].tolist())) == 1
    assert data.sample_blocks.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize("per_block,n_blocks,expected", [((0, 1), 3, 8), ((0, 1), 5, 32), ((0, 1, 2), 2, 36)])
def test_relabellings_swap_labels_within_donors(per_block, n_blocks, expected):
    lab = np.tile(per_block, n_blocks)
    blocks = np.repeat(np.arange(n_blocks), len(per_block))
    assert samples.n_relabellings(lab, blocks) == expected
    every = samples.relabellings(lab, 10_000, seed=0, blocks=blocks)
    assert len(every) == expected - 1 and len({tuple(r) for r in every}) == expected - 1
    assert not any(np.array_equal(r, lab) for r in every)
    for r in every:                                               # a permutation of each donor's labels
        for b in range(n_blocks):
            assert sorted(r[blocks == b].tolist()) == sorted(per_block)
    many = np.repeat(np.arange(14), 2)                            # 2 ** 14 > EXACT_RELABELLINGS: drawn
    drawn = samples.relabellings(np.tile([0, 1], 14), 50, seed=1, blocks=many)
    assert drawn.shape == (50, 28) and all(sorted(r[many == b].tolist()) == [0, 1] for r in drawn for b in range(14))


def test_the_screen_swaps_labels_within_donors(monkeypatch):
    from deepmapper.engine import interactions

    rng = np.random.default_rng(0)
    n_donors, per = 6, 20
    samp = np.repeat(np.arange(2 * n_donors), per)                # sample 2d: donor d under a; 2d + 1: under b
    codes = (samp % 2).astype(np.int64)
    blocks = np.repeat(np.arange(n_donors), 2)
    X = rng.poisson(2.0, (len(codes), 30)).astype(np.float32)
    seen = []
    real = interactions._screen_labelling
    monkeypatch.setattr(interactions, "_screen_labelling",
                        lambda cols, labelling, *a, **kw: seen.append(np.asarray(labelling).copy())
                        or real(cols, labelling, *a, **kw))
    cfg = Config().interactions
    interactions.screen(X, codes, ["a", "b"], [f"g{j}" for j in range(30)], cells=np.arange(len(codes)), cfg=cfg,
                        seed=0, progress=False, samples=samp, blocks=blocks)
    assert len(seen) == min(cfg.permutations, 2 ** n_donors - 1) + 1     # within-donor swaps, then the data
    for labelling in seen[:-1]:
        per_sample = labelling[::per]
        assert all(len(set(labelling[samp == s].tolist())) == 1 for s in range(2 * n_donors))
        assert all(sorted(per_sample[2 * d:2 * d + 2].tolist()) == [0, 1] for d in range(n_donors))


def test_the_screen_says_when_too_few_donors_calibrate():
    from deepmapper.engine import interactions

    samp = np.repeat(np.arange(8), 15)                            # 4 donors: 15 other swaps, q < 0.05 needs 20
    codes = (samp % 2).astype(np.int64)
    X = np.random.default_rng(1).poisson(2.0, (len(codes), 20)).astype(np.float32)
    res = interactions.screen(X, codes, ["a", "b"], [f"g{j}" for j in range(20)], cells=np.arange(len(codes)),
                              cfg=Config().interactions, seed=0, progress=False, samples=samp,
                              blocks=np.repeat(np.arange(4), 2))
    assert len(res.table) == 0
    assert "4 donors of a paired design" in res.note and "only 15 distinct relabellings" in res.note


def test_the_paired_t_test_is_scipys_on_the_donor_differences():
    """The fallback without counts against scipy's paired t-test on the same per-sample means."""
    from scipy import stats

    rng = np.random.default_rng(3)
    means = rng.normal(0, 1, (10, 7))
    lab = np.tile([0, 1], 5)
    blocks = np.repeat(np.arange(5), 2)
    expected = stats.ttest_rel(means[lab == 1], means[lab == 0], axis=0).pvalue
    assert np.allclose(samples.paired_p(means, lab == 1, blocks), expected)
    d = samples.block_differences(means, lab == 1, blocks)
    rep = samples.reproducibility(means, lab, 2, blocks)
    assert np.allclose(rep, np.abs(2 * (d > 0).mean(0) - 1))


def test_leaving_out_a_donor_leaves_out_all_its_samples():
    lab = np.tile([0, 1], 4)
    blocks = np.repeat(np.arange(4), 2)
    seen = []
    samples.leave_one_sample_out(lambda keep: seen.append(keep.copy()) or (np.zeros((1, 1)),) + (np.ones((1, 1)),) * 2,
                                 lab, blocks)
    assert len(seen) == 5 and seen[0].all()
    for d, keep in enumerate(seen[1:]):
        assert np.array_equal(~keep, blocks == d)


def test_pairing_cancels_donor_effects_and_one_donor_is_not_a_finding():
    """Strong donor effects (sd 1 on the log scale) shared by a donor's two samples: PyDESeq2 with
    ``~ donor + label`` puts the condition genes first where the unpaired test on the same samples
    does not, and the leave-one-donor-out q calls condition genes but no gene raised in one donor."""
    from deepmapper.engine import pseudobulk

    data = donors.simulate_paired(5, n_genes=300, mean_cells=40, donor_sd=1.0, lfc=1.2, seed=0)
    ds = io.from_anndata(data, label_key="condition", sample_key="donor")
    codes, classes = io.labels(ds)
    s_codes, names = io.samples(ds)
    blocks = io.sample_blocks(ds)[0]
    lab = sample_labels(codes, s_codes, len(names))
    sums = samples.pseudobulk_sums(io.counts_matrix(ds), s_codes, len(names))
    truth = {int(g[1:]) for g in data.uns["truth"]["true_genes"]}
    paired = pseudobulk.deseq2(sums, lab, classes, blocks=blocks)["p"][0]
    unpaired = pseudobulk.deseq2(sums, lab, classes)["p"][0]
    found = {name: len(set(np.argsort(p)[:12].tolist()) & truth) for name, p in (("paired", paired),
                                                                                 ("unpaired", unpaired))}
    assert found["paired"] >= 11 and found["unpaired"] <= found["paired"] - 2, found
    level = samples.sample_level(ds, classes)
    assert "~ donor + label" in level["test"] and "donor left out" in level["test"]
    assert level["donors"] == [f"donor{d:02d}" for d in range(5) for _ in range(2)] and level["relabellings"] == 32
    q = dict(zip(ds.var_names, np.nan_to_num(level["q"], nan=1.0)))
    assert sum(q[g] < 0.05 for g in data.uns["truth"]["true_genes"]) >= 8
    assert all(q[g] >= 0.05 for g in data.uns["truth"]["one_donor_genes"])


def test_a_paired_design_through_the_api(one_torch_thread):
    adata = donors.simulate_paired(4, n_genes=60, mean_cells=25, lfc=1.5, seed=2)
    dm.tl.rank_features(adata, "condition", sample_key="donor", passes=1, **FAST)
    level = adata.uns["deepmapper"]["summary"]["sample_level"]
    assert level["design"].startswith("paired: 4 donors") and level["n_samples"] == 8
    assert level["samples_per_label"] == {"control": 4, "disease": 4}
    assert "~ donor + label" in level["test"]
    # the screen saw the 3 donors outside the held-out one: 7 other swaps within donors, 20 needed
    assert "with 3 donors of a paired design: only 7 distinct relabellings" in level["pair_screen"]
    ranking = adata.uns["deepmapper"]["ranking"]
    assert {"sample_p", "sample_q", "sample_reproducibility"} <= set(ranking.columns)


def test_the_report_says_the_design_is_paired():
    from types import SimpleNamespace

    import pandas as pd

    from deepmapper.results.report import samples as section

    level = {"sample_key": "donor", "design": "paired: 4 donors, each under several labels; a sample is donor x label",
             "n_samples": 8, "samples_per_label": {"control": 4, "disease": 4}, "test": "t", "note": "",
             "n_sample_q_below": 0, "q_threshold": 0.05, "pair_screen": "p", "panel": None,
             "rank": "median_importance x -log10(sample_p)"}
    res = SimpleNamespace(summary={"sample_level": level}, baselines={}, baselines_meta={},
                          findings=pd.DataFrame({"feature": ["g1"]}))
    text = section.section(res)
    assert "A paired design (paired: 4 donors" in text and "held-out and validation sets are whole donors" in text
    level["design"] = "one label per sample"
    assert "Held-out and validation sets are whole samples" in section.section(res)
