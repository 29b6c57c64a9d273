"""The report: MultiQC custom content checked through real MultiQC, and report.html in real Chromium.

One small real run of the engine on pbmc68k_reduced (3 passes, 4 epochs,
saliency) feeds every test; nothing below is hard-coded from that run: the
expected values are recomputed from the run's own files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmapper import __version__
from deepmapper.errors import FormatError, InputError
from deepmapper.engine.passfile import read_pass
from deepmapper.results.report import write_report
from deepmapper.results.report import mqc as mqc_mod
from conftest import skip_unless  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("DEEPMAPPER_TEST_ARTIFACTS", REPO / "test-artifacts"))
PLOT_IDS = ["plot-top-features", "plot-stability", "plot-per-class", "plot-confusion", "plot-passes",
            "plot-loss", "plot-attribution-map", "plot-baselines"]


def _deepmapper(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", "from deepmapper.cli import main; main()", *args],
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"deepmapper {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def pbmc_h5ad(tmp_path_factory) -> Path:
    import scanpy as sc

    path = tmp_path_factory.mktemp("input") / "pbmc68k_reduced.h5ad"
    sc.datasets.pbmc68k_reduced().write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory, pbmc_h5ad) -> Path:
    """A real, small run of the engine (no report): the honest input of every report test."""
    out = tmp_path_factory.mktemp("run") / "results"
    _deepmapper("-q", "run", "--input", str(pbmc_h5ad), "--label-key", "bulk_labels", "--outdir", str(out),
                "--passes", "3", "--epochs", "4", "--min-epochs", "1", "--patience", "2",
                "--attribution", "saliency", "--backbone-width", "8", "--top-k", "20", "--threads", "1",
                "--no-report")
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, results) -> Path:
    out = tmp_path_factory.mktemp("report")
    proc = _deepmapper("report", "--results", str(results), "--outdir", str(out))
    assert str(out / "report.html") in proc.stdout
    return out


def _mqc_table(report_dir: Path, name: str) -> pd.DataFrame:
    path = report_dir / "multiqc" / "multiqc_data" / f"{name}.txt"
    assert path.is_file(), f"MultiQC wrote no {path.name}: section missing"
    return pd.read_csv(path, sep="\t", index_col=0)


def _mqc_lines(report_dir: Path, name: str) -> dict[str, dict[float, float]]:
    """A MultiQC line-plot data file: one row per series, each cell an '[x, y]' pair."""
    path = report_dir / "multiqc" / "multiqc_data" / f"{name}.txt"
    assert path.is_file(), f"MultiQC wrote no {path.name}: section missing"
    series = {}
    for line in path.read_text().strip().splitlines():
        sample, *cells = line.split("\t")
        series[sample] = {float(x): float(y) for x, y in map(json.loads, cells)}
    return series


# -- MultiQC -------------------------------------------------------------------------

def test_multiqc_sections_hold_the_run_values(results, report_dir, pbmc_h5ad):
    summary = json.loads((results / "findings.json").read_text())
    findings = pd.read_csv(results / "findings.tsv", sep="\t")
    passes = [read_pass(p) for p in sorted((results / "passes").glob("pass_*.npz"))]
    accepted = [p for p in passes if p.accepted]
    assert len(passes) == 3

    gs = _mqc_table(report_dir, "multiqc_general_stats")
    row = gs.loc["pbmc68k_reduced"]
    col = {c.split("-", 1)[1]: c for c in gs.columns}
    assert row[col["cells"]] == 700 and row[col["features"]] == 765 and row[col["classes"]] == 10
    assert row[col["passes_run"]] == len(passes)
    assert row[col["passes_accepted"]] == len(accepted)
    assert row[col["mean_accuracy"]] == pytest.approx(100 * np.mean([p.accuracy for p in accepted]), abs=0.01)

    acc = _mqc_table(report_dir, "multiqc_deepmapper_pass_accuracy")
    for p in passes:
        shown = acc.loc[f"pass_{p.pass_index:03d}", "accepted" if p.accepted else "rejected"]
        assert shown == pytest.approx(100 * p.accuracy, abs=1e-3)

    table = _mqc_table(report_dir, "multiqc_deepmapper_passes")
    for p in passes:
        r = table.loc[f"pass_{p.pass_index:03d}"]
        assert (r["stop_epoch"], r["best_epoch"]) == (p.stop_epoch, p.best_epoch)
        assert r["accuracy"] == pytest.approx(p.accuracy, abs=1e-5)

    # Loss curves: dataset 0 is validation loss, dataset 1 training loss, one row per pass.
    val, train = _mqc_lines(report_dir, "multiqc_deepmapper_loss"), _mqc_lines(report_dir, "multiqc_deepmapper_loss_1")
    for p in passes:
        name = f"pass_{p.pass_index:03d}"
        assert list(val[name]) == list(train[name]) == [float(e) for e in range(1, p.stop_epoch + 1)]
        np.testing.assert_allclose(list(val[name].values()), p.val_loss, rtol=1e-6)
        np.testing.assert_allclose(list(train[name].values()), p.train_loss, rtol=1e-6)

    sel = _mqc_table(report_dir, "multiqc_deepmapper_selection_frequency")
    top = findings.head(mqc_mod.N_TOP_FEATURES)
    assert set(sel.index) == set(top["feature"])
    for f, s in zip(top["feature"], top["selection_frequency"]):
        assert sel.loc[f, "selection_frequency"] == pytest.approx(s, abs=1e-5)

    # Agreement recomputed here from the baseline files.
    agree = _mqc_lines(report_dir, "multiqc_deepmapper_baseline_agreement")
    ours = list(findings["feature"])
    for method, label in (("logistic", "Logistic regression"), ("wilcoxon", "Wilcoxon")):
        theirs = list(pd.read_csv(results / "baselines" / f"{method}.tsv", sep="\t")["feature"])
        for k in (10, 50, 200):
            expected = len(set(ours[:k]) & set(theirs[:k])) / k
            assert agree[label][k] == pytest.approx(expected)
    assert agree["Chance"][50] == pytest.approx(50 / 765)
    assert list(agree["Chance"]) == sorted(agree["Chance"])  # numeric x, in order

    params = _mqc_table(report_dir, "multiqc_deepmapper_parameters")["value"].astype(str)
    assert params["epochs"] == "4" and params["attribution"] == "saliency" and params["top_k"] == "20"
    assert params["input_sha256"] == hashlib.sha256(pbmc_h5ad.read_bytes()).hexdigest()
    assert params["label_key"] == "bulk_labels"

    versions = _mqc_table(report_dir, "multiqc_software_versions")
    assert str(versions.loc["DeepMapper", "deepmapper"]) == __version__
    assert str(versions.loc["DeepMapper", "torch"]) == summary["versions"]["torch"]

    page = (report_dir / "multiqc" / "multiqc_report.html").read_text()
    for anchor in ("deepmapper_pass_accuracy", "deepmapper_loss", "deepmapper_selection_frequency",
                   "deepmapper_baseline_agreement", "deepmapper_parameters", "deepmapper_passes"):
        assert anchor in page


def test_multiqc_config_ships_with_the_package():
    packaged = Path(mqc_mod.__file__).with_name("multiqc_config.yml")
    assert packaged.read_bytes() == (REPO / "assets" / "multiqc_config.yml").read_bytes()
    assert mqc_mod.default_config_path().is_file()


# -- report.html in Chromium ---------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    from browser import Browser, chromium_path

    skip_unless(chromium_path() is not None, "chromium not installed (Debian package 'chromium')")
    with Browser() as b:
        yield b


@pytest.mark.browser
def test_report_html_renders_offline_in_chromium(report_dir, results, browser):
    findings = pd.read_csv(results / "findings.tsv", sep="\t")
    html_text = (report_dir / "report.html").read_text()
    # Self-contained: nothing is loaded from elsewhere.
    assert "<script src=" not in html_text and "<link " not in html_text

    browser.open(report_dir / "report.html")
    plots = browser.evaluate("""Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
        id: d.id, laidOut: !!d._fullLayout, svg: d.querySelectorAll('svg.main-svg').length,
        traces: (d.data || []).length, drawn: d.querySelectorAll('.trace, .hm, image, .bars, .point').length}))""")
    assert [p["id"] for p in plots] == PLOT_IDS
    for p in plots:
        assert p["laidOut"] and p["svg"] >= 1 and p["traces"] >= 1 and p["drawn"] >= 1, p

    # The page as a reader first sees it (before the interactions below change the table).
    shot = browser.screenshot(ARTIFACTS / "report.png")
    assert shot.stat().st_size > 50_000

    n_rows = browser.evaluate("document.querySelectorAll('#feature-table tbody tr').length")
    assert n_rows == len(findings) == 765
    first = browser.evaluate("Array.from(document.querySelectorAll('#feature-table tbody tr')).slice(0, 5)"
                             ".map(tr => tr.children[1].textContent)")
    assert first == list(findings["feature"].head(5))

    # Search filters rows by feature name.
    query = "cd7"
    expected = sorted(f for f in findings["feature"] if query in f.lower())
    visible = browser.evaluate(f"""(() => {{
        const s = document.getElementById('feature-search'); s.value = '{query}';
        s.dispatchEvent(new Event('input'));
        return Array.from(document.querySelectorAll('#feature-table tbody tr'))
            .filter(tr => tr.style.display !== 'none').map(tr => tr.children[1].textContent); }})()""")
    assert sorted(visible) == expected and 0 < len(expected) < len(findings)
    assert browser.evaluate("document.getElementById('feature-count').textContent") == \
        f"{len(expected)} of {len(findings)} features"

    # Download: the TSV holds exactly the rows shown, with the findings' values.
    tsv = browser.evaluate("""(async () => {
        const blobs = []; const orig = URL.createObjectURL;
        URL.createObjectURL = b => { blobs.push(b); return orig.call(URL, b); };
        document.getElementById('feature-download').click();
        URL.createObjectURL = orig;
        return await blobs[0].text(); })()""")
    lines = tsv.strip().split("\n")
    assert lines[0].split("\t")[:6] == ["rank", "feature", "selection_frequency", "median_importance",
                                        "mean_rank", "pfer_bound"]
    got = pd.DataFrame([l.split("\t") for l in lines[1:]], columns=lines[0].split("\t"))
    assert sorted(got["feature"]) == expected
    merged = got.merge(findings, on="feature", suffixes=("", "_f"))
    np.testing.assert_allclose(merged["median_importance"].astype(float), merged["median_importance_f"])

    # Sorting by a column header reorders the rows.
    browser.evaluate("document.getElementById('feature-search').value = '';"
                     "document.getElementById('feature-search').dispatchEvent(new Event('input'));"
                     "document.querySelector('#feature-table th:nth-child(2)').click()")
    names = browser.evaluate("Array.from(document.querySelectorAll('#feature-table tbody tr'))"
                             ".map(tr => tr.children[1].textContent)")
    assert names == sorted(findings["feature"], key=lambda s: s) and len(names) == 765

    assert browser.console_errors() == []
    assert browser.remote_requests() == []


@pytest.mark.browser
def test_denovo_features_are_flagged(results, tmp_path, browser):
    """A findings table that flags features as de novo shows the flag in the table and its download."""
    variant = tmp_path / "results"
    shutil.copytree(results, variant)
    findings = pd.read_csv(variant / "findings.tsv", sep="\t")
    flagged = list(findings["feature"].iloc[[1, 7, 40]])
    findings["is_denovo"] = findings["feature"].isin(flagged)
    findings.to_csv(variant / "findings.tsv", sep="\t", index=False)
    write_report(variant, tmp_path / "out", multiqc=False)

    browser.open(tmp_path / "out" / "report.html")
    badged = browser.evaluate("Array.from(document.querySelectorAll('#feature-table tbody tr'))"
                              ".filter(tr => tr.querySelector('.denovo')).map(tr => tr.children[1].firstChild.textContent)")
    assert sorted(badged) == sorted(flagged)
    assert "3 de-novo features" in browser.evaluate("document.getElementById('features').textContent")
    assert browser.console_errors() == []


# -- optional pieces and bad input ---------------------------------------------------------

def test_report_without_optional_pieces_says_what_is_missing(results, tmp_path):
    bare = tmp_path / "results"
    bare.mkdir()
    for name in ("findings.tsv", "findings.json"):
        shutil.copy(results / name, bare / name)
    files = write_report(bare, tmp_path / "out", multiqc=False)
    page = files["html"].read_text()
    for missing in ("evaluation.json is absent", "findings_per_class.tsv is absent", "no loss curves",
                    "baselines/logistic.tsv is absent", "dataset.h5ad is absent"):
        assert missing in page
    # What the two required files support is still drawn.
    for plot in ("plot-top-features", "plot-stability", "plot-passes"):
        assert f'id="{plot}"' in page
    for plot in ("plot-loss", "plot-confusion", "plot-baselines", "plot-attribution-map"):
        assert f'id="{plot}"' not in page
    written = {p.name for p in files["mqc"]}
    assert "deepmapper_loss_mqc.json" not in written and "deepmapper_baseline_agreement_mqc.json" not in written
    assert "deepmapper_general_stats_mqc.tsv" in written


def test_missing_findings_is_one_clear_line(tmp_path):
    proc = _deepmapper("report", "--results", str(tmp_path), "--outdir", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "findings.tsv" in err[0] and "Fix:" in err[0] and "Traceback" not in proc.stderr


def test_bad_findings_column_and_mismatched_dataset(results, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(results, broken)
    findings = pd.read_csv(broken / "findings.tsv", sep="\t")
    findings.drop(columns="selection_frequency").to_csv(broken / "findings.tsv", sep="\t", index=False)
    with pytest.raises(FormatError, match="selection_frequency"):
        write_report(broken, tmp_path / "o1", multiqc=False)

    findings.head(100).to_csv(broken / "findings.tsv", sep="\t", index=False)
    with pytest.raises(FormatError, match="same run"):
        write_report(broken, tmp_path / "o2", multiqc=False)
    with pytest.raises(InputError, match="not found"):
        write_report(tmp_path / "nowhere", tmp_path / "o3", multiqc=False)
