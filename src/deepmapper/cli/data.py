"""``deepmapper ingest`` and ``deepmapper baseline``: options in, one library call, files out."""
from __future__ import annotations

from pathlib import Path

import click

from deepmapper.cli._options import OUT_DIR, OUT_FILE, build_config, config_options


@click.command("ingest")
@click.option("--input", "inputs", multiple=True, required=True, metavar="PATH",
              help="h5ad, CSV/TSV, a 10x matrix directory, or LABEL=DIR (10x) / LABEL=quant.sf (Salmon) once "
                   "per population (repeat --input).")
@click.option("--label-key", default=None, metavar="KEY",
              help="Column of obs (h5ad) or of the table holding the labels; for LABEL=PATH inputs the name of "
                   "the label column [default: population].")
@click.option("--labels", "labels_file", default=None, type=click.Path(path_type=Path), metavar="FILE",
              help="Two columns with a header: cell (or sample) id, label.")
@click.option("--sample-name", "sample_names", multiple=True, metavar="NAME",
              help="The sample id of each population input, once per --input in the same order (a samplesheet's "
                   "sample column) [default: each directory's name].")
@click.option("--out", required=True, type=OUT_FILE,
              help="The dataset file to write (e.g. dataset.h5ad); written atomically.")
@config_options("ingest")
def ingest_cmd(inputs, label_key, labels_file, sample_names, out, config_path, **params):
    """Read and validate the input into one dataset.h5ad (labels, provenance, normalisation; with --cluster
    the Leiden clusters as labels, with --genesets AUCell scores as features), as `deepmapper run` does."""
    from deepmapper.features import inputs as inputs_mod
    from deepmapper import io

    cfg = build_config(config_path, params)
    adata = inputs_mod.load(list(inputs), cfg, label_key=label_key, labels=labels_file,
                            sample_names=list(sample_names) or None)
    io.write_dataset(adata, out)
    meta = adata.uns["deepmapper"]
    n_classes = adata.obs[meta["label_key"]].nunique()
    click.echo(f"{out}: {adata.n_obs} cells x {adata.n_vars} features, {n_classes} classes in "
               f"'{meta['label_key']}'; matrix {meta['matrix']}, "
               f"{'normalised here' if meta['normalized'] else 'used as given'}")


@click.command("baseline")
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="dataset.h5ad from ingest.")
@click.option("--outdir", required=True, type=OUT_DIR,
              help="Folder for logistic.tsv, wilcoxon.tsv, baselines.json (and interactions.tsv with --interactions-tsv).")
@click.option("--method", type=click.Choice(["logistic", "wilcoxon", "all"]), default="all", show_default=True,
              help="Which baseline(s) to run.")
@click.option("--interactions-tsv", "interactions_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="interactions.tsv of the run: also rank genes by the pair screen alone.")
@config_options("baseline")
def baseline_cmd(dataset, outdir, method, interactions_path, config_path, **params):
    """Logistic regression and Wilcoxon rankings on all features, on the run's held-out split."""
    from deepmapper.engine import baselines
    from deepmapper.pipeline.runner import step_baselines

    cfg = build_config(config_path, params)
    methods = baselines.METHODS if method == "all" else (method,)
    summary = step_baselines(dataset, outdir, cfg, methods=methods, interactions_path=interactions_path)
    if "logistic" in summary:
        lg = summary["logistic"]
        click.echo(f"logistic regression: held-out accuracy {lg['accuracy']:.4f} on {lg['n_test']} cells "
                   f"(majority rate {lg['majority_rate']:.4f})")
    click.echo(f"wrote {', '.join(f'{m}.tsv' for m in summary['methods'])} and baselines.json to {outdir}")


COMMANDS = [ingest_cmd, baseline_cmd]
