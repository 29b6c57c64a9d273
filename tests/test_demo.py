"""The README demo (`deepmapper demo`) and the report without MultiQC.

A fresh environment may lack MultiQC (the `report` extra): the run must still
write report.html and say in one line that the MultiQC report was skipped.
"""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from deepmapper.results import report as report_mod
from deepmapper.cli import cli

FAST = ["--passes", "1", "--epochs", "2", "--min-epochs", "1", "--patience", "1", "--ig-steps", "4",
        "--attribution-max-samples", "32", "--threads", "1"]


@pytest.fixture
def no_multiqc(monkeypatch):
    """MultiQC as if not installed (find_spec would say None)."""
    monkeypatch.setattr(report_mod, "multiqc_available", lambda: False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`deepmapper demo` (short) in an environment without MultiQC."""
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_mod, "multiqc_available", lambda: False)
        res = CliRunner().invoke(cli, ["demo", "--outdir", str(out), "--no-open", *FAST], catch_exceptions=False)
    return out, res


def test_demo_without_multiqc_writes_report_html_and_says_so_once(demo_run):
    demo_dir, res = demo_run
    assert res.exit_code == 0, res.output
    assert (demo_dir / "report.html").stat().st_size > 10_000
    assert (demo_dir / "findings.tsv").is_file() and (demo_dir / "baselines" / "logistic.tsv").is_file()
    assert not (demo_dir / "multiqc").exists()
    lines = res.output.splitlines()
    # ours only: another library's leftover warning in the same test process (a Jupyter kernel's
    # shutdown after tests/test_tutorial.py) is not the demo's
    warned = [line for line in lines if " WARNING deepmapper" in line]
    assert len(warned) == 1 and "MultiQC is not installed: report.html is written" in warned[0]
    assert f"report: {(demo_dir / 'report.html').absolute()}" in lines
    assert any(line.startswith("MultiQC report: skipped") for line in lines)
    # the per-class tops are printed for every cell type of pbmc68k_reduced
    assert sum(line.startswith("  ") and ":" in line for line in lines) == 10


def test_write_report_result_says_multiqc_was_skipped(no_multiqc, demo_run, tmp_path):
    demo_dir, _ = demo_run
    files = report_mod.write_report(demo_dir, tmp_path)
    assert files["html"].is_file() and files["multiqc"] is None
    assert files["multiqc_skipped"] == "MultiQC is not installed"
    assert report_mod.write_report(demo_dir, tmp_path, multiqc=False)["multiqc_skipped"] == "not asked for"


def test_write_report_runs_multiqc_when_installed(demo_run, tmp_path):
    from conftest import skip_unless

    demo_dir, _ = demo_run
    skip_unless(report_mod.multiqc_available(), "MultiQC is not installed")
    files = report_mod.write_report(demo_dir, tmp_path)
    assert files["multiqc_skipped"] is None and files["multiqc"].is_file()
