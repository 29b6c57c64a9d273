"""The test-data generator: Markov model, reads, planted differential expression."""
from __future__ import annotations

import csv
import gzip
import itertools
from collections import defaultdict

import numpy as np
import pytest

from deepmapper.denovo.fastq import check_fastq
from deepmapper.errors import ConfigError
from deepmapper.datasets.seqsim import (
    SEED_SEQUENCE,
    MarkovModel,
    SimConfig,
    random_sequence,
    revcomp,
    simulate_experiment,
    simulate_fragments,
)


def _kmer_counts(seqs, n):
    c = defaultdict(int)
    for s in seqs:
        for i in range(len(s) - n + 1):
            c[s[i:i + n]] += 1
    return c


def test_markov_counts_are_strand_symmetric_with_pseudocount():
    m = MarkovModel.fit(["ACGGTTAACCGTAGGGTACA", "TTTTGGGCCA"], k=2, pseudocount=0.5)
    assert m.counts.shape == (16, 4)
    raw = m.counts - 0.5
    assert raw.min() >= 0 and np.allclose(m.transition.sum(axis=1), 1.0)
    for word in ("".join(p) for p in itertools.product("ACGT", repeat=3)):
        idx = lambda w: sum("ACGT".index(ch) * 4 ** (2 - j) for j, ch in enumerate(w))  # noqa: E731
        a, b = idx(word), idx(revcomp(word))
        assert raw[a // 4, a % 4] == raw[b // 4, b % 4], word
    # the counts are exactly the 3-mers of both strands
    direct = _kmer_counts(["ACGGTTAACCGTAGGGTACA", "TTTTGGGCCA", revcomp("ACGGTTAACCGTAGGGTACA"),
                           revcomp("TTTTGGGCCA")], 3)
    assert raw.sum() == sum(direct.values())
    assert raw[0, 0] == direct["AAA"]  # 'TTTT' contributes AAA on the reverse strand


def test_markov_model_learns_context_better_than_a_random_control():
    rng = np.random.default_rng(1)
    model = MarkovModel.fit([SEED_SEQUENCE], k=3)
    sampled = [model.sample(600, rng) for _ in range(5)]
    control = [random_sequence(600, rng, gc=model.gc_content()) for _ in range(5)]
    ll_s = np.mean([model.log_likelihood(s) for s in sampled])
    ll_c = np.mean([model.log_likelihood(s) for s in control])
    assert ll_s > ll_c + 0.02
    # a model refitted on its own samples recovers its transition probabilities
    refit = MarkovModel.fit([model.sample(20000, rng)], k=3, pseudocount=0.0)
    assert np.abs(refit.transition - model.transition).max() < 0.12
    assert abs(refit.gc_content() - model.gc_content()) < 0.02


def test_random_sequence_gc_and_bad_parameters():
    rng = np.random.default_rng(0)
    s = random_sequence(20000, rng, gc=0.7)
    assert abs((s.count("G") + s.count("C")) / len(s) - 0.7) < 0.02
    with pytest.raises(ConfigError):
        random_sequence(10, rng, gc=1.5)
    with pytest.raises(ConfigError, match="k=11"):
        MarkovModel.fit(["ACGT"], k=11)
    with pytest.raises(ConfigError, match="no 4-mer"):
        MarkovModel.fit(["ACG", "NNNNNN"], k=3)


def _windows(seq, length):
    arr = np.frombuffer(seq.encode(), dtype=np.uint8)
    return np.lib.stride_tricks.sliding_window_view(arr, length)


def test_fragments_are_unstranded_pairs_with_the_requested_error_rate():
    rng = np.random.default_rng(3)
    seq = MarkovModel.fit([SEED_SEQUENCE], k=3).sample(400, rng)
    # error-free: read 1 and the reverse complement of read 2 sit fragment_mean apart on one strand
    r1, q1, r2, q2 = simulate_fragments(seq, 200, rng, read_length=50, paired=True, fragment_mean=150,
                                        fragment_sd=0, error_rate=0.0)
    strands = set()
    for a, b in zip(r1, r2):
        a, b = a.tobytes().decode(), b.tobytes().decode()
        if a in seq:
            strands.add("+")
            assert seq.index(revcomp(b)) - seq.index(a) == 100
        else:
            strands.add("-")
            assert b in seq and seq.index(revcomp(a)) - seq.index(b) == 100
    assert strands == {"+", "-"}
    assert q1.shape == r1.shape and q2.shape == r2.shape
    # with errors: the Hamming distance to the best window matches the error rate
    r1, *_ = simulate_fragments(seq, 300, rng, read_length=60, paired=False, fragment_mean=0, fragment_sd=0,
                                error_rate=0.03)
    win = np.concatenate([_windows(seq, 60), _windows(revcomp(seq), 60)])
    dist = (r1[:, None, :] != win[None, :, :]).sum(axis=2).min(axis=1)
    assert abs(dist.mean() / 60 - 0.03) < 0.01


def test_experiment_is_seeded_valid_and_plants_differential_expression(tmp_path):
    cfg = SimConfig(n_reference=8, n_novel=4, n_novel_de=2, samples_per_group=3, reads_per_sample=1500,
                    single_per_group=1, fold_change=8.0, dispersion=0.01, seed=5)
    a = simulate_experiment(tmp_path / "a", cfg)
    b = simulate_experiment(tmp_path / "b", cfg)
    files = sorted(p.relative_to(a.outdir) for p in a.outdir.rglob("*") if p.is_file() and p.suffix != ".csv")
    assert len(files) >= 12
    for rel in files:
        assert (a.outdir / rel).read_bytes() == (b.outdir / rel).read_bytes(), rel
    c = simulate_experiment(tmp_path / "c", SimConfig(**{**cfg.__dict__, "seed": 6}))
    assert c.reference != a.reference

    # novel transcripts share no long k-mer with the reference (reads from them cannot align)
    ref_k = set(_kmer_counts(list(a.reference.values()) + [revcomp(s) for s in a.reference.values()], 25))
    assert not ref_k & set(_kmer_counts(a.novel.values(), 25))

    # samplesheet: 3 per group, the last sample of each group single-end, every FASTQ valid
    with open(a.samplesheet, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["control"] * 3 + ["treated"] * 3
    assert [bool(r["fastq_2"]) for r in rows] == [True, True, False, True, True, False]
    assert [r["fastq_1"] for r in rows] == [f"reads/{r['sample']}_R1.fastq.gz" for r in rows]  # sheet-relative
    rows = a.samples  # the same, with absolute paths
    for r in rows:
        n1 = check_fastq(r["fastq_1"])
        assert n1 == cfg.reads_per_sample
        if r["fastq_2"]:
            assert check_fastq(r["fastq_2"]) == n1
            with gzip.open(r["fastq_1"], "rt") as f1, gzip.open(r["fastq_2"], "rt") as f2:
                assert f1.readline()[:-3] == f2.readline()[:-3]  # same pair name, /1 and /2

    # planted DE: the fold change between groups shows in the true fragment counts
    counts = defaultdict(lambda: defaultdict(int))
    with open(a.outdir / "true_counts.tsv") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            counts[row["transcript"]][row["label"]] += int(row["fragments"])
    for name in a.novel:
        ratio = (counts[name]["treated"] + 1) / (counts[name]["control"] + 1)
        if name in a.de_novel:
            direction = 1 if a.de_novel.index(name) % 2 == 0 else -1
            assert ratio ** direction > 4, (name, ratio)
        else:
            assert 0.5 < ratio < 2, (name, ratio)
    assert sum(sum(v.values()) for v in counts.values()) == 6 * cfg.reads_per_sample


def test_bad_simulation_config(tmp_path):
    with pytest.raises(ConfigError, match="n_novel_de"):
        simulate_experiment(tmp_path, SimConfig(n_novel=2, n_novel_de=3))
    with pytest.raises(ConfigError, match="length_range"):
        simulate_experiment(tmp_path, SimConfig(length_range=(50, 400)))


def test_random_control_novel_transcripts_and_simulate_command(tmp_path):
    from click.testing import CliRunner

    from deepmapper.cli import cli
    from deepmapper.denovo.samplesheet import read_samplesheet

    r = CliRunner().invoke(cli, ["denovo", "simulate", "--outdir", str(tmp_path / "x"), "--n-reference", "6",
                                 "--n-novel", "3", "--n-novel-de", "1", "--samples-per-group", "3",
                                 "--reads-per-sample", "50", "--single-per-group", "3", "--novel-model", "random"])
    assert r.exit_code == 0, r.output
    samples = read_samplesheet(tmp_path / "x" / "samplesheet.csv")  # sheet-relative paths resolve
    assert len(samples) == 6 and not any(s.paired for s in samples)
    # the iid control fits the reference's context model worse than Markov-sampled novel transcripts do
    cfg = dict(n_reference=30, n_novel=8, n_novel_de=0, samples_per_group=1, reads_per_sample=10, seed=1)
    markov = simulate_experiment(tmp_path / "m", SimConfig(**cfg))
    control = simulate_experiment(tmp_path / "r", SimConfig(**cfg, novel_model="random"))
    assert markov.reference == control.reference
    model = MarkovModel.fit(markov.reference.values(), k=3)
    ll_m = np.mean([model.log_likelihood(s) for s in markov.novel.values()])
    ll_r = np.mean([model.log_likelihood(s) for s in control.novel.values()])
    assert ll_m > ll_r
