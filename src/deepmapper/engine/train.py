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
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from deepmapper.model import transform
from deepmapper.engine.accumulate import gate
from deepmapper.config import Config
from deepmapper.engine.data import PreparedData
from deepmapper.engine.earlystop import EarlyStopping
from deepmapper.engine.passfile import PassResult

log = logging.getLogger(__name__)

# Gradient tolerance of the wide path's logistic-regression start. sklearn's default (1e-4)
# leaves the flat directions of a wide, weakly penalised fit far from the optimum.
WIDE_START_TOL = 1e-6

EVAL_BATCH = 512                 # no-grad chunk where activation size is not known (GPU, other kinds)


from deepmapper.device import select_device  # noqa: E402,F401  (the device choice lives in device.py)


def group_passes(pass_indices: list[int], cfg: Config) -> list[list[int]]:
    """Chunks of passes trained together: ``passes_per_step`` for stackable backbones, else 1."""
    from deepmapper.model import backbones

    size = cfg.run.passes_per_step if backbones.kind_info(cfg.backbone.kind).stackable else 1
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


# -- the model wrapper: K copies of one backbone behind one call ----------------------
#
# Layout: a batch of images is (B, K, side, side), channel k holding member k's
# arrangement of the same cells; a forward returns logits (K, B, n_classes).
# Stackable backbones run as one functional model over parameters stacked as
# (K, ...) leaves: linear layers as one batched matrix product; convolutions as
# one grouped convolution (groups = K) on a GPU, and as K plain convolutions on
# CPU, where oneDNN's grouped convolution with few channels per group measured
# slower than the K separate calls (and ``vmap(functional_call)``, which lowers
# to the grouped convolution plus reshapes, slower still).

# Activation bytes one training micro-batch may produce. A 64-image step on a
# large pseudo-image (142 x 142) streams ~250 MB of activations through memory;
# split into cache-sized micro-batches whose gradients are summed, the same
# step ran ~2x faster here and needs a fraction of the memory. Small images
# still go in one call.
MICRO_BATCH_BYTES = 24 * 1024 * 1024
# Activation bytes of one no-grad chunk (validation, prediction) and of one
# attribution chunk (which keeps activations for the backward pass).
EVAL_BYTES = 96 * 1024 * 1024
# Side from which convolutions run channels-last (measured faster on large
# images, slower on small ones).
CHANNELS_LAST_SIDE = 64


class _Stacked:
    """K members of a stackable backbone (``backbones.stackable``) as one functional model.

    Parameters are stacked per name as (K, ...) leaves, so member k's update only
    ever reads member k's gradient and optimizer state. Dropout draws its masks
    from the member generators (not the global RNG), so a member trains the same
    whether it shares the step with others or not.
    """

    stacked = True

    def __init__(self, models, generators, side: int, channels_last: bool = False, grouped: bool = False,
                 channels: int = 1, wide_deep: bool | None = None):
        import torch

        self.k = len(models)
        self.grouped = grouped
        self.channels = channels
        self.template = copy.deepcopy(models[0]).cpu()
        named = [dict(m.named_parameters()) for m in models]
        self.params = {n: torch.stack([d[n].detach() for d in named]).requires_grad_(True) for n in named[0]}
        self.generators = generators
        self.training = True
        self.channels_last = channels_last
        self._check(self.template)
        if wide_deep is None:   # a wide (linear) path plus a deep rest, summed (backbones.Kind.wide)
            import torch.nn as nn

            wide_deep = isinstance(getattr(self.template, "wide", None), nn.Linear) and \
                hasattr(self.template, "deep")
        self.wide_deep = wide_deep
        self.drop_shapes, self.act_elems = _probe(self.template, side, channels)

    @staticmethod
    def _check(module):
        import torch.nn as nn

        ok = (nn.Sequential, nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten, nn.Dropout, nn.AdaptiveAvgPool2d)
        for name, m in module.named_modules():
            if name and not isinstance(m, ok):
                raise TypeError(f"cannot stack module {name} ({type(m).__name__})")

    def parameters(self):
        return list(self.params.values())

    def train(self, flag: bool = True):
        self.training = flag

    def masks(self, batch: int, device) -> dict:
        """Dropout masks (already scaled by 1/(1-p)) for a batch, from each member's generator."""
        import torch

        out = {}
        if not self.training:
            return out
        for name, (p, shape) in self.drop_shapes.items():
            keep = [(torch.rand((batch, *shape), generator=g) >= p).float() / (1.0 - p) for g in self.generators]
            out[name] = torch.stack(keep).to(device)          # (K, B, *shape)
        return out

    def forward(self, x, masks=None):
        """(B, K*channels, s, s) -> (K, B, n_classes); member k's channels are k*channels.. ."""
        import torch

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        model = self.template
        c = self.channels
        # images travel as one (B, K*C, H, W) tensor (grouped) or as K tensors (B, C, H, W)
        images = x if self.grouped else [x[:, k * c:(k + 1) * c] for k in range(self.k)]
        if self.wide_deep:
            flat = x.reshape(x.shape[0], self.k, -1).transpose(0, 1)
            return self._run(model.wide, "wide.", flat, masks) + self._run(model.deep, "deep.", images, masks)
        return self._run(model, "", images, masks)

    def _run(self, module, prefix: str, x, masks):
        """Apply ``module`` to all members' images or to their vectors (K, B, D)."""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        K, P = self.k, self.params
        each = isinstance(x, list)
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                x = self._run(child, f"{prefix}{name}.", x, masks)
            return x
        if isinstance(module, nn.Conv2d):
            w, b = P[prefix + "weight"], P.get(prefix + "bias")
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            args = (module.stride, module.padding, module.dilation)
            if each:
                return [F.conv2d(v, w[k].contiguous(memory_format=fmt), None if b is None else b[k], *args,
                                 module.groups) for k, v in enumerate(x)]
            w = w.reshape(-1, *w.shape[2:]).contiguous(memory_format=fmt)
            return F.conv2d(x, w, None if b is None else b.reshape(-1), *args, K * module.groups)
        if isinstance(module, nn.Linear):
            w, b = P[prefix + "weight"], P.get(prefix + "bias")
            y = torch.bmm(x, w.transpose(1, 2))                 # (K, B, in) @ (K, in, out)
            return y if b is None else y + b[:, None, :]
        if isinstance(module, nn.ReLU):
            return [F.relu(v) for v in x] if each else F.relu(x)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return [F.adaptive_avg_pool2d(v, module.output_size) for v in x] if each else \
                F.adaptive_avg_pool2d(x, module.output_size)
        if isinstance(module, nn.Flatten):
            if each:
                return torch.stack([v.flatten(1) for v in x])
            return x.reshape(x.shape[0], K, -1).transpose(0, 1)  # member k's (C, H, W) in order
        if isinstance(module, nn.Dropout):
            mask = (masks or {}).get(prefix[:-1])
            if mask is None:
                return x
            if each:
                return [v * mask[k] for k, v in enumerate(x)]
            if x.dim() == 3:
                return x * mask
            return x * mask.transpose(0, 1).reshape(x.shape)     # (K, B, C, H, W) -> (B, K*C, H, W)
        raise TypeError(f"cannot stack module {type(module).__name__}")

    def snapshot(self, k: int) -> dict:
        return {n: p[k].detach().clone() for n, p in self.params.items()}

    def load(self, states: list[dict]) -> None:
        """Members' chosen weights (e.g. best epochs) become the stacked weights, frozen."""
        import torch

        self.params = {n: torch.stack([s[n] for s in states]).detach() for n in self.params}

    def member(self, state: dict, device):
        """A standalone module carrying one member's weights."""
        module = copy.deepcopy(self.template).to(device)
        module.load_state_dict(state)
        module.eval()
        return module

    def aux_loss(self):
        return None


class _Single:
    """One model of any backbone, same interface as :class:`_Stacked` with K = 1."""

    stacked = False
    k = 1

    def __init__(self, model, side: int, channels: int = 1):
        self.model = model
        self.channels = channels
        self.act_elems = None

    def parameters(self):
        return list(self.model.parameters())

    def train(self, flag: bool = True):
        self.model.train(flag)

    def masks(self, batch: int, device) -> dict:
        return {}

    def forward(self, x, masks=None):
        return self.model(x)[None]

    def snapshot(self, k: int) -> dict:
        return {n: v.detach().clone() for n, v in self.model.state_dict().items()}

    def load(self, states: list[dict]) -> None:
        self.model.load_state_dict(states[0])

    def member(self, state: dict, device):
        self.model.load_state_dict(state)
        self.model.eval()
        return self.model

    def aux_loss(self):
        return self.model.aux_loss() if hasattr(self.model, "aux_loss") else None


class _AdamW:
    """AdamW with torch's defaults (betas 0.9/0.999, eps 1e-8, decoupled weight decay,
    no amsgrad), the same update as ``torch.optim.AdamW``.

    Why not torch.optim: its first construction imports torch._dynamo, ~1-3 s of
    start-up per process (measured here), which is most of a small run's overhead.
    The update is elementwise, so member k of a stacked parameter only ever reads
    its own gradient and moments.
    """

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params = list(params)
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    def step(self):
        import torch

        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        self.t += 1
        ps, gs = [self.params[i] for i in live], [self.params[i].grad for i in live]
        ms, vs = [self.m[i] for i in live], [self.v[i] for i in live]
        with torch.no_grad():
            torch._foreach_mul_(ps, 1.0 - self.lr * self.wd)
            torch._foreach_lerp_(ms, gs, 1.0 - self.b1)
            torch._foreach_mul_(vs, self.b2)
            torch._foreach_addcmul_(vs, gs, gs, 1.0 - self.b2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, (1.0 - self.b2 ** self.t) ** 0.5)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(ps, ms, denom, -self.lr / (1.0 - self.b1 ** self.t))


def _probe(module, side: int, channels: int = 1):
    """Input shape of every Dropout, and activation elements per image (convs and linears)."""
    import torch
    import torch.nn as nn

    shapes, elems, hooks = {}, [0], []
    for name, m in module.named_modules():
        if isinstance(m, nn.Dropout) and m.p > 0:
            hooks.append(m.register_forward_pre_hook(
                lambda mod, inp, name=name: shapes.__setitem__(name, (mod.p, tuple(inp[0].shape[1:])))))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: elems.__setitem__(0, elems[0] + out.numel())))
    was = module.training
    module.train(True)
    try:
        with torch.no_grad():
            module(torch.zeros(1, channels, side, side))
    finally:
        module.train(was)
        for h in hooks:
            h.remove()
    return shapes, max(1, elems[0])


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


class _Imager:
    """Scaled feature rows (B, F) -> the K members' images (B, K * channels, side, side).

    Channel 0 of member k: the features under its arrangement (padding zero). Channel 1 (the
    pair channel, when ``channels == 2``): the standardised product of each placed pair at
    the pair's left pixel, zero elsewhere. One gather per channel, no loop over features.
    """

    def __init__(self, data: PreparedData, members: list, side: int, channels: int, device):
        import torch

        self.side, self.channels, self.k = side, channels, len(members)
        self.perms = torch.as_tensor(np.stack([m.perm for m in members]), device=device)
        if channels == 2:
            where = np.zeros((self.k, side * side), np.int64)      # 0: no pair, m + 1: pair m
            for k, m in enumerate(members):
                where[k, m.pair_pixels] = np.arange(1, data.n_pairs + 1)
            self.where = torch.as_tensor(where, device=device)
            self.a = torch.as_tensor(data.pairs[:, 0], device=device)
            self.b = torch.as_tensor(data.pairs[:, 1], device=device)
            self.mean = torch.as_tensor(data.pair_mean, device=device)
            self.scale = torch.as_tensor(data.pair_scale, device=device)

    def __call__(self, rows, *, products: bool = True):
        """``products=False``: the pair channel left at zero (the attribution baseline's: the mean
        of a standardised product)."""
        import torch
        import torch.nn.functional as F

        n, s = rows.shape[1], self.side
        pixels = rows[:, self.perms]                    # (B, K, F)
        if s * s - n:
            pixels = F.pad(pixels, (0, s * s - n))
        if self.channels == 1:
            return pixels.reshape(rows.shape[0], self.k, s, s)
        if products:
            prod = (rows[:, self.a] * rows[:, self.b] - self.mean) / self.scale
        else:
            prod = torch.zeros(rows.shape[0], self.a.shape[0], dtype=rows.dtype, device=rows.device)
        ext = torch.cat([torch.zeros_like(prod[:, :1]), prod], dim=1)      # (B, 1 + M)
        pair = ext[:, self.where]                                          # (B, K, s*s)
        return torch.stack([pixels, pair], dim=2).reshape(rows.shape[0], self.k * 2, s, s)


def _augment(images, members: list[_MemberState], cfg: Config, channels: int = 1):
    """Per-member Gaussian noise and pixel dropout on the feature channel, each from that member's own
    generator (the pair channel is left as computed)."""
    import torch

    noise_std, drop = cfg.augmentation.noise_std, cfg.augmentation.feature_dropout
    if noise_std == 0 and drop == 0:
        return images
    shape = (images.shape[0], images.shape[2], images.shape[3])
    out = []
    for k, m in enumerate(members):
        x = images[:, k * channels]
        if noise_std > 0:
            x = x + noise_std * torch.randn(shape, generator=m.generator).to(x.device)
        if drop > 0:
            keep = (torch.rand(shape, generator=m.generator) >= drop).to(x.device)
            x = x * keep
        out.append(x)
        out.extend(images[:, k * channels + c] for c in range(1, channels))
    return torch.stack(out, dim=1)


def _chunk(act_elems, k: int, budget: int, device, floor: int = 1) -> int | None:
    """Images per call so that K members' activations stay within ``budget`` bytes (None: no limit)."""
    if act_elems is None or device.type != "cpu":
        return None
    return max(floor, int(budget // (4 * k * act_elems)))


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


def _autocast(device):
    """Mixed precision on a GPU (bf16 where supported, else fp16); CPU stays fp32, the reference."""
    import contextlib

    import torch

    if device.type != "cuda":
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
    imager: _Imager
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
        net = _Stacked(models, [m.generator for m in members], side, grouped=device.type == "cuda",
                       channels_last=device.type == "cpu" and side >= CHANNELS_LAST_SIDE, channels=channels,
                       wide_deep=info.wide)
    else:
        if len(models) != 1:
            raise ValueError(f"backbone {cfg.backbone.kind} is not stackable: train its passes one at a time")
        net = _Single(models[0], side, channels)
    del models
    trainable = net.parameters()
    if net.stacked and info.wide and cfg.backbone.wide_start == "logistic":
        for m, kept in zip(members, _logistic_wide_start(net, members, data, side, seed=r.seed, channels=channels)):
            m.pair_start = kept
        # fixed from here on: the deep path learns what the linear fit misses, and early
        # stopping decides how much of it to keep (a zero-initialised deep head measured no better)
        trainable = [p for name, p in net.params.items() if not name.startswith("wide.")]
        for name in ("wide.weight", "wide.bias"):
            net.params[name].requires_grad_(False)
    K = len(members)
    # Micro-batches only where no layer looks across the batch (stacked kinds have no BatchNorm).
    micro = _chunk(net.act_elems, K, MICRO_BATCH_BYTES, device) if net.stacked else None
    eval_chunk = _chunk(net.act_elems, K, EVAL_BYTES, device, floor=8) or EVAL_BATCH
    return _Group(passes=list(group), members=members, net=net, imager=_Imager(data, members, side, channels, device),
                  feed=_Feeder(data, device), side=side, channels=channels, trainable=trainable, micro=micro,
                  eval_chunk=eval_chunk, t0=t0)


def _fit_group(g: _Group, data: PreparedData, cfg: Config, device, progress: bool) -> None:
    """Epochs over the shared batch order until every member's early stopping fired; every member
    then continues with its best epoch's weights."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    r, net, members, feed, imager = cfg.run, g.net, g.members, g.feed, g.imager
    K = len(members)
    optimizer = _AdamW(g.trainable, lr=r.learning_rate, weight_decay=r.weight_decay)
    y_all = torch.as_tensor(data.codes, device=device)

    # Each member trains and validates on its own cells (rotating validation folds). The
    # batches run over every cell any pass may train on, whatever the group, and a (K, cells)
    # weight keeps each member to its own: so a pass trains the same alone or stacked.
    cells = [data.pass_cells(m.pass_index) for m in members]
    train_pool = data.split.train if data.folds is None else np.flatnonzero(data.folds >= 0)
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
        with torch.no_grad(), _autocast(device):
            for i in range(0, len(val_union), g.eval_chunk):
                sel = val_union[i:i + g.eval_chunk]
                logits = net.forward(imager(feed(sel))).float()
                total += (F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_all[sel].repeat(K),
                                          reduction="none").view(K, -1) * in_val_t[:, sel]).sum(1)
        return (total / in_val_t.sum(1).clamp_min(1.0)).cpu().numpy()

    label = f"passes {g.passes[0]}-{g.passes[-1]}" if K > 1 else f"pass {g.passes[0]}"
    bar = tqdm(range(1, r.epochs + 1), desc=label, unit="epoch", disable=None if progress else True,
               leave=False)
    for epoch in bar:
        net.train(True)
        order = np.random.default_rng([r.seed, epoch]).permutation(train_pool)  # shared batch order
        epoch_loss = torch.zeros(K, device=device)
        for i in range(0, len(order), r.batch_size):
            sel = order[i:i + r.batch_size]
            n = len(sel)
            weight = in_train_t[:, sel]                                  # (K, n): 1 where the cell is k's
            denom = weight.sum(1).clamp_min(1.0)
            images = _augment(imager(feed(sel)), members, cfg, g.channels)
            masks = net.masks(n, device)
            y = y_all[sel]
            optimizer.zero_grad(set_to_none=True)
            step = g.micro or n
            for j in range(0, n, step):
                # Gradients of the micro-batches add up to the full batch's: the step is unchanged.
                part = {name: mk[:, j:j + step] for name, mk in masks.items()}
                with _autocast(device):
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
        if progress:
            bar.set_postfix(val_loss=f"{float(np.mean(val_l)):.3f}")
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
    proba = _predict_stacked(net, g.feed, test, g.imager, g.eval_chunk, device)      # (K, N, C)
    # Validation loss of the weights actually used: equals the best epoch's (a restore check).
    val_union, in_val = g.val_union, g.in_val
    val_proba = _predict_stacked(net, g.feed, val_union, g.imager, g.eval_chunk, device)
    val_nll = -np.log(np.clip(val_proba[:, np.arange(len(val_union)), data.codes[val_union]], 1e-12, None))
    restored_val_loss = (val_nll * in_val[:, val_union]).sum(1) / np.maximum(in_val[:, val_union].sum(1), 1.0)
    attr_idx = _attribution_cells(data, cfg)
    pixel_attr = _attribute_members(net, g, data, cfg, attr_idx, device)      # (N, K, channels, P)
    codes = data.codes[attr_idx]
    onehot = np.zeros((data.n_classes, len(attr_idx)))
    onehot[codes, np.arange(len(attr_idx))] = 1.0
    counts = np.maximum(onehot.sum(1, keepdims=True), 1.0)

    results = []
    for k, m in enumerate(members):
        accuracy = float((proba[k].argmax(1) == data.codes[test]).mean())
        accepted = gate(accuracy, min_accuracy=r.min_accuracy, majority_rate=data.majority_rate())
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
                  "pair_start": m.pair_start,
                  "seconds": round((time.perf_counter() - g.t0) / K, 3), "config": cfg.to_dict()}))
        log.info("pass %d: held-out accuracy %.3f (%s), stopped at epoch %d (best %d)", m.pass_index, accuracy,
                 "accepted" if accepted else "rejected", stopper.epochs_run, stopper.best_epoch)
    return results


def _wide_design(data: PreparedData, cells: np.ndarray, n_pairs: int):
    """(x, shift) of the logistic start on ``cells``: the standardised features (plus the standardised
    pair products when ``n_pairs``); ``shift`` is None for dense (already centred) data, else the
    centring the sparse fit leaves to the intercept."""
    import scipy.sparse as sp

    if data.dense_scaled is not None:
        x = data.dense_scaled[cells]                          # centred: well conditioned, few iterations
        return (np.hstack([x, data.pair_products(x)]) if n_pairs else x), None
    # large sparse data is never densified: fit on x / scale; centring only moves the intercept
    x = sp.csr_matrix(data.X[cells]) @ sp.diags(1.0 / data.scale.astype(np.float64))
    shift = data.mean.astype(np.float64) / data.scale
    if n_pairs:
        cols = np.unique(data.pairs)
        sub = np.zeros((len(cells), data.n_features), np.float32)
        sub[:, cols] = (np.asarray(data.X[cells][:, cols].todense()) - data.mean[cols]) / data.scale[cols]
        x = sp.hstack([x, sp.csr_matrix(data.pair_products(sub))], format="csr")
        shift = np.concatenate([shift, np.zeros(n_pairs)])
    return x, shift


def _validation_log_loss(model, x, codes: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(codes, model.predict_proba(x), labels=np.asarray(model.classes_)))


def _logistic_wide_start(net, members, data: PreparedData, side: int, *, seed: int, channels: int = 1) -> list[bool]:
    """Set each member's wide path to the penalised logistic-regression fit of that pass's own
    training cells (the baseline's model: C = 1, on the same standardised features), placed on the
    pixels through the member's arrangement. Depends on the pass alone, not its group.

    With the pair channel on, the pass fits twice, with and without the standardised products of the
    placed pairs, and keeps the fit with the lower log-loss on its own validation fold: a pair can
    co-vary differently inside a class (what the screen tests) and still add nothing to prediction
    (pbmc68k_reduced, seed 2: with the products of its 32 within-class pairs always kept, 0.859
    against 0.880 without), so the cells held out from the fit decide. Returns, per member, whether the products were kept."""
    import torch

    from deepmapper.engine.baselines import fit_logistic, softmax_coefficients

    n_pairs = data.n_pairs if channels == 2 else 0
    kept = []
    for k, m in enumerate(members):
        train_cells, val_cells = data.pass_cells(m.pass_index)

        def fit(with_pairs: bool):
            x, shift = _wide_design(data, train_cells, n_pairs if with_pairs else 0)
            model, _ = fit_logistic(x, data.codes[train_cells], seed=seed + m.pass_index, tol=WIDE_START_TOL)
            loss = 0.0
            if n_pairs and len(val_cells):
                xv, _ = _wide_design(data, val_cells, n_pairs if with_pairs else 0)   # as the fit saw its cells
                loss = _validation_log_loss(model, xv, data.codes[val_cells])
            return loss, model, shift

        fits = {wp: fit(wp) for wp in ([True, False] if n_pairs else [False])}
        with_pairs = bool(n_pairs) and fits[True][0] <= fits[False][0]             # ties: keep the products
        _, model, shift = fits[with_pairs]
        kept.append(with_pairs)
        coef, intercept = softmax_coefficients(model, data.n_classes)
        if shift is not None:
            intercept = intercept + coef @ shift
        weight = np.zeros((data.n_classes, channels, side * side), np.float32)
        weight[:, 0, :data.n_features] = coef[:, m.perm]          # pixel i holds feature perm[i]
        if with_pairs:
            weight[:, 1, m.pair_pixels] = coef[:, data.n_features:]
        with torch.no_grad():
            device = net.params["wide.weight"].device
            net.params["wide.weight"][k] = torch.as_tensor(weight.reshape(data.n_classes, -1), device=device)
            net.params["wide.bias"][k] = torch.as_tensor(intercept, dtype=torch.float32, device=device)
    log.info("wide path: logistic-regression start for passes %s%s", [m.pass_index for m in members],
             f"; pair products kept by validation in {sum(kept)} of {len(kept)}" if n_pairs else "")
    return kept


def _predict_stacked(net, feed, idx, imager, chunk: int, device) -> np.ndarray:
    """Softmax of every member on the given cells: (K, N, C)."""
    import torch

    out = []
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(idx), chunk):
            out.append(torch.softmax(net.forward(imager(feed(idx[i:i + chunk]))).float(), dim=-1).cpu().numpy())
    return np.concatenate(out, axis=1) if out else np.zeros((net.k, 0, 0), np.float32)


def _attribute_members(net, g: _Group, data: PreparedData, cfg: Config, idx, device) -> np.ndarray:
    """Signed per-pixel attributions of every member on the cells ``idx``: (N, K, channels, side*side).

    Integrated gradients and saliency of a stacked model run for all members in
    one call: the members share no weights, so the gradient of the summed logits
    with respect to member k's image is member k's own gradient, and the result
    equals attributing each member alone. Other methods (and non-stackable
    backbones) go member by member through :func:`attribution.attribute`.
    """
    import torch

    from deepmapper.model import attribution

    K, acfg, C, side, feed = net.k, cfg.attribution, g.channels, g.side, g.feed
    base = _baseline_image(data, cfg, g.imager, device)                    # (1, K*C, s, s)
    targets = torch.as_tensor(data.codes[idx], device=device)
    # images per forward: the configured bound, lowered on CPU so that the
    # activations kept for the backward pass stay within EVAL_BYTES
    budget = _chunk(net.act_elems, K, EVAL_BYTES // 3, device)
    step = max(1, min(acfg.internal_batch_size, budget or acfg.internal_batch_size))
    pixel = np.empty((len(idx), K, C, side * side), np.float32)
    batched = net.stacked and attribution.method_info(acfg.method).stacked
    if not batched:
        modules = [net.member(net.snapshot(k), device) for k in range(K)]
        sub = dataclasses.replace(acfg, internal_batch_size=step)
    for i in range(0, len(idx), step):
        sel = slice(i, i + step)
        images = g.imager(feed(idx[sel]))                                  # (n, K*C, s, s)
        if batched:
            pixel[sel] = _attribute_stacked(net, images, targets[sel], base, acfg).reshape(
                images.shape[0], K, C, -1)
        else:
            for k in range(K):
                pixel[sel, k] = attribution.attribute(
                    modules[k], images[:, k * C:(k + 1) * C], targets[sel], sub,
                    baseline=base[:, k * C:(k + 1) * C]).reshape(images.shape[0], C, -1)
    return pixel


def _attribute_stacked(net, images, targets, base, acfg):
    """IG or saliency of all K members at once on (N, K*C, s, s) images -> (N, K*C, s, s)."""
    from captum.attr import IntegratedGradients, Saliency

    def forward(x):
        return net.forward(x).sum(0)                                          # (N, C)

    if acfg.method == "saliency":
        grad = Saliency(forward).attribute(images, target=targets, abs=False)
        return (grad * (images - base)).detach().cpu().numpy()
    # one path point of every image per forward (as in attribution.attribute)
    attr = IntegratedGradients(forward).attribute(images, baselines=base.expand_as(images), target=targets,
                                                  n_steps=acfg.n_steps, internal_batch_size=images.shape[0])
    return attr.detach().cpu().numpy()


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


def _baseline_image(data: PreparedData, cfg: Config, imager: _Imager, device):
    """(1, K*channels, side, side) reference images of the members for path attribution methods:
    the training-mean features (pair channel 0, the mean of a standardised product), or zeros."""
    import torch

    side = transform.square_side(data.n_features)
    if cfg.attribution.baseline == "zeros":
        return torch.zeros(1, imager.k * imager.channels, side, side, device=device)
    mean = torch.as_tensor(data.train_mean_features()[None], device=device)
    return imager(mean, products=False)
