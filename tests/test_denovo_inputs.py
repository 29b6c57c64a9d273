"""Bad input, tagging, pooling, tool lookup and the assembly check (no external tool is run)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from deepmapper.cli import cli
from deepmapper.denovo import fastq as fq
from deepmapper.denovo import steps, tools
from deepmapper.denovo.fasta import read_fasta
from deepmapper.denovo.recovery import banded_local_alignment, best_hit, recovery
from deepmapper.errors import ConfigError, InputError, ToolError
from deepmapper.datasets.seqsim import SimConfig, random_sequence, revcomp, simulate_experiment

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    return simulate_experiment(root, SimConfig(n_reference=5, n_novel=2, n_novel_de=1, samples_per_group=3,
                                               reads_per_sample=200, single_per_group=1, seed=2))


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _sheet(tmp_path, text):
    p = tmp_path / "sheet.csv"
    p.write_text(text)
    return p


def _run(sheet, reference, tmp_path):
    return _invoke(["denovo", "run", "--samplesheet", sheet, "--reference", reference, "--outdir", tmp_path / "o"])


def _rows(sim):
    return [f"{s['sample']},{s['fastq_1']},{s['fastq_2']},{s['label']}" for s in sim.samples]


def _assert_error(result, *parts, code=2):
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output  # one clear line, no traceback
    for p in parts:
        assert p in lines[0], (p, lines[0])


# --- bad input through the CLI (checked before any tool runs) --------------------------------------------------

def test_missing_fastq(sim, tmp_path):
    rows = _rows(sim)
    rows[2] = rows[2].replace(sim.samples[2]["fastq_1"], str(tmp_path / "gone_R1.fastq.gz"))
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(rows))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "gone_R1.fastq.gz", "not found",
                  f"fastq_1 of {sim.samples[2]['sample']}", "Fix:")
    assert not (tmp_path / "o").exists()  # nothing started


def test_empty_fastq(sim, tmp_path):
    empty = tmp_path / "empty_R1.fastq.gz"
    with gzip.open(empty, "wb"):
        pass
    rows = _rows(sim)
    rows[0] = f"{sim.samples[0]['sample']},{empty},,{sim.samples[0]['label']}"
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(rows))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "empty_R1.fastq.gz", "holds no reads")


@pytest.mark.parametrize("damage, message", [
    (lambda lines: lines.__setitem__(4, "READ2_without_at\n"), "record 2 does not start with '@'"),
    (lambda lines: lines.__setitem__(7, lines[7][:-5] + "\n"), "record 2"),
    (lambda lines: lines.__setitem__(6, "-\n"), "third line does not start with '+'"),
    (lambda lines: lines.__delitem__(slice(-2, None)), "truncated"),
])
def test_malformed_fastq_record(sim, tmp_path, damage, message):
    with gzip.open(sim.samples[0]["fastq_1"], "rt") as fh:
        lines = fh.readlines()
    damage(lines)
    bad = tmp_path / "bad.fastq"  # plain text FASTQ is accepted too
    bad.write_text("".join(lines))
    rows = _rows(sim)
    rows[0] = f"{sim.samples[0]['sample']},{bad},,{sim.samples[0]['label']}"
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(rows))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "bad.fastq", message)


def test_samplesheet_missing_column(sim, tmp_path):
    sheet = _sheet(tmp_path, "sample,fastq_1,label\n" + "\n".join(
        f"{s['sample']},{s['fastq_1']},{s['label']}" for s in sim.samples))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "sheet.csv", "missing column(s) fastq_2",
                  "sample,fastq_1,fastq_2,label")


def test_samplesheet_duplicate_sample(sim, tmp_path):
    rows = _rows(sim)
    rows.append(rows[1])
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(rows))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "field 'sample'",
                  f"sample '{sim.samples[1]['sample']}' is listed twice (first on line 3)")


def test_label_for_only_one_group(sim, tmp_path):
    rows = [f"{s['sample']},{s['fastq_1']},{s['fastq_2']},control" for s in sim.samples]
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(rows))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "field 'label'", "all samples carry the label "
                  "'control'", "at least 2 groups")
    rows = _rows(sim)
    rows[3] = rows[3].rsplit(",", 1)[0] + ","
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(rows))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "field 'label'", "has no label")


def test_groups_too_small_are_refused_before_the_slow_steps(sim, tmp_path):
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(_rows(sim)))
    _assert_error(_run(sheet, sim.reference_fasta, tmp_path), "fewer than 5 samples", "--min-class-size")


@pytest.mark.parametrize("text, message", [
    ("@read1\nACGT\n+\nIIII\n", "does not start with a '>' header, it is not FASTA"),
    ("sample,value\nA,1\n", "not FASTA"),
    (">tx1\nMKVLAAGIVG*\n", "are not nucleotides"),
    ("", "holds no FASTA records"),
    (">tx1\nACGT\n>tx1\nACGG\n", "occurs twice"),
])
def test_reference_that_is_not_fasta(sim, tmp_path, text, message):
    ref = tmp_path / "ref.fa"
    ref.write_text(text)
    sheet = _sheet(tmp_path, "sample,fastq_1,fastq_2,label\n" + "\n".join(_rows(sim)))
    result = _invoke(["denovo", "run", "--samplesheet", sheet, "--reference", ref, "--outdir", tmp_path / "o",
                      "--min-class-size", "3"])
    _assert_error(result, "ref.fa", "--reference", message)


def test_step_commands_check_their_inputs(sim, tmp_path):
    align = ["denovo", "align", "--sample", "s1", "--fastq-1", tmp_path / "none.fq", "--index", tmp_path / "idx",
             "--outdir", tmp_path]
    _assert_error(_invoke(align), "idx", "--index", "no HISAT2 index", "denovo index-reference")
    (tmp_path / "idx.1.ht2").write_bytes(b"")
    _assert_error(_invoke(align), "none.fq", "--fastq-1", "not found")
    _assert_error(_invoke(["denovo", "align", "--sample", "a b", "--fastq-1", sim.samples[0]["fastq_1"],
                           "--index", tmp_path / "idx", "--outdir", tmp_path]), "--sample", "'a b'")
    _assert_error(_invoke(["denovo", "quant", "--sample", "s1", "--fastq-1", sim.samples[0]["fastq_1"],
                           "--index", tmp_path, "--outdir", tmp_path]), "no Salmon index", "denovo hybrid")


# --- tools ---------------------------------------------------------------------------------------------------

def test_missing_tool_names_the_tool_and_how_to_get_it(sim, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    result = _invoke(["denovo", "index-reference", "--reference", sim.reference_fasta, "--outdir", tmp_path / "i"])
    _assert_error(result, "hisat2-build", "not found on PATH", "apt-get install hisat2", code=3)
    with pytest.raises(ToolError, match="Debian package 'salmon'"):
        tools.find_tool("salmon")
    with pytest.raises(ToolError, match="Debian package 'spades'"):
        tools.find_tool("rnaspades.py")


def test_trinity_command_and_missing_trinity(tmp_path, monkeypatch):
    reads = steps.AssemblyInputs(Path("p_1.fq.gz"), Path("p_2.fq.gz"))
    cmd, fasta = steps.assembler_command("trinity", reads, tmp_path, threads=3, memory_gb=7)
    assert cmd == ["Trinity", "--seqType", "fq", "--max_memory", "7G", "--CPU", "3", "--output",
                   str(tmp_path / "trinity_out"), "--full_cleanup", "--left", "p_1.fq.gz", "--right", "p_2.fq.gz"]
    assert fasta == tmp_path / "trinity_out.Trinity.fasta"
    cmd, _ = steps.assembler_command("trinity", steps.AssemblyInputs(Path("s.fq.gz")), tmp_path, threads=1,
                                     memory_gb=2)
    assert cmd[-2:] == ["--single", "s.fq.gz"]
    with pytest.raises(ConfigError, match="mixes single- and paired-end"):
        steps.assembler_command("trinity", steps.AssemblyInputs(Path("a"), Path("b"), Path("c")), tmp_path,
                                threads=1, memory_gb=2)
    cmd, fasta = steps.assembler_command("rnaspades", steps.AssemblyInputs(Path("a"), Path("b"), Path("c")),
                                         tmp_path, threads=2, memory_gb=3)
    assert cmd == ["rnaspades.py", "-t", "2", "-m", "3", "-o", str(tmp_path / "rnaspades"), "-1", "a", "-2", "b",
                   "-s", "c"]
    assert fasta.name == "transcripts.fasta"

    monkeypatch.setenv("PATH", str(tmp_path))
    r1 = tmp_path / "pooled_1.fastq.gz"
    r1.write_bytes(b"")
    result = _invoke(["denovo", "assemble", "--reads-1", r1, "--assembler", "trinity", "--outdir", tmp_path / "a"])
    _assert_error(result, "'Trinity' was not found on PATH", "container", "--assembler rnaspades", code=3)


def test_command_log_records_command_version_and_failure(tmp_path, monkeypatch):
    # a stand-in 'salmon' that reports a version and fails: the log row and the error name the tool
    fake = tmp_path / "bin" / "salmon"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'salmon 9.9.9'; exit 0; fi\n"
                    "echo 'index is corrupt' >&2\nexit 4\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    tools.tool_version.cache_clear()
    try:
        with pytest.raises(ToolError, match=r"'salmon' failed with exit code 4 in step 'demo': index is corrupt"):
            tools.run_tool("demo", ["salmon", "quant", "-i", "my index"], log_dir=tmp_path / "logs")
    finally:
        tools.tool_version.cache_clear()
    rows = (tmp_path / "logs" / "commands.tsv").read_text().splitlines()
    assert rows[0] == tools.COMMANDS_HEADER.strip()
    step, tool, version, code, secs, command = rows[1].split("\t")
    assert (step, tool, version, code, command) == ("demo", "salmon", "salmon 9.9.9", "4",
                                                    "salmon quant -i 'my index'")


# --- tag ------------------------------------------------------------------------------------------------------

def test_tag_is_idempotent_filters_short_contigs_and_refuses_prefixed_reference(tmp_path):
    ref = tmp_path / "ref.fa"
    ref.write_text(">ENST1\n" + "ACGT" * 100 + "\n")
    asm = tmp_path / "asm.fa"
    asm.write_text(">NODE_1_length_400 cov=3\n" + "acgt" * 100 + "\n>NODE_2_length_40\n" + "A" * 40 + "\n")
    once = steps.tag(asm, ref, tmp_path / "once.fa", min_length=100)
    recs = read_fasta(once)
    assert list(recs) == ["DENOVO_NODE_1_length_400"] and recs["DENOVO_NODE_1_length_400"] == "ACGT" * 100
    twice = steps.tag(once, ref, tmp_path / "twice.fa", min_length=100)
    assert twice.read_text() == once.read_text()

    bad_ref = tmp_path / "bad_ref.fa"
    bad_ref.write_text(">ENST1\nACGT\n>DENOVO_NODE_7\nACGT\n")
    result = _invoke(["denovo", "tag", "--assembly", asm, "--reference", bad_ref, "--out", tmp_path / "x.fa"])
    _assert_error(result, "--reference", "already uses the de-novo prefix 'DENOVO_'", "DENOVO_NODE_7")
    with pytest.raises(InputError, match="map to the id 'DENOVO_X'"):
        steps.tag_records({"X": "A" * 300, "DENOVO_X": "C" * 300}, ["ENST1"], min_length=10)


# --- pool -----------------------------------------------------------------------------------------------------

def _fq(path, names):
    with gzip.open(path, "wt") as fh:
        for n in names:
            fh.write(f"@{n}\nACGTACGT\n+\nIIIIIIII\n")
    return path


def test_pool_keeps_mates_together_in_a_mixed_design(tmp_path):
    a1, a2 = _fq(tmp_path / "A.unaligned_1.fastq.gz", ["a1", "a2"]), _fq(tmp_path / "A.unaligned_2.fastq.gz",
                                                                         ["a1", "a2"])
    b1 = _fq(tmp_path / "B.unaligned_1.fastq.gz", ["b1"])
    c1, c2 = _fq(tmp_path / "C.unaligned_1.fastq.gz", ["c1"]), _fq(tmp_path / "C.unaligned_2.fastq.gz", ["c1"])
    # read-2 files in another order than read-1: matched by name, not position
    result = _invoke(["denovo", "pool", "--reads-1", a1, "--reads-1", b1, "--reads-1", c1, "--reads-2", c2,
                      "--reads-2", a2, "--outdir", tmp_path / "p"])
    assert result.exit_code == 0, result.output

    def names(p):
        with gzip.open(p, "rt") as fh:
            return [ln.strip()[1:] for i, ln in enumerate(fh) if i % 4 == 0]
    assert names(tmp_path / "p" / "pooled_1.fastq.gz") == ["a1", "a2", "c1"]
    assert names(tmp_path / "p" / "pooled_2.fastq.gz") == ["a1", "a2", "c1"]
    assert names(tmp_path / "p" / "pooled_single.fastq.gz") == ["b1"]
    assert fq.check_fastq(tmp_path / "p" / "pooled_1.fastq.gz") == 3

    only_single = _invoke(["denovo", "pool", "--reads-1", b1, "--outdir", tmp_path / "s"])
    assert only_single.exit_code == 0 and names(tmp_path / "s" / "pooled_1.fastq.gz") == ["b1"]
    assert not (tmp_path / "s" / "pooled_2.fastq.gz").exists()
    orphan = _invoke(["denovo", "pool", "--reads-1", b1, "--reads-2", a2, "--outdir", tmp_path / "q"])
    _assert_error(orphan, "A.unaligned_2.fastq.gz", "without a matching --reads-1")


# --- recovery check -------------------------------------------------------------------------------------------

def _mutate(seq, rng, subs=0, indels=0):
    s = list(seq)
    for i in rng.choice(len(s), size=subs, replace=False):
        s[i] = "ACGT"[("ACGT".index(s[i]) + 1) % 4]
    for i in sorted(rng.choice(len(s) - 1, size=indels, replace=False), reverse=True):
        del s[i]
    return "".join(s)


def test_recovery_identity_and_coverage():
    rng = np.random.default_rng(4)
    truth = {f"T{i}": random_sequence(600, rng) for i in range(4)}
    contigs = {
        "c_exact_rc": "GGG" + revcomp(truth["T0"]) + "TTT",               # reverse strand, flanks
        "c_2pct": _mutate(truth["T1"], rng, subs=12),                     # 98% identity
        "c_10pct": _mutate(truth["T2"], rng, subs=60, indels=3),          # ~90% identity: not recovered
        "c_half": truth["T3"][:300],                                       # 50% coverage: not recovered
        "noise": random_sequence(800, rng),
    }
    frac, hits = recovery(truth, contigs)
    by = {h.query: h for h in hits}
    assert by["T0"].contig == "c_exact_rc" and by["T0"].strand == "-" and by["T0"].identity == 1.0
    assert by["T0"].coverage == 1.0
    assert by["T1"].contig == "c_2pct" and by["T1"].identity == pytest.approx(0.98, abs=0.002)
    assert by["T1"].recovered()
    assert by["T2"].contig == "c_10pct" and 0.85 < by["T2"].identity < 0.95 and not by["T2"].recovered()
    assert by["T3"].coverage == pytest.approx(0.5, abs=0.01) and not by["T3"].recovered()
    assert frac == 0.5
    assert best_hit("x", random_sequence(500, rng), {"noise": contigs["noise"]}).contig is None


def test_banded_alignment_spans_a_deletion():
    rng = np.random.default_rng(9)
    q = random_sequence(300, rng)
    t = q[:150] + q[155:]  # 5 nt deleted from the target
    score, matches, cols, qs, qe = banded_local_alignment(q, t, diagonal=0, band=10)
    assert (qs, qe) == (0, 300) and matches == 295 and cols == 300


def test_no_unaligned_reads_gives_an_empty_denovo_set(tmp_path, monkeypatch):
    # every read aligned: the assembler is not run (a stand-in that would fail proves it) and the
    # hybrid reference is the reference alone
    fake = tmp_path / "bin" / "rnaspades.py"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    empty = steps._empty_gz(tmp_path / "pooled_1.fastq.gz")
    assembly = steps.assemble(empty, tmp_path / "asm", assembler="rnaspades")
    assert assembly.read_text() == "" and not (tmp_path / "asm" / "logs").exists()
    ref = tmp_path / "ref.fa"
    ref.write_text(">ENST1\n" + "ACGT" * 100 + "\n")
    denovo = steps.tag(assembly, ref, tmp_path / "denovo.fa")
    assert read_fasta(denovo, allow_empty=True) == {}


def test_relative_samplesheet_paths(sim, tmp_path, monkeypatch):
    from deepmapper.denovo.samplesheet import read_samplesheet

    src = Path(sim.samples[0]["fastq_1"])
    (tmp_path / "sheetdir" / "reads").mkdir(parents=True)
    (tmp_path / "sheetdir" / "reads" / "a.fq.gz").write_bytes(src.read_bytes())
    (tmp_path / "cwd_reads").mkdir()
    (tmp_path / "cwd_reads" / "b.fq.gz").write_bytes(src.read_bytes())
    sheet = tmp_path / "sheetdir" / "s.csv"
    sheet.write_text("sample,fastq_1,fastq_2,label\nA,reads/a.fq.gz,,x\nB,cwd_reads/b.fq.gz,,y\n")
    monkeypatch.chdir(tmp_path)
    a, b = read_samplesheet(sheet)
    assert a.fastq_1 == tmp_path / "sheetdir" / "reads" / "a.fq.gz"   # beside the sheet
    assert b.fastq_1 == Path("cwd_reads/b.fq.gz")                      # from the launch directory
