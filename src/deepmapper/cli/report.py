"""``deepmapper report``: the standalone report.html and the MultiQC report of a results directory."""
from __future__ import annotations

from pathlib import Path

import click

from deepmapper.cli._options import OUT_DIR


@click.command("report")
@click.option("--results", "results_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Results directory: findings.tsv/.json, passes/, baselines/, evaluation.json, dataset.h5ad.")
@click.option("--outdir", required=True, type=OUT_DIR,
              help="Where report.html, mqc/ and multiqc/ are written (may equal --results).")
@click.option("--multiqc/--no-multiqc", default=True, show_default=True,
              help="Also run MultiQC on the custom content (writes multiqc/multiqc_report.html).")
@click.option("--multiqc-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="MultiQC config YAML. [default: assets/multiqc_config.yml shipped with DeepMapper]")
def report_cmd(results_dir: Path, outdir: Path, multiqc: bool, multiqc_config: Path | None):
    """Write report.html (one self-contained file), MultiQC custom content and the MultiQC report."""
    from deepmapper.results.report import write_report

    files = write_report(results_dir, outdir, multiqc=multiqc, multiqc_config=multiqc_config)
    click.echo(f"report: {files['html']}")
    if files["multiqc"]:
        click.echo(f"multiqc: {files['multiqc']}")


COMMANDS = [report_cmd]
