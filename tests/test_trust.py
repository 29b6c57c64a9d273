"""Results you can trust (issue 12): each defect found on the earlier main, as a test.

Runs go through the console entry point in a subprocess where signals, exit codes or resource
limits are the point, and through click's CliRunner otherwise. Data: pbmc68k_reduced (conftest)
with tiny settings, or small honest tables written here.
"""
from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_unless
from click.testing import CliRunner

from deepmapper.cli import cli

TINY = ["--passes", "2", "--epochs", "2", "--min-epochs", "1", "--passes-per-step", "1", "--threads", "1",
        "--ig-steps", "8", "--attribution-max-samples", "64"]
COMPARED = ["findings.tsv", "findings.json", "findings_per_class.tsv", "evaluation.json"]


def dm(*args, env=None, preexec_fn=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", "from deepmapper.cli import main; main()", *map(str, args)],
                          env=full, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn, cwd=cwd)


def dm_popen(*args, env=None) -> subprocess.Popen:
    full = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-c", "from deepmapper.cli import main; main()", *map(str, args)],
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("Error")]


def one_error(proc_or_result) -> str:
    if isinstance(proc_or_result, subprocess.CompletedProcess):
        text = (proc_or_result.stderr or "") + (proc_or_result.stdout or "")
    else:                                  # click's Result: stdout and stderr mixed in .output
        text = proc_or_result.output
    assert "Traceback" not in text, text[-3000:]
    errors = error_lines(text)
    assert len(errors) == 1, text[-3000:]
    return errors[0]


def published_files(outdir: Path, *, results_only: bool = False) -> dict[str, bytes]:
    """What a reader sees in outdir (hidden entries aside; with results_only, the results' names only)."""
    from deepmapper.results.publish import KNOWN

    out = {}
    for entry in sorted(outdir.iterdir()):
        if entry.name.startswith("."):
            continue
        if results_only and entry.name not in KNOWN:
            continue
        for f in (entry.rglob("*") if entry.is_dir() else [entry]):
            rel = f.relative_to(outdir).as_posix()
            if f.is_file() and not any(p.startswith(".") for p in rel.split("/")):
                out[rel] = f.read_bytes()
    return out


def assert_one_run(outdir: Path) -> str:
    """Every visible file is listed in the manifest with its checksum, and the manifest lists nothing
    else; returns the run id (the manifest's, run_info.json's)."""
    import hashlib

    files = published_files(outdir, results_only=True)
    manifest = json.loads(files.pop("manifest.json"))
    links = [p for p in outdir.rglob("*") if p.is_symlink()]
    assert not links, f"results must be plain files, found links: {links[:3]}"
    assert sorted(files) == sorted(manifest["files"])
    for rel, data in files.items():
        assert hashlib.sha256(data).hexdigest() == manifest["files"][rel], rel
    assert json.loads(files["run_info.json"])["run_id"] == manifest["run_id"]
    return manifest["run_id"]


def no_run_dirs(outdir: Path) -> bool:
    runs = outdir / ".deepmapper" / "runs"
    return not runs.exists() or not any(runs.iterdir())


@pytest.fixture(scope="module")
def reference(pbmc_h5ad, tmp_path_factory):
    """An uninterrupted run (no report, no baselines): the findings every resume must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "out"
    proc = dm("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", out, "--no-report",
              "--no-baselines", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _run(pbmc_h5ad, out, *extra, env=None):
    return dm("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", out, "--no-report",
              "--no-baselines", *TINY, *extra, env=env)


# -- publishing ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_rerun_without_report_or_baselines_leaves_no_stale_files(pbmc_h5ad, tmp_path):
    out = tmp_path / "out"
    first = dm("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", out, *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "report.html").is_file() and (out / "multiqc").is_dir() and (out / "baselines").is_dir()
    first_id = assert_one_run(out)
    second = _run(pbmc_h5ad, out, "--seed", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    for stale in ("report.html", "multiqc", "mqc", "baselines"):
        assert not os.path.lexists(out / stale), f"{stale} of the earlier run is still there"
    assert assert_one_run(out) not in ("", first_id)
    assert json.loads((out / "findings.json").read_text())["config"]["run"]["seed"] == 3
    assert no_run_dirs(out)      # the earlier run is gone, and nothing hidden holds a copy of the results


def test_a_file_in_the_way_is_refused_before_anything_is_read(pbmc_h5ad, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "passes").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    t0 = time.perf_counter()
    proc = _run(pbmc_h5ad, out)
    line = one_error(proc)
    assert proc.returncode == 2 and "passes" in line and "--outdir" in line and "Fix:" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert "pass 0" not in proc.stderr and time.perf_counter() - t0 < 60


def test_results_of_an_earlier_version_are_replaced_whole(pbmc_h5ad, tmp_path, reference):
    out = tmp_path / "out"
    (out / "passes").mkdir(parents=True)          # the layout main wrote: plain files, no .deepmapper
    for name in ("findings.tsv", "findings.json", "evaluation.json", "report.html", "run_info.json"):
        (out / name).write_text("old\n")
    (out / "passes" / "pass_000.npz").write_bytes(b"old")
    (out / "passes" / "pass_009.npz").write_bytes(b"old")
    (out / "my_notes.txt").write_text("keep me\n")
    proc = _run(pbmc_h5ad, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_one_run(out)
    assert not (out / "report.html").exists() and not (out / "passes" / "pass_009.npz").exists()
    assert (out / "findings.tsv").read_bytes() == (reference / "findings.tsv").read_bytes()
    assert (out / "my_notes.txt").read_text() == "keep me\n"


# -- plain files (issue 21) ------------------------------------------------------------------------

def test_results_are_plain_files_to_archive_and_keep(tmp_path, reference):
    import tarfile

    out = tmp_path / "out"
    shutil.copytree(reference, out, symlinks=True)
    assert_one_run(out)                                     # no links anywhere in the outdir
    archive = tmp_path / "results.tar"
    with tarfile.open(archive, "w") as tar:                 # what `tar -C out -cf ... findings.tsv passes` does
        for name in ("findings.tsv", "passes"):
            tar.add(out / name, arcname=name)
    (tmp_path / "x").mkdir()
    with tarfile.open(archive) as tar:
        assert all(m.isfile() or m.isdir() for m in tar.getmembers())
        tar.extractall(tmp_path / "x", filter="data")
    assert (tmp_path / "x" / "findings.tsv").read_bytes() == (reference / "findings.tsv").read_bytes()
    assert sorted(p.name for p in (tmp_path / "x" / "passes").iterdir()) == ["pass_000.npz", "pass_001.npz"]
    shutil.rmtree(out / ".deepmapper")                      # it looks like a cache: deleting it loses nothing
    assert_one_run(out)
    assert (out / "findings.tsv").read_bytes() == (reference / "findings.tsv").read_bytes()


@pytest.mark.parametrize("name", ["findings.tsv", "report.html", "manifest.json"])
def test_a_users_own_file_with_a_result_name_is_refused(pbmc_h5ad, tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("my own table\n")
    proc = _run(pbmc_h5ad, out)
    line = one_error(proc)
    assert proc.returncode == 2 and name in line and "move it away" in line, line
    assert sorted(p.name for p in out.iterdir()) == [name]            # untouched, and no .deepmapper left
    assert (out / name).read_text() == "my own table\n"


@pytest.mark.parametrize("rel", ["multiqc/multiqc_report.html", "baselines/mine.tsv", "passes/notes.txt",
                                 "mqc/my_mqc.tsv"])
def test_a_users_file_inside_a_folder_with_a_result_name_is_refused(pbmc_h5ad, tmp_path, rel):
    """An nf-core results folder's multiqc/, notes in passes/: not written by deepmapper run, so not
    replaced whole (they were removed silently before); refused up front, untouched."""
    out = tmp_path / "out"
    (out / rel).parent.mkdir(parents=True)
    (out / rel).write_text("mine\n")
    proc = _run(pbmc_h5ad, out)
    line = one_error(proc)
    assert proc.returncode == 2 and rel in line and "move it away" in line, line
    assert (out / rel).read_text() == "mine\n" and not (out / ".deepmapper").exists()


def test_a_users_file_added_to_a_published_folder_is_refused_and_never_removed(pbmc_h5ad, tmp_path, reference):
    out = tmp_path / "out"
    shutil.copytree(reference, out, symlinks=True)
    (out / "passes" / "notes.txt").write_text("mine\n")
    proc = _run(pbmc_h5ad, out, "--seed", "3")
    assert proc.returncode == 2 and "passes/notes.txt" in one_error(proc)
    assert (out / "passes" / "notes.txt").read_text() == "mine\n"
    assert (out / "findings.tsv").read_bytes() == (reference / "findings.tsv").read_bytes()   # the run is as it was
    from deepmapper.results.publish import OutDir

    (out / "passes" / "notes.txt").unlink()
    (out / "mqc").mkdir()
    (out / "mqc" / "deepmapper_findings_mqc.tsv").write_text("x\n")    # 'deepmapper report' wrote it: ours
    ours = OutDir(out)
    ours.check()
    assert "mqc/deepmapper_findings_mqc.tsv" in ours._stale(["findings.tsv"])


def test_an_empty_outdir_is_refused_not_taken_as_the_current_folder(pbmc_h5ad, tmp_path):
    """`--outdir "$OUT"` with OUT unset: one error, exit 2, nothing written where the command ran;
    every --outdir / --out of every command takes the same type."""
    import click

    from deepmapper.cli import cli
    from deepmapper.cli._options import OutPath

    (tmp_path / "passes").mkdir()
    (tmp_path / "passes" / "keep.txt").write_text("mine\n")
    proc = dm("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", "", *TINY, cwd=tmp_path)
    assert proc.returncode == 2 and "empty path" in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passes"] and (tmp_path / "passes" / "keep.txt").exists()

    def commands(group, prefix=()):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from commands(cmd, (*prefix, name))
            else:
                yield (*prefix, name), cmd
    checked = 0
    for name, cmd in commands(cli):
        for param in cmd.params:
            if {"--outdir", "--out"} & set(param.opts):
                assert isinstance(param.type, OutPath), (name, param.opts)
                checked += 1
    assert checked >= 15


def test_a_run_that_fails_before_writing_leaves_no_outdir(pbmc_h5ad, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()                                            # the user's own (empty) directory stays, empty
    nested = tmp_path / "a" / "b" / "out"                   # directories the run created go
    for out in (mine, nested):
        proc = dm("run", "--input", pbmc_h5ad, "--label-key", "no_such_column", "--outdir", out, *TINY)
        assert proc.returncode == 2 and "no_such_column" in one_error(proc)
    assert list(mine.iterdir()) == []
    assert not (tmp_path / "a").exists()


PUBLISH = """
import sys, threading, time
from deepmapper.results.publish import OutDir
# another thread, as torch's are in a run: a signal may be delivered to it rather than the main thread
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
out = OutDir(sys.argv[1])
with out.lock(run_id=sys.argv[2]):
    out.publish(out.runs / sys.argv[2], sys.argv[2])
"""


def _finished_run(out: Path, run_id: str, files: dict[str, str]) -> None:
    """A run directory as `deepmapper run` leaves it before publishing."""
    run_dir = out / ".deepmapper" / "runs" / run_id
    for rel, text in {**files, "run_info.json": json.dumps({"run_id": run_id})}.items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(text)


def _publish(out: Path, run_id: str, fault: str | None = None, signal_name: str = "KILL"):
    env = dict(os.environ, DEEPMAPPER_FAULT=fault or "", DEEPMAPPER_FAULT_SIGNAL=signal_name)
    return subprocess.run([sys.executable, "-c", PUBLISH, str(out), run_id], env=env, capture_output=True,
                          text=True, timeout=120)


RUN_A = {"findings.tsv": "a\n", "passes/pass_000.npz": "a0", "passes/pass_001.npz": "a1", "report.html": "a",
         "mqc/deepmapper_loss_mqc.json": "{}"}
RUN_B = {"findings.tsv": "b\n", "passes/pass_000.npz": "b0", "findings.json": "{}"}


@pytest.mark.parametrize("signal_name", ["KILL", "TERM"])
def test_a_publish_cut_short_leaves_one_runs_set(tmp_path, signal_name):
    from deepmapper.results.publish import MANIFEST, OutDir, check_published

    out = tmp_path / "out"
    _finished_run(out, "A", RUN_A)
    assert _publish(out, "A").returncode == 0
    assert check_published(out)["run_id"] == "A"
    _finished_run(out, "B", RUN_B)
    proc = _publish(out, "B", fault="publish:1", signal_name=signal_name)   # half of B's files moved in
    if signal_name == "KILL":
        assert proc.returncode == -signal.SIGKILL
        assert not (out / MANIFEST).exists()            # a reader can tell: no manifest while the set changes
        assert (out / ".deepmapper" / "publishing.json").is_file()
        with OutDir(out).lock():                        # the next run takes the lock: the publish is finished
            pass
    else:                                               # held back until the publish is done, then it acts
        assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
    assert check_published(out)["run_id"] == "B"
    shown = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".deepmapper" not in p.parts}
    assert shown == {*RUN_B, "run_info.json", MANIFEST}            # nothing of A is left (report.html, pass 1)
    assert (out / "findings.tsv").read_text() == "b\n"
    assert not (out / ".deepmapper" / "runs").exists()


def test_an_outdir_in_the_link_layout_becomes_plain_files(tmp_path):
    """What the earlier version published (OUT/NAME -> .deepmapper/current/NAME, current -> runs/OLD) is
    replaced by the next run's plain files, and the hidden run directory behind the links goes."""
    from deepmapper.results.publish import check_published

    out = tmp_path / "out"
    _finished_run(out, "OLD", RUN_A)
    (out / ".deepmapper" / "current").symlink_to("runs/OLD")
    for name in (*{rel.split("/")[0] for rel in RUN_A}, "run_info.json"):
        (out / name).symlink_to(f".deepmapper/current/{name}")
    (out / "my_notes.txt").write_text("keep me\n")
    _finished_run(out, "NEW", RUN_B)
    proc = _publish(out, "NEW")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert check_published(out)["run_id"] == "NEW"
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    assert not (out / "report.html").exists() and not (out / "mqc").exists()
    assert not (out / ".deepmapper" / "current").exists() and not (out / ".deepmapper" / "runs").exists()
    assert (out / "my_notes.txt").read_text() == "keep me\n"


def test_a_failing_optional_step_keeps_the_required_results(pbmc_h5ad, tmp_path, monkeypatch):
    import deepmapper.results.report as report_mod
    from deepmapper.errors import ToolError

    def broken(*args, **kwargs):
        raise ToolError("MultiQC failed (exit 1): boom", where="deepmapper report", field="multiqc",
                        fix="rerun 'deepmapper -v report' to see MultiQC's log.")

    monkeypatch.setattr(report_mod, "write_report", broken)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--input", str(pbmc_h5ad), "--label-key", "bulk_labels", "--outdir",
                                   str(out), "--no-baselines", *TINY])
    assert res.exit_code == 4, res.output
    line = one_error(res)
    assert "report" in line and "MultiQC failed" in line
    for name in ("findings.tsv", "findings.json", "evaluation.json", "passes/pass_000.npz"):
        assert (out / name).is_file(), name
    assert "passes accepted" in res.output        # the summary is still printed
    assert json.loads((out / "run_info.json").read_text())["failed_steps"] == ["report"]
    assert_one_run(out)


def test_a_missing_optional_tool_is_reported_before_training(pbmc_h5ad, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "multiqc" else real(name, *a))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--input", str(pbmc_h5ad), "--label-key", "bulk_labels",
                                   "--outdir", str(out), "--no-baselines", *TINY])
    assert res.exit_code == 0, res.output
    log = res.output                      # the CLI logs to stderr, which CliRunner mixes in
    assert "MultiQC is not installed" in log and "pass 0:" in log, log[-3000:]
    assert log.index("MultiQC is not installed") < log.index("pass 0:")
    assert (out / "report.html").is_file() and not (out / "multiqc").exists()


# -- interruption and resume --------------------------------------------------------------------------

def test_sigterm_after_a_pass_then_resume_gives_the_same_findings(pbmc_h5ad, tmp_path, reference):
    out = tmp_path / "out"
    killed = _run(pbmc_h5ad, out, env={"DEEPMAPPER_FAULT": "pass:0", "DEEPMAPPER_FAULT_SIGNAL": "TERM"})
    assert killed.returncode == 143, killed.stderr[-3000:]
    line = one_error(killed)
    assert "SIGTERM" in line and "--resume" in line
    assert not (out / "findings.tsv").exists()
    resumed = _run(pbmc_h5ad, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "run_info.json").read_text())["passes_reused"] == 1
    for name in COMPARED:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert no_run_dirs(out)
    assert_one_run(out)


def test_sigkill_leftover_is_removed_without_resume(pbmc_h5ad, tmp_path, reference):
    out = tmp_path / "out"
    killed = _run(pbmc_h5ad, out, env={"DEEPMAPPER_FAULT": "pass:0", "DEEPMAPPER_FAULT_SIGNAL": "KILL"})
    assert killed.returncode == -signal.SIGKILL
    assert len(list((out / ".deepmapper" / "runs").iterdir())) == 1      # the interrupted run's passes
    again = _run(pbmc_h5ad, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "run_info.json").read_text())["passes_reused"] == 0
    assert no_run_dirs(out)      # never left to grow
    assert (out / "findings.tsv").read_bytes() == (reference / "findings.tsv").read_bytes()


def _wait_for(proc: subprocess.Popen, predicate, timeout: float = 300) -> list[str]:
    """Collect stderr in a thread (into the list returned) until predicate(text) is true."""
    chunks: list[str] = []

    def pump():
        for line in proc.stderr:
            chunks.append(line)

    threading.Thread(target=pump, daemon=True).start()
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate("".join(chunks)):
            return chunks
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    return chunks


def test_ctrl_c_exits_130_with_one_line(pbmc_h5ad, tmp_path):
    out = tmp_path / "out"
    # 12 passes (the last --passes wins): the run is still training when Ctrl-C arrives, even when pass 1
    # would otherwise finish before the signal on a loaded machine
    proc = dm_popen("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", out, "--no-report",
                    "--no-baselines", *TINY, "--passes", "12")
    # the first pass file on disk, not just its log line (passes trained together are written after
    # the group's last log line): only then is there a finished pass to --resume from
    chunks = _wait_for(proc, lambda text: "pass 0:" in text and any(out.rglob("pass_*.npz")))
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    time.sleep(0.5)
    text = "".join(chunks) + proc.stdout.read()
    assert proc.returncode == 130, text[-3000:]
    assert "Aborted!" not in text and "Traceback" not in text
    errors = error_lines(text)
    assert len(errors) == 1 and "Ctrl-C" in errors[0] and "--resume" in errors[0], errors

def _multiqc_children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        if ppid == pid and "multiqc" in cmd:
            found.append(int(name))
    return found


@pytest.mark.slow
def test_sigterm_during_the_report_stops_multiqc_and_exits_143(pbmc_h5ad, tmp_path):
    out = tmp_path / "out"
    proc = dm_popen("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", out, "--no-baselines",
                    *TINY)
    children: list[int] = []

    def multiqc_started(_text):
        children[:] = _multiqc_children(proc.pid)
        return bool(children)

    text = "".join(_wait_for(proc, multiqc_started))
    assert children, text[-3000:]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    time.sleep(1.0)
    try:
        assert proc.returncode == 143
        alive = [c for c in children if Path(f"/proc/{c}").exists()
                 and "Z" not in Path(f"/proc/{c}/stat").read_text().split(")")[-1].split()[0]]
        assert not alive, "MultiQC kept running after SIGTERM"
    finally:
        for c in children:          # never leave our own test's children behind
            try:
                os.kill(c, signal.SIGKILL)
            except OSError:
                pass
    assert not (out / "report.html").exists()   # nothing of the interrupted run is published


# -- pass files -------------------------------------------------------------------------------------

PASS_TINY = ["--epochs", "1", "--min-epochs", "1", "--ig-steps", "4", "--attribution-max-samples", "32",
             "--threads", "1", "--passes-per-step", "1"]


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def passes(pbmc, tmp_path_factory):
    """Dataset A (bulk_labels) with passes 0 and 1; pass 1 also trained with another seed, on another
    label column, on other cells and with another backbone (real passes, one epoch each)."""
    root = tmp_path_factory.mktemp("mix")
    src = root / "pbmc.h5ad"
    pbmc.write_h5ad(src)
    sub = root / "pbmc600.h5ad"
    pbmc[:600].copy().write_h5ad(sub)
    ds = {}
    for name, path, key in (("A", src, "bulk_labels"), ("louvain", src, "louvain"), ("cells", sub, "bulk_labels")):
        ds[name] = root / f"{name}.h5ad"
        r = _invoke("ingest", "--input", path, "--label-key", key, "--out", ds[name], "--min-class-size", "3")
        assert r.exit_code == 0, r.output
    dirs = {}
    for name, dataset, start, extra in (("good", "A", 0, []), ("good", "A", 1, []), ("seed", "A", 1, ["--seed", "5"]),
                                        ("louvain", "louvain", 1, []), ("cells", "cells", 1, []),
                                        ("backbone", "A", 1, ["--backbone", "mlp"])):
        dirs[name] = root / name
        r = _invoke("train-pass", "--dataset", ds[dataset], "--start", start, "--count", 1, "--outdir", dirs[name],
                    *PASS_TINY, *extra)
        assert r.exit_code == 0, r.output
    return {"root": root, "datasets": ds, "dirs": dirs}


def _variant(passes, kind: str) -> Path:
    """The odd pass 1 of a kind (trained elsewhere, or damaged)."""
    from deepmapper.engine.passfile import read_pass, write_pass

    good1 = passes["dirs"]["good"] / "pass_001.npz"
    target_dir = passes["root"] / f"odd-{kind}"
    target_dir.mkdir(exist_ok=True)
    target = target_dir / "pass_001.npz"
    if kind in passes["dirs"] and kind != "good":
        shutil.copy(passes["dirs"][kind] / "pass_001.npz", target)
    elif kind == "nan":
        p = read_pass(good1)
        p.importance = p.importance.copy()
        p.importance[7] = np.nan
        write_pass(p, target_dir)
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncated":
        data = good1.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        target.write_text("pass_index,accuracy\n1,0.9\n")
    return target


@pytest.mark.parametrize("kind, words", [
    ("seed", ["seed", "5 vs 0"]),
    ("louvain", ["label_key"]),
    ("cells", ["dataset"]),
    ("backbone", ["backbone", "mlp"]),
    ("nan", ["importance", "NaN"]),
    ("empty", ["empty"]),
    ("truncated", ["truncated"]),
    ("text", ["not a DeepMapper pass file"]),
])
def test_accumulate_refuses_passes_that_do_not_belong_together(passes, kind, words):
    odd = _variant(passes, kind)
    res = _invoke("accumulate", "--dataset", passes["datasets"]["A"], "--pass-file",
                  passes["dirs"]["good"] / "pass_000.npz", "--pass-file", odd, "--outdir", passes["root"] / "acc",
                  "--passes", "2")
    assert res.exit_code == 2, res.output
    line = one_error(res)
    assert str(odd) in line and "field '" in line and "Fix:" in line, line
    for w in words:
        assert w in line, line
    assert not (passes["root"] / "acc" / "findings.tsv").exists()


def test_accumulate_of_passes_that_belong_together_still_works(passes):
    res = _invoke("accumulate", "--dataset", passes["datasets"]["A"], "--passes-dir", passes["dirs"]["good"],
                  "--outdir", passes["root"] / "ok", "--passes", "2")
    assert res.exit_code == 0, res.output
    res = _invoke("accumulate", "--dataset", passes["datasets"]["louvain"], "--passes-dir", passes["dirs"]["good"],
                  "--outdir", passes["root"] / "bad", "--passes", "2")
    assert res.exit_code == 2 and "another dataset" in one_error(res)


# -- the output location ----------------------------------------------------------------------------

def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def make(name: str, options: str) -> Path:
        path = tmp_path / name
        # a small tmpfs is the honest full disk; under scripts/test.sh (root in CI) a failed mount fails
        skip_unless(_mount_tmpfs(path, options), "a full-disk test needs root to mount a tmpfs")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_read_only_outdir_is_one_line_before_the_input_is_read(tmpfs, tmp_path):
    ro = tmpfs("ro", "ro,size=1m")
    broken = tmp_path / "broken.h5ad"
    broken.write_bytes(b"not an h5ad at all")
    proc = dm("run", "--input", broken, "--label-key", "x", "--outdir", ro / "out", *TINY)
    line = one_error(proc)
    assert proc.returncode == 2 and str(ro) in line and "cannot write" in line, line
    assert "broken.h5ad" not in line       # the outdir is checked first


def test_full_disk_is_one_line_with_exit_3(tmpfs, pbmc_h5ad):
    small = tmpfs("small", "size=1m")
    proc = _run(pbmc_h5ad, small / "out")
    line = one_error(proc)
    assert proc.returncode == 3 and "free" in line and "Fix:" in line, line


def test_disk_filling_while_writing_the_dataset_is_one_line_not_a_segfault(pbmc_h5ad, tmp_path, reference):
    out = tmp_path / "out"
    shutil.copytree(reference, out, symlinks=True)
    before = published_files(out)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))   # below dataset.h5ad's size

    proc = dm("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", out, "--no-report",
              "--no-baselines", *TINY, preexec_fn=limit)
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
    line = one_error(proc)
    assert "dataset.h5ad" in line and "Fix:" in line
    assert published_files(out) == before


# -- labels and tables --------------------------------------------------------------------------------

def _table(tmp_path, labels, *, ids=None, values=None, name="t.csv") -> Path:
    rng = np.random.default_rng(0)
    n = len(labels)
    ids = ids or [f"c{i}" for i in range(n)]
    rows = ["cell,cell_type,G1,G2,G3"]
    for i in range(n):
        v = values[i] if values is not None else rng.integers(0, 9, 3)
        rows.append(",".join([ids[i], labels[i], *map(str, v)]))
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def _ingest(path, *extra):
    return CliRunner().invoke(cli, ["ingest", "--input", str(path), "--label-key", "cell_type",
                                    "--out", str(path.with_suffix(".h5ad")), *map(str, extra)])


def test_labels_differing_in_spaces_are_one_class_with_a_warning(tmp_path):
    import anndata as ad

    path = _table(tmp_path, ["Dendritic", "Dendritic ", " T", "T"] * 5)
    res = _ingest(path)
    assert res.exit_code == 0, res.output
    a = ad.read_h5ad(path.with_suffix(".h5ad"))
    assert sorted(a.obs["cell_type"].cat.categories) == ["Dendritic", "T"]
    warnings = [ln for ln in res.output.splitlines() if "WARNING" in ln and "leading/trailing spaces" in ln]
    assert len(warnings) == 1 and "'Dendritic'" in warnings[0] and "'T'" in warnings[0], res.output


def test_na_is_a_label_and_a_cell_id_in_csv(tmp_path):
    import anndata as ad

    labels = ["NA", "None", "B"] * 6
    ids = ["NA"] + [f"c{i}" for i in range(1, 18)]
    path = _table(tmp_path, labels, ids=ids)
    res = _ingest(path)
    assert res.exit_code == 0, res.output
    a = ad.read_h5ad(path.with_suffix(".h5ad"))
    assert sorted(a.obs["cell_type"].cat.categories) == ["B", "NA", "None"]
    assert a.obs_names[0] == "NA"


def test_a_value_beyond_float32_is_reported_as_overflow(tmp_path):
    values = [[1, 2, 3]] * 18
    values = [list(v) for v in values]
    values[4][1] = "1e39"
    path = _table(tmp_path, ["A", "B"] * 9, values=values)
    line = one_error(_ingest(path))
    assert "overflow" in line and "G2" in line and "NaN" not in line, line


def test_min_class_size_advice_can_be_followed(tmp_path):
    path = _table(tmp_path, ["A"] * 2 + ["B"] * 10)
    line = one_error(_ingest(path, "--min-class-size", "2"))
    assert "'A' (2 cells)" in line
    assert "lower --min-class-size" not in line      # 2 is already the lowest the config accepts
    path = _table(tmp_path, ["A"] * 4 + ["B"] * 10, name="u.csv")
    line = one_error(_ingest(path))                 # default 5: lowering to 4 is allowed and said
    assert "lower --min-class-size to 4" in line


def test_three_cells_per_class_is_refused_before_training(tmp_path):
    rng = np.random.default_rng(1)
    labels = ["A"] * 3 + ["B"] * 3 + ["C"] * 3
    values = [rng.integers(0, 9, 3) + 5 * (i // 3) for i in range(9)]
    path = _table(tmp_path, labels, values=values)
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["run", "--input", str(path), "--label-key", "cell_type", "--outdir",
                                   str(tmp_path / "o"), "--min-class-size", "3", "--no-report", *TINY])
    line = one_error(res)
    assert res.exit_code == 2 and "too small to learn from" in line and "at least 4 cells" in line, line
    assert "--epochs" not in line and "pass 0" not in res.output
    assert time.perf_counter() - t0 < 60


# -- reads ------------------------------------------------------------------------------------------------

def _fastq(path: Path, names: list[str], *, damage_at: int | None = None) -> Path:
    with gzip.open(path, "wt") as fh:
        for i, n in enumerate(names, start=1):
            qual = "IIII" if i != damage_at else "III"
            fh.write(f"@{n}\nACGT\n+\n{qual}\n")
    return path


def test_damage_after_the_first_200000_records_is_found(tmp_path):
    from deepmapper.denovo.fastq import check_fastq
    from deepmapper.errors import InputError

    path = _fastq(tmp_path / "big.fastq.gz", [f"r{i}" for i in range(200_010)], damage_at=200_005)
    with pytest.raises(InputError) as err:
        check_fastq(path, field="fastq_1")
    assert "record 200005" in str(err.value) and "big.fastq.gz" in str(err.value)


def test_paired_files_are_checked_record_for_record(tmp_path):
    from deepmapper.denovo.fastq import check_fastq
    from deepmapper.errors import InputError

    r1 = _fastq(tmp_path / "s_1.fastq.gz", [f"r{i}/1" for i in range(6)])
    ok = _fastq(tmp_path / "ok_2.fastq.gz", [f"r{i}/2" for i in range(6)])
    assert check_fastq(r1, field="fastq_1", mate=ok, mate_field="fastq_2") == 6
    swapped = _fastq(tmp_path / "sw_2.fastq.gz", [f"r{i}/2" for i in (0, 1, 3, 2, 4, 5)])
    with pytest.raises(InputError) as err:
        check_fastq(r1, field="fastq_1", mate=swapped, mate_field="fastq_2")
    assert "record 3" in str(err.value) and "sw_2.fastq.gz" in str(err.value)
    short = _fastq(tmp_path / "sh_2.fastq.gz", [f"r{i}/2" for i in range(5)])
    with pytest.raises(InputError) as err:
        check_fastq(r1, field="fastq_1", mate=short, mate_field="fastq_2")
    assert "ends after 5 records" in str(err.value) and "sh_2.fastq.gz" in str(err.value)
