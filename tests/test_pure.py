"""Property tests for the pure cores: transform, accumulate, early stopping, split, config."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmapper.engine import accumulate as acc
from deepmapper.model import transform
from deepmapper.config import Config, defaults_flat, dump_yaml, load_yaml
from deepmapper.engine.earlystop import EarlyStopping
from deepmapper.errors import ConfigError, InputError
from deepmapper.engine.split import n_validation_folds, pass_cells, stratified_split, validation_folds

n_features = st.integers(min_value=1, max_value=3000)


@given(n_features)
def test_square_side_is_smallest_square(n):
    side = transform.square_side(n)
    assert side * side >= n
    assert (side - 1) * (side - 1) < n


@given(n_features, st.integers(0, 2**31 - 1))
def test_arrangement_is_a_seeded_permutation(n, seed):
    perm = transform.arrangement(n, seed)
    assert sorted(perm.tolist()) == list(range(n))
    assert np.array_equal(perm, transform.arrangement(n, seed))
    assert np.array_equal(transform.inverse(perm)[perm], np.arange(n))


def test_different_seeds_give_different_arrangements():
    perms = {tuple(transform.arrangement(765, s)) for s in range(20)}
    assert len(perms) == 20


@settings(max_examples=50)
@given(st.integers(1, 400), st.integers(0, 1000), st.integers(1, 4))
def test_images_round_trip_to_features(n, seed, batch):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n))
    perm = transform.arrangement(n, seed)
    images = transform.to_images(x, perm)
    side = transform.square_side(n)
    assert images.shape == (batch, 1, side, side)
    # every feature appears exactly once, padding is zero
    flat = images.reshape(batch, -1)
    assert np.all(flat[:, n:] == 0)
    assert np.allclose(transform.to_features(images[:, 0], perm), x)
    assert np.allclose(transform.to_features(flat, perm), x)


def test_transform_works_on_torch_tensors():
    import torch

    x = torch.arange(20.0).reshape(2, 10)
    perm = transform.arrangement(10, 3)
    images = transform.to_images(x, torch.as_tensor(perm))
    assert images.shape == (2, 1, 4, 4)
    back = transform.to_features(images[:, 0], perm)
    assert torch.equal(back, x)


@settings(max_examples=50)
@given(st.integers(1, 8), st.integers(2, 60), st.integers(1, 30), st.integers(0, 10_000))
def test_accumulate_properties(n_passes, n, k, seed):
    rng = np.random.default_rng(seed)
    imp = rng.random((n_passes, n))
    res = acc.accumulate(imp, k)
    k = min(k, n)
    assert sorted(res.rank.tolist()) == list(range(1, n + 1))
    assert np.all((res.selection_frequency >= 0) & (res.selection_frequency <= 1))
    # each pass selects exactly k features, so frequencies sum to k
    assert math.isclose(res.selection_frequency.sum(), k)
    assert np.all((res.mean_rank >= 1) & (res.mean_rank <= n))
    # the final order follows the Borda mean rank
    ordered = res.mean_rank[res.order()]
    assert np.all(np.diff(ordered) >= -1e-12)
    assert np.all(res.median_importance >= 0)


def test_accumulate_recovers_a_consistent_signal():
    rng = np.random.default_rng(0)
    imp = rng.random((10, 100))
    imp[:, 7] += 5.0
    res = acc.accumulate(imp, 5)
    assert res.rank[7] == 1
    assert res.selection_frequency[7] == 1.0


def test_ranks_break_ties_by_feature_index():
    assert acc.ranks(np.array([1.0, 3.0, 3.0, 0.0])).tolist() == [3, 1, 2, 4]


def test_mb_bound_formula():
    assert acc.mb_bound(10, 1000, 0.75) == pytest.approx(100 / (0.5 * 1000))
    assert acc.mb_bound(10, 1000, 0.5) == math.inf


def test_gate_needs_both_floor_and_majority():
    assert acc.gate(0.6, min_accuracy=0.5, majority_rate=0.34)
    assert not acc.gate(0.3, min_accuracy=0.0, majority_rate=0.34)
    assert not acc.gate(0.6, min_accuracy=0.7, majority_rate=0.34)


@given(st.lists(st.floats(0.01, 10.0), min_size=1, max_size=80), st.integers(1, 10), st.integers(0, 20),
       st.floats(0.0, 0.5))
def test_early_stopping_properties(values, patience, min_epochs, min_delta):
    es = EarlyStopping(patience=patience, min_delta=min_delta, min_epochs=min_epochs)
    stopped_at = None
    for epoch, v in enumerate(values, start=1):
        if es.step(v):
            stopped_at = epoch
            break
    if stopped_at is not None:
        assert stopped_at >= min_epochs
        assert es.wait >= patience
        assert stopped_at - es.best_epoch >= patience
    # best epoch holds the smallest value seen up to it (within min_delta improvements)
    seen = es.history
    assert es.best_value == pytest.approx(seen[es.best_epoch - 1])
    assert es.best_value <= min(seen) + min_delta + 1e-12


def test_early_stopping_fires_on_a_plateau_and_remembers_the_best():
    es = EarlyStopping(patience=3, min_delta=0.0, min_epochs=2)
    losses = [1.0, 0.5, 0.4, 0.45, 0.41, 0.42, 0.3]
    fired = [es.step(v) for v in losses[:6]]
    assert fired == [False, False, False, False, False, True]
    assert es.best_epoch == 3 and es.stopped_epoch == 6


def test_nan_never_improves():
    es = EarlyStopping(patience=2)
    es.step(1.0)
    es.step(float("nan"))
    assert es.best_epoch == 1


@given(st.lists(st.integers(0, 3), min_size=40, max_size=200), st.integers(0, 100))
def test_split_is_stratified_disjoint_and_seeded(codes, seed):
    codes = np.asarray(codes)
    if np.bincount(codes).min(initial=0) < 5 or len(np.unique(codes)) < 2:
        return
    if any((codes == c).sum() < 5 for c in np.unique(codes)):
        return
    s = stratified_split(codes, test_fraction=0.2, val_fraction=0.15, seed=seed)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert len(np.unique(allidx)) == len(codes) == len(allidx)
    for c in np.unique(codes):
        for part in (s.train, s.val, s.test):
            assert (codes[part] == c).sum() >= 1
    s2 = stratified_split(codes, test_fraction=0.2, val_fraction=0.15, seed=seed)
    assert np.array_equal(s.test, s2.test)


def test_split_rejects_a_tiny_class():
    codes = np.array([0] * 20 + [1] * 2)
    with pytest.raises(InputError, match="class 'b' has 2 cells"):
        stratified_split(codes, test_fraction=0.2, val_fraction=0.15, seed=0, classes=["a", "b"])


def test_default_config_is_consistent_and_early_stopping_can_fire():
    cfg = Config()
    cfg.validate()
    assert cfg.run.min_epochs + cfg.run.patience < cfg.run.epochs


def test_config_rejects_min_epochs_above_epochs():
    with pytest.raises(ConfigError, match="min_epochs"):
        Config().with_params({"min_epochs": 40, "epochs": 20})


def test_config_rejects_unknown_keys_and_bad_types(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epochz'"):
        load_yaml(bad)
    bad.write_text("run:\n  epochs: many\n")
    with pytest.raises(ConfigError, match="run.epochs"):
        load_yaml(bad)


def test_config_yaml_round_trip(tmp_path):
    cfg = Config().with_params({"epochs": 7, "min_epochs": 2, "backbone": "mlp", "noise_std": 0.0})
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_yaml(path) == cfg


def test_flat_params_are_unique_and_cover_every_field():
    flat = defaults_flat()
    from deepmapper.config import iter_fields

    assert len(flat) == len(list(iter_fields()))


@given(st.lists(st.integers(0, 3), min_size=40, max_size=300), st.integers(0, 100), st.integers(2, 10))
def test_validation_folds_partition_the_non_held_out_cells(codes, seed, n_folds):
    codes = np.asarray(codes)
    if len(np.unique(codes)) < 2 or any((codes == c).sum() < 5 for c in np.unique(codes)):
        return
    s = stratified_split(codes, test_fraction=0.2, val_fraction=0.1, seed=seed)
    folds = validation_folds(codes, s, n_folds, seed)
    assert np.all(folds[s.test] == -1)
    pool = np.concatenate([s.train, s.val])
    assert np.all((folds[pool] >= 0) & (folds[pool] < n_folds))
    for c in np.unique(codes):  # stratified: fold sizes of a class differ by at most one
        sizes = np.bincount(folds[pool][codes[pool] == c], minlength=n_folds)
        assert sizes.max() - sizes.min() <= 1
    validated = np.zeros(len(codes), int)
    for t in range(n_folds):
        train_cells, val_cells = pass_cells(s, folds, t)
        assert not np.intersect1d(train_cells, val_cells).size
        assert np.array_equal(np.union1d(train_cells, val_cells), np.sort(pool))
        validated[val_cells] += 1
    assert np.all(validated[pool] == 1) and np.all(validated[s.test] == 0)  # every cell validated once
    assert np.array_equal(pass_cells(s, folds, n_folds + 1)[1], pass_cells(s, folds, 1)[1])
    assert np.array_equal(validation_folds(codes, s, n_folds, seed), folds)


def test_without_folds_every_pass_uses_the_fixed_split():
    codes = np.repeat([0, 1], 30)
    s = stratified_split(codes, test_fraction=0.2, val_fraction=0.1, seed=0)
    for t in range(3):
        train_cells, val_cells = pass_cells(s, None, t)
        assert np.array_equal(train_cells, s.train) and np.array_equal(val_cells, s.val)
    assert n_validation_folds(0.1) == 10 and n_validation_folds(0.6) == 2
