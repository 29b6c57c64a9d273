"""The training view of a dataset: labels, the fixed split, per-feature scaling, batches.

The matrix stays as it was stored (sparse CSR stays sparse): a batch is sliced
by row, densified, scaled with statistics fitted on the training cells only,
and only then gathered into pixels (``transform.to_pixels``), so no
cells x pixels array is ever built for all arrangements at once. The scaling
statistics are accumulated over row blocks (column sums of the non-zeros), so
preparing a matrix never copies or densifies it whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepmapper.config import Config
from deepmapper.errors import InputError
from deepmapper.engine.split import (Split, block_validation_folds, make_split, n_validation_folds, pass_cells,
                                     sample_validation_folds, stratified_subsample, validation_folds)

# Below this many bytes the scaled matrix is kept dense in memory (fast path for
# small data, where slicing a batch is a visible share of a step); above it,
# batches are densified on the fly from the stored matrix, whose cost is then
# small next to the convolutions (measured on 5,000 x 20,000: no slower, 400 MB less).
DENSE_LIMIT_BYTES = 128 * 1024 * 1024
# With the cap binding, a pass validates on at most max_cells_per_pass // VAL_SHARE cells of its fold
# (a stratified sample from seed + t): the validation loss is an average, a few thousand cells pin it.
VAL_SHARE = 4
# Dense bytes of one block when accumulating statistics or filling the dense copy.
BLOCK_BYTES = 32 * 1024 * 1024


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
    raw_mean: np.ndarray | None = None   # unscaled mean of the training cells (float64)
    folds: np.ndarray | None = None      # rotating validation fold per cell (-1 held out), or None
    # screened pairs the model uses (``with_interactions``): (M, 2) feature indices, the class each
    # was screened for, and the standardisation of their products (scaled features) on training cells
    pairs: np.ndarray | None = None
    pair_classes: list[str] | None = None
    seed: int = 0                        # the run seed (the per-pass deal of cells, pass_pool)
    pair_mean: np.ndarray | None = None
    pair_scale: np.ndarray | None = None
    max_cells_per_pass: int = 0          # 0: every training cell in every pass (see pass_pool)
    # the sample (donor) of each cell and the sample ids, with a sample key; splits, folds and the
    # screen's permutations then move whole samples
    samples: np.ndarray | None = None
    sample_names: list[str] | None = None
    # a paired design: the donor of each sample (io.sample_blocks); whole donors are split and folded,
    # and the screen swaps labels within a donor
    sample_blocks: np.ndarray | None = None

    def pass_cells(self, pass_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(training cells, validation cells) of one pass: those of its fold, within its block of
        cells when ``max_cells_per_pass`` binds (:meth:`pass_pool`)."""
        train, val = pass_cells(self.split, self.folds, pass_index)
        block = self.pass_block(pass_index)
        if block is None:
            return train, val
        pool = self.pass_pool(pass_index)
        return (np.intersect1d(train, pool, assume_unique=True),
                stratified_subsample(val, self.codes, max(1, self.max_cells_per_pass // VAL_SHARE),
                                   [self.seed + pass_index, 104723]))

    @property
    def training_pool(self) -> np.ndarray:
        """Every cell a pass may train or validate on (all but the held-out cells)."""
        return self.split.train if self.folds is None else np.flatnonzero(self.folds >= 0)

    def n_blocks(self) -> int:
        """Blocks the training pool is dealt into: 1 when the cap does not bind."""
        cap, n = self.max_cells_per_pass, len(self.training_pool)
        return 1 if not cap or n <= cap else -(-n // cap)

    def pass_block(self, pass_index: int) -> int | None:
        """The block a pass trains on when the cap binds (``pass_index mod B``), else None: every B
        consecutive passes see every cell."""
        n = self.n_blocks()
        return None if n == 1 else pass_index % n

    def pass_pool(self, pass_index: int) -> np.ndarray:
        """The cells pass ``pass_index``'s batches run over: the whole training pool, or, when it holds
        more than ``max_cells_per_pass`` cells, block ``t mod B`` of a stratified deal of the pool into
        ``B = ceil(pool / cap)`` disjoint blocks. The deal is drawn once from the run seed, so passes
        t and t + B share their cells (and can be stacked, train.block_groups) and differ in
        arrangement, initial weights and validation fold."""
        pool = self.training_pool
        b = self.pass_block(pass_index)
        if b is None:
            return pool
        n = self.n_blocks()
        rng = np.random.default_rng([self.seed, 15731])
        chosen = [np.array_split(rng.permutation(pool[self.codes[pool] == c]), n)[b]
                  for c in np.unique(self.codes[pool])]
        return np.sort(np.concatenate(chosen))

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

    def gate_score(self, predicted: np.ndarray) -> tuple[float, float]:
        """(score, chance) the accuracy gate compares for one pass's held-out predictions.

        Without a sample key: accuracy against the majority rate. With one: balanced accuracy (the
        mean recall over the held-out labels) against 1 / labels, because the held-out set is a few
        whole samples whose sizes set the majority rate by accident (one held-out donor of 60 cells
        beside one of 20 makes it 0.75, and a model right on 70 % of each donor's cells fails it)."""
        truth = self.codes[self.split.test]
        if self.samples is None:
            return float(np.mean(predicted == truth)), self.majority_rate()
        present = np.unique(truth)
        recall = [float(np.mean(predicted[truth == c] == c)) for c in present]
        return float(np.mean(recall)), 1.0 / len(present)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Scaled dense features of the given cells, float32 (len(idx), n_features)."""
        if self.dense_scaled is not None:
            return self.dense_scaled[idx]
        return _scaled(self.X[idx], self.mean, self.scale)

    @property
    def n_pairs(self) -> int:
        return 0 if self.pairs is None else int(self.pairs.shape[0])

    def pair_products(self, rows: np.ndarray) -> np.ndarray:
        """Standardised products of the placed pairs from scaled rows: (len(rows), n_pairs) float32."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        out = rows[:, a] * rows[:, b]
        out -= self.pair_mean
        out /= self.pair_scale
        return out.astype(np.float32, copy=False)

    def with_interactions(self, table, cfg: Config, *, where: str = "the pair table") -> "PreparedData":
        """Use the screen's pairs (``interactions.placed_pairs``): sets ``pairs`` and the standardisation of
        their products, fitted on the training cells like the features' own. Returns self."""
        from deepmapper.engine.interactions import placed_pairs

        pairs, classes = placed_pairs(table, self.feature_names, cfg, where=where)
        self.pairs, self.pair_classes = pairs, classes
        if len(pairs) == 0:
            self.pair_mean = self.pair_scale = np.zeros(0, np.float32)
            return self
        s1, s2 = np.zeros(len(pairs)), np.zeros(len(pairs))
        train = np.sort(self.split.train)
        self.pair_mean, self.pair_scale = np.zeros(len(pairs), np.float32), np.ones(len(pairs), np.float32)
        step = 4096
        for i in range(0, len(train), step):
            prod = self.pair_products(self.rows(train[i:i + step])).astype(np.float64)
            s1 += prod.sum(0)
            s2 += (prod * prod).sum(0)
        n = max(1, len(train))
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
        std[std < 1e-8] = 1.0
        self.pair_mean, self.pair_scale = mean.astype(np.float32), std.astype(np.float32)
        return self

    def train_mean_features(self) -> np.ndarray:
        """Mean scaled feature vector of the training cells (the default attribution baseline)."""
        return ((self._train_mean_raw() - self.mean) / self.scale).astype(np.float32)

    def _train_mean_raw(self) -> np.ndarray:
        if self.raw_mean is not None:
            return self.raw_mean
        return np.asarray(self.X[self.split.train].mean(axis=0)).ravel()


def prepare(adata, cfg: Config, *, where: str = "dataset") -> PreparedData:
    """Labels, split (from the run seed) and scaling statistics for a validated AnnData."""
    import scipy.sparse as sp

    from deepmapper import io

    codes, classes = io.labels(adata)
    if len(classes) < 2:
        raise InputError(f"only one class ({classes[0] if classes else 'none'}) in the labels", where=where,
                         field=adata.uns.get("deepmapper", {}).get("label_key", "labels"),
                         fix="a comparison needs at least two labelled groups.")
    samples = io.samples(adata)
    blocks = io.sample_blocks(adata)
    split = make_split(codes, cfg, classes=classes, samples=samples, blocks=blocks, where=where)
    X = adata.X
    if sp.issparse(X):
        X = X.tocsr().astype(np.float32, copy=False)
        if not X.has_canonical_format:   # duplicate entries would break the squared column sums
            X = X.copy()
            X.sum_duplicates()
    else:
        X = np.asarray(X, dtype=np.float32)
    raw_mean, sq_mean = _moments(X, split.train)
    mean, scale = _scaling(raw_mean, sq_mean, cfg.run.scale)
    data = PreparedData(X=X, codes=codes, classes=classes, feature_names=[str(v) for v in adata.var_names],
                        split=split, mean=mean, scale=scale,
                        features_sha256=io.features_sha256(adata.var_names),
                        dataset_sha256=str(adata.uns.get("deepmapper", {}).get("source_sha256", "")),
                        raw_mean=raw_mean, seed=cfg.run.seed, max_cells_per_pass=cfg.run.max_cells_per_pass)
    if samples is not None:
        data.samples, data.sample_names = samples[0], list(samples[1])
        data.sample_blocks = None if blocks is None else blocks[0]
    if cfg.run.rotate_validation and blocks is not None:
        data.folds = block_validation_folds(codes, samples[0], len(samples[1]), blocks[0], split,
                                            n_validation_folds(cfg.run.val_fraction), cfg.run.seed)
    elif cfg.run.rotate_validation and samples is not None:
        data.folds = sample_validation_folds(codes, samples[0], len(samples[1]), split,
                                             n_validation_folds(cfg.run.val_fraction), cfg.run.seed)
    elif cfg.run.rotate_validation:
        data.folds = validation_folds(codes, split, n_validation_folds(cfg.run.val_fraction), cfg.run.seed)
    if X.shape[0] * X.shape[1] * 4 <= DENSE_LIMIT_BYTES:
        # filled block by block: the peak is the dense copy itself, not several temporaries
        dense = np.empty(X.shape, np.float32)
        step = _block_rows(X.shape[1])
        for start in range(0, X.shape[0], step):
            dense[start:start + step] = _scaled(X[start:start + step], mean, scale)
        data.dense_scaled = dense
    return data


def _scaled(block, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows (sparse or dense) -> dense float32 ``(x - mean) / scale``, in place on one new array."""
    out = block.toarray() if hasattr(block, "toarray") else np.array(block, dtype=np.float32)
    out = out.astype(np.float32, copy=False)
    out -= mean
    out /= scale
    return out


def _block_rows(n_features: int) -> int:
    return max(1, BLOCK_BYTES // (8 * max(1, n_features)))   # float64 when dense


def _moments(X, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and mean square over ``rows`` (float64), one row block at a time.

    For CSR only the stored non-zeros are touched (column sums by ``bincount``);
    no copy of the selected rows is kept beyond one block.
    """
    n = X.shape[1]
    total, total_sq = np.zeros(n), np.zeros(n)
    rows = np.sort(np.asarray(rows))
    step = _block_rows(n)
    for start in range(0, len(rows), step):
        block = X[rows[start:start + step]]
        if hasattr(block, "indices"):
            values = block.data.astype(np.float64)
            total += np.bincount(block.indices, weights=values, minlength=n)
            total_sq += np.bincount(block.indices, weights=values * values, minlength=n)
        else:
            values = np.asarray(block, dtype=np.float64)
            total += values.sum(axis=0)
            total_sq += (values * values).sum(axis=0)
    count = max(1, len(rows))
    return total / count, total_sq / count


def _scaling(mean: np.ndarray, sq: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    n = mean.shape[0]
    if how == "none":
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    std = np.sqrt(np.maximum(sq - mean**2, 0.0))
    # A feature constant on the training cells gets scale 1: it stays 0 after
    # centring instead of blowing up, and can earn no attribution.
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)
