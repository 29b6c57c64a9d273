"""``read_input``: which reader a path needs, labels and samples from where the user says,
then the one constructor."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepmapper.errors import InputError

from deepmapper.io._common import (
    MIN_SAMPLES_PER_LABEL,
    POPULATION_KEY,
    SAMPLE_KEY,
    TARGET_SUM,
    _TABLE_SUFFIXES,
    _as_csr_or_dense,
    _few,
    _sources_sha256,
    _strip_gz,
    check_finite,
    check_float32_range,
    check_non_negative,
    log,
    looks_like_counts,
    normalize_log1p,
    reading,
)
from deepmapper.io._dataset import build_dataset, check_keys_differ, design_warnings
from deepmapper.io._sheet import read_populations, sheet_columns
from deepmapper.io._formats import (
    _Raw,
    _drop_missing_labels,
    _find,
    _missing_label_column,
    _read_10x_dir,
    _read_10x_populations,
    _read_h5ad,
    _read_labels_file,
    _read_salmon,
    _read_table,
)


# -- reading inputs --------------------------------------------------------------------------

def read_input(paths, *, label_key: str | None, labels=None, matrix: str = "auto", normalize: str = "auto",
               min_class_size: int = 5, modality: str = "rna", missing_labels=(), sample_key: str | None = None,
               sample_names=None):
    """Read one input (or several labelled populations) into a validated dataset AnnData.

    ``missing_labels``: label values (after stripping spaces) that mean "no label"; those cells are
    left out with a warning. By default no value is special: "NA" is a class like any other.
    ``sample_key``: the column naming each cell's sample or donor (obs of an h5ad, column of a
    table); population inputs record one sample per directory and use it when every label has
    ``MIN_SAMPLES_PER_LABEL`` of them. ``sample_names``: one sample id per input, in order, for
    population or Salmon inputs (a samplesheet's ``sample`` column; the pipeline's INGEST passes
    them, as staging renames the directories); by default the directory's name.
    """
    if normalize not in ("auto", "always", "never"):
        raise InputError(f"unknown normalize '{normalize}'", where="--normalize", field="normalize",
                         fix="use auto, always or never.")
    items = _parse_paths(paths)
    if len(items) == 1 and items[0][0] is None and labels is None:
        with reading(items[0][1]):
            sheet = sheet_columns(items[0][1])
            if sheet is not None:        # the pipeline's --input samplesheet.csv: one row per population
                if sample_names:
                    raise InputError("sample names given beside a samplesheet, which names its samples",
                                     where=str(items[0][1]), field="sample_name", fix="drop --sample-name.")
                log.info("%s: a samplesheet (%s)", items[0][1], ",".join(sheet))
                items, sample_names = read_populations(items[0][1])
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
    check_keys_differ(label_key, sample_key, spec)      # before a reader takes the column for one of them
    names = _check_sample_names(sample_names, items, kind, spec)
    if kind != "h5ad" and matrix not in ("auto", "X"):
        log.warning("--matrix %s applies to h5ad inputs only; ignored for %s input", matrix, kind)

    with reading(spec if len(items) > 1 else items[0][1]):
        raw = _read_raw(items, kind, labelled=labelled, spec=spec, label_key=label_key, labels=labels,
                        matrix=matrix, modality=modality, sample_key=sample_key, names=names)
    if labels is not None:
        with reading(labels, field="labels"):
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


def _read_raw(items, kind: str, *, labelled: list[bool], spec: str, label_key, labels, matrix: str,
              modality: str, sample_key, names) -> _Raw:
    """The reader of ``kind`` on the inputs: matrix, names, labels and samples as given."""
    if all(labelled):
        if labels is not None:
            raise InputError("--labels cannot be combined with LABEL=PATH inputs", where=str(labels),
                             field="labels", fix="use either LABEL=PATH inputs or one input with a labels file.")
        if kind == "10x":
            raw = _read_10x_populations(items, modality, names)
        elif kind == "salmon":
            raw = _read_salmon(items, names)
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
        raw = _read_salmon(items, names)
        raw.labels, raw.label_key, raw.has_columns = None, label_key, False
    return raw


def _check_sample_names(names, items, kind: str, spec: str) -> list[str] | None:
    """The sample ids given for the inputs (one each, distinct), or None when none were given."""
    if not names:
        return None
    names = [str(n) for n in names]
    if kind not in ("10x", "salmon") or len(items) < 2:
        raise InputError("sample names are for several population inputs (LABEL=DIR, quant.sf), one each",
                         where=spec, field="sample_name", fix="drop --sample-name, or name the column of "
                                                              "each cell's sample with --sample-key.")
    if len(names) != len(items):
        raise InputError(f"{len(names)} sample names for {len(items)} inputs", where=spec, field="sample_name",
                         fix="give one --sample-name per --input, in the same order.")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"sample name(s) {', '.join(repr(d) for d in dup[:5])} given twice", where=spec,
                         field="sample_name", fix="give every input its own sample name.")
    return names


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
