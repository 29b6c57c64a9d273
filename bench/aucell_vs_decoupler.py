"""AUCell: deepmapper (torch, vectorised) vs decoupler (numba, per cell) - agreement and speed.

Usage: python bench/aucell_vs_decoupler.py [--cells 20000] [--genes 5000] [--sets 200] [--threads 2]

The matrix is continuous (log-normal values, no ties), so both implementations
rank every gene the same way and their scores must agree; the bench prints the
smallest per-set Spearman correlation, the largest absolute difference, both
wall times (warm: each method runs once on a small matrix first, so numba's JIT
compilation and torch's start-up are not timed) and the speed ratio.

decoupler is not a dependency of deepmapper: ``pip install decoupler`` (2.2.0 measured).
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def make_data(n_cells: int, n_genes: int, n_sets: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.lognormal(mean=0.0, sigma=1.0, size=(n_cells, n_genes)).astype(np.float32)
    genes = np.array([f"G{j:05d}" for j in range(n_genes)])
    sizes = rng.integers(10, 200, size=n_sets)
    sets = [rng.choice(n_genes, size=int(s), replace=False) for s in sizes]
    return X, genes, sets


def run_deepmapper(X, sets, top_fraction: float):
    from deepmapper.features import aucell

    M = np.zeros((X.shape[1], len(sets)), dtype=np.float32)
    for j, s in enumerate(sets):
        M[s, j] = 1.0
    return aucell.aucell_matrix(X, M, np.array([len(s) for s in sets]), top_fraction=top_fraction, device="cpu")


def run_decoupler(X, genes, sets, n_up: int):
    import anndata as ad
    import decoupler as dc
    import pandas as pd

    adata = ad.AnnData(X=X, var=pd.DataFrame(index=genes))
    net = pd.DataFrame({"source": np.repeat([f"S{j:03d}" for j in range(len(sets))], [len(s) for s in sets]),
                        "target": genes[np.concatenate(sets)]})
    dc.mt.aucell(adata, net, tmin=1, n_up=n_up)
    scores = adata.obsm["score_aucell"]
    return scores[[f"S{j:03d}" for j in range(len(sets))]].to_numpy()


def main() -> None:
    import scipy.stats as st
    import torch

    from deepmapper.features.aucell import n_up_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--genes", type=int, default=5000)
    ap.add_argument("--sets", type=int, default=200)
    ap.add_argument("--top-fraction", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numba

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    X, genes, sets = make_data(args.cells, args.genes, args.sets, args.seed)
    n_up = n_up_for(args.genes, args.top_fraction)

    # warm-up on a slice: JIT compilation and library start-up are not what we compare
    run_deepmapper(X[:64], sets, args.top_fraction)
    run_decoupler(X[:64], genes, sets, n_up)

    t0 = time.perf_counter()
    ours = run_deepmapper(X, sets, args.top_fraction)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = run_decoupler(X, genes, sets, n_up)
    t_theirs = time.perf_counter() - t0

    rho = np.array([st.spearmanr(ours[:, j], theirs[:, j]).statistic for j in range(args.sets)])
    print(f"data: {args.cells} cells x {args.genes} genes, {args.sets} sets (10-199 genes), n_up={n_up}, "
          f"{args.threads} threads")
    print(f"agreement: min Spearman per set {rho.min():.6f}, max |difference| {np.abs(ours - theirs).max():.2e}")
    print(f"deepmapper aucell: {t_ours:.2f} s")
    print(f"decoupler aucell:  {t_theirs:.2f} s")
    print(f"speed-up: {t_theirs / t_ours:.2f}x")


if __name__ == "__main__":
    main()
