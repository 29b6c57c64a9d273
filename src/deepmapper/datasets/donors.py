"""Conditions across donors with a planted truth: the bench of issue 19 (numpy only, seeded).

Cells come from donors; each donor has one condition (``control`` or ``disease``). Per cell
``c`` of donor ``d`` and gene ``g`` (negative-binomial counts, gamma-Poisson)::

    count ~ NB(mean = size_c * mu_g * exp(u_dg + type_tg + effect_dg), dispersion = 1 / theta)

- ``u_dg ~ N(0, donor_sd)``: every donor shifts every gene a little (genotype, handling,
  batch): the donor random effect that makes cells of one donor co-vary;
- ``type_tg``: three cell types with marker genes; each donor has its own cell-type mix
  (Dirichlet), so donors are unbalanced in composition, and in size (lognormal cell counts);
- *true* genes: ``effect = lfc`` (natural log) in every disease donor;
- *one-donor* genes: ``effect = outlier_lfc`` in one disease donor only (with two outliers,
  half of them in each): strong, and not a condition effect;
- everything else is noise.

:func:`null` is the same data with the conditions shuffled between donors (whole donors keep
their cells): no gene separates the conditions beyond chance. :func:`simulate_paired` is the paired
design: every donor under both conditions.
"""
from __future__ import annotations

import numpy as np

LABEL_KEY = "condition"
SAMPLE_KEY = "donor"
CONDITIONS = ("control", "disease")


def simulate(n_donors: int = 4, *, n_genes: int = 600, n_true: int = 12, n_one_donor: int = 12,
             n_outliers: int = 1, lfc: float = 0.8, outlier_lfc: float = 2.5, donor_sd: float = 0.3,
             mean_cells: int = 150, theta: float = 4.0, n_types: int = 3, n_markers: int = 10, seed: int = 0):
    """AnnData of raw counts (CSR float32) with ``obs`` condition / donor / cell_type and the truth in
    ``uns["truth"]`` (``true_genes``, ``one_donor_genes``, ``outlier_donors``). ``n_donors`` per condition."""
    rng = np.random.default_rng([int(seed), 1907])
    n_d = 2 * n_donors
    cond = np.repeat(np.arange(2), n_donors)
    donor_names = [f"{CONDITIONS[c][:4]}{i:02d}" for i, c in enumerate(cond)]
    mu, names, true, one, type_eff = _genes(rng, n_genes, n_true, n_one_donor, n_types, n_markers)
    outliers = rng.choice(np.flatnonzero(cond == 1), size=n_outliers, replace=False)
    effect = np.zeros((n_d, n_genes))
    effect[np.ix_(np.flatnonzero(cond == 1), true)] = lfc
    for k, d in enumerate(outliers):
        effect[d, one[k::n_outliers]] = outlier_lfc
    u = rng.normal(0.0, donor_sd, (n_d, n_genes))
    sizes = np.maximum(20, np.round(mean_cells * np.exp(rng.normal(0, 0.5, n_d)))).astype(int)
    blocks, obs = [], []
    for d in range(n_d):
        counts, types = _cells(rng, sizes[d], mu, u[d], type_eff, effect[d], theta)
        blocks.append(counts)
        obs += [(CONDITIONS[cond[d]], donor_names[d], f"type{t}") for t in types]
    truth = {"true_genes": [str(v) for v in names[true]], "one_donor_genes": [str(v) for v in names[one]],
             "outlier_donors": [donor_names[d] for d in outliers]}
    return _anndata(blocks, obs, names, truth)


def _genes(rng, n_genes: int, n_true: int, n_one_donor: int, n_types: int, n_markers: int):
    """Baseline expression, names, the planted genes and the cell types' marker effects."""
    mu = np.exp(rng.normal(np.log(0.4), 1.0, n_genes))            # baseline expression per gene
    names = np.asarray([f"g{j:04d}" for j in range(n_genes)], dtype=object)
    # planted genes among the better expressed half, at random positions
    pool = rng.permutation(np.flatnonzero(mu >= np.median(mu)))
    true = np.sort(pool[:n_true])
    one = np.sort(pool[n_true:n_true + n_one_donor])
    free = np.setdiff1d(np.arange(n_genes), np.concatenate([true, one]))
    n_markers = min(n_markers, len(free) // (2 * n_types))
    markers = rng.choice(free, size=n_types * n_markers, replace=False).reshape(n_types, n_markers)
    type_eff = np.zeros((n_types, n_genes))
    for t in range(n_types):
        type_eff[t, markers[t]] = 1.5
    return mu, names, true, one, type_eff


def _cells(rng, n_cells: int, mu: np.ndarray, u: np.ndarray, type_eff: np.ndarray, effect: np.ndarray,
           theta: float):
    """One sample's cells: its own cell-type mix (Dirichlet), library sizes and NB counts (CSR)."""
    import scipy.sparse as sp

    n_types, n_genes = type_eff.shape
    mix = rng.dirichlet(np.full(n_types, 1.5))
    types = rng.choice(n_types, size=n_cells, p=mix)
    size_c = np.exp(rng.normal(np.log(1500.0 / n_genes * 4), 0.3, n_cells))
    mean = size_c[:, None] * mu[None, :] * np.exp(u + type_eff[types] + effect)
    lam = rng.gamma(theta, mean / theta)
    return sp.csr_matrix(rng.poisson(lam).astype(np.float32)), types


def _anndata(blocks: list, obs: list, names: np.ndarray, truth: dict):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    frame = pd.DataFrame(obs, columns=[LABEL_KEY, SAMPLE_KEY, "cell_type"],
                         index=[f"cell{i:05d}" for i in range(len(obs))])
    adata = ad.AnnData(X=sp.vstack(blocks, format="csr"), obs=frame, var=pd.DataFrame(index=names))
    adata.uns["truth"] = truth
    return adata


def simulate_paired(n_donors: int = 4, *, n_genes: int = 600, n_true: int = 12, n_one_donor: int = 12,
                    n_outliers: int = 1, lfc: float = 0.8, outlier_lfc: float = 2.5, donor_sd: float = 0.3,
                    sample_sd: float = 0.1, mean_cells: int = 150, theta: float = 4.0, n_types: int = 3,
                    n_markers: int = 10, seed: int = 0):
    """A paired design: each of ``n_donors`` donors seen under both conditions (before / after, or
    stimulated / not), the same model as :func:`simulate` otherwise.

    Per donor ``d``, condition ``k`` and gene ``g``: ``u_dg ~ N(0, donor_sd)`` shared by both of the
    donor's samples (what pairing cancels), ``v_dkg ~ N(0, sample_sd)`` each sample's own handling,
    each sample its own cell-type mix and size; *true* genes ``lfc`` up in every disease sample,
    *one-donor* genes ``outlier_lfc`` up in the disease sample of one donor only (``n_outliers``
    donors, the genes split between them). Donor ids ``donor00``...; ``obs`` as in :func:`simulate`.
    """
    rng = np.random.default_rng([int(seed), 1907, 2])
    mu, names, true, one, type_eff = _genes(rng, n_genes, n_true, n_one_donor, n_types, n_markers)
    outliers = rng.choice(n_donors, size=n_outliers, replace=False)
    u = rng.normal(0.0, donor_sd, (n_donors, n_genes))
    blocks, obs = [], []
    for d in range(n_donors):
        for k, condition in enumerate(CONDITIONS):
            effect = rng.normal(0.0, sample_sd, n_genes)
            if k == 1:
                effect[true] += lfc
                for j, o in enumerate(outliers):
                    if o == d:
                        effect[one[j::n_outliers]] += outlier_lfc
            n_cells = max(20, int(round(mean_cells * np.exp(rng.normal(0, 0.5)))))
            counts, types = _cells(rng, n_cells, mu, u[d], type_eff, effect, theta)
            blocks.append(counts)
            obs += [(condition, f"donor{d:02d}", f"type{t}") for t in types]
    truth = {"true_genes": [str(v) for v in names[true]], "one_donor_genes": [str(v) for v in names[one]],
             "outlier_donors": [f"donor{d:02d}" for d in outliers]}
    return _anndata(blocks, obs, names, truth)


def null(adata, seed: int = 0):
    """A copy with the conditions shuffled between donors (each donor keeps all its cells and gets one
    condition; as many donors per condition as before)."""
    out = adata.copy()
    donors = out.obs[SAMPLE_KEY].astype(str).to_numpy()
    names = sorted(set(donors.tolist()))
    first = {d: out.obs[LABEL_KEY].astype(str)[donors == d].iloc[0] for d in names}
    rng = np.random.default_rng([int(seed), 2718])
    shuffled = dict(zip(names, rng.permutation([first[d] for d in names])))
    out.obs[LABEL_KEY] = [shuffled[d] for d in donors]
    return out
