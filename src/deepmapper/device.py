"""Where the model trains and with how many threads: the one set-up every entry point calls.

:func:`setup` (threads, then the device) is called once by every entry point that computes
(``run``, ``tl.rank_features``, ``train-pass``, ``interactions``, the in-memory analysis) and its
device is handed to every step (the pair screen, training, attribution, AUCell); nothing else
chooses a device or sets threads. ``auto`` is CUDA when torch sees a GPU, else Apple MPS where this
torch has it (``torch.backends.mps.is_available()``), else the CPU (a CPU run is always valid). The
choice and its reason are logged once per process. ``cuda`` or ``mps`` asked for and not there is a
ConfigError that says why torch sees none. :func:`warn_if_gpu_missing` is for tasks that were *meant*
for a GPU (the pipeline's ``gpu`` profile passes ``--expect-gpu`` to ``train-pass``): when torch sees
no GPU it logs one loud line instead of training on the CPU without a word.

MPS lacks some operators and float64. ``PYTORCH_ENABLE_MPS_FALLBACK=1`` is set (unless the user set
it) when this module is imported, so a missing operator runs on the CPU instead of raising; the steps
that keep float64 accumulators (the pair screen's null histogram, AUCell's exact sums) keep them on
the CPU (:func:`float64_device`); training stays float32 and without autocast on MPS, as on the CPU.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

if sys.platform == "darwin":   # read by torch when an MPS operator is missing; harmless elsewhere
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

_said: set = set()             # (asked, chosen) pairs already logged in this process


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


def mps_available() -> bool:
    """Apple Metal (MPS) usable by this torch (False on builds without the backend)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _choose(name: str):
    """(torch.device, reason) for a device name: auto, cpu, cuda or mps."""
    import torch

    from deepmapper.errors import ConfigError

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device 'cuda' requested but no CUDA GPU is visible ({_why_no_gpu()})",
                          field="run.device",
                          fix="use --device auto or cpu, or run on a GPU node (pipeline: -profile gpu and the "
                              "CUDA image).")
    if name == "mps" and not mps_available():
        raise ConfigError("device 'mps' requested but this torch has no usable Apple MPS backend "
                          f"(torch {torch.__version__}, {sys.platform})", field="run.device",
                          fix="use --device auto or cpu (MPS needs Apple Silicon, macOS 12.3+ and an arm64 torch).")
    if name == "cuda":
        return torch.device("cuda"), "asked for"
    if name == "mps":
        return torch.device("mps"), "asked for"
    if name == "cpu":
        return torch.device("cpu"), "asked for"
    if torch.cuda.is_available():
        return torch.device("cuda"), f"auto: CUDA GPU visible ({_device_name(torch.device('cuda'))})"
    if mps_available():
        return torch.device("mps"), "auto: no CUDA GPU, Apple MPS available"
    return torch.device("cpu"), f"auto: no CUDA GPU or Apple MPS ({_why_no_gpu()})"


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(0)
        except Exception:   # a mocked or vanished GPU: the name is only for the log line
            return "CUDA GPU"
    return device.type


def select_device(name: str = "auto"):
    """The device for ``name`` (auto, cpu, cuda, mps); logs the choice and its reason once per process."""
    device, reason = _choose(name)
    if (name, device.type) not in _said:
        _said.add((name, device.type))
        log.info("device: %s (%s)", device.type, reason)
    return device


def setup(cfg):
    """The one device-and-threads set-up of an entry point: ``cfg.run.threads`` (0 leaves torch's
    default) applied to torch, then the device of ``cfg.run.device``, logged with its reason (once:
    an entry point calls this once). Returns the torch.device every step of the entry point is handed."""
    import torch

    threads = cfg.run.threads
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    device, reason = _choose(cfg.run.device)
    _said.add((cfg.run.device, device.type))
    log.info("device: %s (%s); %d torch threads", device.type, reason, torch.get_num_threads())
    return device


def cpu_processes(threads: int) -> int:
    """Worker processes for CPU work outside torch (the sample-level test's PyDESeq2 fits): ``threads``
    when set, else the CPUs this process may run on (its affinity mask, which schedulers and
    containers set; the machine's count where there is none)."""
    if threads:
        return int(threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                  # macOS, Windows: no affinity mask
        return max(1, os.cpu_count() or 1)


def float64_device(device):
    """Where a float64 accumulator lives: the device itself, except MPS (no float64) -> the CPU."""
    import torch

    return torch.device("cpu") if device.type == "mps" else device


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
