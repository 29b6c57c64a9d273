"""The one owner of every name in a results folder (``deepmapper run --outdir``, the pipeline's
``--outdir``): writers, readers, publishing and the report take their names from here.

The pass files' own names (``passes/pass_NNN.npz``) belong to :mod:`deepmapper.engine.passfile`,
which defines their format.
"""
from __future__ import annotations

DATASET = "dataset.h5ad"              # the validated input (io.write_dataset)
PASSES = "passes"                     # one pass_NNN.npz per trained arrangement
INTERACTIONS = "interactions.tsv"     # the pair screen, best first
FINDINGS = "findings.tsv"             # the global ranking
FINDINGS_JSON = "findings.json"       # accuracies, stability, configuration, versions
FINDINGS_PER_CLASS = "findings_per_class.tsv"
FINDINGS_PAIRS = "findings_pairs.tsv"  # the placed pairs, accumulated
FINDINGS_SAMPLES = "findings_samples.tsv"  # with a sample key: top features' mean in each sample
EVALUATION = "evaluation.json"
RUN_INFO = "run_info.json"            # what `run` was asked (resume key, state)
RUN_LOG = "run.log"                   # the run's log lines (deepmapper._utils.progress.log_to_file)
MANIFEST = "manifest.json"            # what one published run consists of
BASELINES = "baselines"               # folder: <method>.tsv, baselines.json
BASELINES_JSON = "baselines.json"
REPORT = "report.html"
MQC = "mqc"                           # MultiQC custom content (*_mqc.*)
MULTIQC = "multiqc"                   # folder: multiqc_report.html, multiqc_data/
MULTIQC_REPORT = "multiqc_report.html"

# What a run may publish, and whether it is a folder: checked before anything is read, so a
# user's file of the same name is reported up front instead of being half replaced.
PUBLISHED = {DATASET: False, PASSES: True, FINDINGS: False, FINDINGS_JSON: False, FINDINGS_PER_CLASS: False,
             EVALUATION: False, RUN_INFO: False, MANIFEST: False, BASELINES: True, REPORT: False,
             MQC: True, MULTIQC: True, INTERACTIONS: False, FINDINGS_PAIRS: False, FINDINGS_SAMPLES: False,
             RUN_LOG: False}


def baseline_table(method: str) -> str:
    """``baselines/<method>.tsv`` (logistic, wilcoxon, interactions, ...)."""
    return f"{method}.tsv"
