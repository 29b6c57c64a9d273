"""Backbones: shapes for every kind, stacking, the position-keeping default, errors."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from deepmapper.model import backbones, transform
from deepmapper.config import BackboneConfig
from deepmapper.errors import ConfigError

BUILTIN = ["cnn", "cnn_small", "cnn_mid", "resnet18", "linear", "mlp", "vit", "vae"]
TIMM_SMALL = "timm:test_resnet"  # timm's tiny test ResNet: fast to build


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(kind, n_classes=3, n_features=28 * 28, seed=0, **kw):
    torch.manual_seed(seed)
    return backbones.build(BackboneConfig(kind=kind, **kw), n_classes, n_features)


# side 28, 5 (exact square), 5 (padded); resnet18 (11M weights, slow to initialise)
# has its own test below
SHAPE_CASES = [(k, n) for k in BUILTIN + [TIMM_SMALL] for n in (765, 25, 24) if k != "resnet18"]


@pytest.mark.parametrize("kind,n_features", SHAPE_CASES)
def test_every_kind_maps_images_to_logits(kind, n_features):
    side = transform.square_side(n_features)
    model = _build(kind, n_classes=4, n_features=n_features)
    model.train()
    x = torch.randn(3, 1, side, side)
    y = model(x)
    assert y.shape == (3, 4) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    # gradients reach the input: attribution depends on it
    x.requires_grad_(True)
    model.eval()
    model(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_resnet18_one_channel_small_stem_any_side():
    model = _build("resnet18", n_features=765)
    assert model.conv1.in_channels == 1 and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    model.eval()
    with torch.no_grad():  # global pooling at the end: the same weights take side 28 and 5
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
        assert model(torch.randn(2, 1, 5, 5)).shape == (2, 3)
    model.train()
    model(torch.randn(2, 1, 5, 5)).sum().backward()
    assert model.conv1.weight.grad is not None


def test_timm_small_stem_and_unknown_name():
    timm_model = _build(TIMM_SMALL, n_features=25)
    first = next(m for m in timm_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1 and first.stride == (1, 1)
    assert isinstance(timm_model.maxpool, torch.nn.Identity)
    plain = _build(TIMM_SMALL, n_features=25, small_stem=False)
    first = next(m for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.stride == (2, 2) and isinstance(plain.maxpool, torch.nn.MaxPool2d)
    with pytest.raises(ConfigError, match="list_models") as err:
        _build("timm:no_such_model_xyz")
    assert "backbone.kind" in str(err.value)


def test_timm_model_too_big_for_image_is_one_clear_error():
    # 16x16 patches cannot embed a 5x5 image: fail at build, not mid-training
    with pytest.raises(ConfigError, match="cannot take 5x5 images") as err:
        _build("timm:test_vit", n_features=25)
    assert "\n" not in str(err.value)


def test_missing_timm_is_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ConfigError, match="timm") as err:
        _build(TIMM_SMALL)
    assert "cnn_small" in str(err.value)  # lists the built-in kinds


def test_unknown_kind_lists_kinds():
    with pytest.raises(ConfigError) as err:
        _build("convnet9000")
    msg = str(err.value)
    assert "unknown backbone 'convnet9000'" in msg and "backbone.kind" in msg
    for kind in BUILTIN + ["timm:<name>"]:
        assert kind in msg
    assert set(BUILTIN) < set(backbones.KINDS)


def test_fewer_than_two_classes_rejected():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        _build("cnn", n_classes=1)


def test_param_count_counts_trainable_weights():
    model = _build("linear", n_classes=3, n_features=25)
    assert backbones.param_count(model) == 25 * 3 + 3
    model[1].bias.requires_grad_(False)
    assert backbones.param_count(model) == 25 * 3


@pytest.mark.parametrize("kind", ["cnn", "cnn_small", "linear", "mlp"])
def test_stacked_vmap_matches_copies_one_by_one(kind):
    from torch.func import functional_call, stack_module_state

    assert backbones.stackable(kind)
    models = [_build(kind, n_features=30, seed=s) for s in range(3)]  # side 6, padded
    for m in models:
        m.eval()
    params, buffers = stack_module_state(models)
    base = _build(kind, n_features=30, seed=99).to("meta").eval()  # structure only
    x = torch.randn(3, 5, 1, 6, 6)  # one batch per model

    def one(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    stacked = torch.vmap(one)(params, buffers, x)
    singles = torch.stack([m(x[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(stacked, singles, rtol=1e-5, atol=1e-5)
    # the gradient of a summed loss reaches each copy's own parameters unchanged
    stacked.square().sum().backward()
    singles_loss = sum(m(x[i]).square().sum() for i, m in enumerate(models))
    singles_loss.backward()
    for name, p in params.items():
        expected = torch.stack([dict(m.named_parameters())[name].grad for m in models])
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-5)
    # training mode: dropout draws differently per copy, shapes unchanged
    base.train()
    out = torch.vmap(one, randomness="different")(params, buffers, x)
    assert out.shape == (3, 5, 3)


@pytest.mark.parametrize("kind", ["cnn", "vit", "vae"])
def test_models_pickle_and_share_one_class(kind):
    import pickle

    a, b = _build(kind, n_features=25, seed=0), _build(kind, n_features=25, seed=1)
    assert type(a) is type(b)  # stack_module_state needs one class for all copies
    a.eval()
    clone = pickle.loads(pickle.dumps(a)).eval()
    x = torch.randn(2, 1, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), a(x))


def test_only_batchnorm_free_kinds_are_stackable():
    for kind in ("resnet18", "vit", "vae", "cnn_mid", TIMM_SMALL, "nonsense"):
        assert not backbones.stackable(kind)
    for kind in ("cnn", "cnn_small", "linear", "mlp"):
        model = _build(kind, n_features=25)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        assert not list(model.buffers())


def test_vit_records_attention_per_block():
    model = _build("vit", n_features=30, width=16, heads=2, depth=3, patch_size=4)  # side 6 -> 2x2 patches
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 1, 6, 6))
    assert all(a is None for a in model.attentions)  # off by default: no memory kept
    model.record_attention = True
    with torch.no_grad():
        model(torch.randn(2, 1, 6, 6))
    attn = model.attentions
    assert len(attn) == 3
    for a in attn:
        assert a.shape == (2, 2, 5, 5)  # batch, heads, cls + 4 patches
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 5))
    with pytest.raises(ConfigError, match="divisible"):
        _build("vit", width=30, heads=4)


def test_vae_aux_loss_trains_and_is_detached_in_eval():
    torch.manual_seed(0)
    model = _build("vae", n_features=36, width=8, hidden=16)
    with pytest.raises(RuntimeError):
        model.aux_loss()
    x = torch.randn(64, 1, 6, 6)
    model.train()
    model(x)
    first = model.aux_loss()
    assert first.requires_grad and first.item() > 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        model(x)
        loss = model.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.aux_loss().item() < 0.8 * first.item()
    model.eval()
    y1, y2 = model(x), model(x)
    torch.testing.assert_close(y1, y2)  # classifier reads mu: deterministic in eval
    assert not model.aux_loss().requires_grad


def _train(model, x, y, steps, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_default_cnn_tells_pixels_apart_where_global_pooling_cannot():
    """The class is *which* pixel is high, not how high: the pseudo-image case.

    Both classes have one bright interior pixel and the same value
    distribution; only its position differs. Global average pooling after
    translation-equivariant convolutions sees the same thing for both.
    """
    g = torch.Generator().manual_seed(0)
    n, side = 320, 12
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, side, side, generator=g)
    # 4 pixels from every border: what cnn_small's two 3x3 layers see around
    # the bump never includes the zero padding, so the border cannot leak
    # the position either
    x[y == 0, 0, 4, 4] += 3.0
    x[y == 1, 0, 7, 7] += 3.0
    xt, yt, xv, yv = x[:192], y[:192], x[192:], y[192:]
    cnn = _train(_build("cnn", n_classes=2, n_features=side * side, width=8), xt, yt, 150)
    small = _train(_build("cnn_small", n_classes=2, n_features=side * side), xt, yt, 150)
    assert _accuracy(cnn, xv, yv) >= 0.95
    assert _accuracy(small, xv, yv) <= 0.7  # chance is 0.5 (128 held-out cells)


def test_default_cnn_learns_pbmc68k_reduced_where_cnn_small_does_not(pbmc):
    """Held-out accuracy on real data (10 bulk_labels classes, 765 genes -> 28x28).

    Same split, arrangement, seed and fixed short schedule (8 epochs, AdamW,
    no augmentation; the trainer adds early stopping) for both models.
    """
    from sklearn.model_selection import train_test_split

    raw = pbmc.raw.X
    x = np.asarray(raw.todense() if hasattr(raw, "todense") else raw, dtype=np.float32)
    y = pbmc.obs["bulk_labels"].cat.codes.to_numpy().astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    perm = transform.arrangement(x.shape[1], seed=0)
    images = torch.as_tensor(transform.to_images((x - mu) / sd, perm).astype(np.float32))
    labels = torch.as_tensor(y)
    majority = np.bincount(y[te]).max() / len(te)

    def fit(kind):
        torch.manual_seed(0)
        model = backbones.build(BackboneConfig(kind=kind), int(y.max()) + 1, x.shape[1])
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
        rng = np.random.default_rng(0)
        for _ in range(8):
            model.train()
            order = rng.permutation(tr)
            for i in range(0, len(order), 64):
                b = torch.as_tensor(order[i:i + 64])
                loss = torch.nn.functional.cross_entropy(model(images[b]), labels[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        return model, _accuracy(model, images[te], labels[te])

    model, acc = fit("cnn")
    assert backbones.param_count(model) < 100_000  # small enough to train per pass on CPU
    assert acc >= 0.78, acc  # logistic regression on this split: ~0.84 (measured 0.80-0.83 over seeds)
    _, acc_small = fit("cnn_small")
    assert acc_small < majority + 0.1, (acc_small, majority)  # global pooling: no better than the majority class
