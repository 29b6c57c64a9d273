"""The de-novo samplesheet: ``sample,fastq_1,fastq_2,label`` (``fastq_2`` empty for single-end)."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from deepmapper.denovo.fastq import check_fastq
from deepmapper.errors import InputError
from deepmapper.io import DENOVO_COLUMNS as COLUMNS
from deepmapper.io import check_sample_id, resolve_listed_path


@dataclass(frozen=True)
class Sample:
    sample: str
    fastq_1: Path
    fastq_2: Path | None
    label: str

    @property
    def paired(self) -> bool:
        return self.fastq_2 is not None


def read_samplesheet(path: str | os.PathLike, *, check_files: bool = True, min_groups: int = 2) -> list[Sample]:
    """Parse and validate the samplesheet.

    Relative FASTQ paths are read from the current directory, or, when not
    found there, from the samplesheet's directory. ``check_files`` validates every FASTQ
    (off for the table step, which only needs ids and labels). At least
    ``min_groups`` distinct labels are required: ranking needs groups to compare.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise InputError("samplesheet not found", where=where, fix="give a CSV with columns "
                                                                   + ",".join(COLUMNS) + ".")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})",
                             where=where, field=missing[0],
                             fix="use the header 'sample,fastq_1,fastq_2,label' (fastq_2 may be left empty).")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise InputError("the samplesheet has no samples", where=where, fix="add one row per sample.")
    base = path.resolve().parent
    samples, seen = [], {}
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        sid = row["sample"]
        check_sample_id(sid, where=f"{where} line {i}")
        if sid in seen:
            raise InputError(f"line {i}: sample '{sid}' is listed twice (first on line {seen[sid]})", where=where,
                             field="sample", fix="give every sample a unique id (one row per sample; "
                                                 "concatenate its FASTQ files first).")
        seen[sid] = i
        if not row["label"]:
            raise InputError(f"line {i}: sample '{sid}' has no label", where=where, field="label",
                             fix="give every sample its group label.")
        if not row["fastq_1"]:
            raise InputError(f"line {i}: sample '{sid}' has no fastq_1", where=where, field="fastq_1",
                             fix="give the path of the (first) FASTQ file.")
        f1 = resolve_listed_path(row["fastq_1"], base)
        f2 = resolve_listed_path(row["fastq_2"], base) if row["fastq_2"] else None
        if f2 is not None and f2 == f1:
            raise InputError(f"line {i}: fastq_1 and fastq_2 of '{sid}' are the same file", where=where,
                             field="fastq_2", fix="leave fastq_2 empty for single-end reads.")
        samples.append(Sample(sid, f1, f2, row["label"]))
    labels = sorted({s.label for s in samples})
    if len(labels) < min_groups:
        raise InputError(f"all samples carry the label '{labels[0]}'; at least {min_groups} groups are needed "
                         "to rank what separates them", where=where, field="label",
                         fix="label the samples of each group (e.g. control / treated).")
    if check_files:
        for s in samples:
            check_fastq(s.fastq_1, field=f"fastq_1 of {s.sample}", mate=s.fastq_2,
                        mate_field=f"fastq_2 of {s.sample}")
    return samples


def check_group_sizes(samples: list[Sample], min_size: int, *, where: str) -> None:
    """Fail before the slow steps when a group is too small for the stratified split of 'deepmapper run'."""
    need = max(3, int(min_size))
    sizes: dict[str, int] = {}
    for s in samples:
        sizes[s.label] = sizes.get(s.label, 0) + 1
    small = {k: v for k, v in sorted(sizes.items()) if v < need}
    if small:
        listed = ", ".join(f"'{k}' ({v} samples)" for k, v in small.items())
        raise InputError(f"group(s) with fewer than {need} samples: {listed}", where=where, field="label",
                         fix="add samples to these groups, or lower --min-class-size (at least 3).")
