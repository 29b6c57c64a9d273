#!/usr/bin/env python3
"""Write the pipeline's bundled test inputs (the files the test profiles read).

Everything is generated offline and deterministically, and the whole set stays
well under 2 MB, so it ships in the repository:

* ``assets/test/pbmc68k_reduced.h5ad`` (profile ``test``): scanpy's bundled
  pbmc68k_reduced, 700 PBMCs x 765 genes, X = the log-normalised expression
  (its ``.raw``) as sparse float32, obs = ``bulk_labels``;
* ``assets/test/populations/<name>/`` + ``assets/samplesheet_test_populations.csv``
  (profile ``test_populations``): three of those cell types as separate 10x
  matrix directories (matrix.mtx.gz, barcodes.tsv.gz, features.tsv.gz), one
  samplesheet row ``sample,path,label`` each;
* ``assets/test/denovo/`` + ``assets/samplesheet_test_denovo.csv`` (profile
  ``test_denovo``): simulated reads (deepmapper.datasets.seqsim) for 2 x 3 samples,
  paired-end, with planted novel transcripts missing from ``reference.fa``.

    python bin/make_test_data.py            # all of the above, from the repository root

Samplesheet paths are relative to the repository root (run the test profiles
from there, as the CI does).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POPULATIONS = ("CD14+ Monocyte", "CD19+ B", "CD56+ NK")


def pbmc():
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc
    import scipy.sparse as sp

    src = sc.datasets.pbmc68k_reduced()
    X = sp.csr_matrix(src.raw.X, dtype=np.float32)
    X.sort_indices()
    obs = pd.DataFrame({"bulk_labels": src.obs["bulk_labels"].astype("category")},
                       index=src.obs_names.astype(str))
    var = pd.DataFrame(index=src.raw.var_names.astype(str))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["source"] = "scanpy.datasets.pbmc68k_reduced() .raw (log-normalised), obs bulk_labels"
    return adata


def _gz(path: Path, data: bytes) -> None:
    from deepmapper._utils.atomic import atomic_path

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:  # mtime 0: byte-identical reruns
        fh.write(data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def write_10x(adata, folder: Path) -> None:
    """One 10x matrix directory (features x barcodes Matrix Market, real values)."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.mmwrite(buf, adata.X.T.tocoo(), field="real", precision=6)
    _gz(folder / "matrix.mtx.gz", buf.getvalue())
    _gz(folder / "barcodes.tsv.gz", "".join(f"{b}\n" for b in adata.obs_names).encode())
    _gz(folder / "features.tsv.gz", "".join(f"{g}\t{g}\tGene Expression\n" for g in adata.var_names).encode())


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")


def write_sheet(path: Path, header: list[str], rows: list[list[str]]) -> None:
    from deepmapper._utils.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_full(folder: Path, n_cells: int = 20000) -> Path:
    """The test_full profile's input: a seeded planted dataset (deepmapper.datasets.synthetic.planted), 4 classes,
    2,000 genes of which 20 per class are planted markers and 20 pairs combinatorial; truth.json beside."""
    import json

    from deepmapper._utils.atomic import atomic_path, write_text
    from deepmapper.datasets.synthetic import planted

    adata, truth = planted(n_cells, 2000, n_classes=4, seed=0)
    target = folder / "planted.h5ad"
    with atomic_path(target) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
    write_text(folder / "truth.json", json.dumps(truth, indent=1, default=lambda o: o.tolist()
                                                 if hasattr(o, "tolist") else str(o)) + "\n")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root to write into [%(default)s]")
    parser.add_argument("--full", action="store_true",
                        help="only the test_full profile's input (assets/test_full/planted.h5ad, not in git)")
    parser.add_argument("--full-cells", type=int, default=20000, help="cells of the test_full dataset [%(default)s]")
    args = parser.parse_args(argv)
    root = args.root
    test = root / "assets" / "test"

    from deepmapper._utils.atomic import atomic_path

    if args.full:
        target = write_full(root / "assets" / "test_full", args.full_cells)
        print(f"wrote {target}")
        return 0

    adata = pbmc()
    target = test / "pbmc68k_reduced.h5ad"
    with atomic_path(target) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
    print(f"wrote {target} ({adata.n_obs} cells x {adata.n_vars} genes)")

    rows = []
    for label in POPULATIONS:
        folder = test / "populations" / slug(label)
        write_10x(adata[adata.obs["bulk_labels"] == label], folder)
        rows.append([slug(label), str(folder.relative_to(root / "assets")), label])  # relative to the sheet
    write_sheet(root / "assets" / "samplesheet_test_populations.csv", ["sample", "path", "label"], rows)
    print(f"wrote {len(rows)} 10x population directories under {test / 'populations'}")

    from deepmapper.datasets.seqsim import SimConfig, simulate_experiment

    sim = simulate_experiment(test / "denovo", SimConfig(
        n_reference=20, n_novel=4, n_novel_de=2, samples_per_group=3, reads_per_sample=600,
        read_length=75, length_range=(400, 800), seed=0))
    with open(sim.samplesheet, newline="") as fh:
        rows = [[r["sample"], *(str(Path(r[k]).relative_to(root / "assets")) if r[k] else "" for k in ("fastq_1", "fastq_2")),
                 r["label"]] for r in csv.DictReader(fh)]
    sim.samplesheet.unlink()  # absolute paths; the shipped sheet is relative to its own folder (assets/)
    write_sheet(root / "assets" / "samplesheet_test_denovo.csv", ["sample", "fastq_1", "fastq_2", "label"], rows)
    print(f"wrote simulated reads for {len(rows)} samples under {test / 'denovo'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
