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
- ``worst case``: ``sample_p_left_out``, the largest p with any one donor left out (the p behind
  ``sample_q``, and what the rank weighed before session 13);
- with ``--paired`` (:func:`deepmapper.datasets.donors.simulate_paired`, every donor under both
  conditions; the test and DESeq2 then compare the conditions within donors) also
  ``unpaired pseudobulk`` and ``unpaired test``, the same two on the same samples given as a donor x
  condition column, as a user without the paired design would run them;

counting true condition genes and one-donor genes (12 of each), and the paired difference in true
genes (sample test minus DESeq2) with a 95% bootstrap interval over seeds.

With ``--null``, per seed two data sets where no gene separates the conditions, and the number of
features each test calls (``sample_q`` and DESeq2's ``padj`` below 0.05), and the share of runs with
any call, with a 95% Wilson interval (the issue's goal: at most 1 run in 20):

- ``shuffled``: the conditions shuffled between whole donors (:func:`deepmapper.datasets.donors.null`,
  the null of ``bench/donors.py``). With few donors a shuffle can keep most of the planted split (at
  3 + 3, one shuffle in 10 gives back the planted partition), so some calls there are real: the
  column ``overlap`` counts how many planted disease donors end up on the larger side, and
  ``shuffled, mixed`` counts only the shuffles that split them;
- ``no effect``: the same generator with the condition effect set to 0, the odd donor kept: one
  donor's strong genes are the only differences, and a call is a one-donor finding (with
  ``--paired`` the only null: a shuffle between donors would break the pairs).

    python bench/sample_rank.py --donors 3 --seeds 20 --jobs 2
    python bench/sample_rank.py --donors 3 --seeds 10 --outliers 2
    python bench/sample_rank.py --donors 3 4 6 --seeds 40 --null --jobs 2
    python bench/sample_rank.py --paired --donors 4 6 --seeds 20 --donor-sd 0.6 --jobs 2
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
    simulate = donors.simulate_paired if args.paired else donors.simulate
    adata = simulate(k, n_genes=args.genes, mean_cells=args.cells, n_outliers=args.outliers, lfc=args.lfc,
                     outlier_lfc=args.outlier_lfc, donor_sd=args.donor_sd, seed=seed)
    truth = adata.uns["truth"]
    ds = io.from_anndata(adata, label_key="condition", sample_key="donor")
    _, classes = io.labels(ds)
    names = np.asarray(ds.var_names)
    level = samples.sample_level(ds, classes)
    test_order = list(names[np.argsort(np.nan_to_num(level["p"], nan=2.0), kind="stable")])
    table = pseudobulk.baseline(ds, classes)[0]
    deseq_order = list(table["feature"])
    one = set(truth["one_donor_genes"])
    methods = [("sample test", test_order), ("pseudobulk", deseq_order),
               ("ceiling", [g for g in deseq_order if g not in one]),
               ("worst case", list(names[np.argsort(np.nan_to_num(level["p_left_out"], nan=2.0), kind="stable")]))]
    if args.paired:      # the same samples as if unpaired: a donor x condition column as the sample key
        apart = adata.copy()
        apart.obs["sample"] = apart.obs["donor"].astype(str) + "_" + apart.obs["condition"].astype(str)
        loose = io.from_anndata(apart, label_key="condition", sample_key="sample")
        methods.append(("unpaired pseudobulk", list(pseudobulk.baseline(loose, classes)[0]["feature"])))
        methods.append(("unpaired test", list(names[np.argsort(np.nan_to_num(
            samples.sample_level(loose, classes)["p"], nan=2.0), kind="stable")])))
    out = {"donors": k, "seed": seed}
    for method, order in methods:
        top = set(order[:20])
        out[f"{method} true"] = len(top & set(truth["true_genes"]))
        out[f"{method} one"] = len(top & one)
    return out


def null_seed(job: tuple) -> dict:
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from deepmapper import io
    from deepmapper.datasets import donors
    from deepmapper.engine import pseudobulk, samples

    k, seed, args = job
    out = {"donors": k, "seed": seed, "overlap": 0}
    simulate = donors.simulate_paired if args.paired else donors.simulate
    no_effect = simulate(k, n_genes=args.genes, mean_cells=args.cells, n_outliers=args.outliers, lfc=0.0,
                         outlier_lfc=args.outlier_lfc, donor_sd=args.donor_sd, seed=seed)
    nulls = [("no effect", no_effect)]
    if not args.paired:        # a paired design has no shuffle between donors (the pairs would break)
        planted = donors.simulate(k, n_genes=args.genes, mean_cells=args.cells, n_outliers=args.outliers,
                                  lfc=args.lfc, outlier_lfc=args.outlier_lfc, donor_sd=args.donor_sd, seed=seed)
        shuffled = donors.null(planted, seed=seed)
        first = planted.obs.groupby("donor", observed=True)["condition"].first()
        now = shuffled.obs.groupby("donor", observed=True)["condition"].first()
        same = int(((first == "disease") & (now == "disease")).sum())
        out["overlap"] = max(same, k - same)            # planted disease donors kept together
        nulls.insert(0, ("shuffled", shuffled))
    for name, adata in nulls:
        ds = io.from_anndata(adata, label_key="condition", sample_key="donor")
        _, classes = io.labels(ds)
        q = samples.sample_level(ds, classes)["q"]
        padj = pseudobulk.baseline(ds, classes)[0]["padj"].to_numpy(np.float64)
        out[f"{name} sample test"] = int(np.sum(np.nan_to_num(q, nan=1.0) < 0.05))
        out[f"{name} pseudobulk"] = int(np.sum(np.nan_to_num(padj, nan=1.0) < 0.05))
    return out


def wilson(hits: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    z, p = 1.96, hits / n
    mid, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (mid - half) / (1 + z * z / n)), min(1.0, (mid + half) / (1 + z * z / n))


def report_null(df) -> None:
    print("\nNulls: runs with any feature called (q < 0.05) of all runs [95% Wilson interval]; mean calls per run")
    for k, part in df.groupby("donors"):
        if "shuffled pseudobulk" in part.columns:
            print(f"{k} donors/condition, {len(part)} seeds (shuffles keeping the planted split: "
                  f"{int((part['overlap'] == k).sum())})")
        else:                                           # --paired: the null without an effect only
            print(f"{k} donors, {len(part)} seeds (paired)")
        mixed = part[part["overlap"] < k]               # shuffles that really mix the planted donors
        for name, runs in (("shuffled", part), ("shuffled, mixed", mixed), ("no effect", part)):
            column = name.split(",")[0]
            for method in ("sample test", "pseudobulk") if f"{column} pseudobulk" in runs.columns else ():
                calls = runs[f"{column} {method}"]
                hits = int((calls > 0).sum())
                lo, hi = wilson(hits, len(runs))
                print(f"  {name:15s}  {method:11s}  {hits:3d} / {len(runs)} [{lo:.3f}, {hi:.3f}]  "
                      f"{calls.mean():.2f} calls")


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
    ap.add_argument("--donor-sd", type=float, default=0.3, help="sd of each donor's effect on every gene (log)")
    ap.add_argument("--null", action="store_true", help="measure calls on two nulls instead of the top 20")
    ap.add_argument("--paired", action="store_true",
                    help="a paired design (every donor under both conditions; --donors counts donors)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    jobs = [(k, s, args) for k in args.donors for s in range(args.first_seed, args.first_seed + args.seeds)]
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(null_seed if args.null else one_seed, jobs):
            rows.append(row)
            print(f"  {row} ({time.perf_counter() - t0:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    if args.null:
        report_null(df)
        print(f"\n{time.perf_counter() - t0:.0f} s")
        return
    rng = np.random.default_rng(0)
    print("\nTop 20 (mean over seeds): true condition genes / one-donor genes (of 12 each)")
    for k, part in df.groupby("donors"):
        diff = (part["sample test true"] - part["pseudobulk true"]).to_numpy(float)
        boot = rng.choice(diff, size=(10000, diff.size)).mean(1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        cells = "  ".join(f"{m}: {part[f'{m} true'].mean():.2f} / {part[f'{m} one'].mean():.2f}"
                          for m in ("sample test", "pseudobulk", "ceiling", "worst case", "unpaired pseudobulk",
                                    "unpaired test") if f"{m} true" in part.columns)
        unit = "donors" if args.paired else "donors/condition"
        print(f"{k} {unit}, {len(part)} seeds  {cells}\n  sample test minus DESeq2, true genes: "
              f"{diff.mean():+.2f} (95% bootstrap interval {lo:+.2f} to {hi:+.2f}; fewer in "
              f"{int((diff < 0).sum())} seeds, more in {int((diff > 0).sum())})")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
