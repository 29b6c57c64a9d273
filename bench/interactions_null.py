#!/usr/bin/env python3
"""False pairs: how often the pair screen reports any pair (q below the threshold) when there is none.

Over ``--seeds`` seeds, two kinds of data with no pair signal: (a) planted data with
single-gene markers and no planted pair; (b) planted data with pairs whose labels are
permuted (the pairs no longer tell the classes apart). The screen runs as in a run
(non-held-out cells, default settings). The calibration promises about 1 run in 20
(the observed largest statistic must beat every permutation's); the goal is at most
2 of 20.

    python bench/interactions_null.py [--seeds 20] [--cells 800] [--features 1000] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--cells", type=int, default=800)
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from deepmapper.engine import interactions
    from deepmapper.config import Config
    from deepmapper.engine.data import prepare
    from deepmapper.datasets.synthetic import planted

    torch.set_num_threads(args.threads)
    results = {"no planted pair": [], "permuted labels": []}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        cfg = Config().with_params({"seed": seed})
        for kind in results:
            adata, _ = planted(args.cells, args.features, n_marginal=12, n_combo=0 if kind == "no planted pair" else 8,
                               n_classes=args.classes, seed=seed)
            if kind == "permuted labels":
                key = adata.uns["deepmapper"]["label_key"]
                adata.obs[key] = adata.obs[key].to_numpy()[np.random.default_rng(seed).permutation(adata.n_obs)]
                adata.obs[key] = adata.obs[key].astype("category")
            data = prepare(adata, cfg)
            res = interactions.screen_prepared(data, cfg, progress=False)
            q = res.table["q_value"].to_numpy()
            results[kind].append((int((q < cfg.interactions.q_threshold).sum()), float(q.min()) if len(q) else 1.0,
                                  float(res.table["scaled_score"].max()) if len(q) else 0.0,
                                  float(np.max(res.null_max)) if res.null_max else 0.0))
    print(f"{args.seeds} seeds, {args.cells} cells x {args.features} genes, {args.classes} classes, "
          f"default screen settings; {time.perf_counter() - t0:.0f} s in all")
    for kind, rows in results.items():
        n_any = sum(r[0] > 0 for r in rows)
        print(f"\n{kind}: {n_any}/{len(rows)} runs report any pair with q < 0.05")
        print("  seed  pairs  min q   largest scaled statistic  largest of the permutation maxima")
        for seed, (n, qmin, tmax, nmax) in enumerate(rows):
            print(f"  {seed:4d}  {n:5d}  {qmin:.3f}  {tmax:24.2f}  {nmax:7.2f}")


if __name__ == "__main__":
    main()
