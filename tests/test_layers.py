"""The package's layering (docs/developers.md), as import-linter contracts in pyproject.toml.

The contracts are checked on the installed source, and once more on a copy with one forbidden
import added, so a contract that could never fail would show here.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter")
    env = {"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_layering_contracts_hold():
    res = _lint(SRC, ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("engine/split.py", "from deepmapper.results import findings", "Layers"),
    ("engine/train.py", "from deepmapper.datasets import synthetic", "Nothing at run time"),
    ("model/transform.py", "from deepmapper.engine import data", "Layers"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(SRC / "deepmapper", tmp_path / "src" / "deepmapper",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "deepmapper" / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    res = _lint(tmp_path / "src", tmp_path)
    assert res.returncode != 0
    broken = res.stdout.split("Broken contracts", 1)[1]
    assert contract in broken and line.split()[1] in broken, res.stdout
