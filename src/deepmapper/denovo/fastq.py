"""FASTQ checks and pooling (plain or gzipped).

The tools report a truncated or malformed FASTQ late and cryptically (HISAT2
"reads file contained a pattern with more than 2 quality values per base",
rnaSPAdes an assertion), so every FASTQ is read in full up front, with
Biopython's ``FastqGeneralIterator`` (streaming, one record at a time), and a
problem is reported with the file, the record number and the fix. Paired files
are read side by side: the same number of records and the same read names
(up to a ``/1`` ``/2`` suffix), record for record.
"""
from __future__ import annotations

import gzip
import itertools
import os
import re
import shutil
import zlib
from pathlib import Path

from deepmapper._utils import atomic
from deepmapper.errors import InputError


def open_text(path: str | os.PathLike):
    """Open plain or gzipped text by its magic bytes (not by its name)."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="ascii", errors="replace")
    return open(path, "r", encoding="ascii", errors="replace")


_READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)
_BASES = re.compile(r"[ACGTUNRYKMSWBDHVacgtunrykmswbdhv.]+\Z")


def _check_exists(path: Path, field: str) -> None:
    if not path.exists():
        raise InputError("FASTQ file not found", where=str(path), field=field,
                         fix="check the path (relative samplesheet paths are read from the current directory, "
                             "then from the samplesheet's directory).")
    if not path.is_file():
        raise InputError("not a regular file", where=str(path), field=field, fix="give the path of a FASTQ file.")


def _records(path: Path, field: str):
    """(title, sequence, quality) of every record, checked; InputError names the record on damage."""
    from Bio.SeqIO.QualityIO import FastqGeneralIterator

    n = 0
    try:
        with open_text(path) as fh:
            for title, seq, qual in FastqGeneralIterator(fh):
                n += 1
                if not seq:
                    raise InputError(f"record {n} ({title[:40]}) has an empty sequence", where=str(path),
                                     field=field, fix="re-copy the file; it may be corrupted.")
                if not _BASES.match(seq):   # a damaged record that the lenient parser read on through
                    raise _layout_error(path, field, n - 1, f"record {n} holds characters that are not bases")
                yield title, seq, qual
    except ValueError as err:
        raise _layout_error(path, field, n, str(err)) from None
    except _READ_ERRORS as err:
        raise InputError(f"cannot read the file after record {n} ({err})", where=str(path), field=field,
                         fix="check that it is a complete FASTQ or FASTQ.gz file (re-copy or re-download "
                             "it).") from None


def _layout_error(path: Path, field: str, n_ok: int, detail: str) -> InputError:
    """After Biopython stopped at record ``n_ok + 1``: name the first record that breaks the 4-line
    layout in plain words (re-reading the start of the file), else pass Biopython's reason on."""
    fix_layout = "give a FASTQ file (4 lines per read: @name, sequence, +, qualities)."
    try:
        with open_text(path) as fh:
            rec = 0
            while rec <= n_ok + 1:
                header = fh.readline()
                if not header:
                    break
                if not header.strip() and not fh.readline():
                    break
                seq, plus, qual = fh.readline(), fh.readline(), fh.readline()
                rec += 1
                name = header.strip()[:40]
                if not header.startswith("@"):
                    return InputError(f"record {rec} does not start with '@' (found {header[:20]!r})",
                                      where=str(path), field=field, fix=fix_layout)
                if not qual:
                    return InputError(f"record {rec} ({name}) is truncated (fewer than 4 lines)",
                                      where=str(path), field=field, fix="re-copy or re-download the file.")
                if not plus.startswith("+"):
                    return InputError(f"record {rec} ({name}): third line does not start with '+'",
                                      where=str(path), field=field, fix=fix_layout)
                s, q = seq.rstrip("\r\n"), qual.rstrip("\r\n")
                if not s or len(s) != len(q):
                    return InputError(f"record {rec} ({name}): sequence length {len(s)} and quality length "
                                      f"{len(q)} differ or are zero", where=str(path), field=field,
                                      fix="re-copy the file; it may be corrupted.")
    except _READ_ERRORS:
        pass
    return InputError(f"record {n_ok + 1} is malformed ({detail.rstrip('.')})", where=str(path), field=field,
                      fix="re-copy the file; it may be corrupted.")


def check_fastq(path: str | os.PathLike, *, field: str = "fastq", mate: str | os.PathLike | None = None,
                mate_field: str | None = None) -> int:
    """Read a whole FASTQ file (streaming) and check every record; return the number of records.

    Checks: the file exists and is not empty; every record has a header starting with '@', a
    sequence, a '+' line and as many quality values as bases. With ``mate`` (the read-2 file of a
    pair) both are read side by side: the same number of records, the same read names (a trailing
    ``/1`` / ``/2`` aside), record for record.
    """
    path = Path(path)
    _check_exists(path, field)
    if mate is not None:
        return _check_pair(path, Path(mate), field, mate_field or f"{field} (mate)")
    n = sum(1 for _ in _records(path, field))
    if n == 0:
        raise InputError("FASTQ file holds no reads", where=str(path), field=field,
                         fix="remove this sample from the samplesheet or give the right file.")
    return n


def read_name(title: str) -> str:
    """The read name of a FASTQ title: the first word, without a /1 or /2 mate suffix."""
    name = title.split(None, 1)[0] if title.strip() else ""
    return name[:-2] if name.endswith(("/1", "/2")) else name


def _check_pair(path1: Path, path2: Path, field1: str, field2: str) -> int:
    _check_exists(path2, field2)
    n = 0
    fix = "give the two files of one paired-end run, unsorted and unfiltered (or re-pair them, e.g. with repair.sh)."
    for a, b in itertools.zip_longest(_records(path1, field1), _records(path2, field2)):
        n += 1
        if a is None or b is None:
            short, other = (path1, path2) if a is None else (path2, path1)
            raise InputError(f"{short.name} ends after {n - 1} records but its mate {other.name} has more",
                             where=str(short), field=field1 if a is None else field2, fix=fix)
        if read_name(a[0]) != read_name(b[0]):
            raise InputError(f"record {n}: read '{read_name(a[0])[:40]}' in {path1.name} but "
                             f"'{read_name(b[0])[:40]}' in {path2.name}", where=str(path2), field=field2, fix=fix)
    if n == 0:
        raise InputError("FASTQ file holds no reads", where=str(path1), field=field1,
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
