"""The dataset: the one constructor every reader uses (``build_dataset``), samples and the design
warnings, and the ``dataset.h5ad`` file (write, read with its schema check, labels)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from deepmapper._utils.atomic import atomic_path
from deepmapper.errors import FormatError, InputError

from deepmapper.io._common import (
    DENOVO_PREFIX,
    MIN_CELLS_PER_CLASS,
    SCHEMA_VERSION,
    TARGET_SUM,
    TOTALS_KEY,
    _few,
    _not_groups,
    _strip_labels,
    check_finite,
    check_float32_range,
    log,
    looks_like_counts,
)


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
                         where=where, field=label_key,
                         fix="fill in their labels, or leave those cells out with --missing-labels NA "
                             "(missing_labels='NA' in rank_features; empty and NaN labels go with any value).")
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
        _not_groups(lab, label_key, where=where, need=need)
        listed = ", ".join(f"'{k}' ({v} cells)" for k, v in small.head(5).items()) \
            + (f" and {len(small) - 5} more" if len(small) > 5 else "")
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

    paired = False
    if samples is not None:
        obs[sample_key], paired = _sample_column(samples, lab.to_numpy(), where=where, sample_key=str(sample_key),
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
    if paired:
        adata.uns["deepmapper"]["paired"] = True
    return adata


def _sample_column(samples, labels: np.ndarray, *, where: str, sample_key: str, label_key: str):
    """(the sample column (categorical), whether the design is paired), after refusing ids that are
    missing or miscounted, and designs where some samples carry one label and others several
    (:func:`_paired_design`)."""
    import pandas as pd

    n = len(labels)
    check_keys_differ(label_key, sample_key, where)
    s = pd.Series(np.asarray(samples, dtype=object))
    if len(s) != n:
        raise InputError(f"{len(s)} sample ids for {n} cells", where=where, field=sample_key,
                         fix="give one sample id per cell.")
    missing = s.isna() | (s.astype(str).str.strip() == "")
    if missing.any():
        raise InputError(f"{int(missing.sum())} cells have no sample id", where=where, field=sample_key,
                         fix="fill in the sample column, or leave those cells out.")
    values = s.astype(str).str.strip().to_numpy()
    paired = _paired_design(values, labels, where=where, sample_key=sample_key, label_key=label_key)
    return pd.Categorical(values, categories=sorted(set(values.tolist()))), paired


def _paired_design(samples: np.ndarray, labels: np.ndarray, *, where: str, sample_key: str,
                   label_key: str) -> bool:
    """Whether the sample key names the blocks of a paired design, after refusing a mixed one.

    - every sample carries one label (a condition measured on several donors): not paired; the
      sample is the unit of every split, test and permutation;
    - every sample carries several labels (each donor under every condition, before / after
      treatment, or cell types within donors): paired. The unit is then the sample x label
      (:func:`samples`), each sample (donor) a block: whole donors are held out, the test compares
      the labels within donors (``~ donor + label``) and permutations swap labels within a donor;
    - some samples with one label and others with several: refused. Such a design mixes the two
      comparisons, and a sample with a few cells of a second label is more often a labelling error.
    """
    import pandas as pd

    table = pd.crosstab(pd.Series(samples, name=sample_key), pd.Series(labels, name=label_key))
    several = (table > 0).sum(axis=1) > 1
    if not several.any():
        return False
    if several.all():
        return True
    mixed, single = table.index[several], table.index[~several]
    first = table.loc[mixed[0]]
    held = ", ".join(f"{k} {int(v)}" for k, v in first[first > 0].sort_values(ascending=False).items())
    raise InputError(f"{len(mixed)} of {len(table)} samples in '{sample_key}' carry several labels of "
                     f"'{label_key}' (e.g. {mixed[0]}: {held} cells; also {_few(mixed[1:], 3) or 'no other'}) and "
                     f"{len(single)} carry one (e.g. {_few(single, 3)}): a sample key names either the samples of "
                     "labels that are properties of whole samples (one label per sample) or the donors of a "
                     "paired design (every donor under several labels), not a mix",
                     where=where, field=sample_key,
                     fix=f"to compare conditions across donors, give the condition column as the label and "
                         f"'{sample_key}' as the sample key, one condition per sample; for a paired design keep "
                         "only donors seen under at least two labels; a sample with a few mislabelled cells: "
                         "correct or drop those cells.")


def check_keys_differ(label_key, sample_key, where: str) -> None:
    """The sample key must not be the label column (every label would be one sample)."""
    if sample_key is not None and sample_key == label_key:
        raise InputError(f"the sample key and the label column are both '{label_key}': every label would be one "
                         "sample, and nothing could be told apart from the donor", where=where, field="sample_key",
                         fix="name the column of donors or samples as the sample key (--sample-key, sample_key=), "
                             "and the condition as the label column.")


# Between a donor and a label in the name of a sample of a paired design ("d01:stim").
PAIRED_SEPARATOR = ":"


def _sample_values(adata):
    """(the sample id of every cell, the donor of every cell or None): a paired design's samples
    are donor x label, ``donor:label``."""
    key = adata.uns.get("deepmapper", {}).get("sample_key")
    if not key:
        return None, None
    if key not in adata.obs.columns:
        raise FormatError(f"sample column '{key}' is missing from obs", where="dataset", field="sample_key",
                          fix="re-create the dataset with 'deepmapper ingest --sample-key ...'.")
    donors = np.asarray(adata.obs[key].astype(str), dtype=object)
    if not adata.uns["deepmapper"].get("paired"):
        return donors, None
    label_key = adata.uns["deepmapper"]["label_key"]
    labels = np.asarray(adata.obs[label_key].astype(str), dtype=object)
    return donors + PAIRED_SEPARATOR + labels, donors


def samples(adata) -> tuple[np.ndarray, list[str]] | None:
    """(sample code per cell int64, sorted sample ids) of a dataset with a sample key, else None.

    In a paired design (``uns["deepmapper"]["paired"]``, :func:`_paired_design`) a sample is one
    donor under one label, named ``donor:label``; :func:`sample_blocks` gives each one's donor."""
    values, _ = _sample_values(adata)
    if values is None:
        return None
    names = sorted(set(values.tolist()))
    return np.searchsorted(np.asarray(names, dtype=object), values).astype(np.int64), names


def sample_blocks(adata) -> tuple[np.ndarray, list[str]] | None:
    """(donor code of every sample of :func:`samples`, sorted donor ids) of a paired design, else None
    (no sample key, or one label per sample)."""
    values, donors = _sample_values(adata)
    if donors is None:
        return None
    _, first = np.unique(values, return_index=True)          # one cell of each sample, in samples' order
    block_names = sorted(set(donors.tolist()))
    codes = np.searchsorted(np.asarray(block_names, dtype=object), donors[first])
    return codes.astype(np.int64), block_names


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
    - with samples of one label each, nested in an obvious donor column of ``obs`` whose every
      value carries several labels: a paired design given as donor x label samples, compared as if
      each sample were its own donor (on ``bench/sample_rank.py --paired``, 3 donors: 2.6 one-donor
      genes in the top 20 against 0.4 with the donor as the key, docs/accuracy.md);
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
        donor = _donors_of_samples(lab, s, obs, sample_key=sample_key, label_key=label_key)
        if donor:
            out.append(f"{where}: the samples of '{sample_key}' carry one label each but are nested in '{donor}', "
                       f"whose every value carries several labels of '{label_key}': a paired design, compared as "
                       f"if each sample came from its own donor, so each donor's own effects are not cancelled; "
                       f"give --sample-key {donor} to compare the labels within donors")
        return out
    if obs is None:
        return out
    for col in _sample_columns(obs, len(lab), skip=(label_key,)):
        s = obs[col].astype(str).to_numpy()
        n_s = len(set(s.tolist()))
        if n_s < 2 or n_s >= len(s):
            continue
        if pd.DataFrame({"l": lab, "s": s}).groupby("s")["l"].nunique().max() == 1:
            # samples nested in donors seen under several labels: the donor is the key that pairs them
            key = _donors_of_samples(lab, s, obs, sample_key=col, label_key=label_key) or col
            out.append(f"{where}: '{label_key}' is constant within each '{col}' ({n_s} values), so it looks like a "
                       "condition measured on several samples: without a sample key the split, the ranking and "
                       f"the calibration treat cells as independent and can report donor effects as findings; "
                       f"add --sample-key {key}")
            break
    return out


def _sample_columns(obs, n_cells: int, *, skip=()) -> list:
    """The columns of ``obs`` named like a donor or sample column (SAMPLE_COLUMN_NAMES), one per cell."""
    if obs is None or len(obs) != n_cells:
        return []
    return [c for c in obs.columns if str(c).lower() in SAMPLE_COLUMN_NAMES and str(c) not in skip]


def _donors_of_samples(labels, samples, obs, *, sample_key, label_key) -> str | None:
    """The obvious donor column (``donor``, ``patient``, ...) in which samples of one label each are
    nested while each of its values carries several labels, or None (:func:`design_warnings`)."""
    import pandas as pd

    if pd.DataFrame({"l": labels, "s": samples}).groupby("s")["l"].nunique().max() != 1:
        return None                                  # already paired: the samples carry several labels
    for col in _sample_columns(obs, len(labels), skip=(label_key, str(sample_key))):
        d = obs[col].astype(str).to_numpy()
        frame = pd.DataFrame({"l": labels, "s": samples, "d": d})
        n_d = frame["d"].nunique()
        if (1 < n_d < frame["s"].nunique() and frame.groupby("s")["d"].nunique().max() == 1
                and frame.groupby("d")["l"].nunique().min() > 1):
            return str(col)
    return None


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


def read_dataset(path: str | os.PathLike, *, backed: bool = False):
    """Read a ``dataset.h5ad`` written by :func:`write_dataset`, checking its schema version.
    ``backed``: open it read-only with the matrix left on disk (the caller closes ``adata.file``)."""
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise FormatError("dataset file not found", where=str(path), field="dataset",
                          fix="run 'deepmapper ingest' first, or check the path.")
    try:
        adata = ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as exc:  # a damaged or foreign file
        raise FormatError(f"cannot read as h5ad ({exc.__class__.__name__})", where=str(path), field="dataset",
                          fix="re-create it with 'deepmapper ingest'.") from None
    try:
        _check_dataset(adata, path)
    except FormatError:
        if backed:
            adata.file.close()
        raise
    return adata


def _check_dataset(adata, path: Path) -> None:
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
