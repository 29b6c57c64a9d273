"""FASTQ checks and pooling (plain or gzipped).

The tools report a truncated or malformed FASTQ late and cryptically (HISAT2
"reads file contained a pattern with more than 2 quality values per base",
rnaSPAdes an assertion), so every FASTQ is checked up front and a problem is
reported with the file, the record number and the fix.
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from .. import atomic
from ..errors import InputError

# Checking every record of a multi-GB FASTQ in Python costs minutes; the first
# records catch wrong formats and mixed-up files, the tools catch the rest.
DEFAULT_MAX_RECORDS = 200_000


def open_text(path: str | os.PathLike):
    """Open plain or gzipped text by its magic bytes (not by its name)."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="ascii", errors="replace")
    return open(path, "r", encoding="ascii", errors="replace")


def check_fastq(path: str | os.PathLike, *, field: str = "fastq", max_records: int | None = DEFAULT_MAX_RECORDS
                ) -> int:
    """Validate a FASTQ file; return the number of records checked.

    Checks: the file exists and is not empty; each record is four lines; the
    header starts with '@'; the third line starts with '+'; sequence and quality
    have the same, non-zero length.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("FASTQ file not found", where=str(path), field=field,
                         fix="check the path (relative samplesheet paths are read from the current directory, "
                             "then from the samplesheet's directory).")
    if not path.is_file():
        raise InputError("not a regular file", where=str(path), field=field, fix="give the path of a FASTQ file.")
    n = 0
    try:
        with open_text(path) as fh:
            while max_records is None or n < max_records:
                header = fh.readline()
                if not header:
                    break
                if not header.strip() and not fh.readline():  # tolerate one trailing blank line
                    break
                seq, plus, qual = fh.readline(), fh.readline(), fh.readline()
                rec = n + 1
                if not header.startswith("@"):
                    raise InputError(f"record {rec} does not start with '@' (found {header[:20]!r})",
                                     where=str(path), field=field,
                                     fix="give a FASTQ file (4 lines per read: @name, sequence, +, qualities).")
                if not qual:
                    raise InputError(f"record {rec} ({header.strip()[:40]}) is truncated (fewer than 4 lines)",
                                     where=str(path), field=field, fix="re-copy or re-download the file.")
                if not plus.startswith("+"):
                    raise InputError(f"record {rec} ({header.strip()[:40]}): third line does not start with '+'",
                                     where=str(path), field=field,
                                     fix="give a FASTQ file with 4 lines per read (multi-line FASTQ is not "
                                         "supported).")
                s, q = seq.rstrip("\r\n"), qual.rstrip("\r\n")
                if not s or len(s) != len(q):
                    raise InputError(f"record {rec} ({header.strip()[:40]}): sequence length {len(s)} and "
                                     f"quality length {len(q)} differ or are zero",
                                     where=str(path), field=field, fix="re-copy the file; it may be corrupted.")
                n += 1
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise InputError(f"cannot read the file ({err})", where=str(path), field=field,
                         fix="check that it is a complete FASTQ or FASTQ.gz file.") from None
    if n == 0:
        raise InputError("FASTQ file holds no reads", where=str(path), field=field,
                         fix="remove this sample from the samplesheet or give the right file.")
    return n


def has_reads(path: str | os.PathLike) -> bool:
    """True when the (plain or gzipped) file holds at least one line; reads only its start."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open_text(path) as fh:
        return bool(fh.readline().strip())


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def concat_gz(inputs: list[Path], target: Path) -> Path:
    """Concatenate FASTQ files into one gzipped FASTQ.

    Gzipped inputs are copied byte for byte: a sequence of gzip members is
    itself a valid gzip file, so nothing is decompressed. Plain inputs are
    compressed on the way.
    """
    with atomic.atomic_path(target) as tmp, open(tmp, "wb") as out:
        for path in inputs:
            if path.stat().st_size == 0:
                continue
            if is_gzip(path):
                with open(path, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
            else:
                with open(path, "rb") as fh, gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0) as gz:
                    shutil.copyfileobj(fh, gz, 1 << 20)
    return target


def mate_of(read1: Path) -> str:
    """The expected file name of read 1's mate: the last '_1' / 'R1' before the extension becomes 2."""
    name = read1.name
    for a, b in (("_1.", "_2."), ("_R1.", "_R2."), (".1.", ".2.")):
        i = name.rfind(a)
        if i >= 0:
            return name[:i] + b + name[i + len(a):]
    return ""


def pool(reads_1: list[Path], reads_2: list[Path], outdir: Path) -> dict[str, Path]:
    """Pool unaligned reads of all samples for one assembly.

    Mates are matched by file name (``X_1.fastq.gz`` with ``X_2.fastq.gz``), so
    a design mixing single- and paired-end samples keeps its pairs: paired reads
    go to ``pooled_1/2.fastq.gz``, reads of single-end samples to
    ``pooled_single.fastq.gz`` when there are also pairs, else to
    ``pooled_1.fastq.gz``.
    """
    reads_1, reads_2 = [Path(p) for p in reads_1], [Path(p) for p in reads_2]
    if not reads_1:
        raise InputError("no read files to pool", field="--reads-1", fix="give at least one --reads-1 file.")
    for p in [*reads_1, *reads_2]:
        if not p.exists():
            raise InputError("read file not found", where=str(p), field="--reads-1/--reads-2",
                             fix="give the unaligned reads written by 'deepmapper denovo align'.")
    by_name = {p.name: p for p in reads_2}
    if len(by_name) != len(reads_2):
        raise InputError("two --reads-2 files share a file name, mates cannot be matched", field="--reads-2",
                         fix="give each sample's files a unique name (deepmapper denovo align does).")
    pairs, singles = [], []
    for r1 in reads_1:
        mate = by_name.pop(mate_of(r1), None)
        (pairs.append((r1, mate)) if mate is not None else singles.append(r1))
    if by_name:
        raise InputError(f"--reads-2 file(s) without a matching --reads-1: {', '.join(sorted(by_name))}",
                         field="--reads-2", fix="name mates X_1.fastq.gz and X_2.fastq.gz and give both.")
    outdir = Path(outdir)
    out: dict[str, Path] = {}
    if pairs:
        out["reads_1"] = concat_gz([a for a, _ in pairs], outdir / "pooled_1.fastq.gz")
        out["reads_2"] = concat_gz([b for _, b in pairs], outdir / "pooled_2.fastq.gz")
        if singles:
            out["single"] = concat_gz(singles, outdir / "pooled_single.fastq.gz")
    else:
        out["reads_1"] = concat_gz(singles, outdir / "pooled_1.fastq.gz")
    return out
