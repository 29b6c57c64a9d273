#!/usr/bin/env python
"""De-novo front end on generated data: are the planted novel transcripts assembled and ranked?

1. ``deepmapper.datasets.seqsim`` writes a reference (sampled from a Markov model), novel
   transcripts (sampled from a model learned on the reference), reads and a
   samplesheet; ``n_novel_de`` of the novel transcripts are differentially
   expressed between the two groups.
2. ``deepmapper denovo run`` (HISAT2, rnaSPAdes, Salmon) builds the hybrid
   reference, the table and ``dataset.h5ad``.
3. Recovery: a planted transcript is recovered when one DENOVO contig covers
   >= 90% of it at >= 95% identity (``deepmapper.denovo.recovery``).
4. ``deepmapper run`` ranks the features; the rank of each planted transcript's
   contig is printed next to the logistic-regression and Wilcoxon baselines.

Usage: python bench/denovo_recovery.py [--outdir DIR] [--seed S ...] [--passes N] [--epochs E] ...
Several seeds give one block each and a summary line. Not a timed test: one to
three minutes per seed on two shared cores with the defaults.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="one or more seeds (data and run)")
    ap.add_argument("--samples-per-group", type=int, default=6)
    ap.add_argument("--reads-per-sample", type=int, default=2000)
    ap.add_argument("--n-reference", type=int, default=40)
    ap.add_argument("--n-novel", type=int, default=6)
    ap.add_argument("--n-novel-de", type=int, default=4)
    ap.add_argument("--fold-change", type=float, default=6.0)
    ap.add_argument("--single-per-group", type=int, default=1, help="single-end samples per group (mixed design)")
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=10, help="'top features' means rank <= this")
    args = ap.parse_args(argv)
    root = args.outdir or Path(tempfile.mkdtemp(prefix="denovo_bench."))
    results = [one(args, seed, root / f"seed_{seed}") for seed in args.seed]
    if len(results) > 1:
        print(f"== {len(results)} seeds")
        print(f"recovered fraction: {[r['recovered_fraction'] for r in results]}")
        for key in results[0]:
            if key.endswith(f"_de_in_top{args.top}"):
                print(f"{key}: {[r[key] for r in results]} of {args.n_novel_de}")
    return 0


def one(args, seed: int, root: Path) -> dict:
    from deepmapper.denovo.fasta import read_fasta
    from deepmapper.denovo.recovery import planted_ranks, read_ranks, recovery
    from deepmapper.datasets.seqsim import SimConfig, simulate_experiment

    root.mkdir(parents=True, exist_ok=True)
    cfg = SimConfig(n_reference=args.n_reference, n_novel=args.n_novel, n_novel_de=args.n_novel_de,
                    samples_per_group=args.samples_per_group, reads_per_sample=args.reads_per_sample,
                    fold_change=args.fold_change, single_per_group=args.single_per_group, seed=seed)
    t0 = time.monotonic()
    sim = simulate_experiment(root / "sim", cfg)
    t_sim = time.monotonic() - t0

    t0 = time.monotonic()
    subprocess.run(["deepmapper", "-q", "denovo", "run", "--samplesheet", str(sim.samplesheet), "--reference",
                    str(sim.reference_fasta), "--outdir", str(root / "denovo"), "--threads", str(args.threads)],
                   check=True)
    t_denovo = time.monotonic() - t0

    contigs = read_fasta(root / "denovo" / "denovo.fa", allow_empty=True)
    frac, hits = recovery(sim.novel, contigs)

    t0 = time.monotonic()
    subprocess.run(["deepmapper", "-q", "run", "--input", str(root / "denovo" / "dataset.h5ad"), "--label-key", "label",
                    "--outdir", str(root / "run"), "--passes", str(args.passes), "--epochs", str(args.epochs),
                    "--seed", str(seed), "--no-report"], check=True)
    t_run = time.monotonic() - t0

    ranks = {"deepmapper": planted_ranks(hits, read_ranks(root / "run" / "findings.tsv"))}
    for method in ("logistic", "wilcoxon"):
        path = root / "run" / "baselines" / f"{method}.tsv"
        if path.exists():
            ranks[method] = planted_ranks(hits, read_ranks(path))
    n_features = len(read_ranks(root / "run" / "findings.tsv"))

    print(f"== seed {seed}")
    print(f"data: {len(sim.reference)} reference + {len(sim.novel)} novel transcripts "
          f"({len(sim.de_novel)} planted DE, fold change {cfg.fold_change}), {len(sim.samples)} samples x "
          f"{cfg.reads_per_sample} reads; {len(contigs)} DENOVO contigs; {n_features} features ranked")
    print(f"recovered (>= 95% identity over >= 90% length, one contig): {sum(h.recovered() for h in hits)}"
          f"/{len(hits)} = {frac:.2f}")
    header = f"{'novel':<10} {'DE':>3} {'identity':>8} {'coverage':>8}  " + " ".join(f"{m:>10}" for m in ranks)
    print(header)
    for h in hits:
        de = "yes" if h.query in sim.de_novel else "no"
        cells = " ".join(f"{str(ranks[m][h.query]):>10}" for m in ranks)
        print(f"{h.query:<10} {de:>3} {h.identity:>8.3f} {h.coverage:>8.3f}  {cells}")
    summary = {"recovered_fraction": frac, "n_features": n_features, "seconds": {"simulate": round(t_sim, 1),
               "denovo_run": round(t_denovo, 1), "deepmapper_run": round(t_run, 1)}}
    for m, r in ranks.items():
        de_ranks = [r[q] for q in sim.de_novel]
        summary[f"{m}_de_in_top{args.top}"] = sum(x is not None and x <= args.top for x in de_ranks)
        summary[f"{m}_de_ranks"] = de_ranks
    print(json.dumps(summary, indent=1))
    print(f"outputs under {root}")
    return summary


if __name__ == "__main__":
    sys.exit(main())
