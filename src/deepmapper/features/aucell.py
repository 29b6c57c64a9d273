"""Gene-set activity per cell (AUCell), vectorised in torch, and regulon specificity (RSS).

AUCell (Aibar et al. 2017): rank the genes of each cell by expression (highest
first); a set's score is the area under its recovery curve over the top
``n_up = ceil(top_fraction * n_genes)`` ranks, divided by the largest area a set of
that size can reach. Equivalently, with ranks ``r`` starting at 1,

    score = sum over genes g of the set with r_g < n_up of (n_up - r_g)  /  max_area

which is what is computed here: one ``topk`` per cell, a per-cell weight
``n_up - r`` on the top genes, and one matrix product with the genes x sets
membership matrix. Cells are processed in batches on the chosen device.

Ties (equal expression, e.g. the zeros of a sparse cell) are ranked
deterministically: tied genes share the mean of the ranks they span (scipy's
``rankdata(method="average")``). The score therefore does not depend on the order
of the genes in the matrix nor on a random seed, and equals the published
definition (and decoupler's) whenever a cell has no ties among its top genes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepmapper.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

TIE_RULE = "average: tied genes share the mean of the ranks they span"


@dataclass
class GeneSets:
    names: list[str]
    genes: list[list[str]]   # unique within a set, in file order
    source: str


def read_gmt(path: str | Path) -> GeneSets:
    """Read a GMT file: one set per line, ``name<TAB>description<TAB>gene<TAB>gene...``.

    Blank lines and lines starting with ``#`` are skipped. Empty or duplicate set
    names are errors naming the line; genes repeated within a set count once.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("gene-set file not found", where=str(path), field="genesets",
                         fix="give a GMT file (name, description, genes; tab-separated) to --genesets.")
    names, genes, seen = [], [], {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            name = parts[0].strip()
            if not name:
                raise InputError(f"line {lineno} has an empty gene-set name", where=str(path), field="name",
                                 fix="put the set name in the first tab-separated column of every line.")
            if name in seen:
                raise InputError(f"gene-set name '{name}' appears twice (lines {seen[name]} and {lineno})",
                                 where=str(path), field="name", fix="give every set a unique name.")
            if len(parts) < 2:
                raise InputError(f"line {lineno} ('{name}') is not tab-separated", where=str(path),
                                 field="genes", fix="separate name, description and genes with tabs.")
            seen[name] = lineno
            members = list(dict.fromkeys(g.strip() for g in parts[2:] if g.strip()))
            names.append(name)
            genes.append(members)
    if not names:
        raise InputError("no gene sets in the file", where=str(path), field="genesets",
                         fix="give a GMT file with at least one line: name<TAB>description<TAB>genes.")
    return GeneSets(names=names, genes=genes, source=str(path))


def membership(sets: GeneSets, var_names, *, min_size: int = 5):
    """(genes x kept sets float32 matrix, kept names, matched sizes, dropped {name: matched size}).

    Sets with fewer than ``min_size`` genes present in ``var_names`` are dropped;
    when every set is dropped the error says how the names failed to match.
    """
    var_names = [str(v) for v in var_names]
    index = {g: i for i, g in enumerate(var_names)}
    if len(index) != len(var_names):
        dup = next(g for g in var_names if var_names.count(g) > 1)
        raise InputError(f"feature names are not unique (e.g. '{dup}')", where="input", field="var_names",
                         fix="make gene names unique (e.g. anndata's var_names_make_unique) before scoring.")
    kept, sizes, columns, dropped = [], [], [], {}
    for name, members in zip(sets.names, sets.genes):
        hit = [index[g] for g in members if g in index]
        if len(hit) < min_size:
            dropped[name] = len(hit)
            continue
        kept.append(name)
        sizes.append(len(hit))
        columns.append(hit)
    if not kept:
        matched = sum(dropped.values())
        example = next((m[0] for m in sets.genes if m), "none")
        raise InputError(f"no gene set has at least {min_size} genes in the data ({matched} set members "
                         f"matched in total; GMT genes look like '{example}', data genes like "
                         f"'{var_names[0] if var_names else 'none'}')", where=sets.source, field="genes",
                         fix="use the same gene identifiers (symbols or Ensembl ids, same case) in the GMT "
                             "and the data, or lower --min-size.")
    M = np.zeros((len(var_names), len(kept)), dtype=np.float32)
    for j, hit in enumerate(columns):
        M[hit, j] = 1.0
    if dropped:
        listed = ", ".join(f"{k} ({v})" for k, v in dropped.items())
        log.warning("%s: dropped %d gene set(s) with fewer than %d genes in the data (genes matched): %s",
                    sets.source, len(dropped), min_size, listed)
    return M, kept, np.asarray(sizes), dropped


def n_up_for(n_genes: int, top_fraction: float) -> int:
    """Ranks that count: ``ceil(top_fraction * n_genes)``, at least 2, at most ``n_genes``."""
    return int(min(max(math.ceil(top_fraction * n_genes), 2), n_genes))


def max_area(sizes: np.ndarray, n_up: int) -> np.ndarray:
    """Largest area for a set of each size: its genes at ranks 1..min(size, n_up - 1)."""
    m = np.minimum(np.asarray(sizes, dtype=np.float64), n_up - 1)
    return m * n_up - m * (m + 1) / 2


def _device(device):
    """A torch.device as is (the entry point's device.setup), or a name resolved by device.select_device."""
    from deepmapper.device import select_device

    return device if not isinstance(device, str) else select_device(device)


def _rank_weights(x, n_up: int):
    """Per-cell weights ``max(0, n_up - rank)`` (average ranks for ties), as a dense (B, G) tensor.

    Genes strictly above the n_up-th largest value ``t`` all sit in the top-k, so their
    tie counts can be read off the sorted top-k values; genes equal to ``t`` may lie
    partly outside the top-k and are counted over the whole row.
    """
    import torch

    vals, idx = torch.topk(x, n_up, dim=1, largest=True, sorted=True)
    t = vals[:, -1:]
    asc = vals.flip(1).contiguous()
    le = torch.searchsorted(asc, vals, right=True)       # top values <= v
    lt = torch.searchsorted(asc, vals, right=False)      # top values < v
    n_gt = (n_up - le).to(x.dtype)
    n_eq = (le - lt).to(x.dtype)
    rank = n_gt + (n_eq + 1) / 2
    w_top = torch.clamp(n_up - rank, min=0)
    above = vals > t
    W = torch.zeros_like(x)
    W.scatter_(1, idx, torch.where(above, w_top, torch.zeros_like(w_top)))
    at_t = x == t
    n_gt_t = above.sum(1, keepdim=True).to(x.dtype)  # every gene above t is in the top-k
    n_eq_t = at_t.sum(1, keepdim=True).to(x.dtype)
    w_t = torch.clamp(n_up - (n_gt_t + (n_eq_t + 1) / 2), min=0)
    return W + at_t.to(x.dtype) * w_t


def aucell_matrix(X, M: np.ndarray, sizes: np.ndarray, *, top_fraction: float = 0.05, device: str = "auto",
                  batch_size: int | None = None) -> np.ndarray:
    """AUCell scores (cells x sets, float32 in [0, 1]) of a cells x genes matrix (dense or sparse)."""
    import scipy.sparse as sp
    import torch

    n_cells, n_genes = X.shape
    n_up = n_up_for(n_genes, top_fraction)
    dev = _device(device)
    # weights are multiples of 0.5, and a set's sum is at most n_up * (n_up - 1) / 2: float32
    # holds every such sum exactly up to n_up = 4096 (2^24 halves); beyond that use float64
    dtype = torch.float32 if n_up * (n_up - 1) < 2 ** 24 else torch.float64
    if batch_size is None:  # about 16M values per dense block, whatever the gene count
        batch_size = int(min(4096, max(16, 2 ** 24 // max(n_genes, 1))))
    Mt = torch.as_tensor(M, dtype=dtype, device=dev)
    denom = torch.as_tensor(max_area(sizes, n_up), dtype=torch.float64)     # CPU: MPS has no float64
    if dtype == torch.float64:
        from deepmapper.device import float64_device

        dev = float64_device(dev)
        Mt = Mt.to(dev)
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    out = np.empty((n_cells, M.shape[1]), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n_cells, batch_size):
            block = X[start:start + batch_size]
            block = block.toarray() if sp.issparse(block) else block
            x = torch.as_tensor(np.ascontiguousarray(block, dtype=np.float32), device=dev)
            if not torch.isfinite(x).all():
                raise InputError("the expression matrix has NaN or infinite values", where="input", field="X",
                                 fix="replace missing values before scoring gene sets.")
            W = _rank_weights(x, n_up).to(dtype)
            out[start:start + batch_size] = ((W @ Mt).cpu().to(torch.float64) / denom).numpy()
    return out


def score_genesets(adata, gmt_path, *, min_size: int = 5, top_fraction: float = 0.05, matrix: str = "auto",
                   device: str = "auto", batch_size: int | None = None):
    """AUCell scores as a new AnnData: cells x gene sets, ``obs`` (and ``obsm``) carried over.

    ``matrix``: ``auto`` (``.raw`` when present, else ``X``), ``X``, ``raw`` or
    ``layer:<name>``; expression values are ranked as they are (a monotone
    transform such as log1p does not change the scores). ``var`` holds each set's
    ``n_genes`` (matched) and ``n_genes_gmt``; ``uns["aucell"]`` records the
    parameters, the tie rule and the dropped sets.
    """
    import anndata as ad
    import pandas as pd

    from deepmapper.errors import ConfigError
    from deepmapper.io import choose_matrix

    if not 0.0 < top_fraction <= 1.0:
        raise ConfigError(f"top_fraction must lie in (0, 1] (got {top_fraction})", where="--top-fraction",
                          field="top_fraction", fix="use e.g. 0.05 (the top 5% of genes per cell).")
    if min_size < 1:
        raise ConfigError(f"min_size must be >= 1 (got {min_size})", where="--min-size", field="min_size",
                          fix="use e.g. 5.")
    sets = read_gmt(gmt_path)
    X, var_names, _, chosen = choose_matrix(adata, matrix, where="input")
    M, kept, sizes, dropped = membership(sets, var_names, min_size=min_size)
    scores = aucell_matrix(X, M, sizes, top_fraction=top_fraction, device=device, batch_size=batch_size)
    gmt_sizes = dict(zip(sets.names, (len(g) for g in sets.genes)))
    var = pd.DataFrame({"n_genes": sizes.astype(np.int64), "n_genes_gmt": [gmt_sizes[k] for k in kept]},
                       index=pd.Index(kept, name="gene_set"))
    out = ad.AnnData(X=scores, obs=adata.obs.copy(), var=var)
    for k, v in adata.obsm.items():
        out.obsm[k] = v
    if "deepmapper" in adata.uns:
        # provenance: the features are now AUCell scores in [0, 1]
        out.uns["deepmapper"] = dict(adata.uns["deepmapper"]) | {"matrix": "aucell", "normalized": True}
    out.uns["aucell"] = {"genesets": str(gmt_path), "matrix": chosen, "min_size": int(min_size),
                         "top_fraction": float(top_fraction), "n_up": n_up_for(X.shape[1], top_fraction),
                         "n_genes": int(X.shape[1]), "tie_rule": TIE_RULE,
                         "dropped_sets": list(dropped), "dropped_sizes": [int(v) for v in dropped.values()]}
    return out


def regulon_specificity(scores, labels) -> "pd.DataFrame":
    """Regulon specificity score (Suo et al. 2018): labels x sets, ``1 - sqrt(JSD)`` (log base 2).

    For each set, its scores over cells, divided by their sum, form one distribution;
    for each label, the uniform distribution over that label's cells forms the other.
    RSS is 1 when a set's activity sits evenly in exactly that label's cells and 0 when
    the two distributions do not overlap. ``scores``: an AnnData from
    :func:`score_genesets` (then ``labels`` may be an obs column name) or a DataFrame
    (cells x sets); ``labels``: one label per cell. Sets whose scores are all zero get NaN.
    """
    import pandas as pd

    if hasattr(scores, "obs") and hasattr(scores, "X"):
        if isinstance(labels, str):
            if labels not in scores.obs.columns:
                raise InputError(f"no obs column '{labels}'", where="scores", field=labels,
                                 fix="name a column of obs that holds the labels.")
            labels = scores.obs[labels]
        names = list(scores.var_names)
        S = np.asarray(scores.X.toarray() if hasattr(scores.X, "toarray") else scores.X, dtype=np.float64)
    elif isinstance(scores, pd.DataFrame):
        names = list(scores.columns)
        S = scores.to_numpy(dtype=np.float64)
    else:
        S = np.asarray(scores, dtype=np.float64)
        names = [str(j) for j in range(S.shape[1])]
    labels = np.asarray(pd.Series(labels).astype(str))
    if labels.shape[0] != S.shape[0]:
        raise InputError(f"{labels.shape[0]} labels for {S.shape[0]} cells", where="labels", field="labels",
                         fix="give one label per cell.")
    if (S < 0).any() or not np.isfinite(S).all():
        raise InputError("scores must be finite and non-negative", where="scores", field="X",
                         fix="pass AUCell scores (in [0, 1]).")
    total = S.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        P = S / total  # cells x sets, columns sum to 1

    def plogp(v):
        return np.where(v > 0, v * np.log2(np.where(v > 0, v, 1.0)), 0.0)

    h_p = -plogp(P).sum(0)
    half_all = plogp(P / 2).sum(0)  # sum over all cells of f(p/2)
    classes = sorted(np.unique(labels))
    rss = np.empty((len(classes), S.shape[1]))
    for k, c in enumerate(classes):
        inside = labels == c
        n_c = int(inside.sum())
        q = 1.0 / n_c
        p_in = P[inside]
        # H(M) with M = (P + Q) / 2: cells of the label have (p + q)/2, the others p/2
        h_m = -(plogp((p_in + q) / 2).sum(0) + half_all - plogp(p_in / 2).sum(0))
        h_q = np.log2(n_c)
        jsd = np.clip(h_m - (h_p + h_q) / 2, 0.0, 1.0)
        rss[k] = 1.0 - np.sqrt(jsd)
    rss[:, ~(total > 0)] = np.nan
    return pd.DataFrame(rss, index=pd.Index(classes, name="label"), columns=pd.Index(names, name="gene_set"))
