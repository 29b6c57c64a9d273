#!/usr/bin/env python3
"""Recall of genes that act only in combination, on three planted pair shapes.

For each shape of ``deepmapper.datasets.synthetic.planted`` (flip: the pair's correlation flips
in its class; and: co-activation, both genes on together only in the pair's class;
sum: the pair's latent sum above a threshold in its class), fixed seeds, prints per
method: pair genes and single-gene markers in the top 20 / top 50, planted pairs
reported exactly, held-out accuracy (same held-out cells for every method), wall time and, for
DeepMapper, CPU seconds (all threads).

Methods: the new default (``run``, interactions on); the same with
``--no-interactions``; the pair screen alone (genes by their best screened pair;
accuracy: logistic regression on the products of the screened pairs); logistic
regression; Wilcoxon; a 500-tree random forest (impurity importance).

    python bench/interactions_recall.py [--shape flip and sum] [--cells 1200] [--features 1500]
        [--passes 4] [--seed 0] [--threads 2] [--set PARAM=VALUE]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def recall(ranked, truth, k):
    top = set(list(ranked)[:k])
    return sum(t in top for t in truth)


def pairs_found(reported, truth_pairs) -> int:
    rep = {frozenset(p) for p in reported}
    return sum(frozenset(p) in rep for p in truth_pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs="+", default=["flip", "and", "sum"])
    ap.add_argument("--cells", type=int, default=1200)
    ap.add_argument("--features", type=int, default=1500)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--marginal", type=int, default=12)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--sparsity", type=float, default=0.6)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+",
                    default=["default", "no-interactions", "screen", "logistic", "wilcoxon", "forest"])
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE")
    args = ap.parse_args()

    import torch

    from deepmapper.config import Config
    from deepmapper.pipeline.runner import run
    from deepmapper.datasets.synthetic import planted

    torch.set_num_threads(args.threads)
    extra = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    all_rows = []
    for shape in args.shape:
        adata, truth = planted(args.cells, args.features, n_marginal=args.marginal, n_combo=2 * args.pairs,
                               n_classes=args.classes, seed=args.seed, sparsity=args.sparsity, pair_shape=shape)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "planted.h5ad"
            adata.write_h5ad(path)
            base_dir = None
            for method in ("default", "no-interactions"):
                if method not in args.methods and not (method == "default" and set(args.methods) &
                                                       {"screen", "logistic", "wilcoxon", "forest"}):
                    continue
                params = {"passes": args.passes, "seed": args.seed, "threads": args.threads, **extra}
                if method == "no-interactions":
                    params["interactions"] = False
                cfg = Config().with_params(params)
                out = Path(tmp) / method
                t0, c0 = time.perf_counter(), time.process_time()
                run([str(path)], out, cfg, label_key="label", report=False, progress=False,
                    baselines=method == "default")
                secs, cpu = time.perf_counter() - t0, time.process_time() - c0
                if method == "default":
                    base_dir = out
                if method not in args.methods:
                    continue
                ranked = pd.read_csv(out / "findings.tsv", sep="\t")["feature"].tolist()
                acc = json.loads((out / "evaluation.json").read_text())["accuracy"]
                placed = []
                if (out / "findings_pairs.tsv").is_file():
                    fp = pd.read_csv(out / "findings_pairs.tsv", sep="\t", dtype=str)
                    placed = list(zip(fp["feature_a"], fp["feature_b"]))
                rows.append({**_row(f"deepmapper {method}", ranked, truth, acc, secs,
                                    pairs_found(placed, truth["combo_pairs"]) if method == "default" else None),
                             "cpu seconds": cpu})
            info = json.loads((base_dir / "baselines" / "baselines.json").read_text())
            screen = pd.read_csv(base_dir / "interactions.tsv", sep="\t", dtype={"feature_a": str, "feature_b": str})
            q = Config().with_params(extra).interactions.q_threshold
            passed = screen[screen["q_value"] < q]
            if "screen" in args.methods:
                ranked = pd.read_csv(base_dir / "baselines" / "interactions.tsv", sep="\t")["feature"].tolist()
                t0 = time.perf_counter()
                _screen_only(adata, Config().with_params({"seed": args.seed, **extra}))
                acc = _products_accuracy(adata, passed, args.seed)
                rows.append(_row("pair screen alone", ranked, truth, acc, time.perf_counter() - t0,
                                 pairs_found(zip(passed["feature_a"], passed["feature_b"]), truth["combo_pairs"])))
            for method in ("logistic", "wilcoxon"):
                if method in args.methods:
                    ranked = pd.read_csv(base_dir / "baselines" / f"{method}.tsv", sep="\t")["feature"].tolist()
                    rows.append(_row(method, ranked, truth, info.get(method, {}).get("accuracy"),
                                     info.get(method, {}).get("seconds"), None))
            if "forest" in args.methods:
                ranked, acc, secs = _forest(adata, args.seed, args.threads)
                rows.append(_row("random forest (500 trees)", ranked, truth, acc, secs, None))
        print(f"\nshape {shape}: {args.cells} cells x {args.features} genes, {args.classes} classes, "
              f"{args.marginal} single-gene markers, {args.pairs} pairs ({2 * args.pairs} pair genes), "
              f"sparsity {args.sparsity}, seed {args.seed}; {len(passed)} screened pairs with q < {q}; "
              f"passes {args.passes}")
        table = pd.DataFrame(rows)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for r in rows:
            all_rows.append({"shape": shape, **r})
    if len(args.shape) > 1:
        print("\nall shapes:")
        print(pd.DataFrame(all_rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _screen_only(adata, cfg):
    """The screen as the run does it (timed by the caller)."""
    from deepmapper.engine import interactions
    from deepmapper.engine.data import prepare

    return interactions.screen_prepared(prepare(adata, cfg), cfg, progress=False)


def _split(adata, seed):
    from deepmapper import io
    from deepmapper.config import Config
    from deepmapper.engine.split import stratified_split

    codes, classes = io.labels(adata)
    r = Config().run
    split = stratified_split(codes, test_fraction=r.test_fraction, val_fraction=r.val_fraction, seed=seed,
                             classes=classes)
    return codes, np.sort(np.concatenate([split.train, split.val])), split.test


def _products_accuracy(adata, passed, seed):
    """Held-out accuracy of logistic regression on the standardised products of the screened pairs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(passed) == 0:
        return None
    codes, fit, test = _split(adata, seed)
    col = {g: i for i, g in enumerate(adata.var_names)}
    X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float64)
    X = (X - X[fit].mean(0)) / np.maximum(X[fit].std(0), 1e-8)
    Z = np.stack([X[:, col[a]] * X[:, col[b]] for a, b in zip(passed["feature_a"], passed["feature_b"])], 1)
    Z = StandardScaler().fit(Z[fit]).transform(Z)
    model = LogisticRegression(max_iter=2000).fit(Z[fit], codes[fit])
    return float(np.mean(model.predict(Z[test]) == codes[test]))


def _forest(adata, seed, threads):
    from sklearn.ensemble import RandomForestClassifier

    codes, fit, test = _split(adata, seed)
    X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)
    t0 = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=500, random_state=seed, n_jobs=threads).fit(X[fit], codes[fit])
    acc = float(np.mean(rf.predict(X[test]) == codes[test]))
    order = np.argsort(-rf.feature_importances_, kind="stable")
    return [str(adata.var_names[i]) for i in order], acc, time.perf_counter() - t0


def _row(name, ranked, truth, accuracy, secs, found):
    n_pair, n_mark = len(truth["combo"]), len(truth["marginal"])
    return {"method": name,
            "pair genes@20": f"{recall(ranked, truth['combo'], 20)}/{n_pair}",
            "pair genes@50": f"{recall(ranked, truth['combo'], 50)}/{n_pair}",
            "markers@20": f"{recall(ranked, truth['marginal'], 20)}/{n_mark}",
            "markers@50": f"{recall(ranked, truth['marginal'], 50)}/{n_mark}",
            "pairs exact": "" if found is None else f"{found}/{len(truth['combo_pairs'])}",
            "held-out acc": accuracy, "seconds": secs}


if __name__ == "__main__":
    main()
