#!/usr/bin/env python3
"""The whole default run on a generated sparse atlas, as a user runs it: ``deepmapper run`` on an h5ad.

Generates ``--cells`` x ``--features`` sparse counts (``synthetic.sparse_matrix``: Bernoulli
background, per-class markers detected more often and tripled), writes them as an h5ad, runs
``deepmapper run --input atlas.h5ad --label-key label`` with the default settings (report
included) in a child process, and prints: wall time, CPU seconds (child, all threads), peak
RSS of the child, ensembled held-out accuracy, logistic regression on the same held-out cells,
and planted markers among the top ``--top`` features of findings.tsv (markers: the features
whose class means differ more than 8-fold, read off the generated matrix). The issue's target
is printed beside each figure.

    python bench/atlas.py [--cells 50000] [--features 20000] [--density 0.05] [--set PARAM=VALUE]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_HOURS, TARGET_RSS_GIB = 1.5, 6.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=50_000)
    ap.add_argument("--features", type=int, default=20_000)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--markers", type=int, default=20, help="markers per class")
    ap.add_argument("--boost", type=float, default=0.2, help="extra detection rate of a marker in its class")
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep the input and results here")
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="a run option as --PARAM VALUE, e.g. --set passes=2 (repeatable)")
    args = ap.parse_args()

    import anndata as ad
    import pandas as pd

    from deepmapper.datasets.synthetic import sparse_matrix

    work = args.keep or Path(tempfile.mkdtemp(prefix="dm-atlas-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    X, labels = sparse_matrix(args.cells, args.features, args.density, seed=args.seed, n_classes=args.classes,
                              n_markers=args.markers, marker_boost=args.boost)
    means = np.vstack([np.asarray(X[labels == c].mean(axis=0)).ravel() for c in np.unique(labels)])
    markers = set(np.flatnonzero((means.max(0) / np.maximum(means.min(0), 1e-9)) > 8.0))
    path = work / "atlas.h5ad"
    obs = pd.DataFrame({"label": pd.Categorical(labels)}, index=[f"c{i}" for i in range(X.shape[0])])
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])])).write_h5ad(path)
    print(f"generated {args.cells:,} x {args.features:,} ({X.nnz:,} non-zeros) in {time.perf_counter() - t0:.0f} s; "
          f"{len(markers)} planted markers", flush=True)
    del X

    out = work / "results"
    cmd = [sys.executable, "-c", "from deepmapper.cli import main; main()", "run", "--input", str(path),
           "--label-key", "label", "--outdir", str(out)]
    for item in args.set:
        key, _, value = item.partition("=")
        cmd += [f"--{key.replace('_', '-')}", value]
    print(" ".join(cmd[3:]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t1 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t1
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    rss = after.ru_maxrss / 1024 ** 2                      # Linux: KiB; the largest child (the run)
    if rc != 0:
        raise SystemExit(f"deepmapper run failed (exit {rc}) after {wall:.0f} s")

    ev = json.loads((out / "evaluation.json").read_text())
    base = json.loads((out / "baselines" / "baselines.json").read_text())
    top = pd.read_csv(out / "findings.tsv", sep="\t")["feature"].head(args.top)
    found = sum(int(str(f)[1:]) in markers for f in top)
    rows = [("wall time", f"{wall / 3600:.2f} h ({wall:.0f} s)", f"< {TARGET_HOURS} h"),
            ("CPU seconds (all threads)", f"{cpu:.0f}", ""),
            ("peak RSS of the run", f"{rss:.2f} GiB", f"< {TARGET_RSS_GIB} GiB"),
            ("ensembled held-out accuracy", f"{ev['accuracy']:.3f}", f"logistic {base['logistic']['accuracy']:.3f}"),
            (f"planted markers in the top {args.top}", f"{found}/{min(args.top, len(markers))}", "")]
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:{width}s}  {value:>22s}  {target}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
