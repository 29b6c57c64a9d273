"""Labels from clustering, for data that has none: Leiden on PCA (RNA) or on iterative LSI (ATAC).

``cluster_labels`` returns a copy of the AnnData with the clusters in ``obs[key]``
(categorical, named ``"0", "1", ...`` by decreasing size) and the embedding in
``obsm`` (``X_pca`` or ``X_lsi``); ``uns["cluster"]`` records how they were made.
The neighbour graph is exact (scikit-learn, cosine distance, unweighted) and
Leiden (leidenalg, modularity with a resolution) runs to convergence from a fixed
seed, so the same input and seed give the same labels.
"""
from __future__ import annotations

import json
import logging

import numpy as np

from deepmapper.errors import ConfigError
from deepmapper.features._leiden import leiden_on_embedding

log = logging.getLogger(__name__)

MODALITIES = ("rna", "atac")


def check_label_source(label_key: str | None, cluster: bool) -> None:
    """Labels come from one place: an obs column (``--label-key``) or clustering (``--cluster``)."""
    if cluster and label_key:
        raise ConfigError(f"--cluster derives labels by clustering but --label-key '{label_key}' names "
                          "existing labels", where="command line", field="--cluster/--label-key",
                          fix="drop --cluster to use the labels in that column, or drop --label-key to "
                              "cluster.")


def drop_small_clusters(adata, key: str, min_size: int):
    """Cells of clusters with fewer than ``min_size`` cells removed (they cannot be classes of a
    stratified split); returns (adata, {cluster: size} of the dropped ones)."""
    sizes = adata.obs[key].value_counts()
    small = sizes[sizes < min_size]
    if not len(small):
        return adata, {}
    log.warning("dropping %d cells in %d clusters smaller than %d cells (%s)", int(small.sum()), len(small),
                min_size, ", ".join(map(str, small.index)))
    kept = adata[~adata.obs[key].isin(small.index)].copy()
    kept.obs[key] = kept.obs[key].astype(str).astype("category")
    return kept, {str(k): int(v) for k, v in small.items()}


def pca_embedding(X, *, n_components: int = 50, n_top_genes: int = 2000, seed: int = 0) -> np.ndarray:
    """PCA of an RNA matrix: counts are normalised (1e4) and log1p'd first; at most ``n_top_genes``
    genes of highest variance are kept; genes are scaled (clipped at 10) before the PCA."""
    import scipy.sparse as sp
    from sklearn.utils.extmath import randomized_svd

    from deepmapper.io import looks_like_counts, normalize_log1p

    if looks_like_counts(X):
        X = normalize_log1p(X)
    if X.shape[1] > n_top_genes:  # choose genes while still sparse: only the kept ones are densified
        if sp.issparse(X):
            mean = np.asarray(X.mean(axis=0)).ravel()
            var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
        else:
            var = np.asarray(X).var(axis=0)
        X = X[:, np.sort(np.argsort(-var, kind="stable")[:n_top_genes])]
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = X.astype(np.float32, copy=False)
    var = X.var(axis=0)
    X = (X - X.mean(0)) / np.where(var > 0, np.sqrt(var), 1.0)
    np.clip(X, -10, 10, out=X)
    k = int(min(n_components, X.shape[0] - 1, X.shape[1] - 1))
    U, S, _ = randomized_svd(X, k, n_iter=7, random_state=seed)
    return (U * S).astype(np.float32)


def cluster_labels(adata, *, modality: str = "rna", resolution: float = 1.0, seed: int = 0,
                   key: str = "cluster", n_components: int | None = None, n_neighbors: int | None = None,
                   matrix: str = "auto", where: str = "input"):
    """A copy of ``adata`` with Leiden clusters in ``obs[key]`` and the embedding in ``obsm``.

    ``modality="rna"``: PCA (``obsm["X_pca"]``, 50 components by default) of the chosen
    matrix. ``modality="atac"``: the matrix must hold peak counts; binarise, TF-IDF and
    iterative LSI with the depth filter (``obsm["X_lsi"]``, 30 components by default).
    ``matrix``: ``auto`` (``.raw`` when present, else ``X``), ``X``, ``raw`` or ``layer:<name>``.
    ``n_neighbors``: 15 for RNA, 50 for ATAC (sparse cells are noisy neighbours) unless given.
    """
    from deepmapper.io import choose_matrix

    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality '{modality}'", where="--modality", field="modality",
                          fix=f"use one of {', '.join(MODALITIES)}.")
    if not resolution > 0:
        raise ConfigError(f"resolution must be > 0 (got {resolution})", where="--resolution",
                          field="resolution", fix="use e.g. 1.0 (higher gives more clusters).")
    X, var_names, _, chosen = choose_matrix(adata, matrix, where=where)
    n_neighbors = int(n_neighbors or (50 if modality == "atac" else 15))
    info = {"modality": modality, "resolution": float(resolution), "seed": int(seed), "matrix": chosen,
            "n_neighbors": int(n_neighbors)}
    if modality == "atac":
        from deepmapper.features import atac

        atac.check_peak_counts(X, var_names, where=where, field=chosen)
        fit = atac.iterative_lsi(X, n_components=n_components or 30, seed=seed, n_neighbors=n_neighbors)
        emb, emb_key = fit.embedding, "X_lsi"
        info["lsi_rounds"] = json.dumps(fit.rounds)  # h5ad cannot store a list of mappings
        info["n_features"] = int(fit.features.size)
    else:
        from deepmapper.io import check_finite

        check_finite(X, var_names, where=where, field=chosen)
        emb, emb_key = pca_embedding(X, n_components=n_components or 50, seed=seed), "X_pca"
    codes = leiden_on_embedding(emb, resolution=resolution, seed=seed, n_neighbors=n_neighbors)
    import pandas as pd

    names = [str(k) for k in range(int(codes.max()) + 1)]
    out = adata.copy()
    out.obs[key] = pd.Categorical([names[c] for c in codes], categories=names)
    out.obsm[emb_key] = emb
    info["n_clusters"] = len(names)
    info["embedding"] = emb_key
    out.uns["cluster"] = info
    log.info("clustering (%s): %d clusters, sizes %s", modality, len(names),
             ", ".join(str(int(n)) for n in np.bincount(codes)))
    return out
