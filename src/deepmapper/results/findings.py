"""From pass files to findings: the accumulate step's files.

``findings.tsv`` (one row per feature, ordered by rank, with its ``kind``:
marginal, interaction or both, and its placed ``partners``), ``findings_per_class.tsv``
(top features per class, by the signed attribution towards that class),
``findings_pairs.tsv`` (the placed pairs, accumulated over passes like features)
and ``findings.json`` (run summary). Output is deterministic: same passes, same
bytes (no timings here; those go to ``run_info.json``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from deepmapper.engine import accumulate as acc
from deepmapper._utils import faults
from deepmapper._utils.atomic import write_json, write_text
from deepmapper.config import Config
from deepmapper.errors import FormatError, InputError
from deepmapper.engine.passfile import PassResult, first_difference, identity, read_pass
from deepmapper._utils.versions import versions
from deepmapper.results import layout

log = logging.getLogger(__name__)

def read_passes(paths: list[Path], *, dataset=None, dataset_path: str | None = None) -> list[PassResult]:
    """Read pass files and check that they belong together: same dataset, features, classes,
    label column, run seed and split, backbone, attribution and the settings that change what a
    pass computes (:func:`deepmapper.engine.passfile.binding_config`). With ``dataset`` (the AnnData of
    ``dataset.h5ad``) they are also checked against it. Any mismatch is one line naming the file,
    the field and the fix."""
    paths = [Path(p) for p in paths]
    read = sorted(((read_pass(p), p) for p in paths), key=lambda t: t[0].pass_index)
    if not read:
        raise InputError("no pass files found", fix="run train-pass first, or check --passes-dir.")
    seen: dict[int, Path] = {}
    for p, path in read:
        if p.pass_index in seen:
            raise FormatError(f"pass {p.pass_index} given twice (also {seen[p.pass_index]})", where=str(path),
                              field="pass_index", fix="give each pass file once.")
        seen[p.pass_index] = path
    ref, ref_path = read[0]
    ref_id = identity(ref)
    for p, path in read[1:]:
        if p.n_features != ref.n_features:
            raise FormatError(f"pass {p.pass_index} has {p.n_features} features, pass {ref.pass_index} "
                              f"({ref_path.name}) {ref.n_features}", where=str(path), field="features_sha256",
                              fix="accumulate passes of one dataset only.")
        pid = identity(p)
        for key, want in ref_id.items():
            got = pid[key]
            if want is None or got is None or got == want:
                continue
            raise FormatError(f"pass {p.pass_index} differs from pass {ref.pass_index} ({ref_path.name}) in "
                              f"{_what(key, got, want)}", where=str(path), field=_FIELD_OF.get(key, key),
                              fix="accumulate passes of one run only (one dataset, label column, seed and "
                                  "settings); retrain the odd ones with train-pass.")
    if dataset is not None:
        _check_against_dataset(read, dataset, dataset_path or "dataset")
    return [p for p, _ in read]


_FIELD_OF = {"seed": "seed", "split_sha256": "split", "heldout_index": "heldout_index", "config": "config"}


def _what(key: str, got, want) -> str:
    if key == "config":
        return "settings: " + first_difference(got, want)
    if key == "seed":
        return f"run seed ({got} vs {want}: another split of the cells)"
    if key in ("heldout_index", "split_sha256"):
        return "the train/validation/held-out split of the cells"
    if key == "classes":
        return f"classes ({len(got)} vs {len(want)}: {first_difference(dict(enumerate(got)), dict(enumerate(want)))})"
    if isinstance(got, dict):
        return f"{key}: " + first_difference(got, want)
    return f"{key} ({str(got)[:40]} vs {str(want)[:40]})"


def _check_against_dataset(read, adata, where: str) -> None:
    from deepmapper import io

    meta = adata.uns.get("deepmapper", {})
    _, classes = io.labels(adata)
    want = {"features_sha256": io.features_sha256(adata.var_names),
            "dataset_sha256": str(meta.get("source_sha256", "")), "label_key": meta.get("label_key"), "classes": classes}
    fix = f"give the dataset the passes were trained on (not {where}), or retrain the passes on this one."
    for p, path in read:
        got = {"features_sha256": p.features_sha256, "dataset_sha256": p.dataset_sha256,
               "label_key": p.meta.get("label_key"), "classes": list(p.classes)}
        for key, w in want.items():
            g = got[key]
            if not w or not g or g == w:
                continue
            raise FormatError(f"pass {p.pass_index} was trained on another dataset: {_what(key, g, w)}",
                              where=str(path), field=key, fix=fix)
        if p.heldout_index.size and int(p.heldout_index.max()) >= adata.n_obs:
            raise FormatError(f"pass {p.pass_index} holds out cell {int(p.heldout_index.max())} but the dataset "
                              f"has {adata.n_obs} cells", where=str(path), field="heldout_index", fix=fix)


def pass_files(passes_dir: Path) -> list[Path]:
    passes_dir = Path(passes_dir)
    if not passes_dir.is_dir():
        raise InputError("passes directory not found", where=str(passes_dir), fix="check --passes-dir.")
    return sorted(passes_dir.glob("pass_*.npz"))


def choose(passes: list[PassResult], n_wanted: int | None, *, samples: bool = False) -> list[PassResult]:
    """The passes a run ranks from: the first ``n_wanted`` accepted passes by index (all accepted when
    None). With a sample key (``samples``) and no pass accepted, every pass run: the rank is then the
    sample-level test's alone (:func:`model_left_out` says why) and the model's importances only order
    its ties, because that test stands without the model; without a sample key nothing does (empty)."""
    accepted = [p for p in passes if p.accepted]
    if not accepted and samples:
        return list(passes)
    return accepted if n_wanted is None else accepted[:n_wanted]


# With a sample key the model's importance weighs in the rank only when every pass ranked from
# trained on at least this many samples of each label (see model_left_out): 5 per label at the
# default fractions (one held out, one validating, three training).
MIN_TRAIN_SAMPLES = 3


def model_left_out(used: list[PassResult]) -> str:
    """Why the model's importance does not weigh in the rank with a sample key ("" when it does).

    Two reasons, in this order: no pass ranked from passed the accuracy gate (with a sample key:
    balanced accuracy on held-out donors above chance and ``min_accuracy``; :func:`choose`), or a pass
    trained on fewer than :data:`MIN_TRAIN_SAMPLES` samples of some label (``meta["train_samples"]``,
    e.g. 4 donors per condition: one held out, one to validate on, two to train on). With one
    training sample per label every feature that tells those two samples apart - the donors' own
    genotype and handling as much as the condition - serves the model equally; with two, one odd
    donor is half of what the model learns a label from. Measured on ``bench/donors.py``
    (docs/accuracy.md): at 3 donors per condition with two odd disease donors the model alone put
    3.7 of 12 condition genes and 3.4 of 12 one-donor genes in its top 20, and weighting by it
    lowered the rank from 9.3 to 8.7 condition genes (10 seeds); at 4 paired donors with a weak
    effect the product let 3.3 one-donor genes into the top 20 where the test alone let 1.0 (3
    seeds), and at 4 donors per condition it found as many condition genes as the test alone
    (10.4, 10.2 / 10.0, 7.0; 5 seeds each). From 3 training samples it stays within the limit (5
    paired donors, weak effect: 9.5 / 0.5 against the test's 9.25 / 0; 4 seeds)."""
    if not used:
        return "no passes to rank from"
    if not all(p.accepted for p in used):
        return _gate_failed(used)
    few = {}
    for p in used:
        for label, n in ((p.meta or {}).get("train_samples") or {}).items():
            if int(n) < MIN_TRAIN_SAMPLES:
                few[label] = min(int(n), few.get(label, int(n)))
    if few:
        listed = ", ".join(f"'{label}' ({n})" for label, n in sorted(few.items()))
        return (f"passes trained on fewer than {MIN_TRAIN_SAMPLES} samples of a label ({listed}; the others were "
                "held out or validated on): with one or two samples per label the model cannot tell one "
                "sample's own effects from the label's; add samples (at the default fractions 5 per label give "
                "each pass 3)")
    return ""


def _gate_failed(used: list[PassResult]) -> str:
    """The reason of a run with a sample key whose passes all failed the gate (model_left_out, trust)."""
    gates = [g for g in ((p.meta or {}).get("gate") for p in used) if g]
    best = (f" (best balanced accuracy {max(g['score'] for g in gates):.3f} against chance "
            f"{gates[0]['chance']:.3f})") if gates else ""
    return (f"no pass passed the accuracy gate on held-out samples{best}: what the model learned did not "
            "carry over to a new donor well enough")


def build(passes: list[PassResult], feature_names: list[str], *, cfg: Config, n_wanted: int | None = None,
          is_denovo: np.ndarray | None = None, n_cells: int | None = None, dataset_sha256: str = "",
          sample_stats: dict | None = None, means: tuple[np.ndarray, np.ndarray] | None = None,
          log_values: bool = True, baseline_accuracy: float | None = None,
          ensembled_accuracy: float | None = None):
    """Returns (findings rows, per-class rows, summary dict, accumulated pairs).

    ``sample_stats`` (:func:`deepmapper.engine.samples.sample_level`, datasets with a sample key): the rank
    becomes that of median importance x the sample-level evidence (:func:`sample_evidence`), and the
    table gains ``model_rank`` (the rank without samples), ``sample_p``, ``sample_p_left_out``, ``sample_q`` and
    ``sample_reproducibility``; the summary gains
    ``sample_level`` with the per-sample means of the top features (findings_samples.tsv).
    ``means``: (mean of each class, mean of the rest) per feature on the analysed matrix
    (:func:`deepmapper.engine.accumulate.group_means`), for the direction and log fold change of the
    per-class tables; ``log_values``: False when that matrix has negative values (scaled), so
    log fold changes are NaN. ``baseline_accuracy``: the logistic baseline's held-out accuracy
    on the same cells (``baselines.json``), for the trust verdict (None: not compared)."""
    import pandas as pd

    used = choose(passes, n_wanted, samples=sample_stats is not None)
    if not used:                # no sample key (with one, the sample-level test ranks alone)
        raise InputError(f"none of the {len(passes)} passes passed the accuracy gate (best held-out accuracy "
                         f"{max(p.accuracy for p in passes):.3f})", field="run.min_accuracy",
                         fix="train longer (--epochs), try another --backbone, or lower --min-accuracy.")
    if len(feature_names) != used[0].n_features:
        raise FormatError(f"dataset has {len(feature_names)} features but the passes have {used[0].n_features}",
                          field="n_features", fix="use the dataset the passes were trained on.")
    top_k = cfg.run.top_k
    result = acc.accumulate(np.stack([p.importance for p in used]), top_k)
    order = result.order()
    names = np.asarray(feature_names, dtype=object)
    denovo = np.zeros(len(names), bool) if is_denovo is None else np.asarray(is_denovo, bool)
    kind, partners, pair_table = pair_findings(used, names, result)
    left_out = model_left_out(used) if sample_stats is not None else ""
    model_used = not left_out
    if left_out:
        log.warning("the rank is the sample-level test's alone (the model's importances only order its ties): %s",
                    left_out)
    if sample_stats is not None:
        score = rank_score(result.median_importance, sample_stats["p"], model_used=model_used)
        order = np.lexsort((result.rank, -score))         # ties: the model's own order
        sample_rank = np.empty(len(order), np.int64)
        sample_rank[order] = np.arange(1, len(order) + 1)
    table = pd.DataFrame({
        "feature": names[order],
        "rank": result.rank[order],
        "selection_frequency": result.selection_frequency[order],
        "median_importance": result.median_importance[order],
        "mean_rank": result.mean_rank[order],
        "pfer_bound": result.pfer_bound[order],
        "is_denovo": denovo[order],
        "kind": kind[order],
        "partners": partners[order],
    })
    if sample_stats is not None:
        table["rank"] = sample_rank[order]
        table["model_rank"] = result.rank[order]
        table["sample_p"] = sample_stats["p"][order]
        table["sample_p_left_out"] = sample_stats["p_left_out"][order]
        table["sample_q"] = sample_stats["q"][order]
        table["sample_reproducibility"] = sample_stats["reproducibility"][order]

    classes = used[0].classes
    per_class = per_class_table(used, names, means, log_values=log_values,
                                sample_p=None if sample_stats is None else sample_stats["p_label"],
                                importance=result.median_importance, model_used=model_used)
    per_class_top = {cls: per_class.loc[per_class["class"] == cls, "feature"].head(20).astype(str).tolist()
                     for cls in classes}

    summary = {
        "schema_version": 1,
        "accuracies": [round(float(p.accuracy), 6) for p in passes],
        "accepted": [bool(p.accepted) for p in passes],
        "stop_epochs": [int(p.stop_epoch) for p in passes],
        "best_epochs": [int(p.best_epoch) for p in passes],
        "early_stopped": [bool(p.early_stopped) for p in passes],
        "pass_indices": [int(p.pass_index) for p in passes],
        "used_passes": [int(p.pass_index) for p in used],
        "n_passes_run": len(passes),
        "n_passes_accepted": sum(p.accepted for p in passes),
        "mean_accuracy": round(float(np.mean([p.accuracy for p in used])), 6),
        "n_features": int(len(names)),
        "n_cells": n_cells,
        "classes": list(classes),
        "top_k": int(result.top_k),
        "top_features": [str(n) for n in names[order][:50]],
        "per_class_top": per_class_top,
        "stability": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                      for row in acc.stability_table(result)],
        "config": cfg.to_dict(),
        "versions": versions(),
        "dataset_sha256": dataset_sha256,
        "features_sha256": used[0].features_sha256,
        "n_pairs": int(len(pair_table)),
        # the pairs training placed, in placement order (what pl.attribution_map redraws): recorded
        # once here so that no reader selects them from interactions.tsv again
        "placed_pairs": [[str(names[a]), str(names[b])] for a, b in
                         np.asarray(used[0].pairs if used[0].pairs is not None else np.zeros((0, 2)),
                                    dtype=np.int64).reshape(-1, 2)],
        "pair_channel": bool(used[0].meta.get("pair_channel", False)),
        # passes whose logistic start kept the pair products (their validation fold preferred them)
        "passes_with_pair_start": int(sum(bool(p.meta.get("pair_start")) for p in used)),
        "top_pairs": pair_table.head(20).to_dict(orient="records"),
        "kinds": {k: int((kind == k).sum()) for k in KINDS},
    }
    summary["top_pairs"] = [{k: _json_value(v) for k, v in row.items()} for row in summary["top_pairs"]]
    if sample_stats is not None:
        summary["sample_level"] = sample_summary(sample_stats, names, order,
                                                 screen_q=cfg.interactions.q_threshold if cfg.interactions.enabled
                                                 else None)
        summary["sample_level"]["rank"] = RANK_WITH_MODEL if model_used else RANK_TEST_ALONE
        summary["sample_level"]["model_left_out"] = left_out
    summary["trust"] = assess_trust(used, passes, epochs=cfg.run.epochs, baseline_accuracy=baseline_accuracy,
                                    ensembled_accuracy=ensembled_accuracy)
    return table, per_class, summary, pair_table


# findings.json sample_level["rank"]: what the rank with a sample key was made of
RANK_WITH_MODEL = "median_importance x -log10(sample_p)"
RANK_TEST_ALONE = "-log10(sample_p) alone (ties in the model's order; sample_level.model_left_out says why)"


def rank_score(importance: np.ndarray, p: np.ndarray, *, model_used: bool = True,
               direction: np.ndarray | None = None) -> np.ndarray:
    """The score of the rank with a sample key: the model's median importance (findings.tsv's
    ``median_importance``) x :func:`sample_evidence`, or the evidence alone when the model does not
    weigh in (``model_used`` False, :func:`model_left_out`); a class's list (``direction`` given, the
    class's mean against the rest's; ``p`` the class's own sample-level p) signs it, up first.

    Why a class's list takes the run's importance and the data's direction, not the class's signed
    attribution clipped at 0 as without a sample key: with few training donors the passes often read
    a condition gene weakly or the other way, and a clipped score of 0 put it behind every feature
    with any positive attribution whatever its p value (``bench/donors.py``, 4 donors per condition,
    two odd, 5 seeds: the disease list held 8.6 of the 12 condition genes in its top 20, 11.6 this
    way; docs/accuracy.md)."""
    score = sample_evidence(p)
    if model_used:
        score = np.asarray(importance, np.float64) * score
    return score if direction is None else np.asarray(direction, np.float64) * score


def sample_evidence(p: np.ndarray) -> np.ndarray:
    """``-log10`` of the sample-level p value (:func:`deepmapper.engine.samples.leave_one_sample_out`), 0
    where the test gave none: the weight of a feature's importance in the ranking with a sample key.

    Why this weight: the model trains on a few donors per label (two at 4 per condition; with one it
    does not weigh in at all, :func:`model_left_out`), so its importance mixes the condition with those
    donors' own effects. The p value comes from every sample, and a gene raised in one donor only keeps
    the null p value it has without that donor (``-log10 p`` at most about 0.43 on average), while a gene
    raised in every donor keeps a small one whichever donor is missing. On ``bench/donors.py`` this
    weight raised the true condition genes in the top 20 from 10.4 to 11.4 of 12 at 6 donors per
    condition (pseudobulk DESeq2: 11.0; docs/accuracy.md)."""
    p = np.asarray(p, np.float64)
    out = -np.log10(np.clip(np.nan_to_num(p, nan=1.0), 1e-300, 1.0))
    return out + 0.0                                          # -0.0 -> 0.0 where p is 1


SAMPLE_PANEL_TOP = 20


def sample_summary(stats: dict, names: np.ndarray, order: np.ndarray, q_threshold: float = 0.05,
                   screen_q: float | None = None) -> dict:
    """findings.json's ``sample_level``: the design, the test, whether the pair screen could be
    calibrated by moving labels between samples, and the per-sample means of the top features."""
    from deepmapper.engine.interactions import sample_calibration

    labels = stats["sample_labels"]
    codes = np.searchsorted(np.asarray(sorted(set(labels)), dtype=object), np.asarray(labels, dtype=object))
    donors = stats.get("donors")
    blocks = None if donors is None else np.unique(np.asarray(donors, dtype=object), return_inverse=True)[1]
    # the screen sees the samples outside the held-out set (stats["screened"]; all when not given)
    seen = np.asarray(stats.get("screened", np.ones(len(labels), bool)), bool)
    screen = "off" if screen_q is None else (
        sample_calibration(codes[seen], screen_q, None if blocks is None else blocks[seen]) or
        "labels permuted between whole samples" + ("" if blocks is None else " within donors") +
        "; q >= family-wise p")
    top = order[:SAMPLE_PANEL_TOP]
    design = ("one label per sample" if donors is None else
              f"paired: {len(set(donors))} donors, each under several labels; a sample is donor x label")
    return {"sample_key": stats["sample_key"], "design": design, "n_samples": len(stats["sample_names"]),
            "samples_per_label": {c: labels.count(c) for c in sorted(set(labels))},
            "test": stats["test"], "note": stats["note"], "relabellings": int(stats["relabellings"]),
            "n_sample_q_below": int(np.sum(np.nan_to_num(stats["q"], nan=1.0) < q_threshold)),
            "q_threshold": q_threshold, "pair_screen": screen,
            "panel": {"features": [str(names[j]) for j in top], "samples": list(stats["sample_names"]),
                      "labels": list(labels), "n_cells": [int(n) for n in stats["n_cells"]],
                      "means": [[round(float(v), 6) for v in stats["means"][:, j]] for j in top]}}


def samples_table(summary: dict):
    """findings_samples.tsv: one row per (top feature, sample) with the sample's mean, or None."""
    import pandas as pd

    panel = (summary.get("sample_level") or {}).get("panel")
    if not panel:
        return None
    rows = [{"feature": f, "sample": s, "label": lab, "n_cells": n, "mean": m}
            for f, means in zip(panel["features"], panel["means"])
            for s, lab, n, m in zip(panel["samples"], panel["labels"], panel["n_cells"], means)]
    return pd.DataFrame(rows)


PER_CLASS_COLUMNS = ("class", "feature", "rank", "score", "direction", "logfoldchange", "median_importance",
                     "mean_rank")
DIRECTION_NAMES = {1: "up", -1: "down", 0: "none"}


def per_class_table(used: list[PassResult], names: np.ndarray, means, *, log_values: bool = True,
                    sample_p: np.ndarray | None = None, importance: np.ndarray | None = None,
                    model_used: bool = True):
    """``findings_per_class.tsv``: every feature of every class, in scanpy's order (highest score first).

    ``median_importance``: the median over passes of the signed attribution towards the class (each
    pass scaled by its total absolute attribution; positive: evidence for the class); ``mean_rank``:
    the Borda mean rank of that signed attribution; ``direction``: up/down, the class's mean
    against the rest's on the analysed matrix; ``score``: direction * max(evidence, 0)
    (:func:`deepmapper.engine.accumulate.marker_scores` says why); ``logfoldchange``: scanpy's, NaN when
    the matrix is not log values (``log_values`` False). ``sample_p`` (labels x features, with a sample
    key: each label's sample-level p) with ``importance`` (findings.tsv's median importance): the
    score is :func:`rank_score` signed by the direction (``model_used`` False: the evidence alone),
    the model's marker score orders its ties, and the table gains ``sample_p``."""
    import pandas as pd

    classes = used[0].classes
    n = len(names)
    frames = []
    for c, cls in enumerate(classes):
        signed = np.stack([p.class_importance[c] for p in used]).astype(np.float64)
        mean_rank = acc.ranks(signed).mean(axis=0)
        evidence = np.median(signed / np.maximum(np.abs(signed).sum(axis=1, keepdims=True), 1e-30), axis=0)
        if means is None:
            direction = np.ones(n, np.int8)            # no matrix given: evidence only (tests of the maths)
            lfc = np.full(n, np.nan)
        else:
            direction = acc.directions(means[0][c], means[1][c])
            lfc = acc.log_fold_changes(means[0][c], means[1][c]) if log_values else np.full(n, np.nan)
        score = acc.marker_scores(evidence, direction)
        if sample_p is None:
            order = acc.score_order(score)[0]
        else:                          # ties (no sample-level p: weight 0) in the model's order
            model_score, score = score, rank_score(importance, sample_p[c], model_used=model_used,
                                                   direction=direction)
            order = np.lexsort((np.arange(n), -model_score, -score))
        frame = pd.DataFrame({
            # + 0.0: a score of -0.0 (direction x 0) is written as 0, not "-0"
            "class": cls, "feature": names[order], "rank": np.arange(1, n + 1), "score": score[order] + 0.0,
            "direction": [DIRECTION_NAMES[int(d)] for d in direction[order]], "logfoldchange": lfc[order],
            "median_importance": evidence[order], "mean_rank": mean_rank[order]})
        if sample_p is not None:
            frame["sample_p"] = sample_p[c][order]
        frames.append(frame)
    columns = list(PER_CLASS_COLUMNS) + (["sample_p"] if sample_p is not None else [])
    return pd.concat(frames, ignore_index=True)[columns]


# The trust verdict (findings.json["trust"]): when the model is not to be believed.
# Margin below the logistic baseline: the mean per-pass held-out accuracy may fall short of
# logistic regression on the same held-out cells by chance. On pbmc68k_reduced (bulk_labels,
# 142 held-out cells, 10 passes, default settings) the shortfall over run seeds 0-3 was -0.005,
# +0.015, +0.023, +0.008 (bench/trust_margin.py), and the ensembled model's over 10 seeds at most
# 0.028 (docs/accuracy.md); the known bad case (louvain, cnn_small) falls 0.53 short. 0.05 is
# about 7 of 142 cells, twice the largest chance shortfall seen. On smaller held-out sets one
# cell moves more, so the margin widens to two binomial standard errors of the baseline's
# accuracy when that is larger (142 cells at 0.893: 0.052).
TRUST_MARGIN_FLOOR = 0.05
# Passes disagree wildly when their held-out accuracies (same cells) spread over more than this:
# the default configuration spread 0.028-0.070 over those four seeds (10 passes each).
TRUST_SPREAD = 0.15


def trust_margin(baseline_accuracy: float | None, n_test: int) -> float:
    """How far below the baseline the mean per-pass accuracy may fall before the run is flagged."""
    if baseline_accuracy is None or n_test <= 0:
        return TRUST_MARGIN_FLOOR
    b = min(max(float(baseline_accuracy), 0.0), 1.0)
    return float(max(TRUST_MARGIN_FLOOR, 2.0 * math.sqrt(b * (1.0 - b) / n_test)))


def assess_trust(used: list[PassResult], passes: list[PassResult], *, epochs: int,
                 baseline_accuracy: float | None, ensembled_accuracy: float | None = None) -> dict:
    """``{"trustworthy", "reasons", "baseline_accuracy", "margin", ...}``: the run is flagged when the
    passes it ranks from (``used``) are far below the logistic baseline, every pass ran to the
    epoch limit, or their accuracies disagree wildly.

    The mean per-pass accuracy is compared with the baseline, except when ``max_cells_per_pass``
    dealt the cells into blocks (``meta["blocks"]`` > 1): then each pass trained on one block while
    logistic regression saw every cell, and the passes the ranking rests on saw them together, so
    their arrangement-ensembled accuracy (``ensembled_accuracy``) is compared. Passes ranked from
    that did not pass the gate (a sample key: :func:`choose`) flag the run too."""
    accs = np.asarray([p.accuracy for p in used], dtype=np.float64)
    mean = float(accs.mean())
    n_test = int(used[0].heldout_index.size)
    margin = trust_margin(baseline_accuracy, n_test)
    blocks = max(int((getattr(p, "meta", None) or {}).get("blocks", 1)) for p in used)
    by_ensemble = blocks > 1 and ensembled_accuracy is not None
    judged, what = mean, "held-out accuracy"
    if by_ensemble:
        judged = float(ensembled_accuracy)
        what = f"arrangement-ensembled held-out accuracy (each pass trained on 1 of {blocks} blocks of cells)"
    reasons = []
    if baseline_accuracy is not None and judged < float(baseline_accuracy) - margin:
        reasons.append(f"{what} {judged:.3f} is below logistic regression's {float(baseline_accuracy):.3f} "
                       f"on the same cells by more than {margin:.3f}: the ranking explains a model that "
                       "learned less than a linear one (try --backbone cnn or more --epochs)")
    if not all(p.accepted for p in used):        # a sample key, no pass accepted (choose)
        reasons.append(_gate_failed(used) + ", so the rank is the sample-level test's alone (-log10 sample_p; "
                       "the model's importances only order its ties); add samples, or train longer (--epochs)")
    at_limit = [p for p in passes if int(p.stop_epoch) >= int(epochs) and not p.early_stopped]
    if passes and len(at_limit) == len(passes):
        reasons.append(f"every pass ran to the epoch limit ({epochs}) without early stopping: training had not "
                       "settled (raise --epochs)")
    spread = float(accs.max() - accs.min()) if len(accs) > 1 else 0.0
    if spread > TRUST_SPREAD:
        reasons.append(f"the passes' held-out accuracies spread from {accs.min():.3f} to {accs.max():.3f} "
                       f"(more than {TRUST_SPREAD}): the arrangements disagree")
    return {"trustworthy": not reasons, "reasons": reasons,
            "baseline_accuracy": None if baseline_accuracy is None else round(float(baseline_accuracy), 6),
            "margin": round(margin, 6), "mean_accuracy": round(mean, 6), "accuracy_spread": round(spread, 6),
            "passes_at_epoch_limit": len(at_limit), "n_heldout": n_test,
            **({"ensembled_accuracy": round(judged, 6), "blocks": blocks} if by_ensemble else {})}


def pair_findings(used: list[PassResult], names: np.ndarray, result):
    """Per feature ``kind`` and ``partners``, and the accumulated pair table.

    The passes of a run place the same screened pairs (one screen per run). A pair's
    product-channel attribution is credited to both of its genes in the pass file; here a gene's
    share of importance coming from its pair is the median over passes of
    ``pair importance / gene importance``: ``interaction`` when at least 2/3, ``marginal`` when at
    most 1/3 (or the gene is in no placed pair, or the pair channel was off), ``both`` between.
    ``partners``: the gene's placed partner and the class the pair was screened for.
    """
    import pandas as pd

    n = len(names)
    kind = np.full(n, "marginal", dtype=object)
    partners = np.full(n, "", dtype=object)
    ref = used[0]
    pairs = np.asarray(ref.pairs, dtype=np.int64).reshape(-1, 2)
    for p in used[1:]:
        if not np.array_equal(np.asarray(p.pairs).reshape(-1, 2), pairs):
            raise FormatError(f"pass {p.pass_index} placed other pairs than pass {ref.pass_index}",
                              field="pairs", fix="accumulate passes of one run (one interactions.tsv).")
    columns = ["feature_a", "feature_b", "class", "rank", "selection_frequency", "median_importance",
               "mean_rank", "rank_a", "rank_b"]
    if len(pairs) == 0:
        return kind, partners, pd.DataFrame({c: [] for c in columns})
    pair_classes = list(ref.meta.get("pair_classes", [""] * len(pairs)))
    for m, (a, b) in enumerate(pairs):
        partners[a] = f"{names[b]} ({pair_classes[m]})"
        partners[b] = f"{names[a]} ({pair_classes[m]})"
    has_channel = all(len(p.pair_importance) == len(pairs) and p.meta.get("pair_channel", True) for p in used)
    if not has_channel:
        rank = np.arange(1, len(pairs) + 1)
        table = pd.DataFrame({"feature_a": names[pairs[:, 0]], "feature_b": names[pairs[:, 1]],
                              "class": pair_classes, "rank": rank, "selection_frequency": np.nan,
                              "median_importance": np.nan, "mean_rank": np.nan,
                              "rank_a": result.rank[pairs[:, 0]], "rank_b": result.rank[pairs[:, 1]]})
        return kind, partners, table
    pair_imp = np.stack([p.pair_importance for p in used]).astype(np.float64)        # (passes, M)
    gene_imp = np.stack([p.importance for p in used]).astype(np.float64)             # (passes, F)
    for col in (0, 1):
        g = pairs[:, col]
        share = np.median(pair_imp / np.maximum(gene_imp[:, g], 1e-30), axis=0)
        kind[g] = np.where(share >= 2 / 3, "interaction", np.where(share > 1 / 3, "both", "marginal"))
    pacc = acc.accumulate(pair_imp, min(len(pairs), 10))
    # on the scale of the features' median_importance: each pass's pair importance over the pass's
    # total feature importance
    scaled = np.median(pair_imp / np.maximum(gene_imp.sum(axis=1, keepdims=True), 1e-30), axis=0)
    order = pacc.order()
    table = pd.DataFrame({
        "feature_a": names[pairs[order, 0]], "feature_b": names[pairs[order, 1]],
        "class": np.asarray(pair_classes, dtype=object)[order], "rank": pacc.rank[order],
        "selection_frequency": pacc.selection_frequency[order], "median_importance": scaled[order],
        "mean_rank": pacc.mean_rank[order], "rank_a": result.rank[pairs[order, 0]],
        "rank_b": result.rank[pairs[order, 1]]})
    return kind, partners, table


KINDS = ("marginal", "interaction", "both")


def _json_value(v):
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and not np.isfinite(v) else v


def trust_line(trust: dict) -> str:
    """The run's last line on its model (``findings.json["trust"]``)."""
    if not trust.get("trustworthy", True):
        return "NOT TRUSTWORTHY: " + "; ".join(trust["reasons"]) + " (findings.json 'trust')"
    if trust.get("baseline_accuracy") is None:
        return (f"trust: ok, held-out accuracy {trust['mean_accuracy']:.3f} (not compared with logistic "
                "regression: no baselines)")
    # the margin is the shortfall allowed (two standard errors), not a difference: say both
    return (f"trust: ok, held-out accuracy {trust['mean_accuracy']:.3f}, logistic regression "
            f"{trust['baseline_accuracy']:.3f} on the same cells (difference "
            f"{trust['mean_accuracy'] - trust['baseline_accuracy']:+.3f}; allowed shortfall {trust['margin']:.3f})")


def log_values_or_warn(X, *, where: str = "", warn: bool = True) -> bool:
    """Whether log fold changes can be computed from ``X`` (scanpy's formula needs log1p values, so no
    negative ones); a scaled matrix is one warning, and its log fold changes are NaN."""
    import scipy.sparse as sp

    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and float(values.min()) < 0:
        if not warn:
            return False
        log.warning("%s: the analysed matrix has negative values (scaled, e.g. sc.pp.scale?), so log fold changes "
                    "cannot be computed: logfoldchanges are NaN (direction is still the mean difference). Fix: "
                    "analyse log-normalised values (use_raw=True or a layer; --matrix raw or layer:NAME)",
                    where or "dataset")
        return False
    return True


def read_baseline_accuracy(path: Path, heldout_index: np.ndarray) -> float | None:
    """The logistic baseline's held-out accuracy in ``baselines.json`` (None when it has none), checked
    to be judged on the passes' held-out cells."""
    import hashlib
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the baselines ({exc.__class__.__name__})", where=str(path),
                         field="baselines", fix="give the baselines.json of 'deepmapper baseline' on this dataset.") \
            from None
    want = (data.get("split") or {}).get("test_index_sha256")
    got = hashlib.sha256(np.ascontiguousarray(np.asarray(heldout_index, dtype=np.int64)).tobytes()).hexdigest()
    if want is not None and want != got:
        raise FormatError("the baselines were judged on other held-out cells than the passes", where=str(path),
                          field="split.test_index_sha256",
                          fix="run 'deepmapper baseline' on the same dataset with the passes' --seed and fractions.")
    accuracy = (data.get("logistic") or {}).get("accuracy")
    return None if accuracy is None else float(accuracy)


def write(outdir: Path, table, per_class, summary, pairs=None) -> None:
    outdir = Path(outdir)
    write_text(outdir / layout.FINDINGS, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    faults.point("accumulate")
    if pairs is not None:
        write_text(outdir / layout.FINDINGS_PAIRS, pairs.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_text(outdir / layout.FINDINGS_PER_CLASS, per_class.to_csv(sep="\t", index=False, float_format="%.6g"))
    per_sample = samples_table(summary)
    if per_sample is not None:
        write_text(outdir / layout.FINDINGS_SAMPLES, per_sample.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_json(outdir / layout.FINDINGS_JSON, summary)
