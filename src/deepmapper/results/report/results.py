"""Read a results directory into one object the MultiQC and HTML writers share.

Only ``findings.tsv`` and ``findings.json`` are required (they are what the
accumulate step writes); everything else (pass files, baselines, evaluation,
dataset, run info) is optional and its absence is recorded in ``notes`` so the
report says what is missing instead of failing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmapper.errors import FormatError, InputError
from deepmapper.io import DENOVO_PREFIX
from deepmapper.results import layout
from deepmapper.results.load import read_json, read_tsv

FINDINGS_COLUMNS = ("feature", "rank", "selection_frequency", "median_importance", "mean_rank", "pfer_bound")
PER_CLASS_COLUMNS = ("class", "feature", "rank", "median_importance")
BASELINE_COLUMNS = ("feature", "rank")


@dataclass
class PassSummary:
    """The parts of a pass file the report draws (not the held-out predictions)."""

    pass_index: int
    seed: int
    accuracy: float
    accepted: bool
    stop_epoch: int
    best_epoch: int
    early_stopped: bool
    train_loss: list[float]
    val_loss: list[float]
    importance: Any  # np.ndarray (n_features,)
    gate: dict | None = None           # meta.gate: {score, chance} (with a sample key: balanced accuracy, 1/labels)
    heldout_index: Any = None          # np.ndarray of the held-out cells' rows in the dataset


@dataclass
class Results:
    results_dir: Path
    findings: Any                      # pandas DataFrame sorted by rank
    summary: dict                      # findings.json
    per_class: Any = None              # DataFrame or None
    passes: list[PassSummary] = field(default_factory=list)
    baselines: dict = field(default_factory=dict)   # method -> DataFrame
    baselines_meta: dict = field(default_factory=dict)
    evaluation: dict | None = None
    dataset: dict = field(default_factory=dict)     # n_cells, n_features, source, source_sha256, label_key, ...
    run_info: dict | None = None
    notes: list[str] = field(default_factory=list)
    pairs: Any = None                  # findings_pairs.tsv (placed pairs, accumulated) or None
    interactions: Any = None           # interactions.tsv (the screen) or None
    pair_values: dict = field(default_factory=dict)   # gene -> values of the plotted cells
    pair_labels: list = field(default_factory=list)   # class of each plotted cell
    cell_samples: Any = None           # (sample id per cell, label per cell) with a sample key, else None
    heldout_samples: dict | None = None  # {"n": held-out samples, "per_label": {label: n}} with a sample key

    @property
    def n_features(self) -> int:
        return int(len(self.findings))

    @property
    def feature_order(self) -> list[str] | None:
        """Features in dataset order (the order arrangements permute), when the dataset is at hand."""
        names = self.dataset.get("var_names")
        return names if names and len(names) == self.n_features else None

    @property
    def n_cells(self) -> int | None:
        n = self.dataset.get("n_cells", self.summary.get("n_cells"))
        return None if n is None else int(n)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in (self.summary.get("classes") or (self.evaluation or {}).get("classes") or [])]

    @property
    def accuracies(self) -> list[float]:
        return [float(a) for a in self.summary.get("accuracies", [p.accuracy for p in self.passes])]

    @property
    def accepted(self) -> list[bool]:
        return [bool(a) for a in self.summary.get("accepted", [p.accepted for p in self.passes])]

    @property
    def top_k(self) -> int | None:
        k = self.summary.get("top_k", ((self.summary.get("config") or {}).get("run") or {}).get("top_k"))
        return None if k is None else int(k)

    def mean_accepted_accuracy(self) -> float | None:
        acc = [a for a, ok in zip(self.accuracies, self.accepted) if ok]
        return float(sum(acc) / len(acc)) if acc else None

    @property
    def sample_name(self) -> str:
        """Name of the run in MultiQC: the input file's stem, else 'deepmapper'."""
        src = self.dataset.get("source")
        if isinstance(src, (list, tuple)):
            src = src[0] if len(src) == 1 else None
        if src:
            name = Path(str(src).split("=", 1)[-1].rstrip("/")).name
            for ext in (".gz", ".h5ad", ".csv", ".tsv", ".txt", ".h5"):
                name = name.removesuffix(ext)
            if name:
                return name
        return "deepmapper"


def load_results(results_dir: str | Path) -> Results:
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError("results directory not found", where=str(root),
                         fix="give --results the --outdir of 'deepmapper run' (or of the accumulate step).")
    findings_path = root / layout.FINDINGS
    summary_path = root / layout.FINDINGS_JSON
    for p in (findings_path, summary_path):
        if not p.is_file():
            raise InputError(f"{p.name} is missing", where=str(root), field=p.name,
                             fix="run 'deepmapper accumulate' into this directory first.")
    findings = read_tsv(findings_path, FINDINGS_COLUMNS)
    findings = findings.sort_values("rank", kind="stable").reset_index(drop=True)
    summary = read_json(summary_path)
    res = Results(results_dir=root, findings=findings, summary=summary)

    per_class_path = root / layout.FINDINGS_PER_CLASS
    if per_class_path.is_file():
        res.per_class = read_tsv(per_class_path, PER_CLASS_COLUMNS)
    else:
        res.notes.append("findings_per_class.tsv is absent: no per-class top features.")

    res.dataset = _dataset_info(root / layout.DATASET, res)
    names = res.dataset.get("var_names")
    if names is not None and set(names) != set(findings["feature"]):
        raise FormatError(f"findings.tsv ranks {len(findings)} features but dataset.h5ad holds {len(names)} "
                          "(or other names)", where=str(findings_path), field="feature",
                          fix="use findings and dataset.h5ad from the same run.")
    if "is_denovo" in findings.columns:
        findings["is_denovo"] = findings["is_denovo"].map(_truthy)
    else:
        flags = res.dataset.pop("denovo", None)
        findings["is_denovo"] = [bool(flags and flags.get(f)) or str(f).startswith(DENOVO_PREFIX)
                                 for f in findings["feature"]]

    res.passes = _read_passes(root / "passes", res)
    _read_baselines(root / "baselines", res)
    _read_pairs(root, res)

    eval_path = root / layout.EVALUATION
    if eval_path.is_file():
        res.evaluation = read_json(eval_path)
    else:
        res.notes.append("evaluation.json is absent: no confusion matrix of the ensembled classifier.")
    res.heldout_samples = _heldout_samples(res)
    info_path = root / layout.RUN_INFO
    if info_path.is_file():
        res.run_info = read_json(info_path)
    return res


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def _dataset_info(path: Path, res: Results) -> dict:
    info: dict[str, Any] = {}
    if not path.is_file():
        res.notes.append("dataset.h5ad is absent: input file and checksum are taken from findings.json.")
        info["source_sha256"] = res.summary.get("dataset_sha256")
        return info
    from deepmapper import io

    adata = io.read_dataset(path, backed=True)   # the dataset's schema check, without loading the matrix
    try:
        meta = dict(adata.uns.get("deepmapper", {}))
        info.update({k: _plain(v) for k, v in meta.items()})
        info["n_cells"], info["n_features"] = int(adata.n_obs), int(adata.n_vars)
        info["var_names"] = [str(v) for v in adata.var_names]
        if "is_denovo" in adata.var.columns:
            info["denovo"] = dict(zip(adata.var_names.astype(str), adata.var["is_denovo"].astype(bool)))
        res.cell_samples = _cell_samples(adata, meta)
        if meta.get("matrix") == "aucell" and meta.get("label_key") in adata.obs.columns:
            info["rss"] = _regulon_specificity(adata, meta["label_key"])
    finally:
        adata.file.close()
    return info


def _cell_samples(adata, meta: dict):
    """(sample id of every cell, label of every cell) of a dataset with a sample key (io.samples: a
    paired design's samples are donor:label), else None."""
    import numpy as np

    from deepmapper import io

    label_key = meta.get("label_key")
    if not meta.get("sample_key") or label_key not in adata.obs.columns:
        return None
    got = io.samples(adata)
    if got is None:
        return None
    codes, names = got
    return (np.asarray(names, dtype=object)[codes], np.asarray(adata.obs[label_key].astype(str), dtype=object))


def _heldout_samples(res: Results) -> dict | None:
    """How many samples the held-out cells come from, per label when the dataset is at hand:
    evaluation.json's ``heldout_samples`` where it lists them, else the passes' held-out cells mapped
    to samples through the dataset's sample key; None without a sample key."""
    import numpy as np

    listed = (res.evaluation or {}).get("heldout_samples")
    if isinstance(listed, list) and listed:
        per_label: dict[str, int] = {}
        if res.cell_samples is not None:
            ids, labels = res.cell_samples
            label_of = dict(zip(ids.tolist(), labels.tolist()))
            for s in listed:
                if str(s) in label_of:
                    per_label[str(label_of[str(s)])] = per_label.get(str(label_of[str(s)]), 0) + 1
            if sum(per_label.values()) != len(listed):
                per_label = {}
        return {"n": len(listed), "per_label": dict(sorted(per_label.items()))}
    if res.cell_samples is None or not res.passes:
        return None
    ids, labels = res.cell_samples
    rows = [p.heldout_index for p in res.passes if p.heldout_index is not None and len(p.heldout_index)]
    if not rows:
        return None
    idx = np.unique(np.concatenate(rows))
    if idx.max() >= len(ids):
        return None
    by_sample = dict(zip(ids[idx].tolist(), labels[idx].tolist()))
    per_label: dict[str, int] = {}
    for lab in by_sample.values():
        per_label[str(lab)] = per_label.get(str(lab), 0) + 1
    return {"n": len(by_sample), "per_label": dict(sorted(per_label.items()))}


def _regulon_specificity(adata, label_key: str) -> dict:
    """Gene-set features: regulon specificity score (Jensen-Shannon based) per label and set."""
    import numpy as np

    from deepmapper.features.aucell import regulon_specificity

    X = adata.X[:]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    table = regulon_specificity(X, adata.obs[label_key].astype(str).to_numpy())
    table.columns = [str(v) for v in adata.var_names]
    return {str(label): {k: (None if v != v else float(v)) for k, v in row.items()}
            for label, row in table.iterrows()}


def _plain(v):
    """h5ad uns values come back as numpy scalars/arrays; make them JSON-able."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _read_passes(folder: Path, res: Results) -> list[PassSummary]:
    from deepmapper.engine.passfile import read_pass

    files = sorted(folder.glob("pass_*.npz")) if folder.is_dir() else []
    if not files:
        res.notes.append("passes/ holds no pass files: no loss curves and no attribution map.")
        return []
    out = []
    for f in files:
        p = read_pass(f)
        if p.n_features != res.n_features:
            raise FormatError(f"pass has {p.n_features} features but findings.tsv has {res.n_features}",
                              where=str(f), field="importance",
                              fix="use pass files and findings from the same run.")
        out.append(PassSummary(pass_index=int(p.pass_index), seed=int(p.seed), accuracy=float(p.accuracy),
                               accepted=bool(p.accepted), stop_epoch=int(p.stop_epoch),
                               best_epoch=int(p.best_epoch), early_stopped=bool(p.early_stopped),
                               train_loss=[float(x) for x in p.train_loss],
                               val_loss=[float(x) for x in p.val_loss], importance=p.importance,
                               gate=(p.meta or {}).get("gate") or None, heldout_index=p.heldout_index))
    out.sort(key=lambda p: p.pass_index)
    return out


N_PAIR_PLOTS = 6        # pairs drawn as gene a against gene b
MAX_PLOT_CELLS = 3000   # cells on each pair's scatter (a seeded sample beyond)


def _read_pairs(root: Path, res: Results) -> None:
    """findings_pairs.tsv and interactions.tsv (both optional), and the expression of the genes of the
    top pairs from dataset.h5ad for the scatter plots."""
    import numpy as np

    path = root / layout.FINDINGS_PAIRS
    if path.is_file():
        res.pairs = read_tsv(path, ("feature_a", "feature_b", "class", "rank"))
        res.pairs = res.pairs.sort_values("rank", kind="stable").reset_index(drop=True)
    screen = root / layout.INTERACTIONS
    if screen.is_file():
        from deepmapper.engine.interactions import read_table

        res.interactions = read_table(screen)
    if res.interactions is None and (res.pairs is None or res.pairs.empty):
        # --no-interactions: accumulate still writes findings_pairs.tsv, a header and no row; the
        # Gene pairs section says so (the user chose it: no note at the top of the report)
        return
    top = res.pairs if res.pairs is not None and len(res.pairs) else res.interactions
    genes = list(dict.fromkeys([str(g) for a, b in zip(top["feature_a"].head(N_PAIR_PLOTS),
                                                        top["feature_b"].head(N_PAIR_PLOTS)) for g in (a, b)]))
    dataset = root / layout.DATASET
    if not genes or not dataset.is_file():
        return
    import anndata

    adata = anndata.read_h5ad(dataset, backed="r")
    try:
        label_key = adata.uns.get("deepmapper", {}).get("label_key")
        names = [str(v) for v in adata.var_names]
        cols = [names.index(g) for g in genes if g in names]
        if label_key not in adata.obs.columns or not cols:
            return
        n = adata.n_obs
        rows = np.arange(n) if n <= MAX_PLOT_CELLS else \
            np.sort(np.random.default_rng(0).choice(n, MAX_PLOT_CELLS, replace=False))
        block = adata.X[rows][:, cols]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        res.pair_values = {names[c]: [round(float(v), 4) for v in block[:, k]] for k, c in enumerate(cols)}
        res.pair_labels = [str(v) for v in np.asarray(adata.obs[label_key])[rows]]
    finally:
        adata.file.close()


def _read_baselines(folder: Path, res: Results) -> None:
    for method in ("logistic", "wilcoxon"):
        path = folder / f"{method}.tsv"
        if path.is_file():
            res.baselines[method] = read_tsv(path, BASELINE_COLUMNS).sort_values("rank", kind="stable") \
                .reset_index(drop=True)
        else:
            res.notes.append(f"baselines/{method}.tsv is absent: no comparison with {method}.")
    path = folder / layout.baseline_table("pseudobulk")     # runs with a sample key
    if path.is_file():
        res.baselines["pseudobulk"] = read_tsv(path, BASELINE_COLUMNS).sort_values("rank", kind="stable") \
            .reset_index(drop=True)
    path = folder / layout.INTERACTIONS      # the pair screen alone (runs with interactions on)
    if path.is_file():
        res.baselines["interactions"] = read_tsv(path, BASELINE_COLUMNS).sort_values("rank", kind="stable") \
            .reset_index(drop=True)
    meta = folder / layout.BASELINES_JSON
    if meta.is_file():
        res.baselines_meta = read_json(meta)


def finite_or_none(x):
    """JSON has no infinity: an infinite PFER bound is written as null."""
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return None
    return xf if math.isfinite(xf) else None


def with_samples(res: Results) -> bool:
    """A run with a sample key: held out are whole samples and the gate is balanced accuracy."""
    return bool(res.summary.get("sample_level"))


def heldout_text(res: Results) -> str:
    """Where the held-out accuracy was measured, in the report's and MultiQC's words: 'on 173 held-out
    cells from 2 held-out samples (donor: 1 control, 1 disease)'."""
    ev = res.evaluation or {}
    n_cells = ev.get("heldout_size")
    out = "on " + (f"{int(n_cells):,} " if n_cells is not None else "") + "held-out cells"
    hs, sl = res.heldout_samples, res.summary.get("sample_level") or {}
    if hs:
        key = sl.get("sample_key")
        per = ", ".join(f"{n} {lab}" for lab, n in hs["per_label"].items())
        detail = ": ".join(x for x in (str(key) if key else "", per) if x)
        out += f" from {hs['n']} held-out sample{'s' if hs['n'] != 1 else ''}" + (f" ({detail})" if detail else "")
    elif sl:
        out += " from whole held-out samples (dataset.h5ad is absent: how many is unknown)"
    return out
