"""Reading every input format into one validated ``dataset.h5ad``, and reading it back.

Formats (detected from the path):

- ``.h5ad``: AnnData; the matrix is ``.raw`` when present, else ``X`` (``matrix="auto"``),
  or ``X`` / ``raw`` / ``layer:<name>``;
- a 10x Genomics matrix directory (``matrix.mtx[.gz]``, ``barcodes.tsv[.gz]``,
  ``features.tsv[.gz]`` or ``genes.tsv[.gz]``), labelled by a ``--labels`` file;
- several 10x directories as ``LABEL=DIR``, one per labelled population, merged on
  the genes they share (label column: ``label_key`` or ``population``);
- CSV / TSV (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``): cells x features,
  first column the cell id, labels in the column ``label_key`` or in a ``--labels`` file;
- Salmon ``quant.sf`` files as ``LABEL=path/quant.sf`` (one sample each, ``NumReads``),
  merged on the transcripts they share.

Every reader ends in :func:`build_dataset`, the one constructor (also used by the
de-novo front end), which validates and records provenance in
``uns["deepmapper"]``. Every problem is one :class:`~deepmapper.errors.InputError`
naming the file, the field and the fix. A sparse input stays sparse (CSR) all the way.

Normalisation (``normalize``): ``auto`` applies ``normalize_total(1e4)`` + ``log1p``
only when the matrix looks like counts (non-negative and integer-valued, or a
count format such as 10x or Salmon); ``always`` applies it (negative values are an
error); ``never`` uses the matrix as it is.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from deepmapper._utils.atomic import atomic_path
from deepmapper.errors import FormatError, InputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TARGET_SUM = 1e4
DENOVO_PREFIX = "DENOVO_"
POPULATION_KEY = "population"
# obs column of the sample id recorded for population inputs (one sample per directory)
SAMPLE_KEY = "sample"
# obs column of each cell's count total before normalize_total (only with a sample key): the counts
# are expm1(X) * total / TARGET_SUM, which the pseudobulk baseline sums per sample
TOTALS_KEY = "deepmapper_total_counts"
_CHUNK = 1 << 24  # values per chunk when scanning large matrices (bounds temporary memory)
_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
# The stratified split needs one held-out, one validation and one training cell per class.
MIN_CELLS_PER_CLASS = 3
# A split by sample needs as many samples per label, for the same reason (engine.split).
MIN_SAMPLES_PER_LABEL = 3
# pandas' default missing-value strings: they mean "missing" in feature columns, not in ids or labels.
_NA_VALUES = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


# -- small helpers ----------------------------------------------------------------------

def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def features_sha256(var_names: Iterable) -> str:
    """Identity of an ordered feature list (names joined by newlines)."""
    return hashlib.sha256("\n".join(str(v) for v in var_names).encode("utf-8")).hexdigest()


def _sources_sha256(files: Sequence[Path]) -> str:
    """One digest for several files: a single file's own digest, else a digest of (name, digest) lines."""
    if len(files) == 1:
        return file_sha256(files[0])
    lines = sorted(f"{Path(f).name}\t{file_sha256(f)}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _few(items, n: int = 5) -> str:
    items = [str(i) for i in items]
    more = f" ... ({len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _strip_gz(path: Path) -> tuple[str, bool]:
    name = path.name.lower()
    return (name[:-3], True) if name.endswith(".gz") else (name, False)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8", newline="") if _strip_gz(path)[1] \
        else open(path, encoding="utf-8", newline="")


def _as_csr_or_dense(X):
    """CSR for any sparse input (CSC, COO, sparse arrays), a numpy array otherwise; never densifies."""
    import scipy.sparse as sp

    if sp.issparse(X):
        return X if isinstance(X, sp.csr_matrix) else sp.csr_matrix(X)
    return np.asarray(X)


def _values(X) -> np.ndarray:
    """The stored values of a dense or sparse matrix, as a flat array (no copy for CSR/dense)."""
    import scipy.sparse as sp

    if sp.issparse(X):
        return X.data
    return np.asarray(X).reshape(-1)


def _chunks(values: np.ndarray):
    for start in range(0, values.size, _CHUNK):
        yield start, values[start:start + _CHUNK]


def looks_like_counts(X) -> bool:
    """Non-negative and integer-valued (checked on every stored value, in chunks)."""
    for _, v in _chunks(_values(X)):
        if v.size and (v.min() < 0 or not np.array_equal(v, np.rint(v))):
            return False
    return True


def _col_of(X, flat_positions: np.ndarray) -> np.ndarray:
    """Column (feature) index of stored values given their flat positions in _values(X)."""
    import scipy.sparse as sp

    if sp.issparse(X):  # callers hand CSR (see _as_csr_or_dense)
        return X.indices[flat_positions]
    return flat_positions % X.shape[1]


def _bad_value_report(X, var_names, test) -> tuple[int, str]:
    """(count, 'FEAT (n), ...') of the stored values where ``test(values)`` is true."""
    total, cols = 0, []
    for start, v in _chunks(_values(X)):
        pos = np.flatnonzero(test(v))
        if pos.size:
            total += pos.size
            cols.append(_col_of(X, pos + start))
    if not total:
        return 0, ""
    counts = np.bincount(np.concatenate(cols), minlength=len(var_names))
    order = np.argsort(-counts, kind="stable")
    hit = [i for i in order if counts[i] > 0]
    listed = ", ".join(f"{var_names[i]} ({counts[i]})" for i in hit[:5])
    if len(hit) > 5:
        listed += f" and {len(hit) - 5} more features"
    return total, listed


def check_finite(X, var_names, *, where: str, field: str = "X") -> None:
    X = _as_csr_or_dense(X)
    n, listed = _bad_value_report(X, list(var_names), lambda v: ~np.isfinite(v))
    if n:
        raise InputError(f"{n} values are NaN or infinite, in feature(s) {listed}", where=where, field=field,
                         fix="replace missing values (e.g. with 0) or drop those features before ingest.")


def check_non_negative(X, var_names, *, where: str, field: str, why: str) -> None:
    X = _as_csr_or_dense(X)
    n, listed = _bad_value_report(X, list(var_names), lambda v: v < 0)
    if n:
        raise InputError(f"{n} negative values, in feature(s) {listed}, but counts are expected ({why})",
                         where=where, field=field,
                         fix="give raw counts (e.g. --matrix layer:counts), or --normalize never for a matrix "
                             "that is already transformed.")


def normalize_log1p(X, target_sum: float = TARGET_SUM):
    """``normalize_total(target_sum)`` then ``log1p`` (as scanpy), float32; CSR stays CSR.

    Cells with zero total stay zero.
    """
    import scipy.sparse as sp

    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        X.data *= np.repeat(scale, np.diff(X.indptr)).astype(np.float32)
        np.log1p(X.data, out=X.data)
        return X
    X = np.asarray(X, dtype=np.float64)
    totals = X.sum(axis=1)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(X * scale[:, None]).astype(np.float32)


def _strip_labels(lab, *, where: str, label_key: str):
    """Labels without leading/trailing whitespace; a warning names the classes this merges."""
    stripped = lab.str.strip()
    changed = lab != stripped
    if changed.any():
        variants = lab.groupby(stripped.to_numpy()).nunique()
        merged = sorted(variants.index[variants > 1])
        if merged:
            log.warning("%s: labels in '%s' that differ only in leading/trailing spaces are one class: %s", where,
                        label_key, _few([f"'{m}'" for m in merged]))
        else:
            log.info("%s: stripped leading/trailing spaces from %d labels in '%s'", where, int(changed.sum()),
                     label_key)
    return stripped


def check_float32_range(X, var_names, *, where: str, field: str = "X") -> None:
    """Values beyond float32 (about 3.4e38) would become infinite: report them as overflow."""
    X = _as_csr_or_dense(X)
    if _values(X).dtype.itemsize <= 4 or not np.issubdtype(_values(X).dtype, np.floating):
        return
    limit = float(np.finfo(np.float32).max)
    n, listed = _bad_value_report(X, list(var_names), lambda v: np.isfinite(v) & (np.abs(v) > limit))
    if n:
        big = max(float(np.abs(v[np.isfinite(v)]).max()) for _, v in _chunks(_values(X)) if v.size)
        raise InputError(f"{n} values overflow 32-bit floats (largest magnitude {big:.3g} > {limit:.3g}), in "
                         f"feature(s) {listed}", where=where, field=field,
                         fix="rescale these values (e.g. log-transform or divide) before ingest.")


# -- the one constructor ------------------------------------------------------------------

def build_dataset(X, obs_names, var_names, labels, *, label_key: str, source: str, var=None,
                  matrix: str = "X", normalized: bool = False, modality: str = "rna",
                  source_sha256: str = "", min_class_size: int = 5, where: str | None = None,
                  samples=None, sample_key: str | None = None, totals=None):
    """Validate and assemble the dataset AnnData every reader (and the de-novo table) returns.

    ``X`` (cells x features; dense or any scipy sparse) becomes float32, sparse as CSR
    (never densified); ``labels`` become a categorical ``obs[label_key]`` with sorted
    classes; ``var`` (optional frame, e.g. an ``is_denovo`` column) is aligned to
    ``var_names``; ``var["is_denovo"]`` is added from the ``DENOVO_`` prefix when absent.
    ``samples`` (one id per cell) become ``obs[sample_key]`` and ``uns["deepmapper"]["sample_key"]``
    (see :func:`samples`); ``totals`` (count totals before normalisation) ``obs[TOTALS_KEY]``.
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from deepmapper._utils.versions import __version__

    where = where or source
    obs_names = pd.Index([str(o) for o in obs_names])
    var_names = pd.Index([str(v) for v in var_names])
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise InputError(f"the matrix has {len(shape)} dimensions, expected 2 (cells x features)", where=where,
                         field="X", fix="give a cells x features matrix.")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"the matrix is empty ({shape[0]} cells x {shape[1]} features)", where=where, field="X",
                         fix="check that the input holds data (and, for CSV, feature columns besides the labels).")
    if shape != (len(obs_names), len(var_names)):
        raise InputError(f"matrix shape {shape} does not match {len(obs_names)} cell ids x {len(var_names)} "
                         "feature names", where=where, field="X", fix="check the cell and feature lists.")
    if var_names.has_duplicates:
        dup = var_names[var_names.duplicated()].unique()
        raise InputError(f"{len(dup)} duplicate feature names, e.g. {_few(dup)}", where=where, field="var_names",
                         fix="make feature names unique (e.g. append the gene id) before ingest.")
    if obs_names.has_duplicates:
        dup = obs_names[obs_names.duplicated()].unique()
        raise InputError(f"{len(dup)} duplicate cell ids, e.g. {_few(dup)}", where=where, field="obs_names",
                         fix="make cell ids unique (e.g. prefix the sample name).")

    if sp.issparse(X):
        check_float32_range(X, var_names, where=where, field=matrix)
        X = sp.csr_matrix(X, dtype=np.float32)  # may share the caller's arrays: fix a copy, never the original
        if not X.has_canonical_format or not np.all(X.data != 0):
            X = X.copy()
            X.sum_duplicates()
            X.eliminate_zeros()
    else:
        check_float32_range(X, var_names, where=where, field=matrix)
        X = np.ascontiguousarray(np.asarray(X), dtype=np.float32)
    check_finite(X, var_names, where=where, field=matrix)

    lab = pd.Series(np.asarray(labels, dtype=object), index=obs_names)
    if len(lab) != len(obs_names):
        raise InputError(f"{len(lab)} labels for {len(obs_names)} cells", where=where, field=label_key,
                         fix="give one label per cell.")
    missing = lab.isna() | (lab.astype(str).str.strip() == "")
    if missing.any():
        raise InputError(f"{int(missing.sum())} cells have no label (e.g. {_few(lab.index[missing], 3)})",
                         where=where, field=label_key, fix="fill in their labels or drop those cells.")
    lab = _strip_labels(lab.astype(str), where=where, label_key=label_key)
    sizes = lab.value_counts()
    classes = sorted(sizes.index)
    if len(classes) < 2:
        raise InputError(f"only one class ('{classes[0]}') in '{label_key}'; a comparison needs at least two",
                         where=where, field=label_key,
                         fix="choose a label column with two or more groups (--label-key), or add the other group.")
    need = max(MIN_CELLS_PER_CLASS, int(min_class_size))
    small = sizes[sizes < need].sort_values()
    if len(small):
        listed = ", ".join(f"'{k}' ({v} cells)" for k, v in small.items())
        if int(small.min()) < MIN_CELLS_PER_CLASS:
            fix = (f"add cells to these classes, merge them with related classes, or drop them: the stratified "
                   f"split needs at least {MIN_CELLS_PER_CLASS} per class (held-out, validation, training), "
                   "whatever --min-class-size says.")
        else:
            fix = (f"merge or drop these classes, or lower --min-class-size to {int(small.min())} "
                   f"(the smallest allowed is {MIN_CELLS_PER_CLASS}).")
        raise InputError(f"class(es) with fewer than {need} cells: {listed}", where=where, field=label_key, fix=fix)

    obs = pd.DataFrame({label_key: pd.Categorical(lab.to_numpy(), categories=classes)}, index=obs_names)
    if var is None:
        var = pd.DataFrame(index=var_names)
    else:
        var = pd.DataFrame(var).copy()
        if len(var) != len(var_names):
            raise InputError(f"var frame has {len(var)} rows for {len(var_names)} features", where=where,
                             field="var", fix="give one row per feature.")
        var.index = var_names
    if "is_denovo" not in var.columns:
        var["is_denovo"] = var_names.str.startswith(DENOVO_PREFIX)
    var["is_denovo"] = var["is_denovo"].astype(bool)

    if samples is not None:
        obs[sample_key] = _sample_column(samples, len(obs_names), where=where, sample_key=str(sample_key),
                                         label_key=label_key)
        if totals is not None:
            obs[TOTALS_KEY] = np.asarray(totals, np.float64)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["deepmapper"] = {
        "schema_version": SCHEMA_VERSION, "label_key": str(label_key), "source": str(source),
        "source_sha256": str(source_sha256), "matrix": str(matrix), "normalized": bool(normalized),
        "modality": str(modality), "deepmapper_version": __version__,
    }
    if samples is not None:
        adata.uns["deepmapper"]["sample_key"] = str(sample_key)
    return adata


def _sample_column(samples, n: int, *, where: str, sample_key: str, label_key: str):
    import pandas as pd

    if sample_key == label_key:
        raise InputError(f"the sample key and the label column are both '{label_key}': every label would be one "
                         "sample, and nothing could be told apart from the donor", where=where, field="sample_key",
                         fix="name the column of donors or samples with --sample-key, and the condition with "
                             "--label-key.")
    s = pd.Series(np.asarray(samples, dtype=object))
    if len(s) != n:
        raise InputError(f"{len(s)} sample ids for {n} cells", where=where, field=sample_key,
                         fix="give one sample id per cell.")
    missing = s.isna() | (s.astype(str).str.strip() == "")
    if missing.any():
        raise InputError(f"{int(missing.sum())} cells have no sample id", where=where, field=sample_key,
                         fix="fill in the sample column, or leave those cells out.")
    values = s.astype(str).str.strip().to_numpy()
    return pd.Categorical(values, categories=sorted(set(values.tolist())))


def samples(adata) -> tuple[np.ndarray, list[str]] | None:
    """(sample code per cell int64, sorted sample ids) of a dataset with a sample key, else None."""
    key = adata.uns.get("deepmapper", {}).get("sample_key")
    if not key:
        return None
    if key not in adata.obs.columns:
        raise FormatError(f"sample column '{key}' is missing from obs", where="dataset", field="sample_key",
                          fix="re-create the dataset with 'deepmapper ingest --sample-key ...'.")
    values = np.asarray(adata.obs[key].astype(str))
    names = sorted(set(values.tolist()))
    return np.searchsorted(np.asarray(names, dtype=object), values).astype(np.int64), names


def counts_matrix(adata):
    """The raw counts behind a dataset, or None when it holds no counts (e.g. log-normalised input).

    Counts given as counts are X itself; counts normalised at ingest are recovered from
    X = log1p(counts * TARGET_SUM / total) and the recorded totals, rounded (float32 keeps the
    relative error near 1e-7, far below 0.5 for any count one cell holds)."""
    import scipy.sparse as sp

    meta = adata.uns.get("deepmapper", {})
    X = adata.X
    if not meta.get("normalized"):
        return X if looks_like_counts(X) else None
    if TOTALS_KEY not in adata.obs.columns:
        return None
    totals = adata.obs[TOTALS_KEY].to_numpy(np.float64) / TARGET_SUM
    if sp.issparse(X):
        C = sp.csr_matrix(X, dtype=np.float64, copy=True)
        C.data = np.rint(np.expm1(C.data) * np.repeat(totals, np.diff(C.indptr)))
        C.eliminate_zeros()
        return C
    return np.rint(np.expm1(np.asarray(X, np.float64)) * totals[:, None])


# Obs column names that usually hold the donor or sample of each cell (case-insensitive).
SAMPLE_COLUMN_NAMES = ("sample", "sample_id", "samples", "donor", "donor_id", "patient", "patient_id",
                       "individual", "subject", "subject_id", "orig.ident", "batch", "library", "library_id")


def design_warnings(labels, obs=None, *, samples=None, sample_key: str | None = None, label_key: str = "labels",
                    where: str = "input") -> list[str]:
    """One line per design problem the labels cannot get past (the readers log them as warnings).

    - with samples: a label whose cells all come from one sample (label = sample: nothing can be
      told apart from that donor);
    - without: a label column nested in an obvious sample column of ``obs`` (``sample``, ``donor``,
      ``batch``, ``orig.ident``, ...), i.e. a condition measured on several samples, given without
      a sample key.
    """
    import pandas as pd

    lab = pd.Series(np.asarray(labels, dtype=object)).astype(str).to_numpy()
    out = []
    if samples is not None:
        s = pd.Series(np.asarray(samples, dtype=object)).astype(str).to_numpy()
        per = pd.DataFrame({"l": lab, "s": s}).groupby("l")["s"].nunique()
        one = [str(k) for k, v in per.items() if v == 1]
        if one:
            out.append(f"{where}: label(s) {', '.join(repr(k) for k in one[:5])} come from one sample each "
                       f"('{sample_key}'): label = sample, so donor effects cannot be told apart from the label; "
                       "add samples of these labels")
        return out
    if obs is None:
        return out
    for col in obs.columns:
        if str(col).lower() not in SAMPLE_COLUMN_NAMES or str(col) == label_key:
            continue
        s = obs[col].astype(str).to_numpy()
        n_s = len(set(s.tolist()))
        if n_s < 2 or n_s >= len(s) or len(s) != len(lab):
            continue
        if pd.DataFrame({"l": lab, "s": s}).groupby("s")["l"].nunique().max() == 1:
            out.append(f"{where}: '{label_key}' is constant within each '{col}' ({n_s} values), so it looks like a "
                       "condition measured on several samples: without a sample key the split, the ranking and "
                       f"the calibration treat cells as independent and can report donor effects as findings; "
                       f"add --sample-key {col}")
            break
    return out


# -- reading inputs --------------------------------------------------------------------------

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


def read_input(paths, *, label_key: str | None, labels=None, matrix: str = "auto", normalize: str = "auto",
               min_class_size: int = 5, modality: str = "rna", missing_labels=(), sample_key: str | None = None):
    """Read one input (or several labelled populations) into a validated dataset AnnData.

    ``missing_labels``: label values (after stripping spaces) that mean "no label"; those cells are
    left out with a warning. By default no value is special: "NA" is a class like any other.
    ``sample_key``: the column naming each cell's sample or donor (obs of an h5ad, column of a
    table); population inputs record one sample per directory and use it when every label has
    ``MIN_SAMPLES_PER_LABEL`` of them.
    """
    if normalize not in ("auto", "always", "never"):
        raise InputError(f"unknown normalize '{normalize}'", where="--normalize", field="normalize",
                         fix="use auto, always or never.")
    items = _parse_paths(paths)
    kinds = [_kind(p) for _, p in items]
    labelled = [lab is not None for lab, _ in items]
    spec = "; ".join(f"{lab}={p}" if lab else str(p) for lab, p in items)
    if any(labelled) and not all(labelled):
        raise InputError("some inputs have a LABEL= prefix and some do not", where=spec, field="input",
                         fix="give every population as LABEL=PATH, or one unlabelled input with --labels.")
    if len(set(kinds)) > 1:
        raise InputError(f"inputs of different formats ({', '.join(sorted(set(kinds)))})", where=spec,
                         field="input", fix="give inputs of one format.")
    kind = kinds[0]
    if kind != "h5ad" and matrix not in ("auto", "X"):
        log.warning("--matrix %s applies to h5ad inputs only; ignored for %s input", matrix, kind)

    if all(labelled):
        if labels is not None:
            raise InputError("--labels cannot be combined with LABEL=PATH inputs", where=str(labels),
                             field="labels", fix="use either LABEL=PATH inputs or one input with a labels file.")
        if kind == "10x":
            raw = _read_10x_populations(items, modality)
        elif kind == "salmon":
            raw = _read_salmon(items)
        else:
            raise InputError(f"LABEL=PATH is for 10x directories and Salmon quant.sf files, not {kind}",
                             where=spec, field="input",
                             fix="give h5ad/CSV inputs without a label prefix and name the label column "
                                 "with --label-key.")
        raw.label_key = label_key or POPULATION_KEY
    elif len(items) > 1 and kind != "salmon":
        raise InputError(f"{len(items)} unlabelled {kind} inputs", where=spec, field="input",
                         fix="give one input, or one LABEL=PATH per population (10x directories, quant.sf).")
    elif kind == "h5ad":
        raw = _read_h5ad(items[0][1], label_key=label_key, matrix=matrix, use_labels=labels is None,
                         sample_key=sample_key)
    elif kind == "table":
        raw = _read_table(items[0][1], label_key=label_key, use_labels=labels is None, sample_key=sample_key)
    elif kind == "10x":
        path = items[0][1]
        X, barcodes, var_names, var, files = _read_10x_dir(path, modality)
        raw = _Raw(X=X, obs_names=barcodes, var_names=var_names, var=var, files=files, source=str(path),
                   matrix="counts", counts_expected=True, label_key=label_key, has_columns=False)
    else:  # salmon, unlabelled: labels come from --labels keyed by sample id
        raw = _read_salmon(items)
        raw.labels, raw.label_key, raw.has_columns = None, label_key, False

    if labels is not None:
        raw.labels, raw.label_key = _read_labels_file(Path(labels), raw.obs_names, label_key)
    elif raw.labels is None:
        _missing_label_column(raw, spec)
    if missing_labels:
        _drop_missing_labels(raw, missing_labels)
    use_samples, key = _choose_samples(raw, sample_key, spec)

    X = _as_csr_or_dense(raw.X)
    where = raw.source
    check_float32_range(X, raw.var_names, where=where, field=raw.matrix)
    check_finite(X, raw.var_names, where=where, field=raw.matrix)
    counts = looks_like_counts(X)
    totals = None
    if normalize == "always":
        check_non_negative(X, raw.var_names, where=where, field="normalize", why="--normalize always")
        if not counts and not raw.counts_expected:
            log.warning("normalize=always on a matrix that is not integer counts (already normalised?)")
        do_norm = True
    elif raw.counts_expected:
        check_non_negative(X, raw.var_names, where=where, field=raw.matrix, why=f"a {kind} input holds counts")
        do_norm = normalize == "auto"
    else:
        do_norm = normalize == "auto" and counts
    if do_norm:
        log.info("normalising: normalize_total(%g) + log1p (normalize=%s%s)", TARGET_SUM, normalize,
                 ", the matrix looks like counts" if normalize == "auto" else "")
        if use_samples:   # the pseudobulk baseline recovers the counts from these (counts_matrix)
            totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
        X = normalize_log1p(X)
    elif normalize == "never" and counts:
        log.warning("the matrix looks like raw counts but normalize=never: using it as it is")
    else:
        log.info("not normalising (normalize=%s; the matrix %s)", normalize,
                 "looks like counts" if counts else "is not counts: non-integer or negative values")

    adata = build_dataset(X, raw.obs_names, raw.var_names, raw.labels, label_key=raw.label_key,
                          source=raw.source, var=raw.var, matrix=raw.matrix, normalized=do_norm,
                          modality=modality, source_sha256=_sources_sha256(raw.files),
                          min_class_size=min_class_size, where=where,
                          samples=raw.samples if use_samples else None, sample_key=key, totals=totals)
    for line in design_warnings(raw.labels, raw.obs, samples=raw.samples if use_samples else None,
                                sample_key=key, label_key=raw.label_key, where=where):
        log.warning("%s", line)
    sizes = adata.obs[raw.label_key].value_counts().sort_index()
    log.info("dataset: %d cells x %d features (%s), %d classes in '%s': %s", adata.n_obs, adata.n_vars,
             "sparse" if _is_sparse(adata.X) else "dense", len(sizes), raw.label_key,
             ", ".join(f"{k} {v}" for k, v in sizes.items()))
    return adata


def parse_missing_labels(text) -> tuple[str, ...]:
    """``"NA, None"`` (the --missing-labels setting) -> ``("NA", "None")``."""
    if isinstance(text, (list, tuple)):
        return tuple(str(t).strip() for t in text if str(t).strip())
    return tuple(t.strip() for t in str(text or "").split(",") if t.strip())


def _drop_missing_labels(raw: _Raw, missing_labels) -> None:
    """Leave out the cells whose label is one of ``missing_labels`` (the user asked for it)."""
    values = set(parse_missing_labels(missing_labels))
    lab = np.asarray([("" if v is None else str(v)).strip() for v in raw.labels], dtype=object)
    drop = np.isin(lab, list(values))
    if not drop.any():
        return
    if drop.all():
        raise InputError(f"every cell's label is one of the missing values ({', '.join(sorted(values))})",
                         where=raw.source, field=raw.label_key or "labels",
                         fix="check --missing-labels and the label column.")
    keep = np.flatnonzero(~drop)
    log.warning("%s: %d cells left out: their label is one of %s (--missing-labels)", raw.source,
                int(drop.sum()), ", ".join(sorted(values)))
    raw.X = _as_csr_or_dense(raw.X)[keep]
    raw.obs_names = [raw.obs_names[i] for i in keep]
    raw.labels = np.asarray(raw.labels, dtype=object)[keep]
    if raw.samples is not None:
        raw.samples = np.asarray(raw.samples, dtype=object)[keep]
    if raw.obs is not None:
        raw.obs = raw.obs.iloc[keep]


def _choose_samples(raw: _Raw, sample_key: str | None, spec: str) -> tuple[bool, str | None]:
    """(split and test by sample, the sample column's name in obs)."""
    import pandas as pd

    population = raw.label_key is not None and raw.samples is not None and sample_key is None
    if sample_key is not None:
        if raw.samples is None:
            if not raw.has_columns or raw.matrix == "counts" and raw.obs is None and not raw.columns:
                raise InputError("--sample-key names a column, but this input has no columns", where=spec,
                                 field="sample_key", fix="population inputs (LABEL=DIR) record one sample per "
                                                         "directory by themselves: drop --sample-key.")
            cols = list(raw.obs.columns) if raw.obs is not None else list(raw.columns)
            raise InputError(f"no column '{sample_key}' (available: {_few(cols, 12) or 'none'})", where=spec,
                             field="sample_key", fix="pass the column that names each cell's donor or sample.")
        return True, sample_key
    if not population:
        return False, None
    # population inputs: one sample per directory, used when every label has enough of them
    per = pd.DataFrame({"l": np.asarray(raw.labels).astype(str), "s": np.asarray(raw.samples).astype(str)}) \
        .groupby("l")["s"].nunique()
    if int(per.min()) >= MIN_SAMPLES_PER_LABEL:
        log.info("%s: %d population directories, %d-%d per label: split and tested by sample ('%s')", spec,
                 int(per.sum()), int(per.min()), int(per.max()), SAMPLE_KEY)
        return True, SAMPLE_KEY
    one = [str(k) for k, v in per.items() if v == 1]
    if one:
        log.warning("%s: label(s) %s come from one directory (sample) each: label = sample, so donor effects "
                    "cannot be told apart from the label; give several directories (samples) per label",
                    spec, ", ".join(repr(k) for k in one[:5]))
    return False, None


def _is_sparse(X) -> bool:
    import scipy.sparse as sp

    return sp.issparse(X)


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


def _parse_paths(paths) -> list[tuple[str | None, Path]]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise InputError("no input given", where="--input", field="input", fix="give --input PATH.")
    items = []
    for p in paths:
        s = os.fspath(p)
        label = None
        if "=" in s and not Path(s).exists():
            label, _, s = s.partition("=")
            if not label.strip() or not s:
                raise InputError("expected LABEL=PATH", where=os.fspath(p), field="input",
                                 fix="write the population label, '=', then the path, e.g. treated=data/treated/.")
            label = label.strip()
        path = Path(s)
        if not path.exists():
            raise InputError("file not found", where=s, field="input", fix="check the path given to --input.")
        items.append((label, path))
    return items


def _find(folder: Path, *names: str) -> Path | None:
    for n in names:
        for cand in (folder / n, folder / f"{n}.gz"):
            if cand.is_file():
                return cand
    return None


def _kind(path: Path) -> str:
    if path.is_dir():
        if _find(path, "matrix.mtx"):
            return "10x"
        if (path / "quant.sf").is_file():
            return "salmon"
        raise InputError("directory is neither a 10x matrix directory nor a Salmon output", where=str(path),
                         field="input", fix="give a folder with matrix.mtx[.gz], barcodes.tsv[.gz] and "
                                            "features.tsv[.gz] (or genes.tsv), or one with quant.sf.")
    name, _ = _strip_gz(path)
    if name.endswith(".h5ad"):
        return "h5ad"
    if name == "quant.sf" or name.endswith(".sf"):
        return "salmon"
    if Path(name).suffix in _TABLE_SUFFIXES:
        return "table"
    if name.endswith(".h5"):
        raise InputError("10x .h5 matrices are not read directly", where=str(path), field="input",
                         fix="give the matching matrix directory (filtered_feature_bc_matrix/), or convert to .h5ad.")
    if name.endswith(".mtx"):
        raise InputError("a .mtx file alone has no cell or feature names", where=str(path), field="input",
                         fix="give the 10x directory that holds matrix.mtx, barcodes.tsv and features.tsv.")
    raise InputError("cannot tell the format from the name", where=str(path), field="input",
                     fix="use .h5ad, .csv/.tsv (optionally .gz), a 10x matrix directory, or LABEL=DIR / "
                         "LABEL=quant.sf.")


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
        raw.samples = adata.obs[sample_key].astype(str).to_numpy(dtype=object)
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


def from_anndata(adata, *, label_key: str, matrix: str = "auto", normalize: str = "auto",
                 min_class_size: int = 5, modality: str = "rna", source: str = "in-memory AnnData",
                 source_sha256: str = "", sample_key: str | None = None):
    """A dataset from an AnnData already in memory (tests, notebooks), with the h5ad rules."""
    X, var_names, var, chosen = choose_matrix(adata, matrix, where=source)
    X = _as_csr_or_dense(X)
    if label_key not in adata.obs.columns:
        raise InputError(f"no column '{label_key}' (available: {_few(list(adata.obs.columns), 12)})",
                         where=source, field=label_key, fix="pass an obs column holding the labels.")
    if sample_key is not None and sample_key not in adata.obs.columns:
        raise InputError(f"no column '{sample_key}' (available: {_few(list(adata.obs.columns), 12)})",
                         where=source, field="sample_key",
                         fix="pass the obs column naming each cell's donor or sample.")
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
    samples_ = adata.obs[sample_key].astype(str).to_numpy(dtype=object) if sample_key is not None else None
    labels_ = adata.obs[label_key].to_numpy()
    out = build_dataset(X, adata.obs_names, var_names, labels_, label_key=label_key,
                        source=source, var=var, matrix=chosen, normalized=do_norm, modality=modality,
                        source_sha256=source_sha256, min_class_size=min_class_size, samples=samples_,
                        sample_key=sample_key, totals=totals)
    for line in design_warnings(labels_, adata.obs, samples=samples_, sample_key=sample_key, label_key=label_key,
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
    names = pd.Index([h.strip() for h in header[1:]])
    if names.has_duplicates:
        dup = names[names.duplicated()].unique()
        raise InputError(f"{len(dup)} duplicate feature names, e.g. {_few(dup)}", where=str(path),
                         field="var_names", fix="make column names unique (e.g. append the gene id).")
    # "NA", "None", "null" ... are missing values in feature columns only: as a cell id or label they are text.
    label_raw = [h for h in header[1:] if h.strip() in {label_key, sample_key} - {None}]
    na = {h: sorted(_NA_VALUES) for h in header[1:] if h not in label_raw}
    try:
        df = pd.read_csv(path, sep=sep, index_col=0, low_memory=False, keep_default_na=False, na_values=na,
                         dtype={h: str for h in [header[0], *label_raw]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot parse the table ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})",
                         where=str(path), field="X",
                         fix=f"give a {'comma' if sep == ',' else 'tab'}-separated table with one row per cell.") \
            from None
    df.columns = [str(c).strip() for c in df.columns]
    raw = _Raw(X=None, obs_names=[str(i) for i in df.index], var_names=[], files=[path], source=str(path),
               matrix="table", label_key=label_key)
    if sample_key is not None and sample_key in df.columns:
        raw.samples = df.pop(sample_key).astype(str).to_numpy(dtype=object)   # not a feature
    if label_key is not None and label_key in df.columns:
        column = df.pop(label_key)
        if use_labels:
            raw.labels = column.to_numpy()   # else the labels come from --labels; the column is not a feature
    elif use_labels:
        # Name the label column before complaining about non-numeric columns: it usually is one.
        text = [c for c in df.columns if df[c].dtype != bool and not pd.api.types.is_numeric_dtype(df[c])]
        raw.columns = text or list(df.columns[:12])
        _missing_label_column(raw, str(path))
    for col in df.columns if len(df) else []:  # no rows: the empty-matrix check says so
        s = df[col]
        if s.dtype == bool or pd.api.types.is_numeric_dtype(s):
            continue
        conv = pd.to_numeric(s, errors="coerce")
        bad = s[conv.isna() & s.notna()]
        example = f" (e.g. '{bad.iloc[0]}' for cell {bad.index[0]})" if len(bad) else ""
        raise InputError(f"column '{col}' is not numeric{example}", where=str(path), field=col,
                         fix="remove it, or name it with --label-key if it holds the labels.")
    raw.X = df.to_numpy(dtype=np.float64)   # float32 after the overflow check (build_dataset)
    raw.var_names = list(df.columns)
    return raw


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


def _read_10x_populations(items, modality: str) -> _Raw:
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
    for label, path, X, barcodes, names, var, fl in parts:
        seen[label] = seen.get(label, 0) + 1
        prefix = label if label_counts[label] == 1 else f"{label}-{seen[label]}"
        col = {n: i for i, n in enumerate(names)}
        blocks.append(X[:, [col[n] for n in shared]])
        obs += [f"{prefix}:{b}" for b in barcodes]
        labels += [label] * X.shape[0]
        samples += [path.name if by_dir else prefix] * X.shape[0]
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


def _read_salmon(items) -> _Raw:
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


# -- the dataset file ------------------------------------------------------------------------

def write_dataset(adata, path: str | os.PathLike) -> Path:
    """Write ``dataset.h5ad`` atomically (a failure leaves any earlier file untouched).

    A disk that fills up (or a file-size limit) is an OSError naming the file; h5py would
    otherwise crash the process while cleaning up after the failed write (a segfault, exit 139),
    so the file is written by a forked child where that is possible (:func:`_write_h5ad_isolated`).
    """
    from deepmapper._utils import faults

    path = Path(path)
    try:
        with atomic_path(path, suffix=".h5ad") as tmp:
            _write_h5ad_isolated(adata, tmp)
            faults.point("ingest")
    except OSError as err:
        raise OSError(err.errno, os.strerror(err.errno) if err.errno else str(err), str(path)) from None
    log.info("wrote %s (%d cells x %d features)", path, adata.n_obs, adata.n_vars)
    return path


def _write_h5ad_isolated(adata, target: Path) -> None:
    """``adata.write_h5ad(target)`` in a forked child (POSIX): an error comes back as an OSError or
    FormatError, a crash of the HDF5 library ends the child only. In-process elsewhere."""
    if not hasattr(os, "fork"):
        adata.write_h5ad(target)
        return
    import errno as errno_mod
    import signal

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child: write, report, leave without any cleanup
        code = 0
        try:
            os.close(read_fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)                    # h5py prints its own tracebacks while unwinding
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            adata.write_h5ad(target)
        except BaseException as err:               # noqa: BLE001 - everything goes back to the parent
            code = 1
            no = getattr(err, "errno", None) or (errno_mod.ENOSPC if "No space left" in str(err) else
                                                 errno_mod.EFBIG if "too large" in str(err).lower() else 0)
            text = f"{no}\t{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            with contextlib.suppress(OSError):
                os.write(write_fd, text.encode(errors="replace")[:4000])
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        chunks = []
        while True:
            block = os.read(read_fd, 4096)
            if not block:
                break
            chunks.append(block)
        _, status = os.waitpid(pid, 0)
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_fd)
    message = b"".join(chunks).decode(errors="replace")
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and not message:
        return
    no, _, detail = message.partition("\t")
    if no.strip().isdigit() and int(no):
        raise OSError(int(no), f"{os.strerror(int(no))} ({detail[:200]})" if detail else os.strerror(int(no)),
                      str(target))
    if os.WIFSIGNALED(status):
        detail = f"the writer was stopped by signal {os.WTERMSIG(status)}"
    raise FormatError(f"cannot write the dataset ({detail[:200] or 'unknown error'})", where=str(target),
                      field="dataset", fix="check the free space and permissions of the output directory.")


def read_dataset(path: str | os.PathLike):
    """Read a ``dataset.h5ad`` written by :func:`write_dataset`, checking its schema version."""
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise FormatError("dataset file not found", where=str(path), field="dataset",
                          fix="run 'deepmapper ingest' first, or check the path.")
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # a damaged or foreign file
        raise FormatError(f"cannot read as h5ad ({exc.__class__.__name__})", where=str(path), field="dataset",
                          fix="re-create it with 'deepmapper ingest'.") from None
    meta = adata.uns.get("deepmapper")
    if not isinstance(meta, dict):
        raise FormatError("not a DeepMapper dataset (no uns['deepmapper'])", where=str(path),
                          field="uns.deepmapper", fix="create it with 'deepmapper ingest --input ... --out ...'.")
    version = meta.get("schema_version")
    if version is None or int(version) != SCHEMA_VERSION:
        raise FormatError(f"dataset schema version {version} but this DeepMapper reads version {SCHEMA_VERSION}",
                          where=str(path), field="uns.deepmapper.schema_version",
                          fix="re-create it with 'deepmapper ingest' from this version.")
    key = meta.get("label_key")
    if key not in adata.obs.columns:
        raise FormatError(f"label column '{key}' is missing from obs", where=str(path), field="label_key",
                          fix="re-create it with 'deepmapper ingest'.")
    return adata


def labels(adata) -> tuple[np.ndarray, list[str]]:
    """(codes int64, sorted class names) of the dataset's label column."""
    key = adata.uns["deepmapper"]["label_key"]
    values = np.asarray(adata.obs[key].astype(str))
    classes = sorted(set(values.tolist()))
    codes = np.searchsorted(np.asarray(classes, dtype=object), values).astype(np.int64)
    return codes, classes


# -- subsets for the "what filtering costs" comparisons -------------------------------------------

def hvg_subset(adata, n_top: int):
    """The ``n_top`` most variable features (scanpy ``highly_variable_genes``, flavor seurat, on log data)."""
    import anndata as ad
    import scanpy as sc

    if n_top >= adata.n_vars:
        out = adata.copy()
    else:
        probe = ad.AnnData(X=adata.X, obs=adata.obs[[]], var=adata.var[[]])
        table = sc.pp.highly_variable_genes(probe, n_top_genes=int(n_top), flavor="seurat", inplace=False)
        out = adata[:, np.asarray(table["highly_variable"], dtype=bool)].copy()
    out.uns["deepmapper"] = {**dict(adata.uns.get("deepmapper", {})), "subset": f"hvg:{int(n_top)}"}
    return out


def intersect_features(a, b):
    """(a, b) restricted to their shared features, both in the order of ``a``."""
    shared_set = set(map(str, b.var_names))
    shared = [str(v) for v in a.var_names if str(v) in shared_set]
    if not shared:
        raise InputError("the two datasets share no feature names", field="var_names",
                         fix="use datasets quantified against the same reference.")
    out = []
    for x in (a, b):
        sub = x[:, shared].copy()
        if "deepmapper" in x.uns:
            sub.uns["deepmapper"] = {**dict(x.uns["deepmapper"]), "subset": f"intersect:{len(shared)}"}
        out.append(sub)
    return out[0], out[1]


# -- the ingest step ------------------------------------------------------------------------------

def ingest(paths, out: str | os.PathLike, *, label_key: str | None, labels=None, cfg=None, modality: str = "rna"):
    """``read_input`` + ``write_dataset``: validate everything before the output is touched."""
    from deepmapper.config import InputConfig

    cfg = cfg or InputConfig()
    adata = read_input(paths, label_key=label_key if label_key is not None else cfg.label_key, labels=labels,
                       matrix=cfg.matrix, normalize=cfg.normalize, min_class_size=cfg.min_class_size,
                       modality=modality, missing_labels=parse_missing_labels(cfg.missing_labels),
                       sample_key=cfg.sample_key)
    write_dataset(adata, out)
    return adata
