"""The device choice (deepmapper.device): `--device cuda` without a GPU fails in one clear line; a task
meant for a GPU (`--expect-gpu`, the pipeline's gpu profile) that sees none says so in one loud line,
trains on the CPU and records it in its verdicts. The commands run with CUDA_VISIBLE_DEVICES='' (no GPU
visible, on any machine); on a machine with a GPU the last test also checks the quiet GPU path."""
from __future__ import annotations

import json
import logging
import os
import subprocess

import pytest

from deepmapper import device
from deepmapper.errors import ConfigError


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cuda_without_a_gpu_is_a_clear_error(no_gpu):
    with pytest.raises(ConfigError) as err:
        device.select_device("cuda")
    text = err.value.format()
    assert "no CUDA GPU is visible" in text and "torch " in text and "CUDA_VISIBLE_DEVICES" in text
    assert "--device auto or cpu" in text
    assert device.select_device("auto").type == "cpu" and device.select_device("cpu").type == "cpu"


def test_expected_gpu_missing_is_one_loud_line(no_gpu, caplog):
    with caplog.at_level(logging.WARNING):
        assert device.warn_if_gpu_missing(True) is True
        assert device.warn_if_gpu_missing(False) is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("GPU EXPECTED BUT NOT VISIBLE") and "\n" not in lines[0]


def test_expected_gpu_present_is_silent(monkeypatch, caplog):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with caplog.at_level(logging.WARNING):
        assert device.warn_if_gpu_missing(True) is False
    assert not caplog.records
    assert device.select_device("auto").type == "cuda"


NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def test_train_pass_device_cuda_fails_before_training(tmp_path):
    dataset = tmp_path / "dataset.h5ad"
    dataset.touch()  # never read: the device is checked first
    done = subprocess.run(["deepmapper", "train-pass", "--dataset", str(dataset), "--outdir", str(tmp_path / "p"),
                           "--device", "cuda"], capture_output=True, text=True, timeout=300, env=NO_GPU)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "device 'cuda' requested but no CUDA GPU is visible" in errors[0]
    assert not (tmp_path / "p").exists()


def train_pass_expecting_gpu(pbmc_h5ad, tmp_path, env):
    ds = tmp_path / "dataset.h5ad"
    if not ds.exists():
        assert subprocess.run(["deepmapper", "ingest", "--input", str(pbmc_h5ad), "--label-key", "bulk_labels",
                               "--out", str(ds)], capture_output=True, timeout=300).returncode == 0
    out = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
    done = subprocess.run(["deepmapper", "train-pass", "--dataset", str(ds), "--outdir", str(out),
                           "--count", "1", "--epochs", "2", "--min-epochs", "1", "--patience", "1", "--ig-steps", "4",
                           "--attribution-max-samples", "32", "--threads", "1", "--expect-gpu",
                           "--verdicts", str(out / "verdicts_0.json")], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-1500:]
    loud = [line for line in done.stderr.splitlines() if "GPU EXPECTED BUT NOT VISIBLE" in line]
    return loud, json.loads((out / "verdicts_0.json").read_text())


def test_train_pass_expecting_a_gpu_says_so_when_none_is_visible(pbmc_h5ad, tmp_path):
    import torch

    loud, verdicts = train_pass_expecting_gpu(pbmc_h5ad, tmp_path, NO_GPU)
    assert len(loud) == 1
    assert verdicts["device"] == "cpu" and verdicts["gpu_expected"] is True
    assert [v["pass_index"] for v in verdicts["passes"]] == [0]
    # where a GPU is visible, the same task is quiet and trains on it
    loud, verdicts = train_pass_expecting_gpu(pbmc_h5ad, tmp_path, dict(os.environ))
    gpu = torch.cuda.is_available()
    assert (len(loud), verdicts["device"]) == ((0, "cuda") if gpu else (1, "cpu"))


# -- one device-and-threads set-up, obeyed by every step ---------------------------------------

@pytest.fixture
def accelerators(monkeypatch):
    """Pretend availability of CUDA and MPS: ``accelerators(cuda=..., mps=...)``."""
    import torch

    def set_(cuda: bool, mps: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU")
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(device, "_said", set())

    return set_


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"),
                                               (True, False, "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(accelerators, caplog, cuda, mps, expected):
    accelerators(cuda, mps)
    with caplog.at_level(logging.INFO, logger="deepmapper.device"):
        assert device.select_device("auto").type == expected
        assert device.select_device("auto").type == expected
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith(f"device: {expected} (auto: ")   # the choice and why, once
    assert device.select_device("cpu").type == "cpu"


def test_mps_asked_for_without_mps_is_a_clear_error(accelerators):
    accelerators(True, False)
    with pytest.raises(ConfigError) as err:
        device.select_device("mps")
    text = err.value.format()
    assert "device 'mps' requested" in text and "--device auto or cpu" in text


def test_float64_accumulators_leave_mps_for_the_cpu():
    import torch

    assert device.float64_device(torch.device("mps")).type == "cpu"
    assert device.float64_device(torch.device("cpu")).type == "cpu"
    assert device.float64_device(torch.device("cuda")).type == "cuda"


def test_cpu_processes_follow_threads_then_the_affinity_mask(monkeypatch):
    """--threads N gives N worker processes; 0 gives the CPUs the process may run on (a scheduler's or
    a container's cpuset), not the machine's count; without an affinity mask, the machine's count."""
    assert device.cpu_processes(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert device.cpu_processes(0) == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    assert device.cpu_processes(0) == 64


def _spy_devices(monkeypatch):
    """Record the device of every tensor the screen and the training loop create for their data."""
    from deepmapper.engine import interactions, train

    seen = []
    real_cols, real_feed = interactions._Columns.__init__, train._Feeder.__init__

    def cols(self, X, dev):
        seen.append(("screen", str(dev)))
        real_cols(self, X, dev)

    def feed(self, data, dev):
        seen.append(("train", str(dev)))
        real_feed(self, data, dev)

    monkeypatch.setattr(interactions._Columns, "__init__", cols)
    monkeypatch.setattr(train._Feeder, "__init__", feed)
    return seen


SMALL_TRAIN = {"epochs": 1, "min_epochs": 1, "patience": 1, "ig_steps": 2, "attribution_max_samples": 16, "backbone": "cnn_small"}


def test_interactions_and_train_pass_obey_device_and_threads(tmp_dataset, tmp_path, monkeypatch, accelerators):
    """`deepmapper interactions --device cpu --threads 1` and `train-pass` without --interactions-tsv once
    picked CUDA whenever one was visible and never set the threads: every step now gets setup's choice."""
    import torch
    from click.testing import CliRunner

    from deepmapper.cli import cli as main

    ds = tmp_dataset("planted", seed=1)
    accelerators(True, True)                       # a GPU and MPS "visible": --device cpu must still win
    seen = _spy_devices(monkeypatch)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:
        opts = ["--device", "cpu", "--threads", str(want)]
        done = CliRunner().invoke(main, ["interactions", "--dataset", str(ds), "--outdir", str(tmp_path / "i"),
                                         *opts], catch_exceptions=False)
        assert done.exit_code == 0, done.output
        assert torch.get_num_threads() == want
        torch.set_num_threads(before)
        flags = [x for k, v in SMALL_TRAIN.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        done = CliRunner().invoke(main, ["train-pass", "--dataset", str(ds), "--outdir", str(tmp_path / "p"),
                                         *flags, *opts], catch_exceptions=False)
        assert done.exit_code == 0, done.output
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
    assert seen and {d for _, d in seen} == {"cpu"}, seen
    assert {step for step, _ in seen} == {"screen", "train"}


def test_run_hands_one_device_to_every_step(tmp_dataset, tmp_path, monkeypatch, accelerators):
    """The in-memory analysis (run, tl) asks for the device once and the screen and training use it."""
    import torch

    from deepmapper import io
    from deepmapper.config import Config
    from deepmapper.pipeline.runner import analyse

    accelerators(True, True)
    calls = []
    real = device.setup
    monkeypatch.setattr(device, "setup", lambda cfg: calls.append(cfg.run.device) or real(cfg))
    seen = _spy_devices(monkeypatch)
    before = torch.get_num_threads()
    try:
        cfg = Config().with_params({**SMALL_TRAIN, "passes": 1, "device": "cpu", "threads": 1})
        analyse(io.read_dataset(tmp_dataset("planted", seed=2)), cfg, progress=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert calls == ["cpu"]
    assert {d for _, d in seen} == {"cpu"} and {s for s, _ in seen} == {"screen", "train"}
