"""The pair screen: gene pairs whose co-variation differs between classes.

For every class ``c`` (one test when there are two classes) and every pair of
screened features ``(i, j)``: the Welch t statistic of the mean of
``z_i * z_j`` in class ``c`` against the rest, where ``z`` is the feature
**standardised within each class** (centred and scaled on that class's own
cells; the rest pools those within-class values). By default (``statistic =
"rank"``) ``z`` is first replaced, within each class, by the normal scores of
its ranks (ties averaged), so the mean of ``z_i z_j`` over a class is a rank
(normal-scores) correlation of the pair inside the class; with ``"value"`` it is
the Pearson correlation of the values. Ranks matter for counts: many tied zeros
and a few large values make a product of raw values heavy-tailed (measured on
planted co-activated pairs, 1,000 cells: true-pair |t| 4.8-5.5 with values,
5.4-6.6 with ranks, against permutation maxima of 4.7-5.5 for both). Either
way the test asks "is the pair correlated differently in this class?", and two marginal
markers of a class (one up, one down) make no pair: standardised over all cells
instead, their product's mean shifts with the class although neither depends
on the other (measured on pbmc68k_reduced: thousands of such marker x marker
pairs above the permutation maximum; none within classes).

Which cells: the run's non-held-out cells (training and validation folds, never
the held-out test cells), so one screen serves every pass of a run; at most
``max_cells`` of them, a stratified sample drawn from the run seed.

Which features (label-free): non-zero in at least ``min_detected`` of the
screened cells (features seen in a handful of cells make spurious pairs), then
the ``max_features`` most variable.

How: per labelling, the class sums ``M1_c = Z_c^T Z_c`` and
``M2_c = (Z_c^2)^T (Z_c^2)`` (sum and sum of squares of the products of all
pairs) as matrix products, blocked over features: block pairs ``(I, J)`` with
``I <= J`` of at most ``block`` columns each, so memory is bounded by a few
``(n_classes, block, block)`` arrays and the screened columns, whatever the
number of features; sparse input is densified one column block at a time, and
only when the screened columns as a whole would not fit ``DENSE_LIMIT_BYTES``.
torch on the run's device (cuda when present), float32.

Calibration: the training labels are permuted ``permutations`` times (seeded);
each permutation is re-standardised within its permuted classes and screened
like the data. Each tested class's null |t| is kept as a fine histogram (memory
stays bounded) and gives that class's scale, the 99th percentile of its null:
a small class has heavy-tailed statistics (6 cells often correlate near +-1), and
dividing by its own null scale (``scaled_score``) puts every class on one footing.
``p_fwer`` (family-wise adjusted) is the share of permutations whose largest
scaled statistic over all pairs and classes reaches the pair's; ``p_value`` is
the pair's tail probability in the pooled null of every class's scaled
statistics over all permutations (counted conservatively, the histogram bin
holding the value included); ``q_value`` is Benjamini-Hochberg over every tested
pair and class. Classes with fewer than ``MIN_TEST_CELLS`` screened cells (or
rests that small) are not tested, and a pair is tested for a class only when both
genes vary there (non-zero in at least ``min_detected`` of the class's cells): a
gene that is off in a class has no co-variation in it to compare. Only the
``keep`` best pairs are listed; their q is computed from the full count of
tests and is at least the exact BH q (conservative).

The smallest p-value is ``1 / (1 + permutations x tests)``, so a pair can pass
``q < alpha`` only with at least ``1 / alpha`` permutations (config validation
says so). With 20 permutations and no planted pair a run reports a pair about
1 time in 21: the observed maximum must exceed the maximum of every
permutation.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

COLUMNS = ("feature_a", "feature_b", "class", "score", "scaled_score", "p_value", "p_fwer", "q_value", "corr_in_class",
           "corr_rest", "n_class", "n_rest")
# Screened columns kept dense when they fit (bytes); above, column blocks are densified on demand.
DENSE_LIMIT_BYTES = 1024 * 1024 * 1024
# Bytes of the per-class block sums (2 x classes x block^2 float32): bounds the block size.
BLOCK_BYTES = 256 * 1024 * 1024
MAX_BLOCK = 2048
HIST_WIDTH = 0.005         # null histogram bin width (|t| units)
HIST_MAX = 200.0           # |t| above this lands in the last bin
KEEP = 2000                # best pairs listed in interactions.tsv
RANK_CHUNK = 4 << 20       # elements per chunk of the within-class ranking (its temporaries are ~6x this)
MIN_TEST_CELLS = 10        # a class (and its rest) needs this many screened cells to be tested


@dataclass
class ScreenResult:
    table: object                       # pandas DataFrame, COLUMNS, best first
    features: list[str]                 # the screened features
    n_tests: int
    n_cells: int
    permutations: int
    null_max: list[float] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""                      # why no pair could be calibrated (too few samples), else ""

    def summary(self) -> dict:
        return {"n_features_screened": len(self.features), "n_tests": int(self.n_tests),
                "n_cells": int(self.n_cells), "permutations": int(self.permutations),
                "null_max": [round(float(v), 4) for v in self.null_max], "note": self.note}


def sample_calibration(sample_labels: np.ndarray, q_threshold: float, blocks: np.ndarray | None = None) -> str:
    """'' when labels moved between whole samples (within donors, ``blocks`` given: a paired design)
    can calibrate a q below ``q_threshold``; else the sentence that says why not (the distinct
    relabellings other than the observed one are fewer than 1 / q_threshold, so no permutation p
    value can fall below it)."""
    from deepmapper.engine.samples import n_relabellings

    total = n_relabellings(sample_labels, blocks)
    need = int(np.ceil(1.0 / q_threshold - 1e-9))
    if total - 1 >= need:
        return ""
    counts = np.bincount(np.asarray(sample_labels, np.int64))
    design = (f"{' + '.join(str(int(c)) for c in counts if c)} samples" if blocks is None else
              f"{len(np.unique(blocks))} donors of a paired design")
    return (f"no pair screen calibration is possible with {design}: only {total - 1} distinct relabellings of "
            f"whole samples{'' if blocks is None else ' within donors'} besides the observed one, and q < "
            f"{q_threshold:g} needs {need}; no pair is reported (add {'samples' if blocks is None else 'donors'})")


# -- selecting cells and features ---------------------------------------------------------

def screened_samples(samples: np.ndarray, test: np.ndarray, n_samples: int) -> np.ndarray:
    """(n_samples,) bool: the samples the screen sees, those with cells outside the held-out set
    (:func:`screen_cells`); its calibration counts the relabellings of these."""
    keep = np.ones(len(samples), bool)
    keep[np.asarray(test, dtype=np.int64)] = False
    out = np.zeros(n_samples, bool)
    out[np.unique(np.asarray(samples, np.int64)[keep])] = True
    return out


def screen_cells(codes: np.ndarray, test: np.ndarray, max_cells: int, seed: int) -> np.ndarray:
    """Sorted non-held-out cells, at most ``max_cells`` of them (stratified, from the run seed)."""
    codes = np.asarray(codes)
    keep = np.ones(len(codes), bool)
    keep[np.asarray(test, dtype=np.int64)] = False
    from deepmapper.engine.split import stratified_subsample

    return stratified_subsample(np.flatnonzero(keep), codes, max_cells, [int(seed), 7919], min_per_class=2)


def prefilter(X, min_detected: float, max_features: int) -> np.ndarray:
    """Label-free: indices (sorted) of the features detected in >= ``min_detected`` of the rows,
    the ``max_features`` most variable of them (ties by index)."""
    n, p = X.shape
    if hasattr(X, "tocsc"):
        Xc = X.tocsc()
        Xc.sum_duplicates()
        nz = np.diff(Xc.indptr).astype(np.float64) - np.bincount(
            np.repeat(np.arange(p), np.diff(Xc.indptr))[Xc.data == 0], minlength=p)
        col = np.repeat(np.arange(p), np.diff(Xc.indptr))
        vals = Xc.data.astype(np.float64)
        s1 = np.bincount(col, weights=vals, minlength=p)
        s2 = np.bincount(col, weights=vals * vals, minlength=p)
    else:
        X = np.asarray(X)
        nz = np.zeros(p)
        s1, s2 = np.zeros(p), np.zeros(p)
        step = max(1, (32 << 20) // (8 * max(1, p)))
        for i in range(0, n, step):
            b = np.asarray(X[i:i + step], dtype=np.float64)
            nz += (b != 0).sum(0)
            s1 += b.sum(0)
            s2 += (b * b).sum(0)
    var = s2 / max(n, 1) - (s1 / max(n, 1)) ** 2
    ok = np.flatnonzero((nz >= min_detected * n) & (var > 1e-12) & (nz >= 3))
    if len(ok) > max_features:
        order = np.lexsort((ok, -var[ok]))[:max_features]
        ok = np.sort(ok[order])
    return ok


# -- the screen ----------------------------------------------------------------------------

class _Columns:
    """Dense float32 column blocks of the screened matrix (rows = screened cells), on a device."""

    def __init__(self, X, device):
        import torch

        self.device = device
        self.n, self.p = X.shape
        self.sparse = hasattr(X, "tocsc")
        self.dense = None
        if not self.sparse or self.n * self.p * 4 <= DENSE_LIMIT_BYTES:
            arr = X.toarray() if self.sparse else np.asarray(X)
            self.dense = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32), device=device)
        else:
            self.csc = X.tocsc()

    def block(self, cols: slice):
        import torch

        if self.dense is not None:
            return self.dense[:, cols]
        arr = self.csc[:, cols].toarray().astype(np.float32, copy=False)
        return torch.as_tensor(arr, device=self.device)


def _class_stats(cols: _Columns, codes_t, n_classes: int, blocks):
    """Per class mean and population std of every screened column: two (C, p) tensors."""
    import torch

    onehot = torch.zeros(n_classes, cols.n, device=cols.device)
    onehot[codes_t, torch.arange(cols.n, device=cols.device)] = 1.0
    counts = onehot.sum(1, keepdim=True).clamp_min(1.0)
    mean = torch.empty(n_classes, cols.p, device=cols.device)
    std = torch.empty(n_classes, cols.p, device=cols.device)
    detected = torch.empty(n_classes, cols.p, device=cols.device)
    for b in blocks:
        x = cols.block(b).double()
        m = (onehot.double() @ x) / counts.double()
        sq = (onehot.double() @ (x * x)) / counts.double()
        mean[:, b] = m.float()
        std[:, b] = torch.sqrt((sq - m * m).clamp_min(0.0)).float()
        detected[:, b] = ((onehot.double() @ (x != 0).double()) / counts.double()).float()
    return mean, std, detected


def _standardised(cols: _Columns, b: slice, codes_t, mean, std):
    x = cols.block(b)
    s = std[:, b][codes_t]
    z = (x - mean[:, b][codes_t]) / torch_where_pos(s)
    return z * (s > 1e-8)


def _within_class_scores(x_sorted, bounds):
    """Normal scores of the within-class mid-ranks (ties averaged), standardised within each class.

    ``x_sorted``: (n, b) values with rows sorted by class, class ``c`` in rows ``bounds[c]:bounds[c+1]``.
    Ranks make the screen robust to what single-cell counts are: many tied zeros and a few very
    large values, where a product of raw values is dominated by a handful of cells."""
    import torch

    out = torch.zeros_like(x_sorted)
    for c in range(len(bounds) - 1):
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        if hi - lo < 2:
            continue
        m = hi - lo
        step = max(1, RANK_CHUNK // m)                     # columns per chunk: bounded temporaries
        for s in range(0, x_sorted.shape[1], step):
            v = x_sorted[lo:hi, s:s + step]
            ns = torch.special.ndtri((_mid_ranks(v) - 0.5) / m)
            sd = ns.std(dim=0, unbiased=False, keepdim=True)
            out[lo:hi, s:s + step] = (ns - ns.mean(dim=0, keepdim=True)) / torch_where_pos(sd) * (sd > 1e-8)
    return out


def _mid_ranks(v):
    """1-based ranks of every column of ``v`` (m, b), tied values sharing their mean rank."""
    import torch

    m, b = v.shape
    sv, idx = torch.sort(v, dim=0, stable=True)
    new = torch.ones_like(sv, dtype=torch.bool)
    new[1:] = sv[1:] != sv[:-1]
    group = (torch.cumsum(new, dim=0) - 1) + torch.arange(b, device=v.device)[None, :] * m   # unique per column
    pos = torch.arange(m, device=v.device, dtype=v.dtype)[:, None].expand(m, b).reshape(-1)
    flat = group.reshape(-1)
    first = torch.full((m * b,), float(m), device=v.device, dtype=v.dtype).scatter_reduce(0, flat, pos, "amin")
    last = torch.zeros(m * b, device=v.device, dtype=v.dtype).scatter_reduce(0, flat, pos, "amax")
    mid = ((first[flat] + last[flat]) / 2.0 + 1.0).reshape(m, b)
    return torch.empty_like(mid).scatter_(0, idx, mid)


def torch_where_pos(s):
    import torch

    return torch.where(s > 1e-8, s, torch.ones_like(s))


def _screen_labelling(cols: _Columns, codes: np.ndarray, n_classes: int, tested: list[int], block: int,
                      on_block, min_detected: float = 0.0, statistic: str = "rank"):
    """Run the screen for one labelling; ``on_block(I, J, t)`` gets (len(tested), bI, bJ) t statistics
    for the block pair (upper triangle only when I == J, other entries 0)."""
    import torch

    device = cols.device
    codes_t = torch.as_tensor(codes, device=device)
    blocks = [slice(s, min(s + block, cols.p)) for s in range(0, cols.p, block)]
    mean, std, detected = _class_stats(cols, codes_t, n_classes, blocks)
    # a pair is tested for class c only when both genes vary in c (detected in at least min_detected
    # of its cells): a gene that is off in a class has no co-variation there to compare
    in_class = (detected >= max(min_detected, 1e-12)) & (std > 1e-8)
    order = torch.as_tensor(np.argsort(codes, kind="stable"), device=device)
    counts = np.bincount(codes, minlength=n_classes)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    sorted_codes = codes_t[order]
    n_total = float(len(codes))
    cache = {}

    def z_block(bi):
        if bi not in cache:
            if len(cache) > 1:
                cache.pop(next(iter(cache)))
            if statistic == "rank":
                z = _within_class_scores(cols.block(blocks[bi])[order], bounds)
            else:
                z = _standardised(cols, blocks[bi], codes_t, mean, std)[order]
            cache[bi] = (z, z * z)
        return cache[bi]

    for bi in range(len(blocks)):
        for bj in range(bi, len(blocks)):
            za, za2 = z_block(bi)
            zb, zb2 = z_block(bj)
            m1 = torch.zeros(n_classes, za.shape[1], zb.shape[1], device=device)
            m2 = torch.zeros_like(m1)
            for c in range(n_classes):
                lo, hi = int(bounds[c]), int(bounds[c + 1])
                if hi > lo:
                    m1[c] = za[lo:hi].T @ zb[lo:hi]
                    m2[c] = za2[lo:hi].T @ zb2[lo:hi]
            t1, t2 = m1.sum(0), m2.sum(0)
            out = torch.zeros(len(tested), za.shape[1], zb.shape[1], device=device)
            for k, c in enumerate(tested):
                nc, nr = float(counts[c]), n_total - float(counts[c])
                if nc < 2 or nr < 2:
                    continue
                mc, mr = m1[c] / nc, (t1 - m1[c]) / nr
                vc = (m2[c] - nc * mc * mc).clamp_min(0.0) / (nc - 1.0)
                vr = (t2 - m2[c] - nr * mr * mr).clamp_min(0.0) / (nr - 1.0)
                se = torch.sqrt(vc / nc + vr / nr)
                out[k] = torch.where(se > 1e-12, (mc - mr) / torch.where(se > 1e-12, se, torch.ones_like(se)),
                                     torch.zeros_like(se))
                out[k] *= in_class[c, blocks[bi]][:, None] & in_class[c, blocks[bj]][None, :]
            if bi == bj:
                out = torch.triu(out, diagonal=1)
            on_block(blocks[bi], blocks[bj], out, (m1, t1))
    del sorted_codes


def _block_size(p: int, n_classes: int) -> int:
    b = int(math.sqrt(BLOCK_BYTES / (4.0 * 3 * (n_classes + 1))))
    return max(16, min(MAX_BLOCK, p, b))


def screen(X, codes: np.ndarray, classes: list[str], feature_names: list[str], *, cells: np.ndarray,
           cfg, seed: int = 0, device=None, progress: bool = True, keep: int = KEEP,
           samples: np.ndarray | None = None, blocks: np.ndarray | None = None) -> ScreenResult:
    """The pair screen on the rows ``cells`` of ``X`` (cells x features, dense or CSR).

    ``cfg``: :class:`deepmapper.config.InteractionConfig`. Returns the best ``keep`` pairs
    (all classes together) with their statistics; see the module docstring.

    ``samples`` (sample code per cell, with a sample key): the permutations move labels between
    whole samples (:func:`deepmapper.engine.samples.relabellings`: enumerated when few), and a pair's
    ``q_value`` is at least its family-wise ``p_fwer``: cells of one donor co-vary, so pairs are
    not exchangeable and only the permutation maximum is a valid reference. With too few samples
    for any calibration nothing is screened and ``note`` says so. ``blocks`` (the donor of each
    sample code, a paired design): labels are swapped only within a donor.
    """
    import pandas as pd
    import torch

    from deepmapper._utils.progress import Progress

    t0 = time.perf_counter()
    if device is None:   # a direct library call; the steps hand over device.setup's choice
        from deepmapper.device import select_device

        device = select_device("auto")
    cells = np.asarray(cells, dtype=np.int64)
    codes_all = np.asarray(codes, dtype=np.int64)
    Xs = X[cells]
    codes_s = codes_all[cells]
    n_classes = len(classes)
    present = np.unique(codes_s)
    sel = prefilter(Xs, cfg.min_detected, cfg.max_features)
    counts = np.bincount(codes_s, minlength=n_classes)
    big = [int(c) for c in present if counts[c] >= MIN_TEST_CELLS and len(codes_s) - counts[c] >= MIN_TEST_CELLS]
    tested = big[:1] if len(present) == 2 else big
    names = [str(feature_names[j]) for j in sel]
    p = len(sel)
    n_tests = len(tested) * p * (p - 1) // 2
    empty = pd.DataFrame({c: [] for c in COLUMNS})
    if p < 2 or len(present) < 2 or not tested:
        log.info("interaction screen: %d features pass the detection filter; nothing to test", p)
        return ScreenResult(empty, names, 0, len(cells), cfg.permutations, [], time.perf_counter() - t0)
    cols = _Columns(Xs[:, sel] if hasattr(Xs, "tocsc") else np.asarray(Xs)[:, sel], device)
    block = _block_size(p, n_classes)
    n_bins = int(HIST_MAX / HIST_WIDTH) + 1
    T = len(tested)
    from deepmapper.device import float64_device

    # per tested class; float64 counts (exact past 2^24), on the CPU where the device has none (MPS)
    hist = torch.zeros(T, n_bins, dtype=torch.float64, device=float64_device(device))
    upper = torch.triu_indices(block, block, 1, device=device)

    def null(bI, bJ, t, sums):
        score = t.abs()
        if bI == bJ:   # the lower triangle and diagonal are structural zeros, not statistics
            n = t.shape[1]
            iu = upper[:, (upper[0] < n) & (upper[1] < n)]
            score = score[:, iu[0], iu[1]]
        score = score.reshape(T, -1)
        bins = (score / HIST_WIDTH).long().clamp_max(n_bins - 1)
        bins = bins.to(hist.device)
        hist.scatter_add_(1, bins, torch.ones_like(bins, dtype=torch.float64))
        if score.shape[1]:
            current[:] = np.maximum(current, score.max(dim=1).values.cpu().numpy())

    # 1. the permutations first: each tested class's null distribution, and so its scale
    rng = np.random.default_rng([int(seed), 15485863])
    relabelled = None
    if samples is not None:     # labels move between whole samples (a sample keeps one label)
        from deepmapper.engine.samples import relabellings
        from deepmapper.engine.split import sample_labels

        s_ids, s_cells = np.unique(np.asarray(samples, np.int64)[cells], return_inverse=True)
        s_lab = sample_labels(codes_s, s_cells, len(s_ids))
        s_blocks = None if blocks is None else np.asarray(blocks, np.int64)[s_ids]
        note = sample_calibration(s_lab, cfg.q_threshold, s_blocks)
        if note:
            log.warning("interaction screen: %s", note)
            return ScreenResult(empty, names, 0, len(cells), 0, [], time.perf_counter() - t0, note=note)
        relabelled = relabellings(s_lab, cfg.permutations, seed, s_blocks)
    bar = Progress(cfg.permutations + 1, "interaction screen", "labelling", enabled=progress)
    null_max = []
    for r in range(cfg.permutations if relabelled is None else len(relabelled)):
        current = np.zeros(T)
        permuted = rng.permutation(codes_s) if relabelled is None else relabelled[r][s_cells]
        _screen_labelling(cols, permuted, n_classes, tested, block, null, cfg.min_detected,
                          cfg.statistic)
        null_max.append(current.copy())
        bar.update(1)
    hist_np = hist.cpu().numpy()
    tail = np.flip(np.cumsum(np.flip(hist_np, 1), 1), 1)          # (T, bins): null values >= bin start
    n_null = float(hist_np.sum())
    # Per-class scale: the 99th percentile of the class's null |t|. A small class has heavy-tailed
    # statistics (a correlation of 6 cells is often near +-1); dividing by its own null scale
    # puts every class on one footing before the pooled null and the family-wise maximum.
    scale = np.ones(T)
    for k in range(T):
        total = tail[k, 0]
        if total > 0:
            at = int(np.searchsorted(-tail[k], -0.01 * total, side="right"))
            scale[k] = max(HIST_WIDTH, (at + 1) * HIST_WIDTH)
    scale_t = torch.as_tensor(scale, dtype=torch.float32, device=device)
    cand_rows = []

    def observe(bI, bJ, t, sums):
        score = t.abs() / scale_t[:, None, None]
        flat = score.reshape(-1)
        take = min(keep, int((flat > 0).sum()))
        if take == 0:
            return
        val, idx = torch.topk(flat, take)
        idx = idx.cpu().numpy()
        k, rem = np.divmod(idx, score.shape[1] * score.shape[2])
        i, j = np.divmod(rem, score.shape[2])
        m1, t1 = sums
        c_idx = np.asarray(tested)[k]
        ct = torch.as_tensor(c_idx, device=t.device)
        kt, it, jt = (torch.as_tensor(v, device=t.device) for v in (k, i, j))
        within = m1[ct, it, jt].double().cpu().numpy()
        total = t1[it, jt].double().cpu().numpy()
        counts = np.bincount(codes_s, minlength=n_classes).astype(np.float64)
        in_c = within / np.maximum(counts[c_idx], 1.0)
        rest = (total - within) / np.maximum(len(codes_s) - counts[c_idx], 1.0)
        raw = t[kt, it, jt].double().cpu().numpy()
        cand_rows.append((val.cpu().numpy().astype(np.float64), c_idx, i + bI.start, j + bJ.start, in_c, rest,
                          raw))
        if sum(len(r[0]) for r in cand_rows) > 4 * keep:
            _prune(cand_rows, keep)

    # 2. the data
    _screen_labelling(cols, codes_s, n_classes, tested, block, observe, cfg.min_detected, cfg.statistic)
    bar.update(1)
    bar.close()
    _prune(cand_rows, keep)
    nm = np.max(np.asarray(null_max).reshape(-1, T) / scale[None, :], axis=1) if null_max else np.zeros(0)
    if not cand_rows:
        return ScreenResult(empty, names, n_tests, len(cells), cfg.permutations, list(nm),
                            time.perf_counter() - t0)
    scaled, c_idx, i, j, in_c, rest, raw = cand_rows[0]
    # pooled null of the scaled statistics: every class's tail at the value's own scale (the bin
    # holding it included: conservative)
    bins = np.minimum((scaled[None, :] * scale[:, None] / HIST_WIDTH).astype(np.int64), n_bins - 1)
    count = tail[np.arange(T)[:, None], bins].sum(0)
    p_value = (1.0 + count) / (1.0 + n_null)
    p_fwer = (1.0 + (nm[None, :] >= scaled[:, None] - 1e-9).sum(1)) / (1.0 + len(nm))
    order = np.lexsort((j, i, c_idx, p_value, -scaled))
    q = _bh(p_value[order], n_tests)
    if relabelled is not None:
        q = np.maximum(q, p_fwer[order])
    table = pd.DataFrame({
        "feature_a": [names[v] for v in i[order]], "feature_b": [names[v] for v in j[order]],
        "class": [str(classes[c]) for c in c_idx[order]],
        "score": raw[order], "scaled_score": scaled[order], "p_value": p_value[order], "p_fwer": p_fwer[order],
        "q_value": q, "corr_in_class": in_c[order], "corr_rest": rest[order],
        "n_class": np.bincount(codes_s, minlength=n_classes)[c_idx[order]],
        "n_rest": len(codes_s) - np.bincount(codes_s, minlength=n_classes)[c_idx[order]],
    })
    secs = time.perf_counter() - t0
    log.info("interaction screen: %d features, %d tests, %d permutations (scaled null max %.2f-%.2f), %d pairs "
             "with q < %g, %.1f s", p, n_tests, cfg.permutations, nm.min() if len(nm) else 0,
             nm.max() if len(nm) else 0, int((q < cfg.q_threshold).sum()), cfg.q_threshold, secs)
    null_max = list(nm)
    return ScreenResult(table, names, n_tests, len(cells), cfg.permutations, null_max, secs)


def _prune(rows: list, keep: int) -> None:
    """Merge candidate chunks in place into one chunk of the ``keep`` best scores."""
    if not rows:
        return
    merged = [np.concatenate([r[f] for r in rows]) for f in range(len(rows[0]))]
    if len(merged[0]) > keep:
        top = np.lexsort((merged[3], merged[2], merged[1], -merged[0]))[:keep]
        merged = [m[top] for m in merged]
    rows[:] = [tuple(merged)]


def _bh(p_sorted: np.ndarray, n_tests: int) -> np.ndarray:
    """Benjamini-Hochberg q of the smallest p-values of ``n_tests`` tests (given in ascending order
    of p where ties by score); the untested remainder is taken as p = 1 (conservative)."""
    p = np.asarray(p_sorted, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n_tests / np.arange(1, len(p) + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty_like(q_sorted)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


# -- files and pairs for the model -------------------------------------------------------

def table_text(result: ScreenResult) -> str:
    """interactions.tsv as text, at full precision, so that a table read back from it places the
    same pairs as the table in memory."""
    # full precision: the model keeps the pairs with q below the threshold, read back from this text,
    # and the best q reachable with P permutations is just under 1 / P (0.05 for the default 20),
    # which six significant digits would round onto the threshold
    return result.table.to_csv(sep="\t", index=False, float_format="%.17g")


def write_table(result: ScreenResult, path) -> None:
    from deepmapper._utils.atomic import write_text

    write_text(path, table_text(result))


def parse_table(text: str, where: str = "the pair table"):
    import io as _io

    return read_table(_io.StringIO(text), where=where)


def read_table(path, where: str | None = None):
    """interactions.tsv as a DataFrame (FormatError when it is not one)."""
    import pandas as pd

    from deepmapper.errors import FormatError

    where = where or str(path)
    if isinstance(path, (str, os.PathLike)) and not os.path.isfile(path):
        raise FormatError("interactions table not found", where=where,
                          fix="run 'deepmapper interactions' first, or check --interactions.")
    try:
        table = pd.read_csv(path, sep="\t", dtype={"feature_a": str, "feature_b": str, "class": str},
                            float_precision="round_trip")
    except (OSError, ValueError) as exc:
        raise FormatError(f"not a readable interactions table ({exc.__class__.__name__})", where=where,
                          fix="give the interactions.tsv written by 'deepmapper interactions'.") from None
    missing = [c for c in ("feature_a", "feature_b", "class", "score", "q_value") if c not in table.columns]
    if missing:
        raise FormatError(f"missing column(s) {', '.join(missing)}", where=where,
                          fix="give the interactions.tsv written by 'deepmapper interactions'.")
    return table


def placed_pairs(table, feature_names: list[str], cfg, *, where: str = "the pair table"):
    """The one decision of which pairs training places: :func:`select_pairs` under the run's
    settings, then as many as the image has room for (``transform.max_pairs``). Returns
    (pairs (M, 2) int64 feature indices, classes). findings.json records the result
    (``placed_pairs``), so readers never select again."""
    from deepmapper.model.transform import max_pairs as room

    pairs, classes, _ = select_pairs(table, feature_names, q_threshold=cfg.interactions.q_threshold,
                                     max_pairs=cfg.interactions.max_pairs, where=where)
    n = room(len(feature_names))
    return pairs[:n], classes[:n]


def select_pairs(table, feature_names: list[str], *, q_threshold: float, max_pairs: int,
                 where: str = "the pair table"):
    """The pairs the model uses: (pairs (M, 2) int64 feature indices, classes list, scores).

    Rows with q below the threshold, in the table's order (best first); greedy: a pair is taken only when
    neither of its features is in a pair already taken, so every feature sits in at most one
    placed pair, its best one (the others stay in interactions.tsv). At most ``max_pairs``.
    """
    from deepmapper.errors import FormatError

    index = {str(n): k for k, n in enumerate(feature_names)}
    rows = table[table["q_value"] < q_threshold]          # the table is best first
    used, pairs, pair_classes, scores = set(), [], [], []
    for a, b, c, s in zip(rows["feature_a"], rows["feature_b"], rows["class"], rows["score"]):
        if a not in index or b not in index:
            raise FormatError(f"pair {a} x {b} names a feature the dataset does not have", where=where,
                              field="feature_a", fix="use the interactions.tsv screened on this dataset.")
        ia, ib = index[a], index[b]
        if ia in used or ib in used or ia == ib:
            continue
        used.update((ia, ib))
        pairs.append((ia, ib))
        pair_classes.append(str(c))
        scores.append(float(s))
        if len(pairs) >= max_pairs:
            break
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2), pair_classes, np.asarray(scores, np.float64)


def screen_prepared(data, cfg, *, device=None, progress: bool = True) -> ScreenResult:
    """The screen of a run: on ``data`` (:class:`deepmapper.engine.data.PreparedData`)'s non-held-out cells."""
    from deepmapper.device import setup

    device = device or setup(cfg)
    cells = screen_cells(data.codes, data.split.test, cfg.interactions.max_cells, cfg.run.seed)
    return screen(data.X, data.codes, data.classes, data.feature_names, cells=cells, cfg=cfg.interactions,
                  seed=cfg.run.seed, device=device, progress=progress, samples=data.samples,
                  blocks=data.sample_blocks)
