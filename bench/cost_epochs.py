#!/usr/bin/env python3
"""Which epochs validation keeps: the best epoch's distribution and early-stopping rules.

Each pass is trained for ``--epochs`` epochs with early stopping off (``min_epochs =
epochs``), keeping every pass's validation-loss curve. A member's trajectory does not
depend on when it (or a member stacked with it) stops: the batch order comes from the run
seed and a stopped member only stops being *recorded*. So any rule ``(min_epochs,
patience, min_delta)`` can be replayed on the recorded curves exactly: the epoch it stops
at, and the epoch whose weights it restores (restore-best-weights). A rule "keeps what
validation keeps" on a pass when it restores the same epoch as the reference rule.

Cases: ``pbmc`` (pbmc68k_reduced, the default run's data), ``planted`` (the planted
1,500 x 3,000 flip case of docs/accuracy.md, shrunk with --planted-cells), ``sparse`` (a
generated sparse case, ``synthetic.sparse_matrix``).

    python bench/cost_epochs.py [--case pbmc planted sparse] [--epochs 30] [--passes 8]
        [--seed 0] [--threads 2] [--time]

``--time`` also runs the default run (``runner.analyse``, interactions on) under the old
rule (min_epochs 10, patience 8) and the new defaults and prints CPU seconds
(``time.process_time``, all threads) and ensembled held-out accuracy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

OLD = {"min_epochs": 10, "patience": 8, "min_delta": 1e-3}
RULES = [(10, 8), (5, 5), (3, 4), (3, 3), (2, 3), (2, 2), (1, 3), (1, 2)]


def load_case(name: str, args):
    if name == "pbmc":
        import scanpy as sc

        from deepmapper import io

        adata = sc.datasets.pbmc68k_reduced()
        return io.from_anndata(adata, label_key="bulk_labels", source="pbmc68k_reduced")
    if name == "planted":
        from deepmapper.datasets.synthetic import planted

        adata, _ = planted(args.planted_cells, args.planted_features, n_marginal=12, n_combo=8, n_classes=3,
                           seed=args.seed, sparsity=0.6, pair_shape="flip")
        return adata
    if name == "sparse":
        from deepmapper import io
        from deepmapper.datasets.synthetic import sparse_matrix

        X, labels = sparse_matrix(args.sparse_cells, args.sparse_features, 0.05, seed=args.seed, n_classes=4,
                                  n_markers=20, marker_boost=0.2)
        return io.build_dataset(X, [f"c{i}" for i in range(X.shape[0])], [f"g{j}" for j in range(X.shape[1])],
                                labels, label_key="label", source="sparse_matrix")
    raise SystemExit(f"unknown case {name}")


def replay(curve, min_epochs: int, patience: int, min_delta: float):
    """(stop epoch, restored epoch) of the rule on one validation curve; stop None when it never fires."""
    from deepmapper.engine.earlystop import EarlyStopping

    es = EarlyStopping(patience, min_delta, min_epochs)
    for v in curve:
        if es.step(v):
            return es.stopped_epoch, es.best_epoch
    return None, es.best_epoch


def curves(adata, cfg, passes: int):
    from deepmapper.engine import interactions
    from deepmapper.engine.data import prepare
    from deepmapper.pipeline.runner import use_interactions
    from deepmapper.engine.train import train_passes

    data = prepare(adata, cfg)
    if cfg.interactions.enabled:
        screen = interactions.screen_prepared(data, cfg, progress=False)
        use_interactions(data, cfg, interactions.table_text(screen))
    c0 = time.process_time()
    res = train_passes(data, cfg, list(range(passes)), progress=False)
    return res, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs="+", default=["pbmc", "planted", "sparse"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--passes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--planted-cells", type=int, default=1500)
    ap.add_argument("--planted-features", type=int, default=3000)
    ap.add_argument("--sparse-cells", type=int, default=6000)
    ap.add_argument("--sparse-features", type=int, default=4000)
    ap.add_argument("--time", action="store_true", help="also time the default run, old rule vs new defaults")
    args = ap.parse_args()

    import torch

    from deepmapper.config import Config

    torch.set_num_threads(args.threads)
    new = Config().run
    rules = sorted(set(RULES) | {(new.min_epochs, new.patience)}, reverse=True)
    for name in args.case:
        adata = load_case(name, args)
        cfg = Config().with_params({"seed": args.seed, "epochs": args.epochs, "min_epochs": args.epochs,
                                    "threads": args.threads})
        res, cpu = curves(adata, cfg, args.passes)
        best = [int(np.nanargmin(r.val_loss)) + 1 for r in res]
        print(f"\n== {name}: {adata.n_obs} cells x {adata.n_vars} features, {len(res)} passes x {args.epochs} "
              f"epochs, no stopping: {cpu:.1f} CPU s ({cpu / (len(res) * args.epochs):.2f} per pass-epoch)")
        print("best epoch per pass (lowest validation loss over all epochs):", best)
        hist = np.bincount(best, minlength=args.epochs + 1)[1:]
        print("distribution:", {e + 1: int(n) for e, n in enumerate(hist) if n})
        ref = [replay(r.val_loss, OLD["min_epochs"], OLD["patience"], OLD["min_delta"]) for r in res]
        print(f"{'min_epochs':>10} {'patience':>8} {'mean epochs':>11} {'vs old':>7} {'same restored epoch':>19} "
              f"{'val-loss excess at restored':>27}")
        for m, p in rules:
            got = [replay(r.val_loss, m, p, OLD["min_delta"]) for r in res]
            ran = [s if s is not None else args.epochs for s, _ in got]
            old_ran = [s if s is not None else args.epochs for s, _ in ref]
            same = sum(g[1] == o[1] for g, o in zip(got, ref))
            censored = sum(s is None for s, _ in ref)
            excess = np.mean([r.val_loss[b - 1] - np.nanmin(r.val_loss) for r, (_, b) in zip(res, got)])
            mark = " <- default" if (m, p) == (new.min_epochs, new.patience) else ""
            print(f"{m:>10} {p:>8} {np.mean(ran):>11.1f} {np.mean(ran) / np.mean(old_ran):>6.0%} "
                  f"{same:>12}/{len(res)}{'*' if censored else ' '}      "
                  f"{excess:>27.4f}{mark}")
        if any(s is None for s, _ in ref):
            print(f"* the old rule had not stopped by epoch {args.epochs} in {sum(s is None for s, _ in ref)} "
                  f"pass(es); their restored epoch is the best up to {args.epochs}")
        if args.time:
            timed(name, adata, args)


def timed(name, adata, args) -> None:
    import torch

    from deepmapper.config import Config
    from deepmapper.pipeline.runner import analyse

    print(f"default run ({name}), {args.passes} passes, seed {args.seed}:")
    for label, params in (("old rule (10, 8)", OLD), ("new defaults", {})):
        cfg = Config().with_params({"seed": args.seed, "passes": args.passes, "threads": args.threads, **params})
        torch.manual_seed(0)
        c0, t0 = time.process_time(), time.perf_counter()
        out = analyse(adata, cfg, progress=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        ep = [p.stop_epoch for p in out["passes"]]
        print(f"  {label:<18} CPU {cpu:7.1f} s  wall {wall:6.1f} s  ensembled accuracy "
              f"{out['evaluation']['accuracy']:.3f}  epochs per pass {np.mean(ep):.1f}")


if __name__ == "__main__":
    main()
