"""The training engine: stacked passes == one-at-a-time passes, determinism, early
stopping with restore-best-weights, micro-batches, device selection, sparse input.

Data: scanpy's pbmc68k_reduced (700 cells x 765 genes, 10 classes) for the
end-to-end comparisons; a small seeded random model for the stacked-attribution
identity. Every run uses one thread, few epochs and few IG steps (budget: < 2 min).

Why dropout and augmentation stay *on* here: a stacked model draws its dropout
masks and augmentation noise from each member's own generator (seed + pass
index), not from torch's global RNG, so stacking may not change them. Only
floating-point summation order may differ between the two ways of running.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepmapper.model import attribution, backbones, stacked  # noqa: E402
from deepmapper.engine import attribute, data as data_mod, train, wide_start  # noqa: E402
from deepmapper.config import AttributionConfig, Config  # noqa: E402
from deepmapper.errors import ConfigError  # noqa: E402

FAST = {"epochs": 3, "min_epochs": 1, "patience": 5, "ig_steps": 4, "attribution_max_samples": 24, "threads": 1,
        "backbone_width": 8}


@pytest.fixture(scope="module")
def dataset(pbmc):
    from deepmapper import io

    return io.from_anndata(pbmc, label_key="bulk_labels", source="pbmc68k_reduced")


def _prepared(dataset, cfg):
    return data_mod.prepare(dataset, cfg)


def _same_pass(a, b, *, loss_tol=1e-3, proba_tol=1e-2, imp_rel=0.02):
    assert (a.pass_index, a.seed, a.stop_epoch, a.best_epoch, a.early_stopped) == \
           (b.pass_index, b.seed, b.stop_epoch, b.best_epoch, b.early_stopped)
    np.testing.assert_allclose(a.val_loss, b.val_loss, atol=loss_tol)
    np.testing.assert_allclose(a.train_loss, b.train_loss, atol=loss_tol)
    np.testing.assert_allclose(a.heldout_proba, b.heldout_proba, atol=proba_tol)
    scale = float(np.abs(b.importance).max())
    np.testing.assert_allclose(a.importance, b.importance, atol=imp_rel * scale)
    np.testing.assert_allclose(a.class_importance, b.class_importance,
                               atol=imp_rel * float(np.abs(b.class_importance).max()))


@pytest.mark.parametrize("kind", ["cnn", "cnn_small"])
def test_stacked_passes_equal_one_at_a_time(dataset, kind):
    cfg = Config().with_params({**FAST, "backbone": kind, "dropout": 0.25, "noise_std": 0.1,
                                "feature_dropout": 0.1})
    data = _prepared(dataset, cfg)
    stacked = train.train_passes(data, cfg.with_params({"passes_per_step": 3}), [0, 1, 2], progress=False)
    single = train.train_passes(data, cfg.with_params({"passes_per_step": 1}), [0, 1, 2], progress=False)
    assert [r.meta["trained_with"] for r in stacked] == [[0, 1, 2]] * 3
    assert [r.meta["trained_with"] for r in single] == [[0], [1], [2]]
    for a, b in zip(stacked, single):
        _same_pass(a, b)
    # the tolerance is meaningful: two different arrangements are far apart
    assert not np.allclose(stacked[0].importance, stacked[1].importance,
                           atol=0.02 * float(np.abs(stacked[1].importance).max()))


def test_same_seed_is_bitwise_reproducible(dataset):
    cfg = Config().with_params({**FAST, "passes_per_step": 2})
    data = _prepared(dataset, cfg)
    a = train.train_passes(data, cfg, [3, 4], progress=False)
    b = train.train_passes(data, cfg, [3, 4], progress=False)
    for x, y in zip(a, b):
        assert np.array_equal(x.importance, y.importance)
        assert np.array_equal(x.heldout_proba, y.heldout_proba)
        assert np.array_equal(x.val_loss, y.val_loss)
    assert not np.array_equal(a[0].importance, a[1].importance)


def test_early_stopping_fires_and_restores_the_best_epoch(dataset):
    # min_delta so large that only the first epoch counts as an improvement:
    # stopping must fire at epoch 1 + patience and restore epoch 1's weights.
    stop_cfg = Config().with_params({**FAST, "epochs": 6, "patience": 2, "min_delta": 1e6,
                                     "passes_per_step": 2})
    data = _prepared(dataset, stop_cfg)
    stopped = train.train_passes(data, stop_cfg, [0, 1], progress=False)
    for r in stopped:
        assert r.early_stopped and r.stop_epoch == 3 and r.best_epoch == 1
        assert len(r.val_loss) == 3 and len(r.train_loss) == 3
    # the restored weights are those after epoch 1: a 1-epoch run gives the same model
    one_cfg = Config().with_params({**FAST, "epochs": 1, "passes_per_step": 1})
    one = train.train_passes(data, one_cfg, [0, 1], progress=False)
    for a, b in zip(stopped, one):
        assert b.stop_epoch == 1
        np.testing.assert_allclose(a.heldout_proba, b.heldout_proba, atol=1e-5)
        np.testing.assert_allclose(a.importance, b.importance, atol=1e-4 * float(np.abs(b.importance).max()))
        assert not np.allclose(a.val_loss[-1], a.val_loss[0])  # it did train past the restored epoch


def test_micro_batches_give_the_same_steps(dataset, monkeypatch):
    cfg = Config().with_params({**FAST, "epochs": 2, "passes_per_step": 2, "batch_size": 48})
    data = _prepared(dataset, cfg)
    whole = train.train_passes(data, cfg, [0, 1], progress=False)
    monkeypatch.setattr(train, "MICRO_BATCH_BYTES", 1)   # one image per micro-batch
    monkeypatch.setattr(train, "EVAL_BYTES", 1)          # smallest eval and attribution chunks
    monkeypatch.setattr(attribute, "EVAL_BYTES", 1)
    tiny = train.train_passes(data, cfg, [0, 1], progress=False)
    for a, b in zip(whole, tiny):
        _same_pass(a, b, loss_tol=1e-4, proba_tol=1e-3, imp_rel=5e-3)


def _random_members(kind, k, side, n_classes=4):
    cfg = Config().with_params({"backbone": kind, "backbone_width": 8, "hidden": 16})
    models = []
    for t in range(k):
        torch.manual_seed(100 + t)
        models.append(backbones.build(cfg.backbone, n_classes, side * side))
    gens = [torch.Generator().manual_seed(t) for t in range(k)]
    return models, gens


@pytest.mark.parametrize("kind", ["cnn", "cnn_small", "mlp", "linear"])
def test_stacked_forward_equals_each_member_and_grouped_layout(kind):
    side, k = 9, 3
    models, gens = _random_members(kind, k, side)
    x = torch.randn(5, k, side, side)
    loop = stacked.Stacked(models, gens, side)
    grouped = stacked.Stacked(models, gens, side, grouped=True)
    loop.train(False), grouped.train(False)
    with torch.no_grad():
        out = loop.forward(x)
        expect = torch.stack([m.eval()(x[:, j:j + 1]) for j, m in enumerate(models)])
        torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(grouped.forward(x), expect, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_batched_attribution_equals_attributing_each_member(method):
    side, k, n = 7, 3, 6
    models, gens = _random_members("cnn", k, side)
    net = stacked.Stacked(models, gens, side)
    net.load([dict(m.named_parameters()) for m in models])
    net.train(False)
    x = torch.randn(n, k, side, side)
    base = torch.randn(1, k, side, side)
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    acfg = AttributionConfig(method=method, n_steps=6)
    got = attribute.attribute_stacked(net, x, t, base, acfg)
    for j, m in enumerate(models):
        alone = attribution.attribute(m, x[:, j:j + 1], t, acfg, baseline=base[:, j:j + 1])
        np.testing.assert_allclose(got[:, j].reshape(n, -1), alone, atol=1e-5, rtol=1e-4)


def test_sparse_input_is_never_densified_whole(dataset, monkeypatch):
    import scipy.sparse as sp

    cfg = Config().with_params({**FAST, "epochs": 1, "passes_per_step": 2})
    dense_data = _prepared(dataset, cfg)        # small: kept as a dense scaled copy
    assert dense_data.dense_scaled is not None
    sparse = dataset.copy()
    sparse.X = sp.csr_matrix(dataset.X)          # the dataset's log-normalised .raw, stored sparse
    monkeypatch.setattr(data_mod, "DENSE_LIMIT_BYTES", 0)
    densified = []
    real = sp.csr_matrix.toarray

    def spy(self, *args, **kwargs):
        densified.append(self.shape[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_matrix, "toarray", spy)
    monkeypatch.setattr(sp.csr_matrix, "todense", lambda self, *a, **k: pytest.fail("todense on the matrix"))
    sparse_data = _prepared(sparse, cfg)
    assert sparse_data.dense_scaled is None and sp.issparse(sparse_data.X)
    train.train_passes(sparse_data, cfg, [0, 1], progress=False)   # incl. the wide path's logistic start
    exact = cfg.with_params({"wide_start": "random"})   # the start agrees only to its solver tolerance
    results = train.train_passes(sparse_data, exact, [0, 1], progress=False)
    assert densified, "batches are densified row block by row block"
    assert max(densified) <= train.EVAL_BATCH < sparse.n_obs
    # and the sparse path trains exactly what the dense path trains
    monkeypatch.undo()
    expect = train.train_passes(dense_data, exact, [0, 1], progress=False)
    for a, b in zip(results, expect):
        np.testing.assert_allclose(a.heldout_proba, b.heldout_proba, atol=1e-5)
        np.testing.assert_allclose(a.importance, b.importance, atol=1e-4 * float(np.abs(b.importance).max()))


def test_scaling_statistics_match_numpy_on_dense_and_sparse(dataset):
    import scipy.sparse as sp

    cfg = Config()
    d = _prepared(dataset, cfg)
    X = np.asarray(dataset.X.toarray() if sp.issparse(dataset.X) else dataset.X, dtype=np.float64)
    train_rows = X[d.split.train]
    np.testing.assert_allclose(d.mean, train_rows.mean(0), atol=1e-5)
    std = train_rows.std(0)
    std[std < 1e-8] = 1.0
    np.testing.assert_allclose(d.scale, std, rtol=1e-5, atol=1e-6)
    # standardised training cells have mean 0: the train-mean baseline image is all zeros
    np.testing.assert_allclose(d.train_mean_features(), 0.0, atol=1e-5)


def test_device_selection(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.select_device("auto").type == "cpu"
    assert train.select_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="run.device"):
        train.select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.select_device("auto").type == "cuda"
    assert train.select_device("cpu").type == "cpu"


def test_non_stackable_backbones_train_one_at_a_time(dataset):
    cfg = Config().with_params({**FAST, "epochs": 1, "backbone": "cnn_mid", "passes_per_step": 4})
    assert train.group_passes([0, 1, 2], cfg) == [[0], [1], [2]]
    assert train.group_passes([0, 1, 2, 3, 4], cfg.with_params({"backbone": "cnn"})) == [[0, 1, 2, 3], [4]]
    data = _prepared(dataset, cfg)
    with pytest.raises(ValueError, match="not stackable"):
        train.train_group(data, cfg, [0, 1], device=torch.device("cpu"), progress=False)
    (r,) = train.train_passes(data, cfg, [5], progress=False)
    assert r.meta["trained_with"] == [5] and r.importance.shape == (data.n_features,)


def test_adamw_matches_torch_adamw():
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    start = [p.detach().clone() for p in ours]
    ref = [p.detach().clone().requires_grad_(True) for p in ours]
    a, b = stacked.AdamW(ours, lr=2e-3, weight_decay=1e-2), torch.optim.AdamW(ref, lr=2e-3, weight_decay=1e-2)
    for _ in range(30):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        a.step(), b.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)
    assert all((p - s).abs().max() > 1e-3 for p, s in zip(ours, start))  # they did move


def test_a_pass_never_trains_on_its_validation_fold(dataset):
    """Rotating validation: relabelling pass 0's validation cells leaves pass 0's one-epoch
    model unchanged (those cells only judge it) but changes pass 1, which trains on them."""
    import dataclasses

    cfg = Config().with_params({**FAST, "epochs": 1, "passes_per_step": 2})
    data = _prepared(dataset, cfg)
    assert data.folds is not None
    val0 = data.pass_cells(0)[1]
    assert not np.array_equal(val0, data.pass_cells(1)[1])
    codes = data.codes.copy()
    codes[val0] = (codes[val0] + 1) % data.n_classes
    relabelled = dataclasses.replace(data, codes=codes)
    a = train.train_passes(data, cfg, [0, 1], progress=False)
    b = train.train_passes(relabelled, cfg, [0, 1], progress=False)
    np.testing.assert_allclose(a[0].heldout_proba, b[0].heldout_proba, atol=1e-6)
    np.testing.assert_allclose(a[0].train_loss, b[0].train_loss, atol=1e-6)
    assert not np.allclose(a[0].val_loss, b[0].val_loss, atol=1e-3)       # judged on the relabelled cells
    assert not np.allclose(a[1].heldout_proba, b[1].heldout_proba, atol=1e-3)


def test_fixed_validation_when_rotation_is_off(dataset):
    cfg = Config().with_params({**FAST, "rotate_validation": False})
    data = _prepared(dataset, cfg)
    assert data.folds is None
    for t in range(3):
        assert np.array_equal(data.pass_cells(t)[1], data.split.val)


def test_label_smoothing_changes_the_training_target_only(dataset):
    """With smoothing e over C classes the training loss can never fall below the entropy
    of the smoothed target; the validation loss stays plain cross-entropy (no such floor)."""
    cfg = Config().with_params({**FAST, "epochs": 4, "passes_per_step": 1, "label_smoothing": 0.5})
    data = _prepared(dataset, cfg)
    smooth = train.train_passes(data, cfg, [0], progress=False)[0]
    plain = train.train_passes(data, cfg.with_params({"label_smoothing": 0.0}), [0], progress=False)[0]
    c, e = data.n_classes, 0.5
    target = np.array([1 - e + e / c] + [e / c] * (c - 1))
    floor = float(-(target * np.log(target)).sum())
    assert np.all(smooth.train_loss >= floor - 1e-4)
    assert plain.train_loss[-1] < floor - 0.5          # without smoothing it goes well below
    assert smooth.val_loss.min() < floor - 0.5          # validation: plain cross-entropy


@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_wide_path_starts_at_the_logistic_fit_of_the_pass(dataset, storage):
    """The cnn's wide path, read through each member's arrangement, gives the same class
    probabilities as sklearn's penalised logistic regression fitted on that pass's training
    cells; the sparse path (fit on x / scale, intercept shifted) agrees with the dense one."""
    import dataclasses

    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    cfg = Config().with_params({**FAST})
    data = _prepared(dataset, cfg)
    if storage == "sparse":
        data = dataclasses.replace(data, X=sp.csr_matrix(data.X), dense_scaled=None)
    side = train.transform.square_side(data.n_features)
    models, gens = [], []
    members = []
    for t in (0, 1):
        torch.manual_seed(t)
        models.append(backbones.build(cfg.backbone, data.n_classes, data.n_features))
        gens.append(torch.Generator().manual_seed(t))
        members.append(train._MemberState(pass_index=t, perm=train.transform.arrangement(data.n_features, t),
                                          generator=gens[-1], stopper=None))
    net = stacked.Stacked(models, gens, side)
    wide_start.logistic_wide_start(net, members, data, side, seed=0)
    test_cells = data.split.test
    rows = torch.as_tensor(data.rows(test_cells))
    for k, m in enumerate(members):
        cells = data.pass_cells(m.pass_index)[0]
        # with fit_logistic's one BLAS thread: this weakly penalised fit stops where the loss stops falling
        # in floating point (L-BFGS's ftol, whatever tol says), so another summation order stops elsewhere
        # in the flat valley (up to 0.013 in probability on this data); the placement is what is checked
        with threadpool_limits(1, user_api="blas"):
            ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-9).fit(data.rows(cells), data.codes[cells])
        pixels = train.transform.to_pixels(rows, torch.as_tensor(m.perm))
        with torch.no_grad():
            logits = pixels @ net.params["wide.weight"][k].T + net.params["wide.bias"][k]
        # dense: centred, as sklearn; sparse: fitted uncentred, a harder problem for the same tolerance
        np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), ref.predict_proba(data.rows(test_cells)),
                                   atol=1e-4 if storage == "dense" else 2e-2)
    assert not torch.allclose(net.params["wide.weight"][0], net.params["wide.weight"][1])


def test_the_wide_path_stays_fixed_and_random_start_trains_it(dataset):
    cfg = Config().with_params({**FAST, "epochs": 2, "passes_per_step": 1})
    data = _prepared(dataset, cfg)
    fixed = train.train_passes(data, cfg, [0], progress=False)[0]
    scratch = train.train_passes(data, cfg.with_params({"wide_start": "random"}), [0], progress=False)[0]
    # the linear fit alone is already a good classifier: the first epoch starts far lower
    assert fixed.val_loss[0] < scratch.val_loss[0] - 0.2
    with pytest.raises(ConfigError, match="wide_start"):
        Config().with_params({"wide_start": "lasso"})
