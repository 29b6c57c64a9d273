"""``deepmapper aucell`` and ``deepmapper cluster``: derived features and derived labels.

Both read one h5ad and write one h5ad (atomically); the work is in
:mod:`deepmapper.features.aucell` and :mod:`deepmapper.features.cluster`.
"""
from __future__ import annotations

from pathlib import Path

import click

from deepmapper.cli._options import OUT_FILE
from deepmapper.config import DEVICE_CHOICES, MODALITIES, defaults_flat, param_help

# the options these tools share with the run configuration take its defaults and help
_D = defaults_flat()
_H = param_help()
_MATRIX_HELP = _H["matrix"]


def _read(path: Path):
    from deepmapper.io import read_h5ad_file

    return read_h5ad_file(path, field="--input")


def _write(adata, out: Path) -> None:
    from deepmapper._utils.atomic import atomic_path

    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp)


@click.command("aucell")
@click.option("--input", "input_path", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Expression h5ad (cells x genes).")
@click.option("--dataset", "dataset_path", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instead of --input: a dataset.h5ad (ingest, denovo table) whose features the scores replace "
                   "exactly as `deepmapper run --genesets` does (deepmapper.features.inputs.derive: labels and provenance "
                   "kept); --out is then a dataset for train-pass.")
@click.option("--genesets", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="GMT file: set name, description, genes (tab-separated), one set per line.")
@click.option("--out", required=True, type=OUT_FILE,
              help="Output h5ad: cells x gene sets, obs carried over.")
@click.option("--min-size", "--geneset-min-size", "min_size", default=_D["geneset_min_size"], show_default=True,
              type=click.IntRange(min=1),
              help="Sets with fewer genes present in the data are dropped (with a warning listing them).")
@click.option("--top-fraction", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Fraction of each cell's top-ranked genes over which the recovery curve is integrated.")
@click.option("--matrix", default=_D["matrix"], show_default=True, help=_MATRIX_HELP)
@click.option("--device", default=_D["device"], show_default=True, type=click.Choice(DEVICE_CHOICES),
              help=_H["device"])
@click.option("--label-key", default=None, help="With --rss-out: obs column of labels for regulon specificity.")
@click.option("--rss-out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write regulon specificity scores (labels x sets, TSV) for --label-key.")
def aucell_cmd(input_path, dataset_path, genesets, out, min_size, top_fraction, matrix, device, label_key, rss_out):
    """Score gene sets per cell with AUCell (deterministic ties, CPU or GPU)."""
    from deepmapper.features import aucell
    from deepmapper._utils.atomic import write_text
    from deepmapper.errors import ConfigError

    if (input_path is None) == (dataset_path is None):
        raise ConfigError("give either --input or --dataset", where="command line", field="--input/--dataset",
                          fix="--input for an expression h5ad, --dataset for a dataset.h5ad of ingest.")
    if dataset_path is not None:
        from deepmapper import io
        from deepmapper.features import inputs
        from deepmapper.config import Config

        cfg = Config().with_params({"genesets": str(genesets), "geneset_min_size": min_size, "device": device})
        result = inputs.derive(io.read_dataset(dataset_path), cfg)
        io.write_dataset(result, out)
        click.echo(f"{out}: {result.n_obs} cells x {result.n_vars} gene sets", err=True)
        return
    if (label_key is None) != (rss_out is None):
        raise ConfigError("--label-key and --rss-out go together", where="command line",
                          field="--rss-out", fix="give both to write regulon specificity scores, or neither.")
    adata = _read(input_path)
    scores = aucell.score_genesets(adata, genesets, min_size=min_size, top_fraction=top_fraction, matrix=matrix,
                                   device=device)
    if rss_out is not None:
        rss = aucell.regulon_specificity(scores, label_key)
        write_text(rss_out, rss.to_csv(sep="\t", float_format="%.6g"))
    _write(scores, out)
    click.echo(f"{out}: {scores.n_obs} cells x {scores.n_vars} gene sets", err=True)


@click.command("cluster")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="h5ad: expression (rna) or peak/tile counts (atac), cells x features.")
@click.option("--modality", default=_D["modality"], show_default=True, type=click.Choice(MODALITIES),
              help="rna: PCA; atac: binarise, TF-IDF, iterative LSI with the depth filter.")
@click.option("--out", required=True, type=OUT_FILE,
              help="Output h5ad: the input with obs[KEY] and the embedding in obsm (X_pca or X_lsi).")
@click.option("--resolution", "--cluster-resolution", "resolution", default=_D["cluster_resolution"],
              show_default=True, type=click.FloatRange(0, min_open=True),
              help="Leiden resolution (higher gives more clusters).")
@click.option("--seed", default=_D["seed"], show_default=True, type=int, help="Seed of the SVD and of Leiden.")
@click.option("--key", default="cluster", show_default=True, help="obs column that receives the clusters.")
@click.option("--n-components", default=None, type=click.IntRange(min=2),
              help="Embedding size [default: 50 for rna, 30 for atac].")
@click.option("--n-neighbors", default=None, type=click.IntRange(min=2),
              help="Neighbours of the kNN graph [default: 15 for rna, 50 for atac].")
@click.option("--matrix", default=_D["matrix"], show_default=True, help=_MATRIX_HELP)
@click.option("--min-size", default=0, show_default=True, type=click.IntRange(min=0),
              help="Drop the cells of clusters smaller than this (as 'deepmapper run --cluster' does with "
                   "--min-class-size); 0 keeps every cluster.")
def cluster_cmd(input_path, modality, out, resolution, seed, key, n_components, n_neighbors, matrix, min_size):
    """Derive labels by Leiden clustering (PCA for RNA, iterative LSI for ATAC)."""
    from deepmapper.features.cluster import cluster_labels

    adata = _read(input_path)
    result = cluster_labels(adata, modality=modality, resolution=resolution, seed=seed, key=key,
                            n_components=n_components, n_neighbors=n_neighbors, matrix=matrix,
                            where=str(input_path))
    if min_size:
        from deepmapper.features.cluster import drop_small_clusters

        result, _ = drop_small_clusters(result, key, min_size)
    _write(result, out)
    sizes = result.obs[key].value_counts().sort_index()
    click.echo(f"{out}: {len(sizes)} clusters in obs['{key}'] ({', '.join(f'{k}: {v}' for k, v in sizes.items())})",
               err=True)


COMMANDS = [aucell_cmd, cluster_cmd]
