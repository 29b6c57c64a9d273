"""Reading a results folder: the one set of readers that ``read_results`` (the AnnData view) and the
report use, so both check the same things and say the same thing when a file is wrong. The dataset
is opened with :func:`deepmapper.io.read_dataset` (its schema check) by both."""
from __future__ import annotations

import json
from pathlib import Path

from deepmapper.errors import FormatError


def read_tsv(path: Path, required):
    """A results TSV with its required columns; feature, class and partner names stay text."""
    import pandas as pd

    try:
        # Names stay text: a gene called "NA" or a class called "01" must not become NaN or 1.
        df = pd.read_csv(path, sep="\t", dtype={"feature": str, "class": str, "kind": str, "partners": str},
                         keep_default_na=False, na_values=[""])
        if "partners" in df.columns:          # no partner is the empty text, as findings.build writes it
            df["partners"] = df["partners"].fillna("")
    except (OSError, ValueError) as exc:
        raise FormatError(f"not a readable TSV ({exc.__class__.__name__})", where=str(path),
                          fix="rerun the step that wrote it.") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise FormatError(f"missing column(s) {', '.join(missing)}", where=str(path), field=missing[0],
                          fix="rerun the step that wrote it with this version of DeepMapper.")
    return df


def read_json(path: Path) -> dict:
    """A results JSON object (findings.json, evaluation.json, ...), or one clear FormatError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"not readable JSON ({exc.__class__.__name__})", where=str(path),
                          fix="rerun the step that wrote it.") from None
    if not isinstance(data, dict):
        raise FormatError("expected a JSON object", where=str(path), fix="rerun the step that wrote it.")
    return data
