"""The pure table-building core and the dataset handed to ingest (no external tools)."""
from __future__ import annotations

import numpy as np
import pytest

from deepmapper.cli import cli
from deepmapper.denovo import table as tb
from deepmapper.denovo.steps import make_table
from deepmapper.errors import InputError
from deepmapper.io import read_quant_sf

FEATURES = ["ENST01", "ENST02", "DENOVO_NODE_1_length_900", "ENST03", "DENOVO_NODE_2_length_400"]


def _quant(path, names, reads):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["Name\tLength\tEffectiveLength\tTPM\tNumReads"]
    for n, r in zip(names, reads):
        lines.append(f"{n}\t1000\t850.5\t{r * 3.1:.4f}\t{r}")
    path.write_text("\n".join(lines) + "\n")


def _experiment(tmp_path, n_per_group=5, reads=None):
    rng = np.random.default_rng(0)
    rows = ["sample,fastq_1,fastq_2,label"]
    counts = {}
    for g, label in enumerate(("ctrl", "case")):
        for i in range(n_per_group):
            sid = f"{label}{i}"
            rows.append(f"{sid},/nonexistent/{sid}_1.fq.gz,,{label}")
            c = rng.poisson([50, 20, 5, 80, 10]).astype(float)
            c[2] += 60 * g  # DENOVO_NODE_1 up in 'case'
            c[0] += 0.37     # Salmon NumReads are fractional EM estimates
            counts[sid] = c
            _quant(tmp_path / "quant" / sid / "quant.sf", FEATURES, c)
    (tmp_path / "samples.csv").write_text("\n".join(rows) + "\n")
    return counts


def test_read_quant_sf_and_build_table(tmp_path):
    _quant(tmp_path / "a.sf", FEATURES, [1.5, 2, 3, 4, 5])
    names, vals = read_quant_sf(tmp_path / "a.sf")
    assert names == FEATURES and vals.tolist() == [1.5, 2, 3, 4, 5]
    t = tb.build_table({"s1": (names, vals), "s2": (names, vals * 2)})
    assert t.counts.shape == (5, 2) and t.counts[:, 1].tolist() == [3, 4, 6, 8, 10]
    assert t.is_denovo.tolist() == [False, False, True, False, True]
    lines = t.to_tsv().splitlines()
    assert lines[0] == "feature\tis_denovo\ts1\ts2"
    assert lines[1] == "ENST01\t0\t1.5\t3" and lines[3].startswith("DENOVO_NODE_1_length_900\t1\t")


def test_build_table_refuses_quant_files_from_different_indexes(tmp_path):
    a = (FEATURES, np.ones(5))
    with pytest.raises(InputError, match="different index"):
        tb.build_table({"s1": a, "s2": (FEATURES[:4] + ["DENOVO_other"], np.ones(5))})
    with pytest.raises(InputError, match="different order"):
        tb.build_table({"s1": a, "s2": (FEATURES[::-1], np.ones(5))})


@pytest.mark.parametrize("body, match", [
    ("Name\tLength\tTPM\nx\t1\t2\n", "not a Salmon quant.sf"),
    ("Name\tNumReads\nx\t-3\n", "non-negative"),
    ("Name\tNumReads\nx\tnan\n", "non-negative"),
    ("Name\tNumReads\nx\tabc\n", "not a number"),
    ("Name\tNumReads\nx\n", "fields"),
    ("Name\tNumReads\nx\t1\nx\t2\n", "duplicate transcript names"),
])
def test_bad_quant_files(tmp_path, body, match):
    (tmp_path / "q.sf").write_text(body)
    with pytest.raises(InputError, match=match):
        read_quant_sf(tmp_path / "q.sf")


def test_label_inputs_read_quant_files_with_the_same_reader(tmp_path):
    """io.read_input's LABEL=quant.sf inputs and the de-novo table share one Salmon reader: a count the
    table refuses is refused as an input too."""
    from deepmapper import io

    for label, body in (("a", "Name\tNumReads\nx\t5\ny\t1\n"), ("b", "Name\tNumReads\nx\t-2\ny\t1\n")):
        (tmp_path / label).mkdir()
        (tmp_path / label / "quant.sf").write_text(body)
    with pytest.raises(InputError, match="non-negative") as err:
        io.read_input([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"], label_key=None, min_class_size=1)
    assert "b/quant.sf" in str(err.value)


def test_make_table_writes_table_and_dataset(tmp_path):
    import anndata as ad

    counts = _experiment(tmp_path)
    out = make_table(tmp_path / "samples.csv", tmp_path / "quant", tmp_path / "out")
    lines = (tmp_path / "out" / "sc_table.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:2] == ["feature", "is_denovo"] and header[2:] == list(counts)
    row = lines[1].split("\t")
    assert row[0] == "ENST01" and float(row[2]) == pytest.approx(counts["ctrl0"][0])

    a = ad.read_h5ad(out["dataset"])
    assert a.shape == (10, 5) and list(a.obs_names) == list(counts) and list(a.var_names) == FEATURES
    assert a.var["is_denovo"].tolist() == [False, False, True, False, True]
    assert a.obs["label"].tolist() == ["ctrl"] * 5 + ["case"] * 5
    meta = a.uns["deepmapper"]
    assert meta["label_key"] == "label" and meta["normalized"] and meta["matrix"] == "NumReads"
    # normalize_total(1e4) + log1p of the NumReads, per sample
    c = counts["case3"]
    np.testing.assert_allclose(a["case3"].X.ravel(), np.log1p(c / c.sum() * 1e4), rtol=1e-5)
    # the planted difference survives: DENOVO_NODE_1 is higher in every 'case' sample
    x = a[:, "DENOVO_NODE_1_length_900"].X.ravel()
    assert x[5:].min() > x[:5].max()


def test_table_cli_checks_denovo_ids_and_group_sizes(tmp_path):
    from click.testing import CliRunner

    _experiment(tmp_path, n_per_group=3)
    (tmp_path / "denovo.fa").write_text(">DENOVO_NODE_1_length_900\nACGT\n>DENOVO_NODE_9\nACGT\n")
    args = ["denovo", "table", "--samplesheet", str(tmp_path / "samples.csv"), "--quant-dir",
            str(tmp_path / "quant"), "--outdir", str(tmp_path / "out")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "fewer than 5" in r.output and "--min-class-size" in r.output
    assert not (tmp_path / "out" / "sc_table.tsv").exists()  # nothing half-written
    r = CliRunner().invoke(cli, args + ["--min-class-size", "3", "--denovo", str(tmp_path / "denovo.fa")])
    assert r.exit_code == 2 and "DENOVO_NODE_9" in r.output and "--denovo" in r.output
    r = CliRunner().invoke(cli, args + ["--min-class-size", "3"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "dataset.h5ad").exists()
    (tmp_path / "quant" / "case1" / "quant.sf").unlink()
    r = CliRunner().invoke(cli, args + ["--min-class-size", "3"])
    assert r.exit_code == 2 and "case1" in r.output and "deepmapper denovo quant" in r.output
