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
