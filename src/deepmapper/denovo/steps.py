"""The de-novo steps: index, align, pool, assemble, tag, hybrid, quant, table, and all of them.

Every step validates its inputs, runs its tool through :func:`tools.run_tool`
(command line and version logged to ``logs/commands.tsv``) and moves the
tool's outputs into place only when the tool succeeded, so a killed step never
leaves an output a resumed run would trust.
"""
from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from deepmapper._utils import atomic
from deepmapper.config import InputConfig
from deepmapper.errors import ConfigError, InputError
from deepmapper.denovo import fastq as fq
from deepmapper.denovo.fasta import read_fasta, write_fasta
from deepmapper.denovo.samplesheet import Sample, check_group_sizes, read_samplesheet
from deepmapper.denovo.table import (
    DENOVO_PREFIX,
    CountTable,
    check_denovo_ids,
    table_from_quant_dir,
    write_table,
)
from deepmapper.denovo.tools import find_tool, run_tool

log = logging.getLogger(__name__)

ASSEMBLERS = ("rnaspades", "trinity")
MIN_CLASS_SIZE = InputConfig().min_class_size  # the one default, shared with 'deepmapper ingest'/'run'
HISAT2_INDEX_SUFFIXES = tuple(f".{i}.ht2" for i in range(1, 9))


@contextlib.contextmanager
def _scratch(outdir: Path, name: str) -> Iterator[Path]:
    """A temporary directory inside ``outdir`` (same file system, so results can be renamed out of it)."""
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=outdir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(src: Path, target: Path) -> None:
    """Move a finished directory onto ``target`` (the old one is removed only after the new one is complete)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(src, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, target)


def _empty_gz(path: Path) -> Path:
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0):
            pass
    return path


def _check_threads(threads: int) -> int:
    if threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1", field="--threads")
    return threads


# ---------------------------------------------------------------------------
# 1. reference index and alignment (HISAT2)
# ---------------------------------------------------------------------------
def index_reference(reference: str | os.PathLike, outdir: str | os.PathLike, *, threads: int = 1,
                    log_dir: str | os.PathLike | None = None) -> Path:
    """HISAT2 index of the reference cDNA; returns the prefix ``outdir/reference``."""
    reference, outdir = Path(reference), Path(outdir)
    _check_threads(threads)
    find_tool("hisat2-build")
    records = read_fasta(reference, field="--reference")  # not FASTA -> clear error before the tool runs
    log_dir = Path(log_dir) if log_dir else outdir / "logs"
    prefix = outdir / "reference"
    with _scratch(outdir, "hisat2_index") as tmp:
        src = reference
        if fq.is_gzip(reference):
            # hisat2-build wants plain FASTA; write the parsed records instead of a gzipped file
            src = write_fasta(tmp / "reference.fa", records)
        run_tool("index-reference", ["hisat2-build", "-p", str(threads), str(src), str(tmp / "reference")],
                 log_dir=log_dir, stdout_path=tmp / "hisat2_build.log")
        for suffix in HISAT2_INDEX_SUFFIXES:
            os.replace(tmp / f"reference{suffix}", Path(f"{prefix}{suffix}"))
    return prefix


def _check_index(prefix: Path) -> None:
    if not Path(f"{prefix}.1.ht2").exists():
        raise InputError("no HISAT2 index at this prefix (reference.1.ht2 .. .8.ht2 expected)", where=str(prefix),
                         field="--index", fix="run 'deepmapper denovo index-reference' and give DIR/reference.")


def align(sample: str, fastq_1: str | os.PathLike, fastq_2: str | os.PathLike | None, index: str | os.PathLike,
          outdir: str | os.PathLike, *, threads: int = 1, log_dir: str | os.PathLike | None = None,
          check_inputs: bool = True) -> dict[str, Path]:
    """Align one sample to the reference; keep the reads (pairs) that do not align.

    The reference is transcript cDNA, so spliced alignment is switched off
    (``--no-spliced-alignment``): a split read across two transcripts would be
    an artefact. The alignments themselves are not kept (``-S /dev/null``).
    """
    outdir, index = Path(outdir), Path(index)
    _check_threads(threads)
    find_tool("hisat2")
    _check_index(index)
    if check_inputs:
        fq.check_fastq(fastq_1, field="--fastq-1", mate=fastq_2 or None, mate_field="--fastq-2")
    log_dir = Path(log_dir) if log_dir else outdir / "logs"
    out1 = outdir / f"{sample}.unaligned_1.fastq.gz"
    out2 = outdir / f"{sample}.unaligned_2.fastq.gz"
    with _scratch(outdir, f"hisat2_{sample}") as tmp:
        cmd = ["hisat2", "-p", str(threads), "--no-spliced-alignment", "-x", str(index)]
        if fastq_2:
            cmd += ["-1", str(fastq_1), "-2", str(fastq_2), "--un-conc-gz", str(tmp / "unaligned_%.fastq.gz")]
        else:
            cmd += ["-U", str(fastq_1), "--un-gz", str(tmp / "unaligned_1.fastq.gz")]
        cmd += ["-S", os.devnull]
        run_tool(f"align:{sample}", cmd, log_dir=log_dir, stderr_path=tmp / "hisat2.log")
        produced = {"reads_1": out1, **({"reads_2": out2} if fastq_2 else {})}
        for key, target in produced.items():
            src = tmp / f"unaligned_{key[-1]}.fastq.gz"
            # HISAT2 may skip the file when every read aligned
            os.replace(src, target) if src.exists() else _empty_gz(target)
        os.replace(tmp / "hisat2.log", outdir / f"{sample}.hisat2.log")
    produced["log"] = outdir / f"{sample}.hisat2.log"
    return produced


# ---------------------------------------------------------------------------
# 2. pool
# ---------------------------------------------------------------------------
def pool(reads_1: list, reads_2: list, outdir: str | os.PathLike) -> dict[str, Path]:
    return fq.pool([Path(p) for p in reads_1], [Path(p) for p in reads_2], Path(outdir))


# ---------------------------------------------------------------------------
# 3. assemble
# ---------------------------------------------------------------------------
@dataclass
class AssemblyInputs:
    reads_1: Path
    reads_2: Path | None = None
    single: Path | None = None


def assembler_command(assembler: str, reads: AssemblyInputs, workdir: Path, *, threads: int, memory_gb: int
                      ) -> tuple[list[str], Path]:
    """The assembler's command line and the FASTA it will write (built here so it can be tested without it)."""
    if assembler == "rnaspades":
        cmd = ["rnaspades.py", "-t", str(threads), "-m", str(memory_gb), "-o", str(workdir / "rnaspades")]
        if reads.reads_2 is not None:
            cmd += ["-1", str(reads.reads_1), "-2", str(reads.reads_2)]
            if reads.single is not None:
                cmd += ["-s", str(reads.single)]
        else:
            cmd += ["-s", str(reads.reads_1)]
        return cmd, workdir / "rnaspades" / "transcripts.fasta"
    if assembler == "trinity":
        # Trinity requires 'trinity' in the output directory name; --full_cleanup leaves only
        # <output>.Trinity.fasta next to it.
        out = workdir / "trinity_out"
        cmd = ["Trinity", "--seqType", "fq", "--max_memory", f"{memory_gb}G", "--CPU", str(threads),
               "--output", str(out), "--full_cleanup"]
        if reads.reads_2 is not None:
            if reads.single is not None:
                raise ConfigError("Trinity cannot combine paired and single-end reads in one assembly",
                                  field="--assembler",
                                  fix="use --assembler rnaspades for a design that mixes single- and paired-end "
                                      "samples.")
            cmd += ["--left", str(reads.reads_1), "--right", str(reads.reads_2)]
        else:
            cmd += ["--single", str(reads.reads_1)]
        return cmd, workdir / "trinity_out.Trinity.fasta"
    raise ConfigError(f"unknown assembler '{assembler}'", field="--assembler", fix=f"use one of {ASSEMBLERS}.")


def assemble(reads_1: str | os.PathLike, outdir: str | os.PathLike, *, reads_2: str | os.PathLike | None = None,
             single: str | os.PathLike | None = None, assembler: str = "rnaspades", threads: int = 2,
             memory_gb: int = 4, log_dir: str | os.PathLike | None = None) -> Path:
    """Assemble the pooled unaligned reads into ``outdir/assembly.fa``.

    No reads to assemble (every read aligned to the reference) is a valid
    outcome: the assembly is then empty and the hybrid reference is the
    reference alone, with a warning.
    """
    outdir = Path(outdir)
    _check_threads(threads)
    if memory_gb < 1:
        raise ConfigError(f"--memory-gb {memory_gb} must be at least 1", field="--memory-gb")
    reads = AssemblyInputs(Path(reads_1), Path(reads_2) if reads_2 else None, Path(single) if single else None)
    for label, p in (("--reads-1", reads.reads_1), ("--reads-2", reads.reads_2), ("--single", reads.single)):
        if p is not None and not p.exists():
            raise InputError("read file not found", where=str(p), field=label,
                             fix="give the pooled reads written by 'deepmapper denovo pool'.")
    log_dir = Path(log_dir) if log_dir else outdir / "logs"
    target = outdir / "assembly.fa"
    with _scratch(outdir, "assembly") as tmp:
        cmd, produced = assembler_command(assembler, reads, tmp, threads=threads, memory_gb=memory_gb)
        find_tool(cmd[0])
        if not any(fq.has_reads(p) for p in (reads.reads_1, reads.single) if p is not None):
            log.warning("assemble: no unaligned reads to assemble; the de-novo set is empty")
            atomic.write_text(target, "")
            return target
        run_tool(f"assemble:{assembler}", cmd, log_dir=log_dir, stdout_path=outdir / f"{assembler}.log")
        if produced.exists():
            shutil.copyfile(produced, tmp / "assembly.fa")
            os.replace(tmp / "assembly.fa", target)
        else:
            # the assembler ran fine but found nothing long enough to report
            log.warning("assemble: %s reported no transcripts", assembler)
            atomic.write_text(target, "")
    return target


# ---------------------------------------------------------------------------
# 4. tag
# ---------------------------------------------------------------------------
def tag_records(assembly: dict[str, str], reference_ids, *, min_length: int = 200,
                prefix: str = DENOVO_PREFIX, where: str | None = None) -> dict[str, str]:
    """Prefix assembled ids with ``DENOVO_`` (idempotent), dropping contigs shorter than ``min_length``.

    A reference id that already starts with the prefix would make known and
    de-novo transcripts indistinguishable downstream: that is an error, not
    something to rename silently.
    """
    clash = sorted(r for r in reference_ids if r.startswith(prefix))
    if clash:
        raise InputError(f"the reference already uses the de-novo prefix '{prefix}' (e.g. {clash[0]})",
                         where=where, field="--reference",
                         fix=f"rename those reference ids, or give the reference without earlier {prefix} "
                             "contigs (the hybrid reference is built from reference + denovo.fa).")
    out: dict[str, str] = {}
    for name, seq in assembly.items():
        if len(seq) < min_length:
            continue
        new = name if name.startswith(prefix) else prefix + name
        if new in out:
            raise InputError(f"two assembled transcripts map to the id '{new}'", where=where, field="--assembly",
                             fix="give an assembly with unique ids.")
        out[new] = seq.upper()
    return out


def tag(assembly: str | os.PathLike, reference: str | os.PathLike, out: str | os.PathLike, *,
        min_length: int = 200) -> Path:
    if min_length < 1:
        raise ConfigError(f"--min-length {min_length} must be at least 1", field="--min-length")
    contigs = read_fasta(assembly, field="--assembly", allow_empty=True)
    ref = read_fasta(reference, field="--reference")
    tagged = tag_records(contigs, ref.keys(), min_length=min_length, where=str(assembly))
    log.info("tag: %d of %d assembled transcripts kept (>= %d nt)", len(tagged), len(contigs), min_length)
    return write_fasta(out, tagged)


# ---------------------------------------------------------------------------
# 5. hybrid reference + Salmon index
# ---------------------------------------------------------------------------
def hybrid(reference: str | os.PathLike, denovo: str | os.PathLike, outdir: str | os.PathLike, *,
           threads: int = 1, kmer: int = 31, log_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """``hybrid.fa`` = reference + DENOVO transcripts, and its Salmon index.

    ``--keepDuplicates``: Salmon would otherwise drop identical sequences from
    the index and their rows from quant.sf, and the feature set would depend on
    the data.
    """
    outdir = Path(outdir)
    _check_threads(threads)
    if kmer < 5 or kmer > 31 or kmer % 2 == 0:
        raise ConfigError(f"--kmer {kmer} must be odd and within 5..31", field="--kmer")
    find_tool("salmon")
    ref = read_fasta(reference, field="--reference")
    new = read_fasta(denovo, field="--denovo", allow_empty=True)
    tag_records({}, ref.keys(), where=str(reference))  # the prefix check
    foreign = [n for n in new if not n.startswith(DENOVO_PREFIX)]
    if foreign:
        raise InputError(f"the de-novo FASTA has ids without the '{DENOVO_PREFIX}' prefix (e.g. {foreign[0]})",
                         where=str(denovo), field="--denovo", fix="give the denovo.fa written by 'deepmapper "
                                                                  "denovo tag'.")
    log_dir = Path(log_dir) if log_dir else outdir / "logs"
    fa = write_fasta(outdir / "hybrid.fa", {**ref, **new})
    with _scratch(outdir, "salmon_index") as tmp:
        idx = tmp / "salmon_index"
        run_tool("hybrid", ["salmon", "index", "-t", str(fa), "-i", str(idx), "-k", str(kmer), "-p", str(threads),
                            "--keepDuplicates"], log_dir=log_dir, stdout_path=tmp / "salmon_index.stdout")
        _replace_dir(idx, outdir / "salmon_index")
    return {"fasta": fa, "index": outdir / "salmon_index"}


# ---------------------------------------------------------------------------
# 6. quant
# ---------------------------------------------------------------------------
def quant(sample: str, fastq_1: str | os.PathLike, fastq_2: str | os.PathLike | None, index: str | os.PathLike,
          outdir: str | os.PathLike, *, threads: int = 1, log_dir: str | os.PathLike | None = None,
          check_inputs: bool = True) -> Path:
    """Salmon quant of one sample against the hybrid index; returns ``outdir/ID/quant.sf``.

    The library type is detected (``-l A``); Salmon >= 1.0 maps with selective
    alignment by default, the mode its authors recommend.
    """
    outdir, index = Path(outdir), Path(index)
    _check_threads(threads)
    find_tool("salmon")
    if not (index / "versionInfo.json").exists():
        raise InputError("no Salmon index in this directory", where=str(index), field="--index",
                         fix="run 'deepmapper denovo hybrid' and give DIR/salmon_index.")
    if check_inputs:
        fq.check_fastq(fastq_1, field="--fastq-1", mate=fastq_2 or None, mate_field="--fastq-2")
    log_dir = Path(log_dir) if log_dir else outdir / "logs"
    with _scratch(outdir, f"salmon_{sample}") as tmp:
        cmd = ["salmon", "quant", "-i", str(index), "-l", "A", "-p", str(threads), "-o", str(tmp / sample)]
        cmd += ["-1", str(fastq_1), "-2", str(fastq_2)] if fastq_2 else ["-r", str(fastq_1)]
        run_tool(f"quant:{sample}", cmd, log_dir=log_dir)
        _replace_dir(tmp / sample, outdir / sample)
    return outdir / sample / "quant.sf"


# ---------------------------------------------------------------------------
# 7. table + dataset
# ---------------------------------------------------------------------------
def make_table(samplesheet: str | os.PathLike, quant_dir: str | os.PathLike, outdir: str | os.PathLike, *,
               denovo: str | os.PathLike | None = None, min_class_size: int = MIN_CLASS_SIZE) -> dict[str, Path]:
    """``sc_table.tsv`` (transcripts x samples NumReads, ``is_denovo``) and ``dataset.h5ad`` (samples x transcripts)."""
    outdir = Path(outdir)
    samples = read_samplesheet(samplesheet, check_files=False)
    table = table_from_quant_dir(quant_dir, [s.sample for s in samples])
    if denovo is not None:
        check_denovo_ids(table, list(read_fasta(denovo, field="--denovo", allow_empty=True)), str(denovo))
    # the dataset is built (and validated: class sizes, labels) before any file is written
    adata = table_dataset(table, samples, source=str(outdir / "sc_table.tsv"), min_class_size=min_class_size,
                          where=str(samplesheet))
    tsv = write_table(table, outdir / "sc_table.tsv")
    from deepmapper import io

    adata.uns["deepmapper"]["source_sha256"] = io.file_sha256(tsv)
    h5ad = io.write_dataset(adata, outdir / "dataset.h5ad")
    return {"table": tsv, "dataset": Path(h5ad)}


def table_dataset(table: CountTable, samples: list[Sample], *, source: str, min_class_size: int = MIN_CLASS_SIZE,
                  where: str | None = None):
    """The table as an ingest dataset: samples x transcripts, labels from the samplesheet.

    NumReads are counts, so they go through normalize_total + log1p like any
    counts input of ``deepmapper ingest``; ``var["is_denovo"]`` travels with
    the features so the findings can flag de-novo transcripts.
    """
    import numpy as np
    import pandas as pd

    from deepmapper import io

    labels = {s.sample: s.label for s in samples}
    var = pd.DataFrame({"is_denovo": table.is_denovo.astype(bool)}, index=pd.Index(table.features))
    X = io.normalize_log1p(np.ascontiguousarray(table.counts.T, dtype=np.float64))
    return io.build_dataset(X, table.samples, table.features, [labels[s] for s in table.samples],
                            label_key="label", source=source, var=var, matrix="NumReads", normalized=True,
                            min_class_size=min_class_size, where=where)


# ---------------------------------------------------------------------------
# all steps
# ---------------------------------------------------------------------------
def run_all(samplesheet: str | os.PathLike, reference: str | os.PathLike, outdir: str | os.PathLike, *,
            assembler: str = "rnaspades", threads: int = 2, memory_gb: int = 4, min_length: int = 200,
            kmer: int = 31, min_class_size: int = MIN_CLASS_SIZE) -> dict[str, Path]:
    """Every step in order, in one process, under ``outdir``:

    ``index/``, ``unaligned/``, ``pooled/``, ``assembly/``, ``denovo.fa``,
    ``hybrid/`` (hybrid.fa, salmon_index/), ``quant/ID/quant.sf``,
    ``sc_table.tsv``, ``dataset.h5ad``, ``logs/commands.tsv``.
    """
    outdir = Path(outdir)
    if assembler not in ASSEMBLERS:
        raise ConfigError(f"unknown assembler '{assembler}'", field="--assembler", fix=f"use one of {ASSEMBLERS}.")
    # all input checks first: a bad FASTQ of the last sample must not surface after the assembly
    samples = read_samplesheet(samplesheet)
    check_group_sizes(samples, min_class_size, where=str(samplesheet))
    read_fasta(reference, field="--reference")
    for tool in ("hisat2-build", "hisat2", "salmon", "rnaspades.py" if assembler == "rnaspades" else "Trinity"):
        find_tool(tool)
    logs = outdir / "logs"
    if (logs / "commands.tsv").exists():
        # the log describes this run; the previous run's log is kept beside it
        os.replace(logs / "commands.tsv", logs / "commands.previous.tsv")
    prefix = index_reference(reference, outdir / "index", threads=threads, log_dir=logs)
    r1, r2 = [], []
    for s in samples:
        got = align(s.sample, s.fastq_1, s.fastq_2, prefix, outdir / "unaligned", threads=threads, log_dir=logs,
                    check_inputs=False)
        r1.append(got["reads_1"])
        if "reads_2" in got:
            r2.append(got["reads_2"])
    pooled = pool(r1, r2, outdir / "pooled")
    assembly = assemble(pooled["reads_1"], outdir / "assembly", reads_2=pooled.get("reads_2"),
                        single=pooled.get("single"), assembler=assembler, threads=threads, memory_gb=memory_gb,
                        log_dir=logs)
    denovo = tag(assembly, reference, outdir / "denovo.fa", min_length=min_length)
    hyb = hybrid(reference, denovo, outdir / "hybrid", threads=threads, kmer=kmer, log_dir=logs)
    for s in samples:
        quant(s.sample, s.fastq_1, s.fastq_2, hyb["index"], outdir / "quant", threads=threads, log_dir=logs,
              check_inputs=False)
    made = make_table(samplesheet, outdir / "quant", outdir, denovo=denovo, min_class_size=min_class_size)
    return {"denovo": denovo, "hybrid": hyb["fasta"], "commands": logs / "commands.tsv", **made}
