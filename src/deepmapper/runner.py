"""The steps as functions, and ``run``: the whole analysis in one process.

The CLI step commands (ingest, train-pass, accumulate, baseline, evaluate,
report) and the Nextflow processes call the ``step_*`` functions; ``run`` calls
the same functions in order, so both paths give the same findings for the same
seed. ``run`` writes into a staging directory beside the output and moves the
finished files in at the end: a failed run never touches the results of an
earlier successful one.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import findings as findings_mod
from .atomic import write_json
from .config import Config
from .passfile import PassResult, write_pass

log = logging.getLogger(__name__)


# -- steps -----------------------------------------------------------------------------

def step_train(dataset_path: Path, cfg: Config, pass_indices: list[int], outdir: Path, *,
               progress: bool = True) -> list[PassResult]:
    from . import io
    from .data import prepare
    from .train import train_passes

    adata = io.read_dataset(dataset_path)
    data = prepare(adata, cfg, where=str(dataset_path))
    results = train_passes(data, cfg, pass_indices, progress=progress)
    for r in results:
        write_pass(r, outdir)
    return results


def step_accumulate(dataset_path: Path, pass_paths: list[Path], outdir: Path, cfg: Config,
                    n_wanted: int | None = None) -> dict:
    from . import io

    adata = io.read_dataset(dataset_path)
    passes = findings_mod.read_passes(pass_paths)
    is_denovo = adata.var["is_denovo"].to_numpy() if "is_denovo" in adata.var else None
    table, per_class, summary = findings_mod.build(
        passes, [str(v) for v in adata.var_names], cfg=cfg, n_wanted=n_wanted, is_denovo=is_denovo,
        n_cells=int(adata.n_obs), dataset_sha256=str(adata.uns.get("deepmapper", {}).get("source_sha256", "")))
    findings_mod.write(outdir, table, per_class, summary)
    return summary


def step_evaluate(dataset_path: Path, pass_paths: list[Path], out: Path, n_wanted: int | None = None) -> dict:
    from . import io
    from .evaluate import evaluate

    adata = io.read_dataset(dataset_path)
    codes, classes = io.labels(adata)
    passes = findings_mod.choose(findings_mod.read_passes(pass_paths), n_wanted)
    result = evaluate(passes, codes, classes)
    write_json(out, result)
    return result


def step_baselines(dataset_path: Path, outdir: Path, cfg: Config, methods=("logistic", "wilcoxon")) -> dict:
    from . import baselines, io
    from .split import stratified_split

    adata = io.read_dataset(dataset_path)
    codes, classes = io.labels(adata)
    split = stratified_split(codes, test_fraction=cfg.run.test_fraction, val_fraction=cfg.run.val_fraction,
                             seed=cfg.run.seed, classes=classes, min_class_size=cfg.input.min_class_size,
                             where=str(dataset_path))
    return baselines.run_baselines(adata, outdir, split=split, seed=cfg.run.seed, methods=tuple(methods))


# -- the embedded path ----------------------------------------------------------------------

def run(inputs: list[str], outdir: Path, cfg: Config, *, label_key: str | None = None, labels: Path | None = None,
        report: bool = True, progress: bool = True, baselines: bool = True) -> dict:
    """ingest -> passes (until ``passes`` accepted or ``max_tries``) -> accumulate -> baselines ->
    evaluate -> report, all under ``outdir``."""
    import torch

    from . import inputs as inputs_mod
    from . import io
    from .data import prepare
    from .train import group_passes, select_device, train_group

    outdir = Path(outdir)
    t_start = time.perf_counter()
    # Read and validate before anything is written: bad input leaves outdir as it was.
    adata = inputs_mod.load(inputs, cfg, label_key=label_key, labels=labels)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = select_device(cfg.run.device)
    with _staging(outdir) as stage:
        dataset_path = stage / "dataset.h5ad"
        io.write_dataset(adata, dataset_path)
        adata = io.read_dataset(dataset_path)  # train on exactly what the step commands would read
        data = prepare(adata, cfg, where=str(inputs[0]))
        log.info("%d cells x %d features, %d classes; device %s", adata.n_obs, adata.n_vars, data.n_classes,
                 device)

        passes_dir = stage / "passes"
        wanted, max_tries = cfg.run.passes, cfg.effective_max_tries()
        results: list[PassResult] = []
        next_index = 0
        while sum(r.accepted for r in results) < wanted and next_index < max_tries:
            # Same grouping as `train-pass --start 0 --count N`, so the chained steps match.
            need = wanted - sum(r.accepted for r in results)
            todo = list(range(next_index, min(next_index + max(need, 1), max_tries)))
            for group in group_passes(todo, cfg):
                for r in train_group(data, cfg, group, device=device, progress=progress):
                    write_pass(r, passes_dir)
                    results.append(r)
            next_index = todo[-1] + 1
        pass_paths = findings_mod.pass_files(passes_dir)
        summary = step_accumulate(dataset_path, pass_paths, stage, cfg, n_wanted=wanted)
        step_evaluate(dataset_path, pass_paths, stage / "evaluation.json", n_wanted=wanted)
        if baselines:
            step_baselines(dataset_path, stage / "baselines", cfg)
        write_json(stage / "run_info.json", {
            "seconds": round(time.perf_counter() - t_start, 2), "device": str(device),
            "torch_threads": torch.get_num_threads(), "inputs": [str(i) for i in inputs],
            "passes_run": len(results), "passes_accepted": sum(r.accepted for r in results)})
        if report:
            from .report import write_report

            write_report(stage, stage, multiqc=True)
    return summary


@contextlib.contextmanager
def _staging(outdir: Path):
    """A private directory beside ``outdir``; its entries replace those in ``outdir`` on success."""
    outdir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".deepmapper-staging-", dir=outdir))
    try:
        yield stage
        for entry in sorted(stage.iterdir()):
            target = outdir / entry.name
            if target.is_dir() and not target.is_symlink():
                trash = Path(tempfile.mkdtemp(prefix=".deepmapper-old-", dir=outdir))
                os.replace(target, trash / entry.name)
                os.replace(entry, target)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(entry, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def pass_range(start: int, count: int) -> list[int]:
    return list(range(int(start), int(start) + int(count)))

