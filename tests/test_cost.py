"""Bounded cost per pass: with more training cells than ``max_cells_per_pass`` the pool is dealt
(stratified, seeded) into blocks, pass t trains on block t mod B, B consecutive passes see every cell,
and a stacked group never mixes blocks. Without the cap binding (pbmc68k_reduced, 700 cells) nothing
changes. Data: pbmc68k_reduced; the cap is set low to make it bind."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepmapper.engine import data as data_mod, train  # noqa: E402
from deepmapper.config import Config  # noqa: E402

FAST = {"epochs": 2, "min_epochs": 1, "patience": 5, "ig_steps": 4, "attribution_max_samples": 24, "threads": 1,
        "backbone_width": 8, "interactions": False}


@pytest.fixture(scope="module")
def dataset(pbmc):
    from deepmapper import io

    return io.from_anndata(pbmc, label_key="bulk_labels", source="pbmc68k_reduced")


def test_the_deal_covers_the_pool_in_disjoint_stratified_blocks(dataset):
    data = data_mod.prepare(dataset, Config().with_params({"max_cells_per_pass": 150}))
    pool = data.training_pool
    B = data.n_blocks()
    assert B == -(-len(pool) // 150) and B > 2
    blocks = [data.pass_pool(t) for t in range(B)]
    assert all(len(b) <= 150 + len(data.classes) for b in blocks)        # rounding per class at most
    assert np.array_equal(np.sort(np.concatenate(blocks)), np.sort(pool))  # disjoint, every cell once
    per_class = np.bincount(data.codes[pool], minlength=data.n_classes)
    for b in blocks:   # stratified: each class dealt evenly, a block holds floor or ceil of its share
        got = np.bincount(data.codes[b], minlength=data.n_classes)
        assert np.all((got == per_class // B) | (got == -(-per_class // B)))
    for t in range(B):
        train_cells, val_cells = data.pass_cells(t)
        assert np.isin(train_cells, blocks[t]).all() and len(train_cells) <= 150 + len(data.classes)
        assert len(val_cells) <= 150 // data_mod.VAL_SHARE + len(data.classes)
        assert not np.intersect1d(train_cells, val_cells).size and not np.isin(train_cells, data.split.test).any()
    # one deal per run: pass t + B trains on pass t's block; the deal is a function of the pass alone
    assert np.array_equal(data.pass_pool(B), blocks[0])
    again = data_mod.prepare(dataset, Config().with_params({"max_cells_per_pass": 150}))
    assert all(np.array_equal(again.pass_pool(t), data.pass_pool(t)) for t in range(2 * B))


def test_groups_never_mix_blocks(dataset):
    data = data_mod.prepare(dataset, Config().with_params({"max_cells_per_pass": 300}))
    assert data.n_blocks() == 2
    assert train.block_groups([[0, 1, 2, 3], [4]], data) == [[0, 2], [1, 3], [4]]
    free = data_mod.prepare(dataset, Config())
    assert train.block_groups([[0, 1, 2, 3], [4]], free) == [[0, 1, 2, 3], [4]]


def test_capped_pass_trains_on_its_block_only(dataset, monkeypatch):
    cfg = Config().with_params({**FAST, "max_cells_per_pass": 200, "passes_per_step": 2})
    data = data_mod.prepare(dataset, cfg)
    fed = []
    real = train._Feeder.__call__
    monkeypatch.setattr(train._Feeder, "__call__", lambda self, idx: fed.append(np.asarray(idx)) or real(self, idx))
    results = train.train_passes(data, cfg, [0, 1], progress=False)
    assert [r.meta["trained_with"] for r in results] == [[0], [1]]     # different blocks: not stacked
    seen = np.unique(np.concatenate(fed))
    allowed = np.concatenate([data.pass_pool(0), data.pass_pool(1), data.pass_cells(0)[1], data.pass_cells(1)[1],
                              data.split.test])
    assert np.isin(seen, allowed).all()
    assert len(np.intersect1d(seen, data.training_pool)) < len(data.training_pool)


def test_without_the_cap_binding_results_are_unchanged(dataset):
    """pbmc68k_reduced's 560 training cells are below the default cap: the same passes as with no cap."""
    cfg = Config().with_params({**FAST, "epochs": 1})
    assert cfg.run.max_cells_per_pass >= dataset.n_obs
    with_default = train.train_passes(data_mod.prepare(dataset, cfg), cfg, [1], progress=False)
    no_cap = cfg.with_params({"max_cells_per_pass": 0})
    without = train.train_passes(data_mod.prepare(dataset, no_cap), no_cap, [1], progress=False)
    for a, b in zip(with_default, without):
        assert np.array_equal(a.importance, b.importance) and np.array_equal(a.heldout_proba, b.heldout_proba)
        assert np.array_equal(a.val_loss, b.val_loss)
