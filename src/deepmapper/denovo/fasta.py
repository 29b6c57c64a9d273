"""Reading, checking and writing FASTA (plain or gzipped), with Biopython's ``SimpleFastaParser``."""
from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Iterator

from deepmapper._utils import atomic
from deepmapper.errors import InputError
from deepmapper.denovo.fastq import open_text

# IUPAC nucleotide codes (assemblers and cDNA files use N and friends).
_SEQ_OK = re.compile(r"^[ACGTUNRYKMSWBDHVacgtunrykmswbdhv.*-]*$")


_COMPLEMENT = bytes.maketrans(b"ACGTNacgtn", b"TGCANtgcan")


def revcomp(seq: str) -> str:
    """Reverse complement (N and lower case kept)."""
    return seq.encode("ascii").translate(_COMPLEMENT)[::-1].decode("ascii")


def iter_fasta(path: str | os.PathLike, *, field: str = "fasta") -> Iterator[tuple[str, str]]:
    """Yield (id, sequence) of every record, streaming; the id is the header up to the first whitespace.

    Raises InputError (naming the file, the record and the fix) when the file is not FASTA.
    """
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    path = Path(path)
    if not path.exists():
        raise InputError("FASTA file not found", where=str(path), field=field, fix="check the path.")
    n = 0
    try:
        with open_text(path) as fh:
            first = ""
            for line in fh:                     # SimpleFastaParser skips text before the first '>'
                if line.strip():
                    first = line
                    break
            if first and not first.startswith(">"):
                raise InputError(f"record 1: the file does not start with a '>' header, it is not FASTA"
                                 f" (found {first.strip()[:20]!r})", where=str(path), field=field,
                                 fix="give a (gzipped) FASTA file of transcript sequences.")
            if not first:
                return
            fh.seek(0)
            for title, seq in SimpleFastaParser(fh):
                n += 1
                parts = title.split()
                if not parts:
                    raise InputError(f"record {n}: a '>' header without an id", where=str(path), field=field,
                                     fix="give every record an id ('>id description').")
                if not _SEQ_OK.match(seq):
                    bad = sorted(set(re.sub(r"[ACGTUNRYKMSWBDHVacgtunrykmswbdhv.*-]", "", seq)))[:5]
                    raise InputError(f"record {n} ({parts[0][:40]}): characters {''.join(bad)!r} are not "
                                     "nucleotides", where=str(path), field=field,
                                     fix="give a nucleotide FASTA (cDNA), not protein or FASTQ.")
                yield parts[0], seq
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(f"cannot read the file after record {n} ({err})", where=str(path), field=field,
                         fix="check that it is a complete FASTA or FASTA.gz file (re-copy it).") from None


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
