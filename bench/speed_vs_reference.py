#!/usr/bin/env python
"""Speed and memory of the DeepMapper-NF engine against the reference implementation.

Runs our engine (``deepmapper.engine.train``) and the reference (PyPI ``pydeepmapper==1.0.2``,
``pydeepmapper.runner.run``) side by side on the same data, passes, epochs and backbone
shape (``cnn_small``: conv 16 -> conv 32 -> global average pool -> linear), on CPU with
the same number of threads, and prints one table per case:

- wall time of the whole child process (python start, imports, data, engine, first pass
  included) and of the engine call alone, peak RSS of the child (``ru_maxrss`` from
  ``os.wait4``), mean held-out accuracy, and the ratios reference / ours;
- throughput: images per second through the engine and the achieved fraction of this
  machine's fp32 matrix-multiply rate, measured in the same run on the same threads
  (model FLOPs counted per image from its layers).

Each side runs in its own subprocess; the two sides alternate so that background load
affects both. Equal work: early stopping cannot fire (``min_epochs = epochs``; the
reference's default ``min_epochs=40`` already exceeds the epochs used), no
augmentation, the same held-out fraction (0.25), validation fraction (0.15), batch
size (64), integrated gradients with 32 steps on 64 held-out cells.

Cases (``--case``, repeatable; default pbmc and sparse5k):

- ``pbmc``: scanpy's pbmc68k_reduced (700 cells x 765 genes, X z-scored), 3 passes x 20 epochs.
- ``sparse5k``: generated 5,000 x 20,000 CSR matrix, 10 % non-zero, 1 pass x 2 epochs.
- ``sparse100k``: generated 100,000 x 30,000 CSR, 5 % non-zero, 1 pass x 1 epoch, ours only
  (the reference must densify it: the dense matrix alone is 11.2 GiB, its image stack
  another 11.3 GiB); attribution capped at 64 cells.
- ``scaling``: ours only, time per pass against cells, features and arrangements per step.

Install the reference ONLY for this benchmark and never let it change torch::

    pip install pydeepmapper==1.0.2 --no-deps

Usage::

    python bench/speed_vs_reference.py --case pbmc --case sparse5k --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)

CASES = {
    "pbmc": dict(passes=3, epochs=20),
    "sparse5k": dict(cells=5000, features=20000, density=0.10, passes=1, epochs=2),
    "sparse100k": dict(cells=100_000, features=30_000, density=0.05, passes=1, epochs=1),
}
TEST_FRACTION, VAL_FRACTION, BATCH, LR = 0.25, 0.15, 64, 1e-3
IG_STEPS, ATTR_CELLS = 32, 64


# -- data (built identically in every child) ---------------------------------------------

def load_case(case: str):
    """(X, labels as str array): dense for pbmc, CSR for the generated matrices."""
    import numpy as np

    if case == "pbmc":
        import scanpy as sc

        adata = sc.datasets.pbmc68k_reduced()
        return np.asarray(adata.X, dtype=np.float32), adata.obs["bulk_labels"].astype(str).to_numpy()
    from deepmapper.datasets.synthetic import sparse_matrix

    c = CASES[case]
    return sparse_matrix(c["cells"], c["features"], c["density"], seed=0)


# -- FLOP counting -----------------------------------------------------------------------

def model_flops(model, side: int) -> dict:
    """Forward FLOPs per image (2 per multiply-add) of conv and linear layers, and of the first conv."""
    import torch
    import torch.nn as nn

    x = torch.zeros(1, 1, side, side)
    counts, first, hooks = [], [], []

    def add(inp, flops):
        counts.append(flops)
        if inp[0].data_ptr() == x.data_ptr():   # reads the image itself: no input gradient needed
            first.append(flops)

    def conv(mod, inp, out):
        add(inp, 2.0 * out.numel() * mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups))

    def lin(mod, inp, out):
        add(inp, 2.0 * out.numel() * mod.in_features)

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin))
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return {"forward": sum(counts), "first": sum(first)}


def work_flops(fl: dict, *, n_train: int, n_val: int, n_test: int, n_attr: int, epochs: int, passes: int) -> float:
    """FLOPs of the whole run: training (forward + input and weight gradients; layers
    reading the image need no input gradient), validation every epoch, held-out prediction, and IG
    (forward + input gradient per path point)."""
    fwd = fl["forward"]
    train = 3 * fwd - fl["first"]
    per_pass = epochs * (n_train * train + n_val * fwd) + n_test * fwd + n_attr * IG_STEPS * (2 * fwd)
    return passes * per_pass


def matmul_rate(threads: int) -> float:
    """Sustained fp32 GEMM FLOP/s on ``threads`` threads (best of a few 2048^2 products)."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=c)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b, out=c)
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t))
    return best


# -- the two sides (run inside a child process) --------------------------------------------

def child_ours(case: str, threads: int, extra: dict) -> dict:
    t0 = time.perf_counter()
    import anndata as ad
    import numpy as np
    import pandas as pd
    import torch

    from deepmapper.engine import data as data_mod
    from deepmapper.engine import train
    from deepmapper.model import transform
    from deepmapper.config import Config

    torch.set_num_threads(threads)
    for name in ("MICRO_BATCH_BYTES", "EVAL_BYTES", "CHANNELS_LAST_SIDE"):   # tuning sweeps
        if name in extra:
            setattr(train, name, extra.pop(name))
    X, labels = load_case(case)
    c = {**CASES.get(case, {}), **extra}
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"label": pd.Categorical(labels)},
                                             index=[f"c{i}" for i in range(X.shape[0])]))
    adata.var_names = [f"f{j}" for j in range(X.shape[1])]
    adata.uns["deepmapper"] = {"label_key": "label"}
    params = {"backbone": c.get("backbone", "cnn_small"), "epochs": c["epochs"], "min_epochs": c["epochs"],
              "passes_per_step": c.get("passes_per_step", 4), "batch_size": BATCH, "learning_rate": LR,
              "test_fraction": TEST_FRACTION, "val_fraction": VAL_FRACTION, "noise_std": 0.0,
              "feature_dropout": 0.0, "ig_steps": IG_STEPS, "attribution_max_samples": ATTR_CELLS,
              "threads": threads, "device": "cpu", "scale": "none" if case == "pbmc" else "standard"}
    cfg = Config().with_params(params)
    t1 = time.perf_counter()
    data = data_mod.prepare(adata, cfg)
    results = train.train_passes(data, cfg, list(range(c["passes"])), progress=False)
    t2 = time.perf_counter()
    side = transform.square_side(data.n_features)
    from deepmapper.model import backbones

    fl = model_flops(backbones.build(cfg.backbone, data.n_classes, data.n_features), side)
    n_attr = results[0].meta["n_attributed"]
    return {"setup_s": t1 - t0, "engine_s": t2 - t1, "accuracy": float(np.mean([r.accuracy for r in results])),
            "flops": work_flops(fl, n_train=len(data.split.train), n_val=len(data.split.val),
                                n_test=len(data.split.test), n_attr=n_attr, epochs=c["epochs"],
                                passes=c["passes"]),
            "train_images": c["passes"] * c["epochs"] * len(data.split.train), "side": side,
            "fwd_flops_per_image": fl["forward"]}


def child_ref(case: str, threads: int, extra: dict) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from pydeepmapper import BackboneSpec, DeepMapperConfig
    from pydeepmapper.runner import run

    torch.set_num_threads(threads)
    X, labels = load_case(case)
    c = {**CASES.get(case, {}), **extra}
    classes, y = np.unique(labels, return_inverse=True)
    cfg = DeepMapperConfig(n_passes=c["passes"], epochs=c["epochs"], batch_size=BATCH, lr=LR,
                           test_size=TEST_FRACTION, val_size=VAL_FRACTION, attribution="integrated_gradients",
                           attribution_samples=ATTR_CELLS, ig_steps=IG_STEPS, seed=0,
                           backbone=BackboneSpec(kind="cnn_small"))
    assert cfg.min_epochs >= cfg.epochs  # its early stopping cannot fire: equal work
    t1 = time.perf_counter()
    # the reference takes a dense array (np.asarray inside run); densifying is part of its cost
    dense = X.toarray() if hasattr(X, "toarray") else X
    del X
    findings = run(dense, y, cfg)
    t2 = time.perf_counter()
    return {"setup_s": t1 - t0, "engine_s": t2 - t1, "accuracy": float(np.mean(findings.accuracies))}


def child_scaling(threads: int) -> dict:
    """Ours only: seconds per pass while varying cells, features and arrangements per step."""
    import anndata as ad
    import pandas as pd
    import torch

    from deepmapper.engine import data as data_mod
    from deepmapper.engine import train
    from deepmapper.config import Config
    from deepmapper.datasets.synthetic import sparse_matrix

    torch.set_num_threads(threads)
    base = dict(cells=2000, features=5000, k=1)
    grid = [base, {**base, "cells": 1000}, {**base, "cells": 4000}, {**base, "features": 2500},
            {**base, "features": 10000}, {**base, "k": 2}, {**base, "k": 4}]
    rows = []
    cache = {}
    for i, g in enumerate([base] + grid):   # the first run only warms up
        key = (g["cells"], g["features"])
        if key not in cache:
            X, labels = sparse_matrix(g["cells"], g["features"], 0.1, seed=1)
            adata = ad.AnnData(X=X, obs=pd.DataFrame({"label": pd.Categorical(labels)},
                                                     index=[f"c{j}" for j in range(X.shape[0])]))
            adata.var_names = [f"f{j}" for j in range(X.shape[1])]
            adata.uns["deepmapper"] = {"label_key": "label"}
            cache[key] = adata
        cfg = Config().with_params({"backbone": "cnn_small", "epochs": 2, "min_epochs": 2, "passes_per_step": g["k"],
                                    "noise_std": 0.0, "feature_dropout": 0.0, "ig_steps": IG_STEPS,
                                    "attribution_max_samples": ATTR_CELLS, "threads": threads, "device": "cpu",
                                    "test_fraction": TEST_FRACTION})
        data = data_mod.prepare(cache[key], cfg)
        t = time.perf_counter()
        train.train_passes(data, cfg, list(range(g["k"])), progress=False)
        if i:
            rows.append({**g, "s_per_pass": (time.perf_counter() - t) / g["k"]})
    return {"rows": rows}


# -- the parent: children, RSS, tables ------------------------------------------------------

def run_child(args: list[str]) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, HERE, "--child", *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if status != 0 or not lines:
        return {"failed": True, "status": status, "wall_s": wall, "rss_gib": usage.ru_maxrss / 2**20}
    return {**json.loads(lines[-1]), "wall_s": wall, "rss_gib": usage.ru_maxrss / 2**20}


def load_line() -> str:
    return open("/proc/loadavg").read().split()[0:3].__str__()


def head_to_head(case: str, threads: int, repeats: int, rate: float) -> None:
    runs = {"ours": [], "ref": []}
    for r in range(repeats):
        order = ("ref", "ours") if r % 2 == 0 else ("ours", "ref")
        for side in order:
            print(f"  [{case}] {side} run {r + 1}/{repeats} (load {load_line()})", file=sys.stderr, flush=True)
            runs[side].append(run_child([side, case, str(threads)]))
    best = {side: min((x for x in rs if not x.get("failed")), key=lambda x: x["wall_s"], default=None)
            for side, rs in runs.items()}
    c = CASES[case]
    print(f"\n## {case}: {c.get('passes')} pass(es) x {c.get('epochs')} epochs, cnn_small, CPU, {threads} threads "
          f"(best of {repeats}; load average {load_line()})")
    print("| side | process wall s | engine s | peak RSS GiB | held-out accuracy |")
    print("|---|---|---|---|---|")
    for side in ("ref", "ours"):
        b = best[side]
        if b is None:
            print(f"| {side} | failed | | {runs[side][-1]['rss_gib']:.2f} | |")
            continue
        print(f"| {side} | {b['wall_s']:.1f} | {b['engine_s']:.1f} | {b['rss_gib']:.2f} | {b['accuracy']:.3f} |")
    if best["ref"] and best["ours"]:
        o, f = best["ours"], best["ref"]
        print(f"| ratio ref/ours | {f['wall_s'] / o['wall_s']:.2f}x | {f['engine_s'] / o['engine_s']:.2f}x | "
              f"{f['rss_gib'] / o['rss_gib']:.2f}x | |")
        print_throughput(o, f, rate)


def print_throughput(o: dict, f: dict | None, rate: float) -> None:
    print(f"\nthroughput (engine time; {o['fwd_flops_per_image'] / 1e6:.1f} MFLOP forward per "
          f"{o['side']}x{o['side']} image; fp32 matmul rate here {rate / 1e9:.1f} GFLOP/s):")
    print("| side | training images/s | run GFLOP | achieved GFLOP/s | fraction of matmul rate |")
    print("|---|---|---|---|---|")
    for name, x in (("ref", f), ("ours", o)):
        if x is None:
            continue
        # same data, passes, epochs and model shape: the same FLOPs (the reference's BatchNorm not counted)
        gf = o["flops"] / x["engine_s"]
        print(f"| {name} | {o['train_images'] / x['engine_s']:.0f} | {o['flops'] / 1e9:.0f} | {gf / 1e9:.1f} | "
              f"{gf / rate:.0%} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        side, case, threads = sys.argv[2], sys.argv[3], int(sys.argv[4])
        extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
        fn = {"ours": child_ours, "ref": child_ref}.get(side)
        out = child_scaling(threads) if side == "scaling" else fn(case, threads, extra)
        print(json.dumps(out), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append", choices=["pbmc", "sparse5k", "sparse100k", "scaling"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="runs per side (alternating order); best is shown")
    a = ap.parse_args()
    cases = a.case or ["pbmc", "sparse5k"]
    print(f"# DeepMapper-NF vs pydeepmapper 1.0.2 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    rate = float(subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.dirname(HERE)!r}); "
                                 f"import speed_vs_reference as b; print(b.matmul_rate({a.threads}))"],
                                capture_output=True, text=True, check=True).stdout.strip())
    print(f"fp32 matmul rate on {a.threads} threads: {rate / 1e9:.1f} GFLOP/s")
    for case in cases:
        if case in ("pbmc", "sparse5k"):
            head_to_head(case, a.threads, a.repeats, rate)
        elif case == "sparse100k":
            o = run_child(["ours", case, str(a.threads), json.dumps({"backbone": "cnn"})])
            c = CASES[case]
            print(f"\n## sparse100k: {c['cells']:,} x {c['features']:,} CSR, {c['density']:.0%} non-zero, "
                  f"1 pass x 1 epoch, default backbone cnn, ours only (load average {load_line()})")
            if o.get("failed"):
                print(f"failed (status {o['status']}), peak RSS {o['rss_gib']:.2f} GiB")
                continue
            dense = c["cells"] * c["features"] * 4 / 2**30
            print(f"process wall {o['wall_s']:.0f} s, engine {o['engine_s']:.0f} s, peak RSS {o['rss_gib']:.2f} GiB, "
                  f"held-out accuracy {o['accuracy']:.3f}; the reference would need {dense:.1f} GiB for the dense "
                  f"matrix plus {dense:.1f} GiB for its image stack before training starts")
            print_throughput(o, None, rate)
        elif case == "scaling":
            s = run_child(["scaling", "scaling", str(a.threads)])
            print(f"\n## scaling (ours, cnn_small, 2 epochs, 10 % non-zero; load average {load_line()})")
            print("| cells | features | arrangements per step | s per pass |")
            print("|---|---|---|---|")
            for r in s.get("rows", []):
                print(f"| {r['cells']} | {r['features']} | {r['k']} | {r['s_per_pass']:.2f} |")


if __name__ == "__main__":
    main()
