"""Throughput of the whole-file FASTQ check (Biopython FastqGeneralIterator), single and paired.

    PYTHONPATH=src python bench/fastq_check.py [--records 500000] [--length 100]

Writes a gzipped FASTQ pair of random reads (seed 0) and prints records per second of
`check_fastq(r1)` and `check_fastq(r1, mate=r2)`, and the seconds one would then spend per
10 million reads.
"""
from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def write_pair(folder: Path, n: int, length: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    paths = folder / "r_1.fastq.gz", folder / "r_2.fastq.gz"
    with gzip.open(paths[0], "wt", compresslevel=1) as f1, gzip.open(paths[1], "wt", compresslevel=1) as f2:
        qual = "I" * length
        for start in range(0, n, 10_000):
            block = bases[rng.integers(0, 4, size=(min(10_000, n - start), 2, length))]
            for i, pair in enumerate(block):
                name = f"read{start + i}"
                f1.write(f"@{name}/1\n{pair[0].tobytes().decode()}\n+\n{qual}\n")
                f2.write(f"@{name}/2\n{pair[1].tobytes().decode()}\n+\n{qual}\n")
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--length", type=int, default=100)
    args = ap.parse_args()
    from deepmapper.denovo.fastq import check_fastq

    with tempfile.TemporaryDirectory() as tmp:
        r1, r2 = write_pair(Path(tmp), args.records, args.length)
        t0 = time.perf_counter()
        n = check_fastq(r1)
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = check_fastq(r1, mate=r2)
        paired = time.perf_counter() - t0
    assert n == m == args.records
    for what, secs, recs in (("single", single, n), ("paired", paired, 2 * n)):
        print(f"{what}: {recs} records in {secs:.2f} s = {recs / secs:,.0f} records/s; "
              f"{1e7 / (recs / secs):.0f} s per 10 M records")


if __name__ == "__main__":
    main()
