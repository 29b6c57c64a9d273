"""The report: MultiQC custom content checked through real MultiQC, and report.html in real Chromium.

One small real run of the engine on pbmc68k_reduced (3 passes, 4 epochs,
saliency) feeds every test; nothing below is hard-coded from that run: the
expected values are recomputed from the run's own files.
"""
from __future__ import annotations

import ast
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
PLOT_IDS = ["plot-per-class", "plot-top-features", "plot-stability", "plot-confusion", "plot-passes",
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
        # numeric x as JSON ([1, 0.5]); categories as Python's repr (['5', 0.2])
        series[sample] = {float(x): float(y) for x, y in map(ast.literal_eval, cells)}
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


# -- issue 21: what a reader sees first, and the defects found in Chromium --------------------------------

def _variant(results: Path, tmp_path: Path, name: str = "results") -> Path:
    out = tmp_path / name
    shutil.copytree(results, out)
    return out


def _with_direction(root: Path) -> pd.DataFrame:
    """findings_per_class.tsv as the ranking writes it: every feature per class in scanpy's order, with a
    direction (up first; the strongest down-markers last, most negative score)."""
    pc = pd.read_csv(root / "findings_per_class.tsv", sep="\t", dtype={"class": str, "feature": str})
    assert {"direction", "score"} <= set(pc.columns)
    return pc


def test_the_per_group_view_comes_first_with_direction(results, tmp_path):
    root = _variant(results, tmp_path)
    pc = _with_direction(root)
    page = write_report(root, tmp_path / "out", multiqc=False)["html"].read_text()
    sections = [m for m in ("id=\"summary\"", "id=\"per-class\"", "id=\"features\"", "id=\"stability\"")]
    assert [page.index(m) for m in sections] == sorted(page.index(m) for m in sections)
    assert "What marks each group" in page and "Ranking across all groups" in page
    block = page[page.index('id="per-class"'):page.index('id="features"')]
    for c in pc["class"].unique():
        rows = pc[pc["class"] == c]
        up, down = rows[rows["direction"] == "up"]["feature"], rows[rows["direction"] == "down"]["feature"]
        if len(up):
            assert f'<span class="chip up" title="higher in this group than in the rest">{up.iloc[0]}&#9650;' in block
        if len(down):   # the strongest down-marker: the last of the class's rows (most negative score)
            assert f'<span class="chip down" title="lower in this group than in the rest">{down.iloc[-1]}&#9660;' in block
    # read defensively: without the column the view says it has no direction, and still comes first
    root2 = _variant(results, tmp_path, "plain")
    older = pd.read_csv(root2 / "findings_per_class.tsv", sep="\t", dtype={"class": str, "feature": str})
    older.drop(columns=["score", "direction", "logfoldchange"]).to_csv(root2 / "findings_per_class.tsv", sep="\t",
                                                                       index=False)   # a run before directions
    page2 = write_report(root2, tmp_path / "out2", multiqc=False)["html"].read_text()
    assert "records no direction" in page2 and page2.index('id="per-class"') < page2.index('id="features"')


@pytest.mark.parametrize("trust, banner", [
    ({"trustworthy": False, "reasons": ["held-out accuracy 0.36 is 0.53 below logistic regression (0.89)",
                                        "every pass stopped at the epoch limit (60)"],
      "baseline_accuracy": 0.893, "margin": 0.05}, True),
    ({"trustworthy": True, "reasons": [], "baseline_accuracy": 0.85, "margin": 0.05}, False),
    (None, False),
])
def test_an_untrustworthy_model_gets_a_banner_at_the_top(results, tmp_path, trust, banner):
    root = _variant(results, tmp_path)
    summary = json.loads((root / "findings.json").read_text())
    summary.pop("trust", None)
    if trust is not None:
        summary["trust"] = trust
    (root / "findings.json").write_text(json.dumps(summary))
    page = write_report(root, tmp_path / "out", multiqc=False)["html"].read_text()
    assert ('id="trust-banner"' in page) == banner
    if banner:
        assert page.index('id="trust-banner"') < page.index('<section id="summary"')
        for reason in trust["reasons"]:
            assert reason in page
        assert "89.3%" in page


def test_run_table_and_parameters_say_each_thing_once(results, tmp_path):
    root = _variant(results, tmp_path)
    info = json.loads((root / "run_info.json").read_text())
    info["state"] = "running"              # what the report step reads: it runs inside the run
    (root / "run_info.json").write_text(json.dumps(info))
    page = write_report(root, tmp_path / "out", multiqc=False)["html"].read_text()
    run = page[page.index("<h3>Run</h3>"):]
    assert "running" not in run and "resume_key" not in run and info["run_id"] in run
    from deepmapper.results.report.results import load_results

    names = [k for k, _ in mqc_mod.parameter_rows(load_results(root))]
    assert len(names) == len(set(names)) and "modality" in names


def test_a_run_without_the_pair_screen_gets_its_report(results, tmp_path):
    """What --no-interactions leaves: findings_pairs.tsv with a header only, no interactions.tsv."""
    root = _variant(results, tmp_path)
    (root / "interactions.tsv").unlink(missing_ok=True)
    header = (root / "findings_pairs.tsv").read_text().splitlines()[0]
    (root / "findings_pairs.tsv").write_text(header + "\n")
    files = write_report(root, tmp_path / "out", multiqc=False)
    page = files["html"].read_text()
    assert "This run screened no gene pairs" in page and 'id="plot-pair-0"' not in page
    assert "deepmapper_pairs_mqc.tsv" not in {p.name for p in files["mqc"]}


def test_multiqc_line_plots_have_a_legend_and_k_as_categories(report_dir):
    for name in ("deepmapper_loss_mqc.json", "deepmapper_baseline_agreement_mqc.json"):
        content = json.loads((report_dir / "mqc" / name).read_text())
        assert content["pconfig"]["showlegend"] is True, name
    agree = json.loads((report_dir / "mqc" / "deepmapper_baseline_agreement_mqc.json").read_text())
    assert agree["pconfig"].get("xlog") is None and agree["pconfig"]["categories"] is True
    xs = [x for x, _ in agree["data"]["Chance"]]
    assert xs == [str(k) for k in mqc_mod.AGREEMENT_KS]
    page = (report_dir / "multiqc" / "multiqc_report.html").read_text()
    assert "deepmapper_baseline_agreement" in page and "deepmapper_loss" in page


@pytest.fixture(scope="module")
def pairs_report(results, tmp_path_factory) -> Path:
    """The report with gene-pair panels: the screen's table of the run, drawn at q <= 1 (every screened
    pair), so the panels exist whatever this small run's screen found below 0.05."""
    root = _variant(results, tmp_path_factory.mktemp("pairs"))
    summary = json.loads((root / "findings.json").read_text())
    summary["config"]["interactions"]["q_threshold"] = 1.0
    (root / "findings.json").write_text(json.dumps(summary))
    _with_direction(root)
    out = root.parent / "out"
    write_report(root, out, multiqc=False)
    return out


@pytest.mark.browser
def test_report_layout_in_chromium(pairs_report, browser):
    """Stability names do not overlap; each pair panel has a two-entry legend and the scatter keeps
    most of the panel's width (a 10-class legend left it a third)."""
    browser.open(pairs_report / "report.html", width=1400, height=3000)
    boxes = browser.evaluate("""Array.from(document.querySelectorAll('#plot-stability .annotation'))
        .filter(a => !a.textContent.includes('% of passes'))
        .map(a => { const r = a.querySelector('.annotation-text-g').getBoundingClientRect();
                    return [r.left, r.top, r.right, r.bottom, a.textContent]; })""")
    assert len(boxes) >= 5
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert apart, f"stability labels overlap: {a[4]} and {b[4]}"
    panels = browser.evaluate("""Array.from(document.querySelectorAll('[id^=plot-pair-]')).map(d => ({
        legend: d.querySelectorAll('.legend .traces').length,
        plot: d.querySelector('.nsewdrag').getBoundingClientRect().width,
        whole: d.getBoundingClientRect().width}))""")
    assert panels, "no pair panels drawn"
    for p in panels:
        assert p["legend"] == 2 and p["plot"] >= 0.7 * p["whole"], p
    shot = browser.screenshot(ARTIFACTS / "report-pairs.png")
    assert shot.stat().st_size > 50_000
    assert browser.console_errors() == []


def test_the_report_and_read_results_refuse_a_foreign_dataset_alike(tmp_path):
    """One set of readers (results/load.py) and io's schema check for both: a dataset.h5ad that is not
    DeepMapper's is one FormatError from the report as from read_results."""
    import anndata as ad

    import deepmapper as dm
    from deepmapper.errors import FormatError
    from deepmapper.results.report.results import load_results

    (tmp_path / "findings.tsv").write_text("feature\trank\tselection_frequency\tmedian_importance\tmean_rank\t"
                                           "pfer_bound\tis_denovo\ng1\t1\t1\t0.5\t1\t0\tFalse\n")
    (tmp_path / "findings_per_class.tsv").write_text("class\tfeature\trank\tmedian_importance\tmean_rank\n"
                                                     "a\tg1\t1\t0.5\t1\n")
    (tmp_path / "findings.json").write_text('{"classes": ["a"], "accuracies": [0.9]}')
    ad.AnnData(np.ones((2, 1), np.float32), var=pd.DataFrame(index=["g1"])).write_h5ad(tmp_path / "dataset.h5ad")
    for read in (load_results, dm.read_results):
        with pytest.raises(FormatError, match="not a DeepMapper dataset") as err:
            read(tmp_path)
        assert err.value.field == "uns.deepmapper"


# -- the audit of misreadings (issue: report with a sample key) ------------------------------------------

SCREEN_REASON = ("no pair screen calibration is possible with 3 + 3 samples: only 19 distinct relabellings of "
                 "whole samples besides the observed one, and q < 0.05 needs 20; no pair is reported (add samples)")


def _page(root: Path, out: Path) -> str:
    return write_report(root, out, multiqc=False)["html"].read_text()


def _section(page: str, sid: str) -> str:
    start = page.index(f'<section id="{sid}"')
    return page[start:page.index("</section>", start)]


def _feature_spec(page: str) -> dict:
    start = page.index('id="feature-data">') + len('id="feature-data">')
    return json.loads(page[start:page.index("</script>", start)].replace("<\\/", "</"))


def _donor_variant(results: Path, tmp_path: Path, *, rank: str = "alone", q_threshold: float = 0.1) -> Path:
    """The pbmc run dressed as a run with a sample key: a donor column in dataset.h5ad (4 donors per label,
    one label each), findings.json's sample_level, findings.tsv's four sample columns, a pseudobulk
    baseline, each pass file's gate, and a pair screen that could not be calibrated."""
    import anndata as ad

    from deepmapper.engine.passfile import write_pass
    from deepmapper.results.findings import RANK_TEST_ALONE, RANK_WITH_MODEL

    root = _variant(results, tmp_path, "donors")
    adata = ad.read_h5ad(root / "dataset.h5ad")
    label_key = adata.uns["deepmapper"]["label_key"]
    labels = adata.obs[label_key].astype(str).to_numpy()
    donor = [f"{lab}_d{i % 4}" for i, lab in enumerate(labels)]
    adata.obs["donor"] = pd.Categorical(donor)
    adata.uns["deepmapper"]["sample_key"] = "donor"
    adata.write_h5ad(root / "dataset.h5ad")

    findings = pd.read_csv(root / "findings.tsv", sep="\t")
    rng = np.random.default_rng(1)
    findings["model_rank"] = findings["rank"]
    findings["sample_p"] = np.sort(rng.uniform(0, 0.5, len(findings)))
    findings["sample_q"] = np.linspace(0.001, 0.3, len(findings))
    findings["sample_reproducibility"] = np.round(rng.uniform(0, 1, len(findings)), 3)
    findings.to_csv(root / "findings.tsv", sep="\t", index=False)
    pd.DataFrame({"feature": findings["feature"][::-1].to_numpy(), "rank": np.arange(1, len(findings) + 1)}) \
        .to_csv(root / "baselines" / "pseudobulk.tsv", sep="\t", index=False)

    summary = json.loads((root / "findings.json").read_text())
    classes = sorted(set(labels))
    summary["sample_level"] = {
        "design": "one label per sample", "sample_key": "donor", "n_samples": 4 * len(classes),
        "samples_per_label": {c: 4 for c in classes}, "q_threshold": q_threshold, "n_sample_q_below": 3,
        "rank": RANK_TEST_ALONE if rank == "alone" else RANK_WITH_MODEL,
        "model_left_out": "passes trained on fewer than 3 samples of a label" if rank == "alone" else "",
        "pair_screen": SCREEN_REASON, "test": "pseudobulk DESeq2, the largest p with any one sample left out",
        "note": "", "panel": {}, "relabellings": 70}
    summary["trust"] = {"trustworthy": True, "reasons": [], "baseline_accuracy": 0.9, "margin": 0.05,
                        "n_heldout": 142}
    (root / "findings.json").write_text(json.dumps(summary))
    screen = pd.read_csv(root / "baselines" / "interactions.tsv", sep="\t")
    screen["score"] = 0.0                       # what an uncalibrated screen leaves
    screen.to_csv(root / "baselines" / "interactions.tsv", sep="\t", index=False)
    for f in sorted((root / "passes").glob("pass_*.npz")):
        p = read_pass(f)
        p.meta["gate"] = {"score": 0.75, "chance": round(1 / len(classes), 6)}
        write_pass(p, root / "passes")
    return root


def test_with_a_sample_key_the_ranking_says_what_its_rank_is_made_of(results, tmp_path):
    root = _donor_variant(results, tmp_path)
    page = _page(root, tmp_path / "out")
    block = _section(page, "features")
    assert "by how much the model relies on them" not in block
    assert "sample-level test alone" in block and "passes trained on fewer than 3 samples of a label" in block
    spec = _feature_spec(page)
    keys = [c["key"] for c in spec["columns"]]
    assert {"sample_p", "sample_q", "sample_reproducibility", "model_rank"} <= set(keys)
    findings = pd.read_csv(root / "findings.tsv", sep="\t").sort_values("rank")
    first = dict(zip(keys, spec["rows"][0]))
    assert first["feature"] == findings["feature"].iloc[0]
    for k in ("sample_p", "sample_q", "sample_reproducibility"):
        assert first[k] == pytest.approx(findings[k].iloc[0])
    assert first["model_rank"] == findings["model_rank"].iloc[0]
    # the rank with the model in it says so, too
    root2 = _donor_variant(results, tmp_path / "with_model", rank="model")
    block2 = _section(_page(root2, tmp_path / "out2"), "features")
    assert "median_importance x -log10(sample_p)" in block2 and "sample-level test alone" not in block2


def test_an_uncalibrated_pair_screen_is_not_a_negative_result(results, tmp_path):
    root = _donor_variant(results, tmp_path)
    page = _page(root, tmp_path / "out")
    pairs = _section(page, "pairs")
    assert "found no pair below the q threshold" not in pairs
    assert "not calibrated" in pairs and "19 distinct relabellings" in pairs
    baselines = _section(page, "baselines")
    assert "<th>Interactions</th>" not in baselines and "Pair screen alone" not in baselines
    assert "not tested" in baselines
    from deepmapper.results.report.results import load_results

    assert "interactions" not in mqc_mod.agreement(load_results(root))
    # without a sample key the screen alone stays a baseline
    assert "interactions" in mqc_mod.agreement(load_results(results))


def test_with_a_sample_key_accuracy_names_the_held_out_samples_and_the_gate(results, tmp_path):
    import anndata as ad

    root = _donor_variant(results, tmp_path)
    page = _page(root, tmp_path / "out")
    adata = ad.read_h5ad(root / "dataset.h5ad", backed="r")
    donors = adata.obs["donor"].astype(str).to_numpy()
    rows = np.unique(np.concatenate([read_pass(f).heldout_index for f in (root / "passes").glob("pass_*.npz")]))
    n_samples = len(set(donors[rows]))
    adata.file.close()
    confusion = _section(page, "confusion")
    assert f"from {n_samples} held-out samples" in confusion
    passes = _section(page, "passes")
    assert "balanced accuracy" in passes and "chance" in passes
    assert "always the majority class" not in passes
    assert f"from {n_samples} held-out samples" in _section(page, "summary")
    # evaluation.json's list of held-out samples, where the run wrote one, is what counts
    ev = json.loads((root / "evaluation.json").read_text())
    ev["heldout_samples"] = sorted(set(donors[rows]))[:3]
    (root / "evaluation.json").write_text(json.dumps(ev))
    assert "from 3 held-out samples" in _section(_page(root, tmp_path / "out_ev"), "confusion")
    # without a sample key: the majority class, as before
    plain = _page(results, tmp_path / "plain")
    assert "always the majority class" in _section(plain, "passes")
    assert "held-out samples" not in _section(plain, "confusion")


def test_the_per_group_heatmap_is_coloured_by_the_per_class_score(results, tmp_path, monkeypatch):
    from deepmapper.results.report import html as html_mod
    from deepmapper.results.report.results import load_results

    root = _variant(results, tmp_path)
    pc = _with_direction(root)
    # signed attributions (integrated gradients) can be negative: a down marker with negative importance
    pc.loc[pc["direction"] == "down", "median_importance"] *= -1
    pc.to_csv(root / "findings_per_class.tsv", sep="\t", index=False)
    figs = {}
    monkeypatch.setattr(html_mod, "_fig_html", lambda fig, div_id: figs.setdefault(div_id, fig) and "")
    html_mod._per_class(load_results(root))
    heat = figs["plot-per-class"].data[0]
    largest = pc.assign(a=pc["score"].abs()).groupby("class")["a"].max()
    score = {(c, f): s for c, f, s in zip(pc["class"], pc["feature"], pc["score"])}
    direction = {(c, f): d for c, f, d in zip(pc["class"], pc["feature"], pc["direction"])}
    checked = 0
    for g, zr in zip(heat.y, heat.z):
        for c, z in zip(heat.x, zr):
            if z is None or (c, g) not in score:
                continue
            assert z == pytest.approx(score[(c, g)] / largest[c])
            if score[(c, g)] != 0:
                assert (z > 0) == (direction[(c, g)] == "up"), (c, g)
            checked += 1
    assert checked >= len(heat.x)


def test_the_samples_section_reads_as_a_sentence(results, tmp_path):
    root = _donor_variant(results, tmp_path, q_threshold=0.1)
    samples = _section(_page(root, tmp_path / "out"), "samples")
    n = json.loads((root / "findings.json").read_text())["sample_level"]["n_samples"]
    assert f"{n} samples (<code>donor</code>): " in samples and "design: one label per sample" in samples
    assert "Samples from" not in samples
    assert "outside the held-out set" in samples
    # the count uses the run's q threshold, and the pseudobulk column says what it is
    findings = pd.read_csv(root / "findings.tsv", sep="\t").sort_values("rank")
    n_q = int((findings["sample_q"].head(20) < 0.1).sum())
    assert f"{n_q} of DeepMapper's top 20 have <code>sample_q</code> &lt; 0.1." in samples
    assert "plain" in samples and "baselines/pseudobulk.tsv" in samples and "not the leave-one-sample-out" in samples


def test_a_trustworthy_run_shows_its_verdict_and_the_logistic_start(results, tmp_path):
    root = _variant(results, tmp_path)
    summary = json.loads((root / "findings.json").read_text())
    summary["trust"] = {"trustworthy": True, "reasons": [], "baseline_accuracy": 0.875, "margin": 0.05,
                        "n_heldout": 142}
    summary["config"]["backbone"]["wide_start"] = "logistic"
    summary["config"]["backbone"]["kind"] = "cnn"
    (root / "findings.json").write_text(json.dumps(summary))
    ev = json.loads((root / "evaluation.json").read_text())
    page = _page(root, tmp_path / "out")
    head = _section(page, "summary")
    assert 'id="trust-line"' in head and "Trust: ok" in head
    assert f"{100 * ev['accuracy']:.1f}%" in head and "87.5%" in head and "5.0%" in head
    assert "wide_start: logistic" in head
    summary["config"]["backbone"]["wide_start"] = "random"
    (root / "findings.json").write_text(json.dumps(summary))
    page = _page(root, tmp_path / "out2")
    assert "Trust: ok" in page and "wide_start: logistic" not in page


def test_groups_the_model_never_recognises_get_a_caveat(results, tmp_path):
    root = _variant(results, tmp_path)
    ev = json.loads((root / "evaluation.json").read_text())
    for v in ev["per_class"].values():
        v["recall"] = max(float(v["recall"]), 0.5)
    blind = sorted(ev["per_class"])[0]
    ev["per_class"][blind]["recall"] = 0.0
    (root / "evaluation.json").write_text(json.dumps(ev))
    block = _section(_page(root, tmp_path / "out"), "per-class")
    assert block.count("held-out recall 0") == 1
    from html import escape

    row = next(r for r in block.split("<tr>") if r.startswith("<td>" + escape(blind)))
    assert "held-out recall 0" in row


def test_the_table_download_is_not_named_like_findings_tsv(results, tmp_path):
    spec = _feature_spec(_page(results, tmp_path / "out"))
    assert spec["filename"].endswith("_report_table.tsv")
