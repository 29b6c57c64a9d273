#!/usr/bin/env python3
"""The GPU check: one run, one table, within 8 minutes on one data-centre GPU.

Rows (each part runs in its own subprocess with its own time limit, so one slow or failing
part cannot take the others with it, and peak host memory is the part's own):

1. ``tests``: the GPU test subset (``pytest -k "device or train or cost"`` over the device,
   training and cost tests), counts and seconds;
2. ``pbmc cuda`` / ``pbmc cpu``: the default run on pbmc68k_reduced on each device (held-out
   accuracy, wall time), and their agreement: the top-20 features shared, accuracy difference;
3. ``stacked 1`` / ``stacked 4``: seconds per pass with 1 and 4 arrangements per step
   (fixed epochs: early stopping cannot fire);
4. ``amp on`` / ``amp off``: the same with mixed precision on and off;
5. ``atlas``: the default run on a generated sparse atlas (default 100,000 x 30,000, 5 %
   non-zero, 4 classes with planted markers): wall time, peak GPU and host memory, accuracy,
   planted markers in the top 100.

``--cpu-smoke`` shrinks every part (tiny passes and epochs, a 1,500 x 800 atlas, a one-test
subset) and runs it on the CPU, in this process, in well under a minute of compute: the
script's own test.

    bash bench/gpu_check.sh              # on a GPU machine
    bash bench/gpu_check.sh --cpu-smoke  # anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]



def _run_config(args):
    """The default run's settings on the asked device; shrunk with --cpu-smoke."""
    from deepmapper.config import Config

    params = {"seed": 0, "device": args.device}
    if args.smoke:
        params.update(passes=2, epochs=2, min_epochs=1, ig_steps=4, attribution_max_samples=32,
                      interaction_permutations=20, threads=1)
    return Config().with_params(params)

def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2      # Linux: KiB


def _device(smoke: bool):
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if smoke:
        return "cpu"
    raise SystemExit("no CUDA GPU visible: run with --cpu-smoke, or on a GPU machine")


def _pbmc():
    import scanpy as sc

    from deepmapper import io

    return io.from_anndata(sc.datasets.pbmc68k_reduced(), label_key="bulk_labels", source="pbmc68k_reduced")


def part_pbmc(args) -> dict:
    """The default run (or its shrunk form) on pbmc68k_reduced on one device."""
    import torch

    from deepmapper.pipeline.runner import analyse

    cfg = _run_config(args)
    t0 = time.perf_counter()
    out = analyse(_pbmc(), cfg, progress=False)
    wall = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 1024 ** 3 if args.device == "cuda" else 0.0
    return {"accuracy": out["evaluation"]["accuracy"], "wall_s": wall,
            "top20": [str(f) for f in out["findings"]["feature"].head(20)], "gpu_gib": gpu,
            "rss_gib": _peak_rss_gib()}


def part_train(args) -> dict:
    """Seconds per pass at fixed epochs: ``--stack`` arrangements per step, mixed precision ``--amp``."""
    from deepmapper.engine import data as data_mod, train
    from deepmapper.config import Config
    from deepmapper.device import setup

    epochs = 2 if args.smoke else 10
    passes = 2 if args.smoke else 4
    cfg = Config().with_params({"seed": 0, "device": args.device, "epochs": epochs, "min_epochs": epochs,
                                "passes_per_step": args.stack, "mixed_precision": args.amp,
                                "interactions": False, "ig_steps": 4 if args.smoke else 32,
                                **({"threads": 1, "attribution_max_samples": 32} if args.smoke else {})})
    device = setup(cfg)
    data = data_mod.prepare(_pbmc(), cfg)
    if not args.smoke:
        train.train_passes(data, cfg, [100], progress=False, device=device)        # warm-up (kernels, caches)
    t0 = time.perf_counter()
    res = train.train_passes(data, cfg, list(range(passes)), progress=False, device=device)
    wall = time.perf_counter() - t0
    return {"s_per_pass": wall / passes, "accuracy": sum(r.accuracy for r in res) / len(res),
            "groups": sorted({len(r.meta["trained_with"]) for r in res})}


def part_atlas(args) -> dict:
    """The default run on a generated sparse atlas; planted markers recovered in the top 100."""
    import numpy as np
    import torch

    from deepmapper import io
    from deepmapper.pipeline.runner import analyse
    from deepmapper.datasets.synthetic import sparse_matrix

    t0 = time.perf_counter()
    X, labels = sparse_matrix(args.cells, args.features, args.density, seed=0, n_classes=4, n_markers=20,
                              marker_boost=0.2)
    adata = io.build_dataset(X, [f"c{i}" for i in range(X.shape[0])], [f"g{j}" for j in range(X.shape[1])],
                             labels, label_key="label", source="generated atlas")
    made = time.perf_counter() - t0
    cfg = _run_config(args)
    t1 = time.perf_counter()
    out = analyse(adata, cfg, progress=False)
    wall = time.perf_counter() - t1
    # planted markers: the features whose values sparse_matrix tripled in their class
    means = np.vstack([np.asarray(X[labels == c].mean(axis=0)).ravel() for c in np.unique(labels)])
    markers = set(np.flatnonzero((means.max(0) / np.maximum(means.min(0), 1e-9)) > 8.0))
    top = [int(str(f)[1:]) for f in out["findings"]["feature"].head(100)]
    gpu = torch.cuda.max_memory_allocated() / 1024 ** 3 if args.device == "cuda" else 0.0
    return {"wall_s": wall, "generate_s": made, "accuracy": out["evaluation"]["accuracy"], "gpu_gib": gpu,
            "rss_gib": _peak_rss_gib(), "markers_top100": sum(t in markers for t in top), "n_markers": len(markers)}


def part_tests(args) -> dict:
    select = (["tests/test_device.py", "-k", "auto_prefers"] if args.smoke else
              ["tests/test_device.py", "tests/test_train.py", "tests/test_cost.py", "-k", "device or train or cost"])
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select], cwd=ROOT,
                          capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {"rc": done.returncode, "summary": last, "wall_s": time.perf_counter() - t0}


PARTS = {"pbmc": part_pbmc, "train": part_train, "atlas": part_atlas, "tests": part_tests}


def _sub(part: str, args, budget: float, **extra) -> dict:
    """Run one part in a subprocess with a time limit; its JSON result, or why there is none.
    ``--cpu-smoke`` runs the parts in this process instead (no limit, no per-part peak memory):
    each subprocess would cost an import of torch and scanpy, most of a smoke run's CPU time."""
    if args.smoke and part != "tests":
        import copy

        sub_args = copy.copy(args)
        sub_args.device = extra.get("device", args.device)
        sub_args.stack, sub_args.amp = extra.get("stack", 4), bool(extra.get("amp", True))
        t0 = time.perf_counter()
        try:
            result = PARTS[part](sub_args)
        except Exception as err:   # a failing part is a row of the table, not the end of the check
            return {"error": f"{type(err).__name__}: {str(err)[:160]}"}
        result.setdefault("wall_s", time.perf_counter() - t0)
        return result
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "part.json"
        cmd = [sys.executable, __file__, "--part", part, "--json", str(out), "--device", extra.get("device",
               args.device), "--cells", str(args.cells), "--features", str(args.features),
               "--density", str(args.density), "--stack", str(extra.get("stack", 4)),
               "--amp", str(int(extra.get("amp", True)))] + (["--cpu-smoke"] if args.smoke else [])
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(5.0, budget))
        except subprocess.TimeoutExpired:
            return {"error": f"stopped at its {budget:.0f} s limit"}
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": f"exit {done.returncode}: {tail[:160]}"}
        result = json.loads(out.read_text())
        result.setdefault("wall_s", time.perf_counter() - t0)
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", dest="smoke", action="store_true", help="shrink every part and run on the CPU")
    ap.add_argument("--cells", type=int, default=None)
    ap.add_argument("--features", type=int, default=None)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole check: 480 (8 minutes) on a GPU; 1800 for --cpu-smoke, whose "
                         "wall time is the shared CPU's, not the check's")
    ap.add_argument("--part", choices=sorted(PARTS), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stack", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--amp", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.amp = bool(args.amp)
    if args.budget is None:
        args.budget = 1800.0 if args.smoke else 480.0
    if args.cells is None:
        args.cells = 1500 if args.smoke else 100_000
    if args.features is None:
        args.features = 800 if args.smoke else 30_000
    if args.part:                               # a child: one part, its result as JSON
        result = PARTS[args.part](args)
        args.json.write_text(json.dumps(result))
        return

    args.device = _device(args.smoke)
    t_start = time.perf_counter()

    def left(share: float) -> float:         # a part may use `share` of what is left of the budget
        return share * max(0.0, args.budget - (time.perf_counter() - t_start))

    rows = []
    tests = _sub("tests", args, left(0.15))
    rows.append(("GPU test subset", tests.get("error") or f"{tests['summary']} (rc {tests['rc']})",
                 tests.get("wall_s")))
    gpu = _sub("pbmc", args, left(0.2))
    cpu = _sub("pbmc", args, left(0.25), device="cpu")
    for name, r in ((f"pbmc default run, {args.device}", gpu), ("pbmc default run, cpu", cpu)):
        rows.append((name, r.get("error") or f"accuracy {r['accuracy']:.3f}, peak RSS {r['rss_gib']:.2f} GiB"
                     + (f", peak GPU {r['gpu_gib']:.2f} GiB" if r.get("gpu_gib") else ""), r.get("wall_s")))
    if "error" not in gpu and "error" not in cpu:
        shared = len(set(gpu["top20"]) & set(cpu["top20"]))
        rows.append((f"pbmc {args.device} vs cpu", f"top-20 shared {shared}/20, accuracy difference "
                     f"{gpu['accuracy'] - cpu['accuracy']:+.3f}", None))
    for stack, amp in ((1, True), (4, True), (4, False)):
        r = _sub("train", args, left(0.12), stack=stack, amp=amp)
        rows.append((f"{stack} arrangement(s) per step, mixed precision {'on' if amp else 'off'}",
                     r.get("error") or f"{r['s_per_pass']:.2f} s per pass, mean accuracy {r['accuracy']:.3f}",
                     r.get("wall_s")))
    atlas = _sub("atlas", args, left(0.95))
    rows.append((f"default run, generated {args.cells:,} x {args.features:,} sparse atlas ({args.density:.0%})",
                 atlas.get("error") or f"accuracy {atlas['accuracy']:.3f}, planted markers in top 100 "
                 f"{atlas['markers_top100']}/{min(100, atlas['n_markers'])}, peak RSS {atlas['rss_gib']:.2f} GiB, "
                 f"peak GPU {atlas['gpu_gib']:.2f} GiB (generation {atlas['generate_s']:.0f} s)",
                 atlas.get("wall_s")))

    import torch

    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (smoke)"
    print(f"\nGPU check on {name}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"total {time.perf_counter() - t_start:.0f} s")
    width = max(len(r[0]) for r in rows)
    print(f"| {'check':<{width}} | {'result':<60} | {'wall s':>7} |")
    print(f"|{'-' * (width + 2)}|{'-' * 62}|{'-' * 9}|")
    for check, result, wall in rows:
        print(f"| {check:<{width}} | {result:<60} | {'' if wall is None else f'{wall:.1f}':>7} |")
    failed = [r for r in rows if "exit " in r[1] or "limit" in r[1] or "(rc 1)" in r[1] or "(rc 2)" in r[1]]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
