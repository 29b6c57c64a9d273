"""The steps as functions, and ``run``: the whole analysis in one process.

The CLI step commands (ingest, train-pass, accumulate, baseline, evaluate,
report) and the Nextflow processes call the ``step_*`` functions; ``run`` calls
the same functions in order, so both paths give the same findings for the same
seed. ``run`` writes into a run directory of its own inside the output and
publishes it as one unit at the end (:mod:`deepmapper.results.publish`): a failed or
killed run never touches the results of an earlier successful one, and its
finished passes are reused by ``run --resume``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from deepmapper._utils import faults
from deepmapper.results import publish
from deepmapper.results import findings as findings_mod
from deepmapper._utils.atomic import write_json, write_text
from deepmapper.config import Config
from deepmapper.errors import DeepMapperError, InputError
from deepmapper.engine.passfile import PassResult, write_pass
from deepmapper.results import layout

log = logging.getLogger(__name__)


# -- steps -----------------------------------------------------------------------------

def step_interactions(dataset_path: Path, cfg: Config, outdir: Path, *, progress: bool = True, device=None):
    """The pair screen on the run's non-held-out cells: ``outdir/interactions.tsv`` (best first)."""
    from deepmapper import io
    from deepmapper.device import setup
    from deepmapper.engine import interactions
    from deepmapper.engine.data import prepare

    device = device or setup(cfg)
    adata = io.read_dataset(dataset_path)
    data = prepare(adata, cfg, where=str(dataset_path))
    result = interactions.screen_prepared(data, cfg, device=device, progress=progress)
    interactions.write_table(result, Path(outdir) / layout.INTERACTIONS)
    return result


def use_interactions(data, cfg: Config, table, *, where: str = layout.INTERACTIONS):
    """Hand the screen's table (in memory, or as read from interactions.tsv) to the prepared data,
    which places its pairs; no-op when off. interactions.tsv keeps full precision, so both routes
    place the same pairs (tests/test_engine.py checks it)."""
    if cfg.interactions.enabled and table is not None:
        data.with_interactions(table, cfg, where=where)
    return data


def step_train(dataset_path: Path, cfg: Config, pass_indices: list[int], outdir: Path, *,
               progress: bool = True, interactions_path: Path | None = None, device=None) -> list[PassResult]:
    """Train passes. With interactions on, the pairs come from ``interactions_path``
    (interactions.tsv of step_interactions), or from the same screen run here when none is given."""
    from deepmapper import io
    from deepmapper.device import setup
    from deepmapper.engine import interactions
    from deepmapper.engine.data import prepare
    from deepmapper.engine.train import train_passes

    device = device or setup(cfg)
    adata = io.read_dataset(dataset_path)
    data = prepare(adata, cfg, where=str(dataset_path))
    if cfg.interactions.enabled:
        table = interactions.read_table(interactions_path) if interactions_path is not None \
            else interactions.screen_prepared(data, cfg, device=device, progress=progress).table
        use_interactions(data, cfg, table, where=str(interactions_path or "interaction screen"))
    results = train_passes(data, cfg, pass_indices, progress=progress, device=device)
    for r in results:
        write_pass(stamp(r, data, adata), outdir)
    return results


def step_accumulate(dataset_path: Path, pass_paths: list[Path], outdir: Path, cfg: Config,
                    n_wanted: int | None = None, *, adata=None, passes=None,
                    baselines_path: Path | None = None) -> dict:
    """findings.tsv, findings.json, findings_per_class.tsv, findings_pairs.tsv. ``run`` hands over the
    dataset and the verified passes it already holds (``adata``, ``passes``); a step reads them. With
    ``baselines_path`` (baselines.json of the same dataset and split) the trust verdict compares the
    passes with logistic regression."""
    from deepmapper import io

    adata = io.read_dataset(dataset_path) if adata is None else adata
    if passes is None:
        passes = findings_mod.read_passes(pass_paths, dataset=adata, dataset_path=str(dataset_path))
    baseline = (findings_mod.read_baseline_accuracy(baselines_path, passes[0].heldout_index)
                if baselines_path is not None else None)
    table, per_class, summary, pairs = _findings(adata, passes, cfg, n_wanted, baseline_accuracy=baseline)
    findings_mod.write(outdir, table, per_class, summary, pairs)
    return summary


def step_evaluate(dataset_path: Path, pass_paths: list[Path], out: Path, n_wanted: int | None = None, *,
                  adata=None, passes=None) -> dict:
    """evaluation.json (the ensembled held-out accuracy); ``adata``/``passes`` as in step_accumulate."""
    from deepmapper import io
    from deepmapper.engine.evaluate import evaluate

    adata = io.read_dataset(dataset_path) if adata is None else adata
    codes, classes = io.labels(adata)
    if passes is None:
        passes = findings_mod.read_passes(pass_paths, dataset=adata, dataset_path=str(dataset_path))
    passes = findings_mod.choose(passes, n_wanted, samples=io.samples(adata) is not None)
    result = evaluate(passes, codes, classes, samples=io.samples(adata))
    write_json(out, result)
    return result


def step_baselines(dataset_path: Path, outdir: Path, cfg: Config, methods=("logistic", "wilcoxon"),
                   interactions_path: Path | None = None, *, adata=None) -> dict:
    """Logistic regression and Wilcoxon; with ``interactions_path`` the pair screen alone too."""
    from deepmapper import io
    from deepmapper.engine import baselines, interactions
    from deepmapper.engine.split import make_split

    adata = io.read_dataset(dataset_path) if adata is None else adata
    codes, classes = io.labels(adata)
    split = make_split(codes, cfg, classes=classes, samples=io.samples(adata), blocks=io.sample_blocks(adata),
                       where=str(dataset_path))
    screen = interactions.read_table(interactions_path) if interactions_path is not None else None
    tables, summary = baselines.run_baselines(adata, split=split, seed=cfg.run.seed, methods=tuple(methods),
                                              screen=screen, q_threshold=cfg.interactions.q_threshold)
    outdir = Path(outdir)
    for method, table in tables.items():
        write_text(outdir / layout.baseline_table(method), table.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_json(outdir / layout.BASELINES_JSON, summary)
    return summary


# -- the in-memory core: what `run` and `deepmapper.tl` share -------------------------------

def train_until_accepted(data, cfg: Config, *, device, progress: bool = True, on_pass=None,
                         done: dict[int, PassResult] | None = None) -> list[PassResult]:
    """Train passes 0, 1, ... until ``cfg.run.passes`` are accepted or ``max_tries`` are spent.

    ``on_pass(result)`` is called as each pass finishes (``run`` writes its pass file there);
    ``done`` holds passes already trained (by index), which are reused instead of trained again.
    The grouping is that of ``train-pass --start 0 --count N``, so the chained steps match.
    """
    from deepmapper.engine.planning import next_round
    from deepmapper.engine.train import block_groups, group_passes, train_group

    done = dict(done or {})
    wanted, max_tries = cfg.run.passes, cfg.effective_max_tries()
    results: list[PassResult] = []
    rounds = 0
    # the rule of `deepmapper plan` (the pipeline's rounds): planning.next_round
    while todo := next_round({r.pass_index: r.accepted for r in results}, wanted=wanted, max_tries=max_tries,
                             round_index=rounds):
        rounds += 1
        for group in block_groups(group_passes(todo, cfg), data):
            if all(i in done for i in group):
                results.extend(done[i] for i in group)
                continue
            for r in train_group(data, cfg, group, device=device, progress=progress):
                if on_pass is not None:
                    on_pass(r)
                results.append(r)
    return results


def analyse(adata, cfg: Config, *, device=None, progress: bool = True, where: str = "dataset",
            baseline: bool = True) -> dict:
    """The whole analysis of a validated dataset (``io.build_dataset`` / ``io.from_anndata``) in memory.

    Returns ``{"passes", "findings", "per_class", "summary", "evaluation"}``: the same values
    that ``run`` writes as files (``findings.tsv`` ... ``evaluation.json``), with no file written.
    ``baseline``: fit logistic regression on the same split for the trust verdict (as ``run``'s
    baselines step; ``summary["trust"]``).
    """
    from deepmapper import io
    from deepmapper.device import setup
    from deepmapper.engine import interactions
    from deepmapper.engine.data import prepare
    from deepmapper.engine.evaluate import evaluate

    device = device or setup(cfg)
    data = prepare(adata, cfg, where=where)
    check_trainable(data, cfg, where=where, field=adata.uns.get("deepmapper", {}).get("label_key"))
    screen = interactions.screen_prepared(data, cfg, device=device, progress=progress) \
        if cfg.interactions.enabled else None
    use_interactions(data, cfg, screen.table if screen is not None else None)
    results = train_until_accepted(data, cfg, device=device, progress=progress)
    baseline_accuracy = None
    if baseline:
        from deepmapper.engine.baselines import logistic

        baseline_accuracy = logistic(adata, data.split, seed=cfg.run.seed)[1]["accuracy"]
    table, per_class, summary, pairs = _findings(adata, results, cfg, n_wanted=cfg.run.passes,
                                                 baseline_accuracy=baseline_accuracy)
    codes, classes = io.labels(adata)
    evaluation = evaluate(findings_mod.choose(results, cfg.run.passes, samples=io.samples(adata) is not None),
                          codes, classes, samples=io.samples(adata))
    return {"passes": results, "findings": table, "per_class": per_class, "summary": summary,
            "evaluation": evaluation, "pairs": pairs, "interactions": None if screen is None else screen.table}


def _findings(adata, passes: list[PassResult], cfg: Config, n_wanted: int | None = None,
              baseline_accuracy: float | None = None):
    """(findings table, per-class table, summary, pair table) of passes trained on ``adata`` (the first
    ``n_wanted`` accepted passes; all accepted when None)."""
    from deepmapper import io
    from deepmapper.device import cpu_processes
    from deepmapper.engine import accumulate, samples
    from deepmapper.engine.evaluate import evaluate

    is_denovo = adata.var["is_denovo"].to_numpy() if "is_denovo" in adata.var else None
    codes, classes = io.labels(adata)
    means = accumulate.group_means(adata.X, codes, len(classes))
    # the passes ranked from; the trust verdict may judge their ensemble
    chosen = findings_mod.choose(passes, n_wanted, samples=io.samples(adata) is not None)
    ensembled = evaluate(chosen, codes, classes)["accuracy"] if chosen else None
    log_values = findings_mod.log_values_or_warn(adata.X, where=str(adata.uns.get("deepmapper", {}).get("source", "")))
    stats = samples.sample_level(adata, classes, n_cpus=cpu_processes(cfg.run.threads))
    if stats is not None and passes:   # the samples the pair screen saw, outside the passes' held-out cells
        from deepmapper.engine.interactions import screened_samples

        found = io.samples(adata)
        stats["screened"] = screened_samples(found[0], passes[0].heldout_index, len(found[1]))
    label_key = adata.uns.get("deepmapper", {}).get("label_key")
    if cfg.input.label_key is None and label_key:   # given beside the settings (--label-key): recorded too
        cfg = cfg.with_params({"label_key": str(label_key)}, where="dataset")
    return findings_mod.build(
        passes, [str(v) for v in adata.var_names], cfg=cfg, n_wanted=n_wanted, is_denovo=is_denovo,
        n_cells=int(adata.n_obs),
        dataset_sha256=str(adata.uns.get("deepmapper", {}).get("source_sha256", "")),
        means=means, log_values=log_values, baseline_accuracy=baseline_accuracy, ensembled_accuracy=ensembled,
        sample_stats=stats)


# -- the embedded path ----------------------------------------------------------------------

class OptionalStepFailed(DeepMapperError):
    """The required results were published, but an optional step (baselines, report, ...) failed."""

    exit_code = 4

    def __init__(self, problem: str, *, summary: dict, failed: list[tuple[str, str]], **kw):
        super().__init__(problem, **kw)
        self.summary = summary
        self.failed = failed


def run(inputs: list[str], outdir: Path, cfg: Config, *, label_key: str | None = None, labels: Path | None = None,
        report: bool = True, progress: bool = True, baselines: bool = True, resume: bool = False,
        wait: bool = False) -> dict:
    """ingest -> passes (until ``passes`` accepted or ``max_tries``) -> accumulate -> evaluate ->
    [baselines] -> [report], in a run directory of its own under ``outdir``, published as one unit
    (see :mod:`deepmapper.results.publish`).

    The output location is checked and locked before the input is read (``wait``: queue behind a
    run that holds it). ``resume``: verified passes of an interrupted run of the same input and
    settings are reused; without it such leftovers are removed. An optional step that fails does
    not cost the required results: they are published, then :class:`OptionalStepFailed` is raised.
    """
    import torch

    from deepmapper import io
    from deepmapper._utils import progress as progress_mod
    from deepmapper.device import setup
    from deepmapper.engine.data import prepare
    from deepmapper.features import inputs as inputs_mod

    t_start = time.perf_counter()
    out = publish.OutDir(outdir)
    out.check()                                    # before the input is read
    multiqc_ok = _check_optional_tools(report)     # before training: a missing tool is said now
    run_id = publish.new_run_id()
    with out.lock(wait=wait, run_id=run_id):
        held = progress_mod.hold_log_lines()        # the input's lines, for run.log once it exists
        try:
            # Read and validate before anything is written: bad input leaves outdir as it was.
            adata = inputs_mod.load(inputs, cfg, label_key=label_key, labels=labels)
        except BaseException:
            progress_mod.stop_log_file(held)
            out.cleanup_after_failure()
            raise
        try:
            _check_space(out, adata)
        except BaseException:
            progress_mod.stop_log_file(held)
            raise
        run_dir = out.new_run(run_id)
        # the run's log lines, from reading the input on, published with it
        file_log = progress_mod.log_to_file(run_dir / layout.RUN_LOG, held)
        device = setup(cfg)
        dataset_path = run_dir / layout.DATASET
        info = {"run_id": run_id, "state": "running", "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "inputs": [str(i) for i in inputs], "resume_key": _resume_key(adata, cfg)}
        write_json(run_dir / layout.RUN_INFO, info)
        passes_dir = run_dir / layout.PASSES
        try:
            _write_dataset(adata, dataset_path)
            adata = io.read_dataset(dataset_path)  # train on exactly what the step commands would read
            data = prepare(adata, cfg, where=str(inputs[0]))
            log.info("%d cells x %d features, %d classes; device %s; run %s", adata.n_obs, adata.n_vars,
                     data.n_classes, device, run_id)
            check_trainable(data, cfg, where=str(inputs[0]), field=adata.uns["deepmapper"].get("label_key"))
            screened = run_dir / layout.INTERACTIONS
            if cfg.interactions.enabled:   # the screen on the training cells, written and handed over
                from deepmapper.engine import interactions

                screen = interactions.screen_prepared(data, cfg, device=device, progress=progress)
                interactions.write_table(screen, screened)
                use_interactions(data, cfg, screen.table)
            done = _reusable_passes(out, run_dir, info["resume_key"], data, cfg, resume=resume)

            def on_pass(r: PassResult) -> None:
                write_pass(stamp(r, data, adata), passes_dir)
                faults.point("pass", r.pass_index)

            results = train_until_accepted(data, cfg, device=device, progress=progress, on_pass=on_pass,
                                           done=done)
            # optional: a failure is reported, the required results are still published. The baselines
            # come first: the trust verdict in findings.json compares the passes with logistic regression.
            failed: list[tuple[str, str]] = []
            if baselines:
                _optional("baselines", failed, run_dir,
                          lambda: step_baselines(dataset_path, run_dir / layout.BASELINES, cfg,
                                                 interactions_path=screened if screened.is_file() else None,
                                                 adata=adata))
            # required: what the run is for
            # the pass files are read back once (verified as the step commands verify them) and shared
            pass_paths = findings_mod.pass_files(passes_dir)
            verified = findings_mod.read_passes(pass_paths, dataset=adata, dataset_path=str(dataset_path))
            baselines_json = run_dir / layout.BASELINES / layout.BASELINES_JSON
            summary = step_accumulate(dataset_path, pass_paths, run_dir, cfg, n_wanted=cfg.run.passes,
                                      adata=adata, passes=verified,
                                      baselines_path=baselines_json if baselines_json.is_file() else None)
            step_evaluate(dataset_path, pass_paths, run_dir / layout.EVALUATION, n_wanted=cfg.run.passes,
                          adata=adata, passes=verified)
            if report:
                _optional("report", failed, run_dir, lambda: _report(run_dir, multiqc_ok))
            info.update({"state": "complete", "seconds": round(time.perf_counter() - t_start, 2),
                         "device": str(device), "torch_threads": torch.get_num_threads(),
                         "passes_run": len(results), "passes_accepted": sum(r.accepted for r in results),
                         "passes_reused": len(done), "failed_steps": [name for name, _ in failed]})
            write_json(run_dir / layout.RUN_INFO, info)
            progress_mod.stop_log_file(file_log)                    # complete before the manifest hashes it
            out.publish(run_dir, run_id)
        except BaseException as err:
            progress_mod.stop_log_file(file_log)
            _keep_for_resume(out, run_dir, passes_dir, err)
            if isinstance(err, OSError):
                raise publish.os_error(err, what=str(run_dir)) from None
            raise
    if failed:
        steps = "; ".join(f"{name}: {why}" for name, why in failed)
        raise OptionalStepFailed(f"results published, but optional step(s) failed: {steps}", where=str(outdir),
                                 summary=summary, failed=failed,
                                 fix="see the line(s) above; rerun with the step off (--no-report, --no-baselines) "
                                     "or fix its cause.")
    return summary


MIN_TRAINING_CELLS = 2


def check_trainable(data, cfg: Config, *, where: str, field: str | None = None) -> None:
    """Refuse before training when the split leaves a class fewer than 2 cells to train on: such a
    run trains every pass and then fails the accuracy gate, whatever the number of epochs."""
    train_counts = np.bincount(data.codes[data.split.train], minlength=data.n_classes)
    low = [c for c in range(data.n_classes) if train_counts[c] < MIN_TRAINING_CELLS]
    if not low:
        return
    sizes = np.bincount(data.codes, minlength=data.n_classes)
    need = next(n for n in range(3, 1000) if _n_train(n, cfg) >= MIN_TRAINING_CELLS)
    listed = ", ".join(f"'{data.classes[c]}' ({sizes[c]} cells, {train_counts[c]} to train on)" for c in low[:5])
    raise InputError(f"class(es) too small to learn from: {listed}; the split holds out "
                     f"{cfg.run.test_fraction:g} and validates on {cfg.run.val_fraction:g} of each class",
                     where=where, field=field or "labels",
                     fix=f"give every class at least {need} cells (add cells, or merge or drop the smallest "
                         "classes).")


def _n_train(n: int, cfg: Config) -> int:
    n_test = max(1, int(round(n * cfg.run.test_fraction)))
    rest = n - n_test
    n_val = max(1, int(round(rest * cfg.run.val_fraction)))
    return rest - min(n_val, rest - 1)


def stamp(r: PassResult, data, adata) -> PassResult:
    """Record in the pass what it was trained on: label column, split, dataset identity."""
    from deepmapper.engine.passfile import array_sha256

    meta = adata.uns.get("deepmapper", {})
    r.meta = {**r.meta, "label_key": meta.get("label_key"),
              "split_sha256": array_sha256(data.split.train, data.split.val, data.split.test,
                                           data.folds if data.folds is not None else []),
              "dataset": {"source_sha256": str(meta.get("source_sha256", "")), "n_cells": int(adata.n_obs),
                          "matrix": meta.get("matrix"), "normalized": bool(meta.get("normalized", False)),
                          "modality": meta.get("modality")}}
    return r


def _resume_key(adata, cfg: Config) -> str:
    """Same key <=> same input (checksum, features, labels) and the same settings."""
    import hashlib
    import json

    from deepmapper import io

    meta = dict(adata.uns.get("deepmapper", {}))
    meta.pop("deepmapper_version", None)
    codes, classes = io.labels(adata)
    ident = {"dataset": {k: str(v) for k, v in sorted(meta.items())}, "n_obs": int(adata.n_obs),
             "features": io.features_sha256(adata.var_names), "classes": classes,
             "labels": hashlib.sha256(codes.tobytes()).hexdigest(), "config": cfg.to_dict()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _reusable_passes(out, run_dir: Path, key: str, data, cfg: Config, *, resume: bool) -> dict[int, PassResult]:
    """Passes of interrupted runs (same key) moved into ``run_dir`` after verification, by index;
    every leftover run directory is removed afterwards (reused or not)."""
    import json

    from deepmapper.engine.passfile import array_sha256, pass_filename, read_pass

    done: dict[int, PassResult] = {}
    split_sha = array_sha256(data.split.train, data.split.val, data.split.test,
                             data.folds if data.folds is not None else [])
    for old in out.leftovers():
        if old == run_dir:
            continue
        files = sorted((old / "passes").glob("pass_*.npz")) if (old / "passes").is_dir() else []
        try:
            old_key = json.loads((old / layout.RUN_INFO).read_text()).get("resume_key")
        except (OSError, ValueError):
            old_key = None
        if not resume or old_key != key:
            if files:
                log.info("removing interrupted run %s (%d finished passes; %s)", old.name, len(files),
                         "other input or settings" if resume else "--resume would reuse them")
            out.discard(old)
            continue
        for f in files:
            try:
                p = read_pass(f)
                why = _mismatch(p, data, cfg, split_sha)
            except DeepMapperError as err:
                why = err.problem
            if why or p.pass_index in done:
                log.warning("not reusing %s: %s", f, why or "pass given twice")
                continue
            (run_dir / "passes").mkdir(exist_ok=True)
            os.replace(f, run_dir / "passes" / pass_filename(p.pass_index))
            done[p.pass_index] = p
        out.discard(old)
    if done:
        log.info("resuming: reusing %d verified passes (%s)", len(done), ", ".join(map(str, sorted(done))))
    return done


def _mismatch(p: PassResult, data, cfg: Config, split_sha: str) -> str:
    """Why a leftover pass cannot stand in for the pass this run would train ('' when it can)."""
    if list(p.classes) != list(data.classes):
        return "other classes"
    if p.features_sha256 != data.features_sha256 or p.dataset_sha256 != data.dataset_sha256:
        return "another dataset"
    if p.seed != cfg.run.seed + p.pass_index:
        return "another seed"
    if p.meta.get("split_sha256") != split_sha or not np.array_equal(p.heldout_index, data.split.test):
        return "another split"
    if p.meta.get("config") != cfg.to_dict():
        return "other settings"
    return ""


def _check_optional_tools(report: bool) -> bool:
    """Whether MultiQC can run for the report; a missing one is one warning now, not a failure later."""
    if not report:
        return False
    import importlib.util

    if importlib.util.find_spec("multiqc") is None:
        log.warning("MultiQC is not installed: the report will be report.html only, without multiqc/ "
                    "(pip install multiqc to add it, or --no-report to skip the report)")
        return False
    return True


def _optional(name: str, failed: list, run_dir: Path, fn) -> None:
    """Run an optional step; on failure record it and remove what it wrote (no half report is published)."""
    import shutil

    before = {e.name for e in run_dir.iterdir()}
    try:
        fn()
    except Exception as err:   # not BaseException: Ctrl-C / SIGTERM still stop the run
        why = err.format() if isinstance(err, DeepMapperError) else f"{err.__class__.__name__}: {err}"
        why = why.splitlines()[0] if why else err.__class__.__name__
        log.error("optional step '%s' failed, the required results are kept: %s", name, why)
        failed.append((name, why))
        for entry in run_dir.iterdir():
            if entry.name not in before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _report(run_dir: Path, multiqc: bool) -> None:
    from deepmapper.results.report import write_report

    write_report(run_dir, run_dir, multiqc=multiqc)
    faults.point("report")


def _write_dataset(adata, path: Path) -> None:
    from deepmapper import io

    io.write_dataset(adata, path)


def _dataset_bytes(adata) -> int:
    import scipy.sparse as sp

    X = adata.X
    if sp.issparse(X):
        n = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    else:
        n = int(np.asarray(X).nbytes)
    return int(n + 200 * (adata.n_obs + adata.n_vars) + (1 << 20))


def _check_space(out, adata) -> None:
    """Enough free space for dataset.h5ad and the passes (h5py can crash on a disk that fills up)."""
    need = 2 * _dataset_bytes(adata) + publish.MIN_FREE_BYTES
    free = out.free_bytes()
    if free < need:
        raise publish.OutputError(f"not enough free space: the run needs about {need / 2**20:.0f} MB, "
                                  f"{free / 2**20:.0f} MB are free", where=str(out.path), field="--outdir",
                                  exit_code=3, fix="free space or choose an --outdir on another disk.")


def _keep_for_resume(out, run_dir: Path, passes_dir: Path, err: BaseException) -> None:
    """After a failed or interrupted run: keep the finished passes for --resume, drop the rest."""
    n = len(list(passes_dir.glob("pass_*.npz"))) if passes_dir.is_dir() else 0
    if out.published_run_id() == run_dir.name or out.journal.exists():
        return   # published (a signal held back during the publish acts after it), or the publish was
                 # cut short: the journal and the run directory finish it on the next run
    if n:
        hint = (f"{n} finished pass{'es' if n != 1 else ''} kept in {out.meta}: rerun with --resume "
                "to reuse them")
        err.resume_hint = hint
        log.info(hint)
    else:
        out.discard(run_dir)
        out.cleanup_after_failure()


def pass_range(start: int, count: int) -> list[int]:
    return list(range(int(start), int(start) + int(count)))

