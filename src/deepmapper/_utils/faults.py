"""Fault injection: kill this process at a named point of ``deepmapper run`` (tests, bench/faults.py).

``DEEPMAPPER_FAULT=POINT[:K]`` names the point; ``DEEPMAPPER_FAULT_SIGNAL`` the signal
(``KILL``, the default, ``TERM`` or ``INT``). The points, in the order a run meets them:

- ``ingest``: ``dataset.h5ad`` is written to its temporary name, not yet renamed;
- ``pass:K``: pass file K has just been written (``pass`` alone: the first pass);
- ``accumulate``: ``findings.tsv`` is written, ``findings.json`` not yet;
- ``report``: the report step has written its files (report.html, MultiQC), nothing published;
- ``publish:0``: the run directory is complete with its manifest, nothing of it in the outdir yet;
  ``publish:1``: half of the run's files are moved into the outdir (a SIGKILL leaves the journal,
  which the next run finishes; SIGINT/SIGTERM are held back until the publish is done);
  ``publish:2``: ``manifest.json`` is in place, the journal and the run directory not yet removed.

With no variable set, :func:`point` is one dictionary lookup.
"""
from __future__ import annotations

import logging
import os
import signal
import time

ENV = "DEEPMAPPER_FAULT"
SIGNAL_ENV = "DEEPMAPPER_FAULT_SIGNAL"
POINTS = ("ingest", "pass", "accumulate", "report", "publish")

log = logging.getLogger(__name__)


def point(name: str, k: int | None = None) -> None:
    """Send the configured signal to this process when ``DEEPMAPPER_FAULT`` names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, _, want_k = spec.partition(":")
    if want != name:
        return
    if want_k:
        if k is None or int(want_k) != int(k):
            return
    elif k not in (None, 0):
        return
    sig = getattr(signal, "SIG" + os.environ.get(SIGNAL_ENV, "KILL").upper().removeprefix("SIG"))
    log.warning("fault injection: %s at %s%s", sig.name, name, "" if k is None else f":{k}")
    os.kill(os.getpid(), sig)
    if getattr(signal.getsignal(sig), "held_back", False):
        return       # held back (a publish under way): it acts when the publish is done
    time.sleep(30)   # a handled signal raises here; an unhandled one has ended the process already
