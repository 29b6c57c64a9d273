"""The README demo: the whole analysis on scanpy's bundled pbmc68k_reduced."""
from __future__ import annotations

import logging
import os
import sys
import webbrowser
from pathlib import Path

from deepmapper._utils.atomic import atomic_path
from deepmapper.config import Config
from deepmapper.results import layout

log = logging.getLogger(__name__)

LABEL_KEY = "bulk_labels"


def demo_input(outdir: Path) -> Path:
    """Write pbmc68k_reduced (shipped inside scanpy, no download) as an h5ad input file."""
    import scanpy as sc

    path = Path(outdir) / "input" / "pbmc68k_reduced.h5ad"
    if not path.exists():
        adata = sc.datasets.pbmc68k_reduced()
        with atomic_path(path) as tmp:
            adata.write_h5ad(tmp)
    return path


def run_demo(outdir: Path, cfg: Config, *, open_report: bool = True, report: bool = True):
    """Run the demo into ``outdir``; returns (summary, report.html path, MultiQC report path or None).

    The MultiQC report is made when MultiQC is installed (the ``report`` extra);
    without it the run still writes ``report.html`` and says so in one line.
    """
    from deepmapper.results.report import multiqc_available
    from deepmapper.pipeline.runner import run

    outdir = Path(outdir)
    summary = run([str(demo_input(outdir))], outdir, cfg, label_key=LABEL_KEY, report=report)
    report_path = (outdir / layout.REPORT).absolute()  # the published link, not the run directory behind it
    multiqc_path = (outdir / layout.MULTIQC / layout.MULTIQC_REPORT).absolute() \
        if report and multiqc_available() else None
    if open_report and report and _has_browser():
        webbrowser.open(report_path.as_uri())
    return summary, report_path, multiqc_path


def _has_browser() -> bool:
    # No display on a headless server or CI: print the path instead of trying to open it.
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
