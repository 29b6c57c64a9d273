#!/usr/bin/env python3
"""Cells per pass against accuracy, marker recall and time: the curve behind ``max_cells_per_pass``.

A generated sparse case (``synthetic.sparse_matrix``: Bernoulli background, per-class markers
detected more often and with tripled values, weak by default so that more cells help) is run
with the default settings except the cap, for each ``--caps`` value (0: no cap). Each run
trains ``--passes`` passes (the pair screen off: its cost is bounded on its own by
``interaction_max_cells``); printed per cap: cells per pass, blocks, CPU seconds of the
training (``time.process_time``, all threads), ensembled held-out accuracy, and planted
markers among the top ``--top`` features (markers: features whose class means differ more
than 3-fold, read off the generated matrix).

    python bench/cost_cells.py [--cells 6000] [--features 1000] [--caps 500 1000 2000 0]
        [--passes 4] [--threads 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=6000)
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--markers", type=int, default=10, help="markers per class")
    ap.add_argument("--boost", type=float, default=0.05, help="extra detection rate of a marker in its class")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--caps", type=int, nargs="+", default=[500, 1000, 2000, 0])
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE")
    args = ap.parse_args()

    import torch
    import yaml

    from deepmapper import io
    from deepmapper.config import Config
    from deepmapper.pipeline.runner import analyse
    from deepmapper.datasets.synthetic import sparse_matrix

    torch.set_num_threads(args.threads)
    X, labels = sparse_matrix(args.cells, args.features, args.density, seed=args.seed, n_classes=args.classes,
                              n_markers=args.markers, marker_boost=args.boost)
    adata = io.build_dataset(X, [f"c{i}" for i in range(X.shape[0])], [f"g{j}" for j in range(X.shape[1])],
                             labels, label_key="label", source="sparse_matrix")
    means = np.vstack([np.asarray(X[labels == c].mean(axis=0)).ravel() for c in np.unique(labels)])
    markers = {f"g{j}" for j in np.flatnonzero(means.max(0) / np.maximum(means.min(0), 1e-9) > 3.0)}
    extra = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    print(f"{args.cells:,} cells x {args.features:,} features, {args.density:.0%} non-zero, {args.classes} classes, "
          f"{len(markers)} planted markers; {args.passes} passes, seed {args.seed}, {args.threads} threads")
    print(f"{'cap':>6} {'cells/pass':>10} {'blocks':>6} {'CPU s':>8} {'wall s':>7} {'accuracy':>8} "
          f"{f'markers in top {args.top}':>18} {'epochs':>6}")
    for cap in args.caps:
        cfg = Config().with_params({"seed": args.seed, "passes": args.passes, "threads": args.threads,
                                    "interactions": False, "max_cells_per_pass": cap, **extra})
        c0, t0 = time.process_time(), time.perf_counter()
        out = analyse(adata, cfg, progress=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        from deepmapper.engine.data import prepare

        data = prepare(adata, cfg)
        top = list(out["findings"]["feature"].head(args.top))
        per_pass = np.mean([len(data.pass_cells(p.pass_index)[0]) for p in out["passes"]])
        print(f"{cap or 'none':>6} {per_pass:>10.0f} {data.n_blocks():>6} {cpu:>8.1f} {wall:>7.1f} "
              f"{out['evaluation']['accuracy']:>8.3f} {sum(f in markers for f in top):>13}/{min(args.top, len(markers))} "
              f"{np.mean([p.stop_epoch for p in out['passes']]):>6.1f}", flush=True)


if __name__ == "__main__":
    main()
