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

import os

from deepmapper.io._common import (  # noqa: F401  (the package's public names)
    DENOVO_PREFIX,
    MIN_CELLS_PER_CLASS,
    MIN_SAMPLES_PER_LABEL,
    POPULATION_KEY,
    SAMPLE_KEY,
    SCHEMA_VERSION,
    TARGET_SUM,
    TOTALS_KEY,
    check_finite,
    check_float32_range,
    check_non_negative,
    features_sha256,
    file_sha256,
    looks_like_counts,
    missing_label_mask,
    normalize_log1p,
    parse_missing_labels,
)
from deepmapper.io._sheet import DENOVO_COLUMNS, check_sample_id, resolve_listed_path  # noqa: F401
from deepmapper.io._dataset import (  # noqa: F401  (the package's public names)
    PAIRED_SEPARATOR,
    SAMPLE_COLUMN_NAMES,
    build_dataset,
    counts_matrix,
    design_warnings,
    hvg_subset,
    intersect_features,
    labels,
    read_dataset,
    sample_blocks,
    samples,
    write_dataset,
)
from deepmapper.io._formats import (  # noqa: F401  (the package's public names)
    check_in_memory,
    choose_matrix,
    from_anndata,
    read_h5ad_file,
    read_quant_sf,
)
from deepmapper.io._readers import (  # noqa: F401  (the package's public names)
    read_input,
)


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
