"""SIGTERM and SIGINT as exceptions, and stopping the child processes a step started.

The CLI installs :func:`install`: SIGTERM raises :class:`Terminated` (exit 143), SIGINT
raises ``KeyboardInterrupt`` (exit 130) as Python does. Either unwinds the run normally,
so files are closed, the outdir lock is released and finished passes stay for ``--resume``.
Before raising, the children of this process (MultiQC, HISAT2, ...) are sent SIGTERM:
``subprocess.run`` kills the one it waits for, this also reaches any started otherwise.
"""
from __future__ import annotations

import os
import signal


class Terminated(BaseException):
    """The process received SIGTERM (a BaseException, like KeyboardInterrupt: no ``except Exception``
    catches it)."""

    signum = signal.SIGTERM
    exit_code = 128 + signal.SIGTERM


def children(pid: int | None = None) -> list[int]:
    """Process ids whose parent is ``pid`` (this process by default), from /proc; [] elsewhere."""
    pid = os.getpid() if pid is None else pid
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1].isdigit() and int(fields[1]) == pid:
            out.append(int(name))
    return out


def stop_children(sig: int = signal.SIGTERM) -> list[int]:
    """Send ``sig`` to every child of this process and to their children; returns the pids reached."""
    reached = []
    todo = children()
    while todo:
        pid = todo.pop()
        todo.extend(children(pid))
        try:
            os.kill(pid, sig)
            reached.append(pid)
        except OSError:
            pass
    return reached


def _on_term(signum, frame):
    stop_children()
    raise Terminated()


def _on_int(signum, frame):
    stop_children()
    raise KeyboardInterrupt()


def install() -> None:
    """SIGTERM -> :class:`Terminated`, SIGINT -> KeyboardInterrupt (both after stopping children).

    Only from the main thread (signal handlers can be set nowhere else); a no-op elsewhere.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_int)
    if hasattr(signal, "SIGXFSZ"):   # a file-size limit becomes an OSError (EFBIG), not a silent kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
