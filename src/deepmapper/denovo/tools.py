"""Locate and run the external tools; log every command line and tool version.

Each run appends one row to ``commands.tsv`` in the step's log directory
(step, tool, version, exit code, seconds, command line) so a result can always
be traced to the exact command that made it. The file is rewritten atomically
on every append: a killed step leaves the previous, complete log.
"""
from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from deepmapper._utils import atomic
from deepmapper.errors import ToolError

log = logging.getLogger(__name__)

# How to get each tool (Debian package names; Trinity is not packaged for Debian).
INSTALL_HINTS = {
    "hisat2": "install the Debian package 'hisat2' (apt-get install hisat2) or bioconda 'hisat2'",
    "hisat2-build": "install the Debian package 'hisat2' (apt-get install hisat2) or bioconda 'hisat2'",
    "salmon": "install the Debian package 'salmon' (apt-get install salmon) or bioconda 'salmon'",
    "rnaspades.py": "install the Debian package 'spades' (apt-get install spades) or bioconda 'spades'",
    "Trinity": ("run inside the Trinity container (docker://trinityrnaseq/trinityrnaseq or "
                "-profile docker) or install bioconda 'trinity'; or use --assembler rnaspades"),
}

# Flag that prints the version, per tool.
_VERSION_ARGS = {
    "hisat2": ["--version"],
    "hisat2-build": ["--version"],
    "salmon": ["--version"],
    "rnaspades.py": ["--version"],
    "Trinity": ["--version"],
}

COMMANDS_HEADER = "step\ttool\tversion\texit_code\tseconds\tcommand\n"


def find_tool(name: str) -> str:
    """Absolute path of ``name`` on PATH, or a ToolError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ToolError(f"the external tool '{name}' was not found on PATH", where=name,
                        fix=INSTALL_HINTS.get(name, f"install '{name}' and put it on PATH") + ".")
    return path


@functools.lru_cache(maxsize=None)
def tool_version(name: str) -> str:
    """First non-empty line of ``name --version`` ('unknown' when the tool will not say)."""
    path = find_tool(name)
    try:
        # stdin closed and output read in full: hisat2 complains of a broken pipe otherwise
        proc = subprocess.run([path, *_VERSION_ARGS.get(name, ["--version"])], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        line = line.strip()
        if line:
            return line
    return "unknown"


def append_command_log(log_dir: str | os.PathLike, row: dict) -> Path:
    """Add one row to ``log_dir/commands.tsv`` (atomic rewrite)."""
    path = Path(log_dir) / "commands.tsv"
    old = path.read_text(encoding="utf-8") if path.exists() else COMMANDS_HEADER
    fields = [row["step"], row["tool"], row["version"], str(row["exit_code"]), f"{row['seconds']:.2f}",
              row["command"]]
    line = "\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n"
    return atomic.write_text(path, old + line)


def run_tool(step: str, cmd: list[str], *, log_dir: str | os.PathLike, cwd: str | os.PathLike | None = None,
             stdout_path: str | os.PathLike | None = None, stderr_path: str | os.PathLike | None = None,
             ) -> subprocess.CompletedProcess:
    """Run ``cmd`` (cmd[0] is a tool name), log it, and raise ToolError naming the tool on failure.

    ``stderr_path`` keeps the tool's own log (e.g. HISAT2's alignment summary);
    on failure the last lines of stderr are put in the error message.
    """
    tool = cmd[0]
    exe = find_tool(tool)
    version = tool_version(tool)
    line = shlex.join(cmd)
    log.info("%s: %s (%s)", step, line, version)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([exe, *cmd[1:]], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as err:
        raise ToolError(f"could not start '{tool}': {err}", where=tool, fix=INSTALL_HINTS.get(tool)) from None
    seconds = time.monotonic() - t0
    append_command_log(log_dir, {"step": step, "tool": tool, "version": version, "exit_code": proc.returncode,
                                 "seconds": seconds, "command": line})
    if stdout_path is not None:
        atomic.write_text(stdout_path, proc.stdout)
    if stderr_path is not None:
        atomic.write_text(stderr_path, proc.stderr)
    if proc.returncode != 0:
        tail = " | ".join([ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-3:])
        raise ToolError(f"'{tool}' failed with exit code {proc.returncode} in step '{step}': {tail}",
                        where=tool, fix=f"see {Path(log_dir) / 'commands.tsv'} for the command line and "
                                        "check the inputs of this step.")
    return proc
