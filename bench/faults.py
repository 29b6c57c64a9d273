"""Kill `deepmapper run` at every named point with SIGKILL and SIGTERM; check what the outdir holds
and that `--resume` ends with findings byte-identical to an uninterrupted run.

    PYTHONPATH=src python bench/faults.py [--points ingest,pass:1,...] [--signals KILL,TERM] [--workdir DIR]

Data: pbmc68k_reduced (assets/test), small settings (4 passes of 3 epochs, one pass per step so
each pass file is written as it finishes). For each point x signal:

1. the outdir holds an earlier, complete run (another seed, with report);
2. a run with DEEPMAPPER_FAULT=POINT is killed there;
3. the outdir must hold the earlier run's files byte-identical, or the new run's complete set
   (every file listed in its manifest, checksums equal), or (SIGKILL while the files move in,
   publish:1) a publish journal that, redone as the next run does on taking the lock, gives the
   new run's complete set;
4. `run --resume` must finish with findings.tsv/.json, findings_per_class.tsv and evaluation.json
   byte-identical to an uninterrupted run's, and leave no run directory (the files were moved out).

Prints one row per case: outcome after the kill, passes reused by the resume, seconds lost
(killed run + resume - uninterrupted run), in wall time and in CPU time. Exit status 1 when any case fails a check.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "assets" / "test" / "pbmc68k_reduced.h5ad"
SETTINGS = ["--label-key", "bulk_labels", "--passes", "4", "--epochs", "3", "--min-epochs", "1",
            "--passes-per-step", "1", "--threads", "1", "--ig-steps", "8", "--attribution-max-samples", "64",
            "--no-baselines"]
POINTS = ["ingest", "pass:0", "pass:2", "accumulate", "report", "publish:0", "publish:1", "publish:2"]
SIGNALS = ["KILL", "TERM"]
COMPARED = ["findings.tsv", "findings.json", "findings_per_class.tsv", "evaluation.json"]


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def deepmapper(args, *, env_extra=None, timeout=900) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI; returns (process, seconds). ``proc.cpu_seconds``: CPU time of the run (user +
    system, with its children), which a busy machine does not inflate as it does wall time."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-c", "from deepmapper.cli import main; main()", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    proc.cpu_seconds = _children_cpu() - c0
    return proc, time.perf_counter() - t0


def run_args(outdir: Path, *extra) -> list:
    return ["-q", "run", "--input", DATA, "--outdir", outdir, *SETTINGS, *extra]


def view(outdir: Path) -> dict[str, bytes]:
    """Every file a reader sees in outdir (through the links), hidden entries aside."""
    out = {}
    if not outdir.is_dir():
        return out
    for entry in sorted(outdir.iterdir()):
        if entry.name.startswith("."):
            continue
        files = [f for f in entry.rglob("*")] if entry.is_dir() else [entry]
        for f in files:
            rel = f.relative_to(outdir).as_posix()
            if f.is_file() and not any(p.startswith(".") for p in rel.split("/")):
                out[rel] = f.read_bytes()
    return out


def is_complete_set(outdir: Path) -> bool:
    from deepmapper.results.publish import check_published

    try:
        check_published(outdir)
        return True
    except (AssertionError, OSError, ValueError, KeyError):
        return False


def finished_from_journal(outdir: Path, base: dict) -> bool:
    """A publish cut short by SIGKILL: no manifest while the journal is there, and redoing the journal
    (on a copy, as the next run does when it takes the lock) gives the new run's complete set."""
    from deepmapper.results.publish import MANIFEST, OutDir

    if (outdir / MANIFEST).exists() or not (outdir / ".deepmapper" / "publishing.json").exists():
        return False
    copy = Path(tempfile.mkdtemp(prefix="journal-", dir=outdir.parent)) / "out"
    try:
        shutil.copytree(outdir, copy, symlinks=True)
        OutDir(copy).recover()
        return is_complete_set(copy) and all((copy / n).read_bytes() == base["reference_files"][n]
                                             for n in COMPARED)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def prepare(workdir: Path) -> dict:
    """The uninterrupted reference run and an earlier run (other seed) to be overwritten."""
    workdir.mkdir(parents=True, exist_ok=True)
    ref = workdir / "reference"
    proc, t_ref = deepmapper(run_args(ref))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc_ref_cpu = proc.cpu_seconds
    earlier = workdir / "earlier"
    proc, _ = deepmapper(run_args(earlier, "--seed", "1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"reference": ref, "earlier": earlier, "seconds": t_ref, "cpu_seconds": proc_ref_cpu,
            "reference_files": {n: (ref / n).read_bytes() for n in COMPARED}}


def case(workdir: Path, base: dict, point: str, signal: str) -> dict:
    outdir = workdir / f"case-{point.replace(':', '_')}-{signal}"
    shutil.rmtree(outdir, ignore_errors=True)
    shutil.copytree(base["earlier"], outdir, symlinks=True)
    before = view(outdir)
    row = {"point": point, "signal": signal, "problems": []}
    proc, t_fault = deepmapper(run_args(outdir), env_extra={"DEEPMAPPER_FAULT": point,
                                                            "DEEPMAPPER_FAULT_SIGNAL": signal})
    cpu_fault = proc.cpu_seconds
    want_rc = -9 if signal == "KILL" else (143 if signal == "TERM" else 130)
    if proc.returncode != want_rc:
        row["problems"].append(f"exit {proc.returncode}, expected {want_rc}")
    if "Traceback" in proc.stderr:
        row["problems"].append("traceback")
    if signal != "KILL":
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
        if len(errors) != 1:
            row["problems"].append(f"{len(errors)} error lines")
    after = view(outdir)
    if after == before:
        row["outcome"] = "earlier run intact"
    elif is_complete_set(outdir) and all(after.get(n) == base["reference_files"][n] for n in COMPARED):
        row["outcome"] = "new run complete"
    elif finished_from_journal(outdir, base):
        row["outcome"] = "journal: new run on next"
    else:
        row["outcome"] = "MIXED"
        row["problems"].append("outdir holds neither the earlier run nor the new one")
    proc, t_resume = deepmapper(run_args(outdir, "--resume"))
    if proc.returncode != 0:
        row["problems"].append(f"resume exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        row.update(reused=None, lost=None, cpu_lost=None)
        return row
    info = json.loads((outdir / "run_info.json").read_text())
    row["reused"] = info.get("passes_reused")
    row["lost"] = round(t_fault + t_resume - base["seconds"], 1)
    row["cpu_lost"] = round(cpu_fault + proc.cpu_seconds - base["cpu_seconds"], 1)
    for n in COMPARED:
        if (outdir / n).read_bytes() != base["reference_files"][n]:
            row["problems"].append(f"{n} differs from the uninterrupted run")
    if not is_complete_set(outdir):
        row["problems"].append("resumed outdir is not one run's complete set")
    runs_dir = outdir / ".deepmapper" / "runs"
    runs = list(runs_dir.iterdir()) if runs_dir.is_dir() else []
    if runs:
        row["problems"].append(f"{len(runs)} run directories left")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default=",".join(POINTS))
    ap.add_argument("--signals", default=",".join(SIGNALS))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="deepmapper-faults-"))
    base = prepare(workdir)
    print(f"uninterrupted run: {base['seconds']:.1f} s wall, {base['cpu_seconds']:.1f} s CPU "
          f"(pbmc68k_reduced, {' '.join(SETTINGS)})")
    print("lost = killed run + resume - uninterrupted run (wall s, and CPU s, which load does not inflate)")
    print(f"{'point':<12} {'signal':<7} {'outcome after the kill':<24} {'reused':>6} {'s lost':>7} {'cpu lost':>8}"
          "  check")
    failed = 0
    for point in args.points.split(","):
        for sig in args.signals.split(","):
            row = case(workdir, base, point, sig)
            ok = not row["problems"]
            failed += not ok
            print(f"{point:<12} {sig:<7} {row['outcome']:<24} {str(row['reused']):>6} {str(row['lost']):>7} "
                  f"{str(row['cpu_lost']):>8}  {'ok' if ok else '; '.join(row['problems'])}", flush=True)
    print(f"{failed} case(s) failed" if failed else "every case: earlier or new complete set; resume byte-identical")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
