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
