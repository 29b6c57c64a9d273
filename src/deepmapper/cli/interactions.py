"""``deepmapper interactions``: the pair screen of a dataset (training cells only) -> interactions.tsv."""
from __future__ import annotations

from pathlib import Path

import click

from deepmapper.cli._options import OUT_DIR, build_config, config_options


@click.command("interactions")
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="dataset.h5ad written by 'deepmapper ingest'.")
@click.option("--outdir", type=OUT_DIR, required=True,
              help="Where interactions.tsv is written.")
@config_options("interactions")
def interactions_cmd(dataset, outdir, config_path, **params):
    """Screen gene pairs whose within-class correlation differs between classes (permutation-calibrated)
    on the run's non-held-out cells, and write interactions.tsv (best first)."""
    from deepmapper.pipeline.runner import step_interactions

    cfg = build_config(config_path, params)
    result = step_interactions(dataset, cfg, outdir)
    table = result.table
    passed = table[table["q_value"] < cfg.interactions.q_threshold]
    click.echo(f"{len(result.features)} features screened, {result.n_tests:,} tests, "
               f"{result.permutations} permutations; {len(passed)} pairs with q < {cfg.interactions.q_threshold}")
    for row in passed.head(10).itertuples(index=False):
        click.echo(f"  {row.feature_a} x {row.feature_b} ({row[2]}): score {row.score:.2f}, q {row.q_value:.3g}")


COMMANDS = [interactions_cmd]
