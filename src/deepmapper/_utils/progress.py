"""Progress where users run it: bars on a terminal, lines in a log file, text in a notebook.

- a terminal (the stream is a TTY): a tqdm bar per loop, as before;
- a notebook (Jupyter's kernel): plain tqdm text on stderr (``tqdm.auto`` needs ipywidgets and
  otherwise prints a TqdmWarning and nothing else), and :func:`notebook_logging` shows the run's
  INFO lines (matrix used, normalisation, accuracy) when nothing else handles them;
- anything else (a log file, nohup, a scheduler, Nextflow's ``.command.log``): no bar, but an
  INFO line at most once per ``every`` seconds (60) while a loop runs, with the step, the loss,
  the elapsed time and an estimate of what is left. Each pass already ends with its own line.

:func:`log_to_file` copies the package's log lines into a file (``run.log`` in a run's directory).
"""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("deepmapper.progress")

LINE_EVERY_S = 60.0   # at most one progress line a minute in a log file


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _fmt(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One loop's progress (``total`` steps of ``unit``): a bar or throttled log lines.

    ``update(n, **values)`` after each step; ``values`` (e.g. ``loss=0.41``) go into the bar's
    postfix and the log line. ``stream``: where a bar would draw (stderr); ``clock``: seconds
    (tests pass a fake one). ``upper_bound``: ``total`` is a limit the loop may stop before
    (epochs under early stopping), so the estimate says "at most".
    """

    def __init__(self, total: int, desc: str, unit: str, *, enabled: bool = True, stream=None,
                 clock=None, every: float = LINE_EVERY_S, upper_bound: bool = False,
                 logger: logging.Logger | None = None):
        self.total, self.desc, self.unit, self.every, self.upper = total, desc, unit, every, upper_bound
        self.clock, self.done, self.bar, self.lines = clock or time.monotonic, 0, None, enabled
        self.log = logger or log
        self.t0 = self.last = self.clock()
        stream = sys.stderr if stream is None else stream
        if not enabled:
            self.lines = False
        elif in_notebook() or _isatty(stream):
            from tqdm import tqdm   # plain tqdm: text in a notebook, no ipywidgets needed

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False)
            self.lines = False

    def update(self, n: int = 1, **values) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if values:
                self.bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=False)
            return
        if not self.lines:
            return
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.t0
        left = elapsed / max(self.done, 1) * max(self.total - self.done, 0)
        what = ", ".join(f"{k} {_short(v)}" for k, v in values.items())
        self.log.info("%s: %s %d/%d%s, %s elapsed, %s%s left", self.desc, self.unit, self.done, self.total,
                      f", {what}" if what else "", _fmt(elapsed), "at most " if self.upper else "~", _fmt(left))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def notebook_logging(level: int = logging.INFO) -> logging.Handler | None:
    """In a notebook where neither the package's logger nor the root logger has a handler, show the
    package's INFO lines on stderr (returns the handler added, else None). Elsewhere: nothing."""
    pkg = logging.getLogger("deepmapper")
    if not in_notebook() or pkg.handlers or logging.getLogger().handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    pkg.addHandler(handler)
    if pkg.level == logging.NOTSET or pkg.level > level:
        pkg.setLevel(level)
    return handler


class _Held(logging.Handler):
    """Records kept in memory until the log file exists (:func:`hold_log_lines`)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def hold_log_lines() -> logging.Handler:
    """Keep the package's log lines from now on (reading the input, before a run has a folder to
    write them to); :func:`log_to_file` given the handler writes them first."""
    handler = _Held()
    logging.getLogger("deepmapper").addHandler(handler)
    return handler


def log_to_file(path, held: logging.Handler | None = None) -> logging.Handler:
    """Copy the package's log lines (those the configured level lets through: -q keeps the file to
    warnings too) into ``path`` until :func:`stop_log_file` is called with the returned handler;
    the lines ``held`` (:func:`hold_log_lines`) come first, and that handler is detached."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg = logging.getLogger("deepmapper")
    if held is not None:
        pkg.removeHandler(held)
        for record in getattr(held, "records", []):     # they passed the logger's level when logged
            handler.handle(record)
    pkg.addHandler(handler)
    return handler


def stop_log_file(handler: logging.Handler | None) -> None:
    """Detach and close a handler of :func:`log_to_file` (idempotent)."""
    if handler is not None:
        logging.getLogger("deepmapper").removeHandler(handler)
        handler.close()
