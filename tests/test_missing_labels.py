"""--missing-labels: label values the user says mean "no label" (issue 12: NA stays text unless asked)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from deepmapper import io
from deepmapper.cli import cli
from deepmapper.errors import InputError


def _table(tmp_path, labels):
    rng = np.random.default_rng(0)
    rows = ["cell,group," + ",".join(f"G{j}" for j in range(6))]
    for i, lab in enumerate(labels):
        rows.append(f"c{i},{lab}," + ",".join(f"{v:.3f}" for v in rng.normal(size=6)))
    path = tmp_path / "cells.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


LABELS = ["A"] * 8 + ["B"] * 8 + ["NA"] * 6


def test_na_is_a_label_by_default(tmp_path):
    ds = io.read_input([str(_table(tmp_path, LABELS))], label_key="group", normalize="never")
    assert sorted(ds.obs["group"].unique()) == ["A", "B", "NA"] and ds.n_obs == 22


def test_missing_labels_leaves_those_cells_out(tmp_path, caplog):
    path = _table(tmp_path, LABELS)
    ds = io.read_input([str(path)], label_key="group", normalize="never", missing_labels=("NA",))
    assert sorted(ds.obs["group"].unique()) == ["A", "B"] and ds.n_obs == 16
    assert list(ds.obs_names) == [f"c{i}" for i in range(16)]
    assert "6 cells left out" in caplog.text
    out = tmp_path / "dataset.h5ad"
    res = CliRunner().invoke(cli, ["ingest", "--input", str(path), "--label-key", "group", "--normalize", "never",
                                   "--missing-labels", "NA, None", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert io.read_dataset(out).n_obs == 16


def test_missing_labels_on_every_cell_is_one_clear_error(tmp_path):
    path = _table(tmp_path, ["NA"] * 10)
    with pytest.raises(InputError, match="every cell's label"):
        io.read_input([str(path)], label_key="group", normalize="never", missing_labels=("NA",))


def test_parse_missing_labels():
    assert io.parse_missing_labels(" NA, None ,,") == ("NA", "None")
    assert io.parse_missing_labels("") == ()


def test_empty_labels_go_with_missing_labels_on_the_cli(tmp_path):
    """Issue 21: `--missing-labels NaN,NA,None` on a CSV with empty label cells failed ("3 cells have no
    label"): an empty label is no label whatever the listed values. Without the option, the error
    names it."""
    path = _table(tmp_path, ["A"] * 8 + ["B"] * 8 + [""] * 3 + ["NA"] * 2)
    out = tmp_path / "dataset.h5ad"
    base = ["ingest", "--input", str(path), "--label-key", "group", "--normalize", "never", "--out", str(out)]
    res = CliRunner().invoke(cli, base)
    assert res.exit_code == 2
    line = [ln for ln in res.output.splitlines() if ln.startswith("Error")]
    assert len(line) == 1 and "3 cells have no label" in line[0] and "--missing-labels" in line[0], res.output
    res = CliRunner().invoke(cli, [*base, "--missing-labels", "NaN,NA,None"])
    assert res.exit_code == 0, res.output
    ds = io.read_dataset(out)
    assert ds.n_obs == 16 and sorted(ds.obs["group"].unique()) == ["A", "B"]


def test_from_anndata_honours_missing_labels(pbmc):
    adata = pbmc.copy()
    labels = adata.obs["bulk_labels"].astype(object)
    labels.iloc[:4] = np.nan
    labels.iloc[4:6] = "None"
    adata.obs["bulk_labels"] = labels
    with pytest.raises(InputError, match="4 cells have no label.*missing-labels"):
        io.from_anndata(adata, label_key="bulk_labels")
    ds = io.from_anndata(adata, label_key="bulk_labels", missing_labels="None")
    assert ds.n_obs == 694 and list(ds.obs_names) == list(adata.obs_names[6:])
