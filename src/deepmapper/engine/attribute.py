"""Attribution of a trained group of passes: every member's signed per-pixel attributions on a
bounded, stratified sample of held-out cells (the second path beside
:func:`deepmapper.model.attribution.attribute`, batched over the stacked members)."""
from __future__ import annotations

import dataclasses

import numpy as np

from deepmapper.config import Config
from deepmapper.engine.data import PreparedData
from deepmapper.model import transform
from deepmapper.model.imager import Imager
from deepmapper.model.stacked import EVAL_BYTES, chunk_size


def attribute_members(net, g, data: PreparedData, cfg: Config, idx, device) -> np.ndarray:
    """Signed per-pixel attributions of every member on the cells ``idx``: (N, K, channels, side*side).

    Integrated gradients and saliency of a stacked model run for all members in
    one call: the members share no weights, so the gradient of the summed logits
    with respect to member k's image is member k's own gradient, and the result
    equals attributing each member alone. Other methods (and non-stackable
    backbones) go member by member through :func:`attribution.attribute`.
    """
    import torch

    from deepmapper.model import attribution

    K, acfg, C, side, feed = net.k, cfg.attribution, g.channels, g.side, g.feed
    base = baseline_image(data, cfg, g.imager, device)                    # (1, K*C, s, s)
    targets = torch.as_tensor(data.codes[idx], device=device)
    # images per forward: the configured bound, lowered on CPU so that the
    # activations kept for the backward pass stay within EVAL_BYTES
    budget = chunk_size(net.act_elems, K, EVAL_BYTES // 3, device)
    step = max(1, min(acfg.internal_batch_size, budget or acfg.internal_batch_size))
    pixel = np.empty((len(idx), K, C, side * side), np.float32)
    batched = net.stacked and attribution.method_info(acfg.method).stacked
    if not batched:
        modules = [net.member(net.snapshot(k), device) for k in range(K)]
        sub = dataclasses.replace(acfg, internal_batch_size=step)
    for i in range(0, len(idx), step):
        sel = slice(i, i + step)
        images = g.imager(feed(idx[sel]))                                  # (n, K*C, s, s)
        if batched:
            pixel[sel] = attribute_stacked(net, images, targets[sel], base, acfg).reshape(
                images.shape[0], K, C, -1)
        else:
            for k in range(K):
                pixel[sel, k] = attribution.attribute(
                    modules[k], images[:, k * C:(k + 1) * C], targets[sel], sub,
                    baseline=base[:, k * C:(k + 1) * C]).reshape(images.shape[0], C, -1)
    return pixel


def attribute_stacked(net, images, targets, base, acfg):
    """IG or saliency of all K members at once on (N, K*C, s, s) images -> (N, K*C, s, s)."""
    from captum.attr import IntegratedGradients, Saliency

    def forward(x):
        return net.forward(x).sum(0)                                          # (N, C)

    if acfg.method == "saliency":
        grad = Saliency(forward).attribute(images, target=targets, abs=False)
        return (grad * (images - base)).detach().cpu().numpy()
    # one path point of every image per forward (as in attribution.attribute)
    attr = IntegratedGradients(forward).attribute(images, baselines=base.expand_as(images), target=targets,
                                                  n_steps=acfg.n_steps, internal_batch_size=images.shape[0])
    return attr.detach().cpu().numpy()


def attribution_cells(data: PreparedData, cfg: Config) -> np.ndarray:
    """Held-out cells to attribute: all of them, or a stratified sample of ``max_samples``
    drawn from the run seed (the same cells in every pass, so passes are comparable)."""
    test = data.split.test
    cap = cfg.attribution.max_samples
    if len(test) <= cap:
        return test
    rng = np.random.default_rng([cfg.run.seed, 104729])
    codes = data.codes[test]
    chosen = []
    for c in np.unique(codes):
        members = test[codes == c]
        n = max(1, int(round(cap * len(members) / len(test))))
        chosen.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))[: max(cap, len(np.unique(codes)))]


def baseline_image(data: PreparedData, cfg: Config, imager: Imager, device):
    """(1, K*channels, side, side) reference images of the members for path attribution methods:
    the training-mean features (pair channel 0, the mean of a standardised product), or zeros."""
    import torch

    side = transform.square_side(data.n_features)
    if cfg.attribution.baseline == "zeros":
        return torch.zeros(1, imager.k * imager.channels, side, side, device=device)
    mean = torch.as_tensor(data.train_mean_features()[None], device=device)
    return imager(mean, products=False)
