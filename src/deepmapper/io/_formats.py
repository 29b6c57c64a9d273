"""One reader per input format (h5ad and in-memory AnnData, CSV/TSV, 10x directories, Salmon
``quant.sf``, a labels file), each returning the raw parts ``read_input`` assembles."""
from __future__ import annotations

import csv
import gzip
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepmapper.errors import InputError

from deepmapper.io._common import (
    _NA_VALUES,
    _TABLE_SUFFIXES,
    _as_csr_or_dense,
    _few,
    _open_text,
    _strip_gz,
    check_finite,
    check_non_negative,
    log,
    looks_like_counts,
    missing_label_mask,
    normalize_log1p,
    parse_missing_labels,
)
from deepmapper.io._dataset import build_dataset, design_warnings


@dataclass
class _Raw:
    """What a reader found, before labels, normalisation and validation."""

    X: object
    obs_names: list
    var_names: list
    files: list[Path]
    source: str
    matrix: str
    counts_expected: bool = False
    var: object = None
    labels: object = None              # array, or None when the label column was not found
    label_key: str | None = None
    columns: list = field(default_factory=list)   # where the label column was looked for (for the message)
    has_columns: bool = True                      # False: the format has no columns to hold labels
    samples: object = None             # sample id per cell (--sample-key column, or one per population)
    obs: object = None                 # the input's other cell annotations (design warnings)



# h5ad ---------------------------------------------------------------------------------------

def read_h5ad_file(path: Path, *, field: str = "input"):
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # h5py / anndata raise many kinds for a damaged or foreign file
        detail = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise InputError(f"cannot read as h5ad ({exc.__class__.__name__}: {detail})", where=str(path), field=field,
                         fix="check that the file is a complete AnnData .h5ad.") from None


def _read_h5ad(path: Path, *, label_key, matrix: str, use_labels: bool, sample_key: str | None = None) -> _Raw:
    adata = read_h5ad_file(path)
    X, var_names, var, chosen = choose_matrix(adata, matrix, where=str(path))
    raw = _Raw(X=X, obs_names=list(adata.obs_names), var_names=list(var_names), var=var, files=[path],
               source=str(path), matrix=chosen, label_key=label_key, columns=list(adata.obs.columns),
               obs=adata.obs)
    if use_labels and label_key is not None and label_key in adata.obs.columns:
        raw.labels = adata.obs[label_key].to_numpy()
    if sample_key is not None and sample_key in adata.obs.columns:
        raw.samples = adata.obs[sample_key].to_numpy(dtype=object)     # NaN stays missing (build_dataset)
    return raw


def choose_matrix(adata, matrix: str, *, where: str):
    """(X, var_names, var frame, name of the choice) for matrix = auto | X | raw | layer:<name>."""
    has_raw = adata.raw is not None
    if matrix == "auto":
        chosen = "raw" if has_raw else "X"
        log.info("h5ad matrix: %s (matrix=auto: %s)", chosen,
                 ".raw is present, X is not used" if has_raw else "no .raw, using X")
    else:
        chosen = matrix
        log.info("h5ad matrix: %s (as asked)", chosen)
    if chosen == "raw":
        if not has_raw:
            raise InputError("--matrix raw but the file has no .raw", where=where, field="matrix",
                             fix="use --matrix X or layer:<name> (layers: "
                                 f"{_few(list(adata.layers.keys())) or 'none'}).")
        return adata.raw.X, adata.raw.var_names, adata.raw.var.copy(), "raw"
    if chosen == "X":
        if adata.X is None:
            raise InputError("the file has no X matrix", where=where, field="matrix",
                             fix="use --matrix raw or layer:<name>.")
        return adata.X, adata.var_names, adata.var.copy(), "X"
    if chosen.startswith("layer:"):
        name = chosen.split(":", 1)[1]
        if name not in adata.layers:
            raise InputError(f"no layer '{name}' (layers: {_few(list(adata.layers.keys())) or 'none'})",
                             where=where, field="matrix", fix="use --matrix auto, X, raw or an existing layer.")
        return adata.layers[name], adata.var_names, adata.var.copy(), chosen
    raise InputError(f"unknown matrix '{matrix}'", where="--matrix", field="matrix",
                     fix="use auto, X, raw or layer:<name>.")


def check_in_memory(adata, *, where: str) -> None:
    """Not an AnnData, or a backed one (``backed='r'``): one line, not a traceback from deep inside
    anndata."""
    if not all(hasattr(adata, a) for a in ("obs", "var", "X", "obs_names")):
        raise InputError(f"not an AnnData (got {type(adata).__name__})", where=where, field="adata",
                         fix="pass an anndata.AnnData, e.g. anndata.AnnData(df) for a cells x features "
                             "DataFrame with the labels added to .obs.")
    if getattr(adata, "isbacked", False):
        raise InputError("the AnnData is backed (opened with backed='r'): its matrix is on disk", where=where,
                         field="adata", fix="load it into memory first: adata = adata.to_memory() "
                                            "(or sc.read_h5ad(path) without backed=).")


def from_anndata(adata, *, label_key: str, matrix: str = "auto", normalize: str = "auto",
                 min_class_size: int = 5, modality: str = "rna", source: str = "in-memory AnnData",
                 source_sha256: str = "", sample_key: str | None = None, missing_labels=(), keep=None):
    """A dataset from an AnnData already in memory (tests, notebooks), with the h5ad rules.

    ``missing_labels``: as :func:`read_input`; ``keep``: boolean mask of the cells to analyse (e.g.
    the groups of a comparison), applied first; ``sample_key``: the obs column naming each cell's
    donor or sample."""
    check_in_memory(adata, where=source)
    if label_key not in adata.obs.columns:
        raise InputError(f"no column '{label_key}' (available: {_few(list(adata.obs.columns), 12)})",
                         where=source, field=label_key, fix="pass an obs column holding the labels.")
    if sample_key is not None and sample_key not in adata.obs.columns:
        raise InputError(f"no column '{sample_key}' (available: {_few(list(adata.obs.columns), 12)})",
                         where=source, field="sample_key",
                         fix="pass the obs column naming each cell's donor or sample.")
    X, var_names, var, chosen = choose_matrix(adata, matrix, where=source)
    X = _as_csr_or_dense(X)
    labels = adata.obs[label_key].to_numpy()
    obs_names = adata.obs_names
    obs = adata.obs
    rows = np.ones(adata.n_obs, bool) if keep is None else np.asarray(keep, bool).copy()
    if missing_labels:
        drop = missing_label_mask(labels, missing_labels) & rows
        if drop.all() or drop.sum() == rows.sum():
            raise InputError(f"every cell's label is empty or one of the missing values "
                             f"({', '.join(parse_missing_labels(missing_labels))})", where=source, field=label_key,
                             fix="check missing_labels and the label column.")
        if drop.any():
            log.warning("%s: %d cells left out: their label is empty or one of %s (missing_labels)", source,
                        int(drop.sum()), ", ".join(parse_missing_labels(missing_labels)))
        rows &= ~drop
    if not rows.all():
        index = np.flatnonzero(rows)
        X, labels, obs_names, obs = X[index], labels[index], obs_names[index], obs.iloc[index]
    check_finite(X, var_names, where=source, field=chosen)
    counts = looks_like_counts(X)
    if normalize == "always":
        check_non_negative(X, var_names, where=source, field="normalize", why="normalize=always")
    do_norm = normalize == "always" or (normalize == "auto" and counts)
    totals = None
    if do_norm:
        if sample_key is not None:
            totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
        X = normalize_log1p(X)
    # not astype(str): a missing id (NaN) would become the sample "nan"; build_dataset refuses it
    samples_ = obs[sample_key].to_numpy(dtype=object) if sample_key is not None else None
    out = build_dataset(X, obs_names, var_names, labels, label_key=label_key,
                        source=source, var=var, matrix=chosen, normalized=do_norm, modality=modality,
                        source_sha256=source_sha256, min_class_size=min_class_size, samples=samples_,
                        sample_key=sample_key, totals=totals)
    for line in design_warnings(labels, obs, samples=samples_, sample_key=sample_key, label_key=label_key,
                                where=source):
        log.warning("%s", line)
    return out


# CSV / TSV ------------------------------------------------------------------------------------

def _read_table(path: Path, *, label_key, use_labels: bool, sample_key: str | None = None) -> _Raw:
    import pandas as pd

    sep = _TABLE_SUFFIXES[Path(_strip_gz(path)[0]).suffix]
    with _open_text(path) as fh:
        header = next(csv.reader(fh, delimiter=sep), None)
    if not header:
        raise InputError("the table is empty", where=str(path), field="X",
                         fix="give a header line (cell id, feature names) and one row per cell.")
    if len(header) == 1:                  # a table separated by something else than its name says
        other = next((name for mark, name in (("\t", "tab"), (";", "semicolon"), (",", "comma")) if mark in header[0]
                      and mark != sep), None)
        if other:
            raise InputError(f"the header has one column when split at {'commas' if sep == ',' else 'tabs'}, "
                             f"but it holds {other}s: the file looks {other}-separated", where=str(path), field="X",
                             fix="name a tab-separated table .tsv and a comma-separated one .csv (a semicolon-"
                                 "separated table: save it comma-separated).")
    names = pd.Index([h.strip() for h in header[1:]])
    if names.has_duplicates:
        dup = names[names.duplicated()].unique()
        raise InputError(f"{len(dup)} duplicate feature names, e.g. {_few(dup)}", where=str(path),
                         field="var_names", fix="make column names unique (e.g. append the gene id).")
    # "NA", "None", "null" ... are missing values in feature columns only: as a cell id or label they are text.
    label_raw = [h for h in header[1:] if h.strip() in {label_key, sample_key} - {None}]
    if use_labels and not any(h.strip() == label_key for h in label_raw):
        # before parsing the values: a genes x cells table says so at once
        try:
            first = pd.read_csv(path, sep=sep, usecols=[0], dtype=str, keep_default_na=False).iloc[:, 0]
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
            first = None
        if first is not None:
            _refuse_transposed(pd.DataFrame(index=first.to_numpy(), columns=names), label_key, str(path))
    na = {h: sorted(_NA_VALUES) for h in header[1:] if h not in label_raw}
    # the cell-id column by a name of our own: pandas' to_csv leaves it blank for an unnamed index,
    # and pandas 2.3 then refuses na_values given per column (a TypeError)
    ids = "\x00cell id"
    try:
        df = pd.read_csv(path, sep=sep, header=0, names=[ids, *header[1:]], index_col=0, low_memory=False,
                         keep_default_na=False, na_values=na, dtype={h: str for h in [ids, *label_raw]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot parse the table ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})",
                         where=str(path), field="X",
                         fix=f"give a {'comma' if sep == ',' else 'tab'}-separated table with one row per cell.") \
            from None
    df.columns = [str(c).strip() for c in df.columns]
    # the columns a key may name, text ones (labels, donors) first: what a message lists
    text = [c for c in df.columns if df[c].dtype != bool and not pd.api.types.is_numeric_dtype(df[c])]
    raw = _Raw(X=None, obs_names=[str(i) for i in df.index], var_names=[], files=[path], source=str(path),
               matrix="table", label_key=label_key, columns=text + [c for c in df.columns if c not in set(text)])
    if sample_key is not None and sample_key in df.columns:
        raw.samples = df.pop(sample_key).astype(str).to_numpy(dtype=object)   # not a feature
    if label_key is not None and label_key in df.columns:
        column = df.pop(label_key)
        if use_labels:
            raw.labels = column.to_numpy()   # else the labels come from --labels; the column is not a feature
    elif use_labels:
        # Name the label column before complaining about non-numeric columns: it usually is one.
        _missing_label_column(raw, str(path))
    for col in df.columns if len(df) else []:  # no rows: the empty-matrix check says so
        s = df[col]
        if s.dtype == bool or pd.api.types.is_numeric_dtype(s):
            continue
        conv = pd.to_numeric(s, errors="coerce")
        bad = s[conv.isna() & s.notna()]
        if len(bad):
            _refuse_ragged_row(path, sep, len(header), int(np.flatnonzero(conv.isna() & s.notna())[0]))
        example = f" (e.g. '{bad.iloc[0]}' for cell {bad.index[0]})" if len(bad) else ""
        raise InputError(f"column '{col}' is not numeric{example}", where=str(path), field=col,
                         fix="remove it, or name it with --label-key if it holds the labels.")
    raw.X = df.to_numpy(dtype=np.float64)   # float32 after the overflow check (build_dataset)
    raw.var_names = list(df.columns)
    return raw


def _refuse_ragged_row(path: Path, sep: str, n_fields: int, row: int) -> None:
    """A row with fewer fields than the header shifts its label into a feature column (pandas pads
    the row): say so, instead of calling that column not numeric. Only read on that failure."""
    import itertools

    with _open_text(path) as fh:
        line = next(itertools.islice(csv.reader(fh, delimiter=sep), row + 1, None), None)
    if line is not None and len(line) != n_fields:
        raise InputError(f"line {row + 2} has {len(line)} fields where the header has {n_fields}", where=str(path),
                         field="X", fix="give every row a value for every column (an empty value for a missing one).")


_GENE_LIKE = re.compile(r"ENS[A-Z]*G\d{6,}(\.\d+)?|[A-Z][A-Z0-9.\-]{1,14}|[A-Z][a-z][a-z0-9.\-]{0,13}"
                        r"|[A-Z][a-z]?\d[A-Za-z0-9.\-]{0,12}")
_BARCODE = re.compile(r"[ACGTN]{6,}([-_.]\d+)?")


def _gene_like(names) -> float:
    """Share of ``names`` shaped like gene symbols or Ensembl gene ids (not DNA barcodes)."""
    names = [str(n).strip() for n in names]
    if not names:
        return 0.0
    return sum(bool(_GENE_LIKE.fullmatch(n)) and not _BARCODE.fullmatch(n) for n in names) / len(names)


def _refuse_transposed(df, label_key, where: str) -> None:
    """A genes x cells table (rows named like genes, columns not; or the label column given as a row):
    one line that says to transpose it, instead of 'no column'."""
    rows = [str(i).strip() for i in df.index]
    label_row = label_key is not None and label_key in rows
    if label_row or (len(rows) >= 10 and _gene_like(rows[:2000]) >= 0.8 and _gene_like(df.columns[:2000]) < 0.2):
        raise InputError(f"the table looks transposed: {len(rows)} rows named like "
                         + (f"features (with '{label_key}' as a row)" if label_row else
                            f"genes (e.g. {_few(rows, 3)})")
                         + f" and {df.shape[1]} columns named like cells (e.g. {_few(list(df.columns), 3)})",
                         where=where, field="orientation",
                         fix="give one row per cell and one column per feature: transpose it first, e.g. "
                             "pandas.read_csv(path, index_col=0).T.to_csv(new_path).")


# 10x ------------------------------------------------------------------------------------------

def _read_lines_table(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    except pd.errors.EmptyDataError:
        raise InputError("the file is empty", where=str(path), field="input",
                         fix="check the 10x output (one line per barcode / feature).") from None


def _read_10x_dir(folder: Path, modality: str):
    """(CSR cells x features, barcodes, feature names, var frame, files) of one 10x matrix directory."""
    import pandas as pd
    import scipy.io
    import scipy.sparse as sp

    mtx = _find(folder, "matrix.mtx")
    bc = _find(folder, "barcodes.tsv")
    feat = _find(folder, "features.tsv", "genes.tsv")
    for f, what in ((mtx, "matrix.mtx[.gz]"), (bc, "barcodes.tsv[.gz]"), (feat, "features.tsv[.gz] or genes.tsv")):
        if f is None:
            raise InputError(f"{what} is missing", where=str(folder), field="input",
                             fix="a 10x directory holds matrix.mtx, barcodes.tsv and features.tsv (each may be .gz).")
    try:
        with (gzip.open(mtx, "rb") if _strip_gz(mtx)[1] else open(mtx, "rb")) as fh:
            m = scipy.io.mmread(fh)
    except Exception as exc:  # scipy raises ValueError/OSError/... for a damaged file
        raise InputError(f"cannot read the Matrix Market file ({exc.__class__.__name__})", where=str(mtx),
                         field="matrix.mtx", fix="check that the file is complete (re-export it).") from None
    m = sp.csr_matrix(m) if not sp.issparse(m) else m
    barcodes = _read_lines_table(bc).iloc[:, 0].tolist()
    ft = _read_lines_table(feat)
    if m.shape != (len(ft), len(barcodes)):
        raise InputError(f"matrix.mtx is {m.shape[0]} features x {m.shape[1]} barcodes but there are "
                         f"{len(ft)} features and {len(barcodes)} barcodes", where=str(folder), field="matrix.mtx",
                         fix="use the matrix, barcodes and features files of one 10x run.")
    ids = ft.iloc[:, 0].astype(str)
    symbols = ft.iloc[:, 1].astype(str) if ft.shape[1] > 1 else ids
    ftype = ft.iloc[:, 2].astype(str) if ft.shape[1] > 2 else pd.Series(["Gene Expression"] * len(ft))
    X = m.T.tocsr().astype(np.float32)
    keep = np.ones(len(ft), dtype=bool)
    if modality == "rna" and (ftype == "Gene Expression").any() and not (ftype == "Gene Expression").all():
        keep = (ftype == "Gene Expression").to_numpy()
        log.info("%s: keeping %d 'Gene Expression' features, dropping %d of other types (%s)", folder,
                 keep.sum(), (~keep).sum(), _few(sorted(set(ftype[~keep]))))
        X = X[:, keep]
    ids, symbols, ftype = ids[keep].to_numpy(), symbols[keep].to_numpy(), ftype[keep].to_numpy()
    # Gene symbols read best, but 10x lists some symbols twice: those get their gene id appended.
    dup = pd.Series(symbols).duplicated(keep=False).to_numpy()
    names = np.where(dup, np.char.add(np.char.add(symbols.astype(str), "_"), ids.astype(str)), symbols)
    if dup.any():
        log.info("%s: %d features share a gene symbol; named SYMBOL_GENEID", folder, int(dup.sum()))
    var = pd.DataFrame({"gene_id": ids, "feature_type": ftype}, index=pd.Index(names.astype(str)))
    files = [mtx, bc, feat]
    return X, barcodes, list(names.astype(str)), var, files


def _read_10x_populations(items, modality: str, sample_names: list[str] | None = None) -> _Raw:
    """One 10x directory per labelled population; ``sample_names``: the sample id of each (a samplesheet's
    ``sample`` column), else the directory's name when those are unique, else the label (label-N)."""
    import scipy.sparse as sp

    parts = []
    for label, path in items:
        if not path.is_dir():
            raise InputError("expected a 10x matrix directory", where=str(path), field="input",
                             fix="give LABEL=DIR with matrix.mtx, barcodes.tsv and features.tsv inside.")
        parts.append((label, path, *_read_10x_dir(path, modality)))
    shared = _shared_names([p[4] for p in parts], [f"{p[0]}={p[1]}" for p in parts])
    label_counts = {}
    for p in parts:
        label_counts[p[0]] = label_counts.get(p[0], 0) + 1
    seen: dict[str, int] = {}
    blocks, obs, labels, files, samples = [], [], [], [], []
    # a population's sample id: its directory's name when those are unique (a samplesheet's rows
    # usually point at one folder per sample), else the cell-id prefix (label, or label-N)
    dir_names = [p[1].name for p in parts]
    by_dir = len(set(dir_names)) == len(dir_names) and all(dir_names)
    for k, (label, path, X, barcodes, features, var, fl) in enumerate(parts):
        seen[label] = seen.get(label, 0) + 1
        prefix = label if label_counts[label] == 1 else f"{label}-{seen[label]}"
        col = {n: i for i, n in enumerate(features)}
        blocks.append(X[:, [col[n] for n in shared]])
        obs += [f"{prefix}:{b}" for b in barcodes]
        labels += [label] * X.shape[0]
        samples += [sample_names[k] if sample_names else path.name if by_dir else prefix] * X.shape[0]
        files += fl
    var = parts[0][5].loc[shared].copy()
    return _Raw(X=sp.vstack(blocks, format="csr"), obs_names=obs, var_names=shared, var=var, files=files,
                source="; ".join(f"{p[0]}={p[1]}" for p in parts), matrix="counts", counts_expected=True,
                labels=np.asarray(labels, dtype=object), samples=np.asarray(samples, dtype=object))


def _shared_names(name_lists: list[list[str]], where: list[str]) -> list[str]:
    """Names present in every list, in the order of the first; logs what each list loses."""
    common = set(name_lists[0]).intersection(*map(set, name_lists[1:]))
    shared = [n for n in name_lists[0] if n in common]
    if not shared:
        raise InputError("the inputs share no feature names", where="; ".join(where), field="var_names",
                         fix="use inputs quantified against the same reference (same gene ids / names).")
    for names, w in zip(name_lists, where):
        if len(names) > len(shared):
            log.info("%s: %d of %d features are not shared by every input and are dropped", w,
                     len(names) - len(shared), len(names))
    return shared


# Salmon -----------------------------------------------------------------------------------------

def read_quant_sf(path: str | os.PathLike, column: str = "NumReads") -> tuple[list[str], np.ndarray]:
    """Names and one numeric column of a Salmon ``quant.sf`` (the one reader: ``LABEL=quant.sf`` inputs
    and the de-novo table). Every value must be a finite non-negative number and names unique."""
    path = Path(path)
    if not path.is_file():
        raise InputError("Salmon quant file not found", where=str(path), field="quant.sf",
                         fix="run 'deepmapper denovo quant' for this sample (it writes ID/quant.sf).")
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if "Name" not in header or column not in header:
            raise InputError(f"not a Salmon quant.sf (header {header[:5]})", where=str(path), field=column,
                             fix="give the quant.sf written by salmon quant.")
        i_name, i_val = header.index("Name"), header.index(column)
        names, values = [], []
        for lineno, line in enumerate(fh, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(header):
                raise InputError(f"line {lineno} has {len(parts)} fields, expected {len(header)}", where=str(path),
                                 field=column, fix="the file is truncated; re-run the quant step.")
            try:
                v = float(parts[i_val])
            except ValueError:
                raise InputError(f"line {lineno}: {parts[i_val]!r} is not a number", where=str(path),
                                 field=column) from None
            if not math.isfinite(v) or v < 0:
                raise InputError(f"line {lineno}: {v} is not a finite non-negative count", where=str(path),
                                 field=column)
            names.append(parts[i_name])
            values.append(v)
    if len(set(names)) != len(names):
        seen, dup = set(), []
        for n in names:
            (dup.append(n) if n in seen else seen.add(n))
        raise InputError(f"{len(set(dup))} duplicate transcript names, e.g. {_few(sorted(set(dup)))}",
                         where=str(path), field="Name", fix="quantify against an index with unique transcript names.")
    return names, np.asarray(values, dtype=np.float64)


def _read_salmon(items, sample_names: list[str] | None = None) -> _Raw:
    """One quant.sf per sample; ``sample_names``: the sample ids (a samplesheet's), else each file's folder."""
    import pandas as pd

    cols, names, sample_ids, labels, files = [], [], [], [], []
    for label, path in items:
        qf = path / "quant.sf" if path.is_dir() else path
        if not qf.is_file():
            raise InputError("no quant.sf here", where=str(path), field="input", fix="give the path of quant.sf.")
        qnames, qvals = read_quant_sf(qf)
        cols.append(pd.Series(qvals, index=qnames))
        names.append(qnames)
        sample_ids.append(qf.parent.name if qf.name == "quant.sf" and qf.parent.name else qf.stem)
        labels.append(label)
        files.append(qf)
    # sample ids must be unique: a repeated folder name gets its position appended
    counts: dict[str, int] = {}
    for s in sample_ids:
        counts[s] = counts.get(s, 0) + 1
    sample_ids = [s if counts[s] == 1 else f"{s}-{i + 1}" for i, s in enumerate(sample_ids)]
    if sample_names:
        sample_ids = list(sample_names)
    where = [f"{lab}={f}" if lab else str(f) for lab, f in zip(labels, files)]
    shared = _shared_names(names, where)
    X = np.vstack([c.loc[shared].to_numpy() for c in cols]).astype(np.float32)
    return _Raw(X=X, obs_names=sample_ids, var_names=shared, files=files, source="; ".join(where),
                matrix="NumReads", counts_expected=True,
                labels=np.asarray(labels, dtype=object) if all(labels) else None)


# labels file --------------------------------------------------------------------------------------

def _read_labels_file(path: Path, obs_names: list, label_key: str | None):
    """(labels aligned to obs_names, label column name) from a two-column file with a header."""
    import pandas as pd

    if not path.is_file():
        raise InputError("labels file not found", where=str(path), field="labels",
                         fix="check the path given to --labels.")
    with _open_text(path) as fh:
        first = fh.readline()
    sep = "\t" if "\t" in first else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse the labels file ({exc.__class__.__name__})", where=str(path),
                         field="labels", fix="give two columns, cell id and label, with a header line.") from None
    if df.shape[1] < 2:
        raise InputError(f"the labels file has {df.shape[1]} column(s), expected 2 (cell id, label)",
                         where=str(path), field="labels",
                         fix="give two comma- or tab-separated columns with a header, e.g. 'cell,label'.")
    ids = df.iloc[:, 0].astype(str).str.strip()
    obs_set = set(map(str, obs_names))
    if str(df.columns[0]).strip() in obs_set:
        raise InputError("the first line looks like data, not a header", where=str(path), field="header",
                         fix="add a header line, e.g. 'cell,label'.")
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()
        raise InputError(f"{len(dup)} cell ids are listed more than once, e.g. {_few(dup)}", where=str(path),
                         field=str(df.columns[0]), fix="give each cell one label.")
    mapping = pd.Series(df.iloc[:, 1].astype(str).str.strip().to_numpy(), index=ids.to_numpy())
    missing = [o for o in map(str, obs_names) if o not in mapping.index]
    if missing:
        raise InputError(f"no label for {len(missing)} of {len(obs_names)} cells (e.g. {_few(missing, 3)})",
                         where=str(path), field=str(df.columns[0]),
                         fix="add a row (cell id, label) for every cell of the input, with the same cell ids.")
    extra = len(mapping) - len(obs_set)
    if extra > 0:
        log.info("%s: %d labelled ids are not cells of the input and are ignored", path, extra)
    return mapping.loc[[str(o) for o in obs_names]].to_numpy(dtype=object), \
        (label_key or str(df.columns[1]).strip() or "label")


def _find(folder: Path, *names: str) -> Path | None:
    for n in names:
        for cand in (folder / n, folder / f"{n}.gz"):
            if cand.is_file():
                return cand
    return None


def _missing_label_column(raw: _Raw, spec: str) -> None:
    cols = [str(c) for c in raw.columns]
    if not raw.has_columns:
        raise InputError("the input carries no labels", where=spec, field="labels",
                         fix="give --labels FILE (cell or sample id, label), or one LABEL=PATH per population.")
    if raw.label_key is None:
        raise InputError("no label column given", where=spec, field="label_key",
                         fix=f"name it with --label-key (available: {_few(cols, 12) or 'none'}), "
                             "or give a --labels file (cell id, label).")
    raise InputError(f"no column '{raw.label_key}' (available: {_few(cols, 12) or 'none'})", where=spec,
                     field=raw.label_key, fix="pass --label-key with one of the available columns, or a --labels "
                                              "file (cell id, label).")


def _drop_missing_labels(raw: _Raw, missing_labels) -> None:
    """Leave out the cells whose label is one of ``missing_labels`` (the user asked for it)."""
    values = set(parse_missing_labels(missing_labels))
    drop = missing_label_mask(raw.labels, values)
    if not drop.any():
        return
    if drop.all():
        raise InputError(f"every cell's label is one of the missing values ({', '.join(sorted(values))})",
                         where=raw.source, field=raw.label_key or "labels",
                         fix="check --missing-labels and the label column.")
    keep = np.flatnonzero(~drop)
    log.warning("%s: %d cells left out: their label is empty or one of %s (--missing-labels)", raw.source,
                int(drop.sum()), ", ".join(sorted(values)))
    raw.X = _as_csr_or_dense(raw.X)[keep]
    raw.obs_names = [raw.obs_names[i] for i in keep]
    raw.labels = np.asarray(raw.labels, dtype=object)[keep]
    if raw.samples is not None:
        raw.samples = np.asarray(raw.samples, dtype=object)[keep]
    if raw.obs is not None:
        raw.obs = raw.obs.iloc[keep]
