"""Kills at every named point, and concurrent runs into one outdir (issue 12).

The kill matrix uses bench/faults.py's harness (the bench prints the same cases as a table):
after each kill the outdir holds the earlier run's files byte-identical or the new run's complete
set (or a SIGKILL mid-publish leaves a journal the next run finishes), and `run --resume` ends
byte-identical to an uninterrupted run with no run directory left.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_faults", ROOT / "bench" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


faults_bench = _bench()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return faults_bench.prepare(tmp_path_factory.mktemp("faults"))


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", faults_bench.SIGNALS)
@pytest.mark.parametrize("point", faults_bench.POINTS)
def test_kill_at_every_point_leaves_one_run_and_resume_is_byte_identical(base, point, signal_name):
    row = faults_bench.case(base["reference"].parent, base, point, signal_name)
    assert not row["problems"], row
    assert row["outcome"] in ("earlier run intact", "new run complete", "journal: new run on next")
    if point == "publish:1" and signal_name == "TERM":     # held back until the set is complete
        assert row["outcome"] == "new run complete", row
    if point.startswith("pass:"):       # the passes written before the kill are reused
        assert row["reused"] == int(point.split(":")[1]) + 1, row


# -- concurrency ----------------------------------------------------------------------------------------

SMALL = ["--passes", "2", "--epochs", "2", "--min-epochs", "1", "--passes-per-step", "1", "--threads", "1",
         "--ig-steps", "8", "--attribution-max-samples", "64", "--no-report", "--no-baselines"]


def _start(outdir: Path, seed: int, *extra) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", "from deepmapper.cli import main; main()", "run", "--input",
                             str(faults_bench.DATA), "--label-key", "bulk_labels", "--outdir", str(outdir),
                             "--seed", str(seed), *SMALL, *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=1200)
        out.append((p.returncode, stdout + stderr))
    return out


def _one_run(outdir: Path) -> str:
    from deepmapper.results.publish import check_published

    manifest = check_published(outdir)       # every visible file is the manifest's, checksums equal
    runs = outdir / ".deepmapper" / "runs"
    assert not runs.exists() or not list(runs.iterdir())     # the files were moved out, none left hidden
    return manifest["run_id"]


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_runs_one_wins_the_others_fail_at_once(tmp_path, n):
    outdir = tmp_path / "out"
    procs = [_start(outdir, seed) for seed in range(n)]
    t0 = time.perf_counter()
    results = _finish(procs)
    codes = [rc for rc, _ in results]
    assert sorted(codes) == [0] + [75] * (n - 1), results
    for rc, text in results:
        assert "Traceback" not in text, text[-3000:]
        if rc == 75:
            errors = [ln for ln in text.splitlines() if ln.startswith("Error")]
            assert len(errors) == 1 and "pid " in errors[0] and "started" in errors[0] and "--wait" in errors[0]
    winner = codes.index(0)
    run_id = _one_run(outdir)
    info = json.loads((outdir / "run_info.json").read_text())
    assert info["run_id"] == run_id and info["pid"] == procs[winner].pid
    assert json.loads((outdir / "findings.json").read_text())["config"]["run"]["seed"] == winner
    assert time.perf_counter() - t0 < 1200


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_runs_with_wait_queue_and_the_last_one_is_published(tmp_path, n):
    outdir = tmp_path / "out"
    procs = []
    for seed in range(n):
        procs.append(_start(outdir, seed, "--wait"))
        time.sleep(0.3)
    results = _finish(procs)
    assert [rc for rc, _ in results] == [0] * n, [t[-2000:] for _, t in results]
    assert not any("Traceback" in t for _, t in results)
    run_id = _one_run(outdir)
    info = json.loads((outdir / "run_info.json").read_text())
    assert info["run_id"] == run_id
    # they ran one after the other: the published run is the one that took the lock last
    starts = {}
    for p, (_, text) in zip(procs, results):
        starts[p.pid] = "waiting for it" in text
    assert sum(starts.values()) >= n - 1 or n == 1
    assert info["pid"] in starts
