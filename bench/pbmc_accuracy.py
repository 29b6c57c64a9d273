#!/usr/bin/env python3
"""pbmc68k_reduced with the default configuration: accuracy against logistic regression, marker genes.

Prints per-pass and arrangement-ensembled held-out accuracy next to the logistic
regression baseline on the same held-out cells, and the top genes per class with
known markers marked. "cpu seconds" (all threads of the process) measures the cost
on a shared machine, where wall time depends on the other work running.

    python bench/pbmc_accuracy.py [--passes 10] [--seed 0 1 2] [--backbone cnn] [--set PARAM=VALUE]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

MARKERS = {
    "CD14+ Monocyte": ["LYZ", "S100A8", "S100A9", "CD14", "FCN1", "FCGR3A"],
    "CD19+ B": ["CD79A", "CD79B", "MS4A1", "CD19", "IGJ"],
    "CD56+ NK": ["GNLY", "NKG7", "GZMB", "PRF1", "KLRD1"],
    "CD8+ Cytotoxic T": ["CD8A", "CD8B", "GZMH", "CCL5", "NKG7"],
    "Dendritic": ["FCER1A", "CST3", "CLEC10A", "HLA-DQA1"],
    "CD34+": ["CD34", "PRSS57", "SPINK2"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=None)
    ap.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2],
                    help="run seeds (each gives its own held-out split); default 0 1 2")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="any other run parameter, e.g. --set learning_rate=1e-3 (repeatable)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--outdir", type=Path, default=None, help="keep the results of the first seed here")
    args = ap.parse_args()

    from deepmapper.config import Config
    from deepmapper.pipeline.demo import LABEL_KEY, demo_input
    from deepmapper.pipeline.runner import run

    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = yaml.safe_load(value)
    rows = []
    for i, seed in enumerate(args.seed):
        params = {k: v for k, v in {"passes": args.passes, "seed": seed, "backbone": args.backbone}.items()
                  if v is not None}
        cfg = Config().with_params({**extra, **params})
        with tempfile.TemporaryDirectory() as tmp:
            out = args.outdir if (args.outdir and i == 0) else Path(tmp)
            t0, c0 = time.perf_counter(), time.process_time()
            summary = run([str(demo_input(out))], out, cfg, label_key=LABEL_KEY, report=False, progress=False)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            ev = json.loads((out / "evaluation.json").read_text())
            base = json.loads((out / "baselines" / "baselines.json").read_text())
        rows.append({"seed": seed, "mean per pass": summary["mean_accuracy"], "ensembled": ev["accuracy"],
                     "logistic": base["logistic"]["accuracy"], "majority": ev["majority_rate"],
                     "ratio": ev["accuracy"] / base["logistic"]["accuracy"], "seconds": secs,
                     "cpu seconds": cpu})
        if i == 0:
            _detail(summary, cfg, ev, base, secs, args.top)
    print("\nper seed (same held-out cells for both methods within a seed):")
    width = max(len(k) for k in rows[0])
    print("  ".join(f"{k:>{width}s}" for k in rows[0]))
    for row in rows:
        print("  ".join(f"{v:>{width}d}" if isinstance(v, int) else f"{v:>{width}.3f}" for v in row.values()))
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    print(f"{'mean':>{width}s}  " + "  ".join(f"{v:>{width}.3f}" for v in mean.values()))
    # both are fractions of the same held-out cells: compare at 1e-6 (evaluation.json keeps 6 decimals)
    print(f"ensembled >= logistic on {sum(round(r['ensembled'], 6) >= round(r['logistic'], 6) for r in rows)}/{len(rows)} seeds")


def _detail(summary, cfg, ev, base, secs, top_n) -> None:
    acc = summary["accuracies"]
    print(f"pbmc68k_reduced, {summary['n_cells']} cells x {summary['n_features']} genes, "
          f"{len(summary['classes'])} classes; backbone {cfg.backbone.kind}, seed {cfg.run.seed}, "
          f"{summary['n_passes_accepted']}/{summary['n_passes_run']} passes accepted, {secs:.1f} s")
    print(f"held-out accuracy per pass: {', '.join(f'{a:.3f}' for a in acc)}")
    print(f"  mean per pass            {summary['mean_accuracy']:.3f}")
    print(f"  arrangement-ensembled    {ev['accuracy']:.3f}")
    print(f"  logistic regression      {base['logistic']['accuracy']:.3f}   (same held-out cells)")
    print(f"  majority class           {ev['majority_rate']:.3f}")
    print(f"  ensembled / logistic     {ev['accuracy'] / base['logistic']['accuracy']:.3f}")
    print("\ntop genes per class (* = known marker):")
    for cls, top in summary["per_class_top"].items():
        markers = set(MARKERS.get(cls, []))
        shown = [g + ("*" if g in markers else "") for g in top[:top_n]]
        print(f"  {cls:30s} {', '.join(shown)}")


if __name__ == "__main__":
    main()
