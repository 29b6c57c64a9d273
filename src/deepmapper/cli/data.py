"""``deepmapper ingest`` and ``deepmapper baseline``: options in, one library call, files out."""
from __future__ import annotations

from pathlib import Path

import click

from ..config import MATRIX_CHOICES_DOC, NORMALIZE_CHOICES, Config, defaults_flat, param_help

_D = defaults_flat()
_H = param_help()


def _cfg(params: dict) -> Config:
    """A validated Config with these flat params on top of the defaults (ConfigError names the option)."""
    return Config().with_params(params, where="command line")


@click.command("ingest")
@click.option("--input", "inputs", multiple=True, required=True, metavar="PATH",
              help="h5ad, CSV/TSV, a 10x matrix directory, or LABEL=DIR (10x) / LABEL=quant.sf (Salmon) once "
                   "per population (repeat --input).")
@click.option("--label-key", default=None, metavar="KEY",
              help="Column of obs (h5ad) or of the table holding the labels; for LABEL=PATH inputs the name of "
                   "the label column [default: population].")
@click.option("--labels", "labels_file", default=None, type=click.Path(path_type=Path), metavar="FILE",
              help="Two columns with a header: cell (or sample) id, label.")
@click.option("--matrix", default=_D["matrix"], show_default=True, help=f"h5ad matrix: {MATRIX_CHOICES_DOC}.")
@click.option("--normalize", type=click.Choice(NORMALIZE_CHOICES), default=_D["normalize"], show_default=True,
              help=_H["normalize"])
@click.option("--min-class-size", type=int, default=_D["min_class_size"], show_default=True,
              help=_H["min_class_size"])
@click.option("--modality", type=click.Choice(["rna", "atac"]), default=_D["modality"], show_default=True,
              help=_H["modality"])
@click.option("--genesets", type=click.Path(exists=True, dir_okay=False), default=None, metavar="GMT",
              help=_H["genesets"])
@click.option("--geneset-min-size", type=int, default=_D["geneset_min_size"], show_default=True,
              help=_H["geneset_min_size"])
@click.option("--cluster/--no-cluster", default=False, show_default=True, help=_H["cluster"])
@click.option("--cluster-resolution", type=float, default=_D["cluster_resolution"], show_default=True,
              help=_H["cluster_resolution"])
@click.option("--seed", type=int, default=_D["seed"], show_default=True, help="Seed for --cluster.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The dataset file to write (e.g. dataset.h5ad); written atomically.")
def ingest_cmd(inputs, label_key, labels_file, matrix, normalize, min_class_size, modality, genesets,
               geneset_min_size, cluster, cluster_resolution, seed, out):
    """Read and validate the input into one dataset.h5ad (labels, provenance, normalisation)."""
    from .. import inputs as inputs_mod
    from .. import io

    cfg = _cfg({"matrix": matrix, "normalize": normalize, "min_class_size": min_class_size, "modality": modality,
                "genesets": genesets, "geneset_min_size": geneset_min_size, "cluster": cluster,
                "cluster_resolution": cluster_resolution, "seed": seed})
    adata = inputs_mod.load(list(inputs), cfg, label_key=label_key, labels=labels_file)
    io.write_dataset(adata, out)
    meta = adata.uns["deepmapper"]
    n_classes = adata.obs[meta["label_key"]].nunique()
    click.echo(f"{out}: {adata.n_obs} cells x {adata.n_vars} features, {n_classes} classes in "
               f"'{meta['label_key']}'; matrix {meta['matrix']}, "
               f"{'normalised here' if meta['normalized'] else 'used as given'}")


@click.command("baseline")
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="dataset.h5ad from ingest.")
@click.option("--outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for logistic.tsv, wilcoxon.tsv and baselines.json.")
@click.option("--method", type=click.Choice(["logistic", "wilcoxon", "all"]), default="all", show_default=True,
              help="Which baseline(s) to run.")
@click.option("--seed", type=int, default=_D["seed"], show_default=True, help=_H["seed"])
@click.option("--test-fraction", type=float, default=_D["test_fraction"], show_default=True,
              help=_H["test_fraction"])
@click.option("--val-fraction", type=float, default=_D["val_fraction"], show_default=True, help=_H["val_fraction"])
@click.option("--min-class-size", type=int, default=_D["min_class_size"], show_default=True,
              help=_H["min_class_size"])
@click.option("--interactions-tsv", "interactions_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="interactions.tsv of the run: also rank genes by the pair screen alone.")
@click.option("--interaction-q", type=float, default=_D["interaction_q"], show_default=True,
              help=_H["interaction_q"])
def baseline_cmd(dataset, outdir, method, seed, test_fraction, val_fraction, min_class_size, interactions_path,
                 interaction_q):
    """Logistic regression and Wilcoxon rankings on all features, on the run's held-out split."""
    from .. import baselines, io
    from ..split import stratified_split

    cfg = _cfg({"seed": seed, "test_fraction": test_fraction, "val_fraction": val_fraction,
                "min_class_size": min_class_size})
    adata = io.read_dataset(dataset)
    codes, classes = io.labels(adata)
    split = stratified_split(codes, test_fraction=cfg.run.test_fraction, val_fraction=cfg.run.val_fraction,
                             seed=cfg.run.seed, classes=classes, min_class_size=cfg.input.min_class_size,
                             where=str(dataset))
    methods = baselines.METHODS if method == "all" else (method,)
    from ..interactions import read_table

    screen = read_table(interactions_path) if interactions_path else None
    summary = baselines.run_baselines(adata, outdir, split=split, seed=cfg.run.seed, methods=methods,
                                      screen=screen, q_threshold=interaction_q)
    if "logistic" in summary:
        lg = summary["logistic"]
        click.echo(f"logistic regression: held-out accuracy {lg['accuracy']:.4f} on {lg['n_test']} cells "
                   f"(majority rate {lg['majority_rate']:.4f})")
    click.echo(f"wrote {', '.join(f'{m}.tsv' for m in methods)} and baselines.json to {outdir}")


COMMANDS = [ingest_cmd, baseline_cmd]
