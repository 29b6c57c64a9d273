"""Generated scATAC peak matrices with planted group peaks (no scATAC data ships anywhere here).

The model is deliberately plain, so that what a clustering recovers is known:

- every peak ``j`` has a base propensity ``p_j`` (log-normal: a few peaks are open in
  most cells, most peaks in few);
- every cell ``i`` has a depth factor ``d_i`` (log-normal, so library size varies
  several-fold, the nuisance that LSI's first component usually captures);
- every group owns ``peaks_per_group`` peaks (disjoint, spread along the genome) whose
  rate is multiplied by ``fold`` in cells of that group; ``fold`` near 1 is a weak signal;
- counts are Poisson with rate ``d_i * p_j * fold_gj``, scaled so that about ``density``
  of the matrix is non-zero, as in real peak matrices (mostly 0/1, a few 2s).

Peak names look like ``chr3:120500-121000`` (500 bp, sorted along 22 autosomes).
"""
from __future__ import annotations

import numpy as np

GROUP_KEY = "group"


def peak_names(n_peaks: int, *, seed: int = 0, width: int = 500) -> list[str]:
    """``chrN:start-end`` names, sorted by chromosome then position, no overlaps."""
    rng = np.random.default_rng([int(seed), 11])
    chrom = np.sort(rng.integers(1, 23, size=n_peaks))
    names = []
    for c in np.unique(chrom):
        k = int((chrom == c).sum())
        # gaps of at least `width` so consecutive peaks never overlap
        starts = np.cumsum(rng.integers(width + 100, 50 * width, size=k)) + 10_000
        names.extend(f"chr{c}:{s}-{s + width}" for s in starts)
    return names


def make_peaks(n_cells: int = 2000, n_peaks: int = 20000, *, n_groups: int = 5, peaks_per_group: int = 200,
               fold: float = 2.0, density: float = 0.03, depth_sd: float = 0.5, seed: int = 0,
               group_sizes: list[float] | None = None):
    """An AnnData of integer peak counts (CSR, float32) with planted groups in ``obs["group"]``.

    ``var["planted_group"]`` names the group owning each planted peak ("" for background).
    ``uns["synthetic_atac"]`` records the parameters.
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    if n_groups < 2 or peaks_per_group * n_groups > n_peaks:
        raise ValueError("need n_groups >= 2 and n_groups * peaks_per_group <= n_peaks")
    rng = np.random.default_rng(int(seed))
    if group_sizes is None:
        # mildly unequal groups: the largest about 2.5x the smallest
        group_sizes = np.linspace(1.0, 0.4, n_groups)
    props = np.asarray(group_sizes, dtype=float)
    props = props / props.sum()
    counts = np.floor(props * n_cells).astype(int)
    counts[: n_cells - counts.sum()] += 1
    groups = rng.permutation(np.repeat(np.arange(n_groups), counts))

    base = rng.lognormal(mean=0.0, sigma=1.2, size=n_peaks)
    depth = rng.lognormal(mean=0.0, sigma=depth_sd, size=n_cells)
    owner = np.full(n_peaks, -1)
    planted = rng.permutation(n_peaks)[: n_groups * peaks_per_group]
    owner[planted] = np.repeat(np.arange(n_groups), peaks_per_group)
    # scale so that the expected fraction of non-zero entries is about `density`
    scale = _solve_scale(base, depth, density)

    rows, cols, vals = [], [], []
    chunk = max(1, 2_000_000 // n_peaks)
    for start in range(0, n_cells, chunk):
        stop = min(n_cells, start + chunk)
        rate = (depth[start:stop, None] * scale) * base[None, :]
        boost = owner[None, :] == groups[start:stop, None]
        rate = np.where(boost, rate * fold, rate)
        x = rng.poisson(rate)
        r, c = np.nonzero(x)
        rows.append(r + start)
        cols.append(c)
        vals.append(x[r, c])
    X = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n_cells, n_peaks))
    X.sort_indices()

    names = [f"g{k}" for k in range(n_groups)]
    obs = pd.DataFrame({GROUP_KEY: pd.Categorical([names[g] for g in groups], categories=names)},
                       index=[f"cell{i:05d}" for i in range(n_cells)])
    var = pd.DataFrame({"planted_group": [names[o] if o >= 0 else "" for o in owner]},
                       index=peak_names(n_peaks, seed=seed))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["synthetic_atac"] = {"n_groups": n_groups, "peaks_per_group": peaks_per_group, "fold": fold,
                                   "density": density, "depth_sd": depth_sd, "seed": int(seed)}
    return adata


def _solve_scale(base: np.ndarray, depth: np.ndarray, density: float) -> float:
    """Scale s with mean over cells and peaks of 1 - exp(-s * d_i * p_j) close to ``density``."""
    d = np.quantile(depth, np.linspace(0.01, 0.99, 50))
    lo, hi = 1e-8, 1e3
    for _ in range(60):  # bisection on a monotone function
        mid = np.sqrt(lo * hi)
        frac = np.mean(1.0 - np.exp(-mid * d[:, None] * base[None, :]))
        lo, hi = (mid, hi) if frac < density else (lo, mid)
    return float(np.sqrt(lo * hi))
