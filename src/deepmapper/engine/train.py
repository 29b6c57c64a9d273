"""One pass, or a group of passes trained together, end to end.

A pass = arrangement (seeded permutation) -> fit with early stopping on the
fixed split -> held-out accuracy -> gate -> attribution -> back-projection to
features. Passes of a stackable backbone (``backbones.stackable``) are trained
``passes_per_step`` at a time as one stacked model (parameters stacked per
member, grouped convolutions, batched matrix products): every member sees the
same batches, has its own arrangement, initial weights, augmentation and
dropout stream (its own generator), optimizer state and early stopping, so the
result equals training the passes one by one (within floating-point
tolerance) while each step does K times the work in one call. Attribution of
the members is batched the same way. See docs/performance.md for the measured
choices (micro-batches, channels-last, chunk sizes).

Randomness: the split and the batch order come from the run seed; pass ``t``
draws its arrangement, weight init and augmentation from ``seed + t``.

This module keeps the loop (set-up, epochs with early stopping, held-out prediction, pass
results); its parts live beside it: the stacked model and its optimiser in
:mod:`deepmapper.model.stacked`, the images in :mod:`deepmapper.model.imager`, the wide path's
logistic start in :mod:`deepmapper.engine.wide_start`, the group's attribution in
:mod:`deepmapper.engine.attribute`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from deepmapper.model import transform
from deepmapper.engine.accumulate import gate
from deepmapper.config import Config
from deepmapper.engine.data import PreparedData
from deepmapper.engine.earlystop import EarlyStopping
from deepmapper.engine.attribute import attribute_members, attribution_cells
from deepmapper.engine.passfile import PassResult
from deepmapper.engine.wide_start import logistic_wide_start
from deepmapper.model.imager import Imager, augment
from deepmapper.model.stacked import (CHANNELS_LAST_SIDE, EVAL_BYTES, MICRO_BATCH_BYTES, AdamW, Single, Stacked,
                                      chunk_size)

log = logging.getLogger(__name__)

EVAL_BATCH = 512                 # no-grad chunk where activation size is not known (GPU, other kinds)


from deepmapper.device import select_device  # noqa: E402,F401  (the device choice lives in device.py)


def group_passes(pass_indices: list[int], cfg: Config) -> list[list[int]]:
    """Chunks of passes trained together: ``passes_per_step`` for stackable backbones, else 1."""
    from deepmapper.model import backbones

    size = cfg.run.passes_per_step if backbones.kind_info(cfg.backbone.kind).stackable else 1
    return [list(pass_indices[i:i + size]) for i in range(0, len(pass_indices), size)]


def block_groups(groups: list[list[int]], data: PreparedData) -> list[list[int]]:
    """Each group split so that its passes train on the same block of cells (``data.pass_pool``): a
    stacked step runs every member on every cell of the batch, so members of different blocks would
    pay for each other's cells. Without the cap binding the groups are returned as they are."""
    if data.n_blocks() == 1:
        return groups
    out = []
    for group in groups:
        by_block: dict = {}
        for t in group:
            by_block.setdefault(data.pass_block(t), []).append(t)
        out.extend(by_block.values())
    return out


def train_passes(data: PreparedData, cfg: Config, pass_indices: list[int], *, progress: bool = True,
                 device=None) -> list[PassResult]:
    from deepmapper.device import setup

    device = device or setup(cfg)
    results = []
    for group in block_groups(group_passes(list(pass_indices), cfg), data):
        results.extend(train_group(data, cfg, group, device=device, progress=progress))
    return results


@dataclass
class _MemberState:
    pass_index: int
    perm: np.ndarray
    generator: object
    stopper: EarlyStopping
    best_state: dict | None = None
    train_loss: list | None = None
    done: bool = False
    pair_pixels: np.ndarray | None = None     # left pixel of each placed pair (M,)
    pair_start: bool | None = None            # the logistic start kept the pair products (validation)


class _Feeder:
    """Scaled feature rows of given cells as a tensor on the device (pinned, non-blocking on GPU)."""

    def __init__(self, data: PreparedData, device):
        self.data, self.device = data, device
        self.pin = device.type == "cuda"

    def __call__(self, idx):
        import torch

        rows = torch.from_numpy(np.ascontiguousarray(self.data.rows(idx)))
        if self.pin:
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=self.pin)


def _autocast(device, on: bool = True):
    """Mixed precision on a CUDA GPU when ``on`` (``mixed_precision``; bf16 where supported, else
    fp16); CPU and MPS stay fp32, the reference."""
    import contextlib

    import torch

    if device.type != "cuda" or not on:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


# -- a group of passes, stage by stage ---------------------------------------------------

@dataclass
class _Group:
    """What the stages of :func:`train_group` share."""

    passes: list
    members: list
    net: object
    imager: Imager
    feed: _Feeder
    side: int
    channels: int
    trainable: list
    micro: int | None
    eval_chunk: int
    t0: float
    val_union: np.ndarray | None = None      # set by the fit: every member's validation cells
    in_val: np.ndarray | None = None


def pair_channels(data: PreparedData, cfg: Config) -> int:
    """2 when the model gets the pair channel (pairs placed, pair_channel on, a kind that takes it)."""
    from deepmapper.model import backbones

    ok = cfg.interactions.pair_channel and data.n_pairs > 0
    return 2 if ok and backbones.kind_info(cfg.backbone.kind).channels >= 2 else 1


def member_arrangement(data: PreparedData, seed: int) -> np.ndarray:
    """Pass arrangement: the placed pairs side by side (when any), everything else at random."""
    if data.n_pairs:
        return transform.pair_arrangement(data.n_features, data.pairs, seed)
    return transform.arrangement(data.n_features, seed)


def train_group(data: PreparedData, cfg: Config, group: list[int], *, device, progress: bool = True
                ) -> list[PassResult]:
    """Train passes ``group`` together: set up -> fit with early stopping -> held-out
    prediction -> attribution -> pass results. Each pass's result depends on its index only."""
    g = _setup_group(data, cfg, group, device)
    _fit_group(g, data, cfg, device, progress)
    return _finish_group(g, data, cfg, device)


def _setup_group(data: PreparedData, cfg: Config, group: list[int], device) -> _Group:
    """Members (arrangement, weights, generator, early stopping), the model, the wide path's start."""
    import torch

    from deepmapper.model import backbones

    t0 = time.perf_counter()
    r = cfg.run
    n_features, side = data.n_features, transform.square_side(data.n_features)
    info = backbones.kind_info(cfg.backbone.kind)
    channels = pair_channels(data, cfg)
    members, models = [], []
    for t in group:
        seed = r.seed + t
        torch.manual_seed(seed)                   # weight init of pass t
        models.append(backbones.build(cfg.backbone, data.n_classes, n_features, channels).to(device))
        perm = member_arrangement(data, seed)
        members.append(_MemberState(pass_index=t, perm=perm, generator=torch.Generator().manual_seed(seed),
                                    stopper=EarlyStopping(r.patience, r.min_delta, r.min_epochs), train_loss=[],
                                    pair_pixels=transform.pair_pixels(perm, data.pairs) if data.n_pairs else None))
    if info.stackable:
        net = Stacked(models, [m.generator for m in members], side, grouped=device.type == "cuda",
                       channels_last=device.type == "cpu" and side >= CHANNELS_LAST_SIDE, channels=channels,
                       wide_deep=info.wide)
    else:
        if len(models) != 1:
            raise ValueError(f"backbone {cfg.backbone.kind} is not stackable: train its passes one at a time")
        net = Single(models[0], side, channels)
    del models
    trainable = net.parameters()
    if net.stacked and info.wide and cfg.backbone.wide_start == "logistic":
        for m, kept in zip(members, logistic_wide_start(net, members, data, side, seed=r.seed, channels=channels)):
            m.pair_start = kept
        # fixed from here on: the deep path learns what the linear fit misses, and early
        # stopping decides how much of it to keep (a zero-initialised deep head measured no better)
        trainable = [p for name, p in net.params.items() if not name.startswith("wide.")]
        for name in ("wide.weight", "wide.bias"):
            net.params[name].requires_grad_(False)
    K = len(members)
    # Micro-batches only where no layer looks across the batch (stacked kinds have no BatchNorm).
    micro = chunk_size(net.act_elems, K, MICRO_BATCH_BYTES, device) if net.stacked else None
    eval_chunk = chunk_size(net.act_elems, K, EVAL_BYTES, device, floor=8) or EVAL_BATCH
    return _Group(passes=list(group), members=members, net=net, imager=Imager(data, members, side, channels, device),
                  feed=_Feeder(data, device), side=side, channels=channels, trainable=trainable, micro=micro,
                  eval_chunk=eval_chunk, t0=t0)


def _fit_group(g: _Group, data: PreparedData, cfg: Config, device, progress: bool) -> None:
    """Epochs over the shared batch order until every member's early stopping fired; every member
    then continues with its best epoch's weights."""
    import torch
    import torch.nn.functional as F

    from deepmapper._utils.progress import Progress

    r, net, members, feed, imager = cfg.run, g.net, g.members, g.feed, g.imager
    K = len(members)
    optimizer = AdamW(g.trainable, lr=r.learning_rate, weight_decay=r.weight_decay)
    y_all = torch.as_tensor(data.codes, device=device)

    # Each member trains and validates on its own cells (rotating validation folds). The
    # batches run over every cell any pass may train on, whatever the group, and a (K, cells)
    # weight keeps each member to its own: so a pass trains the same alone or stacked.
    cells = [data.pass_cells(m.pass_index) for m in members]
    # the whole training pool, or the members' shared block of it when max_cells_per_pass binds
    train_pool = data.pass_pool(members[0].pass_index)
    if len({data.pass_block(m.pass_index) for m in members}) > 1:
        raise ValueError("passes of one group must share their block of cells (train.block_groups)")
    val_union = np.unique(np.concatenate([c[1] for c in cells]))
    in_train = np.zeros((K, len(data.codes)), np.float32)
    in_val = np.zeros((K, len(data.codes)), np.float32)
    for k, (tr, va) in enumerate(cells):
        in_train[k, tr], in_val[k, va] = 1.0, 1.0
    in_train_t, in_val_t = torch.as_tensor(in_train, device=device), torch.as_tensor(in_val, device=device)
    n_train_k = torch.as_tensor(in_train.sum(1), device=device)

    def val_losses() -> np.ndarray:
        net.train(False)
        total = torch.zeros(K, device=device)
        with torch.no_grad(), _autocast(device, r.mixed_precision):
            for i in range(0, len(val_union), g.eval_chunk):
                sel = val_union[i:i + g.eval_chunk]
                logits = net.forward(imager(feed(sel))).float()
                total += (F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_all[sel].repeat(K),
                                          reduction="none").view(K, -1) * in_val_t[:, sel]).sum(1)
        return (total / in_val_t.sum(1).clamp_min(1.0)).cpu().numpy()

    label = f"passes {g.passes[0]}-{g.passes[-1]}" if K > 1 else f"pass {g.passes[0]}"
    bar = Progress(r.epochs, f"training {label}", "epoch", enabled=progress, upper_bound=True)
    for epoch in range(1, r.epochs + 1):
        net.train(True)
        order = np.random.default_rng([r.seed, epoch]).permutation(train_pool)  # shared batch order
        epoch_loss = torch.zeros(K, device=device)
        for i in range(0, len(order), r.batch_size):
            sel = order[i:i + r.batch_size]
            n = len(sel)
            weight = in_train_t[:, sel]                                  # (K, n): 1 where the cell is k's
            denom = weight.sum(1).clamp_min(1.0)
            images = augment(imager(feed(sel)), members, cfg, g.channels)
            masks = net.masks(n, device)
            y = y_all[sel]
            optimizer.zero_grad(set_to_none=True)
            step = g.micro or n
            for j in range(0, n, step):
                # Gradients of the micro-batches add up to the full batch's: the step is unchanged.
                part = {name: mk[:, j:j + step] for name, mk in masks.items()}
                with _autocast(device, r.mixed_precision):
                    logits = net.forward(images[j:j + step], part)
                ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y[j:j + step].repeat(K),
                                     reduction="none", label_smoothing=r.label_smoothing,
                                     ).view(K, -1) * weight[:, j:j + step]
                per_member = ce.sum(1) / denom
                loss = per_member.sum()           # members share no parameters: gradients stay separate
                aux = net.aux_loss()
                if aux is not None:
                    loss = loss + aux
                loss.backward()
                epoch_loss += ce.detach().sum(1)
            optimizer.step()
        train_l = (epoch_loss / n_train_k.clamp_min(1.0)).cpu().numpy()
        val_l = val_losses()
        for k, m in enumerate(members):
            if m.done:
                continue
            m.train_loss.append(float(train_l[k]))
            stop = m.stopper.step(float(val_l[k]))
            if m.stopper.improved:
                m.best_state = net.snapshot(k)
            m.done = stop
        bar.update(1, train_loss=round(float(np.mean(train_l)), 4), val_loss=round(float(np.mean(val_l)), 4))
        if all(m.done for m in members):
            break
    bar.close()
    del optimizer
    # Every member continues with its best epoch's weights (restore-best-weights).
    net.load([m.best_state if m.best_state is not None else net.snapshot(k) for k, m in enumerate(members)])
    net.train(False)
    g.val_union, g.in_val = val_union, in_val


def _finish_group(g: _Group, data: PreparedData, cfg: Config, device) -> list[PassResult]:
    """Held-out prediction, the restore check, attribution and back-projection: the pass results."""
    r, net, members = cfg.run, g.net, g.members
    K = len(members)
    test = data.split.test
    proba = _predict_stacked(net, g.feed, test, g.imager, g.eval_chunk, device, r.mixed_precision)  # (K, N, C)
    # Validation loss of the weights actually used: equals the best epoch's (a restore check).
    val_union, in_val = g.val_union, g.in_val
    val_proba = _predict_stacked(net, g.feed, val_union, g.imager, g.eval_chunk, device, r.mixed_precision)
    val_nll = -np.log(np.clip(val_proba[:, np.arange(len(val_union)), data.codes[val_union]], 1e-12, None))
    restored_val_loss = (val_nll * in_val[:, val_union]).sum(1) / np.maximum(in_val[:, val_union].sum(1), 1.0)
    attr_idx = attribution_cells(data, cfg)
    pixel_attr = attribute_members(net, g, data, cfg, attr_idx, device)      # (N, K, channels, P)
    codes = data.codes[attr_idx]
    onehot = np.zeros((data.n_classes, len(attr_idx)))
    onehot[codes, np.arange(len(attr_idx))] = 1.0
    counts = np.maximum(onehot.sum(1, keepdims=True), 1.0)

    results = []
    for k, m in enumerate(members):
        predicted = proba[k].argmax(1)
        accuracy = float((predicted == data.codes[test]).mean())
        score, chance = data.gate_score(predicted)
        accepted = gate(score, min_accuracy=r.min_accuracy, majority_rate=chance)
        # back-projection: one gather through the inverse arrangement (feature j sits at pixel inv[j])
        feat_attr = pixel_attr[:, k, 0, transform.inverse(m.perm)].astype(np.float64)
        importance = np.abs(feat_attr).mean(axis=0)
        class_imp = (onehot @ feat_attr) / counts      # mean signed attribution over each class's cells
        pairs = data.pairs if data.n_pairs else np.zeros((0, 2), np.int64)
        pair_imp = np.zeros(len(pairs))
        pair_class_imp = np.zeros((data.n_classes, len(pairs)))
        if g.channels == 2:
            # a pair's product-channel attribution is credited in full to both of its genes
            pair_attr = pixel_attr[:, k, 1, m.pair_pixels].astype(np.float64)          # (N, M)
            pair_imp = np.abs(pair_attr).mean(axis=0)
            pair_class_imp = (onehot @ pair_attr) / counts
            for col in (0, 1):
                np.add.at(importance, pairs[:, col], pair_imp)
                np.add.at(class_imp, (slice(None), pairs[:, col]), pair_class_imp)
        stopper = m.stopper
        extra = {} if data.samples is None else {"train_samples": _train_samples(data, m.pass_index)}
        results.append(PassResult(
            pass_index=m.pass_index, seed=r.seed + m.pass_index, accuracy=accuracy, accepted=accepted,
            stop_epoch=stopper.epochs_run, best_epoch=stopper.best_epoch, early_stopped=stopper.fired,
            importance=importance.astype(np.float32), class_importance=class_imp.astype(np.float32),
            train_loss=np.asarray(m.train_loss, np.float32), val_loss=np.asarray(stopper.history, np.float32),
            heldout_index=test.astype(np.int64), heldout_proba=proba[k].astype(np.float32),
            classes=list(data.classes), features_sha256=data.features_sha256, dataset_sha256=data.dataset_sha256,
            pairs=np.asarray(pairs, np.int64), pair_importance=pair_imp.astype(np.float32),
            pair_class_importance=pair_class_imp.astype(np.float32),
            meta={"backbone": cfg.backbone.kind, "attribution": cfg.attribution.method, "device": str(device),
                  "trained_with": list(g.passes), "n_attributed": int(len(attr_idx)),
                  "restored_val_loss": round(float(restored_val_loss[k]), 6),
                  "pair_classes": list(data.pair_classes or []), "pair_channel": g.channels == 2,
                  "pair_start": m.pair_start, "gate": {"score": round(score, 6), "chance": round(chance, 6)},
                  "blocks": data.n_blocks(),
                  "seconds": round((time.perf_counter() - g.t0) / K, 3), "config": cfg.to_dict(), **extra}))
        log.info("pass %d: held-out accuracy %.3f (%s), stopped at epoch %d (best %d)", m.pass_index, accuracy,
                 "accepted" if accepted else "rejected"
                 if data.samples is None else f"balanced {score:.3f} against chance {chance:.3f}: "
                 + ("accepted" if accepted else "rejected"), stopper.epochs_run, stopper.best_epoch)
    return results


def _train_samples(data: PreparedData, pass_index: int) -> dict[str, int]:
    """How many samples of each label the pass trained on (a sample key): with one, nothing in the
    training data tells that sample's own effects from the label's (findings.model_left_out)."""
    train = data.pass_cells(pass_index)[0]
    samples, codes = data.samples[train], data.codes[train]
    return {cls: int(np.unique(samples[codes == c]).size) for c, cls in enumerate(data.classes)}


def _predict_stacked(net, feed, idx, imager, chunk: int, device, amp: bool = True) -> np.ndarray:
    """Softmax of every member on the given cells: (K, N, C)."""
    import torch

    out = []
    with torch.no_grad(), _autocast(device, amp):
        for i in range(0, len(idx), chunk):
            out.append(torch.softmax(net.forward(imager(feed(idx[i:i + chunk]))).float(), dim=-1).cpu().numpy())
    return np.concatenate(out, axis=1) if out else np.zeros((net.k, 0, 0), np.float32)
