"""The generated Nextflow files (deepmapper._dev.nfgen): committed, current, and generated from the
declarations alone.

* regenerating gives exactly the committed params block, schema, ext.args and usage table;
* the test bites: a default changed in config.py without regenerating is caught, by the
  generator's --check and by the comparison this suite runs;
* a new config section (as issue 11 adds ``interactions``) reaches the params, the schema,
  the ext.args of its step and the step command's options without any hand edit.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERATED = ["nextflow.config", "nextflow_schema.json", "conf/modules.config", "docs/usage.md"]
# also generated: the release version in every module's main.nf and every environment.yml (one table of pins)
VERSIONED = sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("modules/local/**/main.nf"),
                                                      *REPO.glob("modules/local/**/environment.yml"),
                                                      *REPO.glob("containers/environment*.yml")])


def test_generated_files_are_current():
    from deepmapper._dev import nfgen

    expected = nfgen.outputs(REPO)
    assert sorted(str(p.relative_to(REPO)) for p in expected) == sorted(GENERATED + VERSIONED)
    for path, text in expected.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO)} is stale: regenerate with `python -m deepmapper._dev.nfgen`")


def copy_for_generation(dst: Path) -> Path:
    """A copy of the package sources and of the generated files' folders."""
    shutil.copytree(REPO / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for rel in [*GENERATED, *VERSIONED, "pyproject.toml"]:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst / rel)
    return dst


def run_generator(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([sys.executable, "-m", "deepmapper._dev.nfgen", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=root)


def test_a_default_changed_without_regenerating_is_caught(tmp_path):
    root = copy_for_generation(tmp_path / "copy")
    config = root / "src" / "deepmapper" / "config.py"
    text = config.read_text()
    old = 'epochs: int = _f(60, "epochs"'
    assert old in text
    config.write_text(text.replace(old, 'epochs: int = _f(61, "epochs"'))
    done = run_generator(root, "--check")
    assert done.returncode == 1
    stale = sorted(Path(line.split()[1]).relative_to(root).as_posix() for line in done.stderr.splitlines()
                   if line.startswith("stale:"))
    assert stale == ["docs/usage.md", "nextflow.config", "nextflow_schema.json"]
    # what test_generated_files_are_current compares: the committed files against a regeneration
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    probe = subprocess.run([sys.executable, "-c", (
        "import sys; from pathlib import Path; from deepmapper._dev import nfgen; "
        f"root = Path({str(REPO)!r}); "
        "bad = [str(p.relative_to(root)) for p, t in nfgen.outputs(root).items() if p.read_text() != t]; "
        "print(bad)")], capture_output=True, text=True, timeout=120, env=env)
    assert probe.returncode == 0, probe.stderr
    assert "nextflow.config" in probe.stdout and "nextflow_schema.json" in probe.stdout
    # regenerating fixes the copy, with the new default in each file
    assert run_generator(root).returncode == 0 and run_generator(root, "--check").returncode == 0
    assert re.search(r"(?m)^    epochs\s+= 61$", (root / "nextflow.config").read_text())
    schema = json.loads((root / "nextflow_schema.json").read_text())
    assert schema["$defs"]["run_options"]["properties"]["epochs"]["default"] == 61
    assert "| `--epochs` | `61` |" in (root / "docs" / "usage.md").read_text()


def test_a_changed_step_moves_the_option_between_processes(tmp_path):
    """The ext.args follow the declared steps: top_k declared for train too reaches TRAINPASS."""
    root = copy_for_generation(tmp_path / "copy")
    config = root / "src" / "deepmapper" / "config.py"
    text = config.read_text()
    old = '''steps=("accumulate",))'''
    assert text.count(old) == 1
    config.write_text(text.replace(old, '''steps=("accumulate", "train"))'''))
    assert run_generator(root).returncode == 0
    modules = (root / "conf" / "modules.config").read_text()
    trainpass = modules[modules.index("withName: 'DEEPMAPPER_TRAINPASS'"):]
    trainpass = trainpass[:trainpass.index("].join(' ')")]
    assert '"--top-k ${params.top_k}"' in trainpass


NEW_SECTION = '''

@dataclass
class ExtraConfig:
    window: int = _f(7, "extra_window", "Width of the extra window.", min=1, max=99, steps=("interactions",))
    mode: str = _f("fast", "extra_mode", "How the extra step runs.", choices=("fast", "exact"),
                   steps=("interactions", "accumulate"))
    strict: bool = _f(False, "extra_strict", "Stop on the first extra problem.")
'''


def test_a_new_section_is_generated_without_hand_edits(tmp_path):
    """A section added the way issue 11 adds `interactions` (a dataclass of _f fields with choices,
    bounds and steps) reaches nextflow.config, the schema (enum, bounds), the ext.args of its
    step's process and of every other step that declares it, and the step commands' options; a
    field without `steps` reaches every step."""
    root = copy_for_generation(tmp_path / "copy")
    config = root / "src" / "deepmapper" / "config.py"
    text = config.read_text()
    anchor = "\n\n@dataclass\nclass Config:"
    text = text.replace(anchor, NEW_SECTION + anchor, 1)
    text = text.replace("    attribution: AttributionConfig = field(default_factory=AttributionConfig)\n",
                        "    attribution: AttributionConfig = field(default_factory=AttributionConfig)\n"
                        "    extra: ExtraConfig = field(default_factory=ExtraConfig)\n", 1)
    config.write_text(text)
    done = run_generator(root)
    assert done.returncode == 0, done.stderr
    params = (root / "nextflow.config").read_text()
    assert re.search(r"(?m)^    extra_window\s+= 7$", params) and re.search(r"(?m)^    extra_mode\s+= 'fast'$", params)
    schema = json.loads((root / "nextflow_schema.json").read_text())
    extra = schema["$defs"]["extra_options"]["properties"]
    assert extra["extra_window"]["minimum"] == 1 and extra["extra_window"]["maximum"] == 99
    assert extra["extra_mode"]["enum"] == ["fast", "exact"] and extra["extra_strict"]["type"] == "boolean"
    assert {"$ref": "#/$defs/extra_options"} in schema["allOf"]
    modules = (root / "conf" / "modules.config").read_text()
    interactions = modules[modules.index("withName: 'DEEPMAPPER_INTERACTIONS'"):]
    interactions = interactions[:interactions.index("].join(' ')")]
    assert '"--extra-window ${params.extra_window}"' in interactions and "--extra-mode" in interactions
    accumulate = modules[modules.index("withName: 'DEEPMAPPER_ACCUMULATE'"):]
    accumulate = accumulate[:accumulate.index("].join(' ')")]
    assert "--extra-mode" in accumulate and "--extra-window" not in accumulate
    for process in ("DEEPMAPPER_INGEST", "DEEPMAPPER_TRAINPASS", "DEEPMAPPER_PLAN", "DEEPMAPPER_BASELINE"):
        block = modules[modules.index(f"withName: '{process}'"):]
        assert "--no-extra-strict" in block[:block.index("].join(' ')")], process  # no steps: every step
    # the step commands take the new options (and validate them) with no CLI edit
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    helptext = subprocess.run([sys.executable, "-m", "deepmapper.cli", "accumulate", "--help"], capture_output=True,
                              text=True, timeout=120, env=env)
    if helptext.returncode != 0:  # no __main__ in the package: call the group
        helptext = subprocess.run([sys.executable, "-c", "from deepmapper.cli import main; main(['accumulate', '--help'])"],
                                  capture_output=True, text=True, timeout=120, env=env)
    assert "--extra-mode [fast|exact]" in helptext.stdout and "--extra-window" not in helptext.stdout
    bad = subprocess.run([sys.executable, "-c", (
        "from deepmapper.config import Config\n"
        "try:\n    Config().with_params({'extra_window': 100})\nexcept Exception as e:\n    print(type(e).__name__, e)")],
        capture_output=True, text=True, timeout=120, env=env)
    assert "ConfigError" in bad.stdout and "extra" in bad.stdout and "<= 99" in bad.stdout


def test_unknown_metadata_and_steps_are_rejected():
    from deepmapper.config import _f

    with pytest.raises(TypeError, match="unknown step"):
        _f(1, "x", "help", steps=("training",))
    with pytest.raises(TypeError, match="unknown field metadata"):
        _f(1, "x", "help", minimum=0)


def test_dev_generate_command_checks(tmp_path):
    from click.testing import CliRunner

    from deepmapper.cli import cli

    res = CliRunner().invoke(cli, ["dev", "generate", "--check", "--root", str(REPO)])
    assert res.exit_code == 0, res.output
    root = copy_for_generation(tmp_path / "copy")
    (root / "nextflow_schema.json").write_text("{}\n")
    res = CliRunner().invoke(cli, ["dev", "generate", "--check", "--root", str(root)])
    assert res.exit_code == 1
