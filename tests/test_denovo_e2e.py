"""End to end with the real tools (HISAT2, rnaSPAdes, Salmon) on generated data.

12 samples (6 per group, one single-end sample per group) of 2000 reads from 40
reference + 6 novel transcripts, 4 novel ones planted as differentially
expressed. The novel transcripts must be assembled, quantified and ranked
among the top features by ``deepmapper run``.
"""
from __future__ import annotations

import csv
import gzip
import shutil
from collections import defaultdict

import numpy as np
import pytest
from click.testing import CliRunner

from deepmapper.cli import cli
from deepmapper.denovo.fasta import read_fasta
from deepmapper.denovo.recovery import planted_ranks, read_ranks, recovery
from deepmapper.io import read_quant_sf
from deepmapper.datasets.seqsim import SimConfig, simulate_experiment
from conftest import skip_unless  # noqa: E402

TOOLS = ("hisat2", "hisat2-build", "salmon", "rnaspades.py")
pytestmark = [
    pytest.mark.slow, pytest.mark.tools, pytest.mark.timeout(600),
]


@pytest.fixture(scope="module", autouse=True)   # before the module's pipeline fixtures
def _tools():
    skip_unless(all(shutil.which(t) for t in TOOLS),
                "needs hisat2, salmon and rnaspades.py (Debian packages hisat2, salmon, spades)")


def _invoke(args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("denovo_e2e")
    sim = simulate_experiment(root / "sim", SimConfig(samples_per_group=6, reads_per_sample=2000,
                                                      single_per_group=1, seed=0))
    _invoke(["-q", "denovo", "run", "--samplesheet", sim.samplesheet, "--reference", sim.reference_fasta,
             "--outdir", root / "out", "--threads", "2"])
    return sim, root / "out"


def _read_names(path):
    with gzip.open(path, "rt") as fh:
        return [line[1:].split()[0] for i, line in enumerate(fh) if i % 4 == 0]


def test_outputs_and_command_log(run):
    sim, out = run
    for name in ("sc_table.tsv", "denovo.fa", "dataset.h5ad", "hybrid/hybrid.fa", "logs/commands.tsv"):
        assert (out / name).is_file(), name
    with open(out / "logs" / "commands.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    steps = [r["step"] for r in rows]
    ids = [s["sample"] for s in sim.samples]
    assert steps == (["index-reference"] + [f"align:{i}" for i in ids] + ["assemble:rnaspades", "hybrid"]
                     + [f"quant:{i}" for i in ids])
    assert all(r["exit_code"] == "0" for r in rows)
    versions = {r["tool"]: r["version"] for r in rows}
    assert "2.2.1" in versions["hisat2"] and versions["salmon"].startswith("salmon 1.")
    assert "SPAdes" in versions["rnaspades.py"]
    assert all("-p 2" in r["command"] or "-t 2" in r["command"] for r in rows)


def test_unaligned_reads_are_the_novel_ones(run):
    sim, out = run
    # read names carry their source transcript; pairs count once
    for s in sim.samples:
        unaligned = _read_names(out / "unaligned" / f"{s['sample']}.unaligned_1.fastq.gz")
        total = _read_names(s["fastq_1"])
        novel_all = sum(":NOVEL" in n for n in total)
        novel_un = sum(":NOVEL" in n for n in unaligned)
        ref_un = len(unaligned) - novel_un
        assert novel_un >= 0.98 * novel_all, s["sample"]
        assert ref_un <= 0.01 * (len(total) - novel_all), s["sample"]
        if s["fastq_2"]:
            mates = _read_names(out / "unaligned" / f"{s['sample']}.unaligned_2.fastq.gz")
            assert [m.rsplit("/", 1)[0] for m in mates] == [u.rsplit("/", 1)[0] for u in unaligned]


def test_planted_transcripts_are_assembled_and_quantified(run):
    sim, out = run
    contigs = read_fasta(out / "denovo.fa")
    assert contigs and all(name.startswith("DENOVO_") for name in contigs)
    frac, hits = recovery(sim.novel, contigs)
    assert frac >= 5 / 6, [(h.query, h.identity, h.coverage) for h in hits]
    # Salmon's estimate of each recovered contig follows the simulated fragment counts
    truth = defaultdict(dict)
    with open(sim.outdir / "true_counts.tsv") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            truth[row["transcript"]][row["sample"]] = int(row["fragments"])
    for h in hits:
        if not h.recovered():
            continue
        est, true = [], []
        for s in sim.samples:
            names, reads = read_quant_sf(out / "quant" / s["sample"] / "quant.sf")
            est.append(reads[names.index(h.contig)])
            true.append(truth[h.query].get(s["sample"], 0))
        est, true = np.array(est), np.array(true)
        assert np.corrcoef(est, true)[0, 1] > 0.95, h.query
        assert abs(est.sum() / true.sum() - 1) < 0.15, h.query

    # the table marks exactly the DENOVO rows
    with open(out / "sc_table.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert {r["feature"] for r in rows if r["is_denovo"] == "1"} == set(contigs)
    assert len(rows) == len(sim.reference) + len(contigs)


def test_step_commands_match_the_one_shot_run(run, tmp_path):
    sim, out = run
    s = next(x for x in sim.samples if x["fastq_2"])
    _invoke(["denovo", "index-reference", "--reference", sim.reference_fasta, "--outdir", tmp_path / "idx"])
    _invoke(["denovo", "align", "--sample", s["sample"], "--fastq-1", s["fastq_1"], "--fastq-2", s["fastq_2"],
             "--index", tmp_path / "idx" / "reference", "--outdir", tmp_path / "un"])
    for mate in ("1", "2"):
        name = f"{s['sample']}.unaligned_{mate}.fastq.gz"
        # the same read set (HISAT2 with several threads may write them in another order)
        assert sorted(_read_names(tmp_path / "un" / name)) == sorted(_read_names(out / "unaligned" / name))
    assert "overall alignment rate" in (tmp_path / "un" / f"{s['sample']}.hisat2.log").read_text()
    _invoke(["denovo", "quant", "--sample", s["sample"], "--fastq-1", s["fastq_1"], "--fastq-2", s["fastq_2"],
             "--index", out / "hybrid" / "salmon_index", "--outdir", tmp_path / "q"])
    names_a, a = read_quant_sf(tmp_path / "q" / s["sample"] / "quant.sf")
    names_b, b = read_quant_sf(out / "quant" / s["sample"] / "quant.sf")
    assert names_a == names_b
    np.testing.assert_allclose(a, b, atol=2.0)


def test_deepmapper_run_ranks_the_planted_transcripts(run, tmp_path):
    sim, out = run
    _invoke(["run", "--input", out / "dataset.h5ad", "--label-key", "label", "--outdir", tmp_path / "dm",
             "--passes", "6", "--epochs", "25", "--seed", "0", "--no-report", "--no-baselines"])
    _, hits = recovery(sim.novel, read_fasta(out / "denovo.fa"))
    ranks = planted_ranks(hits, read_ranks(tmp_path / "dm" / "findings.tsv"))
    de = [ranks[q] for q in sim.de_novel]
    other = [ranks[q] for q in sim.novel if q not in sim.de_novel]
    n_features = len(read_ranks(tmp_path / "dm" / "findings.tsv"))
    print(f"planted DE ranks {de}, other novel ranks {other} of {n_features}")
    assert n_features == len(sim.reference) + len(read_fasta(out / "denovo.fa"))
    # the planted DE transcripts rank among the top features, above the novel ones that do not differ
    assert None not in de and float(np.median(de)) <= 10, (de, other)
    assert max(de) < min(r for r in other if r is not None), (de, other)
