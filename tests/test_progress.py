"""Progress where users run it (deepmapper.progress): bars on a terminal; in a log file (not a TTY) at
most one line a minute while training, with epoch, loss, elapsed and estimated time; in a notebook plain
text progress (no ipywidgets) and the run's INFO lines; run.log in the run's output. Fake clocks and
fake streams: no test waits."""
from __future__ import annotations

import io as stdio
import logging

import pytest

from deepmapper._utils import progress


class Clock:
    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


class TTY(stdio.StringIO):
    def isatty(self):
        return True


def test_log_file_gets_at_most_one_line_a_minute(caplog):
    clock = Clock(0.0)
    bar = progress.Progress(60, "training pass 0", "epoch", stream=stdio.StringIO(), clock=clock, upper_bound=True)
    with caplog.at_level(logging.INFO, logger="deepmapper.progress"):
        for epoch in range(1, 31):
            clock.t = 25.0 * epoch          # 25 s per epoch
            bar.update(1, val_loss=0.5 / epoch)
    lines = [r.getMessage() for r in caplog.records]
    # 750 s of training: a line at 75, 150, ... 750 s (every third epoch), never two within a minute
    assert len(lines) == 10
    assert lines[0] == "training pass 0: epoch 3/60, val_loss 0.1667, 1:15 elapsed, at most 23:45 left"
    assert lines[-1] == "training pass 0: epoch 30/60, val_loss 0.01667, 12:30 elapsed, at most 12:30 left"


def test_terminal_gets_a_bar_and_no_lines(caplog):
    stream = TTY()
    bar = progress.Progress(5, "interaction screen", "labelling", stream=stream, clock=Clock(100.0))
    with caplog.at_level(logging.INFO, logger="deepmapper.progress"):
        for _ in range(5):
            bar.update(1, loss=0.25)
    bar.close()
    assert "interaction screen" in stream.getvalue() and not caplog.records


def test_disabled_is_silent(caplog):
    stream = TTY()
    bar = progress.Progress(5, "x", "step", enabled=False, stream=stream, clock=Clock(100.0))
    with caplog.at_level(logging.INFO, logger="deepmapper.progress"):
        bar.update(5)
    assert stream.getvalue() == "" and not caplog.records


def test_notebook_gets_plain_text_and_the_info_lines(monkeypatch):
    """tqdm.auto's widget needs ipywidgets; without it a notebook saw a TqdmWarning and nothing."""
    from tqdm import std

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    stream = stdio.StringIO()                  # a kernel's stderr is no TTY
    bar = progress.Progress(3, "training pass 0", "epoch", stream=stream)
    assert type(bar.bar) is std.tqdm           # plain text, not tqdm.notebook's widget
    bar.update(3)
    bar.close()
    assert "training pass 0" in stream.getvalue()

    pkg, root = logging.getLogger("deepmapper"), logging.getLogger()
    monkeypatch.setattr(pkg, "handlers", [])
    monkeypatch.setattr(root, "handlers", [])
    level = pkg.level
    try:
        handler = progress.notebook_logging()
        assert handler is not None and pkg.handlers == [handler] and pkg.getEffectiveLevel() == logging.INFO
        assert progress.notebook_logging() is None          # once
    finally:
        pkg.setLevel(level)
    monkeypatch.setattr(pkg, "handlers", [])
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    assert progress.notebook_logging() is None               # the user's own logging set-up wins


def test_outside_a_notebook_no_handler_is_added():
    assert not progress.in_notebook() and progress.notebook_logging() is None


@pytest.fixture
def one_minute_per_call(monkeypatch):
    clock = Clock(61.0)
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def test_training_says_where_it_is_in_a_log(tmp_dataset, caplog, one_minute_per_call):
    """Between the wide start and the pass results a log file used to get nothing (55 s on pbmc)."""
    from deepmapper import io
    from deepmapper.engine import data as data_mod, train
    from deepmapper.config import Config

    cfg = Config().with_params({"epochs": 3, "min_epochs": 3, "ig_steps": 2, "attribution_max_samples": 16,
                                "threads": 1, "interactions": False})
    data = data_mod.prepare(io.read_dataset(tmp_dataset("planted", seed=3)), cfg)
    with caplog.at_level(logging.INFO, logger="deepmapper"):
        train.train_passes(data, cfg, [0], progress=True)
    lines = [r.getMessage() for r in caplog.records]
    during = [x for x in lines if x.startswith("training pass 0: epoch")]
    assert [x.split(",")[0] for x in during] == [f"training pass 0: epoch {e}/3" for e in (1, 2, 3)]
    assert all("train_loss" in x and "val_loss" in x and "elapsed" in x and "at most" in x for x in during)
    assert any(x.startswith("pass 0: held-out accuracy") for x in lines)      # and a line per pass


def test_run_writes_its_log_lines_to_run_log(tmp_dataset, tmp_path):
    from deepmapper import io
    from deepmapper.config import Config
    from deepmapper.pipeline.runner import run

    src = tmp_path / "planted.h5ad"
    io.read_dataset(tmp_dataset("planted", seed=4)).write_h5ad(src)
    cfg = Config().with_params({"passes": 1, "epochs": 1, "min_epochs": 1, "ig_steps": 2,
                                "attribution_max_samples": 16, "threads": 1, "interactions": False,
                                "device": "cpu"})
    pkg = logging.getLogger("deepmapper")
    level, handlers = pkg.level, len(pkg.handlers)
    pkg.setLevel(logging.INFO)
    try:
        run([str(src)], tmp_path / "out", cfg, label_key="label", report=False, baselines=False, progress=False)
    finally:
        pkg.setLevel(level)
    text = (tmp_path / "out" / "run.log").read_text()
    assert "device: cpu" in text and "pass 0: held-out accuracy" in text
    # the lines of reading the input, logged before the run had a folder, come first
    assert text.index("dataset: ") < text.index("device: cpu")
    assert not [h for h in pkg.handlers if isinstance(h, logging.FileHandler)]    # detached after the run
    assert len(pkg.handlers) == handlers                                           # the held lines' too
