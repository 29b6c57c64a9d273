"""Was a planted transcript assembled? Identity and coverage of its best contig.

k-mer anchoring finds the contig (either strand: the library is unstranded, so
an assembler may report the reverse complement) and the diagonal; a banded
Smith-Waterman alignment around that diagonal gives identity (matching columns
/ aligned columns) and coverage (aligned span / transcript length). Pure Python
and numpy; the band keeps it O(length x band), a few milliseconds per pair.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from deepmapper.denovo.fasta import revcomp

MATCH, MISMATCH, GAP = 2, -3, -5


@dataclass(frozen=True)
class Hit:
    query: str
    contig: str | None
    strand: str            # '+' or '-' (contig reverse-complemented to match the query)
    identity: float
    coverage: float
    query_start: int
    query_end: int

    def recovered(self, min_identity: float = 0.95, min_coverage: float = 0.90) -> bool:
        return self.contig is not None and self.identity >= min_identity and self.coverage >= min_coverage


def _kmer_index(seq: str, k: int) -> dict[str, list[int]]:
    idx: dict[str, list[int]] = defaultdict(list)
    for i in range(len(seq) - k + 1):
        idx[seq[i:i + k]].append(i)
    return idx


def banded_local_alignment(query: str, target: str, diagonal: int, band: int = 24) -> tuple[int, int, int, int, int]:
    """Smith-Waterman restricted to ``|(j - i) - diagonal| <= band`` (i in query, j in target).

    Returns (score, matches, columns, query_start, query_end) of the best local alignment.
    """
    n, m = len(query), len(target)
    width = 2 * band + 1
    neg = -(10 ** 9)
    # H[i][b] is cell (i, j = i + diagonal - band + b); rows 0..n, with row 0 / column 0 the empty prefix
    H = [[0] * width for _ in range(n + 1)]
    T = [bytearray(width) for _ in range(n + 1)]  # 0 stop, 1 diag, 2 up (gap in target), 3 left (gap in query)
    best = (0, 0, 0)
    for i in range(1, n + 1):
        qi = query[i - 1]
        row, prev, trow = H[i], H[i - 1], T[i]
        for b in range(width):
            j = i + diagonal - band + b
            if j < 1 or j > m:
                row[b] = neg if j > m else 0
                continue
            s_diag = prev[b] + (MATCH if qi == target[j - 1] else MISMATCH)
            s_up = prev[b + 1] + GAP if b + 1 < width else neg     # (i-1, j): same j is b+1 in the previous row
            s_left = row[b - 1] + GAP if b > 0 else neg            # (i, j-1)
            s, t = 0, 0
            if s_diag > s:
                s, t = s_diag, 1
            if s_up > s:
                s, t = s_up, 2
            if s_left > s:
                s, t = s_left, 3
            row[b], trow[b] = s, t
            if s > best[0]:
                best = (s, i, b)
    score, i, b = best
    matches = columns = 0
    q_end = i
    while i > 0 and T[i][b]:
        t = T[i][b]
        j = i + diagonal - band + b
        columns += 1
        if t == 1:
            matches += query[i - 1] == target[j - 1]
            i -= 1
        elif t == 2:
            i -= 1
            b += 1
        else:
            b -= 1
    return score, matches, columns, i, q_end


def best_hit(name: str, query: str, contigs: dict[str, str], *, k: int = 15, band: int = 24,
             candidates: int = 3) -> Hit:
    """The contig that best covers ``query`` (by aligned matches), with identity and coverage."""
    query = query.upper()
    q_kmers = [query[i:i + k] for i in range(len(query) - k + 1)]
    votes: Counter = Counter()
    for cname, cseq in contigs.items():
        for strand, seq in (("+", cseq.upper()), ("-", revcomp(cseq.upper()))):
            idx = _kmer_index(seq, k)
            diag = Counter()
            for qi, km in enumerate(q_kmers):
                for cj in idx.get(km, ()):
                    diag[cj - qi] += 1
            if diag:
                d, c = diag.most_common(1)[0]
                votes[(cname, strand, d)] = c
    best = Hit(name, None, "+", 0.0, 0.0, 0, 0)
    best_matches = -1
    for (cname, strand, d), _ in votes.most_common(candidates):
        seq = contigs[cname].upper()
        seq = seq if strand == "+" else revcomp(seq)
        _, matches, cols, qs, qe = banded_local_alignment(query, seq, d, band)
        if cols and matches > best_matches:
            best_matches = matches
            best = Hit(name, cname, strand, matches / cols, (qe - qs) / len(query), qs, qe)
    return best


def recovery(truth: dict[str, str], contigs: dict[str, str], *, min_identity: float = 0.95,
             min_coverage: float = 0.90) -> tuple[float, list[Hit]]:
    """Fraction of ``truth`` transcripts recovered by one contig, and the best hit of each."""
    hits = [best_hit(n, s, contigs) for n, s in truth.items()]
    n_ok = sum(h.recovered(min_identity, min_coverage) for h in hits)
    return (n_ok / len(hits) if hits else 0.0), hits


def read_ranks(path) -> dict[str, int]:
    """{feature: rank} from a ranking TSV with columns feature, rank (findings.tsv, baselines/*.tsv)."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return {row["feature"]: int(row["rank"]) for row in csv.DictReader(fh, delimiter="\t")}


def planted_ranks(hits: list[Hit], ranks: dict[str, int]) -> dict[str, int | None]:
    """Rank of each planted transcript's best contig (None when it has no contig or the contig is unranked)."""
    return {h.query: (ranks.get(h.contig) if h.contig else None) for h in hits}
