"""Optional comparator for two-condition designs: kompot's differential expression ranking.

kompot (PyPI, JAX on CPU; an optional extra, not a core dependency) models each
condition's expression as a Gaussian process over cell states and scores every gene
by the Mahalanobis distance between the two conditions' predictions. Here the cell
states are the PCA coordinates of the matrix (``obsm["X_pca"]`` when present, else
computed), so no diffusion map is needed.
"""
from __future__ import annotations

import logging

import numpy as np

from deepmapper.errors import ConfigError, InputError, ToolError

log = logging.getLogger(__name__)


def _import_kompot():
    try:
        import kompot
    except ImportError:
        raise ToolError("kompot is not installed (it is an optional comparator)", where="kompot_baseline",
                        field="kompot", fix="pip install kompot (it brings JAX for CPU), or skip this baseline.") \
            from None
    return kompot


def kompot_ranking(adata, label_key: str, groups, *, obsm_key: str | None = None, n_landmarks: int = 200,
                   n_pcs: int = 20, seed: int = 0):
    """Genes ranked by kompot's Mahalanobis distance between two conditions.

    ``groups``: the two labels of ``obs[label_key]`` to compare. Returns a DataFrame
    with columns feature, rank (1 = most different), score (Mahalanobis distance)
    and mean_log_fold_change, sorted by rank.
    """
    import pandas as pd

    groups = list(groups)
    if len(groups) != 2 or groups[0] == groups[1]:
        raise ConfigError(f"kompot compares exactly two different groups (got {groups})", where="kompot_baseline",
                          field="groups", fix="pass two labels, e.g. ['control', 'treated'].")
    if label_key not in adata.obs.columns:
        raise InputError(f"no obs column '{label_key}'", where="input", field=label_key,
                         fix="name the obs column that holds the conditions.")
    present = set(map(str, adata.obs[label_key].astype(str).unique()))
    missing = [g for g in groups if str(g) not in present]
    if missing:
        raise InputError(f"label(s) {missing} not in obs['{label_key}'] (present: {sorted(present)[:10]})",
                         where="input", field=label_key, fix="pass two labels that occur in the data.")
    kompot = _import_kompot()

    keep = adata.obs[label_key].astype(str).isin([str(g) for g in groups]).to_numpy()
    sub = adata[keep].copy()
    sub.obs[label_key] = sub.obs[label_key].astype(str)
    if hasattr(sub.X, "toarray"):
        sub.X = sub.X.toarray()
    sub.X = np.asarray(sub.X, dtype=np.float64)
    if obsm_key is None:
        from sklearn.decomposition import PCA

        k = int(min(n_pcs, sub.n_obs - 1, sub.n_vars - 1))
        sub.obsm["X_state"] = PCA(n_components=k, random_state=seed).fit_transform(sub.X)
        obsm_key = "X_state"
    elif obsm_key not in sub.obsm:
        raise InputError(f"no obsm '{obsm_key}'", where="input", field=obsm_key,
                         fix="name an embedding of obsm, or leave obsm_key unset to use PCA.")
    c1, c2 = (str(g) for g in groups)
    # null_genes=0: kompot's FDR needs extra null genes fitted per run (minutes); the
    # ranking by Mahalanobis distance does not use it
    kompot.de(sub, label_key, c1, c2, obsm_key=obsm_key,
              gp=kompot.GPSettings(n_landmarks=n_landmarks, random_state=seed),
              fdr=kompot.FDRSettings(null_genes=0), output=kompot.OutputSettings(progress=False))
    maha = _var_column(sub, "mahalanobis")
    lfc = _var_column(sub, "mean_lfc")
    table = pd.DataFrame({"feature": sub.var_names.astype(str), "score": maha, "mean_log_fold_change": lfc})
    table = table.sort_values(["score", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    return table


def _var_column(adata, part: str) -> np.ndarray:
    cols = [c for c in adata.var.columns if part in c]
    if not cols:
        raise ToolError(f"kompot wrote no '{part}' column (var has: {list(adata.var.columns)[:8]})",
                        where="kompot", field=part, fix="check the installed kompot version (0.8 was tested).")
    return adata.var[cols[0]].to_numpy(dtype=float)
