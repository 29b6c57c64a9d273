"""The pass file: everything accumulate, evaluate and report need from one pass.

One ``pass_NNN.npz`` per pass (NNN = pass index, zero-padded to 3+ digits). It is
a numpy ``.npz`` (no pickle) holding arrays plus a JSON ``header`` (scalars and
``meta``), so it is self-describing and versioned.

:func:`read_pass` checks the container (empty, truncated, not a zip), the format
name and version, the fields, the shapes and that every value is finite, and says
in one line which file, which field and what to do. Whether several passes belong
together (same dataset, classes, split and settings) is checked where they are
combined: :func:`deepmapper.results.findings.read_passes`, with :func:`identity` and
:func:`binding_config` here.

Extending the format: a new optional array is a new ``PassResult`` field whose
default is ``None``; :func:`write_pass` stores every array-valued field and
:func:`read_pass` reads back every stored array that names a field, so older
files (without it) still read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepmapper._utils.atomic import atomic_path
from deepmapper.errors import FormatError

FORMAT = "deepmapper-pass"
VERSION = 1


@dataclass
class PassResult:
    pass_index: int
    seed: int                                # arrangement seed (= run seed + pass_index)
    accuracy: float                          # held-out accuracy
    accepted: bool                           # passed the gate
    stop_epoch: int                          # epochs actually run (early stop epoch, or max)
    best_epoch: int                          # epoch whose weights were restored
    early_stopped: bool
    importance: np.ndarray                   # (n_features,) mean |attribution| over attributed cells
    class_importance: np.ndarray             # (n_classes, n_features) mean signed attribution, own class
    train_loss: np.ndarray                   # (epochs run,)
    val_loss: np.ndarray                     # (epochs run,)
    heldout_index: np.ndarray                # (n_heldout,) row indices into the dataset
    heldout_proba: np.ndarray                # (n_heldout, n_classes) softmax of the restored model
    classes: list[str] = field(default_factory=list)
    features_sha256: str = ""                # identity of the feature list the pass was run on
    dataset_sha256: str = ""
    meta: dict = field(default_factory=dict)  # backbone, attribution, device, config, timing; from the
    #                                           runner also label_key, split_sha256, dataset (identity)
    # screened pairs the pass placed side by side (feature indices) and, with the pair channel, the
    # mean |attribution| of each pair's product and its mean signed attribution per class (own cells).
    # Optional: pass files without them read as "no pairs".
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    pair_importance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    pair_class_importance: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    @property
    def n_features(self) -> int:
        return int(self.importance.shape[0])


_ARRAYS = ("importance", "class_importance", "train_loss", "val_loss", "heldout_index", "heldout_proba")
_SCALARS = ("pass_index", "seed", "accuracy", "accepted", "stop_epoch", "best_epoch", "early_stopped",
            "classes", "features_sha256", "dataset_sha256")
_FIELDS = {f.name for f in dataclasses.fields(PassResult)}
# Run settings that may differ between passes that are accumulated together: they decide how many
# passes run, where and how fast, or how passes are combined afterwards, not what one pass computes.
# The input section is covered by the dataset identity (checksum, label column, matrix).
NON_BINDING = {"input": None, "run": {"passes", "max_tries", "threads", "device", "passes_per_step", "top_k"}}
_FIX_RETRAIN = "rerun the train-pass step that wrote it (or 'deepmapper run --resume', which retrains it)."


def pass_filename(pass_index: int) -> str:
    return f"pass_{pass_index:03d}.npz"


def write_pass(result: PassResult, outdir: str | Path) -> Path:
    target = Path(outdir) / pass_filename(result.pass_index)
    header = {"format": FORMAT, "version": VERSION}
    header.update({k: _plain(getattr(result, k)) for k in _SCALARS})
    header["meta"] = result.meta
    arrays = {k: np.asarray(getattr(result, k)) for k in _ARRAYS}
    for f in dataclasses.fields(result):            # optional arrays added by later versions
        value = getattr(result, f.name)
        if f.name not in arrays and isinstance(value, np.ndarray):
            arrays[f.name] = value
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
                                **arrays)
    return target


def read_pass(path: str | Path) -> PassResult:
    """Read and check one pass file; every problem is one FormatError naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FormatError("pass file not found", where=str(path), fix="check the path, or rerun train-pass.")
    size = path.stat().st_size
    if size == 0:
        raise FormatError("the pass file is empty (0 bytes; its writer was stopped?)", where=str(path),
                          field="file", fix=_FIX_RETRAIN)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            zip_magic = fh.read(4) == b"PK\x03\x04"
        problem = (f"the pass file is truncated or damaged ({size} bytes, no zip directory)" if zip_magic
                   else "not a DeepMapper pass file (not an .npz zip archive)")
        raise FormatError(problem, where=str(path), field="file", fix=_FIX_RETRAIN)
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            if "header" not in names:
                raise FormatError("no 'header' member: not a DeepMapper pass file", where=str(path),
                                  field="header", fix=_FIX_RETRAIN)
            header = json.loads(bytes(data["header"]).decode())
            missing = [k for k in _ARRAYS if k not in names]
            if missing:
                raise FormatError(f"array '{missing[0]}' is missing", where=str(path), field=missing[0],
                                  fix=_FIX_RETRAIN)
            arrays = {k: data[k] for k in sorted(names) if k != "header" and k in _FIELDS and k not in _SCALARS}
    except FormatError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError) as exc:
        raise FormatError(f"the pass file is truncated or damaged ({exc.__class__.__name__})", where=str(path),
                          field="file", fix=_FIX_RETRAIN) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else None
        raise FormatError(f"format is {got!r}, expected {FORMAT!r}", where=str(path),
                          field="format", fix="pass files written by 'deepmapper train-pass'.")
    if header.get("version") != VERSION:
        raise FormatError(f"pass file version {header.get('version')} but this DeepMapper reads version {VERSION}",
                          where=str(path), field="version",
                          fix="rerun train-pass with this version of DeepMapper.")
    missing = [k for k in _SCALARS if k not in header]
    if missing:
        raise FormatError(f"header field '{missing[0]}' is missing", where=str(path), field=missing[0],
                          fix=_FIX_RETRAIN)
    result = PassResult(meta=header.get("meta", {}) or {}, **{k: header[k] for k in _SCALARS}, **arrays)
    verify(result, where=str(path))
    return result


def verify(p: PassResult, *, where: str) -> None:
    """Shapes that agree with each other, integer indices, finite values (every float array)."""
    def bad(fld, problem):
        raise FormatError(problem, where=where, field=fld, fix=_FIX_RETRAIN)

    n_classes = len(p.classes)
    if p.importance.ndim != 1 or p.importance.size == 0:
        bad("importance", f"shape {p.importance.shape}, expected (n_features,)")
    n_feat = p.importance.shape[0]
    if p.class_importance.shape != (n_classes, n_feat):
        bad("class_importance", f"shape {p.class_importance.shape}, expected ({n_classes}, {n_feat}) "
                                "(classes x features)")
    if p.heldout_index.ndim != 1 or not np.issubdtype(p.heldout_index.dtype, np.integer) \
            or (p.heldout_index.size and p.heldout_index.min() < 0):
        bad("heldout_index", "expected non-negative integer row indices")
    if p.heldout_proba.shape != (p.heldout_index.shape[0], n_classes):
        bad("heldout_proba", f"shape {p.heldout_proba.shape}, expected ({p.heldout_index.shape[0]}, {n_classes})")
    for name in sorted(_float_fields(p)):
        arr = getattr(p, name)
        finite = np.isfinite(arr)
        if not finite.all():
            n = int((~finite).sum())
            bad(name, f"{n} value(s) are NaN or infinite (pass {p.pass_index}; a diverged model?)")
    if not np.isfinite(float(p.accuracy)) or not 0.0 <= float(p.accuracy) <= 1.0:
        bad("accuracy", f"accuracy {p.accuracy!r} is not in [0, 1]")


def _float_fields(p: PassResult) -> set[str]:
    return {f.name for f in dataclasses.fields(p)
            if isinstance(getattr(p, f.name), np.ndarray) and np.issubdtype(getattr(p, f.name).dtype, np.floating)}


def binding_config(config: dict | None) -> dict:
    """The part of a pass's recorded config that passes combined together must share."""
    out = {}
    for sec, values in (config or {}).items():
        skip = NON_BINDING.get(sec, set())
        if skip is None or not isinstance(values, dict):
            continue
        out[sec] = {k: v for k, v in values.items() if k not in skip}
    return out


def array_sha256(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a, dtype=np.int64))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def identity(p: PassResult) -> dict:
    """What passes accumulated together must agree on, field by field (None: not recorded)."""
    return {
        "features_sha256": p.features_sha256 or None,
        "dataset_sha256": p.dataset_sha256 or None,
        "dataset": p.meta.get("dataset"),
        "label_key": p.meta.get("label_key"),
        "classes": list(p.classes),
        "seed": int(p.seed) - int(p.pass_index),          # the run seed: it fixes the split
        "split_sha256": p.meta.get("split_sha256"),
        "heldout_index": array_sha256(p.heldout_index),
        "backbone": p.meta.get("backbone"),
        "attribution": p.meta.get("attribution"),
        "config": binding_config(p.meta.get("config")) or None,
    }


def first_difference(a, b, prefix: str = "") -> str:
    """'run.epochs (3 vs 4)': the first key where two nested values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')} ({_short(a)} vs {_short(b)})".lstrip()


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v
