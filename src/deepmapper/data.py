"""The training view of a dataset: labels, the fixed split, per-feature scaling, batches.

The matrix stays as it was stored (sparse CSR stays sparse): a batch is sliced
by row, densified, scaled with statistics fitted on the training cells only,
and only then gathered into pixels (``transform.to_pixels``), so no
cells x pixels array is ever built for all arrangements at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Config
from .errors import InputError
from .split import Split, stratified_split

# Below this many bytes the scaled matrix is kept dense in memory (fast path for
# small data); above it, batches are densified on the fly from the stored matrix.
DENSE_LIMIT_BYTES = 512 * 1024 * 1024


@dataclass
class PreparedData:
    X: object                      # scipy CSR or numpy array (cells x features), float32
    codes: np.ndarray              # int64 class index per cell
    classes: list[str]
    feature_names: list[str]
    split: Split
    mean: np.ndarray               # per-feature centre (training cells)
    scale: np.ndarray              # per-feature divisor (training cells), never 0
    features_sha256: str = ""
    dataset_sha256: str = ""
    dense_scaled: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def majority_rate(self) -> float:
        """Accuracy of always predicting the most common class of the held-out cells."""
        counts = np.bincount(self.codes[self.split.test], minlength=self.n_classes)
        return float(counts.max() / counts.sum())

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Scaled dense features of the given cells, float32 (len(idx), n_features)."""
        if self.dense_scaled is not None:
            return self.dense_scaled[idx]
        block = self.X[idx]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        return ((block - self.mean) / self.scale).astype(np.float32, copy=False)

    def train_mean_features(self) -> np.ndarray:
        """Mean scaled feature vector of the training cells (the default attribution baseline)."""
        return ((self._train_mean_raw() - self.mean) / self.scale).astype(np.float32)

    def _train_mean_raw(self) -> np.ndarray:
        return np.asarray(self.X[self.split.train].mean(axis=0)).ravel()


def prepare(adata, cfg: Config, *, where: str = "dataset") -> PreparedData:
    """Labels, split (from the run seed) and scaling statistics for a validated AnnData."""
    import scipy.sparse as sp

    from . import io

    codes, classes = io.labels(adata)
    if len(classes) < 2:
        raise InputError(f"only one class ({classes[0] if classes else 'none'}) in the labels", where=where,
                         field=adata.uns.get("deepmapper", {}).get("label_key", "labels"),
                         fix="a comparison needs at least two labelled groups.")
    split = stratified_split(codes, test_fraction=cfg.run.test_fraction, val_fraction=cfg.run.val_fraction,
                             seed=cfg.run.seed, classes=classes, min_class_size=cfg.input.min_class_size,
                             where=where)
    X = adata.X
    if sp.issparse(X):
        X = X.tocsr().astype(np.float32, copy=False)
    else:
        X = np.asarray(X, dtype=np.float32)
    mean, scale = _scaling(X, split.train, cfg.run.scale)
    data = PreparedData(X=X, codes=codes, classes=classes, feature_names=[str(v) for v in adata.var_names],
                        split=split, mean=mean, scale=scale,
                        features_sha256=io.features_sha256(adata.var_names),
                        dataset_sha256=str(adata.uns.get("deepmapper", {}).get("source_sha256", "")))
    if X.shape[0] * X.shape[1] * 4 <= DENSE_LIMIT_BYTES:
        dense = X.toarray() if sp.issparse(X) else X
        data.dense_scaled = ((dense - mean) / scale).astype(np.float32)
    return data


def _scaling(X, train_idx: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    n = X.shape[1]
    if how == "none":
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    sub = X[train_idx]
    mean = np.asarray(sub.mean(axis=0), dtype=np.float64).ravel()
    if hasattr(sub, "multiply"):
        sq = np.asarray(sub.multiply(sub).mean(axis=0), dtype=np.float64).ravel()
    else:
        sq = (np.asarray(sub, dtype=np.float64) ** 2).mean(axis=0)
    std = np.sqrt(np.maximum(sq - mean**2, 0.0))
    # A feature constant on the training cells gets scale 1: it stays 0 after
    # centring instead of blowing up, and can earn no attribution.
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)
