"""Statistics at the level of the sample (donor): what a sample key buys beyond the split.

Cells of one donor share its genotype, handling and batch, so they are not independent
replicates of the condition. With a sample key:

- :func:`sample_means` / :func:`pseudobulk_sums`: one profile per sample (mean of the analysed
  values; sum of the raw counts), the unit every statistic here works on;
- :func:`reproducibility`: per feature, how consistently the samples of one label sit above (or
  below) the samples of the others: ``|2 AUC - 1|`` of the sample means, 1 when every sample of
  the label lies beyond every other sample (a gene raised strongly in one of ``k`` donors of a
  label: about ``1 / k``); shown in findings.tsv, not used in the rank;
- :func:`sample_test`: the per-feature p and q values at the level of samples (``sample_p``,
  ``sample_q`` in findings.tsv; the rank weights the model's importance by ``-log10`` of the p,
  :func:`deepmapper.results.findings.sample_evidence`): the pseudobulk negative-binomial GLM
  (PyDESeq2, :mod:`deepmapper.engine.pseudobulk`) on
  the summed counts when the dataset holds counts, else Welch's t-test on the sample means of the
  analysed (log-normalised) values; one label against the rest, run on every sample and with each
  sample left out (:func:`leave_one_sample_out`: no single sample makes a finding): ``sample_q``
  from the largest p with any one left out, the rank's ``sample_p`` the p on every sample where the
  effect holds without any one sample, else that largest; Bonferroni over labels, then
  Benjamini-Hochberg over features;
- :func:`relabellings`: the distinct ways to move labels between whole samples (keeping how many
  samples carry each label), enumerated exactly when few, the calibration of the pair screen.

A paired design (every donor under several labels, :func:`deepmapper.io.sample_blocks`): the
samples are donor x label and each donor is a block. The comparison is then within donors: the
GLM's design is ``~ block + group`` (Welch's test becomes a paired t-test on the within-donor
differences), whole donors are left out one at a time, the reproducibility counts donors whose
difference has the label's sign, and relabellings swap labels within a donor. A donor's own
effects cancel in its differences, which is what a paired design buys.

Pure numpy/scipy (PyDESeq2 is imported only inside :func:`sample_test`).
"""
from __future__ import annotations

import itertools
import logging
import math
import warnings

import numpy as np

log = logging.getLogger(__name__)

# Up to this many distinct relabellings they are enumerated, not drawn.
EXACT_RELABELLINGS = 5000


def _indicator(samples: np.ndarray, n_samples: int):
    import scipy.sparse as sp

    samples = np.asarray(samples, np.int64)
    return sp.csr_matrix((np.ones(samples.size), (samples, np.arange(samples.size))),
                         shape=(n_samples, samples.size))


def pseudobulk_sums(X, samples: np.ndarray, n_samples: int) -> np.ndarray:
    """(n_samples, F) float64 sums of ``X`` (cells x features, dense or sparse) over each sample's cells."""
    out = _indicator(samples, n_samples) @ X
    return np.asarray(out.toarray() if hasattr(out, "toarray") else out, np.float64)


def sample_means(X, samples: np.ndarray, n_samples: int) -> np.ndarray:
    """(n_samples, F) float64 means of ``X`` over each sample's cells."""
    n = np.bincount(np.asarray(samples, np.int64), minlength=n_samples).astype(np.float64)
    return pseudobulk_sums(X, samples, n_samples) / np.maximum(n, 1.0)[:, None]


def auc(values: np.ndarray, in_group: np.ndarray) -> np.ndarray:
    """Per column, P(a sample of the group > a sample of the rest) + P(tie) / 2 (Mann-Whitney AUC)."""
    from scipy.stats import rankdata

    values = np.asarray(values, np.float64)
    in_group = np.asarray(in_group, bool)
    n1, n0 = int(in_group.sum()), int((~in_group).sum())
    if n1 == 0 or n0 == 0:
        return np.full(values.shape[1], 0.5)
    ranks = rankdata(values, axis=0)
    u = ranks[in_group].sum(0) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)


def block_differences(means: np.ndarray, in_group: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """(donors, F): per donor holding the group and the rest, the mean of its group samples minus the
    mean of its other samples (a paired design's within-donor differences)."""
    in_group, blocks = np.asarray(in_group, bool), np.asarray(blocks, np.int64)
    rows = [means[(blocks == b) & in_group].mean(0) - means[(blocks == b) & ~in_group].mean(0)
            for b in np.unique(blocks) if np.any((blocks == b) & in_group) and np.any((blocks == b) & ~in_group)]
    return np.asarray(rows, np.float64).reshape(len(rows), means.shape[1])


def reproducibility(means: np.ndarray, sample_labels: np.ndarray, n_classes: int,
                    blocks: np.ndarray | None = None) -> np.ndarray:
    """Per feature, the largest over labels of ``|2 AUC - 1|`` of the label's samples against the others';
    in a paired design (``blocks``: the donor of each sample) ``|2 s - 1|``, ``s`` the share of donors
    whose within-donor difference has the label's sign (ties count half)."""
    out = np.zeros(means.shape[1])
    labels = np.asarray(sample_labels, np.int64)
    present = [c for c in range(n_classes) if np.any(labels == c)]
    for c in present[:1] if len(present) == 2 else present:      # two labels: one AUC says it all
        if blocks is None:
            share = auc(means, labels == c)
        else:
            d = block_differences(means, labels == c, blocks)
            share = ((d > 0).sum(0) + 0.5 * (d == 0).sum(0)) / max(len(d), 1)
        out = np.maximum(out, np.abs(2.0 * share - 1.0))
    return out


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q values (NaN p values stay NaN and are not counted)."""
    p = np.asarray(p, np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q


def welch_p(means: np.ndarray, in_group: np.ndarray) -> np.ndarray:
    """Two-sided Welch t-test p value per feature (group samples against the rest); NaN when a side has
    fewer than 2 samples or both sides are constant."""
    return welch(means, in_group)[0]


def welch(means: np.ndarray, in_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, t) per feature of :func:`welch_p`'s test (t > 0: the group above the rest)."""
    from scipy import stats

    a, b = means[in_group], means[~in_group]
    if len(a) < 2 or len(b) < 2:
        return np.full(means.shape[1], np.nan), np.full(means.shape[1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = stats.ttest_ind(a, b, axis=0, equal_var=False)
    return np.asarray(res.pvalue, np.float64), np.asarray(res.statistic, np.float64)


def paired_p(means: np.ndarray, in_group: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Two-sided paired t-test p value per feature: the within-donor differences
    (:func:`block_differences`) against 0; NaN with fewer than 2 donors or constant differences."""
    return paired(means, in_group, blocks)[0]


def paired(means: np.ndarray, in_group: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, t) per feature of :func:`paired_p`'s test (t > 0: the group above the rest within donors)."""
    from scipy import stats

    d = block_differences(means, in_group, blocks)
    if len(d) < 2:
        return np.full(means.shape[1], np.nan), np.full(means.shape[1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = stats.ttest_1samp(d, 0.0, axis=0)
    return np.asarray(res.pvalue, np.float64), np.asarray(res.statistic, np.float64)


# A feature's effect holds without any one sample when, with any one left out, its effect keeps at
# least EFFECT_KEPT of its size and its test statistic at least STAT_KEPT of its value, both in the
# same direction (docs/accuracy.md measured 0.3 to 0.6 and both together).
EFFECT_KEPT = 0.3
STAT_KEPT = 0.5
# how the test's name (findings.json sample_level.test) says so
LEFT_OUT = ("run on every {unit} and with each {unit} left out: sample_q from the largest p with any one left "
            "out; the rank's sample_p is the p on every {unit} where the effect holds with any one left out, "
            "else that largest")


def leave_one_sample_out(test, sample_labels: np.ndarray,
                         units: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``test(keep)`` -> (p values, effects, test statistics), each (labels tested, F), on the samples
    ``keep`` (a boolean mask). The test is run on every sample and on every set with one sample left out
    (``units``, the donor of each sample in a paired design: one donor, all its samples, left out).
    Returns two arrays of p values:

    - ``worst``: per entry the largest p over all those sets: the p behind ``sample_q``, so that
      no call rests on one sample (each survives the loss of any one of them);
    - ``ranked``: the p on every sample where the effect holds without any one sample (with any one
      left out the effect keeps at least :data:`EFFECT_KEPT` of its size and the statistic at least
      :data:`STAT_KEPT` of its value, in the same direction), else ``worst``: the p the rank weighs
      (``sample_p``).

    Why: a feature raised in one odd sample (one donor's genotype or handling), or a cell-type marker
    whose pseudobulk moves with one donor's cell mix, can pass a pseudobulk test when the GLM's
    shrunken dispersion underrates how much samples vary (measured: PyDESeq2 called a feature in 4
    of 20 nulls of ``bench/donors.py`` at 6 donors per condition; docs/accuracy.md). The largest p
    is a valid, conservative p for the calls. For the rank it is too strict: at 3 donors per
    condition leaving out one of three costs power whatever the gene, and ranking by it put fewer
    condition genes in the top 20 than DESeq2 (9.17 against 9.35 over 60 seeds). A one-donor
    gene's effect collapses when its donor is left out, so it keeps the largest p in the rank too,
    while a gene moved in every sample is ranked by its p on all of them (docs/accuracy.md). The
    statistic guards the size: where donors vary much, or the odd donor's effect is moderate, what
    is left of a one-donor gene's effect without its donor can be a noise-sized share of it, whose
    statistic is then a noise-sized share of the one on all samples. Both p values are at least the
    test's own on every sample. NaN where the test on every sample gives none; a left-out fit without
    a p value, an effect or a statistic counts as p = 1 and an effect that does not hold."""
    labels = np.asarray(sample_labels, np.int64)
    units = np.arange(len(labels)) if units is None else np.asarray(units, np.int64)
    full, effect, stat = (np.asarray(a, np.float64) for a in test(np.ones(len(labels), bool)))
    worst = full.copy()
    holds = np.ones(full.shape, bool)
    for u in np.unique(units):
        p, eff, st = (np.asarray(a, np.float64) for a in test(units != u))
        worst = np.fmax(worst, np.nan_to_num(p, nan=1.0))
        holds &= (_share(eff, effect) >= EFFECT_KEPT) & (_share(st, stat) >= STAT_KEPT)
    worst[np.isnan(full)] = np.nan
    return np.where(holds, full, worst), worst


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``part`` as a share of ``whole``'s size, in ``whole``'s direction (-inf where either is NaN or
    ``whole`` is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.sign(whole) * part / np.abs(whole)
    return np.nan_to_num(share, nan=-np.inf, posinf=-np.inf, neginf=-np.inf)


def sample_test(adata, sample_codes: np.ndarray, n_samples: int, sample_labels: np.ndarray, classes: list[str],
                *, means: np.ndarray | None = None, n_cpus: int = 1, blocks: np.ndarray | None = None) -> dict:
    """The per-feature sample-level test (see the module docstring), each label's p value checked with
    the samples left out one at a time (:func:`leave_one_sample_out`). The pseudobulk GLM is
    fitted ``n_samples + 1`` times (a paired design, ``blocks`` the donor of each sample: donors + 1),
    each on ``n_cpus`` processes, with progress on long runs.

    Returns ``{"p" (the rank's p, ``sample_p``), "p_left_out" (the largest with any one sample left
    out, ``sample_p_left_out``), "q" (Benjamini-Hochberg over ``p_left_out``, ``sample_q``), each an
    array over features, Bonferroni over labels; "p_label" ((labels, features): each label's own rank
    p against the rest, before Bonferroni; NaN for a label without samples), "test" (name), "note"
    (why not DESeq2, or "")}``.
    """
    from deepmapper import io
    from deepmapper._utils.progress import Progress
    from deepmapper.engine import pseudobulk

    counts = io.counts_matrix(adata)
    labels = np.asarray(sample_labels, np.int64)
    note = ""
    p_cls = None
    present = [c for c in range(len(classes)) if np.any(labels == c)]
    tested = present[:1] if len(present) == 2 else present      # two labels: one test says it all
    units = None if blocks is None else np.asarray(blocks, np.int64)
    n_units = n_samples if units is None else len(np.unique(units))
    unit = "sample" if units is None else "donor"
    if counts is not None:
        sums = pseudobulk_sums(counts, sample_codes, n_samples)
        log.info("sample-level test: PyDESeq2 on %d samples and on each of the %d sets with one %s left out "
                 "(%d fits, each on %d process%s)", n_samples, n_units, unit, n_units + 1, n_cpus,
                 "" if n_cpus == 1 else "es")
        bar = Progress(n_units + 1, "sample-level test (PyDESeq2)", "fit")

        def fit(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            res = pseudobulk.deseq2(sums[keep], labels[keep], classes, n_cpus=n_cpus,
                                    blocks=None if units is None else units[keep])
            bar.update()
            return res["p"], res["log2fc"], res["stat"]

        try:
            p_cls = leave_one_sample_out(fit, labels, units)
            design = "" if units is None else ", ~ donor + label"
            test = f"pseudobulk DESeq2 (PyDESeq2 Wald test on summed counts{design}), {LEFT_OUT.format(unit=unit)}"
        except pseudobulk.PseudobulkUnavailable as err:
            note = str(err)
        finally:
            bar.close()
    else:
        note = ("the dataset holds no raw counts (log-normalised input), so no negative-binomial pseudobulk; "
                "Welch's t-test on the sample means of the analysed values instead")
    if p_cls is None:
        if means is None:
            means = sample_means(adata.X, sample_codes, n_samples)
        if units is None:
            def unpaired_test(keep):
                m, lab = means[keep], labels[keep]
                p_t = [welch(m, lab == c) for c in tested]
                return (np.stack([p for p, _ in p_t]),
                        np.stack([m[lab == c].mean(0) - m[lab != c].mean(0) for c in tested]),
                        np.stack([t for _, t in p_t]))

            p_cls = leave_one_sample_out(unpaired_test, labels)
            test = f"Welch t-test on per-sample means of the analysed values, {LEFT_OUT.format(unit='sample')}"
        else:
            def paired_test(keep):
                m, lab, u = means[keep], labels[keep], units[keep]
                p_t = [paired(m, lab == c, u) for c in tested]
                return (np.stack([p for p, _ in p_t]),
                        np.stack([block_differences(m, lab == c, u).mean(0) for c in tested]),
                        np.stack([t for _, t in p_t]))

            p_cls = leave_one_sample_out(paired_test, labels, units)
            test = ("paired t-test on the within-donor differences of per-sample means of the analysed values, "
                    + LEFT_OUT.format(unit="donor"))
    ranked, worst = p_cls
    p, p_left_out = _over_labels(ranked), _over_labels(worst)
    p_label = np.full((len(classes), p.shape[0]), np.nan)
    # two labels: the one two-sided test is each label's, seen from either side
    p_label[present if len(present) == 2 else tested] = ranked
    return {"p": p, "p_left_out": p_left_out, "q": bh(p_left_out), "p_label": p_label, "test": test, "note": note}


def _over_labels(p_cls: np.ndarray) -> np.ndarray:
    """Per feature, the smallest p over the labels tested, Bonferroni over them (NaN where none)."""
    with warnings.catch_warnings():          # a feature with no finite p value stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        p = np.nanmin(p_cls, axis=0)
    return np.minimum(1.0, p * p_cls.shape[0])


def _multinomial(labels: np.ndarray) -> int:
    counts = np.bincount(np.asarray(labels, np.int64))
    return math.factorial(int(counts.sum())) // math.prod(math.factorial(int(c)) for c in counts)


def n_relabellings(sample_labels: np.ndarray, blocks: np.ndarray | None = None) -> int:
    """Distinct assignments of the labels to the samples keeping each label's number of samples:
    ``n! / prod(n_label!)`` (e.g. 20 for 3 + 3 samples, 70 for 4 + 4, 924 for 6 + 6); in a paired
    design (``blocks``: the donor of each sample) labels move only within a donor, the product of
    that count over donors (``2 ** donors`` for two labels)."""
    labels = np.asarray(sample_labels, np.int64)
    if blocks is None:
        return _multinomial(labels)
    blocks = np.asarray(blocks, np.int64)
    return math.prod(_multinomial(labels[blocks == b]) for b in np.unique(blocks))


def relabellings(sample_labels: np.ndarray, n: int, seed: int, blocks: np.ndarray | None = None) -> np.ndarray:
    """Up to ``n`` relabellings of the samples other than the observed one, (R, n_samples) int64.

    Every relabelling keeps how many samples carry each label, so it moves labels between whole
    samples (in a paired design, ``blocks`` the donor of each sample: only between the samples of one
    donor). When the distinct relabellings are at most ``EXACT_RELABELLINGS`` they are enumerated
    (all of them when ``n`` is at least their number, else a seeded subset without repeats);
    otherwise they are drawn at random (repeats possible, negligible at that count)."""
    labels = np.asarray(sample_labels, np.int64)
    total = n_relabellings(labels, blocks)
    rng = np.random.default_rng([int(seed), 15485863, 1])
    if total <= EXACT_RELABELLINGS:
        allp = _enumerate(labels) if blocks is None else _enumerate_within(labels, np.asarray(blocks, np.int64))
        allp = allp[~np.all(allp == labels[None, :], axis=1)]
        if len(allp) > n:
            allp = allp[np.sort(rng.choice(len(allp), size=n, replace=False))]
        return allp
    if blocks is None:
        return np.stack([rng.permutation(labels) for _ in range(n)])
    blocks = np.asarray(blocks, np.int64)
    out = np.repeat(labels[None, :], n, axis=0)
    for b in np.unique(blocks):
        where = np.flatnonzero(blocks == b)
        for r in range(n):
            out[r, where] = rng.permutation(labels[where])
    return out


def _enumerate_within(labels: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Every relabelling that permutes labels only within each block (the product over blocks)."""
    out = np.zeros((1, len(labels)), np.int64)
    for b in np.unique(blocks):
        where = np.flatnonzero(blocks == b)
        mine = _enumerate(labels[where])
        grown = np.repeat(out, len(mine), axis=0)
        grown[:, where] = np.tile(mine, (len(out), 1))
        out = grown
    return out


def _enumerate(labels: np.ndarray) -> np.ndarray:
    """Every distinct arrangement of the multiset ``labels`` over the positions (lexicographic)."""
    k = len(labels)
    values, counts = np.unique(labels, return_counts=True)
    out = []

    def fill(pos_left: list[int], vi: int, current: np.ndarray):
        if vi == len(values) - 1:
            current = current.copy()
            current[pos_left] = values[vi]
            out.append(current)
            return
        for chosen in itertools.combinations(pos_left, int(counts[vi])):
            nxt = current.copy()
            nxt[list(chosen)] = values[vi]
            fill([p for p in pos_left if p not in chosen], vi + 1, nxt)

    fill(list(range(k)), 0, np.zeros(k, np.int64))
    return np.asarray(out, np.int64).reshape(-1, k)


def sample_level(adata, classes: list[str], *, n_cpus: int = 1) -> dict | None:
    """Everything findings need from the samples of a dataset with a sample key (None without one):
    ``reproducibility``, ``p``, ``p_left_out`` and ``q`` per feature (:func:`sample_test`), the
    ``means`` per sample, each sample's label and number of cells (and donor, ``donors``, in a
    paired design; else None), the test's name and the number of distinct relabellings. ``n_cpus``:
    processes for each pseudobulk fit (:func:`sample_test`).
    """
    from deepmapper import io
    from deepmapper.engine.split import sample_labels as labels_of

    found = io.samples(adata)
    if found is None:
        return None
    codes, _ = io.labels(adata)
    s_codes, names = found
    paired = io.sample_blocks(adata)
    blocks = None if paired is None else paired[0]
    lab = labels_of(codes, s_codes, len(names))
    means = sample_means(adata.X, s_codes, len(names))
    rep = reproducibility(means, lab, len(classes), blocks)
    test = sample_test(adata, s_codes, len(names), lab, classes, means=means, n_cpus=n_cpus, blocks=blocks)
    if test["note"]:
        log.warning("sample-level q value: %s", test["note"])
    return {"reproducibility": rep, "q": test["q"], "p": test["p"], "p_left_out": test["p_left_out"],
            "p_label": test["p_label"],
            "test": test["test"], "note": test["note"],
            "means": means, "sample_names": list(names),
            "sample_labels": [classes[c] for c in lab],
            "n_cells": np.bincount(s_codes, minlength=len(names)).tolist(),
            "sample_key": adata.uns["deepmapper"]["sample_key"],
            "relabellings": n_relabellings(lab, blocks),
            "donors": None if paired is None else [paired[1][b] for b in blocks]}
