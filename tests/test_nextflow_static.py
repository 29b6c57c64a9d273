"""The Nextflow pipeline, checked without the Nextflow engine (issue 3).

* every .nf / .config file parses (reftrace), and a broken copy does not;
* includes resolve, every called process/workflow is defined or included, and
  broken copies are caught;
* every module has the nf-core anatomy; its command exists and every option it
  passes (script and ext.args) is in that command's --help; its version commands
  run here;
* the modules' real commands run on the bundled pbmc68k_reduced test data, chained
  as the workflow chains them (ingest -> 2 pass tasks -> accumulate / evaluate /
  baselines -> report -> MultiQC), and write what each process declares; the
  gathered findings equal those of the embedded `deepmapper run`;
* every stub block creates the declared outputs;
* nextflow_schema.json is valid draft 2020-12 and agrees with nextflow.config and
  deepmapper.config.defaults_flat(); the test profile's input ships in the repo.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import nfcheck
from nfcheck import REPO, NfError

NEXTFLOW_CONFIG = REPO / "nextflow.config"
CONFIG_FILES = [NEXTFLOW_CONFIG, *sorted((REPO / "conf").glob("*.config"))]
NF_FILES = nfcheck.nf_files()
PLUGINS = nfcheck.plugin_ids(NEXTFLOW_CONFIG)
PROCESSES = {p.name: p for f in NF_FILES for p in nfcheck.processes(f)}
EXT_ARGS = nfcheck.ext_args(REPO / "conf" / "modules.config")
# Params as `-profile test` sees them: nextflow.config overlaid with conf/test.config.
PARAMS = nfcheck.config_params(NEXTFLOW_CONFIG)
TEST_PARAMS = {**PARAMS, **nfcheck.config_params(REPO / "conf" / "test.config")}
TEST_INPUT = REPO / "assets" / "test" / "pbmc68k_reduced.h5ad"

# Accumulate-only and ingest-only settings that a pass task deliberately does not get.
NOT_FOR_TRAINING = {"label_key", "matrix", "normalize", "passes", "max_tries", "top_k"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@functools.cache
def help_text(command: tuple[str, ...]) -> str:
    proc = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"`{' '.join(command)} --help` failed: {proc.stderr.strip()[-300:]}"
    return proc.stdout


def command_of(proc: nfcheck.Process) -> tuple[str, ...]:
    """The command a process runs: `deepmapper <sub> [<subsub>]` or an external tool."""
    words = proc.script.body.split()
    if words[0] != "deepmapper":
        return (words[0],)
    cmd = ["deepmapper"]
    for word in words[1:3]:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        if re.search(rf"^\s+{re.escape(word)}\s", help_text(tuple(cmd)).split("Commands:")[-1], re.M) is None:
            break
        cmd.append(word)
    return tuple(cmd)


def options_used(proc: nfcheck.Process) -> set[str]:
    text = proc.script.body + "\n" + "\n".join(proc.script.defs.values()) + "\n" + "\n".join(EXT_ARGS.get(proc.name, []))
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


# -- syntax ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NF_FILES, ids=rel)
def test_nf_file_parses(path):
    mod = nfcheck.parse_nf(path)
    assert mod.dsl_version == 2


@pytest.mark.parametrize("path", CONFIG_FILES, ids=rel)
def test_config_file_parses(path):
    nfcheck.parse_config(path)


def test_parser_rejects_broken_module_and_config(tmp_path):
    module = REPO / "modules" / "local" / "deepmapper" / "trainpass" / "main.nf"
    broken = tmp_path / "main.nf"
    text = module.read_text()
    assert "tuple val(meta), path(dataset)\n" in text
    broken.write_text(text.replace("tuple val(meta), path(dataset)\n", "tuple val(meta), path(dataset\n", 1))
    nfcheck.parse_nf(module)  # the original parses ...
    with pytest.raises(NfError, match="main.nf"):
        nfcheck.parse_nf(broken)  # ... the copy with one parenthesis missing does not

    config = tmp_path / "base.config"
    config.write_text((REPO / "conf" / "base.config").read_text().replace("withLabel: process_low {", "withLabel: process_low {{", 1))
    with pytest.raises(NfError):
        nfcheck.parse_config(config)


# -- structure: includes and calls ------------------------------------------------------------

@pytest.mark.parametrize("path", NF_FILES, ids=rel)
def test_includes_resolve_and_calls_are_defined(path):
    nfcheck.check_calls(path, PLUGINS)


def test_every_process_and_subworkflow_is_used():
    called = set()
    for path in NF_FILES:
        called |= nfcheck.check_calls(path, PLUGINS)
    subworkflows = {w.name for p in REPO.glob("subworkflows/**/*.nf") for w in nfcheck.parse_nf(p).workflows}
    assert set(PROCESSES) - called == set()
    assert subworkflows - called == set()
    assert {"DEEPMAPPER"} <= called  # main.nf runs the workflow


def test_broken_include_is_caught(tmp_path):
    root = nfcheck.copy_tree(tmp_path / "copy")
    module = root / "modules" / "local" / "deepmapper" / "evaluate" / "main.nf"
    module.write_text(module.read_text().replace("process DEEPMAPPER_EVALUATE {", "process DEEPMAPPER_EVAL {"))
    with pytest.raises(NfError, match="'DEEPMAPPER_EVALUATE' is not defined"):
        nfcheck.check_includes(root / "workflows" / "deepmapper.nf", PLUGINS)

    shutil.copy2(REPO / "modules" / "local" / "deepmapper" / "evaluate" / "main.nf", module)
    nfcheck.check_includes(root / "workflows" / "deepmapper.nf", PLUGINS)  # repaired copy passes
    shutil.rmtree(root / "modules" / "local" / "multiqc")
    with pytest.raises(NfError, match="does not resolve to a file"):
        nfcheck.check_includes(root / "workflows" / "deepmapper.nf", PLUGINS)


def test_undefined_call_is_caught(tmp_path):
    root = nfcheck.copy_tree(tmp_path / "copy")
    workflow = root / "workflows" / "deepmapper.nf"
    text = workflow.read_text()
    assert "DEEPMAPPER_EVALUATE(ch_dataset_passes)" in text
    workflow.write_text(text.replace("DEEPMAPPER_EVALUATE(ch_dataset_passes)", "DEEPMAPPER_EVALUATES(ch_dataset_passes)"))
    with pytest.raises(NfError, match="DEEPMAPPER_EVALUATES, which is neither defined nor included"):
        nfcheck.check_calls(workflow, PLUGINS)


def test_unknown_plugin_function_is_caught(tmp_path):
    root = nfcheck.copy_tree(tmp_path / "copy")
    main = root / "main.nf"
    main.write_text(main.read_text().replace("paramsSummaryLog }", "paramsSummaryLogg }"))
    with pytest.raises(NfError, match="provides no 'paramsSummaryLogg'"):
        nfcheck.check_includes(main, PLUGINS)


# -- module anatomy ---------------------------------------------------------------------------

def base_labels() -> set[str]:
    return set(re.findall(r"withLabel:\s*(\w+)", (REPO / "conf" / "base.config").read_text()))


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_module_anatomy(name):
    proc = PROCESSES[name]
    assert proc.path.relative_to(REPO).parts[:2] == ("modules", "local") and proc.path.name == "main.nf"
    assert re.search(r"(?m)^\s*tag\s+\"\$\{meta\.id\}\"", proc.directives), "tag \"${meta.id}\""
    assert proc.labels() and set(proc.labels()) <= base_labels(), "labels must be defined in conf/base.config"
    container = re.search(r"(?m)^\s*container\s+'([^']+)'", proc.directives)
    assert container and re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", container.group(1)), "pinned container"
    assert proc.inputs[0].items[0][:2] == ("val", "meta"), "first input is tuple val(meta), path(...)"
    assert any(kind == "path" for kind, _, _ in proc.inputs[0].items)
    for out in proc.outputs:
        assert out.emit, f"output without emit: {out.decl}"
        if out.patterns:
            assert out.decl.startswith("tuple val(meta)"), f"file outputs carry meta: {out.decl}"
    assert proc.when == "task.ext.when == null || task.ext.when"
    assert proc.script.defs.get("args") == "task.ext.args ?: ''" and "${args}" in proc.script.body
    assert proc.stub is not None and proc.stub.body.strip()
    versions = [o for o in proc.outputs if o.evals]
    assert versions, "versions are reported with eval(...)"
    if name != "MULTIQC":  # MULTIQC consumes the topic, so it cannot also feed it
        assert all(o.topic == "versions" for o in versions)


def test_gpu_label_only_on_training():
    gpu = {n for n, p in PROCESSES.items() if "process_gpu" in p.labels()}
    assert gpu == {"DEEPMAPPER_TRAINPASS"}
    base = (REPO / "conf" / "base.config").read_text()
    block = nfcheck.block_body(base, "withLabel: process_gpu")
    assert "accelerator" in block and "'--nv'" in block and "'--gpus all'" in block


# -- commands and options -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_module_command_and_options_exist(name):
    proc = PROCESSES[name]
    command = command_of(proc)
    tool = shutil.which(command[0]) or (REPO / "bin" / command[0]).is_file()
    assert tool, f"{name}: command {command[0]} is neither on PATH nor in bin/"
    if command[0] == "deepmapper":
        assert len(command) >= 2, f"{name}: `deepmapper {proc.script.body.split()[1]}` is not a command"
    helptext = help_text(command)
    missing = sorted(opt for opt in options_used(proc) if not re.search(rf"(?<![\w-]){opt}(?![\w-])", helptext))
    assert not missing, f"{name}: `{' '.join(command)}` has no {', '.join(missing)}"


def test_ext_args_name_existing_processes():
    alias = nfcheck.aliases(NF_FILES)
    with_name = re.findall(r"withName:\s*'([^']+)'", (REPO / "conf" / "modules.config").read_text())
    named = {n for sel in with_name for n in sel.split("|")}
    assert named <= set(PROCESSES) | set(alias) and set(EXT_ARGS) <= named
    # withName matches the alias, not the original name: an aliased process needs its own selector
    for new, old in alias.items():
        assert EXT_ARGS.get(new) == EXT_ARGS.get(old), f"{new} (alias of {old}) gets other ext.args"


# ext.args options whose name differs from the param they carry (the command's own option name)
RENAMED_OPTIONS = {("DEEPMAPPER_CLUSTER", "resolution"): "cluster_resolution",
                   ("DEEPMAPPER_CLUSTER", "min-size"): "min_class_size",
                   ("DEEPMAPPER_AUCELL", "min-size"): "geneset_min_size"}


def params_in(name: str) -> set[str]:
    return {m for a in EXT_ARGS[name] for m in re.findall(r"params\.(\w+)", a)}


def test_run_configuration_reaches_the_steps():
    from deepmapper.config import defaults_flat

    config = set(defaults_flat())
    assert params_in("DEEPMAPPER_TRAINPASS") == config - NOT_FOR_TRAINING
    assert params_in("DEEPMAPPER_ACCUMULATE") == config - {"label_key"}
    # the steps that build the dataset get exactly the settings `deepmapper run` uses for them
    assert params_in("DEEPMAPPER_INGEST") == {"matrix", "normalize", "min_class_size", "modality"}
    assert params_in("DEEPMAPPER_CLUSTER") == {"modality", "cluster_resolution", "seed", "matrix", "min_class_size"}
    assert params_in("DEEPMAPPER_AUCELL") == {"geneset_min_size"}
    # each option carries the param of the same name: --epochs ${params.epochs}
    checked = 0
    for name, args in EXT_ARGS.items():
        for arg in args:
            m = re.fullmatch(r'"--([a-z0-9-]+) \$\{params\.(\w+)(?: \?: task\.cpus)?\}"', arg)
            if m:
                want = RENAMED_OPTIONS.get((name, m.group(1)), m.group(1).replace("-", "_"))
                assert want == m.group(2), f"{name}: {arg}"
                checked += 1
    assert checked > 60


def render_args(name: str, params: dict, cpus: int = 1) -> list[str]:
    """ext.args of a process as the task's command line sees them (shell words)."""
    import shlex

    return shlex.split(nfcheck.render_ext_args(EXT_ARGS[name], {"params": params, "task": {"cpus": cpus}}))


# Every input setting away from its default, booleans both ways: what a user could set.
FLIPPED = {"modality": "atac", "genesets": "/data/sets v2.gmt", "geneset_min_size": 3, "cluster": True,
           "cluster_resolution": 0.5, "small_stem": False, "threads": 0}


@pytest.mark.parametrize("overrides", [{}, FLIPPED], ids=["test-profile", "flipped"])
def test_ext_args_parse_to_the_run_configuration(overrides, tmp_path):
    """train-pass and accumulate, parsed by their own click commands from the rendered ext.args,
    build the configuration the params describe (booleans as --x/--no-x flags, null omitted)."""
    from deepmapper.cli._options import build_config
    from deepmapper.cli.engine import accumulate_cmd, train_pass
    from deepmapper.config import defaults_flat

    params = {**TEST_PARAMS, **overrides}
    dataset = tmp_path / "dataset.h5ad"
    dataset.touch()
    for name, command, skip in [("DEEPMAPPER_TRAINPASS", train_pass, NOT_FOR_TRAINING),
                                ("DEEPMAPPER_ACCUMULATE", accumulate_cmd, {"label_key"})]:
        argv = ["--dataset", str(dataset), "--outdir", str(tmp_path), *render_args(name, params, cpus=2)]
        if name == "DEEPMAPPER_ACCUMULATE":
            argv += ["--passes-dir", str(tmp_path)]
        with command.make_context(command.name, argv) as ctx:
            values = dict(ctx.params)
        cfg = build_config(values.pop("config_path"), values).flat()
        for key in defaults_flat():
            if key in skip:
                continue
            want = params[key]
            if key == "threads" and name == "DEEPMAPPER_TRAINPASS":
                want = params["threads"] or 2  # 0: the task's cpus
            assert cfg[key] == want and type(cfg[key]) is type(want), f"{name}: {key} {cfg[key]!r} != {want!r}"
    assert render_args("DEEPMAPPER_TRAINPASS", params).count("--genesets") == (1 if params.get("genesets") else 0)


def test_label_sources_are_checked_before_any_task():
    """--cluster with --label_key (or --labels) stops the run with one line naming both, as the
    Python check does; the check runs before the first process is called."""
    from deepmapper.cluster import check_label_source
    from deepmapper.errors import ConfigError

    with pytest.raises(ConfigError, match="--label-key"):
        check_label_source("bulk_labels", True)
    text = (REPO / "workflows" / "deepmapper.nf").read_text()
    func = re.search(r"def labelSourceProblem\(cluster, labelKey, labels, denovo, inputPath\) \{(.*?)\n\}", text, re.S)
    assert func, "workflows/deepmapper.nf defines labelSourceProblem"
    messages = re.findall(r'return "(.*?)"(?: \+\s*"(.*?)")?\n', func.group(1))
    assert len(messages) == 4
    for first, second in messages:
        assert "--cluster" in first and "Fix:" in first + second
    assert "--label_key" in messages[0][0] and "--labels" in messages[1][0]
    workflow = dict(nfcheck.blocks(text, "workflow"))["DEEPMAPPER"]
    check = workflow.index("error(label_problem)")
    first_call = min(m.start() for m in nfcheck._CALL.finditer(nfcheck.mask(workflow)))
    assert check < workflow.index("file(params.input") and check < first_call


def test_multiqc_stays_offline():
    script = PROCESSES["MULTIQC"].script.body
    assert "--no-version-check" in script and "--no-ai" in script  # both are in `multiqc --help` (checked above)


@functools.cache
def run_version_command(cmd: str) -> tuple[int, str, str]:
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_version_commands_run_here(name):
    """Every eval(...) version command prints a version with the tools installed here."""
    ran = 0
    for out in PROCESSES[name].outputs:
        for cmd in out.evals:
            cmd = nfcheck.render(cmd, {})
            if not shutil.which(cmd.split()[0]):
                continue  # an alternative (Trinity) not installed here; another one must run
            code, stdout, stderr = run_version_command(cmd)
            assert code == 0, f"{cmd}: {stderr[-200:]}"
            assert re.fullmatch(r"v?\d+(\.\d+)+\S*", stdout.strip()), f"{cmd} printed {stdout!r}"
            ran += 1
        if out.evals:
            assert ran, f"{name}: none of {out.evals} can run here"


# -- params, schema, profiles ------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema():
    return json.loads((REPO / "nextflow_schema.json").read_text())


def schema_params(schema) -> dict:
    return {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}


def test_schema_is_valid_draft_2020_12(schema):
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert [a["$ref"] for a in schema["allOf"]] == [f"#/$defs/{k}" for k in schema["$defs"]]
    # the params as nextflow.config sets them validate against the schema
    # (input/outdir are required only on the command line)
    given = {k: v for k, v in TEST_PARAMS.items() if v is not None}
    jsonschema.Draft202012Validator(schema).validate(given)


def test_schema_file_params_are_checked(schema):
    """--genesets must be an existing .gmt file (nf-schema checks format/exists, jsonschema the pattern)."""
    import jsonschema

    props = schema_params(schema)
    assert props["genesets"]["format"] == "file-path" and props["genesets"]["exists"] is True
    validator = jsonschema.Draft202012Validator(schema)
    given = {k: v for k, v in TEST_PARAMS.items() if v is not None}
    validator.validate({**given, "genesets": str(REPO / "tests" / "data" / "pbmc_markers.gmt")})
    for bad in ({"genesets": "markers.txt"}, {"genesets": "markers.gmt.bak"}, {"cluster": "yes"},
                {"cluster_resolution": 0}, {"modality": "dna"}, {"geneset_min_size": 0}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({**given, **bad})


def test_schema_config_and_python_defaults_agree(schema):
    from deepmapper.config import defaults_flat

    props = schema_params(schema)
    assert set(props) == set(PARAMS), "nextflow_schema.json and nextflow.config name the same params"
    for name, value in PARAMS.items():
        assert props[name].get("default") == value and type(props[name].get("default")) is type(value), name
        assert props[name].get("description"), f"{name} is documented"
    pytype = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for name, value in defaults_flat().items():
        assert name in PARAMS, f"config param {name} missing in nextflow.config"
        assert PARAMS[name] == value and type(PARAMS[name]) is type(value), f"{name}: {PARAMS[name]!r} != {value!r}"
        if value is not None:
            assert props[name]["type"] == pytype[type(value)], name


def test_schema_constraints_agree_with_config_validation(schema):
    """Every enum value the schema allows is a valid config; every bound is the config's bound."""
    from deepmapper.config import Config, defaults_flat
    from deepmapper.errors import ConfigError

    props = schema_params(schema)
    checked = 0
    for name in defaults_flat():
        spec = props[name]
        for value in spec.get("enum", []):
            Config().with_params({name: value})
            checked += 1
        step = 1 if spec["type"] == "integer" else 1e-6
        outside = []
        if "minimum" in spec:
            outside.append(spec["minimum"] - step)
        if "maximum" in spec:
            outside.append(spec["maximum"] + step)
        outside += [spec[k] for k in ("exclusiveMinimum", "exclusiveMaximum") if k in spec]
        for bad in outside:
            if name == "seed":
                continue  # schema-only bound: Config.validate does not check the seed
            with pytest.raises(ConfigError):
                Config().with_params({name: bad})
            checked += 1
    assert checked > 30


def test_required_profiles_exist():
    assert {"test", "docker", "singularity", "apptainer", "gpu", "slurm", "awsbatch"} <= nfcheck.profiles(NEXTFLOW_CONFIG)
    text = NEXTFLOW_CONFIG.read_text()
    assert nfcheck.block_body(text, "manifest")
    assert "includeConfig 'conf/test.config'" in text


TEST_PROFILES = {"test": "test.config", "test_populations": "test_populations.config",
                 "test_denovo": "test_denovo.config"}


@pytest.mark.parametrize("profile", sorted(TEST_PROFILES))
def test_test_profile_inputs_ship_and_are_valid(profile):
    """Each test profile's files are in the repository and its settings form a valid config."""
    from deepmapper.config import Config

    config = REPO / "conf" / TEST_PROFILES[profile]
    assert f"includeConfig 'conf/{TEST_PROFILES[profile]}'" in NEXTFLOW_CONFIG.read_text()
    params = {**PARAMS, **nfcheck.config_params(config)}
    for key in ("input", "reference"):
        if params.get(key):
            assert Path(params[key]).exists(), f"{profile}: {key} {params[key]} is missing"
    if params["input"].endswith(".csv"):
        for row in samplesheet_rows(Path(params["input"])):
            for key in ("path", "fastq_1", "fastq_2"):
                assert key not in row or (REPO / row[key]).exists(), f"{profile}: {row[key]} is missing"
    Config().with_params({k: params[k] for k in params if k in Config().flat()})
    text = config.read_text()
    assert "resourceLimits" in text and "bin/make_test_data.py" in text
    assert (REPO / "bin" / "make_test_data.py").is_file()


def test_bundled_test_data_is_small():
    size = sum(f.stat().st_size for f in (REPO / "assets" / "test").rglob("*") if f.is_file())
    assert 0 < size < 2_000_000


def samplesheet_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        # nf-schema drops empty cells before validating
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(fh)]


def test_samplesheets_validate_against_schema_input():
    import jsonschema

    schema = json.loads((REPO / "assets" / "schema_input.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    sheets = sorted((REPO / "assets").glob("samplesheet_*.csv"))
    assert sheets
    for sheet in sheets:
        rows = samplesheet_rows(sheet)
        validator.validate(rows)
        for row in rows:
            for key in ("path", "fastq_1", "fastq_2"):
                if key in row:
                    assert (REPO / row[key]).exists(), f"{sheet.name}: {row[key]} does not exist"
    good = {"sample": "a", "path": "x/", "label": "T"}
    validator.validate([good, {**good, "sample": "b"}])
    for bad in ({"sample": "a b", "path": "x", "label": "T"},          # space in sample
                {"sample": "a", "label": "T"},                         # neither path nor fastq_1
                {"sample": "a", "path": "x", "fastq_1": "r.fq.gz", "label": "T"},  # both
                {"sample": "a", "fastq_1": "reads.bam", "label": "T"},  # not FASTQ
                {"sample": "a", "path": "x"}):                         # no label
        with pytest.raises(jsonschema.ValidationError):
            validator.validate([bad, {**good, "sample": "z"}])


# -- running the modules' commands, chained like the workflow ------------------------------------

class Task:
    """One process execution in its own work directory, like a Nextflow task."""

    def __init__(self, name: str, workroot: Path, tag: str):
        self.proc = PROCESSES[name]
        self.dir = workroot / f"{name.lower()}_{tag}"
        self.dir.mkdir(parents=True)

    def run(self, sources: dict, meta: dict, given: dict | None = None, stub: bool = False,
            params: dict | None = None, cpus: int = 1) -> dict[str, list[Path]]:
        ctx = {"meta": meta, "task": {"cpus": cpus, "process": self.proc.name, "ext": {}}}
        for decl in self.proc.inputs:
            ctx.update(nfcheck.stage(decl.items, sources, self.dir))
        ext = EXT_ARGS.get(self.proc.name, [])
        args_ctx = {"params": params or TEST_PARAMS, "task": ctx["task"]}
        ctx["task"]["ext"]["args"] = nfcheck.render_ext_args(ext, args_ctx)
        script, _ = nfcheck.render_template(self.proc.stub if stub else self.proc.script, ctx, given)
        (self.dir / ".command.sh").write_text(script)
        env = dict(os.environ)
        env["PATH"] = f"{REPO / 'bin'}:{env['PATH']}"  # Nextflow puts bin/ on a task's PATH
        done = subprocess.run(["bash", "-euo", "pipefail", ".command.sh"], cwd=self.dir, capture_output=True,
                              text=True, timeout=600, env=env)
        assert done.returncode == 0, (f"{self.proc.name} failed ({done.returncode}):\n{script}\n"
                                      f"{done.stderr[-2000:]}")
        outputs = nfcheck.collect_outputs(self.proc, self.dir, ctx)
        for emit, files in outputs.items():
            for f in files:
                assert stub or f.is_dir() or f.stat().st_size > 0, f"{self.proc.name}.{emit}: {f.name} is empty"
        for out in self.proc.outputs:
            if re.search(r"\bstdout\b", out.decl):  # `stdout` outputs: what the script printed
                outputs[out.emit] = done.stdout
        return outputs


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    """The DAG of workflows/deepmapper.nf on the test profile: one dict of outputs per step."""
    work = tmp_path_factory.mktemp("work")
    p = TEST_PARAMS
    meta = {"id": TEST_INPUT.stem, "label_key": p["label_key"]}
    out = {}
    out["ingest"] = Task("DEEPMAPPER_INGEST", work, "1").run(
        {"meta": meta, "inputs": [TEST_INPUT], "labels": []}, meta,
        given={"sources": f"--input 'input01/{TEST_INPUT.name}'"})  # the single-matrix branch
    dataset = out["ingest"]["dataset"][0]
    # scatter: passes 0..passes-1 in tasks of passes_per_task, as TRAIN_PASSES cuts them
    passes = []
    per = p["passes_per_task"]
    for start in range(0, p["passes"], per):
        chunk = {**meta, "start": start, "count": min(per, p["passes"] - start), "id": f"{meta['id']}_pass{start:03d}"}
        res = Task("DEEPMAPPER_TRAINPASS", work, str(start)).run({"meta": chunk, "dataset": dataset}, chunk)
        assert [f.name for f in res["passes"]] == [f"pass_{i:03d}.npz" for i in range(start, start + chunk["count"])]
        passes += res["passes"]
        out.setdefault("trainpass_stdout", []).append(res["log"])
    out["passes"] = sorted(passes, key=lambda f: f.name)  # gather: collect(sort: by name)
    gathered = {"meta": meta, "dataset": dataset, "passes": out["passes"]}
    out["accumulate"] = Task("DEEPMAPPER_ACCUMULATE", work, "1").run(gathered, meta)
    out["evaluate"] = Task("DEEPMAPPER_EVALUATE", work, "1").run(gathered, meta)
    out["baseline"] = Task("DEEPMAPPER_BASELINE", work, "1").run({"meta": meta, "dataset": dataset}, meta)
    out["report"] = Task("DEEPMAPPER_REPORT", work, "1").run(
        {"meta": meta, "dataset": dataset, "passes": out["passes"], "findings": out["accumulate"]["findings"],
         "baselines": out["baseline"]["baselines"], "evaluation": out["evaluate"]["evaluation"][0]}, meta)
    versions = work / "pipeline_software_mqc_versions.yml"
    versions.write_text("DEEPMAPPER_TRAINPASS:\n    deepmapper: 0.1.0\n    torch: 2.14.1\n")
    out["multiqc"] = Task("MULTIQC", work, "1").run(
        {"meta": meta, "multiqc_files": [*out["report"]["mqc"], versions],
         "multiqc_config": REPO / "assets" / "multiqc_config.yml"}, meta)
    return out


def test_dag_ingest_and_passes(dag):
    import anndata as ad

    data = ad.read_h5ad(dag["ingest"]["dataset"][0], backed="r")
    assert data.shape == (700, 765)
    assert [f.name for f in dag["passes"]] == [f"pass_{i:03d}.npz" for i in range(TEST_PARAMS["passes"])]


def test_dag_gate_verdicts_reach_the_workflow(dag):
    """TRAIN_PASSES counts accepted passes from train-pass's stdout (round two when short): that
    count, with the workflow's own regex, equals the accepted flags in the pass files."""
    from deepmapper.passfile import read_pass

    text = (REPO / "subworkflows" / "local" / "train_passes" / "main.nf").read_text()
    regex = re.search(r"line ==~ /(.+?)/ }", text).group(1)
    counted = sum(1 for out in dag["trainpass_stdout"] for line in out.splitlines() if re.fullmatch(regex, line))
    flags = [read_pass(f).accepted for f in dag["passes"]]
    assert counted == sum(flags)
    assert sum(1 for out in dag["trainpass_stdout"] for line in out.splitlines() if line.startswith("pass ")) == len(flags)


def test_dag_findings_rank_every_feature(dag):
    import pandas as pd

    tsv, js, per_class = dag["accumulate"]["findings"]
    table = pd.read_csv(tsv, sep="\t")
    assert len(table) == 765 and table["feature"].is_unique
    summary = json.loads(js.read_text())
    assert len(summary["pass_indices"]) <= TEST_PARAMS["passes"]
    evaluation = json.loads(dag["evaluate"]["evaluation"][0].read_text())
    assert evaluation["accuracy"] > evaluation["majority_rate"]  # the ensembled model learned something
    assert {f.name for f in dag["baseline"]["baselines"]} == {"logistic.tsv", "wilcoxon.tsv", "baselines.json"}


def test_dag_report_and_multiqc(dag):
    assert "<html" in dag["report"]["html"][0].read_text()[:2000].lower()
    html = dag["multiqc"]["report"][0].read_text()
    assert "deepmapper" in html.lower()
    # the per-process versions gathered from the `versions` topic reach the report
    data = dag["multiqc"]["data"][0]
    versions = "".join(f.read_text() for f in data.glob("*software_versions*"))
    assert "DEEPMAPPER_TRAINPASS" in versions and "2.14.1" in versions


def run_options(params: dict) -> list[str]:
    """`deepmapper run` options for the run-configuration params (not label_key; null ones left out)."""
    from deepmapper.config import defaults_flat

    opts = []
    for key in defaults_flat():
        value, name = params[key], key.replace("_", "-")
        if key == "label_key" or value is None:
            continue
        opts.append((f"--{name}" if value else f"--no-{name}") if isinstance(value, bool) else f"--{name}={value}")
    return opts


def test_dag_equals_embedded_run(dag, tmp_path):
    """Distributed (task per chunk of passes, gathered) and embedded give the same findings."""
    # torch's numerics depend on its thread count: the pass tasks ran with
    # --threads ${params.threads ?: task.cpus} = 1 thread, so the embedded run does too
    p = {**TEST_PARAMS, "threads": TEST_PARAMS["threads"] or 1}
    done = subprocess.run(["deepmapper", "run", "--input", str(TEST_INPUT), "--label-key", p["label_key"],
                           "--outdir", str(tmp_path / "run"), "--no-report", "--no-baselines", *run_options(p)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    tsv, _json, per_class = dag["accumulate"]["findings"]
    assert (tmp_path / "run" / "findings.tsv").read_bytes() == tsv.read_bytes()
    assert (tmp_path / "run" / "findings_per_class.tsv").read_bytes() == per_class.read_bytes()


def test_ingest_of_samplesheet_populations(tmp_path):
    """The samplesheet branch: one LABEL=PATH input per row, 10x directories staged as input??/."""
    import anndata as ad

    rows = samplesheet_rows(REPO / "assets" / "samplesheet_test_populations.csv")
    meta = {"id": "samplesheet_test_populations", "labels": [r["label"] for r in rows]}
    dirs = [REPO / r["path"] for r in rows]
    # the value of `def sources` for these rows: [meta.labels, inputs].transpose().collect {...}
    sources = " ".join(f"--input '{r['label']}=input{k:02d}/{d.name}'" for k, (r, d) in enumerate(zip(rows, dirs), 1))
    out = Task("DEEPMAPPER_INGEST", tmp_path, "sheet").run({"meta": meta, "inputs": dirs, "labels": []}, meta,
                                                           given={"sources": sources})
    data = ad.read_h5ad(out["dataset"][0])
    key = data.uns["deepmapper"]["label_key"]
    assert sorted(data.obs[key].unique()) == sorted(r["label"] for r in rows)
    assert data.n_obs == 129 + 95 + 31 and data.n_vars == 765


GMT = REPO / "tests" / "data" / "pbmc_markers.gmt"


@pytest.fixture(scope="module")
def derived_dag(tmp_path_factory):
    """--cluster and --genesets (issue 7): CLUSTER -> INGEST --label-key cluster -> AUCELL, whose
    dataset then feeds a pass task, accumulate, evaluate and the baselines."""
    import anndata as ad

    work = tmp_path_factory.mktemp("derived")
    # every 5th cell of the test input: 140 cells, unlabelled for this purpose (4 Leiden clusters)
    small = work / "pbmc140.h5ad"
    ad.read_h5ad(TEST_INPUT)[::5].copy().write_h5ad(small)
    # min size 2: the bundled GMT's third set has only two genes in these data. Three features
    # make a 2 x 2 image: the mlp learns the clusters from them within 30 short epochs (both
    # passes pass the gate, so the embedded run below trains no third pass either)
    params = {**TEST_PARAMS, "input": str(small), "label_key": None, "cluster": True, "genesets": str(GMT),
              "geneset_min_size": 2, "passes": 2, "passes_per_task": 2, "threads": 1, "backbone": "mlp",
              "epochs": 30, "min_epochs": 5, "patience": 5}
    meta = {"id": small.stem}
    out = {"params": params, "input": small}
    out["cluster"] = Task("DEEPMAPPER_CLUSTER", work, "1").run({"meta": meta, "h5ad": small}, meta, params=params)
    meta = {**meta, "label_key": "cluster"}  # as the workflow hands it to INGEST
    out["ingest"] = Task("DEEPMAPPER_INGEST", work, "1").run(
        {"meta": meta, "inputs": out["cluster"]["h5ad"], "labels": []}, meta, params=params,
        given={"sources": "--input 'input01/clustered.h5ad'"})
    out["aucell"] = Task("DEEPMAPPER_AUCELL", work, "1").run(
        {"meta": meta, "dataset": out["ingest"]["dataset"][0], "genesets": GMT}, meta, params=params)
    dataset = out["aucell"]["dataset"][0]
    chunk = {**meta, "start": 0, "count": 2, "id": f"{meta['id']}_pass000"}
    out["trainpass"] = Task("DEEPMAPPER_TRAINPASS", work, "0").run({"meta": chunk, "dataset": dataset}, chunk,
                                                                   params=params)
    gathered = {"meta": meta, "dataset": dataset, "passes": out["trainpass"]["passes"]}
    out["accumulate"] = Task("DEEPMAPPER_ACCUMULATE", work, "1").run(gathered, meta, params=params)
    out["evaluate"] = Task("DEEPMAPPER_EVALUATE", work, "1").run(gathered, meta, params=params)
    out["baseline"] = Task("DEEPMAPPER_BASELINE", work, "1").run({"meta": meta, "dataset": dataset}, meta,
                                                                 params=params)
    return out


def test_cluster_labels_reach_ingest(derived_dag):
    import anndata as ad

    clustered = ad.read_h5ad(derived_dag["cluster"]["h5ad"][0])
    data = ad.read_h5ad(derived_dag["ingest"]["dataset"][0])
    assert data.uns["deepmapper"]["label_key"] == "cluster"
    assert data.uns["deepmapper"]["modality"] == derived_dag["params"]["modality"]
    assert data.n_vars == 765 and data.n_obs == clustered.n_obs == 140
    assert list(data.obs["cluster"].astype(str)) == list(clustered.obs["cluster"].astype(str))
    assert 2 <= data.obs["cluster"].nunique() <= 10
    assert clustered.uns["cluster"]["resolution"] == derived_dag["params"]["cluster_resolution"]


def test_aucell_dataset_feeds_the_later_steps(derived_dag):
    """AUCELL's output is a dataset `train-pass --dataset` (and accumulate, evaluate, baseline) accept:
    cells x gene sets, the cluster labels and uns['deepmapper'] carried over."""
    import pandas as pd

    from deepmapper import io

    data = io.read_dataset(derived_dag["aucell"]["dataset"][0])
    assert list(data.var_names) == ["B_CELL_MARKERS", "NK_CELL_MARKERS", "TOO_SMALL_AFTER_MATCHING"]
    assert data.n_obs == 140 and data.uns["deepmapper"]["label_key"] == "cluster"
    assert float(data.X.min()) >= 0.0 and float(data.X.max()) <= 1.0  # AUC fractions
    assert [f.name for f in derived_dag["trainpass"]["passes"]] == ["pass_000.npz", "pass_001.npz"]
    table = pd.read_csv(derived_dag["accumulate"]["findings"][0], sep="\t")
    assert sorted(table["feature"]) == sorted(data.var_names)
    evaluation = json.loads(derived_dag["evaluate"]["evaluation"][0].read_text())
    assert evaluation["classes"] == sorted(data.obs["cluster"].astype(str).unique())


def test_derived_dag_equals_embedded_run(derived_dag, tmp_path):
    """`deepmapper run --cluster --genesets` in one process builds the same dataset and the same
    findings (and records the same configuration) as the chained processes."""
    import anndata as ad
    import numpy as np

    p = derived_dag["params"]
    done = subprocess.run(["deepmapper", "run", "--input", str(derived_dag["input"]), "--outdir", str(tmp_path / "run"),
                           "--no-report", "--no-baselines", *run_options(p)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    embedded, chained = ad.read_h5ad(tmp_path / "run" / "dataset.h5ad"), ad.read_h5ad(derived_dag["aucell"]["dataset"][0])
    assert list(embedded.var_names) == list(chained.var_names)
    assert list(embedded.obs["cluster"].astype(str)) == list(chained.obs["cluster"].astype(str))
    assert np.array_equal(np.asarray(embedded.X), np.asarray(chained.X))
    tsv, js, per_class = derived_dag["accumulate"]["findings"]
    assert (tmp_path / "run" / "findings.tsv").read_bytes() == tsv.read_bytes()
    assert (tmp_path / "run" / "findings_per_class.tsv").read_bytes() == per_class.read_bytes()
    recorded = json.loads((tmp_path / "run" / "findings.json").read_text())["config"]
    assert json.loads(js.read_text())["config"] == recorded
    assert recorded["input"]["cluster"] is True and recorded["input"]["genesets"] == str(GMT)


@pytest.fixture(scope="module")
def denovo_dag(tmp_path_factory):
    """subworkflows/local/denovo_assembly on the test_denovo profile's simulated reads."""
    work = tmp_path_factory.mktemp("denovo")
    params = {**PARAMS, **nfcheck.config_params(REPO / "conf" / "test_denovo.config")}
    sheet = Path(params["input"])
    rows = samplesheet_rows(sheet)
    ref_meta = {"id": "reference"}
    reference = Path(params["reference"])
    out = {"index": Task("DENOVO_INDEX", work, "1").run({"meta": ref_meta, "reference": reference}, ref_meta,
                                                          params=params)}
    index = out["index"]["index"][0]
    reads = {r["sample"]: [REPO / r["fastq_1"], REPO / r["fastq_2"]] for r in rows}
    metas = {r["sample"]: {"id": r["sample"], "label": r["label"], "single_end": False} for r in rows}
    unaligned = []
    for sample, fastqs in reads.items():
        res = Task("DENOVO_ALIGN", work, sample).run(
            {"meta": metas[sample], "reads": fastqs, "meta2": ref_meta, "index": index}, metas[sample], params=params)
        unaligned += res["unaligned"]
    mates = {m: sorted((f for f in unaligned if f.name.endswith(f".unaligned_{m}.fastq.gz")), key=lambda f: f.name)
             for m in (1, 2)}
    pool_meta = {"id": "pooled", "assembler": params["assembler"]}
    out["pool"] = Task("DENOVO_POOL", work, "1").run(
        {"meta": pool_meta, "reads_1": mates[1], "reads_2": mates[2]}, pool_meta, params=params,
        given={"mate_1": " ".join(f"--reads-1 r1/{f.name}" for f in mates[1]),
               "mate_2": " ".join(f"--reads-2 r2/{f.name}" for f in mates[2])})
    pooled = out["pool"]["reads"]
    names = [f.name for f in pooled]
    out["assemble"] = Task("DENOVO_ASSEMBLE", work, "1").run(
        {"meta": pool_meta, "reads": pooled}, pool_meta, params=params, cpus=2,
        given={"names": names, "memory_gb": 4,
               "mate_2": "--reads-2 pooled_2.fastq.gz" if "pooled_2.fastq.gz" in names else "",
               "single": "--single pooled_single.fastq.gz" if "pooled_single.fastq.gz" in names else ""})
    out["tag"] = Task("DENOVO_TAG", work, "1").run(
        {"meta": pool_meta, "assembly": out["assemble"]["assembly"][0], "reference": reference}, pool_meta,
        params=params)
    denovo = out["tag"]["fasta"][0]
    out["hybrid"] = Task("DENOVO_HYBRID", work, "1").run(
        {"meta": ref_meta, "reference": reference, "denovo": denovo}, ref_meta, params=params)
    quants = []
    for sample, fastqs in reads.items():
        res = Task("DENOVO_QUANT", work, sample).run(
            {"meta": metas[sample], "reads": fastqs, "meta2": ref_meta, "index": out["hybrid"]["index"][0]},
            metas[sample], params=params)
        quants += res["quant"]
    run_meta = {"id": sheet.stem}
    out["table"] = Task("DENOVO_TABLE", work, "1").run(
        {"meta": run_meta, "samplesheet": sheet, "quants": sorted(quants, key=lambda f: f.name), "denovo": denovo},
        run_meta, params=params)
    return out


@pytest.mark.tools
def test_denovo_modules_chain(denovo_dag):
    import anndata as ad

    assert denovo_dag["tag"]["fasta"][0].read_text().startswith(">DENOVO_")
    data = ad.read_h5ad(denovo_dag["table"]["dataset"][0])
    assert data.n_obs == 6
    assert any(name.startswith("DENOVO_") for name in data.var_names)
    assert "\tDENOVO_" in "\t" + "\t".join(denovo_dag["table"]["table"][0].read_text().split())


# -- stubs -------------------------------------------------------------------------------------

STUB_META = {"id": "S1", "start": 3, "count": 2, "single_end": False, "assembler": "rnaspades", "label_key": "x"}
STUB_SOURCES = {
    "dataset": "dataset.h5ad", "inputs": ["a.h5ad"], "labels": [], "passes": ["pass_000.npz"],
    "findings": ["findings.tsv"], "baselines": ["logistic.tsv"], "evaluation": "evaluation.json",
    "multiqc_files": ["x_mqc.tsv"], "multiqc_config": "multiqc_config.yml", "reference": "ref.fa",
    "reads": ["S1_1.fastq.gz", "S1_2.fastq.gz"], "index": "index", "reads_1": ["S1.unaligned_1.fastq.gz"],
    "reads_2": ["S1.unaligned_2.fastq.gz"], "assembly": "assembly.fa", "denovo": "denovo.fa",
    "samplesheet": "samplesheet.csv", "quants": ["S1"], "h5ad": "input.h5ad", "genesets": "sets.gmt",
}


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_stub_creates_declared_outputs(name, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sources = {"meta": STUB_META, "meta2": {"id": "ref"}}
    for key, value in STUB_SOURCES.items():
        names = value if isinstance(value, list) else [value]
        for n in names:
            (src / n).touch()
        sources[key] = [src / n for n in names] if isinstance(value, list) else src / value
    outputs = Task(name, tmp_path, "stub").run(sources, STUB_META, stub=True)
    assert all(files for files in outputs.values())
    if name == "DEEPMAPPER_TRAINPASS":
        assert [f.name for f in outputs["passes"]] == ["pass_003.npz", "pass_004.npz"]


# -- documentation -------------------------------------------------------------------------------

# Intermediates that stay in the work directory (conf/modules.config publishes nothing of them).
NOT_PUBLISHED = {("DENOVO_INDEX", "index"), ("DENOVO_POOL", "reads"), ("DENOVO_ALIGN", "unaligned"),
                 ("DENOVO_HYBRID", "index")}


def test_output_docs_cover_every_published_file():
    doc = (REPO / "docs" / "output.md").read_text()
    checked = 0
    for proc in PROCESSES.values():
        for out in proc.outputs:
            if (proc.name, out.emit) in NOT_PUBLISHED:
                continue
            for pat in out.patterns:
                for alt in nfcheck._braces(pat.replace("${meta.id}", "\x00")):
                    parts = alt.split("/")
                    # a wildcard leaf is only meaningful with its folder (baselines/*.tsv)
                    tail = "/".join(parts[-2:]) if "*" in parts[-1] and len(parts) > 1 else parts[-1]
                    tail = tail.replace("report/", "")  # published without the task's report/ folder
                    regex = re.escape(tail).replace(r"\*", r"[\w.*<>+-]*")
                    regex = regex.replace(re.escape("\x00"), r"\S+")
                    assert re.search(regex, doc), f"docs/output.md does not mention {alt} ({proc.name}.{out.emit})"
                    checked += 1
    assert checked >= 15
    usage = (REPO / "docs" / "usage.md").read_text()
    for word in ("-resume", "passes_per_task", "slurm", "awsbatch", "-profile test", "DEEPMAPPER_CLUSTER",
                 "DEEPMAPPER_AUCELL"):
        assert word in usage
    for name in ("modality", "cluster", "cluster_resolution", "genesets", "geneset_min_size"):
        assert f"`--{name}`" in usage, f"docs/usage.md documents --{name}"


# -- containers ----------------------------------------------------------------------------------

DOCKERFILES = [REPO / "containers" / "Dockerfile", REPO / "containers" / "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=rel)
def test_dockerfile_passes_hadolint(dockerfile):
    done = subprocess.run(["hadolint", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    assert "torch==2.14.1" in text and "torchvision==0.29.1" in text
    assert "/opt/deepmapper" in text  # installs this package


def test_hadolint_rejects_a_sloppy_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y hisat2\nRUN pip install torch\n")
    done = subprocess.run(["hadolint", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "DL3007" in done.stdout  # :latest


def test_images_pin_the_tools():
    env = (REPO / "containers" / "environment.yml").read_text()
    for tool in ("hisat2", "salmon", "spades", "trinity", "samtools"):
        assert re.search(rf"^\s+- {tool}=\d+(\.\d+)+\b", env, re.M), f"{tool} pinned in environment.yml"
    for dockerfile in DOCKERFILES:
        assert re.search(r"multiqc==\d+\.\d+", dockerfile.read_text())
    containers = {m for p in PROCESSES.values() for m in re.findall(r"container\s+'([^']+)'", p.directives)}
    assert containers == {"ghcr.io/deepmapper-nf/deepmapper:0.1.0"}
    assert "ghcr.io/deepmapper-nf/deepmapper:0.1.0-cuda" in NEXTFLOW_CONFIG.read_text()
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert f"version         = '{version}'" in NEXTFLOW_CONFIG.read_text()  # manifest = package = image tag
