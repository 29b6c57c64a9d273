"""Engine commands: train-pass, accumulate, evaluate, and run (the whole analysis in one process)."""
from __future__ import annotations

from pathlib import Path

import click

from ._options import build_config, config_options

_dataset = click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
                        help="dataset.h5ad written by 'deepmapper ingest'.")


def _passes_from(passes_dir: Path | None, pass_file: tuple[Path, ...]) -> list[Path]:
    from ..findings import pass_files

    if bool(passes_dir) == bool(pass_file):
        raise click.UsageError("give either --passes-dir or one or more --pass-file")
    return pass_files(passes_dir) if passes_dir else list(pass_file)


_passes_dir = click.option("--passes-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="Directory holding pass_NNN.npz files.")
_pass_file = click.option("--pass-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                          multiple=True, help="A pass file (repeatable), instead of --passes-dir.")


@click.command("train-pass")
@_dataset
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First pass index.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="Number of passes.")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where pass_NNN.npz files are written.")
@click.option("--interactions-tsv", "interactions_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="interactions.tsv of 'deepmapper interactions' (the screened pairs); "
                                 "without it the same screen is run here.")
@config_options
def train_pass(dataset, start, count, outdir, interactions_path, config_path, **params):
    """Train passes START..START+COUNT-1 (one arrangement each) and write their pass files."""
    from ..runner import pass_range, step_train

    cfg = build_config(config_path, params)
    results = step_train(dataset, cfg, pass_range(start, count), outdir, interactions_path=interactions_path)
    for r in results:
        click.echo(f"pass {r.pass_index}: accuracy {r.accuracy:.3f} "
                   f"{'accepted' if r.accepted else 'rejected'} (epochs {r.stop_epoch}, best {r.best_epoch})")


@click.command("accumulate")
@_dataset
@_passes_dir
@_pass_file
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where findings.tsv, findings.json and findings_per_class.tsv are written.")
@config_options
def accumulate_cmd(dataset, passes_dir, pass_file, outdir, config_path, **params):
    """Accumulate pass files into the ranking (first --passes accepted passes by index)."""
    from ..runner import step_accumulate

    explicit_passes = params.get("passes")
    cfg = build_config(config_path, params)
    summary = step_accumulate(dataset, _passes_from(passes_dir, pass_file), outdir, cfg,
                              n_wanted=explicit_passes if explicit_passes is not None else cfg.run.passes)
    click.echo(f"{len(summary['used_passes'])} passes accumulated; top features: "
               + ", ".join(summary["top_features"][:10]))


@click.command("evaluate")
@_dataset
@_passes_dir
@_pass_file
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="evaluation.json to write.")
@click.option("--passes", type=click.IntRange(min=1), default=None,
              help="Use the first N accepted passes (default: all accepted).")
def evaluate_cmd(dataset, passes_dir, pass_file, out, passes):
    """Arrangement-ensembled accuracy, confusion matrix and per-class metrics on the held-out cells."""
    from ..runner import step_evaluate

    result = step_evaluate(dataset, _passes_from(passes_dir, pass_file), out, n_wanted=passes)
    click.echo(f"ensembled held-out accuracy {result['accuracy']:.3f} over {result['n_passes']} passes")


@click.command("run")
@click.option("--input", "inputs", multiple=True, required=True,
              help="h5ad, 10x directory, CSV/TSV, or LABEL=PATH (repeatable) for labelled populations.")
@click.option("--label-key", default=None, help="obs column (or CSV column) with the class labels.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Separate labels file (cell id, label) for CSV/10x input.")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Results directory (created; earlier results are replaced only when the run succeeds).")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.html and MultiQC.")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also rank with logistic regression and Wilcoxon for comparison.")
@config_options
def run_cmd(inputs, label_key, labels, outdir, report, baselines, config_path, **params):
    """The whole analysis in one process: ingest, passes, accumulate, evaluate, baselines, report."""
    from ..runner import run

    cfg = build_config(config_path, params)
    summary = run(list(inputs), outdir, cfg, label_key=label_key, labels=labels, report=report,
                  baselines=baselines)
    click.echo(f"{summary['n_passes_accepted']}/{summary['n_passes_run']} passes accepted, mean held-out "
               f"accuracy {summary['mean_accuracy']:.3f}")
    click.echo("top features: " + ", ".join(summary["top_features"][:15]))
    click.echo(f"results in {outdir}" + (f"; report: {outdir / 'report.html'}" if report else ""))


@click.command("demo")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("deepmapper_demo"),
              show_default=True, help="Results directory.")
@click.option("--open/--no-open", "open_report", default=True, show_default=True,
              help="Open report.html in a browser when one is available.")
@config_options
def demo_cmd(outdir, open_report, config_path, **params):
    """Run the whole analysis on scanpy's bundled pbmc68k_reduced (700 PBMCs, 10 cell types, label
    'bulk_labels') and open the report."""
    from ..demo import run_demo

    cfg = build_config(config_path, params)
    summary, report = run_demo(outdir, cfg, open_report=open_report)
    click.echo(f"{summary['n_passes_accepted']}/{summary['n_passes_run']} passes accepted, mean held-out "
               f"accuracy {summary['mean_accuracy']:.3f}")
    for cls, top in summary["per_class_top"].items():
        click.echo(f"  {cls}: {', '.join(top[:8])}")
    click.echo(f"report: {report}")


COMMANDS = [train_pass, accumulate_cmd, evaluate_cmd, run_cmd, demo_cmd]
