"""Inputs as users' tools write them, and broken in the ways files break: each is read, or refused
in one line naming the file, the field and the fix (exit 2), never a traceback, never blamed on
--outdir. Found by an audit of the command line (session 12)."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from deepmapper import io
from deepmapper.errors import ConfigError, InputError
from test_io import counts_frame, error_line, run, write_10x, write_csv


def _frame(tmp_path):
    df, labels = counts_frame()
    return df.assign(cell_type=labels)


def test_a_table_written_by_pandas_with_an_unnamed_index_is_read(tmp_path):
    """``df.to_csv(path)`` leaves the first header cell blank for an unnamed index (pandas 2.3 then
    refused per-column missing values with a TypeError)."""
    df = _frame(tmp_path)
    df.index.name = None
    for name, sep in (("cells.csv", ","), ("cells.tsv", "\t")):
        df.to_csv(tmp_path / name, sep=sep)
        ds = io.read_input(tmp_path / name, label_key="cell_type")
        assert list(ds.obs_names) == list(df.index) and list(ds.var_names) == [f"G{j}" for j in range(6)]


@pytest.mark.parametrize("case, words", [
    ("latin1", ["not UTF-8 text (byte 0xe9", "save it as UTF-8"]),
    ("gzip_named_csv", ["gzip-compressed, but its name does not end in .gz"]),
    ("not_gzip", ["its name ends in .gz but it is not gzip-compressed"]),
    ("truncated_gzip", ["cut short or damaged", "gzip -t"]),
])
def test_the_bytes_of_an_input_are_one_line_naming_it(tmp_path, case, words):
    df = _frame(tmp_path)
    text = df.to_csv().encode()
    if case == "latin1":
        path, data = tmp_path / "cells.csv", text.replace(b"G0", "G\xe9".encode("latin-1"))
    elif case == "gzip_named_csv":
        path, data = tmp_path / "cells.csv", gzip.compress(text)
    elif case == "not_gzip":
        path, data = tmp_path / "cells.csv.gz", text
    else:
        path, data = tmp_path / "cells.csv.gz", gzip.compress(text * 50)[:200]
    path.write_bytes(data)
    msg = error_line(run("ingest", "--input", path, "--label-key", "cell_type", "--out", tmp_path / "o.h5ad"))
    assert str(path) in msg and "field 'input'" in msg and "--outdir" not in msg, msg
    assert all(w in msg for w in words), msg
    assert not (tmp_path / "o.h5ad").exists()


def test_a_labels_file_and_a_config_that_are_not_utf8_name_themselves(tmp_path):
    df, labels = counts_frame()
    matrix = write_csv(tmp_path / "cells.csv", df)
    lab = tmp_path / "labels.csv"
    lab.write_bytes(("cell,group\n" + "".join(f"{c},{'é' if g == 'A' else g}\n" for c, g in zip(df.index, labels)))
                    .encode("latin-1"))
    msg = error_line(run("ingest", "--input", matrix, "--labels", lab, "--out", tmp_path / "o.h5ad"))
    assert str(lab) in msg and "field 'labels'" in msg and "not UTF-8" in msg, msg
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("run:\n  epochs: 3\n", encoding="utf-16")
    from deepmapper.config import load_yaml

    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_yaml(cfg)


def test_a_table_split_at_the_wrong_mark_says_so(tmp_path):
    df = _frame(tmp_path)
    for name, sep, other in (("tabs.csv", "\t", "tab"), ("semi.csv", ";", "semicolon"), ("commas.tsv", ",", "comma")):
        df.to_csv(tmp_path / name, sep=sep)
        msg = error_line(run("ingest", "--input", tmp_path / name, "--label-key", "cell_type",
                             "--out", tmp_path / "o.h5ad"))
        assert f"looks {other}-separated" in msg and "field 'X'" in msg, msg


def test_sample_key_messages_of_a_table(tmp_path):
    df = _frame(tmp_path)
    df.to_csv(tmp_path / "cells.csv")
    msg = error_line(run("ingest", "--input", tmp_path / "cells.csv", "--label-key", "cell_type",
                         "--sample-key", "donor", "--out", tmp_path / "o.h5ad"))
    assert "no column 'donor' (available: cell_type, G0" in msg, msg      # text columns first, never "none"
    msg = error_line(run("ingest", "--input", tmp_path / "cells.csv", "--label-key", "cell_type",
                         "--sample-key", "cell_type", "--out", tmp_path / "o.h5ad"))
    assert "the sample key and the label column are both 'cell_type'" in msg, msg


@pytest.mark.parametrize("option, value", [("--test-fraction", "nan"), ("--learning-rate", "inf"),
                                           ("--dropout", "nan"), ("--interaction-q", "nan")])
def test_a_setting_that_is_not_a_finite_number_is_refused_before_anything_runs(tmp_path, option, value):
    df = _frame(tmp_path)
    df.to_csv(tmp_path / "cells.csv")
    msg = error_line(run("run", "--input", tmp_path / "cells.csv", "--label-key", "cell_type", option, value,
                         "--outdir", tmp_path / "out"))
    assert f"must be a finite number (got {value})" in msg and option in msg, msg
    assert not (tmp_path / "out").exists()


def test_the_api_refuses_what_is_not_an_anndata_or_not_numbers(tmp_path):
    import anndata as ad

    import deepmapper as dm

    df = _frame(tmp_path)
    with pytest.raises(InputError, match="not an AnnData \\(got DataFrame\\)"):
        dm.tl.rank_features(df, "cell_type", passes=1)
    adata = ad.AnnData(df.drop(columns="cell_type").to_numpy().astype(object),
                       obs=pd.DataFrame({"cell_type": df["cell_type"].to_numpy()}, index=df.index.astype(str)))
    with pytest.raises(InputError, match="not numeric \\(dtype object\\)"):
        dm.tl.rank_features(adata, "cell_type", passes=1)


def test_run_reads_the_pipelines_population_samplesheet(tmp_path, monkeypatch):
    """`--input samplesheet.csv` (sample,path,label) reads as the same LABEL=DIR inputs, the sample
    ids from the sheet, relative paths from the launch directory or beside the sheet (as the pipeline)."""
    rng = np.random.default_rng(0)
    genes = [f"G{j}" for j in range(8)]
    dirs = {}
    for sid, label in [("s1", "A"), ("s2", "B"), ("s3", "A"), ("s4", "B"), ("s5", "A"), ("s6", "B")]:
        dirs[sid] = (label, tmp_path / "data" / sid)
        write_10x(dirs[sid][1], rng.poisson(3, (8, 6)), genes, [f"{sid}_c{i}" for i in range(6)])
    sheet = tmp_path / "data" / "sheet.csv"
    sheet.write_text("sample,path,label\n" + "".join(f"{s},{s},{lab}\n" for s, (lab, _) in dirs.items()))
    monkeypatch.chdir(tmp_path)                     # the paths are relative to the sheet, not to here
    from_sheet = io.read_input(sheet, label_key=None, min_class_size=3)
    direct = io.read_input([f"{lab}={d}" for lab, d in dirs.values()], label_key=None, min_class_size=3,
                           sample_names=list(dirs))
    assert list(from_sheet.obs_names) == list(direct.obs_names)
    assert (from_sheet.obs["sample"].astype(str) == direct.obs["sample"].astype(str)).all()
    assert np.array_equal(np.asarray(from_sheet.X.todense()), np.asarray(direct.X.todense()))
    bad = tmp_path / "bad.csv"
    bad.write_text("sample,path,label\ns1,nowhere,A\ns2,data/s2,B\n")
    msg = error_line(run("ingest", "--input", bad, "--out", tmp_path / "o.h5ad"))
    assert "line 2: the path of sample 's1' (nowhere)" in msg and "field 'path'" in msg, msg
    reads = tmp_path / "reads.csv"
    reads.write_text("sample,fastq_1,fastq_2,label\ns1,a.fq.gz,,A\n")
    assert "deepmapper denovo run" in error_line(run("ingest", "--input", reads, "--out", tmp_path / "o.h5ad"))


def test_a_row_short_of_fields_is_named_not_its_shifted_label(tmp_path):
    """pandas pads a short row, which moves its label into a feature column: the line is named."""
    df = _frame(tmp_path)
    lines = df.to_csv().splitlines()
    lines[5] = lines[5].rsplit(",", 2)[0] + "," + lines[5].rsplit(",", 1)[1]       # one value of line 6 dropped
    (tmp_path / "ragged.csv").write_text("\n".join(lines) + "\n")
    msg = error_line(run("ingest", "--input", tmp_path / "ragged.csv", "--label-key", "cell_type",
                         "--out", tmp_path / "o.h5ad"))
    assert "line 6 has 7 fields where the header has 8" in msg, msg
