#!/usr/bin/env python3
"""Conditions across donors: one-donor genes, the null, and held-out accuracy by cells or by donors.

Data: :mod:`deepmapper.datasets.donors` (negative-binomial counts, a random effect of each donor
on every gene, donors unbalanced in size and cell-type mix; 12 genes up in every disease donor,
12 genes up strongly in one disease donor only), at several donor counts per condition, and
its null (the same generator without condition genes, conditions shuffled between whole
donors; the outlier donor's genes stay). Methods, each judged on its top 20 / 50:

- ``dm``: DeepMapper's default, no sample key (``findings.tsv`` rank);
- ``dm+samples``: DeepMapper with ``sample_key="donor"`` (rank: median importance x -log10 sample_p),
  and its two factors alone: ``dm model alone`` (``model_rank``) and ``sample test alone``
  (``sample_p``, the leave-one-donor-out pseudobulk test; ties in the model's order);
- ``wilcoxon``: cell-level Wilcoxon (scanpy's statistic); ``logistic``: cell-level penalised
  logistic regression; ``pseudobulk``: PyDESeq2 on donor sums.

"pass" = features called significant (DESeq2 padj, Wilcoxon BH q, DeepMapper's ``sample_q``,
all < 0.05) plus, for DeepMapper, pairs the screen reports; on the null every one is false.
Held-out accuracy: DeepMapper's arrangement-ensembled accuracy and logistic regression's, with
cells held out (donors also in training) and with whole donors held out.

    python bench/donors.py --quick            # 4 and 8 donors per condition x 2 seeds, few passes
    python bench/donors.py --donors 3 6 12 --seeds 5 --passes 10 --epochs 30
    python bench/donors.py --donors 3 6 --seeds 3 --outliers 2 --lfc 0.5
                                              # two outlier donors, a weaker condition effect
    python bench/donors.py --donors 3 6 12 --seeds 2 --null-seeds 20 --null-donors 6 ...
                                              # + 20 nulls: DeepMapper with the sample key, DESeq2
    python bench/donors.py --paired --donors 4 6 --seeds 3
                                              # every donor under both conditions (paired)
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np


def top_counts(order: list[str], truth: dict) -> dict:
    out = {}
    for k in (20, 50):
        top = set(order[:k])
        out[f"true@{k}"] = len(top & set(truth["true_genes"]))
        out[f"one@{k}"] = len(top & set(truth["one_donor_genes"]))
    return out


def run_dm(adata, sample_key, args) -> tuple[list[str], int, int, float, dict, bool]:
    """(order, n significant, n pairs, held-out accuracy, the rank's parts, gate failed). The gate
    failed: without a sample key the run reports nothing (empty order); with one, the sample-level
    test ranks alone."""
    import deepmapper as dm

    from deepmapper.errors import InputError

    b = adata.copy()
    try:
        dm.tl.rank_features(b, "condition", sample_key=sample_key, passes=args.passes, epochs=args.epochs,
                            min_epochs=1, patience=3, threads=args.threads, device="cpu", seed=args.seed_offset,
                            interaction_max_features=args.screen_features)
    except InputError as err:
        if "accuracy gate" not in str(err):
            raise
        return [], 0, 0, float("nan"), {}, True    # no pass beat the majority rate: the run reports nothing
    res = b.uns["deepmapper"]
    ranking = res["ranking"]
    import scanpy as sc

    # the disease class's own list (scanpy's names), as a user of rank_genes_groups reads it
    parts = {f"{'dm+samples' if sample_key else 'dm'}, disease list":
             list(sc.get.rank_genes_groups_df(b, group="disease", key="deepmapper")["names"])}
    # with the sample key, the two factors of the rank on their own
    if "sample_p" in ranking.columns:
        parts["dm model alone"] = list(ranking.sort_values("model_rank", kind="stable").index)
        parts["sample test alone"] = list(ranking.assign(p=ranking["sample_p"].fillna(1.0)).sort_values(
            ["p", "model_rank"], kind="stable").index)
    n_sig = int((ranking["sample_q"] < 0.05).sum()) if "sample_q" in ranking.columns else -1
    pairs = res.get("pairs")
    n_pairs = 0 if pairs is None or len(pairs) == 0 else int((pairs["q_value"] < 0.05).sum()) \
        if "q_value" in pairs.columns else len(pairs)
    return (list(ranking.index), n_sig, n_pairs, float(res["evaluation"]["accuracy"]), parts,
            int(res["summary"]["n_passes_accepted"]) == 0)


def run_baselines(adata, args) -> dict:
    """{method: (order, n significant)} and logistic accuracies by cells and by donors."""
    from deepmapper import io
    from deepmapper.engine import baselines, pseudobulk
    from deepmapper.config import Config
    from deepmapper.engine.samples import bh
    from deepmapper.engine.split import make_split
    from scipy import stats

    cfg = Config().with_params({"seed": args.seed_offset})
    by_cells = io.from_anndata(adata, label_key="condition")
    by_donor = io.from_anndata(adata, label_key="condition", sample_key="donor")
    codes, classes = io.labels(by_cells)
    out = {}
    z = baselines.wilcoxon_z(by_cells.X, codes, len(classes))[1]
    q = bh(2 * stats.norm.sf(np.abs(z)))
    names = np.asarray(by_cells.var_names)
    out["wilcoxon"] = (list(names[np.argsort(-np.abs(z), kind="stable")]), int((q < 0.05).sum()))
    acc = {}
    for name, ds, samples in (("cells", by_cells, None), ("donors", by_donor, io.samples(by_donor))):
        split = make_split(codes, cfg, classes=classes, samples=samples,
                           blocks=None if samples is None else io.sample_blocks(by_donor))
        table, info = baselines.logistic(ds, split, seed=args.seed_offset)
        acc[name] = info["accuracy"]
        if name == "cells":
            out["logistic"] = (list(table["feature"]), -1)
    table, info = pseudobulk.baseline(by_donor, classes)
    out["pseudobulk"] = (list(table["feature"]), int((table["padj"] < 0.05).sum()))
    return out, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--donors", type=int, nargs="+", default=[3, 6, 12], help="donors per condition")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="data seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--genes", type=int, default=1000)
    ap.add_argument("--cells", type=int, default=150, help="mean cells per donor")
    ap.add_argument("--outliers", type=int, default=1, help="disease donors carrying the one-donor genes")
    ap.add_argument("--lfc", type=float, default=0.8, help="condition effect of the true genes (natural log)")
    ap.add_argument("--outlier-lfc", type=float, default=2.5, help="effect of the one-donor genes in their donor")
    ap.add_argument("--screen-features", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--null-seeds", type=int, default=0,
                    help="extra nulls (DeepMapper with the sample key and pseudobulk DESeq2 only)")
    ap.add_argument("--null-donors", type=int, default=6, help="donors per condition of the extra nulls")
    ap.add_argument("--skip", nargs="+", choices=["default", "null"], default=[],
                    help="leave out DeepMapper without a sample key (default) or the null of each seed (null), "
                         "e.g. to measure a change to the rank with a sample key alone")
    ap.add_argument("--quick", action="store_true", help="4 and 8 donors, 2 seeds, 400 genes, 3 passes x 8 epochs")
    ap.add_argument("--paired", action="store_true",
                    help="a paired design (donors.simulate_paired: every donor under both conditions; --donors "
                         "counts donors); no null (shuffling conditions between donors would break the pairs)")
    args = ap.parse_args()
    if args.paired:
        args.skip = sorted(set(args.skip) | {"null"})
    if args.quick:
        args.donors, args.seeds, args.passes, args.epochs, args.genes, args.cells = [4, 8], 2, 3, 8, 400, 80
        args.screen_features = 400
    logging.basicConfig(level=logging.ERROR)
    import torch

    from deepmapper.datasets import donors

    torch.set_num_threads(args.threads)
    rows = []
    t0 = time.perf_counter()
    for k in args.donors:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            simulate = donors.simulate_paired if args.paired else donors.simulate
            real = simulate(k, n_genes=args.genes, mean_cells=args.cells, n_outliers=args.outliers,
                            lfc=args.lfc, outlier_lfc=args.outlier_lfc, seed=seed)
            truth = real.uns["truth"]
            data = [("planted", real)] + ([] if "null" in args.skip else [("null", _null(donors, k, args, seed))])
            for kind, adata in data:
                first = len(rows)
                base, acc = run_baselines(adata, args)
                for method, (order, n_sig) in base.items():
                    rows.append({"donors": k, "seed": seed, "data": kind, "method": method, "sig": n_sig,
                                 "pairs": -1, **top_counts(order, truth)})
                for method, key in (("dm", None), ("dm+samples", "donor"))[1 if "default" in args.skip else 0:]:
                    order, n_sig, n_pairs, accuracy, parts, failed = run_dm(adata, key, args)
                    rows.append({"donors": k, "seed": seed, "data": kind, "method": method, "sig": n_sig,
                                 "pairs": n_pairs, "gate_failed": int(failed), **top_counts(order, truth)})
                    for part, part_order in parts.items():
                        rows.append({"donors": k, "seed": seed, "data": kind, "method": part, "sig": -1,
                                     "pairs": -1, **top_counts(part_order, truth)})
                    acc[method] = accuracy
                rows.append({"donors": k, "seed": seed, "data": kind, "method": "accuracy", **{
                    "dm_by_cells": acc.get("dm", np.nan), "dm_by_donors": acc["dm+samples"],
                    "logistic_by_cells": acc["cells"], "logistic_by_donors": acc["donors"]}})
                print(f"  {k} donors/condition, seed {seed}, {kind}: done ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
                for row in rows[first:]:               # this data's rows as they come (a cut run keeps them)
                    print("    " + json.dumps(row), flush=True)
    import pandas as pd

    if rows:                       # --seeds 0: the extra nulls only
        df = pd.DataFrame(rows)
        ranks = df[df["method"] != "accuracy"]
        print("\nTop 20 / 50 (mean over seeds): true condition genes (of 12) and one-donor genes (of 12); "
              "'sig' = features called significant (-1: the method has no such call), 'pairs' = screen pairs reported, "
              "'gate_failed' = share of runs where no pass passed the accuracy gate (without a sample key the run "
              "reports nothing; with one the sample-level test ranks alone)")
        cols = ["true@20", "one@20", "true@50", "one@50", "sig", "pairs", "gate_failed"]
        print(ranks.groupby(["data", "donors", "method"], sort=False)[cols].mean().round(2).to_string())
        null = ranks[ranks["data"] == "null"]
        if len(null):                                  # not with --skip null
            print("\nNull (conditions shuffled between donors): runs with any significant feature / any pair, of "
                  f"{len(null[['donors', 'seed']].drop_duplicates())} runs per method")
            print(null.groupby("method").apply(lambda g: pd.Series({
                "runs_any_sig": int((g["sig"] > 0).sum()), "runs_any_pair": int((g["pairs"] > 0).sum()),
                "runs_gate_failed": int(g["gate_failed"].fillna(0).sum())}), include_groups=False).to_string())
        accs = df[df["method"] == "accuracy"]          # NaN: every pass failed the gate
        print("\nHeld-out accuracy, cells held out (donors also in training) vs whole donors held out:")
        print(accs.groupby(["data", "donors"])[["dm_by_cells", "dm_by_donors", "logistic_by_cells",
                                                 "logistic_by_donors"]].mean().round(3).to_string())
    if args.null_seeds:
        _more_nulls(donors, args, t0)
    print(f"\n{time.perf_counter() - t0:.0f} s")


def _null(donors, k: int, args, seed: int):
    """The null: the generator without condition genes (lfc 0; donor effects, cell-type mixes and the
    outlier donor's genes kept), conditions then shuffled between whole donors. A shuffle of the
    planted data is not a null: whenever most disease donors land on one side the true genes still
    differ between the conditions."""
    return donors.null(donors.simulate(k, n_genes=args.genes, mean_cells=args.cells, n_outliers=args.outliers,
                                       lfc=0.0, outlier_lfc=args.outlier_lfc, seed=seed), seed=seed)


def _more_nulls(donors, args, t0: float) -> None:
    """``--null-seeds`` nulls at ``--null-donors`` per condition for the methods with a sample-level error
    control (DeepMapper with the sample key: sample_q and its pairs; pseudobulk DESeq2: padj)."""
    import pandas as pd

    from deepmapper import io
    from deepmapper.engine import pseudobulk

    rows = []
    for seed in range(1000, 1000 + args.null_seeds):
        adata = _null(donors, args.null_donors, args, seed)
        table, _ = pseudobulk.baseline(io.from_anndata(adata, label_key="condition", sample_key="donor"),
                                       list(donors.CONDITIONS))
        _, n_sig, n_pairs, _, _, failed = run_dm(adata, "donor", args)
        rows.append({"seed": seed, "dm+samples sig": n_sig, "dm+samples pairs": n_pairs,
                     "gate failed": int(failed), "pseudobulk sig": int((table["padj"] < 0.05).sum())})
        print(f"  null {len(rows)}/{args.null_seeds} ({args.null_donors} donors/condition): {rows[-1]} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    print(f"\nNull, {args.null_donors} donors per condition, {len(df)} seeds: runs with any significant feature "
          f"(DeepMapper sample_q < 0.05: {int((df['dm+samples sig'] > 0).sum())}; pseudobulk DESeq2 padj < 0.05: "
          f"{int((df['pseudobulk sig'] > 0).sum())}), runs with any pair (DeepMapper with the sample key: "
          f"{int((df['dm+samples pairs'] > 0).sum())}), runs failing the gate {int(df['gate failed'].sum())}")


if __name__ == "__main__":
    main()
