"""Where the model trains: the device choice and what to say when a GPU is missing.

``select_device("auto")`` is CUDA when torch sees a GPU, else the CPU (a CPU run is
always valid); ``"cuda"`` without a visible GPU is a ConfigError that says why torch
sees none. :func:`warn_if_gpu_missing` is for tasks that were *meant* for a GPU (the
pipeline's ``gpu`` profile passes ``--expect-gpu`` to ``train-pass``): when torch
sees no GPU it logs one loud line instead of training on the CPU without a word.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def _why_no_gpu() -> str:
    import torch

    parts = [f"torch {torch.__version__}"]
    if not torch.version.cuda:
        parts.append("a CPU-only build (no CUDA)")
    else:
        parts.append(f"built for CUDA {torch.version.cuda}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    parts.append(f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset")
    return ", ".join(parts)


def select_device(name: str = "auto"):
    """``cuda`` when asked for or available (auto), else CPU; CPU is always a valid run."""
    import torch

    from deepmapper.errors import ConfigError

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device 'cuda' requested but no CUDA GPU is visible ({_why_no_gpu()})",
                          field="run.device",
                          fix="use --device auto or cpu, or run on a GPU node (pipeline: -profile gpu and the "
                              "CUDA image).")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def warn_if_gpu_missing(expected: bool) -> bool:
    """Log one loud line when a GPU was expected and torch sees none; True when it is missing."""
    if not expected:
        return False
    import torch

    if torch.cuda.is_available():
        return False
    log.warning("GPU EXPECTED BUT NOT VISIBLE: this task was meant to train on a GPU and trains on the CPU "
                "instead (%s). Check the GPU request (accelerator / --gres), the CUDA image and "
                "--gpus all / --nv.", _why_no_gpu())
    return True
