#!/usr/bin/env python3
"""Cost of the pair screen: time and peak memory (each size in its own process), 2 threads.

Sparse count-like CSR data (``synthetic.sparse_matrix``), 5 classes, the screen as a run
does it (non-held-out cells, at most interaction_max_cells of them, the detection filter,
at most interaction_max_features by variance, 20 permutations).

    python bench/interactions_cost.py                         # 5,000 x 5,000 and 5,000 x 20,000
    python bench/interactions_cost.py --size 5000x5000 --set interaction_max_features=5000
    python bench/interactions_cost.py --size 100000x30000     # the big one: run once, check free -g first
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n_cells: int, n_features: int, density: float, threads: int, extra: dict) -> dict:
    import numpy as np
    import torch

    from deepmapper.engine import interactions
    from deepmapper.config import Config
    from deepmapper.engine.split import stratified_split
    from deepmapper.datasets.synthetic import sparse_matrix

    torch.set_num_threads(threads)
    X, labels = sparse_matrix(n_cells, n_features, density, seed=0, n_classes=5)
    classes = sorted(set(labels))
    codes = np.searchsorted(classes, labels)
    cfg = Config().with_params(extra)
    split = stratified_split(codes, test_fraction=0.2, val_fraction=0.1, seed=0, classes=classes)
    cells = interactions.screen_cells(codes, split.test, cfg.interactions.max_cells, 0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    res = interactions.screen(X, codes, classes, [f"f{i}" for i in range(n_features)], cells=cells,
                              cfg=cfg.interactions, seed=0, progress=False, device=torch.device("cpu"))
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"cpu_seconds": round(cpu, 1), "cells": n_cells, "features": n_features, "nnz": int(X.nnz), "screened_cells": int(len(cells)),
            "screened_features": len(res.features), "tests": int(res.n_tests), "seconds": round(secs, 1),
            "rss_before_screen_mb": round(rss0), "peak_rss_mb": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024), "matrix_mb": round((X.data.nbytes + X.indices.nbytes) / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", nargs="+", default=["5000x5000", "5000x20000"])
    ap.add_argument("--density", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import yaml

    extra = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    if args.one:
        n, p = map(int, args.one.split("x"))
        print(json.dumps(one(n, p, args.density, args.threads, extra)))
        return
    print(f"pair screen cost, density {args.density}, {args.threads} threads, settings {extra or 'default'}")
    for size in args.size:
        cmd = [sys.executable, __file__, "--one", size, "--density", str(args.density), "--threads",
               str(args.threads)] + sum((["--set", s] for s in args.set), [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"  {r['cells']:>7,} x {r['features']:>6,} ({r['nnz']:,} non-zeros, {r['matrix_mb']:,} MB): "
              f"screened {r['screened_cells']:,} cells x {r['screened_features']:,} features, {r['tests']:,} "
              f"tests; {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU; peak RSS {r['peak_rss_mb']:,} MB "
              f"(data alone {r['rss_before_screen_mb']:,} MB)")


if __name__ == "__main__":
    main()
