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

def step_interactions(dataset_path: Path, cfg: Config, outdir: Path, *, progress: bool = True):
    """The pair screen on the run's non-held-out cells: ``outdir/interactions.tsv`` (best first)."""
    from . import interactions, io
    from .data import prepare

    adata = io.read_dataset(dataset_path)
    data = prepare(adata, cfg, where=str(dataset_path))
    result = interactions.screen_prepared(data, cfg, progress=progress)
    interactions.write_table(result, Path(outdir) / "interactions.tsv")
    return result


def use_interactions(data, cfg: Config, table_text: str | None, *, where: str = "interactions.tsv"):
    """Hand the screen's pairs (interactions.tsv as text) to the prepared data; no-op when off."""
    from . import interactions

    if cfg.interactions.enabled and table_text is not None:
        data.with_interactions(interactions.parse_table(table_text, where=where), cfg, where=where)
    return data


def step_train(dataset_path: Path, cfg: Config, pass_indices: list[int], outdir: Path, *,
               progress: bool = True, interactions_path: Path | None = None) -> list[PassResult]:
    """Train passes. With interactions on, the pairs come from ``interactions_path``
    (interactions.tsv of step_interactions), or from the same screen run here when none is given."""
    from . import interactions, io
    from .data import prepare
    from .train import train_passes

    adata = io.read_dataset(dataset_path)
    data = prepare(adata, cfg, where=str(dataset_path))
    if cfg.interactions.enabled:
        if interactions_path is not None:
            interactions.read_table(interactions_path)          # a missing or broken file: one clear error
            text = Path(interactions_path).read_text(encoding="utf-8")
        else:
            text = interactions.table_text(interactions.screen_prepared(data, cfg, progress=progress))
        use_interactions(data, cfg, text, where=str(interactions_path or "interaction screen"))
    results = train_passes(data, cfg, pass_indices, progress=progress)
    for r in results:
        write_pass(r, outdir)
    return results


def step_accumulate(dataset_path: Path, pass_paths: list[Path], outdir: Path, cfg: Config,
                    n_wanted: int | None = None) -> dict:
    from . import io

    adata = io.read_dataset(dataset_path)
    passes = findings_mod.read_passes(pass_paths)
    table, per_class, summary, pairs = _findings(adata, passes, cfg, n_wanted)
    findings_mod.write(outdir, table, per_class, summary, pairs)
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


def step_baselines(dataset_path: Path, outdir: Path, cfg: Config, methods=("logistic", "wilcoxon"),
                   interactions_path: Path | None = None) -> dict:
    """Logistic regression and Wilcoxon; with ``interactions_path`` the pair screen alone too."""
    from . import baselines, interactions, io
    from .split import stratified_split

    adata = io.read_dataset(dataset_path)
    codes, classes = io.labels(adata)
    split = stratified_split(codes, test_fraction=cfg.run.test_fraction, val_fraction=cfg.run.val_fraction,
                             seed=cfg.run.seed, classes=classes, min_class_size=cfg.input.min_class_size,
                             where=str(dataset_path))
    screen = interactions.read_table(interactions_path) if interactions_path is not None else None
    return baselines.run_baselines(adata, outdir, split=split, seed=cfg.run.seed, methods=tuple(methods),
                                   screen=screen, q_threshold=cfg.interactions.q_threshold)


# -- the in-memory core: what `run` and `deepmapper.tl` share -------------------------------

def train_until_accepted(data, cfg: Config, *, device, progress: bool = True, on_pass=None,
                         done: dict[int, PassResult] | None = None) -> list[PassResult]:
    """Train passes 0, 1, ... until ``cfg.run.passes`` are accepted or ``max_tries`` are spent.

    ``on_pass(result)`` is called as each pass finishes (``run`` writes its pass file there);
    ``done`` holds passes already trained (by index), which are reused instead of trained again.
    The grouping is that of ``train-pass --start 0 --count N``, so the chained steps match.
    """
    from .train import group_passes, train_group

    done = dict(done or {})
    wanted, max_tries = cfg.run.passes, cfg.effective_max_tries()
    results: list[PassResult] = []
    next_index = 0
    while sum(r.accepted for r in results) < wanted and next_index < max_tries:
        need = wanted - sum(r.accepted for r in results)
        todo = list(range(next_index, min(next_index + max(need, 1), max_tries)))
        for group in group_passes(todo, cfg):
            if all(i in done for i in group):
                results.extend(done[i] for i in group)
                continue
            for r in train_group(data, cfg, group, device=device, progress=progress):
                if on_pass is not None:
                    on_pass(r)
                results.append(r)
        next_index = todo[-1] + 1
    return results


def analyse(adata, cfg: Config, *, device=None, progress: bool = True, where: str = "dataset") -> dict:
    """The whole analysis of a validated dataset (``io.build_dataset`` / ``io.from_anndata``) in memory.

    Returns ``{"passes", "findings", "per_class", "summary", "evaluation"}``: the same values
    that ``run`` writes as files (``findings.tsv`` ... ``evaluation.json``), with no file written.
    """
    from . import io
    from .data import prepare
    from .evaluate import evaluate
    from .train import select_device

    from . import interactions

    device = device or select_device(cfg.run.device)
    data = prepare(adata, cfg, where=where)
    screen = interactions.screen_prepared(data, cfg, device=device, progress=progress) \
        if cfg.interactions.enabled else None
    use_interactions(data, cfg, interactions.table_text(screen) if screen is not None else None)
    results = train_until_accepted(data, cfg, device=device, progress=progress)
    table, per_class, summary, pairs = _findings(adata, results, cfg, n_wanted=cfg.run.passes)
    codes, classes = io.labels(adata)
    evaluation = evaluate(findings_mod.choose(results, cfg.run.passes), codes, classes)
    return {"passes": results, "findings": table, "per_class": per_class, "summary": summary,
            "evaluation": evaluation, "pairs": pairs, "interactions": None if screen is None else screen.table}


def _findings(adata, passes: list[PassResult], cfg: Config, n_wanted: int | None = None):
    """(findings table, per-class table, summary, pair table) of passes trained on ``adata`` (the first
    ``n_wanted`` accepted passes; all accepted when None)."""
    is_denovo = adata.var["is_denovo"].to_numpy() if "is_denovo" in adata.var else None
    return findings_mod.build(
        passes, [str(v) for v in adata.var_names], cfg=cfg, n_wanted=n_wanted, is_denovo=is_denovo,
        n_cells=int(adata.n_obs),
        dataset_sha256=str(adata.uns.get("deepmapper", {}).get("source_sha256", "")))


# -- the embedded path ----------------------------------------------------------------------

def run(inputs: list[str], outdir: Path, cfg: Config, *, label_key: str | None = None, labels: Path | None = None,
        report: bool = True, progress: bool = True, baselines: bool = True) -> dict:
    """ingest -> passes (until ``passes`` accepted or ``max_tries``) -> accumulate -> baselines ->
    evaluate -> report, all under ``outdir``."""
    import torch

    from . import inputs as inputs_mod
    from . import io
    from .data import prepare
    from .train import select_device

    outdir = Path(outdir)
    wanted = cfg.run.passes
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
        if cfg.interactions.enabled:   # the screen on the training cells; the passes read its pairs back
            from . import interactions

            interactions.write_table(interactions.screen_prepared(data, cfg, device=device, progress=progress),
                                     stage / "interactions.tsv")
            use_interactions(data, cfg, (stage / "interactions.tsv").read_text(encoding="utf-8"))
        log.info("%d cells x %d features, %d classes; device %s", adata.n_obs, adata.n_vars, data.n_classes,
                 device)

        passes_dir = stage / "passes"
        results = train_until_accepted(data, cfg, device=device, progress=progress,
                                       on_pass=lambda r: write_pass(r, passes_dir))
        pass_paths = findings_mod.pass_files(passes_dir)
        summary = step_accumulate(dataset_path, pass_paths, stage, cfg, n_wanted=cfg.run.passes)
        step_evaluate(dataset_path, pass_paths, stage / "evaluation.json", n_wanted=cfg.run.passes)
        if baselines:
            screened = stage / "interactions.tsv"
            step_baselines(dataset_path, stage / "baselines", cfg,
                           interactions_path=screened if screened.is_file() else None)
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

