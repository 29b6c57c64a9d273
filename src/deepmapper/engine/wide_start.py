"""The wide path's start: each pass's penalised logistic-regression fit placed on its pixels."""
from __future__ import annotations

import logging

import numpy as np

from deepmapper.engine.data import PreparedData

log = logging.getLogger("deepmapper.engine.train")   # its lines read as the training's, as before

# Gradient tolerance of the wide path's logistic-regression start. sklearn's default (1e-4)
# leaves the flat directions of a wide, weakly penalised fit far from the optimum.
WIDE_START_TOL = 1e-6


def wide_design(data: PreparedData, cells: np.ndarray, n_pairs: int):
    """(x, shift) of the logistic start on ``cells``: the standardised features (plus the standardised
    pair products when ``n_pairs``); ``shift`` is None for dense (already centred) data, else the
    centring the sparse fit leaves to the intercept."""
    import scipy.sparse as sp

    if data.dense_scaled is not None:
        x = data.dense_scaled[cells]                          # centred: well conditioned, few iterations
        return (np.hstack([x, data.pair_products(x)]) if n_pairs else x), None
    # large sparse data is never densified: fit on x / scale; centring only moves the intercept
    x = sp.csr_matrix(data.X[cells]) @ sp.diags(1.0 / data.scale.astype(np.float64))
    shift = data.mean.astype(np.float64) / data.scale
    if n_pairs:
        cols = np.unique(data.pairs)
        sub = np.zeros((len(cells), data.n_features), np.float32)
        sub[:, cols] = (np.asarray(data.X[cells][:, cols].todense()) - data.mean[cols]) / data.scale[cols]
        x = sp.hstack([x, sp.csr_matrix(data.pair_products(sub))], format="csr")
        shift = np.concatenate([shift, np.zeros(n_pairs)])
    return x, shift


def validation_log_loss(model, x, codes: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(codes, model.predict_proba(x), labels=np.asarray(model.classes_)))


def logistic_wide_start(net, members, data: PreparedData, side: int, *, seed: int, channels: int = 1) -> list[bool]:
    """Set each member's wide path to the penalised logistic-regression fit of that pass's own
    training cells (the baseline's model: C = 1, on the same standardised features), placed on the
    pixels through the member's arrangement. Depends on the pass alone, not its group.

    With the pair channel on, the pass fits twice, with and without the standardised products of the
    placed pairs, and keeps the fit with the lower log-loss on its own validation fold: a pair can
    co-vary differently inside a class (what the screen tests) and still add nothing to prediction
    (pbmc68k_reduced, seed 2: with the products of its 32 within-class pairs always kept, 0.859
    against 0.880 without), so the cells held out from the fit decide. Returns, per member, whether the products were kept."""
    import torch

    from deepmapper.engine.baselines import fit_logistic, softmax_coefficients

    n_pairs = data.n_pairs if channels == 2 else 0
    kept = []
    for k, m in enumerate(members):
        train_cells, val_cells = data.pass_cells(m.pass_index)

        def fit(with_pairs: bool):
            x, shift = wide_design(data, train_cells, n_pairs if with_pairs else 0)
            model, _ = fit_logistic(x, data.codes[train_cells], seed=seed + m.pass_index, tol=WIDE_START_TOL)
            loss = 0.0
            if n_pairs and len(val_cells):
                xv, _ = wide_design(data, val_cells, n_pairs if with_pairs else 0)   # as the fit saw its cells
                loss = validation_log_loss(model, xv, data.codes[val_cells])
            return loss, model, shift

        fits = {wp: fit(wp) for wp in ([True, False] if n_pairs else [False])}
        with_pairs = bool(n_pairs) and fits[True][0] <= fits[False][0]             # ties: keep the products
        _, model, shift = fits[with_pairs]
        kept.append(with_pairs)
        coef, intercept = softmax_coefficients(model, data.n_classes)
        if shift is not None:
            intercept = intercept + coef @ shift
        weight = np.zeros((data.n_classes, channels, side * side), np.float32)
        weight[:, 0, :data.n_features] = coef[:, m.perm]          # pixel i holds feature perm[i]
        if with_pairs:
            weight[:, 1, m.pair_pixels] = coef[:, data.n_features:]
        with torch.no_grad():
            device = net.params["wide.weight"].device
            net.params["wide.weight"][k] = torch.as_tensor(weight.reshape(data.n_classes, -1), device=device)
            net.params["wide.bias"][k] = torch.as_tensor(intercept, dtype=torch.float32, device=device)
    log.info("wide path: logistic-regression start for passes %s%s", [m.pass_index for m in members],
             f"; pair products kept by validation in {sum(kept)} of {len(kept)}" if n_pairs else "")
    return kept
