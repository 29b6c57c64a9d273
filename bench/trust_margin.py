#!/usr/bin/env python3
"""The noise the trust check must tolerate, and the case it must catch (pbmc68k_reduced).

For each run seed (its own stratified held-out split) prints the per-pass held-out
accuracies (mean, lowest, highest, spread), the passes that ran to the epoch limit, the
logistic-regression baseline on the same held-out cells, the shortfall (logistic minus mean
per pass) and the verdict written in findings.json["trust"]. The margin of
``deepmapper.results.findings.TRUST_MARGIN_FLOOR`` must sit above the shortfalls of the good configurations and far
below that of the known bad one (``--label-key louvain --backbone cnn_small``).

    python bench/trust_margin.py [--seed 0 1 2] [--label-key bulk_labels] [--backbone cnn] [--passes 10]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--label-key", default="bulk_labels")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--passes", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from deepmapper.config import Config
    from deepmapper.pipeline.demo import demo_input
    from deepmapper.pipeline.runner import run

    print("label key, backbone, seed, mean per pass, lowest, highest, spread, at epoch limit, logistic, "
          "shortfall, trustworthy, reasons, seconds")
    for seed in args.seed:
        params = {k: v for k, v in {"passes": args.passes, "seed": seed, "backbone": args.backbone,
                                    "threads": args.threads}.items() if v is not None}
        cfg = Config().with_params(params)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            t0 = time.perf_counter()
            run([str(demo_input(out))], out, cfg, label_key=args.label_key, report=False, progress=False)
            secs = time.perf_counter() - t0
            summary = json.loads((out / "findings.json").read_text())
            base = json.loads((out / "baselines" / "baselines.json").read_text())
        used = set(summary["used_passes"])
        acc = [a for a, i in zip(summary["accuracies"], summary["pass_indices"]) if i in used]
        at_limit = sum(s >= cfg.run.epochs and not e for s, e in zip(summary["stop_epochs"], summary["early_stopped"]))
        mean = sum(acc) / len(acc)
        logistic = base["logistic"]["accuracy"]
        trust = summary.get("trust", {})
        print(f"{args.label_key}, {cfg.backbone.kind}, {seed}, {mean:.3f}, {min(acc):.3f}, {max(acc):.3f}, "
              f"{max(acc) - min(acc):.3f}, {at_limit}/{len(summary['stop_epochs'])}, {logistic:.3f}, "
              f"{logistic - mean:+.3f}, {trust.get('trustworthy')}, {'; '.join(trust.get('reasons', []))}, "
              f"{secs:.0f}", flush=True)


if __name__ == "__main__":
    main()
