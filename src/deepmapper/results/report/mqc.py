"""MultiQC custom content for a DeepMapper run, and running MultiQC on it.

Each section is one ``deepmapper_<name>_mqc.{tsv,json,yml}`` file whose header
carries its MultiQC config (id, plot type, titles), so the files also work
when a pipeline hands them to its own MultiQC process. Sections: general
statistics, per-pass accuracy, per-pass details (stop epoch), loss curves,
selection frequency of the top features, agreement with the baselines, run
parameters, and software versions (``*_mqc_versions.yml``).
"""
from __future__ import annotations

import json
import logging
import shlex
import shutil
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from deepmapper._utils.versions import __version__
from deepmapper._utils.atomic import write_text
from deepmapper.errors import ToolError
from deepmapper.results.report.results import Results, heldout_text, with_samples
from deepmapper.results import layout

log = logging.getLogger(__name__)

N_TOP_FEATURES = 30
AGREEMENT_KS = (5, 10, 20, 50, 100, 200, 500)
CONFIG_NAME = "multiqc_config.yml"


def default_config_path() -> Path:
    """The MultiQC config shipped with DeepMapper.

    One source: ``assets/multiqc_config.yml`` at the repository root (what the
    Nextflow MULTIQC process uses). A source checkout or an editable install
    finds it there; an installed wheel uses the identical copy shipped as
    package data next to this module (a test keeps the two equal).
    """
    here = Path(__file__).resolve().parent
    repo_copy = here.parents[3] / "assets" / CONFIG_NAME
    return repo_copy if repo_copy.is_file() else here / CONFIG_NAME


def agreement(results: Results, ks=AGREEMENT_KS) -> dict[str, dict[int, float]]:
    """Fraction of DeepMapper's top-k also in each baseline's top-k; 'chance' is k / n_features."""
    n = results.n_features
    ks = [k for k in ks if k <= n] or [n]
    ours = list(results.findings["feature"])
    out: dict[str, dict[int, float]] = {}
    for method, df in results.baselines.items():
        if method == "interactions" and screen_not_calibrated(results):
            continue        # nothing was screened: its all-zero scores are no ranking
        theirs = list(df["feature"])
        out[method] = {k: len(set(ours[:k]) & set(theirs[:k])) / k for k in ks}
    if out:
        out["chance"] = {k: k / n for k in ks}
    return out


def screen_not_calibrated(results: Results) -> str | None:
    """Why the pair screen could not be calibrated (findings.json ``sample_level.pair_screen``: too few
    samples for the label permutations to reach the q threshold), else None. Nothing was tested then,
    and ``baselines/interactions.tsv`` holds all-zero scores."""
    text = str((results.summary.get("sample_level") or {}).get("pair_screen") or "")
    return text if text.lower().startswith("no pair screen calibration") else None


def pass_name(index: int) -> str:
    return f"pass_{index:03d}"


def write_custom_content(results: Results, outdir: str | Path) -> list[Path]:
    """Write every section this run has data for; returns the files written."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in outdir.glob("deepmapper_*_mqc*"):  # a section this run lacks must not survive a rerun
        stale.unlink()
    written = [_general_stats(results, outdir)]
    if results.accuracies:
        written += [_pass_accuracy(results, outdir), _pass_table(results, outdir)]
    if results.passes:
        written.append(_loss_curves(results, outdir))
    written.append(_selection_frequency(results, outdir))
    agree = agreement(results)
    if agree:
        written.append(_agreement(results, agree, outdir))
    if pair_rows(results):
        written.append(_pairs(results, outdir))
    written += [_parameters(results, outdir), _versions(results, outdir)]
    return written


def _tsv(path: Path, header: dict, columns: list[str], rows: list[list]) -> Path:
    """A TSV with its MultiQC config as '#' comment lines (YAML)."""
    import yaml

    head = "".join(f"# {line}\n" for line in yaml.safe_dump(header, sort_keys=False).splitlines())
    body = "\t".join(columns) + "\n" + "".join("\t".join(_cell(v) for v in r) + "\n" for r in rows)
    return write_text(path, head + body)


def _cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace("\t", " ").replace("\n", " ")


def _general_stats(res: Results, outdir: Path) -> Path:
    mean_acc = res.mean_accepted_accuracy()
    cols = {
        "cells": ("Cells", "Cells in the dataset", "Blues", "{:,.0f}"),
        "features": ("Features", "Features ranked (genes, transcripts, peaks)", "Greens", "{:,.0f}"),
        "classes": ("Classes", "Labelled classes", "Purples", "{:,.0f}"),
        "passes_accepted": ("Passes accepted", "Passes that beat the accuracy gate", "Oranges", "{:,.0f}"),
        "passes_run": ("Passes run", "Passes trained (accepted or not)", "Greys", "{:,.0f}"),
        "mean_accuracy": ("Mean accuracy", "Mean held-out accuracy of the accepted passes (%)"
                          + (", on the cells of whole held-out samples" if with_samples(res) else ""), "RdYlGn",
                          "{:,.1f}"),
    }
    headers = {k: {"title": t, "description": d, "scale": s, "format": f, "namespace": "DeepMapper"}
               for k, (t, d, s, f) in cols.items()}
    headers["mean_accuracy"].update({"min": 0, "max": 100, "suffix": "%"})
    values = [res.n_cells if res.n_cells is not None else "", res.n_features, len(res.classes),
              sum(res.accepted), len(res.accuracies), "" if mean_acc is None else round(100 * mean_acc, 2)]
    header = {"id": "deepmapper_general_stats", "plot_type": "generalstats", "pconfig": [{k: v} for k, v in
                                                                                      headers.items()]}
    return _tsv(outdir / "deepmapper_general_stats_mqc.tsv", header, ["Sample"] + list(cols),
                [[res.sample_name] + values])


def _pass_accuracy(res: Results, outdir: Path) -> Path:
    indices = res.summary.get("pass_indices") or list(range(len(res.accuracies)))
    if with_samples(res):
        gate = ("Bars: plain accuracy. A pass is accepted when its balanced accuracy (the mean recall over the "
                "labels; Passes table) beats chance (1 / labels): the held-out set is a few whole samples whose "
                "sizes set the majority rate by accident. Only accepted passes enter the ranking.")
    else:
        gate = "Only accepted passes (above the gate and the majority-class rate) enter the ranking."
    header = {
        "id": "deepmapper_pass_accuracy", "section_name": "Held-out accuracy per pass",
        "description": f"Accuracy of each pass (one random arrangement of the features) {heldout_text(res)}. "
                       + gate,
        "plot_type": "bargraph",
        "pconfig": {"id": "deepmapper_pass_accuracy", "title": "DeepMapper: held-out accuracy per pass",
                    "ylab": "Accuracy (%)", "ymin": 0, "ymax": 100, "cpswitch": False, "sort_samples": False,
                    "stacking": "normal", "tt_decimals": 1},
        "categories": {"accepted": {"name": "Accepted", "color": "#2a9d8f"},
                       "rejected": {"name": "Rejected", "color": "#e76f51"}},
    }
    rows = [[pass_name(i), round(100 * a, 3) if ok else 0.0, 0.0 if ok else round(100 * a, 3)]
            for i, a, ok in zip(indices, res.accuracies, res.accepted)]
    return _tsv(outdir / "deepmapper_pass_accuracy_mqc.tsv", header, ["Pass", "accepted", "rejected"], rows)


def _pass_table(res: Results, outdir: Path) -> Path:
    n = len(res.accuracies)
    indices = res.summary.get("pass_indices") or list(range(n))
    stops = res.summary.get("stop_epochs") or [p.stop_epoch for p in res.passes] or [""] * n
    bests = res.summary.get("best_epochs") or [p.best_epoch for p in res.passes] or [""] * n
    gates = [p.gate for p in res.passes] if with_samples(res) and len(res.passes) == n else []
    balanced = [g.get("score") if g else "" for g in gates]
    header = {
        "id": "deepmapper_passes", "section_name": "Passes: accuracy and stop epoch",
        "description": "Per pass: held-out accuracy, " + ("its balanced accuracy (the gate with a sample key), "
                                                          if balanced else "")
                       + "whether it was accepted, the epoch training stopped at and the epoch whose weights "
                         "were kept (best validation loss).",
        "plot_type": "table",
        "pconfig": {"id": "deepmapper_passes", "title": "DeepMapper: passes", "col1_header": "Pass"},
        "headers": {"accuracy": {"title": "Accuracy", "format": "{:,.3f}", "min": 0, "max": 1,
                                 "scale": "RdYlGn"},
                    "accepted": {"title": "Accepted"},
                    "stop_epoch": {"title": "Stop epoch", "format": "{:,.0f}"},
                    "best_epoch": {"title": "Best epoch", "format": "{:,.0f}"}},
    }
    rows = [[pass_name(i), a, ok, s, b] for i, a, ok, s, b in zip(indices, res.accuracies, res.accepted,
                                                                   stops, bests)]
    columns = ["Pass", "accuracy", "accepted", "stop_epoch", "best_epoch"]
    if balanced:
        heads = header["headers"]
        header["headers"] = {"accuracy": heads.pop("accuracy"),
                             "balanced_accuracy": {"title": "Balanced accuracy", "format": "{:,.3f}", "min": 0,
                                                   "max": 1, "scale": "RdYlGn"}, **heads}
        columns.insert(2, "balanced_accuracy")
        rows = [r[:2] + [b] + r[2:] for r, b in zip(rows, balanced)]
    return _tsv(outdir / "deepmapper_passes_mqc.tsv", header, columns, rows)


N_PAIRS = 20


def pair_rows(res: Results, n: int = N_PAIRS) -> list[dict]:
    """The top gene pairs: the model's placed pairs (findings_pairs.tsv, accumulated over passes)
    with the screen's statistics joined in, or the screen's passing pairs when the model used none."""
    screen = {}
    q_max = ((res.summary.get("config") or {}).get("interactions") or {}).get("q_threshold", 0.05)
    if res.interactions is not None:
        for r in res.interactions.itertuples(index=False):
            screen.setdefault((str(r.feature_a), str(r.feature_b), str(r[2])), r)
    rows = []
    source = res.pairs if res.pairs is not None and len(res.pairs) else None
    if source is not None:
        for r in source.head(n).itertuples(index=False):
            key = (str(r.feature_a), str(r.feature_b), str(r[2]))
            st = screen.get(key) or screen.get((key[1], key[0], key[2]))
            rows.append({"pair": f"{key[0]} x {key[1]}", "feature_a": key[0], "feature_b": key[1],
                         "class": key[2], "rank": int(r.rank),
                         "median_importance": _num(getattr(r, "median_importance", None)),
                         "score": _num(getattr(st, "score", None)), "q_value": _num(getattr(st, "q_value", None)),
                         "corr_in_class": _num(getattr(st, "corr_in_class", None)),
                         "corr_rest": _num(getattr(st, "corr_rest", None))})
    elif res.interactions is not None:
        passed = res.interactions[res.interactions["q_value"] < q_max].head(n)
        for i, r in enumerate(passed.itertuples(index=False), start=1):
            rows.append({"pair": f"{r.feature_a} x {r.feature_b}", "feature_a": str(r.feature_a),
                         "feature_b": str(r.feature_b), "class": str(r[2]), "rank": i, "median_importance": None,
                         "score": _num(r.score), "q_value": _num(r.q_value), "corr_in_class": _num(r.corr_in_class),
                         "corr_rest": _num(r.corr_rest)})
    return rows


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def _pairs(res: Results, outdir: Path) -> Path:
    header = {
        "id": "deepmapper_pairs", "section_name": "Gene pairs",
        "description": "Gene pairs whose correlation inside a class differs from the rest (the permutation-"
                       "calibrated pair screen on training cells), as the model used them: rank by the "
                       "attribution of the pair's product, accumulated over passes.",
        "plot_type": "table",
        "pconfig": {"id": "deepmapper_pairs", "title": "DeepMapper: gene pairs", "col1_header": "Pair",
                    "sort_rows": False},          # best first, as ranked, not by name
        "headers": {"class": {"title": "Class"}, "rank": {"title": "Rank", "format": "{:,.0f}"},
                    "score": {"title": "Screen t", "format": "{:,.2f}"},
                    "q_value": {"title": "q", "format": "{:,.3g}"},
                    "corr_in_class": {"title": "Corr. in class", "format": "{:,.2f}", "min": -1, "max": 1},
                    "corr_rest": {"title": "Corr. rest", "format": "{:,.2f}", "min": -1, "max": 1}},
    }
    cols = ["class", "rank", "score", "q_value", "corr_in_class", "corr_rest"]
    rows = [[r["pair"]] + ["" if r[c] is None else r[c] for c in cols] for r in pair_rows(res)]
    return _tsv(outdir / "deepmapper_pairs_mqc.tsv", header, ["Pair"] + cols, rows)


def _loss_curves(res: Results, outdir: Path) -> Path:
    # Series as [x, y] pairs: JSON keys would be strings, and MultiQC 1.35 orders string x values
    # as text ("10" before "2").
    val = {pass_name(p.pass_index): [[e + 1, v] for e, v in enumerate(p.val_loss)] for p in res.passes}
    train = {pass_name(p.pass_index): [[e + 1, v] for e, v in enumerate(p.train_loss)] for p in res.passes}
    # One dashed line per distinct stop epoch, naming the passes that stopped there.
    stops: dict[int, list[str]] = {}
    for p in res.passes:
        stops.setdefault(p.stop_epoch, []).append(str(p.pass_index))
    x_lines = [{"value": e, "dash": "dash", "color": "#888888", "width": 1,
                "label": f"stop (pass {', '.join(ps)})"} for e, ps in sorted(stops.items())]
    content = {
        "id": "deepmapper_loss", "section_name": "Loss curves",
        "description": "Validation and training loss per epoch, one line per pass. Each line ends at the "
                       "pass's stop epoch (dashed lines); the weights of the lowest validation loss are kept.",
        "plot_type": "linegraph",
        "pconfig": {"id": "deepmapper_loss", "title": "DeepMapper: loss curves", "xlab": "Epoch",
                    "ylab": "Cross-entropy loss", "x_lines": x_lines, "showlegend": True,
                    "data_labels": [{"name": "Validation loss", "ylab": "Validation loss"},
                                    {"name": "Training loss", "ylab": "Training loss"}]},
        "data": [val, train],
    }
    path = outdir / "deepmapper_loss_mqc.json"
    write_text(path, json.dumps(content, indent=1, allow_nan=False))
    return path


def _selection_frequency(res: Results, outdir: Path) -> Path:
    top = res.findings.head(N_TOP_FEATURES)
    k = res.top_k
    header = {
        "id": "deepmapper_selection_frequency", "section_name": "Selection frequency of the top features",
        "description": f"The {len(top)} best-ranked features: fraction of accepted passes whose top "
                       f"{k if k else 'k'} held the feature. Features chosen under most arrangements do not "
                       "depend on where they sat in the pseudo-image.",
        "plot_type": "bargraph",
        "pconfig": {"id": "deepmapper_selection_frequency", "title": "DeepMapper: selection frequency",
                    "ylab": "Selection frequency", "ymin": 0, "ymax": 1, "cpswitch": False,
                    "sort_samples": False, "tt_decimals": 2},
        "categories": {"selection_frequency": {"name": "Selection frequency", "color": "#264653"}},
    }
    rows = [[f, float(s)] for f, s in zip(top["feature"], top["selection_frequency"])]
    return _tsv(outdir / "deepmapper_selection_frequency_mqc.tsv", header, ["Feature", "selection_frequency"],
                rows)


def _agreement(res: Results, agree: dict, outdir: Path) -> Path:
    names = {"logistic": "Logistic regression", "wilcoxon": "Wilcoxon", "interactions": "Pair screen alone",
             "chance": "Chance"}
    content = {
        "id": "deepmapper_baseline_agreement", "section_name": "Agreement with simpler methods",
        "description": "Fraction of DeepMapper's top-k features that are also in the top-k of penalised "
                       "logistic regression and of the Wilcoxon test, against the overlap expected by chance.",
        "plot_type": "linegraph",
        "pconfig": {"id": "deepmapper_baseline_agreement", "title": "DeepMapper: top-k overlap with baselines",
                    "xlab": "k (top features)", "ylab": "Overlap fraction", "ymin": 0, "ymax": 1,
                    # k as categories (5, 10, 20, ... evenly spaced, each named once): MultiQC's log axis
                    # printed every minor tick (4 5 6 7 8 9 10 2 3 ...), unreadable
                    "categories": True, "style": "lines+markers", "showlegend": True,
                    "colors": {names["chance"]: "#999999"}, "dash_styles": {names["chance"]: "dash"}},
        "data": {names.get(m, m): [[str(k), v] for k, v in d.items()] for m, d in agree.items()},
    }
    path = outdir / "deepmapper_baseline_agreement_mqc.json"
    write_text(path, json.dumps(content, indent=1, allow_nan=False))
    return path


def parameter_rows(res: Results) -> list[tuple[str, str]]:
    """(name, value) for the run's parameters, input and checksum: flat param names as on the CLI."""
    from deepmapper.config import iter_fields

    cfg = res.summary.get("config") or {}
    rows: list[tuple[str, str]] = []
    ds = res.dataset
    # (modality is a setting: its row comes with the configuration below, once)
    for key, label in (("source", "input"), ("source_sha256", "input_sha256"), ("label_key", "label_key"),
                       ("matrix", "matrix_used")):
        if ds.get(key) not in (None, ""):
            rows.append((label, ", ".join(map(str, ds[key])) if isinstance(ds[key], list) else str(ds[key])))
    if res.summary.get("dataset_sha256"):
        rows.append(("dataset_sha256", str(res.summary["dataset_sha256"])))
    for sec, f in iter_fields():
        value = (cfg.get(sec) or {}).get(f.name)
        if value is not None and f.metadata["param"] != "label_key":
            rows.append((f.metadata["param"], str(value)))
    return rows


def _parameters(res: Results, outdir: Path) -> Path:
    header = {
        "id": "deepmapper_parameters", "section_name": "Run parameters",
        "description": "Every parameter of this run (as command-line / Nextflow parameter names), the input "
                       "file and its SHA-256 checksum.",
        "plot_type": "table",
        "pconfig": {"id": "deepmapper_parameters", "title": "DeepMapper: parameters", "col1_header": "Parameter",
                    "sort_rows": False, "only_defined_headers": True},
        "headers": {"value": {"title": "Value"}},
    }
    rows = parameter_rows(res)
    if not rows:
        rows = [("note", "findings.json holds no configuration")]
    return _tsv(outdir / "deepmapper_parameters_mqc.tsv", header, ["Parameter", "value"], rows)


def software_versions(res: Results) -> dict[str, str]:
    versions = {"deepmapper": __version__}
    for source in (res.summary.get("versions"), (res.run_info or {}).get("versions")):
        if isinstance(source, dict):
            versions.update({str(k): str(v) for k, v in source.items()})
    return versions


def _versions(res: Results, outdir: Path) -> Path:
    import yaml

    path = outdir / "deepmapper_software_mqc_versions.yml"
    write_text(path, yaml.safe_dump({"DeepMapper": software_versions(res)}, sort_keys=True))
    return path


def run_multiqc(mqc_dir: str | Path, outdir: str | Path, *, config: str | Path | None = None,
                title: str | None = None) -> Path:
    """Run MultiQC (PyPI) on the custom content; returns the path of multiqc_report.html."""
    if not _importable("multiqc"):
        raise ToolError("MultiQC is not installed", where="deepmapper report", field="multiqc",
                        fix="pip install multiqc, or pass --no-multiqc.")
    config = Path(config) if config else default_config_path()
    if not config.is_file():
        raise ToolError("MultiQC config not found", where=str(config), field="--multiqc-config",
                        fix="give an existing YAML file.")
    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    # MultiQC writes many files: build them in a scratch dir beside the target and swap it in whole,
    # so a failed run never leaves a half report that looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        cmd = [sys.executable, "-m", "multiqc", "--no-version-check", "--no-ai", "--force", "--quiet",
               "--config", str(config), "--outdir", str(tmp),
               # Fixed names whatever title a config sets (MultiQC would prefix both with it).
               "--filename", layout.MULTIQC_REPORT, "--cl-config", "data_dir_name: multiqc_data"]
        if title:
            cmd += ["--title", title]
        cmd.append(str(mqc_dir))
        log.info("running %s", shlex.join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not (tmp / layout.MULTIQC_REPORT).is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["it wrote no report"]
            raise ToolError(f"MultiQC failed (exit {proc.returncode}): {tail[0].strip()}", where=str(mqc_dir),
                            field="multiqc", fix="rerun 'deepmapper -v report' to see MultiQC's log.")
        _umask_mode(tmp)  # mkdtemp makes 0700; the report is meant to be read by others
        if outdir.exists():
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return outdir / layout.MULTIQC_REPORT


def _umask_mode(path: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
