#!/usr/bin/env python3
"""Ablation of the interaction path: what each part contributes.

On one planted data set (``synthetic.planted``, pair shape ``--shape``), the same run
seed and split, prints pair genes and markers in the top 20 / 50 and held-out
accuracy (ensembled) for:

- ``default``: screened arrangement (pairs side by side) + product channel + conv path;
- ``no product channel``: screened arrangement only (``--no-pair-channel``);
- ``random arrangement + product channel``: the products still fed, but every gene at
  a random pixel and each product at gene a's pixel (not beside gene b);
- ``no conv path``: the deep (convolutional) path's head fixed at zero, so the model is
  the wide path alone (the logistic fit on features + products);
- ``no interactions``: random arrangement, no product channel (``--no-interactions``).

The variants that have no config switch (random arrangement with products, no conv
path) are made by patching the trainer here, never in the library.

    python bench/interactions_ablation.py [--shape flip] [--cells 1200] [--features 1500] [--passes 4]
        [--marginal 12] [--pairs 4]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


@contextlib.contextmanager
def random_arrangement_with_products():
    from deepmapper.engine import train
    from deepmapper.model import transform

    old_arr, old_pix = train.member_arrangement, transform.pair_pixels

    def arrangement(data, seed):
        return transform.arrangement(data.n_features, seed)

    def pixels(perm, pairs):
        return transform.inverse(np.asarray(perm))[np.asarray(pairs).reshape(-1, 2)[:, 0]]

    train.member_arrangement, transform.pair_pixels = arrangement, pixels
    try:
        yield
    finally:
        train.member_arrangement, transform.pair_pixels = old_arr, old_pix


@contextlib.contextmanager
def no_conv_path():
    import torch

    from deepmapper.engine import train

    old = train._setup_group

    def setup(data, cfg, group, device):
        g = old(data, cfg, group, device)
        head = [n for n in g.net.params if n.startswith("deep.") and n.endswith(".weight")][-1]
        with torch.no_grad():
            for name in (head, head[:-len("weight")] + "bias"):
                g.net.params[name].zero_()
        g.trainable = []            # nothing trains: the model is the wide path alone
        return g

    train._setup_group = setup
    try:
        yield
    finally:
        train._setup_group = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="flip")
    ap.add_argument("--cells", type=int, default=1200)
    ap.add_argument("--features", type=int, default=1500)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--marginal", type=int, default=12, help="single-gene markers (fewer: the pairs carry more)")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from deepmapper.config import Config
    from deepmapper.pipeline.runner import run
    from deepmapper.datasets.synthetic import planted

    torch.set_num_threads(args.threads)
    adata, truth = planted(args.cells, args.features, n_marginal=args.marginal, n_combo=2 * args.pairs,
                           n_classes=args.classes,
                           seed=args.seed, pair_shape=args.shape)
    base = {"passes": args.passes, "seed": args.seed, "threads": args.threads}
    variants = [("default", {}, contextlib.nullcontext),
                ("no product channel", {"pair_channel": False}, contextlib.nullcontext),
                ("random arrangement + product channel", {}, random_arrangement_with_products),
                ("no conv path (wide path on features + products)", {}, no_conv_path),
                ("no interactions", {"interactions": False}, contextlib.nullcontext)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "planted.h5ad"
        adata.write_h5ad(path)
        for name, params, patch in variants:
            out = Path(tmp) / name.replace(" ", "_")
            t0 = time.perf_counter()
            with patch():
                summary = run([str(path)], out, Config().with_params({**base, **params}), label_key="label",
                              report=False, progress=False, baselines=False)
            ranked = pd.read_csv(out / "findings.tsv", sep="\t")["feature"].tolist()
            ev = json.loads((out / "evaluation.json").read_text())
            rows.append({"variant": name,
                         "pair genes@20": f"{sum(g in ranked[:20] for g in truth['combo'])}/{2 * args.pairs}",
                         "pair genes@50": f"{sum(g in ranked[:50] for g in truth['combo'])}/{2 * args.pairs}",
                         "markers@20": f"{sum(g in ranked[:20] for g in truth['marginal'])}/{args.marginal}",
                         "ensembled acc": ev["accuracy"], "mean pass acc": summary["mean_accuracy"],
                         "best epochs": ",".join(str(b) for b in summary["best_epochs"]),
                         "passes with products": summary.get("passes_with_pair_start", 0),
                         "seconds": time.perf_counter() - t0})
    print(f"ablation, shape {args.shape}: {args.cells} cells x {args.features} genes, {args.classes} classes, "
          f"{args.marginal} markers, {args.pairs} pairs, {args.passes} passes, seed {args.seed}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
