"""Constants and checks shared by the readers and the dataset file: value scans, normalisation,
label clean-up, missing labels, hashing."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from deepmapper.errors import InputError

log = logging.getLogger("deepmapper.io")  # one logger name for the whole package

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


@contextlib.contextmanager
def reading(where: str | os.PathLike, field: str = "input"):
    """Errors of the bytes of an input, as one InputError naming it: text that is not UTF-8 (or
    gzip content under a name without .gz), a .gz file that is not gzip or is cut short, a file
    that cannot be opened. Without this they surfaced as tracebacks, click's bare "Aborted!"
    (an EOFError) or an OSError blamed on --outdir."""
    where = str(where)
    try:
        yield
    except UnicodeDecodeError as err:
        if _gzip_magic(where):
            raise InputError("gzip-compressed, but its name does not end in .gz", where=where, field=field,
                             fix="name it with .gz at the end (e.g. cells.csv.gz), or decompress it.") from None
        raise InputError(f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})",
                         where=where, field=field,
                         fix="save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW).") from None
    except gzip.BadGzipFile as err:
        raise InputError(f"its name ends in .gz but it is not gzip-compressed ({err})", where=where, field=field,
                         fix="remove .gz from its name, or compress it with gzip.") from None
    except (EOFError, zlib.error) as err:
        raise InputError(f"the compressed file is cut short or damaged ({err.__class__.__name__}: {err})",
                         where=where, field=field,
                         fix="copy it again from its source ('gzip -t FILE' checks a .gz file).") from None
    except OSError as err:               # only inputs are read here: never blame --outdir for it
        raise InputError(f"cannot read it ({(err.strerror or str(err)).splitlines()[0]})",
                         where=err.filename or where, field=field,
                         fix="check that the file exists and is readable.") from None


def _gzip_magic(where: str) -> bool:
    """Whether ``where`` is a file that starts with gzip's magic bytes."""
    try:
        with open(where, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


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
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise InputError(f"the matrix is not numeric (dtype {X.dtype})", where=where, field=field,
                         fix="give numbers, e.g. adata.X = adata.X.astype('float32') after checking that every "
                             "value is one.")
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
            log.warning("%s: %d labels in '%s' have leading/trailing spaces; the classes are named without "
                        "them (e.g. '%s')", where, int(changed.sum()), label_key, stripped[changed].iloc[0])
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


def _not_groups(lab, label_key: str, *, where: str, need: int) -> None:
    """A label column that is a measurement or an id, not groups: one line that says so (instead of
    listing thousands of one-cell classes)."""
    import pandas as pd

    n, k = len(lab), int(lab.nunique())
    numeric = bool(pd.to_numeric(lab, errors="coerce").notna().all())
    if k > 0.5 * n or (numeric and k > 20 and k > n / need):
        what = "numeric values (a measurement, not groups)" if numeric else "nearly one value per cell (an id?)"
        raise InputError(f"'{label_key}' has {k} distinct values for {n} cells: {what}", where=where,
                         field=label_key,
                         fix="choose a column of groups (e.g. cell type or leiden), or bin the values first "
                             "(pd.cut) into groups of at least " + str(need) + " cells.")




def parse_missing_labels(text) -> tuple[str, ...]:
    """``"NA, None"`` (the --missing-labels setting) -> ``("NA", "None")``."""
    if isinstance(text, (set, frozenset)):
        text = sorted(text)
    if isinstance(text, (list, tuple)):
        return tuple(str(t).strip() for t in text if str(t).strip())
    return tuple(t.strip() for t in str(text or "").split(",") if t.strip())


def missing_label_mask(labels, missing_labels) -> np.ndarray:
    """True for the cells whose label is one of ``missing_labels`` or empty (NaN, None, blank): once the
    user names the values that mean "no label", a cell with no label at all is left out too."""
    import pandas as pd

    values = set(parse_missing_labels(missing_labels))
    series = pd.Series(np.asarray(labels, dtype=object))
    empty = series.isna().to_numpy()
    lab = np.asarray(["" if e else str(v).strip() for v, e in zip(series, empty)], dtype=object)
    return empty | (lab == "") | np.isin(lab, list(values))


