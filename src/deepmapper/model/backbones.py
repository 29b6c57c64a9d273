"""Image models for pseudo-images, behind one ``build(spec, n_classes, n_features)``.

Every model maps ``(B, 1, side, side)`` float32 images (``side =
transform.square_side(n_features)``) to logits ``(B, n_classes)``.

Why the default keeps position: in a pseudo-image a pixel *is* a feature, so
"where" a signal sits is "which gene". A CNN that ends in global average
pooling (the reference shape, kept here as ``cnn_small`` for comparison) can
only count local patterns, not say which gene carries them: on pbmc68k_reduced
(10 classes) it reaches about 0.45-0.5 held-out accuracy where logistic
regression reaches 0.84-0.85. ``cnn`` therefore has a linear "wide" path from
every pixel to the logits (at least as expressive as logistic regression per
feature) plus a small convolutional "deep" path that is flattened, never pooled.

Every kind is registered (``Kind``) with what the trainer may do with it:
``stackable`` (only convolutions, linear layers, ReLU and dropout -- no
BatchNorm running statistics -- so several arrangements train at once as one
stacked model), ``wide`` (a per-pixel linear path that can start at the
logistic-regression fit) and ``channels`` (2: it also takes the product channel
of the screened pairs). ``KINDS`` and ``stackable(kind)`` are derived from it.

torch, torchvision and timm are imported inside the builders so that importing
this module (and ``deepmapper --help``) stays fast.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

from deepmapper.errors import ConfigError
from deepmapper.model.transform import square_side

FIELD = "backbone.kind"

# VAE loss weights (see ``ConvVAEClassifier.aux_loss``).
VAE_RECON_WEIGHT = 1.0
VAE_KL_WEIGHT = 0.1
VAE_MAX_LATENT = 64


# -- small helpers ------------------------------------------------------------

def _nn():
    import torch.nn as nn

    return nn


def _half(n: int) -> int:
    """Output size of a 3x3, stride-2, padding-1 convolution."""
    return (n + 1) // 2


def param_count(model) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- model classes -------------------------------------------------------------------
#
# Defined once per process (not per build): torch.func.stack_module_state
# requires all stacked copies to be of the *same* class, and pickling needs a
# module-level name. The definitions live in a cached function so that torch
# is imported only when a model is built.

@functools.lru_cache(maxsize=None)
def _classes() -> SimpleNamespace:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class WideDeepCNN(nn.Module):
        """The default: wide (linear per pixel) + deep (3 convs, flattened) paths, summed.

        wide: one weight per (pixel, class), like logistic regression; deep:
        interactions of neighbouring pixels at half resolution, squeezed by a
        1x1 convolution so the flattened head stays small. No pooling anywhere.
        """

        def __init__(self, side: int, n_classes: int, width: int, dropout: float, channels: int = 1):
            super().__init__()
            narrow = max(4, width // 4)
            half = _half(side)
            self.wide = nn.Linear(channels * side * side, n_classes)
            self.deep = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(width, narrow, 1), nn.ReLU(),
                nn.Flatten(),
                nn.Dropout(dropout),
                nn.Linear(narrow * half * half, n_classes),
            )

        def forward(self, x):
            return self.wide(x.flatten(1)) + self.deep(x)

    class ViTBlock(nn.Module):
        """Pre-norm transformer block whose attention weights can be kept for rollout."""

        def __init__(self, dim: int, heads: int, dropout: float):
            super().__init__()
            self.heads = heads
            self.norm1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(2 * dim, dim))
            self.drop = nn.Dropout(dropout)
            self.last_attention = None

        def forward(self, x, record: bool = False):
            b, t, d = x.shape
            hd = d // self.heads
            q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
            attn = torch.softmax((q @ k.transpose(-2, -1)) * hd ** -0.5, dim=-1)
            # detached: rollout reads the weights, it does not differentiate them
            self.last_attention = attn.detach() if record else None
            x = x + self.drop(self.proj((attn @ v).transpose(1, 2).reshape(b, t, d)))
            return x + self.mlp(self.norm2(x))

    class SmallViT(nn.Module):
        """ViT for small pseudo-images: padded to a multiple of the patch size,
        learned position embeddings, a cls token, classifier on the cls token.

        Set ``record_attention = True`` and the next forward keeps every block's
        attention ``(B, heads, T, T)`` in ``attentions`` (token 0 is cls).
        """

        def __init__(self, side: int, n_classes: int, dim: int, depth: int, heads: int, patch: int,
                     dropout: float):
            super().__init__()
            self.side, self.patch = side, patch
            self.grid = -(-side // patch)  # patches per row after padding
            self.embed = nn.Conv2d(1, dim, patch, stride=patch)
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid + 1, dim) * 0.02)
            self.blocks = nn.ModuleList([ViTBlock(dim, heads, dropout) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))
            self.record_attention = False

        @property
        def attentions(self):
            return [blk.last_attention for blk in self.blocks]

        def forward(self, x):
            pad = self.grid * self.patch - self.side
            if pad:
                x = F.pad(x, (0, pad, 0, pad))
            tokens = self.embed(x).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
            for blk in self.blocks:
                tokens = blk(tokens, self.record_attention)
            return self.head(self.norm(tokens[:, 0]))

    class ConvVAEClassifier(nn.Module):
        """Conv encoder -> (mu, logvar); logits from mu; MLP decoder from z.

        The classifier reads ``mu`` (not a sample), so predictions and
        attributions are deterministic. ``aux_loss()`` returns the last
        forward's ``VAE_RECON_WEIGHT * MSE(x_hat, x) + VAE_KL_WEIGHT * KL / n_pixels``:
        the MSE is averaged over pixels and cells; the KL to N(0, I) is summed
        over latent dimensions, averaged over cells and divided by the pixel
        count, so both terms are per pixel and on the scale of the
        classification loss. In eval mode the stored value is detached (no
        graph is kept alive between forwards, e.g. during attribution).
        """

        def __init__(self, side: int, n_classes: int, width: int, latent: int, dropout: float):
            super().__init__()
            half = _half(side)
            self.side = side
            self.encoder = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(width, 8, 1), nn.ReLU(),  # squeeze before the dense layers
                nn.Flatten(),
            )
            self.to_mu = nn.Linear(8 * half * half, latent)
            self.to_logvar = nn.Linear(8 * half * half, latent)
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(latent, n_classes))
            self.decoder = nn.Sequential(nn.Linear(latent, 2 * latent), nn.ReLU(),
                                         nn.Linear(2 * latent, side * side))
            self._aux = None

        def forward(self, x):
            h = self.encoder(x)
            mu, logvar = self.to_mu(h), self.to_logvar(h).clamp(-10, 10)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            recon = F.mse_loss(self.decoder(z), x.flatten(1))
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean() / (self.side * self.side)
            aux = VAE_RECON_WEIGHT * recon + VAE_KL_WEIGHT * kl
            self._aux = aux if self.training else aux.detach()
            return self.head(mu)

        def aux_loss(self):
            if self._aux is None:
                raise RuntimeError("aux_loss() called before forward()")
            return self._aux

    found = {c.__name__: c for c in (WideDeepCNN, ViTBlock, SmallViT, ConvVAEClassifier)}
    for name, cls in found.items():  # reachable as deepmapper.model.backbones.<name> (pickling)
        cls.__qualname__ = name
    return SimpleNamespace(**found)


def __getattr__(name):
    # deepmapper.model.backbones.WideDeepCNN etc. exist once torch has been imported for them
    if name in ("WideDeepCNN", "ViTBlock", "SmallViT", "ConvVAEClassifier"):
        return getattr(_classes(), name)
    raise AttributeError(name)


# -- builders ------------------------------------------------------------------------------

def _build_cnn(spec, n_classes: int, side: int, channels: int = 1):
    return _classes().WideDeepCNN(side, n_classes, spec.width, spec.dropout, channels)


def _build_cnn_small(spec, n_classes: int, side: int, channels: int = 1):
    """The reference DeepMapper shape: two 3x3 convs, global average pooling, linear.

    Kept faithful (fixed 16/32 channels, no dropout) because it is the
    benchmark comparator; it cannot tell pixels apart after the pooling.
    """
    nn = _nn()
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, n_classes),
    )


def _build_cnn_mid(spec, n_classes: int, side: int):
    """Larger position-keeping CNN: two full-resolution convs, a stride-2 stage, flatten head."""
    nn = _nn()
    w = spec.width
    half = _half(side)
    # GroupNorm, not BatchNorm: independent of the batch, so eval == train statistics
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.GroupNorm(_groups(w), w), nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(_groups(w), w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(_groups(2 * w), 2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GroupNorm(_groups(2 * w), 2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 8, 1), nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(spec.dropout),
        nn.Linear(8 * half * half, n_classes),
    )


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


def _build_linear(spec, n_classes: int, side: int, channels: int = 1):
    nn = _nn()
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, n_classes))


def _build_mlp(spec, n_classes: int, side: int, channels: int = 1):
    nn = _nn()
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * side * side, spec.hidden), nn.ReLU(),
        nn.Dropout(spec.dropout),
        nn.Linear(spec.hidden, n_classes),
    )


def _build_resnet18(spec, n_classes: int, side: int):
    import torch.nn as nn
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=n_classes)  # weights=None: never download
    if spec.small_stem:
        # 7x7 stride 2 + max-pool would shrink a 28x28 image to 7x7 before the
        # first block; a 3x3 stride-1 stem keeps every pixel.
        model.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    return model


def _build_vit(spec, n_classes: int, side: int):
    if spec.width % spec.heads:
        raise ConfigError(f"ViT embedding size (backbone_width={spec.width}) is not divisible by "
                          f"vit_heads={spec.heads}", field="backbone.width",
                          fix="choose backbone_width as a multiple of vit_heads.")
    return _classes().SmallViT(side, n_classes, dim=spec.width, depth=spec.depth, heads=spec.heads,
                               patch=spec.patch_size, dropout=spec.dropout)


def _build_vae(spec, n_classes: int, side: int):
    # a latent wider than the image (or than 64) adds parameters, not information
    latent = min(spec.hidden, side * side, VAE_MAX_LATENT)
    return _classes().ConvVAEClassifier(side, n_classes, spec.width, latent, spec.dropout)


# -- timm ------------------------------------------------------------------------

def _build_timm(name: str, spec, n_classes: int, side: int):
    try:
        import timm
    except ImportError:
        raise ConfigError(f"backbone 'timm:{name}' needs the optional package timm, which is not installed",
                          field=FIELD, fix=f"pip install 'deepmapper[timm]', or use one of: {kinds_doc()}.") \
            from None
    if not name or not timm.is_model(name):
        raise ConfigError(f"unknown timm model '{name}'", field=FIELD,
                          fix="list the names with python -c \"import timm; print(timm.list_models('*resnet*'))\" "
                              "and use backbone timm:<name>.")
    kwargs = dict(pretrained=False, num_classes=n_classes, in_chans=1)  # never download weights
    try:
        try:
            # transformers need the image size for their position embeddings
            model = timm.create_model(name, img_size=side, **kwargs)
        except TypeError:
            model = timm.create_model(name, **kwargs)
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise _unfit(f"timm:{name}", side, exc) from None
    if spec.small_stem:
        _shrink_stem(model)
    _check_forward(model, f"timm:{name}", side)
    return model


def _unfit(kind: str, side: int, exc: Exception) -> ConfigError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return ConfigError(f"backbone '{kind}' cannot take {side}x{side} images ({first})", field=FIELD,
                       fix="pick a model for small images (e.g. timm:resnet10t with small_stem) "
                           "or one of the built-in kinds.")


def _check_forward(model, kind: str, side: int) -> None:
    """Fail at build time, in one line, when a model cannot take side x side images."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, 1, side, side))
    except (RuntimeError, ValueError, AssertionError, ZeroDivisionError) as exc:
        raise _unfit(kind, side, exc) from None
    finally:
        model.train(was_training)


def _shrink_stem(model) -> None:
    """Make a timm conv stem stride 1 and drop its max-pool, for small images.

    Only the first convolution is touched, and only when kernel != stride: a
    patchify layer (kernel == stride, as in ViTs) defines the tokens and is
    left alone.
    """
    import torch.nn as nn

    pools = (nn.MaxPool2d, nn.AvgPool2d)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride != (1, 1) and module.kernel_size != module.stride:
                module.stride = (1, 1)
                for owner in (model, getattr(model, "stem", None)):
                    for attr in ("maxpool", "pool"):
                        if owner is not None and isinstance(getattr(owner, attr, None), pools):
                            setattr(owner, attr, nn.Identity())
            return


# -- registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """A backbone and what the trainer may do with it.

    ``stackable``: only conv/linear/ReLU/dropout/flatten/average-pool modules, no BatchNorm
    buffers, so several arrangements train at once as one stacked model; ``wide``: has a
    per-pixel linear path ``wide`` (plus the ``deep`` rest, summed) that can start at the
    logistic-regression fit; ``channels``: most input channels it takes (2: the features and
    the product of each placed pair, see ``train``).
    """

    build: Callable
    stackable: bool = False
    wide: bool = False
    channels: int = 1


_REGISTRY: dict[str, Kind] = {
    "cnn": Kind(_build_cnn, stackable=True, wide=True, channels=2),
    "cnn_small": Kind(_build_cnn_small, stackable=True, channels=2),
    "cnn_mid": Kind(_build_cnn_mid),
    "resnet18": Kind(_build_resnet18),
    "linear": Kind(_build_linear, stackable=True, channels=2),
    "mlp": Kind(_build_mlp, stackable=True, channels=2),
    "vit": Kind(_build_vit),
    "vae": Kind(_build_vae),
}
_TIMM = Kind(None)
KINDS: tuple[str, ...] = tuple(_REGISTRY) + ("timm:<name>",)
DEFAULT_KIND = "cnn"


def kind_info(kind: str) -> Kind:
    """The registry entry of a kind (timm models: not stackable, no wide path, one channel)."""
    kind = (kind or "").strip()
    if kind.startswith("timm:"):
        return _TIMM
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown backbone '{kind}'", field=FIELD, fix=f"use one of: {kinds_doc()}.")
    return _REGISTRY[kind]


def kinds_doc() -> str:
    return ", ".join(KINDS)


def stackable(kind: str) -> bool:
    """True when several copies can be trained at once as one stacked model."""
    kind = (kind or "").strip()
    return kind in _REGISTRY and _REGISTRY[kind].stackable


def build(spec, n_classes: int, n_features: int, channels: int = 1):
    """Build the model named by ``spec.kind`` for ``n_features`` pixels and ``n_classes`` logits,
    taking ``channels`` input channels (at most ``kind_info(kind).channels``).

    Weights are randomly initialised from torch's global generator (seed it
    first); nothing is ever downloaded.
    """
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes (got {n_classes})", field="labels",
                          fix="give labels with at least two groups.")
    side = square_side(n_features)
    kind = (spec.kind or "").strip()
    if kind.startswith("timm:"):
        return _build_timm(kind[len("timm:"):], spec, n_classes, side)
    info = kind_info(kind)
    if channels > info.channels:
        raise ConfigError(f"backbone '{kind}' takes {info.channels} input channel(s), not {channels}",
                          field=FIELD, fix="use backbone cnn for the pair channel, or --no-pair-channel.")
    if info.channels == 1:
        return info.build(spec, n_classes, side)
    return info.build(spec, n_classes, side, channels)
