"""Clustering a generated scATAC peak matrix: DeepMapper's iterative LSI vs snapATAC2 vs a naive ArchR port.

Usage: python bench/cluster_atac_vs_snapatac2.py [--cells 2000] [--peaks 20000] [--fold 3]
       [--peaks-per-group 300] [--seed 0]

All three methods see the same matrix (``deepmapper.datasets.synthetic_atac.make_peaks``:
weak planted group peaks) and are scored by the adjusted Rand index against the
planted groups, at Leiden resolution 0.5 and 1.0:

- deepmapper: ``cluster.cluster_labels(modality="atac")`` (binarise, log TF-IDF,
  cosine iterative LSI, chi-square feature choice, depth filter, 50-NN Leiden);
- snapatac2: ``tl.spectral(features=None)``, ``pp.knn``, ``tl.leiden`` (its defaults);
- naive ArchR-style port: log TF-IDF, LSI (30 components, first dropped for depth,
  components z-scored), Leiden at 0.2 on 15-NN (doubled until there are two
  clusters), then features by plain variance of the log cluster means, re-fit
  (2 iterations), final Leiden on 15-NN.

snapatac2 is not a dependency of deepmapper: ``pip install snapatac2`` (2.9.0 was
measured; install it with --no-deps to keep plotly 7, it only needs plotly for plots).
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np


def naive_archr(X, *, seed: int, resolution: float) -> np.ndarray:
    from sklearn.utils.extmath import randomized_svd

    from deepmapper.features import atac
    from deepmapper.features.cluster import leiden_on_embedding

    B = atac.binarize(X)
    features = np.arange(B.shape[1])
    labels = None
    for it in range(2):
        T = atac.tfidf(B[:, features])
        U, S, _ = randomized_svd(T, 30, n_iter=7, random_state=seed)
        emb = (U * S)[:, 1:]
        emb = (emb - emb.mean(0)) / emb.std(0)
        res = 0.2 if it == 0 else resolution
        labels = leiden_on_embedding(emb, resolution=res, seed=seed, n_neighbors=15, metric="euclidean")
        while it == 0 and len(np.unique(labels)) < 2 and res < 8:  # variance of one mean is meaningless
            res *= 2
            labels = leiden_on_embedding(emb, resolution=res, seed=seed, n_neighbors=15, metric="euclidean")
        if it == 0:
            means = np.vstack([np.asarray(B[labels == k].mean(0)).ravel() for k in np.unique(labels)])
            lognorm = np.log2(means / means.sum(1, keepdims=True) * 1e4 + 1)
            features = np.sort(np.argsort(-lognorm.var(0))[: max(2000, B.shape[1] // 10)])
    return labels


def snapatac2_labels(adata, *, seed: int, resolution: float) -> np.ndarray:
    import snapatac2 as snap

    b = adata.copy()
    snap.tl.spectral(b, n_comps=30, features=None, random_state=seed)
    snap.pp.knn(b, random_state=seed)
    snap.tl.leiden(b, resolution=resolution, random_state=seed)
    return b.obs["leiden"].to_numpy()


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from deepmapper.features.cluster import cluster_labels
    from deepmapper.datasets.synthetic_atac import make_peaks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--peaks", type=int, default=20000)
    ap.add_argument("--fold", type=float, default=3.0)
    ap.add_argument("--peaks-per-group", type=int, default=300)
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    adata = make_peaks(args.cells, args.peaks, n_groups=args.groups, peaks_per_group=args.peaks_per_group,
                       fold=args.fold, seed=args.seed)
    truth = adata.obs["group"].to_numpy()
    print(f"matrix: {adata.n_obs} cells x {adata.n_vars} peaks, {args.groups} groups, "
          f"{args.peaks_per_group} planted peaks each at fold {args.fold}, "
          f"{adata.X.nnz / (adata.n_obs * adata.n_vars):.3f} non-zero")
    methods = {"deepmapper": lambda r: cluster_labels(adata, modality="atac", resolution=r,
                                                      seed=args.seed).obs["cluster"].to_numpy(),
               "naive_archr": lambda r: naive_archr(adata.X, seed=args.seed, resolution=r)}
    if importlib.util.find_spec("snapatac2") is not None:
        methods["snapatac2"] = lambda r: snapatac2_labels(adata, seed=args.seed, resolution=r)
    else:
        print("snapatac2 is not installed: pip install --no-deps snapatac2 (and its runtime deps)")
    print(f"{'method':<12} {'resolution':>10} {'clusters':>8} {'ARI':>6} {'seconds':>8}")
    for name, fn in methods.items():
        for res in (0.5, 1.0):
            t0 = time.perf_counter()
            labels = fn(res)
            dt = time.perf_counter() - t0
            print(f"{name:<12} {res:>10.1f} {len(np.unique(labels)):>8d} "
                  f"{adjusted_rand_score(truth, labels):>6.3f} {dt:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
