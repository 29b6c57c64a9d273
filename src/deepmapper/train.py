"""One pass, or a group of passes trained together, end to end.

A pass = arrangement (seeded permutation) -> fit with early stopping on the
fixed split -> held-out accuracy -> gate -> attribution -> back-projection to
features. Passes of a stackable backbone (``backbones.stackable``) are trained
``passes_per_step`` at a time as one stacked model (``torch.func`` over stacked
parameters): every member sees the same batches, has its own arrangement,
initial weights, augmentation stream, optimizer state and early stopping, so
the result equals training the passes one by one (within floating-point
tolerance) while each step does K times the work in one call.

Randomness: the split and the batch order come from the run seed; pass ``t``
draws its arrangement, weight init and augmentation from ``seed + t``.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np

from . import transform
from .accumulate import gate
from .config import Config
from .data import PreparedData
from .earlystop import EarlyStopping
from .passfile import PassResult

log = logging.getLogger(__name__)

EVAL_BATCH = 512


def select_device(name: str = "auto"):
    """``cuda`` when asked for or available (auto), else CPU; CPU is always a valid run."""
    import torch

    from .errors import ConfigError

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is visible", field="run.device",
                          fix="use --device auto or cpu, or run on a GPU node (-profile gpu).")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def group_passes(pass_indices: list[int], cfg: Config) -> list[list[int]]:
    """Chunks of passes trained together: ``passes_per_step`` for stackable backbones, else 1."""
    from . import backbones

    size = cfg.run.passes_per_step if backbones.stackable(cfg.backbone.kind) else 1
    return [list(pass_indices[i:i + size]) for i in range(0, len(pass_indices), size)]


def train_passes(data: PreparedData, cfg: Config, pass_indices: list[int], *, progress: bool = True,
                 device=None) -> list[PassResult]:
    import torch

    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = device or select_device(cfg.run.device)
    results = []
    for group in group_passes(list(pass_indices), cfg):
        results.extend(train_group(data, cfg, group, device=device, progress=progress))
    return results


# -- the model wrapper: one model, or K stacked copies ---------------------------------

class _Members:
    """K models of one backbone behind one call: ``forward((K, B, 1, s, s)) -> (K, B, C)``."""

    def __init__(self, models):
        import torch
        from torch.func import functional_call, vmap

        self.k = len(models)
        self.template = models[0]
        if self.k == 1:
            self.model = models[0]
            self.params = dict(self.model.named_parameters())
            self._forward = lambda x: self.model(x[0])[None]
        else:
            # Stack by name (not torch.func.stack_module_state, which insists on one Python class).
            named = [dict(m.named_parameters()) for m in models]
            self.params = {n: torch.stack([d[n].detach() for d in named]).requires_grad_(True) for n in named[0]}
            bufs = [dict(m.named_buffers()) for m in models]
            self.buffers = {n: torch.stack([d[n] for d in bufs]) for n in bufs[0]}
            base = copy.deepcopy(models[0]).to("meta")
            self.model = base

            def call(p, b, x):
                return functional_call(base, (p, b), (x,))

            batched = vmap(call, randomness="different")
            self._forward = lambda x: batched(self.params, self.buffers, x)
        self._torch = torch

    def parameters(self):
        return list(self.params.values())

    def forward(self, x):
        return self._forward(x)

    def train(self, flag: bool = True):
        self.model.train(flag)

    def snapshot(self, k: int) -> dict:
        if self.k == 1:
            return {n: v.detach().clone() for n, v in self.model.state_dict().items()}
        return {n: p[k].detach().clone() for n, p in self.params.items()} | \
               {n: b[k].detach().clone() for n, b in self.buffers.items()}

    def member(self, state: dict):
        """A standalone module carrying one member's weights (for prediction and attribution)."""
        module = copy.deepcopy(self.template)
        module.load_state_dict(state)
        module.eval()
        return module

    def aux_loss(self):
        if self.k == 1 and hasattr(self.model, "aux_loss"):
            return self.model.aux_loss()
        return None


@dataclass
class _MemberState:
    pass_index: int
    perm: np.ndarray
    generator: object
    stopper: EarlyStopping
    best_state: dict | None = None
    train_loss: list | None = None
    done: bool = False


def _images(rows, perms_t, side: int):
    """(B, F) scaled features -> (K, B, 1, side, side) for K arrangements, one gather."""
    import torch.nn.functional as F

    n = rows.shape[1]
    pixels = rows[:, perms_t]                    # (B, K, F)
    pad = side * side - n
    if pad:
        pixels = F.pad(pixels, (0, pad))
    return pixels.permute(1, 0, 2).reshape(perms_t.shape[0], rows.shape[0], 1, side, side)


def _augment(images, members: list[_MemberState], cfg: Config):
    """Per-member Gaussian noise and pixel dropout, each from that member's own generator."""
    import torch

    noise_std, drop = cfg.augmentation.noise_std, cfg.augmentation.feature_dropout
    if noise_std == 0 and drop == 0:
        return images
    shape = images.shape[1:]
    out = []
    for k, m in enumerate(members):
        x = images[k]
        if noise_std > 0:
            x = x + noise_std * torch.randn(shape, generator=m.generator).to(x.device)
        if drop > 0:
            keep = (torch.rand(shape, generator=m.generator) >= drop).to(x.device)
            x = x * keep
        out.append(x)
    return torch.stack(out)


def train_group(data: PreparedData, cfg: Config, group: list[int], *, device, progress: bool = True
                ) -> list[PassResult]:
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from . import attribution, backbones

    t0 = time.perf_counter()
    r = cfg.run
    n_features, side = data.n_features, transform.square_side(data.n_features)
    members, models = [], []
    for t in group:
        seed = r.seed + t
        torch.manual_seed(seed)                   # weight init of pass t
        models.append(backbones.build(cfg.backbone, data.n_classes, n_features).to(device))
        members.append(_MemberState(pass_index=t, perm=transform.arrangement(n_features, seed),
                                    generator=torch.Generator().manual_seed(seed),
                                    stopper=EarlyStopping(r.patience, r.min_delta, r.min_epochs), train_loss=[]))
    net = _Members(models)
    perms_t = torch.as_tensor(np.stack([m.perm for m in members]), device=device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=r.learning_rate, weight_decay=r.weight_decay)
    y_all = torch.as_tensor(data.codes, device=device)
    K = len(members)

    def batches(idx):
        for i in range(0, len(idx), EVAL_BATCH):
            sel = idx[i:i + EVAL_BATCH]
            yield sel, torch.as_tensor(data.rows(sel), device=device)

    def val_losses() -> np.ndarray:
        net.train(False)
        total = torch.zeros(K, device=device)
        with torch.no_grad():
            for sel, rows in batches(data.split.val):
                logits = net.forward(_images(rows, perms_t, side))
                y = y_all[sel]
                total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(K),
                                         reduction="none").view(K, -1).sum(1)
        return (total / len(data.split.val)).cpu().numpy()

    label = f"passes {group[0]}-{group[-1]}" if K > 1 else f"pass {group[0]}"
    bar = tqdm(range(1, r.epochs + 1), desc=label, unit="epoch", disable=None if progress else True,
               leave=False)
    for epoch in bar:
        net.train(True)
        order = np.random.default_rng([r.seed, epoch]).permutation(data.split.train)  # shared batch order
        epoch_loss = torch.zeros(K, device=device)
        for i in range(0, len(order), r.batch_size):
            sel = order[i:i + r.batch_size]
            rows = torch.as_tensor(data.rows(sel), device=device)
            images = _augment(_images(rows, perms_t, side), members, cfg)
            logits = net.forward(images)
            per_member = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_all[sel].repeat(K),
                                         reduction="none").view(K, -1).mean(1)
            loss = per_member.sum()               # members share no parameters: gradients stay separate
            aux = net.aux_loss()
            if aux is not None:
                loss = loss + aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += per_member.detach() * len(sel)
        train_l = (epoch_loss / len(order)).cpu().numpy()
        val_l = val_losses()
        for k, m in enumerate(members):
            if m.done:
                continue
            m.train_loss.append(float(train_l[k]))
            stop = m.stopper.step(float(val_l[k]))
            if m.stopper.improved:
                m.best_state = net.snapshot(k)
            m.done = stop
        if progress:
            bar.set_postfix(val_loss=f"{float(np.mean(val_l)):.3f}")
        if all(m.done for m in members):
            break
    bar.close()

    results = []
    attr_idx = _attribution_cells(data, cfg)
    baseline = _baseline_image(data, cfg, device)
    for k, m in enumerate(members):
        state = m.best_state if m.best_state is not None else net.snapshot(k)
        model = net.member(state)
        proba = _predict(model, data, data.split.test, m.perm, side, device)
        # Validation loss of the weights actually used: equals the best epoch's (restore check).
        val_proba = _predict(model, data, data.split.val, m.perm, side, device)
        restored_val_loss = float(-np.log(np.clip(val_proba[np.arange(len(data.split.val)),
                                                            data.codes[data.split.val]], 1e-12, None)).mean())
        accuracy = float((proba.argmax(1) == data.codes[data.split.test]).mean())
        accepted = gate(accuracy, min_accuracy=r.min_accuracy, majority_rate=data.majority_rate())
        perm_t = torch.as_tensor(m.perm, device=device)
        rows = torch.as_tensor(data.rows(attr_idx), device=device)
        images = _images(rows, perm_t[None], side)[0]
        targets = torch.as_tensor(data.codes[attr_idx], device=device)
        pixel_attr = attribution.attribute(model, images, targets, cfg.attribution, baseline=baseline(m.perm))
        feat_attr = transform.to_features(np.asarray(pixel_attr, dtype=np.float64), m.perm)
        importance = np.abs(feat_attr).mean(axis=0)
        class_imp = np.zeros((data.n_classes, n_features))
        codes = data.codes[attr_idx]
        for c in range(data.n_classes):
            if (codes == c).any():
                class_imp[c] = feat_attr[codes == c].mean(axis=0)
        stopper = m.stopper
        results.append(PassResult(
            pass_index=m.pass_index, seed=r.seed + m.pass_index, accuracy=accuracy, accepted=accepted,
            stop_epoch=stopper.epochs_run, best_epoch=stopper.best_epoch, early_stopped=stopper.fired,
            importance=importance.astype(np.float32), class_importance=class_imp.astype(np.float32),
            train_loss=np.asarray(m.train_loss, np.float32), val_loss=np.asarray(stopper.history, np.float32),
            heldout_index=data.split.test.astype(np.int64), heldout_proba=proba.astype(np.float32),
            classes=list(data.classes), features_sha256=data.features_sha256, dataset_sha256=data.dataset_sha256,
            meta={"backbone": cfg.backbone.kind, "attribution": cfg.attribution.method, "device": str(device),
                  "trained_with": list(group), "n_attributed": int(len(attr_idx)),
                  "restored_val_loss": round(restored_val_loss, 6),
                  "seconds": round((time.perf_counter() - t0) / K, 3), "config": cfg.to_dict()}))
        log.info("pass %d: held-out accuracy %.3f (%s), stopped at epoch %d (best %d)", m.pass_index, accuracy,
                 "accepted" if accepted else "rejected", stopper.epochs_run, stopper.best_epoch)
    return results


def _predict(model, data: PreparedData, idx: np.ndarray, perm: np.ndarray, side: int, device) -> np.ndarray:
    import torch

    perm_t = torch.as_tensor(perm, device=device)[None]
    out = []
    with torch.no_grad():
        for i in range(0, len(idx), EVAL_BATCH):
            rows = torch.as_tensor(data.rows(idx[i:i + EVAL_BATCH]), device=device)
            out.append(torch.softmax(model(_images(rows, perm_t, side)[0]), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, data.n_classes), np.float32)


def _attribution_cells(data: PreparedData, cfg: Config) -> np.ndarray:
    """Held-out cells to attribute: all of them, or a stratified sample of ``max_samples``
    drawn from the run seed (the same cells in every pass, so passes are comparable)."""
    test = data.split.test
    cap = cfg.attribution.max_samples
    if len(test) <= cap:
        return test
    rng = np.random.default_rng([cfg.run.seed, 104729])
    codes = data.codes[test]
    chosen = []
    for c in np.unique(codes):
        members = test[codes == c]
        n = max(1, int(round(cap * len(members) / len(test))))
        chosen.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))[: max(cap, len(np.unique(codes)))]


def _baseline_image(data: PreparedData, cfg: Config, device):
    """Returns perm -> (1, 1, side, side) reference image for path attribution methods."""
    import torch

    side = transform.square_side(data.n_features)
    if cfg.attribution.baseline == "zeros":
        zero = torch.zeros(1, 1, side, side, device=device)
        return lambda perm: zero
    mean = torch.as_tensor(data.train_mean_features()[None], device=device)
    return lambda perm: _images(mean, torch.as_tensor(perm, device=device)[None], side)[0]
