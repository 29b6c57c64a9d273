"""Test data for the de-novo front end: transcripts, reads and planted differential expression.

No real genome ships with DeepMapper, so the "reference" transcripts are sampled
too. The chain is:

1. a *seed* k-th order Markov model is trained on :data:`SEED_SEQUENCE`, a short
   coding-like sequence written out by hand (GAPDH-like, from memory; only its
   k-mer statistics matter, it is not meant to match any database entry);
2. the reference transcripts are sampled from the seed model;
3. a model is *learned from the reference transcripts* (what a user would do with
   a real cDNA FASTA) and the novel transcripts are sampled from it, so novel and
   known transcripts share nucleotide context but no sequence;
4. reads (single- or paired-end, unstranded, substitution errors, gzipped FASTQ)
   are simulated from reference + novel transcripts with per-sample
   negative-binomial-like noise; some novel transcripts are planted as
   differentially expressed between two labelled groups.

Counts of the Markov model are strand-symmetric (each training sequence and its
reverse complement are counted) and carry a pseudocount, so every context has a
defined next-base distribution. Everything is seeded and numpy-vectorised where
it matters (reads are cut from one byte array per transcript).
"""
from __future__ import annotations

import csv
import gzip
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepmapper._utils import atomic
from deepmapper.denovo.fasta import revcomp, write_fasta
from deepmapper.errors import ConfigError

ALPHABET = "ACGT"
_CODE = np.full(256, -1, dtype=np.int8)
for _i, _b in enumerate(ALPHABET):
    _CODE[ord(_b)] = _i
    _CODE[ord(_b.lower())] = _i

# Hand-written coding-like sequence that seeds the Markov model (see module docstring).
SEED_SEQUENCE = (
    "ATGGGGAAGGTGAAGGTCGGAGTCAACGGATTTGGTCGTATTGGGCGCCTGGTCACCAGGGCTGCTTTTAACTCTGGTAAAGTGGATATTGTTGCC"
    "ATCAATGACCCCTTCATTGACCTCAACTACATGGTTTACATGTTCCAATATGATTCCACCCATGGCAAATTCCATGGCACCGTCAAGGCTGAGAAC"
    "GGGAAGCTTGTCATCAATGGAAATCCCATCACCATCTTCCAGGAGCGAGATCCCTCCAAAATCAAGTGGGGCGATGCTGGCGCTGAGTACGTCGTG"
    "GAGTCCACTGGCGTCTTCACCACCATGGAGAAGGCTGGGGCTCATTTGCAGGGGGGAGCCAAAAGGGTCATCATCTCTGCCCCCTCTGCTGATGCC"
    "CCCATGTTCGTCATGGGTGTGAACCATGAGAAGTATGACAACAGCCTCAAGATCATCAGCAATGCCTCCTGCACCACCAACTGCTTAGCACCCCTG"
    "GCCAAGGTCATCCATGACAACTTTGGTATCGTGGAAGGACTCATGACCACAGTCCATGCCATCACTGCCACCCAGAAGACTGTGGATGGCCCCTCC"
    "GGGAAACTGTGGCGTGATGGCCGCGGGGCTCTCCAGAACATCATCCCTGCCTCTACTGGCGCTGCCAAGGCTGTGGGCAAGGTCATCCCTGAGCTG"
    "AACGGGAAGCTCACTGGCATGGCCTTCCGTGTCCCCACTGCCAACGTGTCAGTGGTGGACCTGACCTGCCGTCTAGAAAAACCTGCCAAATATGAT"
    "GACATCAAGAAGGTGGTGAAGCAGGCGTCGGAGGGCCCCCTCAAGGGCATCCTGGGCTACACTGAGCACCAGGTGGTCTCCTCTGACTTCAACAGC"
    "GACACCCACTCCTCCACCTTTGACGCTGGGGCTGGCATTGCCCTCAACGACCACTTTGTCAAGCTCATTTCCTGGTATGACAACGAATTTGGCTAC"
    "AGCAACAGGGTGGTGGACCTCATGGCCCACATGGCCTCCAAGGAGTAA"
)


def _encode(seq: str) -> np.ndarray:
    return _CODE[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]


# ---------------------------------------------------------------------------
# Markov model of nucleotide context
# ---------------------------------------------------------------------------
@dataclass
class MarkovModel:
    """k-th order Markov chain: P(next base | previous k bases).

    ``counts[c, b]`` counts base ``b`` after context ``c`` (context index in
    base 4, first base most significant), pseudocount included.
    """

    k: int
    counts: np.ndarray

    @classmethod
    def fit(cls, sequences, k: int = 3, pseudocount: float = 1.0) -> "MarkovModel":
        """Strand-symmetric counts over all training sequences (non-ACGT bases break contexts)."""
        if k < 0 or k > 10:
            raise ConfigError(f"Markov order k={k} is out of range", field="k", fix="use 0 <= k <= 10.")
        if pseudocount < 0:
            raise ConfigError("the pseudocount must be >= 0", field="pseudocount")
        n_ctx = 4 ** k
        counts = np.zeros(n_ctx * 4, dtype=np.float64)
        seen = 0
        for seq in sequences:
            for s in (seq, revcomp(seq)):
                codes = _encode(s).astype(np.int64)
                if len(codes) <= k:
                    continue
                # index of each (k+1)-mer, invalid where any base is not ACGT
                idx = np.zeros(len(codes) - k, dtype=np.int64)
                bad = np.zeros(len(codes) - k, dtype=bool)
                for j in range(k + 1):
                    part = codes[j:len(codes) - k + j]
                    idx = idx * 4 + np.maximum(part, 0)
                    bad |= part < 0
                np.add.at(counts, idx[~bad], 1.0)
                seen += int((~bad).sum())
        if seen == 0:
            raise ConfigError(f"no {k + 1}-mer of A/C/G/T found in the training sequences", field="sequences",
                              fix="train on longer sequences or use a smaller k.")
        return cls(k=k, counts=counts.reshape(n_ctx, 4) + pseudocount)

    @property
    def transition(self) -> np.ndarray:
        return self.counts / self.counts.sum(axis=1, keepdims=True)

    def gc_content(self) -> float:
        totals = self.counts.sum(axis=0)
        return float((totals[1] + totals[2]) / totals.sum())

    def sample(self, length: int, rng: np.random.Generator) -> str:
        """One sequence; the first k bases come from the context frequencies."""
        if length <= 0:
            raise ConfigError("the sequence length must be positive", field="length")
        k = self.k
        trans = self.transition
        cum = np.cumsum(trans, axis=1)
        out = np.empty(length, dtype=np.int64)
        u = rng.random(length)
        if k == 0:
            out[:] = np.searchsorted(cum[0], u, side="right").clip(0, 3)
        else:
            ctx_p = self.counts.sum(axis=1)
            ctx = int(rng.choice(len(ctx_p), p=ctx_p / ctx_p.sum()))
            start = [(ctx // 4 ** (k - 1 - j)) % 4 for j in range(k)]
            n0 = min(k, length)
            out[:n0] = start[:n0]
            mask = 4 ** k
            for i in range(n0, length):
                b = int(np.searchsorted(cum[ctx], u[i], side="right"))
                b = min(b, 3)
                out[i] = b
                ctx = (ctx * 4 + b) % mask
        return "".join(ALPHABET[b] for b in out)

    def log_likelihood(self, seq: str) -> float:
        """Mean log-probability per base of ``seq`` (after its first k bases)."""
        codes = _encode(seq).astype(np.int64)
        if len(codes) <= self.k or (codes < 0).any():
            raise ConfigError("need a sequence of A/C/G/T longer than k", field="seq")
        logp = np.log(self.transition)
        ctx = 0
        for b in codes[: self.k]:
            ctx = ctx * 4 + int(b)
        total = 0.0
        mask = 4 ** self.k
        for b in codes[self.k:]:
            total += logp[ctx if self.k else 0, b]
            ctx = (ctx * 4 + int(b)) % mask if self.k else 0
        return total / (len(codes) - self.k)


def random_sequence(length: int, rng: np.random.Generator, gc: float = 0.5) -> str:
    """Control: independent bases with a given GC content."""
    if not 0.0 <= gc <= 1.0:
        raise ConfigError(f"gc={gc} must be within [0, 1]", field="gc")
    p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    return "".join(ALPHABET[b] for b in rng.choice(4, size=length, p=p))


# ---------------------------------------------------------------------------
# reads
# ---------------------------------------------------------------------------
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_COMP_TABLE = np.arange(256, dtype=np.uint8)
for _a, _b in zip(b"ACGTN", b"TGCAN"):
    _COMP_TABLE[_a] = _b


def _add_errors(reads: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Substitute bases at ``rate`` (the new base always differs); return reads and quality bytes."""
    hit = rng.random(reads.shape) < rate
    shift = rng.integers(1, 4, size=reads.shape, dtype=np.uint8)
    codes = _CODE[reads].astype(np.int16)
    new = _BASES[(codes + shift) % 4]
    reads = np.where(hit, new, reads)
    # Illumina-like: high quality, a bit lower toward the 3' end, low where an error was made
    n, length = reads.shape
    base_q = 38 - (np.arange(length) * 8 // max(length, 1))
    qual = np.clip(base_q[None, :] + rng.integers(-3, 2, size=(n, length)), 2, 41)
    qual = np.where(hit, rng.integers(5, 16, size=(n, length)), qual)
    return reads, (qual + 33).astype(np.uint8)


def simulate_fragments(seq: str, n: int, rng: np.random.Generator, *, read_length: int, paired: bool,
                       fragment_mean: float, fragment_sd: float, error_rate: float):
    """``n`` reads (or pairs) from one transcript, unstranded. Returns (r1, q1, r2, q2) byte arrays."""
    arr = np.frombuffer(seq.encode("ascii"), dtype=np.uint8)
    length = len(arr)
    if length < read_length:
        raise ConfigError(f"a transcript of {length} nt is shorter than the read length {read_length}",
                          field="read_length", fix="use shorter reads or longer transcripts.")
    if paired:
        frag = np.clip(np.rint(rng.normal(fragment_mean, fragment_sd, n)), read_length, length).astype(np.int64)
    else:
        frag = np.full(n, read_length, dtype=np.int64)
    start = (rng.random(n) * (length - frag + 1)).astype(np.int64)
    cols = np.arange(read_length)
    left = arr[start[:, None] + cols[None, :]]
    right_rc = _COMP_TABLE[arr[(start + frag - 1)[:, None] - cols[None, :]]]
    # unstranded library: half of the fragments come from the opposite strand
    flip = rng.random(n) < 0.5
    r1 = np.where(flip[:, None], right_rc, left)
    r2 = np.where(flip[:, None], left, right_rc)
    r1, q1 = _add_errors(r1, error_rate, rng)
    if not paired:
        return r1, q1, None, None
    r2, q2 = _add_errors(r2, error_rate, rng)
    return r1, q1, r2, q2


def _write_fastq_gz(path: Path, names: list[str], reads: np.ndarray, quals: np.ndarray, mate: int | None) -> None:
    suffix = f"/{mate}" if mate else ""
    lines = []
    for name, r, q in zip(names, reads, quals):
        lines.append(f"@{name}{suffix}\n{r.tobytes().decode()}\n+\n{q.tobytes().decode()}\n")
    with atomic.atomic_path(path) as tmp:
        # mtime=0 and no file name: identical inputs give byte-identical files
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=3) as fh:
            fh.write("".join(lines).encode("ascii"))


# ---------------------------------------------------------------------------
# a whole experiment
# ---------------------------------------------------------------------------
@dataclass
class SimConfig:
    n_reference: int = 40
    n_novel: int = 6
    n_novel_de: int = 4                    # planted differentially expressed novel transcripts
    n_reference_de: int = 0                # known transcripts made DE too (a realistic mix)
    samples_per_group: int = 4
    groups: tuple[str, str] = ("control", "treated")
    reads_per_sample: int = 3000
    read_length: int = 100
    paired: bool = True
    single_per_group: int = 0              # with paired=True: this many samples per group are single-end
    fragment_mean: float = 250.0
    fragment_sd: float = 30.0
    error_rate: float = 0.005
    fold_change: float = 6.0
    novel_share: float = 0.2               # expected fraction of fragments from novel transcripts
    dispersion: float = 0.05               # biological variation (gamma, NB-like)
    length_range: tuple[int, int] = (500, 1200)
    k: int = 3
    pseudocount: float = 1.0
    novel_model: str = "markov"            # "random": novel transcripts from the iid control instead
    seed: int = 0

    def validate(self) -> None:
        if self.n_novel_de > self.n_novel:
            raise ConfigError("more DE novel transcripts than novel transcripts", field="n_novel_de")
        if self.n_reference_de > self.n_reference:
            raise ConfigError("more DE reference transcripts than reference transcripts", field="n_reference_de")
        if self.samples_per_group < 1 or self.reads_per_sample < 1:
            raise ConfigError("need at least one sample per group and one read per sample",
                              field="samples_per_group")
        if self.length_range[0] < self.read_length or self.length_range[0] > self.length_range[1]:
            raise ConfigError(f"length_range {self.length_range} must be >= read_length and increasing",
                              field="length_range")
        if self.novel_model not in ("markov", "random"):
            raise ConfigError(f"unknown novel_model '{self.novel_model}'", field="novel_model",
                              fix="use markov or random.")
        if len(set(self.groups)) != 2:
            raise ConfigError("need two distinct group labels", field="groups")


@dataclass
class SimResult:
    outdir: Path
    reference_fasta: Path
    novel_fasta: Path
    samplesheet: Path
    truth: Path
    reference: dict[str, str] = field(default_factory=dict)
    novel: dict[str, str] = field(default_factory=dict)
    de_novel: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


def simulate_experiment(outdir: str | Path, cfg: SimConfig | None = None) -> SimResult:
    """Write reference.fa, novel.fa (truth), FASTQs, samplesheet.csv and truth.tsv under ``outdir``.

    Expression: each transcript gets a log-normal base abundance; fragments are
    drawn in proportion to abundance x length; every sample multiplies the
    abundances by gamma noise (``dispersion``) and the planted DE transcripts by
    ``fold_change`` in the second group (half of them up, half down, so the
    direction alone does not give the answer away).
    """
    cfg = cfg or SimConfig()
    cfg.validate()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)

    seed_model = MarkovModel.fit([SEED_SEQUENCE], k=cfg.k, pseudocount=cfg.pseudocount)
    lo, hi = cfg.length_range
    reference = {f"REF{i + 1:04d}": seed_model.sample(int(rng.integers(lo, hi + 1)), rng)
                 for i in range(cfg.n_reference)}
    ref_model = MarkovModel.fit(reference.values(), k=cfg.k, pseudocount=cfg.pseudocount)
    if cfg.novel_model == "markov":
        novel = {f"NOVEL{i + 1:03d}": ref_model.sample(int(rng.integers(lo, hi + 1)), rng)
                 for i in range(cfg.n_novel)}
    else:  # control: same GC content, no nucleotide context
        novel = {f"NOVEL{i + 1:03d}": random_sequence(int(rng.integers(lo, hi + 1)), rng, ref_model.gc_content())
                 for i in range(cfg.n_novel)}

    names = list(reference) + list(novel)
    seqs = [reference[n] if n in reference else novel[n] for n in names]
    lengths = np.array([len(s) for s in seqs], dtype=np.float64)
    is_novel = np.array([n in novel for n in names])
    base = rng.lognormal(mean=0.0, sigma=0.6, size=len(names))
    # scale the novel block so it carries about `novel_share` of the fragments
    w = base * lengths
    w_nov, w_ref = w[is_novel].sum(), w[~is_novel].sum()
    if cfg.n_novel and cfg.novel_share > 0:
        base[is_novel] *= cfg.novel_share / (1 - cfg.novel_share) * w_ref / w_nov
    de_novel = list(novel)[: cfg.n_novel_de]
    de_ref = list(reference)[: cfg.n_reference_de]
    direction = {n: (1 if i % 2 == 0 else -1) for i, n in enumerate(de_novel + de_ref)}

    n_samples = 2 * cfg.samples_per_group
    samples = []
    truth_rows = []
    for s in range(n_samples):
        group = cfg.groups[s // cfg.samples_per_group]
        treated = s >= cfg.samples_per_group
        sample = f"S{s + 1:02d}_{group}"
        # the last `single_per_group` samples of each group are single-end (a mixed design)
        paired = cfg.paired and s % cfg.samples_per_group < cfg.samples_per_group - cfg.single_per_group
        abundance = base * rng.gamma(1 / cfg.dispersion, cfg.dispersion, size=len(names))
        for n, d in direction.items():
            j = names.index(n)
            # fold change between groups is fold_change, split evenly around the base level
            abundance[j] *= math.sqrt(cfg.fold_change) ** (d if treated else -d)
        p = abundance * lengths
        counts = rng.multinomial(cfg.reads_per_sample, p / p.sum())
        r1s, q1s, r2s, q2s, read_names = [], [], [], [], []
        for j, c in enumerate(counts):
            if c == 0:
                continue
            r1, q1, r2, q2 = simulate_fragments(seqs[j], int(c), rng, read_length=cfg.read_length,
                                                paired=paired, fragment_mean=cfg.fragment_mean,
                                                fragment_sd=cfg.fragment_sd, error_rate=cfg.error_rate)
            r1s.append(r1), q1s.append(q1)
            if paired:
                r2s.append(r2), q2s.append(q2)
            read_names.extend(f"{sample}:{names[j]}:{i}" for i in range(int(c)))
            truth_rows.append((sample, group, names[j], int(c)))
        order = rng.permutation(len(read_names))  # shuffle: tools must not depend on read order
        read_names = [read_names[i] for i in order]
        f1 = outdir / "reads" / f"{sample}_R1.fastq.gz"
        _write_fastq_gz(f1, read_names, np.concatenate(r1s)[order], np.concatenate(q1s)[order],
                        1 if paired else None)
        f2 = None
        if paired:
            f2 = outdir / "reads" / f"{sample}_R2.fastq.gz"
            _write_fastq_gz(f2, read_names, np.concatenate(r2s)[order], np.concatenate(q2s)[order], 2)
        samples.append({"sample": sample, "fastq_1": str(f1.resolve()), "fastq_2": str(f2.resolve()) if f2 else "",
                        "label": group})

    ref_fa = write_fasta(outdir / "reference.fa", reference)
    nov_fa = write_fasta(outdir / "novel.fa", novel)
    sheet = outdir / "samplesheet.csv"
    with atomic.atomic_path(sheet) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sample", "fastq_1", "fastq_2", "label"])
        writer.writeheader()
        # paths relative to the sheet: the directory can be moved or mounted elsewhere as a whole
        writer.writerows({**row, "fastq_1": os.path.relpath(row["fastq_1"], outdir.resolve()),
                          "fastq_2": os.path.relpath(row["fastq_2"], outdir.resolve()) if row["fastq_2"] else ""}
                         for row in samples)
    truth = outdir / "truth.tsv"
    lines = ["transcript\tis_novel\tde_direction\tlength\n"]
    for n, s in zip(names, seqs):
        lines.append(f"{n}\t{int(n in novel)}\t{direction.get(n, 0)}\t{len(s)}\n")
    atomic.write_text(truth, "".join(lines))
    atomic.write_text(outdir / "true_counts.tsv",
                      "sample\tlabel\ttranscript\tfragments\n" + "".join("\t".join(map(str, r)) + "\n"
                                                                        for r in truth_rows))
    return SimResult(outdir=outdir, reference_fasta=ref_fa, novel_fasta=nov_fa, samplesheet=sheet, truth=truth,
                     reference=reference, novel=novel, de_novel=de_novel, samples=samples)
