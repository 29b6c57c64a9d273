"""Report: MultiQC custom content and the standalone interactive ``report.html``.

``write_report(results_dir, outdir)`` reads a results directory (findings,
passes, baselines, evaluation, dataset; see docs/developers.md) and writes

- ``outdir/report.html``: one self-contained file (plotly.js and data inline);
- ``outdir/mqc/deepmapper_*_mqc.*``: MultiQC custom content;
- ``outdir/multiqc/multiqc_report.html`` (+ ``multiqc_data/``) by running MultiQC
  on that content with ``assets/multiqc_config.yml`` (unless ``multiqc=False``).
"""
from __future__ import annotations

import logging
from deepmapper.results import layout
from pathlib import Path

__all__ = ["write_report", "ReportFiles", "multiqc_available"]


class ReportFiles(dict):
    """Paths written by :func:`write_report`: keys ``html``, ``mqc`` (list), ``multiqc`` (or None), and
    ``multiqc_skipped`` (why the MultiQC report was not made, or None)."""


def write_report(results_dir, outdir, *, multiqc: bool = True, multiqc_config=None) -> ReportFiles:
    from deepmapper._utils.atomic import write_text
    from deepmapper.results.report.html import build_html
    from deepmapper.results.report.mqc import run_multiqc, write_custom_content
    from deepmapper.results.report.results import load_results

    results = load_results(results_dir)
    outdir = Path(outdir)
    mqc_files = write_custom_content(results, outdir / layout.MQC)
    html_path = write_text(outdir / layout.REPORT, build_html(results))
    multiqc_report = None
    skipped = None if multiqc else "not asked for"
    if multiqc and not multiqc_available():
        # report.html is complete without it: say so in one line instead of failing the run.
        skipped = "MultiQC is not installed"
        logging.getLogger(__name__).warning(
            "MultiQC is not installed: report.html is written, the MultiQC report is skipped "
            "(pip install 'deepmapper[report]' adds it)")
    elif multiqc:
        multiqc_report = run_multiqc(outdir / "mqc", outdir / "multiqc", config=multiqc_config)
    return ReportFiles(html=html_path, mqc=mqc_files, multiqc=multiqc_report, multiqc_skipped=skipped)


def multiqc_available() -> bool:
    """True when MultiQC can be run by this Python (``python -m multiqc``)."""
    import importlib.util

    return importlib.util.find_spec("multiqc") is not None
