"""Reading, checking and writing FASTA (plain or gzipped)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

from .. import atomic
from ..errors import InputError
from .fastq import open_text

# IUPAC nucleotide codes (assemblers and cDNA files use N and friends).
_SEQ_OK = re.compile(r"^[ACGTUNRYKMSWBDHVacgtunrykmswbdhv.*-]*$")


def iter_fasta(path: str | os.PathLike, *, field: str = "fasta") -> Iterator[tuple[str, str]]:
    """Yield (id, sequence); the id is the header up to the first whitespace.

    Raises InputError (naming the file, line and fix) when the file is not FASTA.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("FASTA file not found", where=str(path), field=field, fix="check the path.")
    name, chunks = None, []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if line.startswith(">"):
                if name is not None:
                    yield name, "".join(chunks)
                parts = line[1:].split()
                if not parts:
                    raise InputError(f"line {lineno}: a '>' header without an id", where=str(path), field=field,
                                     fix="give every record an id ('>id description').")
                name, chunks = parts[0], []
            elif not line.strip():
                continue
            else:
                if name is None:
                    raise InputError(f"line {lineno}: the file does not start with a '>' header, it is not FASTA"
                                     f" (found {line[:20]!r})", where=str(path), field=field,
                                     fix="give a (gzipped) FASTA file of transcript sequences.")
                if not _SEQ_OK.match(line):
                    bad = sorted(set(re.sub(r"[ACGTUNRYKMSWBDHVacgtunrykmswbdhv.*-]", "", line)))[:5]
                    raise InputError(f"line {lineno}: characters {''.join(bad)!r} are not nucleotides",
                                     where=str(path), field=field,
                                     fix="give a nucleotide FASTA (cDNA), not protein or FASTQ.")
                chunks.append(line.strip())
    if name is not None:
        yield name, "".join(chunks)


def read_fasta(path: str | os.PathLike, *, field: str = "fasta", allow_empty: bool = False) -> dict[str, str]:
    """All records as {id: sequence}; ids must be unique and sequences non-empty."""
    records: dict[str, str] = {}
    for name, seq in iter_fasta(path, field=field):
        if name in records:
            raise InputError(f"the id '{name}' occurs twice", where=str(path), field=field,
                             fix="make the sequence ids unique.")
        if not seq:
            raise InputError(f"the record '{name}' has no sequence", where=str(path), field=field,
                             fix="remove empty records.")
        records[name] = seq
    if not records and not allow_empty:
        raise InputError("the file holds no FASTA records", where=str(path), field=field,
                         fix="give a FASTA file with at least one '>id' record.")
    return records


def write_fasta(path: str | os.PathLike, records: dict[str, str], width: int = 60) -> Path:
    parts = []
    for name, seq in records.items():
        parts.append(f">{name}\n")
        parts.extend(seq[i:i + width] + "\n" for i in range(0, len(seq), width))
    return atomic.write_text(path, "".join(parts))
