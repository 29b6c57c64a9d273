#!/usr/bin/env python3
"""The sample-level test alone against pseudobulk DESeq2, over many seeds and without training.

With a sample key and fewer than 2 training samples per label (3 donors per condition) the model
is left out and ``findings.tsv`` ranks by ``sample_p`` alone (the leave-one-donor-out pseudobulk
test, :func:`deepmapper.engine.samples.sample_test`), so that rank can be measured here on many
more seeds than ``bench/donors.py`` can afford (no passes are trained; ties, which the pipeline
breaks by the model's order, fall in feature order). Data: :mod:`deepmapper.datasets.donors`.
Per seed, the top 20 of

- ``sample test``: ``sample_p`` (what the pipeline ranks by at 3 donors per condition);
- ``pseudobulk``: PyDESeq2 on the donor sums (:func:`deepmapper.engine.pseudobulk.baseline`);
- ``ceiling``: DESeq2's order with the one-donor genes taken out, the most true genes any
  reordering that only removes one-donor genes from DESeq2's list could reach;
- ``blend`` (tried, not kept): the mean of ``-log10 sample_p`` and DESeq2's ``-log10 p`` on all
  samples, a rank between the two;

counting true condition genes and one-donor genes (12 of each), and the paired difference in true
genes (sample test minus DESeq2) with a 95% bootstrap interval over seeds.

    python bench/sample_rank.py --donors 3 --seeds 20 --jobs 2
    python bench/sample_rank.py --donors 3 --seeds 10 --outliers 2
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def one_seed(job: tuple) -> dict:
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from deepmapper import io
    from deepmapper.datasets import donors
    from deepmapper.engine import pseudobulk, samples

    k, seed, args = job
    adata = donors.simulate(k, n_genes=args.genes, mean_cells=args.cells, n_outliers=args.outliers,
                            lfc=args.lfc, outlier_lfc=args.outlier_lfc, seed=seed)
    truth = adata.uns["truth"]
    ds = io.from_anndata(adata, label_key="condition", sample_key="donor")
    _, classes = io.labels(ds)
    names = np.asarray(ds.var_names)
    p = samples.sample_level(ds, classes)["p"]
    test_order = list(names[np.argsort(np.nan_to_num(p, nan=2.0), kind="stable")])
    table = pseudobulk.baseline(ds, classes)[0]
    deseq_order = list(table["feature"])
    p_all = table.set_index("feature")["pvalue"].reindex(names).to_numpy(np.float64)
    blend = np.log10(p) + np.log10(p_all)              # NaN (no test) sorts last
    blend_order = list(names[np.argsort(np.nan_to_num(blend, nan=np.inf), kind="stable")])
    one = set(truth["one_donor_genes"])
    out = {"donors": k, "seed": seed}
    for method, order in (("sample test", test_order), ("pseudobulk", deseq_order),
                          ("ceiling", [g for g in deseq_order if g not in one]), ("blend", blend_order)):
        top = set(order[:20])
        out[f"{method} true"] = len(top & set(truth["true_genes"]))
        out[f"{method} one"] = len(top & one)
    return out


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--donors", type=int, nargs="+", default=[3], help="donors per condition")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--genes", type=int, default=500)
    ap.add_argument("--cells", type=int, default=100, help="mean cells per donor")
    ap.add_argument("--outliers", type=int, default=1, help="disease donors carrying the one-donor genes")
    ap.add_argument("--lfc", type=float, default=0.8, help="condition effect of the true genes (natural log)")
    ap.add_argument("--outlier-lfc", type=float, default=2.5)
    ap.add_argument("--jobs", type=int, default=1, help="seeds run side by side (one process each)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    jobs = [(k, s, args) for k in args.donors for s in range(args.first_seed, args.first_seed + args.seeds)]
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(one_seed, jobs):
            rows.append(row)
            print(f"  {row} ({time.perf_counter() - t0:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    rng = np.random.default_rng(0)
    print("\nTop 20 (mean over seeds): true condition genes / one-donor genes (of 12 each)")
    for k, part in df.groupby("donors"):
        diff = (part["sample test true"] - part["pseudobulk true"]).to_numpy(float)
        boot = rng.choice(diff, size=(10000, diff.size)).mean(1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        cells = "  ".join(f"{m}: {part[f'{m} true'].mean():.2f} / {part[f'{m} one'].mean():.2f}"
                          for m in ("sample test", "pseudobulk", "ceiling", "blend"))
        print(f"{k} donors/condition, {len(part)} seeds  {cells}\n  sample test minus DESeq2, true genes: "
              f"{diff.mean():+.2f} (95% bootstrap interval {lo:+.2f} to {hi:+.2f}; fewer in "
              f"{int((diff < 0).sum())} seeds, more in {int((diff > 0).sum())})")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
