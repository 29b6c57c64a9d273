"""Attribution: completeness, chunking, baselines, occlusion/saliency on linear models, rollout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmapper.model import attribution, backbones
from deepmapper.config import AttributionConfig, BackboneConfig
from deepmapper.errors import ConfigError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(kind="cnn", n_classes=3, n_features=25, seed=0, **kw):
    torch.manual_seed(seed)
    return backbones.build(BackboneConfig(kind=kind, **kw), n_classes, n_features)


def _images(n, side, seed=1):
    return torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def _logit(model, x, t):
    model.eval()
    with torch.no_grad():
        return model(x)[torch.arange(x.shape[0]), t]


def test_integrated_gradients_completeness():
    model = _model("cnn", width=8)
    x, t = _images(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    base = _images(1, 5, seed=7)
    cfg = AttributionConfig(n_steps=64)
    attr = attribution.attribute(model, x, t, cfg, baseline=base)
    assert attr.shape == (6, 25) and attr.dtype == np.float32
    expected = (_logit(model, x, t) - _logit(model, base.expand_as(x), t)).numpy()
    np.testing.assert_allclose(attr.sum(1), expected, rtol=1e-2, atol=1e-3)
    assert np.abs(expected).min() > 1e-2  # the check above is not 0 == 0


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "occlusion"])
def test_chunked_equals_unchunked(method):
    model = _model("mlp", hidden=16)
    x, t = _images(7, 5), torch.tensor([0, 1, 2, 2, 1, 0, 1])
    base = _images(1, 5, seed=3)
    whole = attribution.attribute(model, x, t, AttributionConfig(method=method, internal_batch_size=64,
                                                                 n_steps=8), baseline=base)
    parts = attribution.attribute(model, x, t, AttributionConfig(method=method, internal_batch_size=3,
                                                                 n_steps=8), baseline=base)
    np.testing.assert_allclose(parts, whole, rtol=1e-4, atol=1e-6)
    assert np.abs(whole).max() > 0


def test_model_state_restored_and_no_param_grads():
    model = _model("cnn", width=8)
    model.train()
    attribution.attribute(model, _images(4, 5), [0, 1, 2, 0], AttributionConfig(n_steps=4))
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_baseline_none_or_zeros_means_zero_image():
    model = _model("mlp", hidden=16)
    x, t = _images(3, 5), np.array([0, 1, 2])
    mean = x.mean(0, keepdim=True)
    cfg_zero = AttributionConfig(baseline="zeros", n_steps=8)
    cfg_mean = AttributionConfig(baseline="train_mean", n_steps=8)
    zeros = attribution.attribute(model, x, t, cfg_zero, baseline=mean)  # config wins
    none = attribution.attribute(model, x.numpy(), t, cfg_mean, baseline=None)
    explicit = attribution.attribute(model, x, t, cfg_mean, baseline=torch.zeros(1, 1, 5, 5))
    np.testing.assert_allclose(zeros, explicit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(none, explicit, rtol=1e-5, atol=1e-6)
    with_mean = attribution.attribute(model, x, t, cfg_mean, baseline=mean)
    assert not np.allclose(with_mean, explicit, atol=1e-3)


def test_train_mean_baseline_ignores_a_constant_pixel():
    """One pixel is high in every cell (no class information), another carries the class.

    Against a zeros image the constant pixel looks important because it is far
    from zero; against the training-mean image it contributes ~nothing. This is
    why ``train_mean`` is the default baseline.
    """
    g = torch.Generator().manual_seed(0)
    n, side, const_px, signal_px = 300, 4, 5, 10
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 * torch.randn(n, 1, side, side, generator=g)
    flat = x.view(n, -1)
    flat[:, const_px] += 4.0                      # same in every class
    flat[:, signal_px] += (y.float() - 1.0) * 1.5  # -1.5 / 0 / +1.5 by class
    model = _model("mlp", n_classes=3, n_features=16, hidden=32, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.95
    cells, targets = x[:60], y[:60]
    mean = x.mean(0, keepdim=True)
    zeros = np.abs(attribution.attribute(model, cells, targets, AttributionConfig(baseline="zeros")))
    train = np.abs(attribution.attribute(model, cells, targets, AttributionConfig(baseline="train_mean"),
                                         baseline=mean))
    noise = [p for p in range(16) if p not in (const_px, signal_px)]
    z, m = zeros.mean(0), train.mean(0)
    # zeros baseline: the constant pixel stands far above every noise pixel
    assert z[const_px] > 5 * z[noise].max()
    # training mean: it is just another uninformative pixel
    assert m[const_px] < 0.05 * m[signal_px]
    assert m[const_px] <= m[noise].max()
    assert m.argmax() == signal_px and z.argmax() == signal_px


def _linear(n_features=25, n_classes=3, seed=0):
    model = _model("linear", n_classes=n_classes, n_features=n_features, seed=seed)
    return model, model[1].weight.detach().clone()


@pytest.mark.parametrize("method", ["occlusion", "saliency", "integrated_gradients"])
def test_linear_model_attribution_is_weight_times_offset(method):
    model, w = _linear()
    x, t = _images(5, 5), torch.tensor([2, 0, 1, 1, 2])
    base = _images(1, 5, seed=9)
    attr = attribution.attribute(model, x, t, AttributionConfig(method=method, n_steps=8), baseline=base)
    expected = (w[t] * (x - base).reshape(5, -1)).numpy()
    np.testing.assert_allclose(attr, expected, rtol=1e-4, atol=1e-5)


def test_occlusion_window_covers_the_border():
    # window 2 on a 5x5 image: the last row/column form partial windows
    model, w = _linear()
    x, t = _images(2, 5), torch.tensor([1, 0])
    attr = attribution.attribute(model, x, t, AttributionConfig(method="occlusion", occlusion_window=2))
    contrib = (w[t] * x.reshape(2, -1)).reshape(2, 5, 5).numpy()
    expected = np.zeros_like(contrib)
    for r in range(0, 5, 2):
        for c in range(0, 5, 2):
            # each pixel of a window gets the whole window's output change
            expected[:, r:r + 2, c:c + 2] = contrib[:, r:r + 2, c:c + 2].sum((1, 2))[:, None, None]
    np.testing.assert_allclose(attr.reshape(2, 5, 5), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="occlusion_window"):
        attribution.attribute(model, x, t, AttributionConfig(method="occlusion", occlusion_window=6))


def test_attention_rollout_vit():
    model = _model("vit", n_features=25, width=16, heads=2, depth=2, patch_size=2)  # 5x5 -> 3x3 patches
    x = _images(4, 5)
    attr = attribution.attribute(model, x, [0, 1, 2, 0], AttributionConfig(method="attention_rollout",
                                                                         internal_batch_size=3))
    assert attr.shape == (4, 25) and attr.dtype == np.float32
    assert (attr >= 0).all() and attr.max() > 0
    img = attr.reshape(4, 5, 5)
    # each pixel carries its patch's value
    np.testing.assert_array_equal(img[:, 0, 0], img[:, 1, 1])
    np.testing.assert_array_equal(img[:, 2, 2], img[:, 3, 3])
    # the cls row of a row-stochastic product sums to 1 over all tokens
    per_patch = img[:, ::2, ::2].sum((1, 2))
    assert (per_patch < 1.0).all() and (per_patch > 0).all()
    # attention is not kept after attribution
    assert all(a is None for a in model.attentions) and not model.record_attention


def test_attention_rollout_rejects_other_models():
    with pytest.raises(ConfigError, match="backbone vit"):
        attribution.attribute(_model("cnn", width=8), _images(2, 5), [0, 1],
                              AttributionConfig(method="attention_rollout"))


def test_bad_shapes_are_rejected():
    model = _model("linear")
    with pytest.raises(ValueError, match="targets"):
        attribution.attribute(model, _images(3, 5), [0, 1], AttributionConfig())
    with pytest.raises(ValueError, match="baseline"):
        attribution.attribute(model, _images(2, 5), [0, 1], AttributionConfig(), baseline=torch.zeros(1, 1, 4, 4))
