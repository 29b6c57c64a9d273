"""The pure table-building core: Salmon quant files -> transcripts x samples counts.

No tools are run here: the functions take quant files (or parsed columns) and
return numpy arrays, so they are unit-tested without Salmon.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepmapper._utils import atomic
from deepmapper.errors import InputError
from deepmapper.io import DENOVO_PREFIX, read_quant_sf

QUANT_COLUMNS = ("Name", "Length", "EffectiveLength", "TPM", "NumReads")


@dataclass
class CountTable:
    """``counts[i, j]`` = estimated reads of transcript ``features[i]`` in sample ``samples[j]``."""

    features: list[str]
    samples: list[str]
    counts: np.ndarray
    is_denovo: np.ndarray

    def to_tsv(self) -> str:
        lines = ["\t".join(["feature", "is_denovo", *self.samples])]
        for name, flag, row in zip(self.features, self.is_denovo, self.counts):
            # NumReads are fractional EM estimates; %.6g keeps them exact enough and short
            lines.append("\t".join([name, str(int(flag)), *(f"{v:.6g}" for v in row)]))
        return "\n".join(lines) + "\n"


def build_table(per_sample: dict[str, tuple[list[str], np.ndarray]], *, denovo_prefix: str = DENOVO_PREFIX,
                where: str | None = None) -> CountTable:
    """Stack per-sample (names, counts) into one table.

    Every sample must be quantified against the same index, so the names must
    agree exactly (same set, same order): a mismatch means quant files from two
    different hybrid references were mixed, which would silently misalign
    columns.
    """
    if not per_sample:
        raise InputError("no samples to tabulate", where=where, fix="quantify at least one sample.")
    samples = list(per_sample)
    ref_names = per_sample[samples[0]][0]
    if len(set(ref_names)) != len(ref_names):
        raise InputError("duplicate transcript names in the quant file", where=where, field=samples[0])
    cols = []
    for s in samples:
        names, values = per_sample[s]
        if names != ref_names:
            extra = sorted(set(names) ^ set(ref_names))[:3]
            raise InputError(f"sample '{s}' was quantified against a different index than '{samples[0]}'"
                             f" (transcripts differ, e.g. {extra})" if extra else
                             f"sample '{s}' lists the transcripts in a different order than '{samples[0]}'",
                             where=where, field=s, fix="quantify all samples against the same hybrid index.")
        cols.append(values)
    counts = np.column_stack(cols) if cols else np.zeros((len(ref_names), 0))
    is_denovo = np.array([n.startswith(denovo_prefix) for n in ref_names], dtype=bool)
    return CountTable(features=list(ref_names), samples=samples, counts=counts, is_denovo=is_denovo)


def table_from_quant_dir(quant_dir: str | os.PathLike, samples: list[str]) -> CountTable:
    quant_dir = Path(quant_dir)
    per = {s: read_quant_sf(quant_dir / s / "quant.sf") for s in samples}
    return build_table(per, where=str(quant_dir))


def check_denovo_ids(table: CountTable, denovo_ids: list[str], where: str) -> None:
    """Every DENOVO sequence must be a feature of the table (else the index was built without it)."""
    missing = sorted(set(denovo_ids) - set(table.features))
    if missing:
        raise InputError(f"{len(missing)} de-novo transcript(s) are not in the quant files (e.g. {missing[0]})",
                         where=where, field="--denovo",
                         fix="give the denovo.fa that the hybrid Salmon index was built from.")


def write_table(table: CountTable, path: str | os.PathLike) -> Path:
    return atomic.write_text(path, table.to_tsv())
