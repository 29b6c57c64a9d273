"""End-to-end behaviour of the engine through the CLI, on scanpy's pbmc68k_reduced."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from deepmapper.cli import cli
from deepmapper.engine.passfile import read_pass

# Tiny but real: every pass trains, stops, attributes and is accumulated.
TRAIN = ["--epochs", "4", "--min-epochs", "1", "--patience", "2", "--ig-steps", "8",
         "--attribution-max-samples", "64", "--threads", "1"]
FAST = ["--passes", "2", *TRAIN]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def run_dir(pbmc_h5ad, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = invoke("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", out, "--no-report", *FAST)
    assert res.exit_code == 0, res.output
    return out


def test_run_writes_every_output(run_dir):
    table = pd.read_csv(run_dir / "findings.tsv", sep="\t")
    assert list(table.columns)[:5] == ["feature", "rank", "selection_frequency", "median_importance", "mean_rank"]
    assert len(table) == 765 and table["feature"].is_unique
    assert table["rank"].tolist() == list(range(1, 766))
    assert table["selection_frequency"].between(0, 1).all()
    summary = json.loads((run_dir / "findings.json").read_text())
    for key in ("accuracies", "accepted", "stop_epochs", "config", "versions", "per_class_top"):
        assert key in summary
    assert len(summary["accuracies"]) == summary["n_passes_run"] >= 2
    assert summary["config"]["run"]["epochs"] == 4
    assert summary["versions"]["torch"].startswith("2.")
    assert sorted(p.name for p in (run_dir / "passes").iterdir())[:2] == ["pass_000.npz", "pass_001.npz"]
    ev = json.loads((run_dir / "evaluation.json").read_text())
    assert np.asarray(ev["confusion_matrix"]).sum() == ev["heldout_size"]
    base = json.loads((run_dir / "baselines" / "baselines.json").read_text())
    assert 0.5 < base["logistic"]["accuracy"] <= 1.0
    assert not list(run_dir.glob(".deepmapper-*")), "staging directory left behind"


def test_a_pass_learns_above_chance(run_dir):
    p = read_pass(run_dir / "passes" / "pass_000.npz")
    # 10 classes, majority class 0.34: even 4 epochs of the default model beat it clearly
    assert p.accuracy > 0.5
    assert p.importance.shape == (765,) and np.isfinite(p.importance).all() and p.importance.max() > 0
    assert p.class_importance.shape == (10, 765)


def test_chained_steps_give_byte_identical_findings(run_dir, pbmc_h5ad, tmp_path):
    ds = tmp_path / "dataset.h5ad"
    assert invoke("ingest", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--out", ds).exit_code == 0
    # each step command takes only the settings it uses: training's to train-pass, --passes (and the
    # --threads every step gets) to accumulate, which records the rest from the dataset and the pass
    # files: findings.json is byte-identical
    res = invoke("train-pass", "--dataset", ds, "--start", 0, "--count", 2, "--outdir", tmp_path / "passes", *TRAIN)
    assert res.exit_code == 0, res.output
    # the run fits the baselines first and its trust verdict compares with them: so do the steps
    assert invoke("baseline", "--dataset", ds, "--outdir", tmp_path / "baselines").exit_code == 0
    res = invoke("accumulate", "--dataset", ds, "--passes-dir", tmp_path / "passes", "--outdir", tmp_path,
                 "--passes", 2, "--baselines", tmp_path / "baselines" / "baselines.json", "--threads", 1)
    assert res.exit_code == 0, res.output
    for name in ("findings.tsv", "findings.json", "findings_per_class.tsv"):
        assert (tmp_path / name).read_bytes() == (run_dir / name).read_bytes(), name
    res = invoke("evaluate", "--dataset", ds, "--passes-dir", tmp_path / "passes", "--out", tmp_path / "ev.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev.json").read_text()) == json.loads((run_dir / "evaluation.json").read_text())


def test_same_seed_same_findings_other_seed_other_arrangements(run_dir, pbmc_h5ad, tmp_path):
    again = tmp_path / "again"
    assert invoke("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", again, "--no-report",
                  "--no-baselines", *FAST).exit_code == 0
    assert (again / "findings.tsv").read_bytes() == (run_dir / "findings.tsv").read_bytes()
    other = tmp_path / "other"
    assert invoke("run", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--outdir", other, "--no-report",
                  "--no-baselines", *FAST, "--seed", 5).exit_code == 0
    a, b = read_pass(run_dir / "passes" / "pass_000.npz"), read_pass(other / "passes" / "pass_000.npz")
    assert (a.seed, b.seed) == (0, 5)
    assert not np.allclose(a.importance, b.importance)
    assert (other / "findings.tsv").read_bytes() != (run_dir / "findings.tsv").read_bytes()


def test_failed_run_keeps_the_earlier_results(run_dir, pbmc_h5ad):
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    res = CliRunner().invoke(cli, ["run", "--input", str(pbmc_h5ad), "--label-key", "cell_type",
                                   "--outdir", str(run_dir), *FAST])
    assert res.exit_code != 0
    assert "cell_type" in res.output and "bulk_labels" in res.output  # names the field and lists the keys
    assert "Traceback" not in res.output
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("args, expected", [
    (["--min-epochs", "30", "--epochs", "10"], "min_epochs"),
    (["--attribution", "shap"], "attribution"),
    (["--label-smoothing", "1.5"], "label_smoothing"),
    (["--backbone", "resnet99"], "resnet99"),
])
def test_bad_configuration_is_one_clear_line(pbmc_h5ad, tmp_path, args, expected):
    res = CliRunner().invoke(cli, ["run", "--input", str(pbmc_h5ad), "--label-key", "bulk_labels",
                                   "--outdir", str(tmp_path / "o"), "--no-report", "--passes", "1", *args])
    assert res.exit_code != 0
    assert expected in res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and expected in errors[0]


def test_missing_input_file(tmp_path):
    res = CliRunner().invoke(cli, ["run", "--input", str(tmp_path / "nope.h5ad"), "--label-key", "x",
                                   "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "nope.h5ad" in res.output
    assert not (tmp_path / "o" / "findings.tsv").exists()


def test_early_stopping_fires_on_an_easy_task_and_restores_the_best_epoch(tmp_path):
    from deepmapper.datasets.synthetic import planted

    adata, _ = planted(300, 200, n_marginal=20, n_combo=0, effect=2.5, seed=1)
    path = tmp_path / "easy.h5ad"
    adata.write_h5ad(path)
    res = invoke("run", "--input", path, "--label-key", "label", "--outdir", tmp_path / "o", "--no-report",
                 "--no-baselines", "--passes", "1", "--epochs", "80", "--min-epochs", "3", "--patience", "3",
                 "--threads", "1")
    assert res.exit_code == 0, res.output
    p = read_pass(tmp_path / "o" / "passes" / "pass_000.npz")
    assert p.early_stopped and p.stop_epoch < 80
    # best = last epoch that improved by more than min_delta (1e-3 by default)
    assert p.val_loss[p.best_epoch - 1] <= p.val_loss.min() + 1e-3
    assert p.stop_epoch - p.best_epoch >= 3
    # the weights used afterwards are the best epoch's, not the last epoch's
    assert p.meta["restored_val_loss"] == pytest.approx(float(p.val_loss[p.best_epoch - 1]), rel=1e-3, abs=1e-5)
    assert abs(p.meta["restored_val_loss"] - float(p.val_loss[-1])) > 1e-4
    assert p.accuracy > 0.9
