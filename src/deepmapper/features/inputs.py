"""From what the user gives to the dataset that is analysed.

The plain case is ``io.read_input`` (features = the matrix, classes = a label
column). Three input options change what a feature or a class is:

- ``modality="atac"``: peak or tile counts are checked to be counts, binarised
  and log TF-IDF transformed; peak names (``chr1:100-600``) stay feature names;
- ``cluster=True``: no labels; the classes are Leiden clusters (PCA for RNA,
  iterative LSI for ATAC), so the ranking says what separates the clusters;
- ``genesets=GMT``: the features are AUCell gene-set activities per cell.
Each result goes back through ``io.build_dataset``, so it is validated like any
other input.
"""
from __future__ import annotations

import logging
from pathlib import Path

from deepmapper.config import Config
from deepmapper.errors import InputError

log = logging.getLogger(__name__)

CLUSTER_KEY = "cluster"


def load(inputs: list[str], cfg: Config, *, label_key: str | None = None, labels: Path | None = None,
         sample_names: list[str] | None = None):
    """The validated dataset AnnData for ``inputs`` under ``cfg.input`` (``label_key`` overrides
    ``cfg.input.label_key``; ``sample_names``: one sample id per population input, see ``io.read_input``)."""
    from deepmapper import io
    from deepmapper.features.cluster import check_label_source

    i = cfg.input
    label_key = label_key if label_key is not None else i.label_key
    check_label_source(label_key, i.cluster)
    if i.cluster and labels is not None:
        from deepmapper.errors import ConfigError

        raise ConfigError(f"--cluster derives labels by clustering but --labels {labels} gives them",
                          where="command line", field="--cluster/--labels",
                          fix="drop --cluster to use that file, or drop --labels to cluster.")
    normalize = "never" if i.modality == "atac" else i.normalize
    if i.cluster:
        adata = _clustered(inputs, cfg)
    else:
        adata = io.read_input(inputs, label_key=label_key, labels=labels, matrix=i.matrix, normalize=normalize,
                              min_class_size=i.min_class_size, modality=i.modality,
                              missing_labels=io.parse_missing_labels(i.missing_labels),
                              sample_key=i.sample_key, sample_names=sample_names)
    if i.modality == "atac":
        adata = _atac_features(adata, cfg)
    _record(adata, cfg)
    return derive(adata, cfg)


def derive(adata, cfg: Config):
    """The features a validated dataset is analysed on: with ``--genesets`` the AUCell gene-set
    scores replace the genes (labels and provenance kept); otherwise the dataset itself.

    The last part of :func:`load`; the pipeline runs it on its own for datasets built by the
    de-novo front end (``deepmapper aucell --dataset``)."""
    if not cfg.input.genesets:
        return adata
    out = _geneset_features(adata, cfg)
    _record(out, cfg, keys=("genesets", "geneset_min_size"), base=adata)
    return out


def _record(adata, cfg: Config, keys=None, base=None) -> None:
    """The settings that built this dataset, for the record of a chained run (config.recorded_config)."""
    import json

    from deepmapper.config import step_params

    flat = cfg.flat()
    before = (base if base is not None else adata).uns["deepmapper"].get("settings")
    settings = json.loads(before) if before else {}
    settings.update({k: flat[k] for k in (keys or step_params("ingest"))})
    adata.uns["deepmapper"]["settings"] = json.dumps(settings, sort_keys=True)


def _rebuild(adata, X, var_names, *, matrix: str, normalized: bool, cfg: Config, var=None):
    from deepmapper import io

    meta = adata.uns["deepmapper"]
    key = meta["label_key"]
    out = io.build_dataset(X, adata.obs_names, var_names, adata.obs[key].astype(str).to_numpy(), label_key=key,
                           source=meta["source"], var=var, matrix=matrix, normalized=normalized,
                           modality=cfg.input.modality, source_sha256=meta.get("source_sha256", ""),
                           min_class_size=cfg.input.min_class_size, **_samples_of(adata))
    return out


def _samples_of(adata) -> dict:
    """build_dataset's sample arguments that carry a dataset's samples over to derived features (not the
    count totals: gene-set scores and TF-IDF values are not counts)."""
    key = adata.uns["deepmapper"].get("sample_key")
    if not key:
        return {}
    return {"samples": adata.obs[key].astype(str).to_numpy(dtype=object), "sample_key": key}


def _clustered(inputs: list[str], cfg: Config):
    """Read an h5ad without labels, cluster it, and use the clusters as labels."""
    from deepmapper import io
    from deepmapper.features.cluster import cluster_labels, drop_small_clusters

    if len(inputs) != 1 or not str(inputs[0]).endswith(".h5ad"):
        raise InputError("--cluster reads one h5ad file", where="; ".join(map(str, inputs)), field="input",
                         fix="convert the matrix to h5ad first, or give labels with --label-key.")
    path = Path(inputs[0])
    raw = io.read_h5ad_file(path, field="--input")
    clustered = cluster_labels(raw, modality=cfg.input.modality, resolution=cfg.input.cluster_resolution,
                               seed=cfg.run.seed, key=CLUSTER_KEY, matrix=cfg.input.matrix, where=str(path))
    sizes = clustered.obs[CLUSTER_KEY].value_counts()
    log.info("--cluster: %d Leiden clusters (%s)", len(sizes), ", ".join(f"{k}: {v}" for k, v in sizes.items()))
    normalize = "never" if cfg.input.modality == "atac" else cfg.input.normalize
    # Clusters smaller than a stratified split allows cannot be classes: drop their cells (warned).
    clustered, _ = drop_small_clusters(clustered, CLUSTER_KEY, cfg.input.min_class_size)
    adata = io.from_anndata(clustered, label_key=CLUSTER_KEY, matrix=cfg.input.matrix, normalize=normalize,
                            min_class_size=cfg.input.min_class_size, source=str(path),
                            source_sha256=io.file_sha256(path))
    return adata


def _atac_features(adata, cfg: Config):
    from deepmapper.features import atac

    atac.check_peak_counts(adata.X, adata.var_names, where=adata.uns["deepmapper"]["source"])
    X = atac.tfidf(atac.binarize(adata.X))
    log.info("atac: binarised and log TF-IDF transformed %d peaks", adata.n_vars)
    return _rebuild(adata, X, adata.var_names, matrix="tfidf", normalized=True, cfg=cfg, var=adata.var)


def _geneset_features(adata, cfg: Config):
    from deepmapper.features.aucell import score_genesets

    scores = score_genesets(adata, cfg.input.genesets, min_size=cfg.input.geneset_min_size, matrix="X",
                            device=cfg.run.device)
    log.info("gene sets: %d sets scored with AUCell on %d genes", scores.n_vars, adata.n_vars)
    return _rebuild(adata, scores.X, scores.var_names, matrix="aucell", normalized=True, cfg=cfg)
