"""``deepmapper denovo ...``: the de-novo hybrid assembly front end, one subcommand per step.

The Nextflow subworkflow calls the step commands; ``deepmapper denovo run``
runs them all in one process. All logic is in :mod:`deepmapper.denovo`.
"""
from __future__ import annotations

from pathlib import Path

import click

from deepmapper.cli._options import OUT_DIR, OUT_FILE

_IN = click.Path(exists=True, dir_okay=False, path_type=Path)
_IN_ANY = click.Path(exists=True, path_type=Path)
_ASSEMBLERS = click.Choice(["rnaspades", "trinity"])


def _min_class_size(func):
    from deepmapper.config import InputConfig

    default = InputConfig().min_class_size
    return click.option("--min-class-size", type=click.IntRange(min=3), default=default, show_default=True,
                        help="Fewest samples a group needs (the stratified split of 'deepmapper run').")(func)


def _threads(func):
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Threads for the external tool.")(func)


@click.group("denovo")
def denovo():
    """De-novo hybrid assembly: unaligned reads -> DENOVO_ transcripts -> hybrid reference -> counts."""


@denovo.command("index-reference")
@click.option("--reference", required=True, type=_IN, help="Reference transcript cDNA FASTA (may be gzipped).")
@click.option("--outdir", required=True, type=OUT_DIR, help="Writes DIR/reference.*.ht2 (index prefix DIR/reference).")
@_threads
def index_reference_cmd(reference, outdir, threads):
    """Build the HISAT2 index of the reference cDNA."""
    from deepmapper.denovo import steps

    prefix = steps.index_reference(reference, outdir, threads=threads)
    click.echo(str(prefix))


@denovo.command("align")
@click.option("--sample", required=True, help="Sample id (names the output files).")
@click.option("--fastq-1", "fastq_1", required=True, type=click.Path(path_type=Path),
              help="Reads (read 1 for paired-end); FASTQ or FASTQ.gz.")
@click.option("--fastq-2", "fastq_2", type=click.Path(path_type=Path), default=None,
              help="Read 2 for paired-end samples.")
@click.option("--index", required=True, type=click.Path(path_type=Path), help="HISAT2 index prefix (DIR/reference).")
@click.option("--outdir", required=True, type=OUT_DIR,
              help="Writes DIR/ID.unaligned_1.fastq.gz (+ _2), DIR/ID.hisat2.log.")
@_threads
def align_cmd(sample, fastq_1, fastq_2, index, outdir, threads):
    """Align one sample to the reference with HISAT2 and keep the reads that do not align."""
    from deepmapper.denovo import samplesheet, steps

    samplesheet.check_sample_id(sample, field="--sample")
    steps.align(sample, fastq_1, fastq_2, index, outdir, threads=threads)


@denovo.command("pool")
@click.option("--reads-1", "reads_1", multiple=True, required=True, type=_IN,
              help="Unaligned reads (read 1), repeatable: one per sample.")
@click.option("--reads-2", "reads_2", multiple=True, type=_IN,
              help="Unaligned read 2 files, repeatable; matched to --reads-1 by name (X_1 / X_2).")
@click.option("--outdir", required=True, type=OUT_DIR,
              help="Writes DIR/pooled_1.fastq.gz (+ _2, + pooled_single.fastq.gz for mixed designs).")
def pool_cmd(reads_1, reads_2, outdir):
    """Pool the unaligned reads of all samples."""
    from deepmapper.denovo import steps

    steps.pool(list(reads_1), list(reads_2), outdir)


@denovo.command("assemble")
@click.option("--reads-1", "reads_1", required=True, type=_IN, help="Pooled reads (read 1, or single-end).")
@click.option("--reads-2", "reads_2", type=_IN, default=None, help="Pooled read 2 (paired-end).")
@click.option("--single", type=_IN, default=None, help="Pooled single-end reads beside pairs (mixed designs).")
@click.option("--assembler", type=_ASSEMBLERS, default="rnaspades", show_default=True,
              help="rnaspades (rnaspades.py) or trinity (Trinity, e.g. in its container).")
@click.option("--outdir", required=True, type=OUT_DIR, help="Writes DIR/assembly.fa.")
@_threads
@click.option("--memory-gb", type=click.IntRange(min=1), default=4, show_default=True,
              help="Memory limit of the assembler in GB.")
def assemble_cmd(reads_1, reads_2, single, assembler, outdir, threads, memory_gb):
    """Assemble the pooled unaligned reads de novo."""
    from deepmapper.denovo import steps

    steps.assemble(reads_1, outdir, reads_2=reads_2, single=single, assembler=assembler, threads=threads,
                   memory_gb=memory_gb)


@denovo.command("tag")
@click.option("--assembly", required=True, type=_IN, help="Assembled transcripts (FASTA).")
@click.option("--reference", required=True, type=_IN, help="Reference cDNA FASTA (its ids must not use DENOVO_).")
@click.option("--out", required=True, type=OUT_FILE, help="Output FASTA with DENOVO_ ids (e.g. denovo.fa).")
@click.option("--min-length", type=click.IntRange(min=1), default=200, show_default=True,
              help="Drop assembled transcripts shorter than this (nt).")
def tag_cmd(assembly, reference, out, min_length):
    """Prefix assembled transcript ids with DENOVO_ (idempotent)."""
    from deepmapper.denovo import steps

    steps.tag(assembly, reference, out, min_length=min_length)


@denovo.command("hybrid")
@click.option("--reference", required=True, type=_IN, help="Reference cDNA FASTA.")
@click.option("--denovo", "denovo_fa", required=True, type=_IN, help="DENOVO_ transcripts (from 'tag').")
@click.option("--outdir", required=True, type=OUT_DIR, help="Writes DIR/hybrid.fa and DIR/salmon_index/.")
@_threads
@click.option("--kmer", type=int, default=31, show_default=True, help="Salmon index k-mer length (odd, <= 31).")
def hybrid_cmd(reference, denovo_fa, outdir, threads, kmer):
    """Build the hybrid reference (reference + DENOVO) and its Salmon index."""
    from deepmapper.denovo import steps

    steps.hybrid(reference, denovo_fa, outdir, threads=threads, kmer=kmer)


@denovo.command("quant")
@click.option("--sample", required=True, help="Sample id (the output directory DIR/ID).")
@click.option("--fastq-1", "fastq_1", required=True, type=click.Path(path_type=Path), help="Reads (read 1).")
@click.option("--fastq-2", "fastq_2", type=click.Path(path_type=Path), default=None, help="Read 2 (paired-end).")
@click.option("--index", required=True, type=_IN_ANY, help="Salmon index directory (DIR/salmon_index).")
@click.option("--outdir", required=True, type=OUT_DIR, help="Writes DIR/ID/quant.sf.")
@_threads
def quant_cmd(sample, fastq_1, fastq_2, index, outdir, threads):
    """Quantify one sample against the hybrid index with Salmon."""
    from deepmapper.denovo import samplesheet, steps

    samplesheet.check_sample_id(sample, field="--sample")
    steps.quant(sample, fastq_1, fastq_2, index, outdir, threads=threads)


@denovo.command("table")
@click.option("--samplesheet", required=True, type=_IN, help="CSV sample,fastq_1,fastq_2,label.")
@click.option("--quant-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory holding ID/quant.sf for every sample.")
@click.option("--denovo", "denovo_fa", type=_IN, default=None,
              help="DENOVO_ FASTA; checks that every de-novo transcript was quantified.")
@click.option("--outdir", required=True, type=OUT_DIR, help="Writes DIR/sc_table.tsv and DIR/dataset.h5ad.")
@_min_class_size
def table_cmd(samplesheet, quant_dir, denovo_fa, outdir, min_class_size):
    """Transcripts x samples table (with is_denovo) and the dataset for 'deepmapper run'."""
    from deepmapper.denovo import steps

    steps.make_table(samplesheet, quant_dir, outdir, denovo=denovo_fa, min_class_size=min_class_size)


@denovo.command("run")
@click.option("--samplesheet", required=True, type=_IN, help="CSV sample,fastq_1,fastq_2,label.")
@click.option("--reference", required=True, type=_IN, help="Reference transcript cDNA FASTA.")
@click.option("--outdir", required=True, type=OUT_DIR,
              help="Writes DIR/sc_table.tsv, DIR/denovo.fa, DIR/dataset.h5ad, DIR/logs/commands.tsv, ...")
@click.option("--assembler", type=_ASSEMBLERS, default="rnaspades", show_default=True, help="De-novo assembler.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Threads per tool.")
@click.option("--memory-gb", type=click.IntRange(min=1), default=4, show_default=True,
              help="Memory limit of the assembler in GB.")
@click.option("--min-length", type=click.IntRange(min=1), default=200, show_default=True,
              help="Shortest assembled transcript kept (nt).")
@click.option("--kmer", type=int, default=31, show_default=True, help="Salmon index k-mer length.")
@_min_class_size
def run_cmd(samplesheet, reference, outdir, assembler, threads, memory_gb, min_length, kmer, min_class_size):
    """All steps: align, pool, assemble, tag, hybrid, quant, table."""
    from deepmapper.denovo import steps

    out = steps.run_all(samplesheet, reference, outdir, assembler=assembler, threads=threads, memory_gb=memory_gb,
                        min_length=min_length, kmer=kmer, min_class_size=min_class_size)
    click.echo(f"wrote {out['table']}, {out['denovo']}, {out['dataset']}")


@denovo.command("simulate")
@click.option("--outdir", required=True, type=OUT_DIR,
              help="Writes reference.fa, novel.fa, reads/*.fastq.gz, samplesheet.csv, truth.tsv, true_counts.tsv.")
@click.option("--n-reference", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--n-novel", type=click.IntRange(min=0), default=6, show_default=True)
@click.option("--n-novel-de", type=click.IntRange(min=0), default=4, show_default=True,
              help="Novel transcripts planted as differentially expressed.")
@click.option("--samples-per-group", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--reads-per-sample", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--single-per-group", type=click.IntRange(min=0), default=0, show_default=True,
              help="Samples per group written single-end (the rest paired-end).")
@click.option("--fold-change", type=click.FloatRange(min=1.0), default=6.0, show_default=True)
@click.option("--novel-model", type=click.Choice(["markov", "random"]), default="markov", show_default=True,
              help="Novel transcripts from the Markov model learned on the reference, or iid (control).")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_cmd(outdir, **params):
    """Generate a small test experiment (no real genome needed; see deepmapper.datasets.seqsim)."""
    from deepmapper.datasets.seqsim import SimConfig, simulate_experiment

    sim = simulate_experiment(outdir, SimConfig(**params))
    click.echo(f"wrote {sim.samplesheet} ({len(sim.samples)} samples), {sim.reference_fasta}, {sim.novel_fasta}")


COMMANDS = [denovo]
