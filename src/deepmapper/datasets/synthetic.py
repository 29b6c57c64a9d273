"""Data with a planted truth, for recall tests and benchmarks (numpy only, seeded).

:func:`planted` draws count data from a Poisson-lognormal model (overdispersed like
a negative binomial, with realistic zeros), then normalises it as ingest would
(``normalize_total(1e4)`` + ``log1p``). Per cell ``c`` and gene ``g``::

    count ~ Poisson(size_c * mu_g * exp(sigma * z_gc - sigma^2 / 2 + shift_gc))

with ``z_gc ~ N(0, 1)`` and a class-independent library size ``size_c``.

- *marginal* genes: ``shift = effect`` in the cells of one class (assigned round-robin,
  balanced by expression so every class gains about the same total);
- *combo* genes, in pairs ``(a, b)``: ``z_b = rho * z_a + sqrt(1 - rho^2) * e``, with
  ``rho = -correlation`` in the pair's class and ``+correlation`` in the others. Each
  gene of a pair has the *same* distribution in every class (no shift in mean,
  variance or any other marginal statistic): only the pair, read together,
  separates the classes;
- every other gene is noise.

Planted genes are drawn at random positions among the better-expressed half of the
genes (so they carry enough counts to be found), under neutral names ``g0000`` ...

:func:`sparse_matrix` builds large sparse count-like CSR matrices (with marker
features per class) for scale benchmarks, row block by row block, never dense.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

LABEL_KEY = "label"
SIGMA = 0.8          # gene-level biological variability (log scale)
SIZE_SD = 0.3        # library-size variability (log scale)


def _class_names(n_classes: int) -> list[str]:
    return [f"class_{k}" for k in range(n_classes)]


def _balanced_labels(rng, n_cells: int, n_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n_cells) % n_classes)


def _base_level(sparsity: float, sigma_mu: float = 1.0) -> float:
    """Median gene mean (counts per cell at unit library size) giving about ``sparsity`` zeros overall."""
    grid = np.random.default_rng(12345)
    log_mu = grid.normal(0.0, sigma_mu, 4000)
    z = grid.normal(0.0, 1.0, 4000)
    size = np.exp(grid.normal(0.0, SIZE_SD, 4000) - SIZE_SD ** 2 / 2)
    rate_unit = np.exp(log_mu + SIGMA * z - SIGMA ** 2 / 2) * size

    def zeros(level):
        return float(np.mean(np.exp(-level * rate_unit)))

    lo, hi = 1e-4, 1e4
    for _ in range(80):  # bisection in log space; zeros() decreases with the level
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if zeros(mid) > sparsity else (lo, mid)
    return float(np.sqrt(lo * hi))


PAIR_SHAPES = ("flip", "and", "sum")


def planted(n_cells: int = 600, n_features: int = 2000, *, n_marginal: int = 20, n_combo: int = 20,
            n_classes: int = 2, seed: int = 0, effect: float = 1.0, correlation: float = 0.9,
            sparsity: float = 0.6, pair_shape: str = "flip", pair_effect: float = 1.5):
    """(AnnData dataset, truth) with ``truth = {"marginal": [...], "combo": [...], "combo_pairs": [...]}``.

    ``effect``: log-scale mean shift of a marginal gene in its class; ``correlation``:
    latent correlation of a combo pair (its sign flips in the pair's class);
    ``sparsity``: target fraction of zero counts over the whole matrix.

    ``pair_shape``: how a pair carries its class (the pair's class ``k``):

    - ``flip`` (default): latent correlation ``+correlation`` in the other classes, ``-correlation``
      in class ``k``; each gene alone has the same distribution in every class;
    - ``and``: co-activation. Each gene of the pair is "on" (log shift ``pair_effect``) in a third
      of the cells of every class; in class ``k`` both are on together or both off, in the other
      classes at most one is on. Each gene alone still has the same distribution in every class;
    - ``sum``: a threshold on the pair's sum. In class ``k`` the latent values satisfy
      ``z_a + z_b > 0`` (drawn from the standard normal restricted to that half-plane); elsewhere
      they are unrestricted. Each gene alone shifts a little in class ``k`` (mean 0.56 latent
      units), the pair's sum a lot.
    """
    from deepmapper.io import build_dataset, normalize_log1p

    if n_classes < 2:
        raise ValueError("n_classes must be >= 2")
    if n_combo % 2:
        raise ValueError("n_combo must be even (combo genes come in pairs)")
    if n_marginal + n_combo > n_features // 2:
        raise ValueError("n_marginal + n_combo must be at most half of n_features")
    if pair_shape not in PAIR_SHAPES:
        raise ValueError(f"pair_shape must be one of {PAIR_SHAPES}")
    if not 0.0 < sparsity < 1.0 or not 0.0 <= correlation < 1.0:
        raise ValueError("sparsity must lie in (0, 1) and correlation in [0, 1)")
    rng = np.random.default_rng([int(seed), 20240])

    codes = _balanced_labels(rng, n_cells, n_classes)
    log_mu = rng.normal(0.0, 1.0, n_features) + np.log(_base_level(sparsity))
    # planted genes: random positions among the better-expressed half
    upper = np.flatnonzero(log_mu >= np.median(log_mu))
    chosen = rng.choice(upper, size=n_marginal + n_combo, replace=False)
    marginal, combo = chosen[:n_marginal], chosen[n_marginal:]

    z = rng.standard_normal((n_cells, n_features))
    shift = np.zeros((n_cells, n_features))
    # marginal genes sorted by expression and dealt round-robin: each class gains about the same total
    marginal_sorted = marginal[np.argsort(log_mu[marginal])]
    marginal_class = {}
    for i, g in enumerate(marginal_sorted):
        k = i % n_classes
        marginal_class[int(g)] = k
        shift[codes == k, g] = effect
    pairs = combo.reshape(-1, 2)
    pair_class = {}
    for j, (a, b) in enumerate(pairs):
        k = j % n_classes
        pair_class[j] = k
        own = codes == k
        if pair_shape == "flip":
            rho = np.where(own, -correlation, correlation)
            z[:, b] = rho * z[:, a] + np.sqrt(1.0 - rho ** 2) * z[:, b]
        elif pair_shape == "and":
            state = rng.integers(0, 3, n_cells)           # others: a on, b on, or neither (1/3 each)
            a_on, b_on = state == 0, state == 1
            both = rng.random(n_cells) < 1.0 / 3.0        # class k: both on (1/3) or neither
            a_on = np.where(own, both, a_on)
            b_on = np.where(own, both, b_on)
            shift[:, a] += pair_effect * a_on
            shift[:, b] += pair_effect * b_on
        else:  # sum: class k keeps z_a + z_b > 0 (a reflection through the origin keeps N(0, I))
            flip = own & (z[:, a] + z[:, b] < 0)
            z[flip, a] *= -1.0
            z[flip, b] *= -1.0
    size = np.exp(rng.normal(0.0, SIZE_SD, n_cells) - SIZE_SD ** 2 / 2)
    rate = size[:, None] * np.exp(log_mu[None, :] + SIGMA * z - SIGMA ** 2 / 2 + shift)
    counts = rng.poisson(rate).astype(np.float32)
    X = normalize_log1p(counts)

    names = np.array([f"g{i:0{max(4, len(str(n_features - 1)))}d}" for i in range(n_features)])
    classes = _class_names(n_classes)
    params = {"kind": "planted", "n_cells": n_cells, "n_features": n_features, "n_marginal": n_marginal,
              "n_combo": n_combo, "n_classes": n_classes, "seed": seed, "effect": effect,
              "correlation": correlation, "sparsity": sparsity}
    if pair_shape != "flip":   # the default keeps its former source string (and checksum)
        params.update(pair_shape=pair_shape, pair_effect=pair_effect)
    adata = build_dataset(X, [f"cell{i:05d}" for i in range(n_cells)], names,
                          np.asarray(classes, dtype=object)[codes], label_key=LABEL_KEY,
                          source="synthetic:" + json.dumps(params, sort_keys=True),
                          source_sha256=hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest(),
                          matrix="counts", normalized=True, min_class_size=3)
    truth = {
        "marginal": [str(names[g]) for g in sorted(marginal)],
        "combo": [str(names[g]) for g in sorted(combo)],
        "combo_pairs": [[str(names[a]), str(names[b])] for a, b in pairs],
        "marginal_class": {str(names[g]): classes[k] for g, k in sorted(marginal_class.items())},
        "pair_class": [classes[pair_class[j]] for j in range(len(pairs))],
        "zero_fraction": float(np.mean(counts == 0)),
    }
    adata.uns["planted"] = {"marginal": truth["marginal"], "combo": truth["combo"]}
    return adata, truth


def sparse_matrix(n_cells: int, n_features: int, density: float, seed: int = 0, n_classes: int = 2, *,
                  n_markers: int = 50, marker_boost: float = 0.25, block_nnz: int = 4_000_000):
    """(CSR float32 cells x features, labels array of str) with about ``density`` non-zeros.

    The background pattern is an exact Bernoulli(density) mask drawn as geometric
    gaps over the flattened rows of one block at a time (no dense array, no
    duplicate indices, already sorted); values are ``1 + Geometric(1/2)`` (1, 2, 3,
    ...; mean 2). Each class has ``n_markers`` marker features: in the cells of
    their class they are detected more often (extra Bernoulli(``marker_boost``)
    presence) and their values are tripled, so a classifier has something to find;
    this adds about ``n_markers * marker_boost`` non-zeros per cell to the background
    density (``marker_boost=0`` gives exactly Bernoulli(``density``)).
    """
    import scipy.sparse as sp

    if not 0.0 < density <= 1.0:
        raise ValueError("density must lie in (0, 1]")
    if n_classes < 2 or n_cells < n_classes or n_features < 1:
        raise ValueError("need n_classes >= 2, n_cells >= n_classes and n_features >= 1")
    rng = np.random.default_rng([int(seed), 31337])
    codes = _balanced_labels(rng, n_cells, n_classes)
    marker_of = np.full(n_features, -1, dtype=np.int8 if n_classes < 127 else np.int64)
    n_mark = min(n_markers * n_classes, n_features)
    marks = rng.choice(n_features, size=n_mark, replace=False)
    marker_of[marks] = np.arange(n_mark) % n_classes
    cols_of = [np.sort(marks[k::n_classes]).astype(np.int64) for k in range(n_classes)]

    rows_per_block = max(1, int(block_nnz / max(1.0, density * n_features)))
    data_parts, index_parts, row_counts = [], [], np.zeros(n_cells, dtype=np.int64)
    for start in range(0, n_cells, rows_per_block):
        rows = min(rows_per_block, n_cells - start)
        pos = _bernoulli_positions(rng, rows * n_features, density)
        pos = _add_marker_presence(rng, pos, codes[start:start + rows], cols_of, n_features, marker_boost)
        r = pos // n_features
        pos -= r * n_features
        c = pos.astype(np.int32)
        del pos
        # 1 + Geometric(1/2) on {0, 1, ...} (mean 2), drawn as floor(Exp / ln 2): exact and fast
        vals = rng.standard_exponential(c.size, dtype=np.float32)
        vals *= np.float32(1.0 / np.log(2.0))
        np.floor(vals, out=vals)
        vals += 1.0
        hit = np.flatnonzero(marker_of[c] >= 0)  # few: markers are a handful of columns
        hit = hit[marker_of[c[hit]] == codes[start + r[hit]]]
        vals[hit] *= 3.0
        row_counts[start:start + rows] = np.bincount(r, minlength=rows)
        data_parts.append(vals)
        index_parts.append(c)
    indptr = np.concatenate([[0], np.cumsum(row_counts)])
    idx_dtype = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    X = sp.csr_matrix((np.concatenate(data_parts), np.concatenate(index_parts).astype(idx_dtype, copy=False),
                       indptr.astype(idx_dtype)), shape=(n_cells, n_features))
    X.has_sorted_indices = True
    return X, np.asarray(_class_names(n_classes), dtype=object)[codes]


def _add_marker_presence(rng, pos, block_codes, cols_of, n_features, p):
    """Merge extra own-class marker positions into the sorted flat positions of a block (O(n), stays sorted)."""
    if p <= 0:
        return pos
    extra = []
    for k, cols in enumerate(cols_of):
        rk = np.flatnonzero(block_codes == k)
        if rk.size and cols.size:
            rr, cc = np.nonzero(rng.random((rk.size, cols.size)) < p)
            extra.append(rk[rr] * n_features + cols[cc])
    if not extra:
        return pos
    extra = np.sort(np.concatenate(extra))
    at = np.searchsorted(pos, extra)
    present = (at < pos.size) & (pos[np.minimum(at, max(pos.size - 1, 0))] == extra) if pos.size else \
        np.zeros(extra.size, bool)
    return np.insert(pos, at[~present], extra[~present])


def _bernoulli_positions(rng, span: int, p: float) -> np.ndarray:
    """Sorted positions in ``0..span-1``, each present independently with probability ``p``."""
    if p >= 1.0:
        return np.arange(span, dtype=np.int64)
    scale = np.float32(1.0 / -np.log1p(-p))
    out, last = [], -1
    while True:
        expect = (span - last) * p
        m = int(expect + 6 * np.sqrt(expect) + 16)
        # Geometric(p) gaps on {1, 2, ...} as 1 + floor(Exp / -log(1 - p)): exact, much faster than rng.geometric
        e = rng.standard_exponential(m, dtype=np.float32)
        e *= scale
        np.floor(e, out=e)
        pos = e.astype(np.int64)
        pos += 1
        np.cumsum(pos, out=pos)
        pos += last
        n_keep = int(np.searchsorted(pos, span))
        out.append(pos[:n_keep])
        if n_keep < m:
            return np.concatenate(out) if len(out) > 1 else out[0]
        last = int(pos[-1])
