"""One fixed stratified train / validation / held-out split per run (pure numpy).

The split depends on the run seed only, not on the pass: every arrangement is
judged on the same held-out cells, which is what lets evaluate ensemble the
softmax over arrangements, and lets several arrangements train in lock-step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepmapper.errors import InputError
from deepmapper.io import MIN_SAMPLES_PER_LABEL


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_subsample(cells: np.ndarray, codes: np.ndarray, size: int, seed, *,
                         min_per_class: int = 1) -> np.ndarray:
    """At most about ``size`` of ``cells`` (sorted), each class in proportion and with at least
    ``min_per_class`` cells (or all it has); ``cells`` itself when it is not larger than ``size``."""
    cells = np.asarray(cells)
    if len(cells) <= size:
        return cells
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(codes[cells]):
        members = cells[codes[cells] == c]
        n = max(min_per_class, int(round(size * len(members) / len(cells))))
        out.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return np.sort(np.concatenate(out))


def stratified_split(codes: np.ndarray, *, test_fraction: float, val_fraction: float, seed: int,
                     classes: list[str] | None = None, min_class_size: int = 5,
                     where: str = "input") -> Split:
    """Per class: ``round(n * test_fraction)`` held out (>= 1), then ``round(rest * val_fraction)``
    (>= 1) for validation, the rest for training (>= 1). Sorted index arrays."""
    codes = np.asarray(codes)
    rng = np.random.default_rng([int(seed), 7919])  # its own stream, independent of arrangements
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(codes):
        idx = np.flatnonzero(codes == c)
        name = classes[c] if classes is not None else str(c)
        if idx.size < max(3, min_class_size):
            raise InputError(f"class '{name}' has {idx.size} cells, too few for a stratified "
                             f"train/validation/held-out split (need {max(3, min_class_size)})",
                             where=where, field="labels",
                             fix="merge or drop this class, or lower --min-class-size (at least 3).")
        idx = rng.permutation(idx)
        n_test = max(1, int(round(idx.size * test_fraction)))
        rest = idx.size - n_test
        n_val = max(1, int(round(rest * val_fraction)))
        if rest - n_val < 1:
            n_val = rest - 1
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return Split(**{k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()})


def validation_folds(codes: np.ndarray, split: Split, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (0..n_folds-1) of every non-held-out cell, -1 for held-out cells.

    Class by class the cells are shuffled and dealt round-robin from a random
    starting fold, so every fold holds about ``1 / n_folds`` of each class and
    small classes do not all land in fold 0. Pass ``t`` validates on fold
    ``t mod n_folds`` and trains on the others (see :func:`pass_cells`).
    """
    codes = np.asarray(codes)
    rng = np.random.default_rng([int(seed), 6007])
    folds = np.full(codes.shape[0], -1, dtype=np.int64)
    pool = np.sort(np.concatenate([split.train, split.val]))
    for c in np.unique(codes[pool]):
        idx = rng.permutation(pool[codes[pool] == c])
        folds[idx] = (np.arange(idx.size) + rng.integers(n_folds)) % n_folds
    return folds


def split_side_of(split: Split, n_cells: int) -> np.ndarray:
    """Per cell: 0 training, 1 validation, 2 held out."""
    side = np.zeros(n_cells, np.int64)
    side[split.val] = 1
    side[split.test] = 2
    return side


def pass_cells(split: Split, folds: np.ndarray | None, pass_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(training cells, validation cells) of pass ``pass_index``: the fixed split without folds,
    else fold ``pass_index mod n_folds`` for validation and the other folds for training."""
    if folds is None:
        return split.train, split.val
    n_folds = int(folds.max()) + 1
    f = pass_index % n_folds
    return np.flatnonzero((folds >= 0) & (folds != f)), np.flatnonzero(folds == f)


def n_validation_folds(val_fraction: float) -> int:
    """Folds for rotating validation: about ``1 / val_fraction`` (at least 2)."""
    return max(2, int(round(1.0 / val_fraction)))


# -- splits by sample ------------------------------------------------------------------------
#
# With a sample key (donor, sample, patient) the unit of every split is the sample: cells of one
# donor share its genotype, handling and batch, so a held-out cell whose donor is also in training
# measures memory of the donor, not the condition. A label needs MIN_SAMPLES_PER_LABEL samples: one
# held out (the accuracy means "a new donor"), one validating (early stopping on a donor the pass
# does not train on) and one to train on.



def sample_labels(codes: np.ndarray, samples: np.ndarray, n_samples: int) -> np.ndarray:
    """The label of each sample: the label most of its cells carry (ties: the lower code)."""
    codes, samples = np.asarray(codes, np.int64), np.asarray(samples, np.int64)
    n_classes = int(codes.max()) + 1 if codes.size else 0
    table = np.zeros((n_samples, n_classes), np.int64)
    np.add.at(table, (samples, codes), 1)
    return table.argmax(1)


def check_samples(codes: np.ndarray, samples: np.ndarray, sample_names: list[str], classes: list[str], *,
                  where: str = "input", field: str = "sample_key") -> np.ndarray:
    """The label of each sample, after refusing a design with fewer than MIN_SAMPLES_PER_LABEL samples
    for some label (one clear error naming the counts and the fix)."""
    lab = sample_labels(codes, samples, len(sample_names))
    counts = np.bincount(lab, minlength=len(classes))
    low = [c for c in range(len(classes)) if counts[c] < MIN_SAMPLES_PER_LABEL]
    if low:
        listed = ", ".join(f"'{classes[c]}' ({counts[c]} sample{'s' if counts[c] != 1 else ''}"
                           + (f": {', '.join(sample_names[s] for s in np.flatnonzero(lab == c)[:4])}"
                              if counts[c] else "") + ")" for c in low)
        raise InputError(f"too few samples per label for a split by sample: {listed}; each label needs "
                         f"{MIN_SAMPLES_PER_LABEL} (one held out, one validating, one training)",
                         where=where, field=field,
                         fix=f"add samples until every label has {MIN_SAMPLES_PER_LABEL}, or drop --sample-key "
                             "to split by cells (then accuracies and rankings can reflect donors, not labels).")
    return lab


def sample_split(codes: np.ndarray, samples: np.ndarray, sample_names: list[str], classes: list[str], *,
                 test_fraction: float, val_fraction: float, seed: int, where: str = "input") -> Split:
    """Whole samples held out, validated on and trained on, stratified by each sample's label.

    Per label: ``round(k * test_fraction)`` samples held out (>= 1, and leaving 2), then
    ``round(rest * val_fraction)`` (>= 1) for validation, the rest (>= 1) for training. Every cell of a
    sample lies on one side.
    """
    samples = np.asarray(samples, np.int64)
    lab = check_samples(codes, samples, sample_names, classes, where=where)
    rng = np.random.default_rng([int(seed), 7919, 1])
    side = np.zeros(len(sample_names), np.int64)          # 0 train, 1 validation, 2 held out
    for c in range(len(classes)):
        ids = rng.permutation(np.flatnonzero(lab == c))
        n_test = min(max(1, int(round(ids.size * test_fraction))), ids.size - 2)   # leave one to validate, one to train
        rest = ids.size - n_test
        n_val = min(max(1, int(round(rest * val_fraction))), rest - 1)
        side[ids[:n_test]] = 2
        side[ids[n_test:n_test + n_val]] = 1
    cell_side = side[samples]
    return Split(train=np.flatnonzero(cell_side == 0).astype(np.int64),
                 val=np.flatnonzero(cell_side == 1).astype(np.int64),
                 test=np.flatnonzero(cell_side == 2).astype(np.int64))


# A paired design (every donor under several labels; io.sample_blocks) holds out, validates on and
# trains on whole donors: a donor's cells under one label on the training side would teach the model
# that donor, and the held-out accuracy would again measure memory of donors.

BLOCK_SPLIT_TRIES = 200


def _labels_of_blocks(lab: np.ndarray, blocks: np.ndarray, n_blocks: int, n_classes: int) -> np.ndarray:
    """(n_blocks, n_classes) bool: which labels each donor carries."""
    out = np.zeros((n_blocks, n_classes), bool)
    out[np.asarray(blocks, np.int64), np.asarray(lab, np.int64)] = True
    return out


def block_split(codes: np.ndarray, samples: np.ndarray, sample_names: list[str], blocks: np.ndarray,
                block_names: list[str], classes: list[str], *, test_fraction: float, val_fraction: float, seed: int,
                where: str = "input") -> Split:
    """Whole donors held out, validated on and trained on (a paired design: ``samples`` are donor x
    label, ``blocks`` the donor of each sample).

    ``round(n * test_fraction)`` donors held out (>= 1, leaving 2), ``round(rest * val_fraction)``
    (>= 1) validating, the rest training, drawn again (seeded, up to :data:`BLOCK_SPLIT_TRIES` times)
    until every label has a donor on each side, which the first draw always gives when every donor
    carries every label. Every label needs :data:`MIN_SAMPLES_PER_LABEL` donors.
    """
    samples, blocks = np.asarray(samples, np.int64), np.asarray(blocks, np.int64)
    lab = sample_labels(codes, samples, len(sample_names))
    has = _labels_of_blocks(lab, blocks, len(block_names), len(classes))
    counts = has.sum(0)
    low = [c for c in range(len(classes)) if counts[c] < MIN_SAMPLES_PER_LABEL]
    if low:
        listed = ", ".join(f"'{classes[c]}' ({counts[c]} donor{'s' if counts[c] != 1 else ''})" for c in low)
        raise InputError(f"too few donors per label for a split by donor in a paired design: {listed}; each label "
                         f"needs {MIN_SAMPLES_PER_LABEL} donors (one held out, one validating, one training)",
                         where=where, field="sample_key",
                         fix=f"add donors until every label is seen in {MIN_SAMPLES_PER_LABEL}, or leave out the "
                             "labels seen in fewer.")
    n_b = len(block_names)
    rng = np.random.default_rng([int(seed), 7919, 2])
    n_test = min(max(1, int(round(n_b * test_fraction))), n_b - 2)
    n_val = min(max(1, int(round((n_b - n_test) * val_fraction))), n_b - n_test - 1)
    for _ in range(BLOCK_SPLIT_TRIES):
        order = rng.permutation(n_b)
        side = np.zeros(n_b, np.int64)                    # 0 train, 1 validation, 2 held out
        side[order[:n_test]] = 2
        side[order[n_test:n_test + n_val]] = 1
        if all(has[side == k].any(0).all() for k in range(3)):
            break
    else:
        raise InputError(f"no split of the {n_b} donors puts a donor of every label on the training, validation "
                         "and held-out sides: some labels are seen in too few donors", where=where,
                         field="sample_key", fix="add donors of the rarer labels, or leave those labels out.")
    cell_side = side[blocks[samples]]
    return Split(train=np.flatnonzero(cell_side == 0).astype(np.int64),
                 val=np.flatnonzero(cell_side == 1).astype(np.int64),
                 test=np.flatnonzero(cell_side == 2).astype(np.int64))


def block_validation_folds(codes: np.ndarray, samples: np.ndarray, n_samples: int, blocks: np.ndarray,
                           split: Split, n_folds: int, seed: int) -> np.ndarray:
    """Fold id of every non-held-out cell (-1 held out), whole donors per fold (a paired design).

    The non-held-out donors are shuffled and dealt round-robin over ``min(n_folds, their number)``
    folds, drawn again (seeded, up to :data:`BLOCK_SPLIT_TRIES` times) until every pass trains on a
    donor of every label (the first draw when every donor carries every label)."""
    samples, blocks = np.asarray(samples, np.int64), np.asarray(blocks, np.int64)
    lab = sample_labels(codes, samples, n_samples)
    n_b = int(blocks.max()) + 1
    has = _labels_of_blocks(lab, blocks, n_b, int(lab.max()) + 1)
    pool = np.zeros(n_b, bool)
    pool[np.unique(blocks[samples[np.concatenate([split.train, split.val])]])] = True
    ids = np.flatnonzero(pool)
    n_folds = max(2, min(n_folds, ids.size))
    rng = np.random.default_rng([int(seed), 6007, 2])
    for _ in range(BLOCK_SPLIT_TRIES):
        fold_of = np.full(n_b, -1, np.int64)
        fold_of[rng.permutation(ids)] = np.arange(ids.size) % n_folds
        if all(has[pool & (fold_of != f)].any(0)[has[pool].any(0)].all() for f in range(n_folds)):
            break
    return fold_of[blocks[samples]]


def sample_validation_folds(codes: np.ndarray, samples: np.ndarray, n_samples: int, split: Split, n_folds: int,
                            seed: int) -> np.ndarray:
    """Fold id of every non-held-out cell (-1 held out), whole samples per fold.

    Per label the non-held-out samples are shuffled and dealt round-robin from a random start, over
    ``min(n_folds, fewest non-held-out samples of a label)`` folds, so every fold validates on at
    least one sample of each label and every pass trains on at least one.
    """
    samples = np.asarray(samples, np.int64)
    lab = sample_labels(codes, samples, n_samples)
    pool = np.zeros(n_samples, bool)
    pool[np.unique(samples[np.concatenate([split.train, split.val])])] = True
    per_label = [np.flatnonzero(pool & (lab == c)) for c in np.unique(lab[pool])]
    n_folds = max(2, min(n_folds, min(len(ids) for ids in per_label)))
    rng = np.random.default_rng([int(seed), 6007, 1])
    fold_of = np.full(n_samples, -1, np.int64)
    for ids in per_label:
        ids = rng.permutation(ids)
        fold_of[ids] = (np.arange(ids.size) + rng.integers(n_folds)) % n_folds
    return fold_of[samples]


def make_split(codes: np.ndarray, cfg, *, classes: list[str], samples=None, blocks=None,
               where: str = "input") -> Split:
    """The run's split: by cells (``stratified_split``), by whole samples when ``samples`` is
    ``(sample code per cell, sample names)``, or by whole donors when ``blocks`` is also given
    ``(donor code per sample, donor names)`` (a paired design)."""
    r = cfg.run
    if samples is None:
        return stratified_split(codes, test_fraction=r.test_fraction, val_fraction=r.val_fraction, seed=r.seed,
                                classes=classes, min_class_size=cfg.input.min_class_size, where=where)
    if blocks is not None:
        return block_split(codes, samples[0], samples[1], blocks[0], blocks[1], classes,
                           test_fraction=r.test_fraction, val_fraction=r.val_fraction, seed=r.seed, where=where)
    return sample_split(codes, samples[0], samples[1], classes, test_fraction=r.test_fraction,
                        val_fraction=r.val_fraction, seed=r.seed, where=where)
