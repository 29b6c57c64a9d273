"""The pass file: everything accumulate, evaluate and report need from one pass.

One ``pass_NNN.npz`` per pass (NNN = pass index, zero-padded to 3+ digits). It is
a numpy ``.npz`` (no pickle) holding arrays plus a JSON ``meta`` string, so it
is self-describing and versioned; :func:`read_pass` checks the format name and
version and says clearly what is wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import FormatError

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
    meta: dict = field(default_factory=dict)  # backbone, attribution method, device, config, timing
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
_OPTIONAL_ARRAYS = ("pairs", "pair_importance", "pair_class_importance")
_SCALARS = ("pass_index", "seed", "accuracy", "accepted", "stop_epoch", "best_epoch", "early_stopped",
            "classes", "features_sha256", "dataset_sha256")


def pass_filename(pass_index: int) -> str:
    return f"pass_{pass_index:03d}.npz"


def write_pass(result: PassResult, outdir: str | Path) -> Path:
    target = Path(outdir) / pass_filename(result.pass_index)
    header = {"format": FORMAT, "version": VERSION}
    header.update({k: _plain(getattr(result, k)) for k in _SCALARS})
    header["meta"] = result.meta
    arrays = {k: np.asarray(getattr(result, k)) for k in _ARRAYS + _OPTIONAL_ARRAYS}
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
                                **arrays)
    return target


def read_pass(path: str | Path) -> PassResult:
    path = Path(path)
    if not path.is_file():
        raise FormatError("pass file not found", where=str(path), fix="check the path, or rerun train-pass.")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            arrays = {k: data[k] for k in _ARRAYS}
            arrays.update({k: data[k] for k in _OPTIONAL_ARRAYS if k in data.files})
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise FormatError(f"not a readable DeepMapper pass file ({exc.__class__.__name__})", where=str(path),
                          fix="rerun the train-pass step that wrote it.") from None
    if header.get("format") != FORMAT:
        raise FormatError(f"format is {header.get('format')!r}, expected {FORMAT!r}", where=str(path),
                          field="format", fix="pass files written by 'deepmapper train-pass'.")
    if header.get("version") != VERSION:
        raise FormatError(f"pass file version {header.get('version')} but this DeepMapper reads version {VERSION}",
                          where=str(path), field="version",
                          fix="rerun train-pass with this version of DeepMapper.")
    return PassResult(meta=header.get("meta", {}), **{k: header[k] for k in _SCALARS}, **arrays)


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v
