"""The results directory of ``deepmapper run``: one run's files at a time, switched in one step.

Layout of ``--outdir OUT``::

    OUT/findings.tsv -> .deepmapper/current/findings.tsv     (one link per published name)
    OUT/passes       -> .deepmapper/current/passes
    ...
    OUT/.deepmapper/lock                  advisory lock (fcntl.flock) + who holds it
    OUT/.deepmapper/current -> runs/RUN_ID
    OUT/.deepmapper/runs/RUN_ID/          every file of one run, manifest.json listing them

Each run writes into its own ``runs/RUN_ID`` directory. Publishing makes a link
``OUT/NAME -> .deepmapper/current/NAME`` for every name the run wrote (links
that already exist are left alone) and then replaces the ``current`` link with
one ``rename``: before it every link resolves into the earlier run, after it into
the new one, so a reader never sees a mix. Links whose name the new run did not
write (``report.html`` after a ``--no-report`` rerun) then point at nothing and
are removed, and so is the earlier run's directory.

A run directory that is not ``current`` when a run takes the lock is left over
from an interrupted run: ``--resume`` reuses its verified passes, otherwise it is
removed. The lock is held from before the input is read until the run has been
published; a second run fails at once naming the holder, or waits (``--wait``).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path

from deepmapper._utils import faults
from deepmapper._utils.atomic import write_json
from deepmapper.errors import ConfigError, DeepMapperError
from deepmapper.results import layout

log = logging.getLogger(__name__)

META = ".deepmapper"
MANIFEST = layout.MANIFEST
KNOWN = layout.PUBLISHED  # what a run may publish (name -> is a folder)
MIN_FREE_BYTES = 16 * 1024 * 1024


class OutdirBusy(DeepMapperError):
    """Another run holds the outdir's lock."""

    exit_code = 75   # EX_TEMPFAIL: try again later


class OutputError(DeepMapperError):
    """The output location cannot be written (permissions: exit 2; no space: exit 3)."""

    def __init__(self, problem: str, *, exit_code: int = 2, **kw):
        super().__init__(problem, **kw)
        self.exit_code = exit_code


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def os_error(err: OSError, *, what: str = "") -> OutputError:
    """One-line error for an OSError while writing results (exit 3 when space ran out, else 2)."""
    where = err.filename or what or None
    reason = (err.strerror or str(err)).splitlines()[0].strip()
    code = err.errno
    if code in _NO_SPACE or "No space left" in str(err):
        return OutputError(f"no space left while writing ({reason})", where=where, field="--outdir", exit_code=3,
                           fix="free space on that disk, or choose an --outdir on another disk (passes that "
                               "finished are kept for --resume).")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write here ({reason})", where=where, field="--outdir",
                           fix="choose a writable --outdir, or fix its permissions.")
    return OutputError(f"cannot write the results ({reason})", where=where, field="--outdir",
                       exit_code=3 if code == errno.EIO else 2, fix="check the --outdir path and the disk.")


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OutDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = self.path / META
        self.runs = self.meta / "runs"
        self.current_link = self.meta / "current"
        self.lock_path = self.meta / "lock"
        self.created = False

    # -- before anything is read ------------------------------------------------------------
    def check(self) -> None:
        """Exists as a directory (or can be created), writable, some space free, no foreign entry
        where a result goes. Raises OutputError / ConfigError; writes nothing that stays."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ConfigError("exists and is not a directory", where=str(p), field="--outdir",
                              fix="choose another --outdir, or move that file away.")
        base = p
        while not base.exists():
            if base.parent == base:
                break
            base = base.parent
        if not base.is_dir():
            raise ConfigError(f"{base} is not a directory, so the outdir cannot be created", where=str(p),
                              field="--outdir", fix="choose another --outdir.")
        try:
            fd, probe = tempfile.mkstemp(prefix=".deepmapper-probe-", dir=base)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise os_error(err, what=str(base)) from None
        free = shutil.disk_usage(base).free
        if free < MIN_FREE_BYTES:
            raise OutputError(f"only {free / 2**20:.1f} MB free on the disk of {base}", where=str(p),
                              field="--outdir", exit_code=3,
                              fix="free space or choose an --outdir on another disk.")
        if p.is_dir():
            self._check_entries()

    def _check_entries(self) -> None:
        for name, is_dir in KNOWN.items():
            entry = self.path / name
            if self._is_ours(entry) or not os.path.lexists(entry):
                continue
            if not entry.is_symlink() and entry.is_dir() == is_dir:
                # results of an earlier DeepMapper version, or a report rewritten in place by
                # 'deepmapper report': replaced when this run publishes, as before
                continue
            kind = "a link" if entry.is_symlink() else ("a directory" if entry.is_dir() else "a file")
            raise ConfigError(f"{kind} named '{name}' is in the way of the results (not written by "
                              "'deepmapper run')", where=str(entry), field="--outdir",
                              fix="move it away, or choose another --outdir.")

    def _is_ours(self, entry: Path) -> bool:
        return entry.is_symlink() and os.readlink(entry) == f"{META}/current/{entry.name}"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.meta if self.meta.exists() else self.path).free

    # -- the lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, wait: bool = False, run_id: str = ""):
        """Hold the outdir's advisory lock; OutdirBusy at once when another run holds it (or wait)."""
        if not self.path.exists():
            self.created = True
        announced = False
        while True:
            # (again after waiting: a run that failed in an outdir it created removes the outdir)
            self.meta.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                if not wait:
                    os.close(fd)
                    raise OutdirBusy(f"another 'deepmapper run' is writing here ({holder})", where=str(self.path),
                                     field="--outdir",
                                     fix="wait until it ends, add --wait to queue behind it, or choose another "
                                         "--outdir.") from None
                if not announced:
                    log.warning("%s is in use (%s); waiting for it (--wait)", self.path, holder)
                    announced = True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            # the file may have been replaced while we waited: hold the one at the path
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            yield self
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def _holder(self, fd: int) -> str:
        for _ in range(20):            # the holder writes its line just after taking the lock
            try:
                text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                info = json.loads(text) if text else None
            except (OSError, ValueError):
                info = None
            if info:
                return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}, "
                        f"run {info.get('run_id')}")
            time.sleep(0.05)
        return "holder not known"

    # -- runs ------------------------------------------------------------------------------------
    def current(self) -> Path | None:
        """The published run's directory, or None."""
        if not self.current_link.is_symlink():
            return None
        target = self.meta / os.readlink(self.current_link)
        return target if target.is_dir() else None

    def leftovers(self) -> list[Path]:
        """Run directories other than the published one (interrupted runs), oldest first."""
        if not self.runs.is_dir():
            return []
        cur = self.current()
        return sorted((d for d in self.runs.iterdir() if d.is_dir() and (cur is None or d.name != cur.name)),
                      key=lambda d: d.name)

    def new_run(self, run_id: str) -> Path:
        d = self.runs / run_id
        d.mkdir(parents=True, exist_ok=False)
        return d

    def discard(self, run_dir: Path) -> None:
        shutil.rmtree(run_dir, ignore_errors=True)

    def cleanup_after_failure(self) -> None:
        """After a run that published nothing into an outdir it created itself: remove what it made."""
        if not self.created or self.current() is not None:
            return
        if self.runs.is_dir() and any(self.runs.iterdir()):
            return   # finished passes kept for --resume
        with contextlib.suppress(OSError):
            shutil.rmtree(self.runs, ignore_errors=True)
            self.lock_path.unlink()
            self.meta.rmdir()
            self.path.rmdir()

    # -- publishing -----------------------------------------------------------------------------
    def publish(self, run_dir: Path, run_id: str) -> dict:
        """Write the manifest, make the links, switch ``current`` to ``run_dir`` in one rename, then
        remove what belonged to the earlier run only."""
        manifest = write_manifest(run_dir, run_id)
        names = sorted(e.name for e in run_dir.iterdir() if not e.name.startswith("."))
        displaced = self.meta / f"displaced-{run_id}"
        made = []
        try:
            for name in names:
                link = self.path / name
                if self._is_ours(link):
                    continue
                if os.path.lexists(link):      # an earlier version's result (checked up front): moved aside
                    displaced.mkdir(parents=True, exist_ok=True)
                    os.replace(link, displaced / name)
                tmp = self.path / f".{name}.link-{run_id}"
                os.symlink(f"{META}/current/{name}", tmp)
                os.replace(tmp, link)
                made.append(link)
            for name in KNOWN:             # an earlier version's result this run does not write: stale
                entry = self.path / name
                if name not in names and os.path.lexists(entry) and not self._is_ours(entry):
                    displaced.mkdir(parents=True, exist_ok=True)
                    os.replace(entry, displaced / name)
            earlier = self.current()
            faults.point("publish", 0)
            tmp = self.meta / f".current-{run_id}"
            os.symlink(f"runs/{run_dir.name}", tmp)
            os.replace(tmp, self.current_link)          # the one step that publishes the run
        except BaseException:
            for link in made:                           # not switched: the new links point at nothing
                if not link.exists():
                    with contextlib.suppress(OSError):
                        link.unlink()
            if displaced.is_dir():                      # and an earlier version's results go back
                for entry in displaced.iterdir():
                    with contextlib.suppress(OSError):
                        if os.path.lexists(self.path / entry.name):
                            (self.path / entry.name).unlink()
                        os.replace(entry, self.path / entry.name)
                shutil.rmtree(displaced, ignore_errors=True)
            raise
        _fsync_dir(self.meta)
        faults.point("publish", 1)
        for entry in self.path.iterdir():           # links the new run did not write: now dangling
            if self._is_ours(entry) and entry.name not in names:
                entry.unlink()
        if earlier is not None and earlier.resolve() != run_dir.resolve():
            shutil.rmtree(earlier, ignore_errors=True)
        shutil.rmtree(displaced, ignore_errors=True)
        return manifest


def write_manifest(run_dir: Path, run_id: str) -> dict:
    """``manifest.json``: the run id and the SHA-256 of every file of the run (relative paths)."""
    files = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and rel != MANIFEST and not any(part.startswith(".") for part in rel.split("/")):
            files[rel] = sha256_file(path)
    manifest = {"run_id": run_id, "files": files}
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def check_published(outdir: str | os.PathLike) -> dict:
    """Verify that what ``outdir`` shows is exactly one run's set: every file listed in the manifest,
    with its checksum, and nothing else. Returns the manifest; raises AssertionError otherwise."""
    outdir = Path(outdir)
    manifest = json.loads((outdir / MANIFEST).read_text())
    seen = {}
    for entry in outdir.iterdir():
        if not (entry.is_symlink() and os.readlink(entry) == f"{META}/current/{entry.name}"):
            continue     # the user's own files, the hidden .deepmapper
        files = [(f, f.relative_to(outdir).as_posix()) for f in entry.rglob("*")] if entry.is_dir() \
            else [(entry, entry.name)]
        for f, rel in files:
            if f.is_file() and not any(part.startswith(".") for part in rel.split("/")):
                seen[rel] = f
    seen.pop(MANIFEST, None)
    listed = manifest["files"]
    assert sorted(seen) == sorted(listed), (sorted(set(seen) ^ set(listed)))[:10]
    for rel, path in seen.items():
        assert sha256_file(path) == listed[rel], f"{rel} is not the file of run {manifest['run_id']}"
    info = json.loads((outdir / layout.RUN_INFO).read_text())
    assert info["run_id"] == manifest["run_id"]
    return manifest


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
