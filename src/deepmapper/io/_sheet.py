"""Samplesheets: the rows of labelled populations (``sample,path,label``), as the pipeline's
``--input samplesheet.csv`` takes them, read for ``deepmapper run`` / ``ingest`` too; and the two
rules every samplesheet shares (sample ids, where a relative path is read from)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

from deepmapper.errors import InputError

POPULATION_COLUMNS = ("sample", "path", "label")
DENOVO_COLUMNS = ("sample", "fastq_1", "fastq_2", "label")
# Sample ids become file names and table columns: keep them to a safe alphabet (assets/schema_input.json).
_SAMPLE_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_sample_id(sample: str, *, where: str | None = None, field: str = "sample") -> str:
    if not _SAMPLE_OK.match(sample):
        raise InputError(f"sample id {sample!r} is empty or has characters other than letters, digits, '.', '_', '-'",
                         where=where, field=field, fix="rename the sample (ids become file and column names).")
    return sample


def resolve_listed_path(value: str, base: Path) -> Path:
    """A path listed in a samplesheet: absolute as given; relative from the current directory (the
    nf-core convention) when it is there, else from the samplesheet's directory (a sheet written
    beside its data). The pipeline's resolveSamplesheetPath applies the same rule."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return p
    beside = base / p
    return beside if beside.exists() else p


def sheet_columns(path: Path) -> list[str] | None:
    """The header of a CSV that is a samplesheet (population or de-novo columns), else None."""
    if not path.is_file() or not path.name.lower().endswith(".csv"):
        return None
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = [h.strip().lower() for h in next(csv.reader(fh), [])]
    known = (set(POPULATION_COLUMNS), set(DENOVO_COLUMNS), set(DENOVO_COLUMNS) - {"fastq_2"})
    return header if set(header) in known else None


def read_populations(path: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """([(label, path)], [sample id]) of a ``sample,path,label`` samplesheet, one row per population
    (a 10x directory or a Salmon quant folder / quant.sf), paths resolved by :func:`resolve_listed_path`."""
    where = str(path)
    header = sheet_columns(path) or []
    if "fastq_1" in header:
        raise InputError("a de-novo samplesheet (sample,fastq_1,fastq_2,label): its reads need the assembly front "
                         "end first", where=where, field="input",
                         fix="run 'deepmapper denovo run --samplesheet ...' (or the pipeline with --denovo).")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]
    if not rows:
        raise InputError("the samplesheet has no rows", where=where, field="input",
                         fix="add one row per labelled population: sample,path,label.")
    base = path.resolve().parent
    items, names, seen = [], [], {}
    for i, row in enumerate(rows, start=2):          # line 1 is the header
        sid = check_sample_id(row["sample"], where=f"{where} line {i}")
        if sid in seen:
            raise InputError(f"line {i}: sample '{sid}' is listed twice (first on line {seen[sid]})", where=where,
                             field="sample", fix="give every population a unique sample id.")
        seen[sid] = i
        for column in ("path", "label"):
            if not row[column]:
                raise InputError(f"line {i}: sample '{sid}' has no {column}", where=where, field=column,
                                 fix="give every row its 10x directory (or quant.sf) and its label.")
        found = resolve_listed_path(row["path"], base)
        if not found.exists():
            raise InputError(f"line {i}: the path of sample '{sid}' ({row['path']}) exists neither in the current "
                             f"directory nor beside the samplesheet", where=where, field="path",
                             fix="give an absolute path, or one relative to the launch directory or the sheet.")
        items.append((row["label"], found))
        names.append(sid)
    return items, names
