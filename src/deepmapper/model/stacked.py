"""K copies of one backbone behind one call (the stacked model), its optimiser, and the chunk sizes
that keep a step's activations in cache (moved out of the training loop, :mod:`deepmapper.engine.train`).
"""
from __future__ import annotations

import copy


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


class Stacked:
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
        self.drop_shapes, self.act_elems = probe(self.template, side, channels)

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


class Single:
    """One model of any backbone, same interface as :class:`Stacked` with K = 1."""

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


class AdamW:
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


def probe(module, side: int, channels: int = 1):
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


def chunk_size(act_elems, k: int, budget: int, device, floor: int = 1) -> int | None:
    """Images per call so that K members' activations stay within ``budget`` bytes (None: no limit)."""
    if act_elems is None or device.type != "cpu":
        return None
    return max(floor, int(budget // (4 * k * act_elems)))
