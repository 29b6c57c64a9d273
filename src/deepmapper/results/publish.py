"""The results directory of ``deepmapper run``: plain files, one run's set at a time.

Layout of ``--outdir OUT``::

    OUT/findings.tsv, OUT/passes/pass_000.npz, ...  plain files: copy, archive, open them anywhere
    OUT/manifest.json                   which run they come from: run_id and every file's SHA-256
    OUT/.deepmapper/lock                advisory lock (fcntl.flock) + who holds it
    OUT/.deepmapper/runs/RUN_ID/        a run being written (or an interrupted one, kept for --resume)
    OUT/.deepmapper/publishing.json     the journal, only while a run is being published

Each run writes into its own ``runs/RUN_ID`` directory, so a failed or killed run never touches the
published results. Publishing moves the run's files into ``OUT`` with one ``rename`` each (the run
directory is inside ``OUT``, so this is the same filesystem: no copy, no extra space), then moves
``manifest.json`` last: it is the commit record. The steps, under the lock:

1. ``publishing.json`` is written (atomically): the run, its files, and the earlier run's files
   that the new run does not write (``report.html`` after a ``--no-report`` rerun);
2. the earlier ``manifest.json`` is removed: from here until step 5 ``OUT`` has no manifest, so
   a reader can tell a set that is being replaced from a published one;
3. each file is renamed into place (replacing the earlier run's file of the same name);
4. the earlier run's files that the new run does not write are removed;
5. ``manifest.json`` is renamed into place, then the journal and the empty run directory go.

Why not keep links (the earlier layout: ``OUT/NAME -> .deepmapper/current/NAME`` and one rename of
``current``)? That switch is atomic for readers, but the results are then links into a hidden
directory: ``tar`` and ``zip`` archive dangling links, and deleting ``.deepmapper`` (it looks like a
cache) deletes the results. POSIX has no atomic rename of many files, so plain files trade the
readers' view during steps 2-5 (20-290 ms measured for a 43-file pbmc68k_reduced run on a busy
2-core machine) for results that are ordinary files. What a kill leaves stays one run's set:
SIGINT and SIGTERM are held back from step 1 to step 5 (the run is published, then the signal
acts); a SIGKILL or a crash in steps 1-5 leaves the journal, and the
next command that takes the lock (``deepmapper run`` into ``OUT``) first finishes that publish
from the journal (every step can be redone), so ``OUT`` holds the earlier set (killed before step
1) or the new one, and never files of two runs under one manifest.

Which files are ours: those ``manifest.json`` lists, the links of the earlier layout, the files of
a results directory of an earlier version (plain files with ``run_info.json``), and a
``report.html`` or ``mqc/deepmapper_*`` that ``deepmapper report`` wrote. Any other file where a
result goes, also inside a results folder (``passes/notes.txt``, an nf-core ``multiqc/``), is the
user's: the run refuses it (exit 2) before reading the input, and a publish removes only ours.

The lock is held from before the input is read until the run has been published; a second run
fails at once naming the holder, or waits (``--wait``). A run directory left when a run takes the
lock is from an interrupted run: ``--resume`` reuses its verified passes, otherwise it is removed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
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


class OutDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = self.path / META
        self.runs = self.meta / "runs"
        self.journal = self.meta / JOURNAL
        self.lock_path = self.meta / "lock"
        self.legacy_current = self.meta / "current"   # the link layout of earlier versions
        self.made: list[Path] = []      # directories this run created (outdir and missing parents)
        self.made_meta = False          # whether this run created .deepmapper (removed again after a failure)

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
        if self.journal.exists():
            return        # an interrupted publish: its files are ours, finished under the lock
        ours = self._ours()
        for name, is_dir in KNOWN.items():
            entry = self.path / name
            if not os.path.lexists(entry) or self._is_legacy_link(entry):
                continue
            if not entry.is_symlink() and entry.is_dir() == is_dir:
                # ours: what manifest.json lists, an earlier version's results, a report that
                # 'deepmapper report' wrote; never a file of the user's, also not inside a results folder
                foreign = next((f for f in _files(entry) if not ours(f.relative_to(self.path).as_posix())), None)
                if foreign is None:
                    continue
                where = "" if foreign == entry else f" in the folder '{name}'"
                raise ConfigError(f"a file named '{foreign.relative_to(self.path).as_posix()}'{where} is in the way "
                                  "of the results (not written by 'deepmapper run': manifest.json does not list "
                                  "it)", where=str(foreign), field="--outdir",
                                  fix="move it away, or choose another --outdir.")
            kind = "a link" if entry.is_symlink() else ("a directory" if entry.is_dir() else "a file")
            raise ConfigError(f"{kind} named '{name}' is in the way of the results (not written by "
                              "'deepmapper run')", where=str(entry), field="--outdir",
                              fix="move it away, or choose another --outdir.")

    def _ours(self):
        """Whether a file under a result's name (a path relative to OUT) is DeepMapper's to replace or
        remove: listed by manifest.json; any file of the results of an earlier version (plain files
        with run_info.json and no manifest); a report.html or mqc/deepmapper_* that 'deepmapper
        report' wrote. Anything else is the user's, wherever it lies."""
        manifest = self.published()
        listed = set((manifest or {}).get("files", {}))
        if manifest is not None:
            listed.add(MANIFEST)
        earlier_version = manifest is None and _is_plain_file(self.path / layout.RUN_INFO)

        def ours(rel: str) -> bool:
            if earlier_version or rel in listed:
                return True
            if rel == layout.REPORT:
                return _is_our_report(self.path / rel)
            top, _, leaf = rel.partition("/")
            return top == layout.MQC and "/" not in leaf and leaf.startswith("deepmapper_")
        return ours

    def _is_legacy_link(self, entry: Path) -> bool:
        return entry.is_symlink() and os.readlink(entry) == f"{META}/current/{entry.name}"

    def published(self) -> dict | None:
        """The published run's manifest (``OUT/manifest.json``), or None."""
        path = self.path / MANIFEST
        if not _is_plain_file(path):
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) and "run_id" in manifest
        return manifest if ok else None

    def published_run_id(self) -> str | None:
        return (self.published() or {}).get("run_id")

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.meta if self.meta.exists() else self.path).free

    # -- the lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, wait: bool = False, run_id: str = ""):
        """Hold the outdir's advisory lock; OutdirBusy at once when another run holds it (or wait).
        Taking it first finishes a publish that a kill interrupted (see the module's docstring)."""
        missing, p = [], self.path
        while not p.exists() and p.parent != p:
            missing.append(p)
            p = p.parent
        self.made = missing                       # deepest first: the order to remove them in
        self.made_meta = not self.meta.exists()   # only what this run created is removed after a failure
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
            self.recover()
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
    def _legacy_run(self) -> Path | None:
        """The run directory the earlier link layout published (``.deepmapper/current``), or None."""
        if not self.legacy_current.is_symlink():
            return None
        target = self.meta / os.readlink(self.legacy_current)
        return target if target.is_dir() else None

    def leftovers(self) -> list[Path]:
        """Run directories of interrupted runs, oldest first."""
        if not self.runs.is_dir():
            return []
        legacy = self._legacy_run()
        return sorted((d for d in self.runs.iterdir() if d.is_dir() and (legacy is None or d.name != legacy.name)),
                      key=lambda d: d.name)

    def new_run(self, run_id: str) -> Path:
        d = self.runs / run_id
        d.mkdir(parents=True, exist_ok=False)
        return d

    def discard(self, run_dir: Path) -> None:
        shutil.rmtree(run_dir, ignore_errors=True)

    def cleanup_after_failure(self) -> None:
        """After a run that failed before writing anything to keep: remove ``.deepmapper`` when it holds
        nothing but the lock, and the directories this run created when they are then empty."""
        if self.journal.exists() or self._legacy_run() is not None:
            return
        if self.runs.is_dir() and any(self.runs.iterdir()):
            return   # finished passes kept for --resume
        with contextlib.suppress(OSError):
            if self.runs.is_dir():
                self.runs.rmdir()
            if self.made_meta and {e.name for e in self.meta.iterdir()} <= {"lock"}:
                self.lock_path.unlink(missing_ok=True)
                self.meta.rmdir()
        for d in self.made:                      # deepest first; stops at the first that is not empty
            try:
                d.rmdir()
            except OSError:
                break

    # -- publishing -----------------------------------------------------------------------------
    def publish(self, run_dir: Path, run_id: str) -> dict:
        """Move the run's files into the outdir, ``manifest.json`` last (steps in the module's docstring)."""
        manifest = write_manifest(run_dir, run_id)
        faults.point("publish", 0)
        new = sorted(manifest["files"])
        plan = {"run_id": run_id, "run_dir": run_dir.relative_to(self.meta).as_posix(), "files": new,
                "clear": self._clear_first(), "stale": self._stale(new)}
        with _signals_held():
            write_json(self.journal, plan)
            _fsync_dir(self.meta)
            self._apply(plan)
        return manifest

    def recover(self) -> None:
        """Finish a publish that a kill interrupted (a journal is left); a no-op otherwise."""
        if not self.journal.exists():
            return
        try:
            plan = json.loads(self.journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            plan = None
        if not isinstance(plan, dict) or not {"run_id", "run_dir", "files", "clear", "stale"} <= set(plan):
            raise OutputError("the journal of an interrupted publish is unreadable", where=str(self.journal),
                              field="--outdir", fix="remove the outdir's results (or choose another --outdir) "
                                                    "and run again.")
        log.warning("finishing the publish of run %s that was interrupted", plan["run_id"])
        with _signals_held():
            self._apply(plan)

    def _clear_first(self) -> list[str]:
        """Entries removed before the files move in: the earlier layout's links and its switch."""
        names = [e.name for e in self.path.iterdir() if self._is_legacy_link(e)] if self.path.is_dir() else []
        return sorted(names)

    def _stale(self, new: list[str]) -> list[str]:
        """The earlier run's files the new run does not write (``report.html`` after a ``--no-report``
        rerun, ``passes/pass_009.npz`` of a run with more passes): only files that are ours
        (:meth:`_ours`); a user's file is never removed (check refuses a run that would replace one)."""
        new_set = set(new) | {MANIFEST}
        ours = self._ours()
        stale = []
        for name in KNOWN:
            entry = self.path / name
            if not os.path.lexists(entry) or self._is_legacy_link(entry) or entry.is_symlink():
                continue
            stale += [rel for rel in (f.relative_to(self.path).as_posix() for f in _files(entry))
                      if rel not in new_set and ours(rel)]
        return stale

    def _apply(self, plan: dict) -> None:
        """Steps 2-5; every one can be redone, so a publish killed anywhere is finished by redoing it."""
        run_dir = self.meta / plan["run_dir"]
        for name in plan["clear"]:
            entry = self.path / name
            if entry.is_symlink():
                entry.unlink()
        if self.published_run_id() != plan["run_id"]:
            (self.path / MANIFEST).unlink(missing_ok=True)
        new = plan["files"]
        for i, rel in enumerate(new):
            if i == len(new) // 2:
                faults.point("publish", 1)
            src, dst = run_dir / rel, self.path / rel
            if not src.is_file():
                if _is_plain_file(dst):
                    continue                # moved before the kill
                raise OutputError(f"the file {rel} of run {plan['run_id']} is gone, so its publish cannot be "
                                  "finished", where=str(self.path), field="--outdir",
                                  fix="remove the outdir's results (or choose another --outdir) and run again.")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(dst) and (dst.is_symlink() or dst.is_dir()):
                _remove(dst)
            os.replace(src, dst)
        for rel in plan["stale"]:
            _remove(self.path / rel)
        tops = {rel.split("/", 1)[0] for rel in new}
        for name in {rel.split("/", 1)[0] for rel in plan["stale"]} | tops:   # folders the stale files emptied
            if (self.path / name).is_dir() and not (self.path / name).is_symlink():
                _remove_empty_dirs(self.path / name)
                if name not in tops:
                    with contextlib.suppress(OSError):
                        (self.path / name).rmdir()
        src = run_dir / MANIFEST
        if not src.is_file() and self.published_run_id() != plan["run_id"]:
            raise OutputError(f"the manifest of run {plan['run_id']} is gone, so its publish cannot be finished",
                              where=str(self.path), field="--outdir",
                              fix="remove the outdir's results (or choose another --outdir) and run again.")
        if src.is_file():
            _fsync_dir(self.path)
            os.replace(src, self.path / MANIFEST)       # the commit: the outdir is this run's set
            _fsync_dir(self.path)
        faults.point("publish", 2)
        shutil.rmtree(run_dir, ignore_errors=True)
        legacy = self._legacy_run()
        if legacy is not None or self.legacy_current.is_symlink():
            self.legacy_current.unlink()
            if legacy is not None:
                shutil.rmtree(legacy, ignore_errors=True)
        self.journal.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.runs.rmdir()                           # empty: nothing hidden holds results


JOURNAL = "publishing.json"


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back while the outdir changes: they act once it holds one run's set.

    Python runs signal handlers in the main thread whichever thread the kernel delivers to (torch's
    worker threads included), so a thread mask cannot hold them back: the handlers are swapped for
    one that records the signal, and a recorded signal is sent again once the old handlers are
    back. Outside the main thread handlers cannot be set, and nothing is held back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum, frame):
        caught.append(signum)

    hold.held_back = True       # faults.point: the signal acts after the publish, not at once
    held = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, hold) for sig in held}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):
            os.kill(os.getpid(), signum)


def _is_plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _is_our_report(path: Path) -> bool:
    """A report.html that 'deepmapper report' wrote (its generator tag in the first bytes)."""
    try:
        with open(path, "rb") as fh:
            return b'<meta name="generator" content="DeepMapper' in fh.read(4096)
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _files(entry: Path) -> list[Path]:
    """The files of a result entry: itself, or every file below a folder (sorted)."""
    if not entry.is_dir() or entry.is_symlink():
        return [entry]
    return sorted(f for f in entry.rglob("*") if not f.is_dir() or f.is_symlink())


def _remove_empty_dirs(top: Path) -> None:
    for d in sorted((p for p in top.rglob("*") if p.is_dir() and not p.is_symlink()),
                    key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()


def write_manifest(run_dir: Path, run_id: str) -> dict:
    """``manifest.json``: the run id and the SHA-256 of every file of the run (relative paths)."""
    from deepmapper.io import file_sha256

    files = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and rel != MANIFEST and not any(part.startswith(".") for part in rel.split("/")):
            files[rel] = file_sha256(path)
    manifest = {"run_id": run_id, "files": files}
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def check_published(outdir: str | os.PathLike) -> dict:
    """Verify that what ``outdir`` shows is exactly one run's set: plain files, every file listed in the
    manifest with its checksum, nothing else under the results' names, no publish under way. Returns
    the manifest; raises AssertionError otherwise."""
    from deepmapper.io import file_sha256

    outdir = Path(outdir)
    manifest = json.loads((outdir / MANIFEST).read_text())
    journal = outdir / META / JOURNAL
    if journal.exists():        # only the cleanup after the commit may be pending (killed at publish:2)
        pending = json.loads(journal.read_text()).get("run_id")
        assert pending == manifest["run_id"], f"the publish of run {pending} is under way or was interrupted"
    listed = manifest["files"]
    tops = {rel.split("/", 1)[0] for rel in listed} | set(KNOWN)
    seen = {}
    for name in sorted(tops):
        entry = outdir / name
        if not os.path.lexists(entry):
            continue
        files = [entry] if not entry.is_dir() or entry.is_symlink() else sorted(entry.rglob("*"))
        for f in files:
            rel = f.relative_to(outdir).as_posix()
            if any(part.startswith(".") for part in rel.split("/")) or (f.is_dir() and not f.is_symlink()):
                continue
            assert not f.is_symlink(), f"{rel} is a link, not a plain file"
            seen[rel] = f
    seen.pop(MANIFEST, None)
    assert sorted(seen) == sorted(listed), (sorted(set(seen) ^ set(listed)))[:10]
    for rel, path in seen.items():
        assert file_sha256(path) == listed[rel], f"{rel} is not the file of run {manifest['run_id']}"
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
