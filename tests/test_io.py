"""Input readers, validation messages (through the CLI), the dataset file and its schema."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from click.testing import CliRunner

from deepmapper import io
from deepmapper.cli import cli
from deepmapper.errors import FormatError, InputError


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    """The one 'Error: ...' line of a failed command (no traceback)."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def counts_frame(n_cells=12, n_genes=6, seed=0, classes=("A", "B")):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.poisson(3.0, (n_cells, n_genes)), columns=[f"G{j}" for j in range(n_genes)],
                      index=pd.Index([f"c{i}" for i in range(n_cells)], name="cell"))
    labels = np.array([classes[i % len(classes)] for i in range(n_cells)])
    return df, labels


def write_csv(path: Path, df: pd.DataFrame, labels=None, key="cell_type", sep=","):
    out = df.copy()
    if labels is not None:
        out.insert(0, key, labels)
    out.to_csv(path, sep=sep)
    return path


def write_10x(folder: Path, counts: np.ndarray, genes, barcodes, *, gz=True, old=False, types=None):
    """counts: genes x cells, as 10x stores it."""
    folder.mkdir(parents=True)
    ext = ".gz" if gz else ""
    opener = (lambda p: gzip.open(p, "wt")) if gz else (lambda p: open(p, "w"))
    with (gzip.open(folder / f"matrix.mtx{ext}", "wb") if gz else open(folder / "matrix.mtx", "wb")) as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(counts))
    with opener(folder / f"barcodes.tsv{ext}") as fh:
        fh.write("".join(f"{b}\n" for b in barcodes))
    name = "genes.tsv" if old else "features.tsv"
    with opener(folder / f"{name}{ext}") as fh:
        for i, g in enumerate(genes):
            gid, sym = (g if isinstance(g, tuple) else (f"ENSG{i:05d}", g))
            cols = [gid, sym] if old else [gid, sym, (types[i] if types else "Gene Expression")]
            fh.write("\t".join(cols) + "\n")
    return folder


# -- h5ad -------------------------------------------------------------------------------------

def test_pbmc_auto_picks_raw_without_renormalising(pbmc, pbmc_h5ad, tmp_path):
    out = tmp_path / "dataset.h5ad"
    res = run("ingest", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--out", out)
    assert res.exit_code == 0, res.output
    ds = io.read_dataset(out)
    meta = ds.uns["deepmapper"]
    assert meta["matrix"] == "raw" and not meta["normalized"] and meta["schema_version"] == 1
    assert meta["label_key"] == "bulk_labels" and meta["source_sha256"] == io.file_sha256(pbmc_h5ad)
    assert ds.shape == (700, 765)
    assert sp.isspmatrix_csr(ds.X) and ds.X.dtype == np.float32
    np.testing.assert_allclose(ds.X.toarray(), pbmc.raw.X.toarray(), rtol=1e-6)  # log data used as given
    codes, classes = io.labels(ds)
    assert classes == sorted(pbmc.obs["bulk_labels"].astype(str).unique())
    assert len(classes) == 10 and codes.dtype == np.int64
    assert dict(zip(classes, np.bincount(codes))) == pbmc.obs["bulk_labels"].astype(str).value_counts().to_dict()
    assert list(ds.var_names) == list(pbmc.raw.var_names)
    assert not ds.var["is_denovo"].any()


def test_h5ad_matrix_x_and_layer(pbmc, tmp_path):
    a = pbmc.copy()
    a.layers["counts"] = sp.csr_matrix(np.rint(np.expm1(a.raw.X.toarray())))  # integer, counts-like
    a.write_h5ad(tmp_path / "in.h5ad")
    ds = io.read_input(tmp_path / "in.h5ad", label_key="bulk_labels", matrix="X")
    assert ds.uns["deepmapper"]["matrix"] == "X" and not ds.uns["deepmapper"]["normalized"]
    np.testing.assert_allclose(ds.X, a.X, rtol=1e-6)  # z-scored X: negative, not counts, not touched
    ds = io.read_input(tmp_path / "in.h5ad", label_key="bulk_labels", matrix="layer:counts")
    assert ds.uns["deepmapper"]["matrix"] == "layer:counts" and ds.uns["deepmapper"]["normalized"]
    totals = np.expm1(ds.X.toarray().astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(totals[totals > 0], 1e4, rtol=1e-3)


def test_h5ad_without_raw_uses_x(pbmc, tmp_path):
    a = pbmc.copy()
    del a.raw
    a.write_h5ad(tmp_path / "noraw.h5ad")
    ds = io.read_input(tmp_path / "noraw.h5ad", label_key="bulk_labels")
    assert ds.uns["deepmapper"]["matrix"] == "X"


def test_sparse_input_is_never_densified(pbmc, tmp_path, monkeypatch):
    a = pbmc.copy()
    a.layers["counts"] = sp.csc_matrix(np.rint(np.expm1(a.raw.X.toarray())))  # CSC on purpose
    a.write_h5ad(tmp_path / "in.h5ad")

    def boom(*_a, **_k):
        raise AssertionError("a sparse matrix was densified")

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        monkeypatch.setattr(cls, "toarray", boom)
        monkeypatch.setattr(cls, "todense", boom)
    ds = io.ingest(tmp_path / "in.h5ad", tmp_path / "ds.h5ad", label_key="bulk_labels",
                   cfg=io_cfg(matrix="layer:counts"))
    assert sp.isspmatrix_csr(ds.X) and ds.X.dtype == np.float32 and ds.uns["deepmapper"]["normalized"]
    monkeypatch.undo()
    assert sp.isspmatrix_csr(io.read_dataset(tmp_path / "ds.h5ad").X)


def io_cfg(**kw):
    from deepmapper.config import InputConfig

    return InputConfig(**kw)


# -- CSV / TSV ---------------------------------------------------------------------------------

def test_csv_with_label_column_counts_are_normalised(tmp_path):
    df, labels = counts_frame()
    path = write_csv(tmp_path / "cells.csv", df, labels)
    out = tmp_path / "ds.h5ad"
    res = run("ingest", "--input", path, "--label-key", "cell_type", "--out", out)
    assert res.exit_code == 0, res.output
    ds = io.read_dataset(out)
    assert ds.shape == (12, 6) and list(ds.var_names) == list(df.columns)
    assert ds.uns["deepmapper"]["normalized"] and ds.uns["deepmapper"]["matrix"] == "table"
    expect = np.log1p(df.to_numpy() / df.to_numpy().sum(axis=1, keepdims=True) * 1e4)
    np.testing.assert_allclose(ds.X, expect, rtol=1e-5)
    assert list(ds.obs["cell_type"].astype(str)) == list(labels)


def test_tsv_gz_with_separate_labels_file(tmp_path):
    df, labels = counts_frame()
    df = np.log1p(df)  # already log data: auto leaves it alone
    path = tmp_path / "cells.tsv.gz"
    df.to_csv(path, sep="\t")
    lab = pd.DataFrame({"barcode": list(df.index)[::-1] + ["not_a_cell"], "group": list(labels)[::-1] + ["A"]})
    lab.to_csv(tmp_path / "labels.csv", index=False)
    ds = io.read_input(path, label_key=None, labels=tmp_path / "labels.csv")
    assert ds.uns["deepmapper"]["label_key"] == "group" and not ds.uns["deepmapper"]["normalized"]
    assert list(ds.obs["group"].astype(str)) == list(labels)
    np.testing.assert_allclose(ds.X, df.to_numpy(), rtol=1e-6)
    ds = io.read_input(path, label_key="condition", labels=tmp_path / "labels.csv")
    assert "condition" in ds.obs.columns


# -- 10x and Salmon ------------------------------------------------------------------------------

def test_10x_populations_merged_on_shared_genes(tmp_path):
    rng = np.random.default_rng(1)
    genes_a = ["CD3E", "MS4A1", "LYZ", "NKG7", ("ENSG_DUP1", "DUPL"), ("ENSG_DUP2", "DUPL"), "ONLY_A"]
    genes_b = ["LYZ", "CD3E", "MS4A1", "NKG7", ("ENSG_DUP1", "DUPL"), ("ENSG_DUP2", "DUPL"), "ONLY_B"]
    a = write_10x(tmp_path / "ctrl", rng.poisson(2, (7, 8)), genes_a, [f"AAAC-{i}" for i in range(8)])
    b = write_10x(tmp_path / "stim", rng.poisson(2, (7, 9)), genes_b, [f"AAAC-{i}" for i in range(9)],
                  gz=False, old=True)
    out = tmp_path / "ds.h5ad"
    res = run("ingest", "--input", f"ctrl={a}", "--input", f"stim={b}", "--out", out)
    assert res.exit_code == 0, res.output
    ds = io.read_dataset(out)
    assert list(ds.var_names) == ["CD3E", "MS4A1", "LYZ", "NKG7", "DUPL_ENSG_DUP1", "DUPL_ENSG_DUP2"]
    assert ds.uns["deepmapper"]["label_key"] == "population" and ds.uns["deepmapper"]["normalized"]
    assert ds.obs["population"].value_counts().to_dict() == {"ctrl": 8, "stim": 9}
    assert ds.obs_names[0] == "ctrl:AAAC-0" and ds.obs_names[8] == "stim:AAAC-0"
    assert sp.isspmatrix_csr(ds.X)
    # the values follow the gene names, not the file order
    raw_b = scipy.io.mmread(b / "matrix.mtx").toarray().T  # cells x genes_b
    lyz_b = raw_b[:, 0]
    totals = raw_b[:, :6].sum(axis=1)  # normalised over the shared genes that were kept
    expect = np.log1p(lyz_b / totals * 1e4)
    np.testing.assert_allclose(ds.X[8:, 2].toarray().ravel(), expect, rtol=1e-5)


def test_10x_single_dir_needs_labels_and_keeps_gene_expression_only(tmp_path):
    rng = np.random.default_rng(2)
    genes = ["G1", "G2", "G3", "AB_CD3"]
    d = write_10x(tmp_path / "run", rng.poisson(3, (4, 10)), genes, [f"BC{i}" for i in range(10)],
                  types=["Gene Expression"] * 3 + ["Antibody Capture"])
    msg = error_line(run("ingest", "--input", d, "--out", tmp_path / "x.h5ad"))
    assert "labels" in msg and "--labels" in msg
    pd.DataFrame({"cell": [f"BC{i}" for i in range(10)], "kind": ["x", "y"] * 5}).to_csv(
        tmp_path / "lab.tsv", sep="\t", index=False)
    ds = io.read_input(d, label_key=None, labels=tmp_path / "lab.tsv")
    assert list(ds.var_names) == ["G1", "G2", "G3"] and ds.uns["deepmapper"]["label_key"] == "kind"


def test_salmon_quant_files(tmp_path):
    rng = np.random.default_rng(3)
    names = [f"TX{i}" for i in range(5)] + ["DENOVO_1"]
    inputs = []
    for k, cond in enumerate(["treated"] * 5 + ["control"] * 5):
        d = tmp_path / f"S{k}"
        d.mkdir()
        pd.DataFrame({"Name": names, "Length": 1000, "EffectiveLength": 800.0, "TPM": 1.0,
                      "NumReads": rng.gamma(2.0, 10.0, len(names)).round(3)}).to_csv(d / "quant.sf", sep="\t",
                                                                                   index=False)
        inputs.append(f"{cond}={d / 'quant.sf'}")
    ds = io.read_input(inputs, label_key="condition")
    assert ds.shape == (10, 6) and list(ds.obs_names) == [f"S{k}" for k in range(10)]
    assert ds.uns["deepmapper"]["matrix"] == "NumReads" and ds.uns["deepmapper"]["normalized"]
    assert ds.var["is_denovo"].tolist() == [False] * 5 + [True]
    assert ds.obs["condition"].value_counts().to_dict() == {"control": 5, "treated": 5}
    # a samplesheet's ids (ingest --sample-name) name the rows instead of the folders
    ids = [f"donor{k}" for k in range(10)]
    assert list(io.read_input(inputs, label_key="condition", sample_names=ids).obs_names) == ids


# -- every bad input: one line naming the field, non-zero exit -------------------------------------

def _bad_csv(tmp_path, mutate, **kw):
    df, labels = counts_frame(**kw)
    df, labels = mutate(df.astype(float), labels)
    return write_csv(tmp_path / "bad.csv", df, labels)


def _nan(df, lab):
    df.iloc[1, 2] = np.nan
    df.iloc[3, 2] = np.inf
    return df, lab


def _negative(df, lab):
    df.iloc[0, 4] = -1.0
    return df, lab


def _text_object(df, lab):
    df["G3"] = df["G3"].astype(object)
    df.iloc[5, 3] = "high"
    return df, lab


def _one_class(df, lab):
    return df, np.array(["A"] * len(lab))


def _small(df, lab):
    lab = lab.astype(object)
    lab[:3] = "rare"
    return df, lab


def _unlabelled(df, lab):
    lab = lab.astype(object)
    lab[2] = ""
    return df, lab


def _no_cells(df, lab):
    return df.iloc[:0], lab[:0]


def _no_features(df, lab):
    return df.iloc[:, :0], lab


@pytest.mark.parametrize("mutate, extra, field, words", [
    (_nan, [], "table", ["2 values are NaN or infinite", "G2 (2)"]),
    (_negative, ["--normalize", "always"], "normalize", ["negative", "G4"]),
    (_text_object, [], "G3", ["not numeric", "'high' for cell c5"]),
    (_one_class, [], "cell_type", ["only one class", "'A'"]),
    (_small, [], "cell_type", ["'rare' (3 cells)", "--min-class-size"]),
    (_unlabelled, [], "cell_type", ["no label"]),
    (_no_cells, [], "X", ["empty", "0 cells"]),
    (_no_features, [], "X", ["empty", "0 features"]),
])
def test_bad_csv_inputs(tmp_path, mutate, extra, field, words):
    path = _bad_csv(tmp_path, mutate)
    msg = error_line(run("ingest", "--input", path, "--label-key", "cell_type", "--min-class-size", "4",
                         *extra, "--out", tmp_path / "o.h5ad"))
    assert str(path) in msg and f"field '{field}'" in msg, msg
    for w in words:
        assert w in msg, msg
    assert "Fix:" in msg
    assert not (tmp_path / "o.h5ad").exists()


def test_duplicate_feature_names(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("cell,cell_type,G1,G2,G1\n" + "".join(f"c{i},{'AB'[i % 2]},1,2,3\n" for i in range(12)))
    msg = error_line(run("ingest", "--input", path, "--label-key", "cell_type", "--out", tmp_path / "o.h5ad"))
    assert "duplicate feature names" in msg and "G1" in msg and "field 'var_names'" in msg


def test_label_key_absent_lists_columns(pbmc_h5ad, tmp_path):
    msg = error_line(run("ingest", "--input", pbmc_h5ad, "--label-key", "celltype", "--out", tmp_path / "o.h5ad"))
    assert "field 'celltype'" in msg and "bulk_labels" in msg and "louvain" in msg
    msg = error_line(run("ingest", "--input", pbmc_h5ad, "--out", tmp_path / "o.h5ad"))
    assert "field 'label_key'" in msg and "bulk_labels" in msg
    df, labels = counts_frame()
    path = write_csv(tmp_path / "c.csv", df, labels, key="kind")
    msg = error_line(run("ingest", "--input", path, "--label-key", "cell_type", "--out", tmp_path / "o.h5ad"))
    assert "no column 'cell_type'" in msg and "kind" in msg


def test_small_class_named(pbmc_h5ad, tmp_path):
    msg = error_line(run("ingest", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--min-class-size", "10",
                         "--out", tmp_path / "o.h5ad"))
    assert "'CD4+/CD45RA+/CD25- Naive T' (8 cells)" in msg and "field 'bulk_labels'" in msg


def test_missing_and_unreadable_files(tmp_path):
    msg = error_line(run("ingest", "--input", tmp_path / "nope.h5ad", "--label-key", "x", "--out", tmp_path / "o"))
    assert "nope.h5ad" in msg and "file not found" in msg and "field 'input'" in msg
    (tmp_path / "broken.h5ad").write_bytes(b"not hdf5 at all")
    msg = error_line(run("ingest", "--input", tmp_path / "broken.h5ad", "--label-key", "x", "--out", tmp_path / "o"))
    assert "cannot read as h5ad" in msg
    (tmp_path / "cells.xlsx").write_bytes(b"")
    msg = error_line(run("ingest", "--input", tmp_path / "cells.xlsx", "--label-key", "x", "--out", tmp_path / "o"))
    assert "cannot tell the format" in msg
    (tmp_path / "empty.csv").write_text("")
    msg = error_line(run("ingest", "--input", tmp_path / "empty.csv", "--label-key", "x", "--out", tmp_path / "o"))
    assert "empty" in msg


def test_labels_file_problems(tmp_path):
    df, labels = counts_frame()
    path = write_csv(tmp_path / "c.csv", df)
    lab = tmp_path / "labels.csv"
    pd.DataFrame({"cell": df.index[:-2], "label": labels[:-2]}).to_csv(lab, index=False)
    msg = error_line(run("ingest", "--input", path, "--labels", lab, "--out", tmp_path / "o.h5ad"))
    assert "no label for 2 of 12 cells" in msg and "c10" in msg and str(lab) in msg and "field 'cell'" in msg
    msg = error_line(run("ingest", "--input", path, "--labels", tmp_path / "none.csv", "--out", tmp_path / "o.h5ad"))
    assert "labels file not found" in msg and "field 'labels'" in msg
    pd.DataFrame({"cell": df.index, "label": labels}).to_csv(lab, index=False, header=False)
    msg = error_line(run("ingest", "--input", path, "--labels", lab, "--out", tmp_path / "o.h5ad"))
    assert "header" in msg


def test_bad_matrix_and_population_options(pbmc_h5ad, tmp_path):
    msg = error_line(run("ingest", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--matrix", "layer:counts",
                         "--out", tmp_path / "o.h5ad"))
    assert "no layer 'counts'" in msg and "field 'matrix'" in msg
    msg = error_line(run("ingest", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--matrix", "dense",
                         "--out", tmp_path / "o.h5ad"))
    assert "matrix" in msg and "dense" in msg
    msg = error_line(run("ingest", "--input", f"a={pbmc_h5ad}", "--input", f"b={pbmc_h5ad}",
                         "--out", tmp_path / "o.h5ad"))
    assert "LABEL=PATH is for 10x" in msg


def test_negative_counts_in_10x(tmp_path):
    counts = np.full((3, 10), 2)
    counts[1, 4] = -5
    a = write_10x(tmp_path / "a", counts, ["G1", "G2", "G3"], [f"B{i}" for i in range(10)])
    b = write_10x(tmp_path / "b", np.full((3, 10), 1), ["G1", "G2", "G3"], [f"B{i}" for i in range(10)])
    msg = error_line(run("ingest", "--input", f"x={a}", "--input", f"y={b}", "--out", tmp_path / "o.h5ad"))
    assert "negative" in msg and "G2" in msg and "counts are expected" in msg


def test_one_line_error_from_the_console_script(tmp_path):
    """The real entry point: a single stderr line, exit code 2, no traceback."""
    proc = subprocess.run([sys.executable, "-c", "from deepmapper.cli import main; main()", "-q", "ingest",
                           "--input", str(tmp_path / "missing.csv"), "--label-key", "x", "--out",
                           str(tmp_path / "o.h5ad")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "missing.csv" in lines[0], proc.stderr


# -- the dataset file ------------------------------------------------------------------------------

def test_write_read_roundtrip(tmp_dataset):
    path = tmp_dataset("planted")
    ds = io.read_dataset(path)
    again = io.read_dataset(io.write_dataset(ds, path.with_name("copy.h5ad")))
    np.testing.assert_array_equal(np.asarray(ds.X), np.asarray(again.X))
    assert list(again.var_names) == list(ds.var_names) and list(again.obs_names) == list(ds.obs_names)
    assert dict(again.uns["deepmapper"]) == dict(ds.uns["deepmapper"])
    codes, classes = io.labels(again)
    assert classes == ["class_0", "class_1"] and codes.tolist() == io.labels(ds)[0].tolist()
    assert io.features_sha256(again.var_names) == io.features_sha256(list(ds.var_names))
    assert io.file_sha256(path) == io.file_sha256(path)


def test_wrong_schema_version_is_named(tmp_dataset, tmp_path):
    import anndata as ad

    path = tmp_dataset()
    a = ad.read_h5ad(path)
    a.uns["deepmapper"]["schema_version"] = 99
    a.write_h5ad(tmp_path / "future.h5ad")
    with pytest.raises(FormatError, match="schema version 99 but this DeepMapper reads version 1"):
        io.read_dataset(tmp_path / "future.h5ad")
    msg = error_line(run("baseline", "--dataset", tmp_path / "future.h5ad", "--outdir", tmp_path / "b"))
    assert "field 'uns.deepmapper.schema_version'" in msg
    del a.uns["deepmapper"]
    a.write_h5ad(tmp_path / "plain.h5ad")
    with pytest.raises(FormatError, match="not a DeepMapper dataset"):
        io.read_dataset(tmp_path / "plain.h5ad")


def test_failed_ingest_keeps_the_earlier_dataset(pbmc_h5ad, tmp_path):
    out = tmp_path / "dataset.h5ad"
    assert run("ingest", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--out", out).exit_code == 0
    before = io.file_sha256(out)
    error_line(run("ingest", "--input", pbmc_h5ad, "--label-key", "nope", "--out", out))
    error_line(run("ingest", "--input", pbmc_h5ad, "--label-key", "bulk_labels", "--min-class-size", "50",
                   "--out", out))
    assert io.file_sha256(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.h5ad"]  # no temporary files left


def test_build_dataset_keeps_var_and_sorts_classes():
    X = sp.random(20, 4, density=0.5, format="coo", random_state=0, dtype=np.float64)
    var = pd.DataFrame({"is_denovo": [False, True, False, False]})
    ds = io.build_dataset(X, [f"c{i}" for i in range(20)], ["a", "DENOVO_x", "c", "d"],
                          ["z", "y"] * 10, label_key="grp", source="test", var=var)
    assert sp.isspmatrix_csr(ds.X) and ds.X.dtype == np.float32
    assert list(ds.obs["grp"].cat.categories) == ["y", "z"]
    assert ds.var["is_denovo"].tolist() == [False, True, False, False]
    with pytest.raises(InputError, match="duplicate cell ids"):
        io.build_dataset(np.ones((6, 2)), ["a"] * 6, ["g1", "g2"], ["x", "y"] * 3, label_key="k", source="t",
                         min_class_size=3)


def test_hvg_subset_and_intersect(tmp_dataset):
    ds = io.read_dataset(tmp_dataset())
    ds.X = ds.X.toarray()  # scanpy's sparse path compiles numba kernels (~15 s on a fresh machine)
    hvg = io.hvg_subset(ds, 100)
    assert hvg.n_vars == 100 and hvg.uns["deepmapper"]["subset"] == "hvg:100"
    assert set(hvg.var_names) <= set(ds.var_names)
    other = ds[:, list(ds.var_names[::-1][:300])].copy()
    a, b = io.intersect_features(hvg, other)
    shared = [v for v in hvg.var_names if v in set(other.var_names)]
    assert list(a.var_names) == shared == list(b.var_names) and a.n_obs == b.n_obs == 700
    assert io.hvg_subset(ds, 10_000).n_vars == ds.n_vars


# -- issue 21: one clear line for inputs that are not what they seem ----------------------------

def test_backed_anndata_is_one_clear_line(pbmc_h5ad):
    import anndata as ad

    import deepmapper as dm

    backed = ad.read_h5ad(pbmc_h5ad, backed="r")
    with pytest.raises(InputError) as err:
        dm.tl.rank_features(backed, "bulk_labels", passes=1)
    assert "backed" in str(err.value) and "to_memory()" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="backed"):
        io.from_anndata(backed, label_key="bulk_labels")


def test_a_transposed_table_is_named(tmp_path, pbmc):
    """A genes x cells CSV (the layout many tools write) gets 'transpose it', not 'no column'."""
    cells = pbmc[:40, :60]
    df = pd.DataFrame(np.asarray(cells.X), index=cells.obs_names, columns=cells.var_names).T
    path = tmp_path / "genes_by_cells.csv"
    df.to_csv(path)
    line = error_line(run("ingest", "--input", path, "--label-key", "bulk_labels", "--out", tmp_path / "d.h5ad"))
    assert "looks transposed" in line and "transpose it" in line and len(line) < 500
    # with the labels as a row (another common layout) the same
    with_row = pd.concat([df, pd.DataFrame([cells.obs["bulk_labels"].astype(str).to_numpy()], index=["bulk_labels"],
                                           columns=df.columns)])
    with_row.to_csv(path)
    line = error_line(run("ingest", "--input", path, "--label-key", "bulk_labels", "--out", tmp_path / "d.h5ad"))
    assert "looks transposed" in line and "'bulk_labels' as a row" in line
    # the right way round, and bulk-like samples with more genes than samples, are not taken for transposed
    from deepmapper.io._formats import _refuse_transposed

    _refuse_transposed(df.T, "bulk_labels", "x")
    _refuse_transposed(pd.DataFrame(np.ones((20, 60)), index=[f"S{i}" for i in range(20)],
                                       columns=df.index), "condition", "x")


@pytest.mark.parametrize("column, words", [("n_counts", "numeric values"), ("cell_id", "one value per cell")])
def test_a_label_column_that_is_not_groups_is_one_short_line(pbmc, column, words):
    """A numeric or near-unique groupby gave a 12,000-character message listing every value."""
    import deepmapper as dm

    adata = pbmc.copy()
    adata.obs["cell_id"] = [f"id{i}" for i in range(adata.n_obs)]
    with pytest.raises(InputError) as err:
        dm.tl.rank_features(adata, column, passes=1)
    message = str(err.value)
    assert words in message and "pd.cut" in message and len(message) < 400, message


def test_many_small_classes_are_listed_briefly():
    labels = ["A"] * 10 + ["B"] * 10 + [f"s{i}" for i in range(30) for _ in range(2)]
    X = np.ones((len(labels), 3), np.float32)
    with pytest.raises(InputError) as err:
        io.build_dataset(X, [f"c{i}" for i in range(len(labels))], ["g1", "g2", "g3"], labels, label_key="lab",
                         source="x")
    assert "and 25 more" in str(err.value) and len(str(err.value)) < 500
