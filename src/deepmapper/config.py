"""Run configuration: the one source of defaults.

The CLI options, ``nextflow.config`` params, ``nextflow_schema.json`` and the
docs all take their defaults from the dataclasses below (a test checks that they
agree). Every field has a flat parameter name (``param``) used by the CLI and by
Nextflow, e.g. ``run.epochs`` -> ``--epochs`` / ``params.epochs``.

Defaults are chosen to work *together*: early stopping can fire
(``min_epochs + patience < epochs``), and the default backbone keeps spatial
position so it can tell features apart.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

SCHEMA_VERSION = 1

BACKBONE_KINDS_DOC = (
    "cnn (default: keeps position), cnn_small (reference shape), cnn_mid, resnet18, "
    "linear, mlp, vit, vae, timm:<name>"
)
ATTRIBUTION_METHODS = ("integrated_gradients", "saliency", "occlusion", "attention_rollout")
ATTRIBUTION_BASELINES = ("train_mean", "zeros")
MATRIX_CHOICES_DOC = "auto, X, raw or layer:<name>"
MODALITIES = ("rna", "atac")
NORMALIZE_CHOICES = ("auto", "always", "never")
SCALE_CHOICES = ("standard", "none")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
WIDE_STARTS = ("logistic", "random")


def _f(default, param: str, help: str, **kw):
    """A dataclass field carrying its flat parameter name and help text."""
    return field(default=default, metadata={"param": param, "help": help, **kw})


@dataclass
class InputConfig:
    matrix: str = _f("auto", "matrix",
                     "Which matrix of an h5ad to use: auto (.raw when present, else X), X, raw or layer:<name>.")
    label_key: str | None = _f(None, "label_key", "Column of obs (or of the CSV) holding the class labels.")
    normalize: str = _f("auto", "normalize",
                        "normalize_total + log1p: auto (only when the matrix looks like counts), always, never.")
    min_class_size: int = _f(5, "min_class_size",
                             "Smallest number of cells a class needs for a stratified split.")
    modality: str = _f("rna", "modality",
                       "rna, or atac (peak/tile counts: binarised, then log TF-IDF; peak names kept).")
    genesets: str | None = _f(None, "genesets",
                              "GMT file: analyse AUCell gene-set activity per cell instead of single genes.")
    geneset_min_size: int = _f(5, "geneset_min_size",
                               "Gene sets with fewer genes found in the data are dropped (with a warning).")
    cluster: bool = _f(False, "cluster",
                       "No labels: use Leiden clusters (PCA for rna, iterative LSI for atac) as the classes.")
    cluster_resolution: float = _f(1.0, "cluster_resolution", "Leiden resolution for --cluster.")


@dataclass
class BackboneConfig:
    kind: str = _f("cnn", "backbone", f"Image model: {BACKBONE_KINDS_DOC}.")
    width: int = _f(32, "backbone_width", "Channels of the first convolution (CNNs) or embedding size (ViT).")
    dropout: float = _f(0.25, "dropout", "Dropout before the classifier head.")
    hidden: int = _f(256, "hidden", "Hidden units of the mlp backbone and of the VAE latent head.")
    patch_size: int = _f(4, "patch_size", "Patch size of the ViT backbone.")
    depth: int = _f(4, "vit_depth", "Transformer blocks of the ViT backbone.")
    heads: int = _f(4, "vit_heads", "Attention heads of the ViT backbone.")
    wide_start: str = _f("logistic", "wide_start",
                         "cnn: the wide (per-pixel linear) path starts at the penalised logistic-regression fit "
                         "of the pass's own training cells (C = 1, as the baseline) and stays fixed while the deep "
                         "path learns what it misses; random: trained from scratch with the deep path.")
    small_stem: bool = _f(True, "small_stem", "resnet18/timm: replace the 7x7 stride-2 stem for small images.")


@dataclass
class AugmentationConfig:
    noise_std: float = _f(0.0, "noise_std", "Gaussian noise (in standardised units) added to training images.")
    feature_dropout: float = _f(0.0, "feature_dropout", "Fraction of pixels zeroed at random in training images.")


@dataclass
class AttributionConfig:
    method: str = _f("integrated_gradients", "attribution",
                     "Attribution method: " + ", ".join(ATTRIBUTION_METHODS) + ".")
    baseline: str = _f("train_mean", "attribution_baseline",
                       "Reference image for path methods: train_mean (data-driven) or zeros.")
    n_steps: int = _f(32, "ig_steps", "Integration steps for integrated gradients.")
    internal_batch_size: int = _f(256, "internal_batch_size", "Bounds attribution memory (images per forward).")
    max_samples: int = _f(512, "attribution_max_samples",
                          "At most this many held-out cells are attributed per pass (stratified).")
    occlusion_window: int = _f(1, "occlusion_window", "Side of the occlusion window in pixels.")


@dataclass
class RunConfig:
    seed: int = _f(0, "seed", "Seed of every random choice; pass t uses seed + t for its arrangement.")
    passes: int = _f(10, "passes", "Number of accepted passes (arrangements) to accumulate.")
    max_tries: int = _f(0, "max_tries", "Most passes to try before giving up; 0 means 2 x passes.")
    epochs: int = _f(60, "epochs", "Maximum training epochs per pass.")
    min_epochs: int = _f(10, "min_epochs", "Early stopping never fires before this epoch.")
    patience: int = _f(8, "patience", "Epochs without validation-loss improvement before stopping.")
    min_delta: float = _f(1e-3, "min_delta", "Smallest validation-loss decrease that counts as improvement.")
    batch_size: int = _f(64, "batch_size", "Training batch size.")
    label_smoothing: float = _f(0.0, "label_smoothing",
                                "Label smoothing of the training loss (the validation loss stays plain cross-entropy).")
    learning_rate: float = _f(2e-3, "learning_rate", "AdamW learning rate.")
    weight_decay: float = _f(1e-2, "weight_decay", "AdamW weight decay.")
    test_fraction: float = _f(0.2, "test_fraction", "Held-out fraction (fixed stratified split, from seed).")
    val_fraction: float = _f(0.1, "val_fraction", "Validation fraction of the training cells, for early stopping.")
    rotate_validation: bool = _f(True, "rotate_validation",
                                 "Pass t validates on fold t mod round(1/val_fraction) of the non-held-out cells "
                                 "and trains on the rest, so the passes together learn from every one of them; "
                                 "off: one fixed validation set for all passes.")
    min_accuracy: float = _f(0.0, "min_accuracy",
                             "Gate: a pass is accepted when its held-out accuracy is at least this "
                             "and above the majority-class rate.")
    top_k: int = _f(50, "top_k", "Size of the per-pass top set for selection frequency.")
    scale: str = _f("standard", "scale", "Per-feature scaling fitted on training cells: standard or none.")
    device: str = _f("auto", "device", "auto (cuda when present, else cpu), cpu or cuda.")
    passes_per_step: int = _f(4, "passes_per_step",
                              "Arrangements trained together in one stacked model (cnn, cnn_small, linear, mlp); 1 = one at a time.")
    threads: int = _f(0, "threads", "CPU threads for torch; 0 leaves torch's default.")


INTERACTION_STEPS = ("interactions", "train", "accumulate", "report")


@dataclass
class InteractionConfig:
    """The pair screen (``deepmapper.interactions``) and how the model uses its pairs."""

    enabled: bool = _f(True, "interactions",
                       "Screen gene pairs whose co-variation differs between classes (training cells only, "
                       "within-class standardised, permutation-calibrated), place the screened pairs in adjacent "
                       "pixels and give the cnn their products as a second input channel.",
                       steps=INTERACTION_STEPS)
    q_threshold: float = _f(0.05, "interaction_q",
                            "Pairs with a screen q-value (Benjamini-Hochberg over all pairs and classes, "
                            "permutation p-values) below this are used by the model and reported.",
                            min=0.0, max=1.0, steps=INTERACTION_STEPS)
    max_pairs: int = _f(32, "interaction_max_pairs",
                        "At most this many screened pairs are placed side by side (best first; each gene in "
                        "one placed pair).", min=1, steps=INTERACTION_STEPS)
    max_features: int = _f(2000, "interaction_max_features",
                           "The screen tests the pairs among at most this many features (the most variable of "
                           "those detected in enough cells; label-free). Cost grows with its square.",
                           min=2, steps=INTERACTION_STEPS)
    min_detected: float = _f(0.1, "interaction_min_detected",
                             "A feature enters the screen only when non-zero in at least this fraction of the "
                             "screened cells (rare features make spurious pairs).",
                             min=0.0, max=1.0, steps=INTERACTION_STEPS)
    permutations: int = _f(20, "interaction_permutations",
                           "Label permutations calibrating the screen; at least 1 / interaction_q, or no pair "
                           "can pass.", min=1, steps=INTERACTION_STEPS)
    max_cells: int = _f(20000, "interaction_max_cells",
                        "The screen uses at most this many training cells (a stratified, seeded sample).",
                        min=10, steps=INTERACTION_STEPS)
    pair_channel: bool = _f(True, "pair_channel",
                            "cnn: a second, fixed input channel holds the standardised product of each placed "
                            "pair (at the pair's left pixel); off: the arrangement only.",
                            steps=("train",))


@dataclass
class Config:
    input: InputConfig = field(default_factory=InputConfig)
    run: RunConfig = field(default_factory=RunConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    interactions: InteractionConfig = field(default_factory=InteractionConfig)

    # -- views ---------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """{param name: value} for every field (the CLI / Nextflow view)."""
        out = {}
        for sec, f in iter_fields():
            out[f.metadata["param"]] = getattr(getattr(self, sec), f.name)
        return out

    def effective_max_tries(self) -> int:
        return self.run.max_tries or 2 * self.run.passes

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict | None, *, where: str | None = None) -> "Config":
        cfg = cls()
        data = data or {}
        if not isinstance(data, dict):
            raise ConfigError("the configuration must be a mapping of sections", where=where,
                              fix="write sections like 'run:', 'backbone:' at the top level.")
        sections = {f.name for f in dataclasses.fields(cls)}
        for sec, values in data.items():
            if sec not in sections:
                raise ConfigError(f"unknown section '{sec}'", where=where, field=sec,
                                  fix=f"use one of: {', '.join(sorted(sections))}.")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError("a section must be a mapping", where=where, field=sec)
            target = getattr(cfg, sec)
            names = {f.name: f for f in dataclasses.fields(target)}
            for key, value in values.items():
                if key not in names:
                    raise ConfigError(f"unknown key '{key}'", where=where, field=f"{sec}.{key}",
                                      fix=f"use one of: {', '.join(sorted(names))}.")
                setattr(target, key, _coerce(value, names[key], where, f"{sec}.{key}"))
        cfg.validate(where=where)
        return cfg

    def with_params(self, params: dict[str, Any], *, where: str = "command line") -> "Config":
        """A copy with flat params (``epochs=5``) applied; None values are ignored."""
        data = self.to_dict()
        lookup = {f.metadata["param"]: (sec, f) for sec, f in iter_fields()}
        for key, value in params.items():
            if value is None:
                continue
            if key not in lookup:
                raise ConfigError(f"unknown parameter '{key}'", where=where, field=key)
            sec, f = lookup[key]
            data[sec][f.name] = value
        # Lowering only --epochs should not trip over the *default* min_epochs: clamp the default
        # (a min_epochs the user set explicitly above epochs is still an error).
        run, default_min = data["run"], RunConfig().min_epochs
        if params.get("epochs") is not None and params.get("min_epochs") is None \
                and run["min_epochs"] == default_min and isinstance(run["epochs"], int) \
                and run["epochs"] < default_min:
            run["min_epochs"] = run["epochs"]
        return Config.from_dict(data, where=where)

    def validate(self, *, where: str | None = None) -> None:
        r, b, a, au, i = self.run, self.backbone, self.attribution, self.augmentation, self.input

        def bad(fieldname: str, problem: str, fix: str):
            raise ConfigError(problem, where=where or "configuration", field=fieldname, fix=fix)

        for name in ("passes", "epochs", "batch_size", "top_k", "passes_per_step"):
            if getattr(r, name) < 1:
                bad(f"run.{name}", f"must be at least 1 (got {getattr(r, name)})", f"set run.{name} >= 1.")
        if r.seed < 0 or r.max_tries < 0:
            bad("run.seed", "seed and max_tries must be >= 0", "use a non-negative seed (and 0 for 2 x passes tries).")
        if r.max_tries and r.max_tries < r.passes:
            bad("run.max_tries", f"max_tries ({r.max_tries}) is smaller than passes ({r.passes})",
                "set max_tries >= passes, or 0 for 2 x passes.")
        if r.min_epochs < 0 or r.min_epochs > r.epochs:
            bad("run.min_epochs", f"min_epochs ({r.min_epochs}) must lie in 0..epochs ({r.epochs}), "
                "otherwise early stopping can never fire",
                "lower min_epochs or raise epochs.")
        if r.patience < 1:
            bad("run.patience", "patience must be at least 1", "set patience >= 1.")
        if r.min_delta < 0:
            bad("run.min_delta", "min_delta must be >= 0", "set min_delta >= 0.")
        for name in ("test_fraction", "val_fraction"):
            v = getattr(r, name)
            if not 0.0 < v < 0.9:
                bad(f"run.{name}", f"{name} must lie in (0, 0.9) (got {v})", f"set {name} to e.g. 0.2.")
        if not 0.0 <= r.min_accuracy <= 1.0:
            bad("run.min_accuracy", f"must lie in [0, 1] (got {r.min_accuracy})", "set e.g. 0.5.")
        if not 0.0 <= r.label_smoothing < 1.0:
            bad("run.label_smoothing", f"must lie in [0, 1) (got {r.label_smoothing})", "use e.g. 0.1, or 0 for none.")
        if r.learning_rate <= 0 or r.weight_decay < 0:
            bad("run.learning_rate", "learning_rate must be > 0 and weight_decay >= 0", "use e.g. 2e-3 and 1e-2.")
        if r.scale not in SCALE_CHOICES:
            bad("run.scale", f"unknown scale '{r.scale}'", f"use one of {', '.join(SCALE_CHOICES)}.")
        if r.device not in DEVICE_CHOICES:
            bad("run.device", f"unknown device '{r.device}'", f"use one of {', '.join(DEVICE_CHOICES)}.")
        if r.threads < 0:
            bad("run.threads", "threads must be >= 0", "set 0 for torch's default.")
        from .backbones import KINDS  # light: torch is imported only when a model is built

        if b.kind not in KINDS and not (b.kind.startswith("timm:") and len(b.kind) > 5):
            bad("backbone.kind", f"unknown backbone '{b.kind}'", f"use one of: {BACKBONE_KINDS_DOC}.")
        if b.width < 1 or b.hidden < 1 or b.patch_size < 1 or b.depth < 1 or b.heads < 1:
            bad("backbone", "width, hidden, patch_size, depth and heads must be >= 1", "use positive sizes.")
        if b.wide_start not in WIDE_STARTS:
            bad("backbone.wide_start", f"unknown wide_start '{b.wide_start}'", f"use one of {', '.join(WIDE_STARTS)}.")
        if not 0.0 <= b.dropout < 1.0:
            bad("backbone.dropout", f"dropout must lie in [0, 1) (got {b.dropout})", "use e.g. 0.25.")
        if au.noise_std < 0 or not 0.0 <= au.feature_dropout < 1.0:
            bad("augmentation", "noise_std must be >= 0 and feature_dropout in [0, 1)", "use e.g. 0.05 and 0.05.")
        if a.method not in ATTRIBUTION_METHODS:
            bad("attribution.method", f"unknown attribution method '{a.method}'",
                f"use one of {', '.join(ATTRIBUTION_METHODS)}.")
        if a.baseline not in ATTRIBUTION_BASELINES:
            bad("attribution.baseline", f"unknown baseline '{a.baseline}'",
                f"use one of {', '.join(ATTRIBUTION_BASELINES)}.")
        if a.n_steps < 2 or a.internal_batch_size < 1 or a.max_samples < 1 or a.occlusion_window < 1:
            bad("attribution", "n_steps must be >= 2; internal_batch_size, max_samples, occlusion_window >= 1",
                "use the defaults.")
        if i.normalize not in NORMALIZE_CHOICES:
            bad("input.normalize", f"unknown normalize '{i.normalize}'",
                f"use one of {', '.join(NORMALIZE_CHOICES)}.")
        if not (i.matrix in ("auto", "X", "raw") or i.matrix.startswith("layer:")):
            bad("input.matrix", f"unknown matrix '{i.matrix}'", f"use one of {MATRIX_CHOICES_DOC}.")
        if i.modality not in MODALITIES:
            bad("input.modality", f"unknown modality '{i.modality}'", f"use one of {', '.join(MODALITIES)}.")
        if i.geneset_min_size < 1 or i.cluster_resolution <= 0:
            bad("input", "geneset_min_size must be >= 1 and cluster_resolution > 0", "use the defaults (5, 1.0).")
        if i.min_class_size < 2:
            bad("input.min_class_size", "min_class_size must be >= 2", "set it to at least 2.")
        ix = self.interactions
        if not 0.0 < ix.q_threshold < 1.0:
            bad("interactions.q_threshold", f"interaction_q must lie in (0, 1) (got {ix.q_threshold})",
                "use e.g. 0.05.")
        if ix.max_features < 2:
            bad("interactions.max_features", f"interaction_max_features must be at least 2 (got {ix.max_features})",
                "a pair needs two features: use e.g. 2000.")
        if ix.max_pairs < 1 or ix.max_cells < 10:
            bad("interactions.max_pairs", "interaction_max_pairs must be >= 1 and interaction_max_cells >= 10",
                "use the defaults (32, 20000).")
        if not 0.0 <= ix.min_detected < 1.0:
            bad("interactions.min_detected", f"interaction_min_detected must lie in [0, 1) (got {ix.min_detected})",
                "use e.g. 0.1.")
        if ix.permutations < 1 or ix.permutations * ix.q_threshold < 1.0 - 1e-9:
            bad("interactions.permutations",
                f"{ix.permutations} permutations cannot give any pair q < {ix.q_threshold} "
                "(the smallest permutation p-value times the number of pairs is about 1 / permutations)",
                f"set interaction_permutations >= {math.ceil(1.0 / ix.q_threshold - 1e-9)}.")


def iter_fields():
    """(section name, dataclass field) for every configurable field, in a stable order."""
    for sec in dataclasses.fields(Config):
        for f in dataclasses.fields(sec.default_factory()):
            yield sec.name, f


def defaults_flat() -> dict[str, Any]:
    return Config().flat()


def param_help() -> dict[str, str]:
    return {f.metadata["param"]: f.metadata["help"] for _, f in iter_fields()}


def _coerce(value, f: dataclasses.Field, where, fieldname):
    """Check and convert a YAML/CLI value to the field's type."""
    default = f.default
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if value is None:
            if "None" in typ:
                return None
            raise TypeError
        if isinstance(default, bool) or typ == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            raise TypeError
        if isinstance(default, int) or typ == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(default, float) or typ == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"value {value!r} is not of type {typ}", where=where, field=fieldname,
                          fix=f"give a {typ} (default {default!r}).") from None


# -- YAML ------------------------------------------------------------------------

def load_yaml(path: str | Path) -> Config:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", where=str(path), fix="check the path given to --config.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"not valid YAML{at}", where=str(path), fix="fix the YAML syntax.") from None
    return Config.from_dict(data, where=str(path))


def dump_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
