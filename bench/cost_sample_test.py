#!/usr/bin/env python3
"""What the sample-level test costs, and what ``--threads`` buys it.

With a sample key and raw counts, ``sample_p`` comes from PyDESeq2 fitted on all samples and on
every set with one sample left out: ``2 x donors + 1`` fits per run, each fitting every gene on
its own (:func:`deepmapper.engine.samples.sample_test`). This times the whole test on
:mod:`deepmapper.datasets.donors` data for each donor count and gene count, on 1 process and on
``--cpus`` processes per fit (the accumulate step's ``--threads``), and prints seconds, seconds
per fit and per 1,000 genes, the speed-up, and whether the p values are identical.

    python bench/cost_sample_test.py --donors 3 6 --genes 1500 --cpus 2
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--donors", type=int, nargs="+", default=[3, 6], help="donors per condition")
    ap.add_argument("--genes", type=int, nargs="+", default=[1500])
    ap.add_argument("--cells", type=int, default=100, help="mean cells per donor")
    ap.add_argument("--cpus", type=int, default=2, help="processes per fit to compare with 1")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from deepmapper import io
    from deepmapper.datasets import donors
    from deepmapper.engine import samples
    from deepmapper.engine.split import sample_labels

    print(f"{'donors':>6} {'genes':>6} {'fits':>5} {'1 process s':>12} {f'{args.cpus} processes s':>14} "
          f"{'speed-up':>9} {'s/fit/1k genes':>15} {'same p':>7}", flush=True)
    for k in args.donors:
        for n_genes in args.genes:
            adata = donors.simulate(k, n_genes=n_genes, mean_cells=args.cells, seed=0)
            ds = io.from_anndata(adata, label_key="condition", sample_key="donor")
            codes, classes = io.labels(ds)
            s_codes, names = io.samples(ds)
            lab = sample_labels(codes, s_codes, len(names))
            seconds, p = [], []
            for n_cpus in (1, args.cpus):
                t0 = time.perf_counter()
                p.append(samples.sample_test(ds, s_codes, len(names), lab, classes, n_cpus=n_cpus)["p"])
                seconds.append(time.perf_counter() - t0)
            fits = len(names) + 1
            print(f"{k:>6} {n_genes:>6} {fits:>5} {seconds[0]:>12.1f} {seconds[1]:>14.1f} "
                  f"{seconds[0] / seconds[1]:>8.2f}x {seconds[0] / fits / n_genes * 1000:>15.2f} "
                  f"{str(np.array_equal(p[0], p[1], equal_nan=True)):>7}", flush=True)


if __name__ == "__main__":
    main()
