"""Engine commands: train-pass, accumulate, evaluate, and run (the whole analysis in one process)."""
from __future__ import annotations

from pathlib import Path

import click

from deepmapper.cli._options import OUT_DIR, OUT_FILE, build_config, config_options
from deepmapper.results import layout

_dataset = click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
                        help="dataset.h5ad written by 'deepmapper ingest'.")


def _passes_from(passes_dir: Path | None, pass_file: tuple[Path, ...]) -> list[Path]:
    from deepmapper.results.findings import pass_files

    if bool(passes_dir) == bool(pass_file):
        raise click.UsageError("give either --passes-dir or one or more --pass-file")
    return pass_files(passes_dir) if passes_dir else list(pass_file)


_passes_dir = click.option("--passes-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="Directory holding pass_NNN.npz files.")
_pass_file = click.option("--pass-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                          multiple=True, help="A pass file (repeatable), instead of --passes-dir.")


def _recorded(dataset: Path, pass_paths: list[Path], own):
    """The configuration of a chained run: ingest's settings from the dataset, training's from
    the pass files (which must agree), this step's own (config.recorded_config)."""
    import json

    from deepmapper import io
    from deepmapper.config import Config, recorded_config, step_params
    from deepmapper.engine.passfile import read_pass

    adata = io.read_dataset(dataset)
    settings = adata.uns.get("deepmapper", {}).get("settings")
    sources = [(("ingest",), json.loads(settings))] if settings else []
    # Passes that disagree are refused by findings.read_passes (the one place passes are checked
    # against each other); the training settings recorded here are those of the first pass.
    train_keys = step_params("train")
    for path in pass_paths:
        recorded = read_pass(path).meta.get("config")
        if recorded:
            flat = Config.from_dict(recorded, where=str(path)).flat()
            sources.append((("train",), {k: flat[k] for k in train_keys}))
            break
    return recorded_config(own, ("accumulate",), sources)


@click.command("train-pass")
@_dataset
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First pass index.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="Number of passes.")
@click.option("--outdir", type=OUT_DIR, required=True,
              help="Where pass_NNN.npz files are written.")
@click.option("--verdicts", "verdicts_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the gate's verdicts (accepted or not, per pass) as JSON: what `deepmapper plan` "
                   "reads to plan the next round.")
@click.option("--expect-gpu/--no-expect-gpu", default=False, show_default=True,
              help="This task was meant for a GPU (the pipeline's gpu profile): say so loudly when none is visible.")
@click.option("--interactions-tsv", "interactions_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="interactions.tsv of 'deepmapper interactions' (the screened pairs); "
                                 "without it the same screen is run here.")
@config_options("train")
def train_pass(dataset, start, count, outdir, verdicts_path, expect_gpu, interactions_path, config_path, **params):
    """Train passes START..START+COUNT-1 (one arrangement each) and write their pass files."""
    from deepmapper.device import setup, warn_if_gpu_missing
    from deepmapper.engine.planning import write_verdicts
    from deepmapper.pipeline.runner import pass_range, step_train

    cfg = build_config(config_path, params)
    warn_if_gpu_missing(expect_gpu)
    device = setup(cfg)
    results = step_train(dataset, cfg, pass_range(start, count), outdir, interactions_path=interactions_path,
                         device=device)
    if verdicts_path is not None:
        write_verdicts(verdicts_path, results, device=device.type, gpu_expected=expect_gpu)
    for r in results:
        click.echo(f"pass {r.pass_index}: accuracy {r.accuracy:.3f} "
                   f"{'accepted' if r.accepted else 'rejected'} (epochs {r.stop_epoch}, best {r.best_epoch})")


@click.command("accumulate")
@_dataset
@_passes_dir
@_pass_file
@click.option("--outdir", type=OUT_DIR, required=True,
              help="Where findings.tsv, findings.json, findings_per_class.tsv, findings_pairs.tsv and, with a "
                   "sample key, findings_samples.tsv are written.")
@click.option("--baselines", "baselines_json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="baselines.json of 'deepmapper baseline' on the same dataset and split: the trust "
                                 "verdict then compares the passes with logistic regression.")
@config_options("accumulate")
def accumulate_cmd(dataset, passes_dir, pass_file, outdir, baselines_json, config_path, **params):
    """Accumulate pass files into the ranking (first --passes accepted passes by index).

    findings.json records the whole configuration: the settings of this step from its
    options, those of ingest from the dataset and those of training from the pass files."""
    from deepmapper.pipeline.runner import step_accumulate

    explicit_passes = params.get("passes")
    paths = _passes_from(passes_dir, pass_file)
    cfg = _recorded(dataset, paths, build_config(config_path, params))
    summary = step_accumulate(dataset, paths, outdir, cfg,
                              n_wanted=explicit_passes if explicit_passes is not None else cfg.run.passes,
                              baselines_path=baselines_json)
    click.echo(f"{len(summary['used_passes'])} passes accumulated; top features: "
               + ", ".join(summary["top_features"][:10]))
    _say_trust(summary)


@click.command("evaluate")
@_dataset
@_passes_dir
@_pass_file
@click.option("--out", type=OUT_FILE, required=True,
              help="evaluation.json to write.")
@config_options("evaluate")
def evaluate_cmd(dataset, passes_dir, pass_file, out, config_path, **params):
    """Arrangement-ensembled accuracy, confusion matrix and per-class metrics on the held-out cells
    (the first --passes accepted passes; all accepted ones when --passes is not given)."""
    from deepmapper.pipeline.runner import step_evaluate

    explicit_passes = params.get("passes")
    cfg = build_config(config_path, params)
    passes = explicit_passes if explicit_passes is not None or config_path is None else cfg.run.passes
    result = step_evaluate(dataset, _passes_from(passes_dir, pass_file), out, n_wanted=passes)
    click.echo(f"ensembled held-out accuracy {result['accuracy']:.3f} over {result['n_passes']} passes")


@click.command("run")
@click.option("--input", "inputs", multiple=True, required=True,
              help="h5ad, 10x directory, CSV/TSV, or LABEL=PATH (repeatable) for labelled populations.")
@click.option("--label-key", default=None, help="obs column (or CSV column) with the class labels.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Separate labels file (cell id, label) for CSV/10x input.")
@click.option("--outdir", type=OUT_DIR, required=True,
              help="Results directory (created; earlier results are replaced only when the run succeeds).")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.html and MultiQC.")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also rank with logistic regression and Wilcoxon for comparison.")
@click.option("--resume", is_flag=True, default=False,
              help="Reuse the verified passes of an interrupted run of the same input and settings in --outdir "
                   "(without it they are removed).")
@click.option("--wait", is_flag=True, default=False,
              help="When another run is writing into --outdir, wait for it instead of failing at once.")
@config_options
def run_cmd(inputs, label_key, labels, outdir, report, baselines, resume, wait, config_path, **params):
    """The whole analysis in one process: ingest, passes, accumulate, evaluate, baselines, report."""
    from deepmapper.pipeline.runner import OptionalStepFailed, run

    cfg = build_config(config_path, params)
    try:
        summary = run(list(inputs), outdir, cfg, label_key=label_key, labels=labels, report=report,
                      baselines=baselines, resume=resume, wait=wait)
    except OptionalStepFailed as err:
        _run_summary(err.summary, outdir, report and (outdir / layout.REPORT).exists())
        raise
    _run_summary(summary, outdir, report)


def _run_summary(summary, outdir, report) -> None:
    click.echo(f"{summary['n_passes_accepted']}/{summary['n_passes_run']} passes accepted, mean held-out "
               f"accuracy {summary['mean_accuracy']:.3f}")
    click.echo("top features: " + ", ".join(summary["top_features"][:15]))
    click.echo(f"results in {outdir}" + (f"; report: {outdir / 'report.html'}" if report else ""))
    _say_trust(summary)


@click.command("demo")
@click.option("--outdir", type=OUT_DIR, default=Path("deepmapper_demo"),
              show_default=True, help="Results directory.")
@click.option("--open/--no-open", "open_report", default=True, show_default=True,
              help="Open report.html in a browser when one is available.")
@config_options
def demo_cmd(outdir, open_report, config_path, **params):
    """Run the whole analysis on scanpy's bundled pbmc68k_reduced (700 PBMCs, 10 cell types, label
    'bulk_labels') and open the report."""
    from deepmapper.pipeline.demo import run_demo

    cfg = build_config(config_path, params)
    summary, report, multiqc_report = run_demo(outdir, cfg, open_report=open_report)
    click.echo(f"{summary['n_passes_accepted']}/{summary['n_passes_run']} passes accepted, mean held-out "
               f"accuracy {summary['mean_accuracy']:.3f}")
    click.echo("top features per cell type:")
    for cls, top in summary["per_class_top"].items():
        click.echo(f"  {cls}: {', '.join(top[:8])}")
    click.echo(f"results: {Path(outdir).resolve()}")
    click.echo(f"report: {report}")
    click.echo(f"MultiQC report: {multiqc_report}" if multiqc_report else
               "MultiQC report: skipped (MultiQC is not installed; pip install 'deepmapper[report]' adds it)")
    _say_trust(summary)


def _say_trust(summary) -> None:
    """The last line of a run: whether its model is to be trusted (findings.json 'trust')."""
    from deepmapper.results.findings import trust_line

    if summary.get("trust"):
        click.echo(trust_line(summary["trust"]))


COMMANDS = [train_pass, accumulate_cmd, evaluate_cmd, run_cmd, demo_cmd]
